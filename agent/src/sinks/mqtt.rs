//! MQTT publishing: the event loop on one dedicated thread with a current-thread
//! tokio runtime (tokio stays out of the rest of the agent), fed encoded batches from
//! the smol side through the shared offline buffer.
//!
//! The thread owns the [`OfflineBuffer`]: a batch leaves it only when the broker's
//! PUBACK for it arrives. After a reconnect everything unacknowledged is published
//! again, in order, whatever the broker remembers of the session (a broker restarted
//! without persistence remembers nothing): the buffer is the source of truth, not the
//! MQTT client's in-flight state, which is dropped with the connection. QoS 1 may
//! duplicate; sequence numbers let consumers drop repeats. On connect it publishes a
//! retained birth message and the policy table; the broker holds a retained last will
//! that says offline when the connection is lost.
//!
//! MQTT 3.1.1 or 5 (`mqtt_version`, default `auto`), topics, TLS, credentials, the
//! reconnect backoff and the wording of every refusal are `edgearmor-mqtt`'s, shared
//! with the decoder; the settings are the configuration's `[mqtt]` table.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use edgearmor_mqtt::client::{
    self, Client, ClientOptions, Connection, Event, Failure, JSON, RequestError,
    SESSION_EXPIRY_SECS, Session, Will,
};
use edgearmor_mqtt::refusal::{self, AGENT_SETTINGS, Code};
use edgearmor_mqtt::{AgentTopics, Backoff, Credentials, CredentialsError, TlsError};
use edgearmor_wire::AgentId;

use crate::config::{ConfigError, MqttConfig};
use crate::events::pipeline::{BatchSink, SharedLedger};
use crate::sinks::offline::{BatchKey, OfflineBuffer, PendingBatch};

mod worker;

use worker::Worker;

/// What keeps the MQTT thread from starting. The causes (file, value) come from
/// `source()`.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("MQTT broker address")]
    Broker(#[source] ConfigError),
    #[error("MQTT TLS files")]
    Tls(#[source] TlsError),
    #[error("MQTT credentials")]
    Credentials(#[source] CredentialsError),
    #[error("cannot start the MQTT thread")]
    Thread(#[source] std::io::Error),
}

/// What the thread publishes besides batches.
#[derive(Clone, Debug)]
pub struct SessionMessages {
    /// Retained on the status topic after every connect.
    pub birth: String,
    /// Registered as the retained last will.
    pub will: String,
    /// Encoded policy-table parts, retained on `<policies>/<i>`.
    pub policy_tables: Vec<Vec<u8>>,
    /// Retained JSON messages waiting to be published, latest per topic (e.g. bundle
    /// reports); published until the broker acknowledges them (the broker keeps them).
    pub retained: Vec<(String, Vec<u8>)>,
    /// A refreshed birth (fresh counters and time) to publish alone on the status topic
    /// at the next wake-up; `birth` already holds it for the next connect.
    pub fresh_status: Option<String>,
}

/// The broker connection as the agent reports it (systemd `STATUS=`, `edgearmor
/// status`, the `broker_reconnects` counter); written by the MQTT thread.
#[derive(Debug, Default)]
pub struct BrokerLink {
    connected: AtomicBool,
    connects: std::sync::atomic::AtomicU64,
    last_error: std::sync::Mutex<String>,
}

impl BrokerLink {
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Connections made so far.
    pub fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    /// Why the last connection failed or ended ("" before any failure).
    pub fn last_error(&self) -> String {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn on_connect(&self) {
        self.connected.store(true, Ordering::Relaxed);
        self.connects.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn on_failure(&self, reason: &str) {
        self.connected.store(false, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = reason.to_owned();
    }
}

/// Publishes retained messages through the MQTT thread.
#[derive(Clone)]
pub struct RetainedPublisher {
    session: SharedSession,
    wake: async_channel::Sender<()>,
}

impl RetainedPublisher {
    /// Publishes `payload` (JSON) retained on `topic` now (or on the next connect),
    /// replacing what was still queued for that topic.
    pub fn publish(&self, topic: String, payload: Vec<u8>) {
        {
            let mut guard = lock_session(&self.session);
            guard.0.retained.retain(|(t, _)| *t != topic);
            guard.0.retained.push((topic, payload));
            guard.1 = true;
        }
        let _ = self.wake.try_send(());
    }
}

/// What the agent's status task reads from and hands to the MQTT thread.
#[derive(Clone)]
pub struct StatusHandle {
    session: SharedSession,
    wake: async_channel::Sender<()>,
    buffer: SharedBuffer,
    link: Arc<BrokerLink>,
}

impl StatusHandle {
    /// The broker connection's state, as the MQTT thread sees it.
    pub fn link(&self) -> &BrokerLink {
        &self.link
    }

    /// Batches waiting in the offline buffer for the broker.
    pub fn buffered_batches(&self) -> usize {
        lock(&self.buffer).len()
    }

    /// Publishes a refreshed birth (fresh counters and time) on the status topic, alone
    /// (the policy tables have not changed), and keeps it for the next connect.
    pub fn refresh(&self, birth: String) {
        {
            let mut guard = lock_session(&self.session);
            guard.0.birth = birth.clone();
            guard.0.fresh_status = Some(birth);
        }
        let _ = self.wake.try_send(());
    }
}

/// A message that arrived on one of the subscribed topics.
#[derive(Clone, Debug)]
pub struct Inbound {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// Messages waiting for the agent; a full inbox drops (and counts) the newest.
const INBOX_MESSAGES: usize = 4;

/// Unacknowledged batches on the wire at once.
const INFLIGHT_WINDOW: usize = 32;

/// Unacknowledged publishes of any kind (batches, birth, policy-table parts, reports)
/// the client allows; also the packet-id range, kept well above what is in flight so
/// ids are not reused before their acknowledgement.
const CLIENT_INFLIGHT: u16 = 128;

/// A batch the broker has not acknowledged for twice the keep-alive (at least this
/// long) on a connection that is otherwise alive is sent again on a new one: a broker
/// that lost it (a clustered broker whose storage failed over) may never answer.
const MIN_ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Requests queued between the worker and the event loop.
const REQUEST_QUEUE: usize = 64;

type SharedBuffer = Arc<std::sync::Mutex<OfflineBuffer>>;

/// The session messages and whether they changed since they were last published.
type SharedSession = Arc<std::sync::Mutex<(SessionMessages, bool)>>;

fn lock_session(session: &SharedSession) -> std::sync::MutexGuard<'_, (SessionMessages, bool)> {
    session
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn lock(buffer: &SharedBuffer) -> std::sync::MutexGuard<'_, OfflineBuffer> {
    buffer
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The smol side's handle: a [`BatchSink`] that encodes batches into the shared
/// offline buffer (so drops are accounted synchronously, before the batcher's next
/// loss report) and wakes the MQTT thread.
pub struct MqttPublisher {
    buffer: SharedBuffer,
    session: SharedSession,
    inbox: async_channel::Receiver<Inbound>,
    wake: async_channel::Sender<()>,
    stop: Arc<AtomicBool>,
    ledger: SharedLedger,
    link: Arc<BrokerLink>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The client options for the `[mqtt]` settings: session kept, keep-alive, packet
/// sizes, the retained last will, credentials and TLS.
fn client_options(
    config: &MqttConfig,
    agent: &AgentId,
    will: &str,
    max_inbound: usize,
) -> Result<ClientOptions, MqttError> {
    let (host, port) = config.broker_address().map_err(MqttError::Broker)?;
    let topics = config.topics(&agent.cluster, &agent.node);
    let credentials =
        Credentials::load(config.username.as_deref(), config.password_file.as_deref())
            .map_err(MqttError::Credentials)?;
    let tls = match config.tls_files() {
        Some(files) => Some(edgearmor_mqtt::tls::transport(&files).map_err(MqttError::Tls)?),
        None => None,
    };
    Ok(ClientOptions {
        host,
        port,
        client_id: config.client_id_for(&agent.cluster, &agent.node),
        keep_alive: Duration::from_secs(config.keep_alive_secs).max(Duration::from_secs(5)),
        session: Session::Persistent {
            expiry_secs: SESSION_EXPIRY_SECS,
        },
        last_will: Some(Will {
            topic: topics.status,
            payload: will.as_bytes().to_vec(),
            retain: true,
            content_type: Some(JSON),
        }),
        credentials,
        tls,
        max_incoming_packet: (edgearmor_wire::Message::MAX_ENCODED_LEN + 1024).max(max_inbound),
        announced_max_packet: None,
        max_outgoing_packet: 64 * 1024,
        outgoing_inflight: CLIENT_INFLIGHT,
        receive_maximum: None,
        manual_acks: false,
        request_capacity: REQUEST_QUEUE,
        connection_timeout: Duration::from_secs(10),
        settings: AGENT_SETTINGS,
    })
}

impl MqttPublisher {
    /// Starts the MQTT thread for `agent` with the `[mqtt]` settings. Fails only on
    /// local problems (unreadable certificates or password file); an unreachable broker
    /// is retried forever with backoff.
    /// `subscriptions` are QoS 1 topics whose messages go to [`Self::inbox`];
    /// `max_inbound` is the largest message accepted from the broker.
    pub fn start(
        config: &MqttConfig,
        agent: &AgentId,
        session: SessionMessages,
        buffer: OfflineBuffer,
        ledger: SharedLedger,
        subscriptions: Vec<String>,
        max_inbound: usize,
    ) -> Result<Self, MqttError> {
        let options = client_options(config, agent, &session.will, max_inbound)?;
        let topics = config.topics(&agent.cluster, &agent.node);
        let (wake, wake_rx) = async_channel::bounded(1);
        let broker = options.broker();
        let ack_timeout = (options.keep_alive * 2).max(MIN_ACK_TIMEOUT);
        let user = config.username.clone();
        let choice = config.mqtt_version;
        let buffer: SharedBuffer = Arc::new(std::sync::Mutex::new(buffer));
        let stop = Arc::new(AtomicBool::new(false));
        let session: SharedSession = Arc::new(std::sync::Mutex::new((session, false)));
        let (inbox_tx, inbox) = async_channel::bounded(INBOX_MESSAGES);
        let penalty = Arc::new(AtomicBool::new(false));
        let worker_buffer = buffer.clone();
        let worker_session = session.clone();
        let worker_stop = stop.clone();
        let link = Arc::new(BrokerLink::default());
        let worker_link = link.clone();
        let thread = std::thread::Builder::new()
            .name("edgearmor-mqtt".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        log::error!("MQTT thread: cannot build its runtime: {e}");
                        return;
                    }
                };
                runtime.block_on(async move {
                    // The client queues into the runtime's channels: made inside it.
                    let (client, connection) = client::connect(options, choice);
                    let mut worker = Worker {
                        client,
                        subscriptions,
                        inbox: inbox_tx,
                        topics,
                        session: worker_session,
                        buffer: worker_buffer,
                        wake: wake_rx,
                        stop: worker_stop,
                        broker,
                        user,
                        ack_timeout,
                        penalty,
                        link: worker_link,
                        in_flight: HashMap::new(),
                        outbox: VecDeque::new(),
                        expected: VecDeque::new(),
                        pkids: HashMap::new(),
                        connected: false,
                        resyncing: false,
                        last_error: None,
                    };
                    worker.run(connection).await;
                });
            })
            .map_err(MqttError::Thread)?;
        Ok(Self {
            buffer,
            session,
            inbox,
            wake,
            stop,
            ledger,
            link,
            thread: Some(thread),
        })
    }

    /// Messages from the subscribed topics.
    pub fn inbox(&self) -> async_channel::Receiver<Inbound> {
        self.inbox.clone()
    }

    /// A handle that publishes retained messages from anywhere.
    pub fn retained_handle(&self) -> RetainedPublisher {
        RetainedPublisher {
            session: self.session.clone(),
            wake: self.wake.clone(),
        }
    }

    /// The status side of the thread, for the agent's status task.
    pub fn status_handle(&self) -> StatusHandle {
        StatusHandle {
            session: self.session.clone(),
            wake: self.wake.clone(),
            buffer: self.buffer.clone(),
            link: self.link.clone(),
        }
    }

    /// Replaces the birth message and policy tables (after a policy reload); they
    /// are published, retained, before any batch delivered after this call.
    pub fn update_session(&mut self, birth: String, policy_tables: Vec<Vec<u8>>) {
        {
            let mut guard = lock_session(&self.session);
            guard.0.birth = birth;
            guard.0.policy_tables = policy_tables;
            guard.1 = true;
        }
        let _ = self.wake.try_send(());
    }

    /// Gives the thread up to `grace` to deliver what is buffered (reconnecting if need
    /// be), then stops it; what is left stays in the spool, if there is one.
    pub fn shutdown(mut self, grace: Duration) {
        self.wake.close();
        let deadline = std::time::Instant::now() + grace;
        let Some(thread) = self.thread.take() else {
            return;
        };
        while !thread.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if !thread.is_finished() {
            let left = lock(&self.buffer).len();
            log::warn!("MQTT: {left} batch(es) still unacknowledged after {grace:?}");
            self.stop.store(true, Ordering::Relaxed);
        }
        let _ = thread.join();
    }
}

impl BatchSink for MqttPublisher {
    fn deliver(&mut self, batch: &edgearmor_wire::EncodedBatch<'_>) {
        let events = batch.len as u32;
        // The batcher encoded it: the payload is copied once, into the buffer that
        // keeps it until the broker acknowledges it.
        let payload = batch.payload.to_vec();
        let pending = PendingBatch {
            key: BatchKey {
                boot_id: batch.agent.boot_id,
                first_seq: batch.first_seq,
            },
            events,
            payload,
        };
        lock(&self.buffer).push(pending, &self.ledger);
        // A full wake channel already holds a wake-up: nothing lost.
        let _ = self.wake.try_send(());
    }
}
