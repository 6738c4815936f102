//! The live decoder: an MQTT session (3.1.1 or 5, `--mqtt-version`, default `auto`;
//! rumqttc through `edgearmor-mqtt`'s client, rustls with ring) feeding the
//! [`Decoder`], until SIGINT or SIGTERM.
//!
//! - Subscriptions: the retained policy tables and statuses in full (retained messages
//!   are never delivered to shared subscriptions), then the events, optionally as an
//!   MQTT 5 shared subscription. After they are acknowledged the decoder prints
//!   `edgearmor-decode: ready: ...` on stderr (once), and logs `subscribed to ...` after
//!   every (re)subscription.
//! - At-least-once: acknowledgements are manual and sent only after the message's lines
//!   were written and flushed. Duplicates from redelivery are the sequence tracker's job.
//! - Errors that retrying cannot fix (TLS verification, refused credentials or client
//!   id, a protocol version the broker does not speak, refused subscriptions, a session
//!   taken over by another decoder) end the decoder with a message naming the broker,
//!   the reason code and the fix; anything else (broker down, connection reset) is
//!   retried with capped, jittered backoff ([`edgearmor_mqtt::Backoff`], 250 ms to
//!   30 s, as the agent).
//! - Bounded: over MQTT 5 the broker may have at most [`RECEIVE_MAXIMUM`] messages
//!   unacknowledged with us and never sends packets over [`MAX_PACKET_SIZE`]; over
//!   3.1.1 the broker's own in-flight limit applies and a packet over
//!   [`MAX_PACKET_SIZE_V311`] ends the connection. Republished lines that do not fit
//!   the client's request queue are dropped and counted.
//! - The connection is polled in a task of its own (its connect is not cancel-safe)
//!   and its events reach the decoding loop through a channel.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edgearmor_mqtt::client::{
    self, Client, ClientOptions, Connection, Event, Failure, JSON, Publish, SESSION_EXPIRY_SECS,
    Session,
};
use edgearmor_mqtt::refusal::{self, DECODER_SETTINGS};
use edgearmor_mqtt::{Backoff, Credentials, CredentialsError, MqttVersion, TlsError};
use log::{debug, error, info, warn};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::capture::{self, CaptureWriter};
use crate::cli::BrokerConfig;
use crate::http::{HttpStats, Scrape};
use crate::metrics;
use crate::pipeline::{Decoder, HandleError, Received};
use crate::sink::{AlertSink, LineOrigin, SinkError};
use crate::topic;

/// Unacknowledged messages the broker may have in flight to us (MQTT 5 Receive Maximum).
pub const RECEIVE_MAXIMUM: u16 = 64;
/// Largest packet the broker may send us. Above any valid payload, so that oversized
/// ones reach the decoder and are counted; the broker drops anything larger (MQTT 5).
pub const MAX_PACKET_SIZE: u32 = capture::MAX_PAYLOAD_LEN + 64 * 1024;
/// Over MQTT 3.1.1 the broker cannot be told a limit: larger packets are read up to
/// this size (and rejected as oversized by the decoder), beyond it the connection ends.
pub const MAX_PACKET_SIZE_V311: usize = 16 << 20;
/// Requests (acks, republished lines, subscriptions) queued for the event loop.
pub const REQUEST_QUEUE: usize = 1024;
const TICK: Duration = Duration::from_millis(250);

/// What stopped the live decoder other than a signal.
#[derive(Debug)]
pub enum LiveError {
    /// A TLS file could not be used.
    TlsFiles(TlsError),
    /// The password file could not be used.
    Credentials(CredentialsError),
    /// The broker refused us in a way retrying cannot fix.
    Connection(Box<Failure>),
    /// The broker refused a subscription (the sentence names filter, code and fix).
    SubscriptionRefused(String),
    /// `--share-group` on a broker that speaks only MQTT 3.1.1.
    SharedNeedsV5 {
        broker: String,
    },
    Signals(io::Error),
    Capture {
        path: PathBuf,
        source: io::Error,
    },
    Output(SinkError),
}

impl std::fmt::Display for LiveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // Their causes come from `source()`.
            LiveError::TlsFiles(e) => e.fmt(f),
            LiveError::Credentials(e) => e.fmt(f),
            LiveError::Connection(failure) => failure.fmt(f),
            LiveError::SubscriptionRefused(message) => f.write_str(message),
            LiveError::SharedNeedsV5 { broker } => write!(
                f,
                "broker {broker} speaks only MQTT 3.1.1, and --share-group needs MQTT 5 shared subscriptions; split the load with one decoder per disjoint --topic filter instead (see the README's broker table)"
            ),
            LiveError::Signals(e) => write!(f, "installing the SIGINT/SIGTERM handlers: {e}"),
            LiveError::Capture { path, source } => {
                write!(f, "capture file {}: {source}", path.display())
            }
            LiveError::Output(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for LiveError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LiveError::TlsFiles(e) => e.source(),
            LiveError::Credentials(e) => e.source(),
            _ => None,
        }
    }
}

/// Connection-level counters, printed with the decoder's at exit.
#[derive(Default)]
pub struct LiveStats {
    pub connections: u64,
    pub connection_errors: u64,
    pub ack_retries: u64,
    pub acks_dropped: u64,
    pub republished: Arc<AtomicU64>,
    pub republish_dropped: Arc<AtomicU64>,
    pub republish_bad_topic: Arc<AtomicU64>,
}

impl LiveStats {
    pub fn pairs(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("connections", self.connections),
            ("connection_errors", self.connection_errors),
            ("ack_retries", self.ack_retries),
            ("acks_dropped", self.acks_dropped),
            ("republished", self.republished.load(Ordering::Relaxed)),
            (
                "republish_dropped",
                self.republish_dropped.load(Ordering::Relaxed),
            ),
            (
                "republish_bad_topic",
                self.republish_bad_topic.load(Ordering::Relaxed),
            ),
        ]
    }
}

/// The client options of `config`: with a fixed client id the broker keeps the session
/// (an hour after we leave, over MQTT 5).
pub fn mqtt_options(config: &BrokerConfig) -> Result<ClientOptions, LiveError> {
    let (client_id, session) = match &config.client_id {
        Some(id) => (
            id.clone(),
            Session::Persistent {
                expiry_secs: SESSION_EXPIRY_SECS,
            },
        ),
        None => (random_client_id(), Session::Clean),
    };
    let credentials =
        Credentials::load(config.username.as_deref(), config.password_file.as_deref())
            .map_err(LiveError::Credentials)?;
    let tls = match &config.tls {
        Some(files) => Some(edgearmor_mqtt::tls::transport(files).map_err(LiveError::TlsFiles)?),
        None => None,
    };
    Ok(ClientOptions {
        host: config.host.clone(),
        port: config.port,
        client_id,
        keep_alive: Duration::from_secs(30),
        session,
        last_will: None,
        credentials,
        tls,
        // MQTT 5 announces MAX_PACKET_SIZE (the broker drops larger packets); 3.1.1
        // cannot, so it reads larger ones up to its own limit.
        max_incoming_packet: MAX_PACKET_SIZE_V311,
        announced_max_packet: Some(MAX_PACKET_SIZE),
        max_outgoing_packet: 1 << 20,
        outgoing_inflight: 128,
        receive_maximum: Some(RECEIVE_MAXIMUM),
        manual_acks: true,
        request_capacity: REQUEST_QUEUE,
        connection_timeout: Duration::from_secs(10),
        settings: DECODER_SETTINGS,
    })
}

/// The client and its connection for `config`.
pub fn connect(config: &BrokerConfig) -> Result<(Client, Connection), LiveError> {
    let options = mqtt_options(config)?;
    Ok(client::connect(options, config.mqtt_version))
}

fn random_client_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("edgearmor-decode-{}-{nanos:08x}", std::process::id())
}

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Re-publishes each line to `<prefix>/<cluster>/<node>/alerts/json`, QoS 1.
///
/// Never blocks the decoder: a full request queue drops the line (counted).
pub struct MqttJsonSink {
    client: Client,
    topic_prefix: String,
    published: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    bad_topic: Arc<AtomicU64>,
}

impl MqttJsonSink {
    pub fn new(client: Client, topic_prefix: &str, stats: &LiveStats) -> Self {
        Self {
            client,
            topic_prefix: topic_prefix.to_owned(),
            published: stats.republished.clone(),
            dropped: stats.republish_dropped.clone(),
            bad_topic: stats.republish_bad_topic.clone(),
        }
    }
}

impl AlertSink for MqttJsonSink {
    fn write_line(&mut self, origin: &LineOrigin<'_>, line: &str) -> Result<(), SinkError> {
        let Some(topic) = topic::alerts_json_topic(&self.topic_prefix, origin.cluster, origin.node)
        else {
            self.bad_topic.fetch_add(1, Ordering::Relaxed);
            debug!(
                "not republishing a line of {:?}/{:?}: the names cannot be topic levels",
                origin.cluster, origin.node
            );
            return Ok(());
        };
        match self
            .client
            .try_publish(&topic, false, line.as_bytes().to_vec(), Some(JSON))
        {
            Ok(()) => {
                self.published.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped.is_power_of_two() {
                    warn!("line not republished ({dropped} so far): {e}");
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Appends received messages to a capture file.
pub struct CaptureFile {
    path: PathBuf,
    writer: CaptureWriter<BufWriter<File>>,
}

impl CaptureFile {
    pub fn open(path: &Path) -> Result<Self, LiveError> {
        let error = |source| LiveError::Capture {
            path: path.to_owned(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(error)?;
        let empty = file.metadata().map_err(error)?.len() == 0;
        let writer = CaptureWriter::new(BufWriter::new(file), empty).map_err(error)?;
        Ok(Self {
            path: path.to_owned(),
            writer,
        })
    }

    fn append(&mut self, message: &Received<'_>) -> Result<(), LiveError> {
        self.writer
            .append(
                message.now_us,
                message.retained,
                message.topic,
                message.payload,
            )
            .and_then(|()| self.writer.flush())
            .map_err(|source| LiveError::Capture {
                path: self.path.clone(),
                source,
            })
    }
}

/// Polls the connection and forwards what it yields. After a failure it waits (the
/// backoff, which starts over only after a connection that lasted) before polling
/// again, which reconnects; a failure that needs a fix is forwarded and ends it. Ends
/// when the receiver is gone.
async fn drive(mut connection: Connection, events: mpsc::Sender<Result<Event, Failure>>) {
    let mut backoff = Backoff::new();
    loop {
        let result = connection.poll().await;
        match &result {
            Err(failure) if !failure.needs_a_fix() => {
                if failure.after_stable_connection() {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                warn!("{failure}; retrying in {} ms", delay.as_millis());
                if events.send(result).await.is_err() {
                    return;
                }
                tokio::time::sleep(delay).await;
                continue;
            }
            _ => {}
        }
        let fatal = result.as_ref().is_err();
        if events.send(result).await.is_err() || fatal {
            return;
        }
    }
}

/// The live loop's view of the subscriptions.
struct Subscriptions {
    broker: String,
    filters: Vec<String>,
    user: Option<String>,
    share_group: bool,
    announced_ready: bool,
}

impl Subscriptions {
    /// After a CONNACK: subscribe unless the broker kept our session.
    fn on_connected(
        &mut self,
        client: &Client,
        version: MqttVersion,
        session_present: bool,
        fell_back_from: Option<MqttVersion>,
    ) -> Result<(), LiveError> {
        info!(
            "connected to {} ({version}, session present: {session_present})",
            self.broker
        );
        if let Some(refused) = fell_back_from {
            warn!(
                "broker {} does not speak {refused}; speaking {version} (--mqtt-version auto): no shared subscriptions, a --client-id session never expires",
                self.broker
            );
        }
        if self.share_group && version == MqttVersion::V311 {
            return Err(LiveError::SharedNeedsV5 {
                broker: self.broker.clone(),
            });
        }
        if !session_present {
            if let Err(e) = client.try_subscribe_many(&self.filters) {
                error!("cannot queue the subscriptions: {e}");
            }
        } else {
            self.subscribed();
        }
        Ok(())
    }

    fn on_suback(&mut self, results: &[Result<u8, refusal::Code>]) -> Result<(), LiveError> {
        for (filter, result) in self.filters.iter().zip(results) {
            match result {
                Err(code) => {
                    return Err(LiveError::SubscriptionRefused(
                        refusal::subscription_refused(
                            &self.broker,
                            filter,
                            *code,
                            self.user.as_deref(),
                        ),
                    ));
                }
                Ok(0) => warn!(
                    "broker {} granted QoS 0 for {filter}: those messages may be lost",
                    self.broker
                ),
                Ok(_) => {}
            }
        }
        self.subscribed();
        Ok(())
    }

    fn subscribed(&mut self) {
        info!(
            "subscribed to {} on {}",
            self.filters.join(", "),
            self.broker
        );
        if !self.announced_ready {
            announce_ready(&self.broker, &self.filters);
            self.announced_ready = true;
        }
    }
}

/// The metrics endpoint's side of the loop: scrapes to answer.
pub struct MetricsLink {
    pub scrapes: mpsc::Receiver<Scrape>,
    pub stats: Arc<HttpStats>,
}

/// Every `name=value` counter: the decoder's, the outputs', the connection's, the endpoint's.
pub fn all_pairs(
    decoder: &Decoder,
    sink: &dyn AlertSink,
    stats: &LiveStats,
    http: Option<&HttpStats>,
) -> Vec<(&'static str, u64)> {
    let mut pairs = decoder.counters().pairs();
    pairs.extend(sink.stats());
    pairs.extend(stats.pairs());
    if let Some(http) = http {
        pairs.extend(http.pairs());
    }
    pairs
}

async fn next_scrape(link: &mut Option<MetricsLink>) -> Option<Scrape> {
    match link {
        Some(link) => link.scrapes.recv().await,
        None => std::future::pending().await,
    }
}

/// Runs until SIGINT/SIGTERM (`Ok`) or a fatal error.
#[allow(clippy::too_many_arguments)] // One call site (main), every argument distinct.
pub async fn run(
    config: &BrokerConfig,
    topic_prefix: &str,
    decoder: &mut Decoder,
    sink: &mut dyn AlertSink,
    client: Client,
    connection: Connection,
    stats: &mut LiveStats,
    mut metrics_link: Option<MetricsLink>,
) -> Result<(), LiveError> {
    let mut capture = config
        .capture
        .as_deref()
        .map(CaptureFile::open)
        .transpose()?;
    let mut subscriptions = Subscriptions {
        broker: connection.broker(),
        filters: vec![
            topic::policies_filter(topic_prefix),
            topic::status_filter(topic_prefix),
            config.events_filter(),
        ],
        user: config.username.clone(),
        share_group: config.share_group.is_some(),
        announced_ready: false,
    };
    let mut sigterm = signal(SignalKind::terminate()).map_err(LiveError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(LiveError::Signals)?;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (events_tx, mut events) = mpsc::channel(64);
    let poller = tokio::spawn(drive(connection, events_tx));
    // Acks the request queue had no room for; at most RECEIVE_MAXIMUM by the protocol.
    let mut unsent_acks: VecDeque<Publish> = VecDeque::new();

    let result = loop {
        tokio::select! {
            _ = sigterm.recv() => break Ok(()),
            _ = sigint.recv() => break Ok(()),
            Some(scrape) = next_scrape(&mut metrics_link) => {
                let http = metrics_link.as_ref().map(|l| &*l.stats);
                let text = metrics::render(&all_pairs(decoder, sink, stats, http), decoder.fleet());
                // The scraper may have given up meanwhile.
                let _ = scrape.send(text);
            }
            _ = tick.tick() => {
                if let Err(e) = decoder.tick(now_us(), sink).and_then(|()| sink.flush())
                    && let Some(fatal) = output_error(e)
                {
                    break Err(fatal);
                }
                retry_acks(&client, &mut unsent_acks, stats);
            }
            event = events.recv() => match event {
                Some(Ok(Event::Connected { version, session_present, fell_back_from })) => {
                    stats.connections += 1;
                    // Acks for the previous connection's packet ids mean nothing now.
                    unsent_acks.clear();
                    if let Err(fatal) = subscriptions.on_connected(&client, version, session_present, fell_back_from) {
                        break Err(fatal);
                    }
                }
                Some(Ok(Event::SubAck { results, .. })) => {
                    if let Err(fatal) = subscriptions.on_suback(&results) {
                        break Err(fatal);
                    }
                }
                Some(Ok(Event::Message(publish))) => {
                    if let Err(fatal) = handle_publish(&publish, decoder, sink, capture.as_mut()) {
                        break Err(fatal);
                    }
                    if client.try_ack(&publish).is_err() {
                        // The broker cannot have more than RECEIVE_MAXIMUM unacknowledged
                        // messages with us; a longer backlog means it broke that, and the
                        // oldest ack goes (the broker redelivers after a reconnect).
                        if unsent_acks.len() >= usize::from(RECEIVE_MAXIMUM) {
                            unsent_acks.pop_front();
                            stats.acks_dropped += 1;
                            warn!("ack backlog full: an acknowledgement was dropped");
                        }
                        unsent_acks.push_back(publish);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(failure)) => {
                    stats.connection_errors += 1;
                    if failure.needs_a_fix() {
                        break Err(LiveError::Connection(Box::new(failure)));
                    }
                }
                None => break Ok(()),
            }
        }
    };

    // Shutting down: report the gaps still waiting for late events, then leave cleanly
    // (a polite DISCONNECT, so the broker does not treat us as lost).
    if let Err(e) = decoder.finish(sink).and_then(|()| sink.flush()) {
        error!("writing the final lines: {e}");
    }
    if client.try_disconnect().is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Some(event) = events.recv().await {
                if matches!(event, Ok(Event::DisconnectSent) | Err(_)) {
                    break;
                }
            }
        })
        .await;
    }
    drop(events);
    poller.abort();
    result
}

fn announce_ready(broker: &str, filters: &[String]) {
    // On stderr without the logger, so scripts and tests can wait for it whatever RUST_LOG says.
    eprintln!(
        "edgearmor-decode: ready: subscribed to {} on {broker}",
        filters.join(", ")
    );
}

fn handle_publish(
    publish: &Publish,
    decoder: &mut Decoder,
    sink: &mut dyn AlertSink,
    capture: Option<&mut CaptureFile>,
) -> Result<(), LiveError> {
    let Some(topic) = publish.topic() else {
        // MQTT requires UTF-8 topics; a broker that breaks this gets its message skipped.
        warn!("skipping a message whose topic is not UTF-8");
        return Ok(());
    };
    let message = Received {
        topic,
        payload: publish.payload(),
        retained: publish.retain(),
        now_us: now_us(),
    };
    if let Some(capture) = capture {
        capture.append(&message)?;
    }
    match decoder.handle(&message, sink) {
        Ok(accepted) => debug!("{topic}: {accepted:?}"),
        Err(HandleError::Rejected(rejection)) => {
            warn!(
                "{topic}: skipped a {}-byte payload: {rejection} [{}]",
                publish.payload().len(),
                rejection.kind()
            );
        }
        Err(HandleError::Output(e)) => {
            if let Some(fatal) = output_error(e) {
                return Err(fatal);
            }
        }
    }
    // Lines are flushed before the message is acknowledged (the caller acks next).
    match sink.flush() {
        Ok(()) => Ok(()),
        Err(e) => output_error(e).map_or(Ok(()), Err),
    }
}

/// Logs an output error; returns it as fatal when nothing can be written any more.
fn output_error(e: SinkError) -> Option<LiveError> {
    if e.is_fatal() {
        Some(LiveError::Output(e))
    } else {
        error!("{e}");
        None
    }
}

fn retry_acks(client: &Client, unsent: &mut VecDeque<Publish>, stats: &mut LiveStats) {
    while let Some(publish) = unsent.front() {
        if client.try_ack(publish).is_err() {
            return;
        }
        stats.ack_retries += 1;
        unsent.pop_front();
    }
}
