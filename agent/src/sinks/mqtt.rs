//! MQTT publishing: rumqttc's event loop on one dedicated thread with a current-thread
//! tokio runtime (tokio stays out of the rest of the agent), fed encoded batches from
//! the smol side through a bounded channel.
//!
//! The thread owns the [`OfflineBuffer`]: a batch leaves it only when the broker's
//! PUBACK for it arrives. After a reconnect everything unacknowledged is published
//! again, in order (QoS 1 may duplicate; sequence numbers let consumers drop repeats).
//! On connect it publishes a retained birth message and the policy table; the broker
//! holds a retained last will that says offline when the connection is lost.
//!
//! Topics, TLS, credentials and the reconnect backoff are `edgearmor-mqtt`'s, shared
//! with the decoder; the settings are the configuration's `[mqtt]` table.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use edgearmor_mqtt::{AgentTopics, Backoff, Credentials, CredentialsError, TlsError};
use edgearmor_wire::AgentId;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, LastWill, MqttOptions,
    Outgoing, Packet, QoS,
};

use crate::config::{ConfigError, MqttConfig};
use crate::events::pipeline::{BatchSink, SharedLedger};
use crate::sinks::offline::{BatchKey, OfflineBuffer, PendingBatch};

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
    /// Retained messages waiting to be published, latest per topic (e.g. bundle
    /// reports); published once (the broker keeps them).
    pub retained: Vec<(String, Vec<u8>)>,
}

/// Publishes retained messages through the MQTT thread.
#[derive(Clone)]
pub struct RetainedPublisher {
    session: SharedSession,
    wake: async_channel::Sender<()>,
}

impl RetainedPublisher {
    /// Publishes `payload` retained on `topic` now (or on the next connect), replacing
    /// what was still queued for that topic.
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
    thread: Option<std::thread::JoinHandle<()>>,
    encode_buf: Vec<u8>,
}

/// rumqttc's options for the `[mqtt]` settings: session kept, keep-alive, packet sizes,
/// the retained last will, credentials and TLS; with the broker's host and port.
fn client_options(
    config: &MqttConfig,
    agent: &AgentId,
    will: &str,
    max_inbound: usize,
) -> Result<(MqttOptions, String, u16), MqttError> {
    let (host, port) = config.broker_address().map_err(MqttError::Broker)?;
    let topics = config.topics(&agent.cluster, &agent.node);
    let client_id = config.client_id_for(&agent.cluster, &agent.node);
    let mut options = MqttOptions::new(client_id, host.clone(), port);
    options
        .set_clean_session(false)
        .set_keep_alive(Duration::from_secs(config.keep_alive_secs).max(Duration::from_secs(5)))
        .set_max_packet_size(
            (edgearmor_wire::Message::MAX_ENCODED_LEN + 1024).max(max_inbound),
            64 * 1024,
        )
        .set_inflight(INFLIGHT_WINDOW as u16 + 8)
        .set_last_will(LastWill::new(&topics.status, will, QoS::AtLeastOnce, true));
    if let Some(c) = Credentials::load(config.username.as_deref(), config.password_file.as_deref())
        .map_err(MqttError::Credentials)?
    {
        options.set_credentials(c.username, c.password);
    }
    if let Some(files) = config.tls_files() {
        options.set_transport(edgearmor_mqtt::tls::transport(&files).map_err(MqttError::Tls)?);
    }
    Ok((options, host, port))
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
        let (options, host, port) = client_options(config, agent, &session.will, max_inbound)?;
        let topics = config.topics(&agent.cluster, &agent.node);
        let (wake, wake_rx) = async_channel::bounded(1);
        let broker = format!("{host}:{port}");
        let buffer: SharedBuffer = Arc::new(std::sync::Mutex::new(buffer));
        let stop = Arc::new(AtomicBool::new(false));
        let session: SharedSession = Arc::new(std::sync::Mutex::new((session, false)));
        let (inbox_tx, inbox) = async_channel::bounded(INBOX_MESSAGES);
        let mut worker = Worker {
            subscriptions,
            inbox: inbox_tx,
            topics,
            session: session.clone(),
            buffer: buffer.clone(),
            wake: wake_rx,
            stop: stop.clone(),
            broker,
            in_flight: Default::default(),
            expected: VecDeque::new(),
            pkids: HashMap::new(),
            connected: false,
            last_error: None,
        };
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
                    let (client, eventloop) = AsyncClient::new(options, 64);
                    worker.run(client, eventloop).await;
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
            thread: Some(thread),
            encode_buf: vec![0; edgearmor_wire::Message::MAX_ENCODED_LEN],
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
    fn deliver(&mut self, batch: &edgearmor_wire::Batch) {
        let events = batch.events.len() as u32;
        let message = edgearmor_wire::Message::Batch(batch.clone());
        let payload = match edgearmor_wire::encode(&message, &mut self.encode_buf) {
            Ok(bytes) => bytes.to_vec(),
            Err(e) => {
                log::error!("cannot encode batch {}: {e}", batch.first_seq);
                self.ledger.offline_dropped(
                    u64::from(events),
                    batch.first_seq,
                    batch.first_seq + u64::from(events) - 1,
                );
                return;
            }
        };
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

enum Expected {
    Batch(BatchKey),
    Other,
}

struct Worker {
    topics: AgentTopics,
    session: SharedSession,
    subscriptions: Vec<String>,
    inbox: async_channel::Sender<Inbound>,
    buffer: SharedBuffer,
    wake: async_channel::Receiver<()>,
    stop: Arc<AtomicBool>,
    broker: String,
    /// Batches handed to rumqttc in this connection and not acknowledged yet.
    in_flight: std::collections::HashSet<BatchKey>,
    /// What each upcoming `Outgoing::Publish` belongs to, in request order.
    expected: VecDeque<Expected>,
    pkids: HashMap<u16, BatchKey>,
    connected: bool,
    last_error: Option<String>,
}

impl Worker {
    async fn run(&mut self, client: AsyncClient, eventloop: EventLoop) {
        // rumqttc's `poll` is not cancel-safe while it connects: raced against other
        // branches of a select, a slow handshake would be abandoned and restarted
        // forever. It gets a task of its own and reports through a channel.
        let (events_tx, mut events) = tokio::sync::mpsc::channel(64);
        let poller = tokio::spawn(drive_event_loop(eventloop, events_tx, self.stop.clone()));
        let mut accepting = true;
        // Also bounds how long a shutdown request waits to be noticed.
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(Ok(event)) => self.on_event(event, &client).await,
                    Some(Err(e)) => self.on_disconnect(&e),
                    None => break,
                },
                woken = self.wake.recv(), if accepting => match woken {
                    Ok(()) => {
                        let changed = std::mem::take(&mut lock_session(&self.session).1);
                        if changed && self.connected {
                            self.publish_session(&client).await;
                        }
                        self.publish_window(&client).await
                    }
                    Err(_) => accepting = false,
                },
                _ = tick.tick() => lock(&self.buffer).sync(),
            }
            let left = lock(&self.buffer).len();
            if self.stop.load(Ordering::Relaxed) || (!accepting && left == 0) {
                break;
            }
        }
        lock(&self.buffer).sync();
        if self.connected {
            let _ = client.disconnect().await;
            // Give the poller a moment to write the DISCONNECT.
            let _ = tokio::time::timeout(Duration::from_millis(500), async {
                while let Some(Ok(_)) = events.recv().await {}
            })
            .await;
        }
        self.stop.store(true, Ordering::Relaxed);
        drop(events);
        let _ = tokio::time::timeout(Duration::from_secs(1), poller).await;
    }

    async fn on_event(&mut self, event: Event, client: &AsyncClient) {
        match event {
            Event::Incoming(Packet::ConnAck(_)) => {
                self.connected = true;
                log::info!("MQTT: connected to {}", self.broker);
                self.last_error = None;
                self.publish_session(client).await;
                for topic in &self.subscriptions {
                    if let Err(e) = client.subscribe(topic.as_str(), QoS::AtLeastOnce).await {
                        log::warn!("MQTT: cannot subscribe to {topic}: {e}");
                    }
                }
                self.publish_window(client).await;
            }
            Event::Incoming(Packet::Publish(publish))
                if self.subscriptions.contains(&publish.topic) =>
            {
                let inbound = Inbound {
                    topic: publish.topic.clone(),
                    payload: publish.payload.to_vec(),
                };
                if self.inbox.try_send(inbound).is_err() {
                    // Retained bundles come back on the next connect.
                    log::warn!(
                        "MQTT: dropped a message on {} (the agent has {INBOX_MESSAGES} waiting)",
                        publish.topic
                    );
                }
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                if let Some(key) = self.pkids.remove(&ack.pkid) {
                    self.in_flight.remove(&key);
                    lock(&self.buffer).acknowledge(&key);
                    self.publish_window(client).await;
                }
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                if let Some(Expected::Batch(key)) = self.expected.pop_front() {
                    self.pkids.insert(pkid, key);
                }
            }
            _ => {}
        }
    }

    fn on_disconnect(&mut self, error: &ConnectionError) {
        let message = describe(error, &self.broker);
        if self.connected || self.last_error.as_deref() != Some(message.as_str()) {
            log::warn!("MQTT: {message}");
            self.last_error = Some(message);
        }
        self.connected = false;
        self.in_flight.clear();
        self.expected.clear();
        self.pkids.clear();
    }

    async fn publish_session(&mut self, client: &AsyncClient) {
        let session = {
            let mut guard = lock_session(&self.session);
            guard.1 = false;
            let snapshot = guard.0.clone();
            guard.0.retained.clear();
            snapshot
        };
        let birth = session.birth.clone();
        if client
            .publish(&self.topics.status, QoS::AtLeastOnce, true, birth)
            .await
            .is_ok()
        {
            self.expected.push_back(Expected::Other);
        }
        for (topic, payload) in &session.retained {
            if client
                .publish(topic.as_str(), QoS::AtLeastOnce, true, payload.clone())
                .await
                .is_ok()
            {
                self.expected.push_back(Expected::Other);
            }
        }
        for (i, table) in session.policy_tables.iter().enumerate() {
            let topic = self.topics.policy_part(i);
            if client
                .publish(topic, QoS::AtLeastOnce, true, table.clone())
                .await
                .is_ok()
            {
                self.expected.push_back(Expected::Other);
            }
        }
    }

    /// Publishes buffered batches until [`INFLIGHT_WINDOW`] are unacknowledged.
    async fn publish_window(&mut self, client: &AsyncClient) {
        if !self.connected {
            return;
        }
        let mut next = Vec::new();
        {
            let buffer = lock(&self.buffer);
            let mut index = 0;
            while self.in_flight.len() + next.len() < INFLIGHT_WINDOW {
                let Some(batch) = buffer.get(index) else {
                    break;
                };
                index += 1;
                if !self.in_flight.contains(&batch.key) {
                    next.push((batch.key, batch.payload.clone()));
                }
            }
        }
        for (key, payload) in next {
            match client.try_publish(&self.topics.events, QoS::AtLeastOnce, false, payload) {
                Ok(()) => {
                    self.expected.push_back(Expected::Batch(key));
                    self.in_flight.insert(key);
                }
                Err(_) => break, // request queue full: continue after the next event
            }
        }
    }
}

/// Polls rumqttc's event loop and forwards what it yields; after an error it waits
/// ([`Backoff`]: exponential, 250 ms to 30 s, with jitter) before the next poll reconnects. Ends when the
/// receiver is gone or `stop` is set.
async fn drive_event_loop(
    mut eventloop: EventLoop,
    events: tokio::sync::mpsc::Sender<Result<Event, ConnectionError>>,
    stop: Arc<AtomicBool>,
) {
    let mut backoff = Backoff::new();
    while !stop.load(Ordering::Relaxed) {
        let result = eventloop.poll().await;
        let failed = result.is_err();
        if matches!(result, Ok(Event::Incoming(Packet::ConnAck(_)))) {
            backoff.reset();
        }
        if failed {
            // We republish from our own buffer after reconnecting; rumqttc's copies of
            // unacknowledged publishes would only duplicate them.
            eventloop.pending.clear();
        }
        if events.send(result).await.is_err() {
            return;
        }
        if failed {
            let deadline = tokio::time::Instant::now() + backoff.next_delay();
            while tokio::time::Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                tokio::time::sleep_until(
                    deadline.min(tokio::time::Instant::now() + Duration::from_millis(100)),
                )
                .await;
            }
        }
    }
}

/// An operator-readable reason for a failed connection.
fn describe(error: &ConnectionError, broker: &str) -> String {
    match error {
        ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword) => {
            format!("broker {broker} refused the connection: bad user name or password")
        }
        ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized) => {
            format!(
                "broker {broker} refused the connection: not authorized (check username/password or client certificate)"
            )
        }
        ConnectionError::ConnectionRefused(code) => {
            format!("broker {broker} refused the connection: {code:?}")
        }
        ConnectionError::Tls(e) => format!(
            "TLS with broker {broker} failed: {e} (is ca_file the CA that signed the broker's certificate, and does the host name match it?)"
        ),
        ConnectionError::Io(e) => format!("cannot reach broker {broker}: {e}"),
        ConnectionError::NetworkTimeout => format!("broker {broker} did not answer in time"),
        other => format!("connection to broker {broker} lost: {other}"),
    }
}
