//! MQTT publishing: rumqttc's event loop on one dedicated thread with a current-thread
//! tokio runtime (tokio stays out of the rest of the agent), fed encoded batches from
//! the smol side through a bounded channel.
//!
//! The thread owns the [`OfflineBuffer`]: a batch leaves it only when the broker's
//! PUBACK for it arrives. After a reconnect everything unacknowledged is published
//! again, in order (QoS 1 may duplicate; sequence numbers let consumers drop repeats).
//! On connect it publishes a retained birth message and the policy table; the broker
//! holds a retained last will that says offline when the connection is lost.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, LastWill, MqttOptions,
    Outgoing, Packet, QoS, TlsConfiguration, Transport,
};

use crate::events::pipeline::{BatchSink, SharedLedger};
use crate::sinks::offline::{BatchKey, OfflineBuffer, PendingBatch};

/// Broker connection settings.
#[derive(Clone, Debug, Default)]
pub struct MqttSettings {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    /// Enables TLS: the broker's certificate must chain to this CA (PEM).
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub keep_alive: Duration,
    /// Topics are `<prefix>/<cluster>/<node>/...`.
    pub topic_prefix: String,
}

#[derive(Debug)]
pub enum MqttError {
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    Pem {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
    Tls(String),
    Thread(std::io::Error),
}

impl fmt::Display for MqttError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MqttError::Read { what, path, source } => {
                write!(f, "cannot read MQTT {what} {}: {source}", path.display())
            }
            MqttError::Pem { what, path, detail } => {
                write!(f, "MQTT {what} {}: {detail}", path.display())
            }
            MqttError::Tls(detail) => write!(f, "MQTT TLS setup: {detail}"),
            MqttError::Thread(e) => write!(f, "cannot start the MQTT thread: {e}"),
        }
    }
}

impl std::error::Error for MqttError {}

fn read_pem(what: &'static str, path: &PathBuf) -> Result<Vec<u8>, MqttError> {
    std::fs::read(path).map_err(|source| MqttError::Read {
        what,
        path: path.clone(),
        source,
    })
}

fn tls_config(s: &MqttSettings, ca: &PathBuf) -> Result<rustls::ClientConfig, MqttError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let pem = read_pem("CA file", ca)?;
    let mut roots = rustls::RootCertStore::empty();
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| MqttError::Pem {
            what: "CA file",
            path: ca.clone(),
            detail: e.to_string(),
        })?;
        roots.add(cert).map_err(|e| MqttError::Pem {
            what: "CA file",
            path: ca.clone(),
            detail: e.to_string(),
        })?;
        count += 1;
    }
    if count == 0 {
        return Err(MqttError::Pem {
            what: "CA file",
            path: ca.clone(),
            detail: "no PEM certificate in it".into(),
        });
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| MqttError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    match (&s.client_cert, &s.client_key) {
        (Some(cert_path), Some(key_path)) => {
            let cert_pem = read_pem("client certificate", cert_path)?;
            let certs = CertificateDer::pem_slice_iter(&cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| MqttError::Pem {
                    what: "client certificate",
                    path: cert_path.clone(),
                    detail: e.to_string(),
                })?;
            let key_pem = read_pem("client key", key_path)?;
            let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| MqttError::Pem {
                what: "client key",
                path: key_path.clone(),
                detail: e.to_string(),
            })?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| MqttError::Tls(e.to_string()))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(MqttError::Tls(
            "a client certificate needs both client_cert and client_key".into(),
        )),
    }
}

/// Topic names of one agent.
#[derive(Clone, Debug)]
pub struct Topics {
    pub events: String,
    pub status: String,
    /// `<prefix>/<cluster>/<node>/policies/<part>`.
    pub policies: String,
    /// Signed policy bundles: `<prefix>/<cluster>/policy` (fleet-wide) and
    /// `<prefix>/<cluster>/<node>/policy` (this node).
    pub fleet_bundle: String,
    pub node_bundle: String,
    /// `<prefix>/<cluster>/<node>/policy/reported`.
    pub bundle_reported: String,
}

impl Topics {
    pub fn new(prefix: &str, cluster: &str, node: &str) -> Self {
        let base = format!("{prefix}/{cluster}/{node}");
        Self {
            events: format!("{base}/events"),
            status: format!("{base}/status"),
            policies: format!("{base}/policies"),
            fleet_bundle: format!("{prefix}/{cluster}/policy"),
            node_bundle: format!("{base}/policy"),
            bundle_reported: format!("{base}/policy/reported"),
        }
    }
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

/// Counters the MQTT thread keeps (readable from any thread).
#[derive(Default, Debug)]
pub struct MqttStats {
    pub connected: AtomicBool,
    pub connects: AtomicU64,
    pub acked_batches: AtomicU64,
    pub buffered_batches: AtomicU64,
}

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
    pub stats: Arc<MqttStats>,
    thread: Option<std::thread::JoinHandle<()>>,
    encode_buf: Vec<u8>,
}

impl MqttPublisher {
    /// Starts the MQTT thread. Fails only on local problems (unreadable certificates);
    /// an unreachable broker is retried forever with backoff.
    /// `subscriptions` are QoS 1 topics whose messages go to [`Self::inbox`];
    /// `max_inbound` is the largest message accepted from the broker.
    pub fn start(
        settings: &MqttSettings,
        topics: Topics,
        session: SessionMessages,
        buffer: OfflineBuffer,
        ledger: SharedLedger,
        subscriptions: Vec<String>,
        max_inbound: usize,
    ) -> Result<Self, MqttError> {
        let mut options = MqttOptions::new(
            settings.client_id.clone(),
            settings.host.clone(),
            settings.port,
        );
        options
            .set_clean_session(false)
            .set_keep_alive(settings.keep_alive.max(Duration::from_secs(5)))
            .set_max_packet_size(
                (edgearmor_wire::Message::MAX_ENCODED_LEN + 1024).max(max_inbound),
                64 * 1024,
            )
            .set_inflight(INFLIGHT_WINDOW as u16 + 8)
            .set_last_will(LastWill::new(
                &topics.status,
                session.will.clone(),
                QoS::AtLeastOnce,
                true,
            ));
        if let Some(user) = &settings.username {
            let password = match &settings.password_file {
                Some(p) => std::fs::read_to_string(p)
                    .map_err(|source| MqttError::Read {
                        what: "password file",
                        path: p.clone(),
                        source,
                    })?
                    .trim_end_matches(['\n', '\r'])
                    .to_owned(),
                None => String::new(),
            };
            options.set_credentials(user.clone(), password);
        }
        if let Some(ca) = &settings.ca_file {
            let config = tls_config(settings, ca)?;
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::new(config),
            )));
        }
        let (wake, wake_rx) = async_channel::bounded(1);
        let stats = Arc::new(MqttStats::default());
        let broker = format!("{}:{}", settings.host, settings.port);
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
            stats: stats.clone(),
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
            stats,
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
    topics: Topics,
    session: SharedSession,
    subscriptions: Vec<String>,
    inbox: async_channel::Sender<Inbound>,
    buffer: SharedBuffer,
    stats: Arc<MqttStats>,
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
            self.stats
                .buffered_batches
                .store(left as u64, Ordering::Relaxed);
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
                self.stats.connected.store(true, Ordering::Relaxed);
                self.stats.connects.fetch_add(1, Ordering::Relaxed);
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
                    self.stats.acked_batches.fetch_add(1, Ordering::Relaxed);
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
        self.stats.connected.store(false, Ordering::Relaxed);
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
            let topic = format!("{}/{i}", self.topics.policies);
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
/// (exponential backoff with jitter) before the next poll reconnects. Ends when the
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

/// Exponential backoff from 250 ms to 30 s with ±50 % jitter, so a fleet that lost its
/// broker does not reconnect in lockstep.
struct Backoff {
    attempt: u32,
    rng: u64,
}

impl Backoff {
    fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ u64::from(std::process::id()) << 32;
        Self {
            attempt: 0,
            rng: seed | 1,
        }
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }

    fn next_delay(&mut self) -> Duration {
        let base_ms = (250u64 << self.attempt.min(7)).min(30_000);
        self.attempt += 1;
        // xorshift64: jitter only, not security.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let jitter = self.rng % (base_ms + 1);
        Duration::from_millis(base_ms / 2 + jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let mut b = Backoff::new();
        let delays: Vec<Duration> = (0..12).map(|_| b.next_delay()).collect();
        assert!(delays[0] <= Duration::from_millis(375) && delays[0] >= Duration::from_millis(125));
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(45_000)));
        assert!(
            delays[11] >= Duration::from_secs(15),
            "capped near 30 s: {:?}",
            delays[11]
        );
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(375));
    }

    #[test]
    fn topics_follow_the_convention() {
        let t = Topics::new("edgearmor", "plant-7", "gw-12");
        assert_eq!(t.events, "edgearmor/plant-7/gw-12/events");
        assert_eq!(t.status, "edgearmor/plant-7/gw-12/status");
        assert_eq!(t.policies, "edgearmor/plant-7/gw-12/policies");
    }
}
