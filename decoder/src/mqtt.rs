//! The live decoder: an MQTT 5 session (rumqttc, rustls with ring) feeding the
//! [`Decoder`], until SIGINT or SIGTERM.
//!
//! - Subscriptions: the retained policy tables and statuses in full (retained messages
//!   are never delivered to shared subscriptions), then the events, optionally as a
//!   shared subscription. After they are acknowledged the decoder prints
//!   `edgearmor-decode: ready: ...` on stderr.
//! - At-least-once: acknowledgements are manual and sent only after the message's lines
//!   were written and flushed. Duplicates from redelivery are the sequence tracker's job.
//! - Errors that retrying cannot fix (TLS verification, refused credentials, refused
//!   subscriptions) end the decoder with a message saying what to fix; anything else
//!   (broker down, connection reset) is retried with capped, jittered backoff
//!   ([`edgearmor_mqtt::Backoff`], 250 ms to 30 s, as the agent).
//! - Bounded: the broker may have at most [`RECEIVE_MAXIMUM`] messages unacknowledged
//!   with us and never sends packets over [`MAX_PACKET_SIZE`]; republished lines that do
//!   not fit the client's request queue are dropped and counted.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edgearmor_mqtt::{Backoff, Credentials, CredentialsError, TlsError};
use log::{debug, error, info, warn};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Filter, Packet, Publish, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions};
use tokio::signal::unix::{SignalKind, signal};

use crate::capture::{self, CaptureWriter};
use crate::cli::BrokerConfig;
use crate::pipeline::{Decoder, HandleError, Received};
use crate::sink::{AlertSink, LineOrigin, SinkError};
use crate::topic;

/// Unacknowledged messages the broker may have in flight to us (MQTT 5 Receive Maximum).
pub const RECEIVE_MAXIMUM: u16 = 64;
/// Largest packet the broker may send us. Above any valid payload, so that oversized
/// ones reach the decoder and are counted; the broker drops anything larger (MQTT 5).
pub const MAX_PACKET_SIZE: u32 = capture::MAX_PAYLOAD_LEN + 64 * 1024;
/// Requests (acks, republished lines, subscriptions) queued for the event loop.
pub const REQUEST_QUEUE: usize = 1024;
/// Session kept by the broker while a decoder with a fixed `--client-id` is away.
const SESSION_EXPIRY_SECS: u32 = 3600;
const TICK: Duration = Duration::from_millis(250);

/// What stopped the live decoder other than a signal.
#[derive(Debug)]
pub enum LiveError {
    /// A TLS file could not be used.
    TlsFiles(TlsError),
    /// The password file could not be used.
    Credentials(CredentialsError),
    Tls {
        broker: String,
        reason: String,
        hint: &'static str,
    },
    Refused {
        broker: String,
        code: ConnectReturnCode,
    },
    SubscriptionRefused {
        filter: String,
        code: SubscribeReasonCode,
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
            LiveError::Tls {
                broker,
                reason,
                hint,
            } => write!(f, "TLS connection to {broker} failed: {reason}{hint}"),
            LiveError::Refused { broker, code } => write!(
                f,
                "broker {broker} refused the connection: {code:?}{}",
                match code {
                    ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized =>
                        " (check --username and --password-file)",
                    _ => "",
                }
            ),
            LiveError::SubscriptionRefused { filter, code } => write!(
                f,
                "broker refused the subscription to {filter}: {code:?}{}",
                if filter.starts_with("$share/") {
                    " (does the broker support MQTT 5 shared subscriptions, and may this client read the topic?)"
                } else {
                    " (may this client read the topic?)"
                }
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

pub fn mqtt_options(config: &BrokerConfig) -> Result<MqttOptions, LiveError> {
    let (client_id, persistent) = match &config.client_id {
        Some(id) => (id.clone(), true),
        None => (random_client_id(), false),
    };
    let mut options = MqttOptions::new(client_id, config.host.clone(), config.port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_start(!persistent)
        .set_manual_acks(true)
        .set_receive_maximum(Some(RECEIVE_MAXIMUM))
        .set_max_packet_size(Some(MAX_PACKET_SIZE))
        .set_connection_timeout(10);
    if persistent {
        options.set_session_expiry_interval(Some(SESSION_EXPIRY_SECS));
    }
    if let Some(c) = Credentials::load(config.username.as_deref(), config.password_file.as_deref())
        .map_err(LiveError::Credentials)?
    {
        options.set_credentials(c.username, c.password);
    }
    if let Some(files) = &config.tls {
        options.set_transport(edgearmor_mqtt::tls::transport(files).map_err(LiveError::TlsFiles)?);
    }
    Ok(options)
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
    client: AsyncClient,
    topic_prefix: String,
    published: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    bad_topic: Arc<AtomicU64>,
}

impl MqttJsonSink {
    pub fn new(client: AsyncClient, topic_prefix: &str, stats: &LiveStats) -> Self {
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
            .try_publish(topic, QoS::AtLeastOnce, false, line.as_bytes().to_vec())
        {
            Ok(()) => {
                self.published.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped.is_power_of_two() {
                    warn!("republish queue full, line dropped ({dropped} so far): {e}");
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

/// Why the connection failed, and whether trying again can help.
fn classify(error: &ConnectionError, broker: &str) -> Option<LiveError> {
    match error {
        ConnectionError::ConnectionRefused(code) => match code {
            ConnectReturnCode::ServerUnavailable
            | ConnectReturnCode::ServerBusy
            | ConnectReturnCode::QuotaExceeded
            | ConnectReturnCode::ConnectionRateExceeded
            | ConnectReturnCode::UnspecifiedError => None,
            _ => Some(LiveError::Refused {
                broker: broker.into(),
                code: *code,
            }),
        },
        other => rustls_error(other).map(|e| LiveError::Tls {
            broker: broker.into(),
            reason: e.to_string(),
            hint: match e {
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => {
                    " (is --ca the CA that signed the broker's certificate?)"
                }
                rustls::Error::InvalidCertificate(_) => {
                    " (the broker's certificate must name the --broker host and be valid now)"
                }
                rustls::Error::AlertReceived(_) => {
                    " (the broker refused the handshake; does it require a client certificate?)"
                }
                _ => "",
            },
        }),
    }
}

/// The rustls error somewhere inside a connection error: TLS failures are configuration
/// problems, which retrying does not fix.
fn rustls_error(error: &ConnectionError) -> Option<&rustls::Error> {
    let io = match error {
        ConnectionError::Tls(rumqttc::TlsError::TLS(e)) => return Some(e),
        ConnectionError::Tls(rumqttc::TlsError::Io(io)) | ConnectionError::Io(io) => io,
        ConnectionError::MqttState(rumqttc::v5::StateError::Io(io)) => io,
        // A TLS 1.3 server rejects our certificate (or its absence) after the handshake:
        // the alert surfaces when the CONNACK is read.
        ConnectionError::MqttState(rumqttc::v5::StateError::Deserialization(
            rumqttc::v5::mqttbytes::Error::Io(io),
        )) => io,
        _ => return None,
    };
    io.get_ref()?.downcast_ref::<rustls::Error>()
}

/// Runs until SIGINT/SIGTERM (`Ok`) or a fatal error.
pub async fn run(
    config: &BrokerConfig,
    topic_prefix: &str,
    decoder: &mut Decoder,
    sink: &mut dyn AlertSink,
    client: AsyncClient,
    mut eventloop: rumqttc::v5::EventLoop,
    stats: &mut LiveStats,
) -> Result<(), LiveError> {
    let broker = format!("{}:{}", config.host, config.port);
    let mut capture = config
        .capture
        .as_deref()
        .map(CaptureFile::open)
        .transpose()?;
    let filters = [
        topic::policies_filter(topic_prefix),
        topic::status_filter(topic_prefix),
        config.events_filter(),
    ];
    let mut sigterm = signal(SignalKind::terminate()).map_err(LiveError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(LiveError::Signals)?;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backoff = Backoff::new();
    // Acks the request queue had no room for; at most RECEIVE_MAXIMUM by the protocol.
    let mut unsent_acks: VecDeque<Publish> = VecDeque::new();
    let mut announced_ready = false;

    let result = loop {
        tokio::select! {
            _ = sigterm.recv() => break Ok(()),
            _ = sigint.recv() => break Ok(()),
            _ = tick.tick() => {
                if let Err(e) = decoder.tick(now_us(), sink).and_then(|()| sink.flush())
                    && let Some(fatal) = output_error(e)
                {
                    break Err(fatal);
                }
                retry_acks(&client, &mut unsent_acks, stats);
            }
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    stats.connections += 1;
                    backoff.reset();
                    // Acks for the previous connection's packet ids mean nothing now.
                    unsent_acks.clear();
                    info!("connected to {broker} (session present: {})", ack.session_present);
                    if !ack.session_present {
                        let subscriptions = filters.iter().map(|f| Filter::new(f.clone(), QoS::AtLeastOnce));
                        if let Err(e) = client.try_subscribe_many(subscriptions) {
                            error!("cannot queue the subscriptions: {e}");
                        }
                    } else if !announced_ready {
                        announce_ready(&broker, &filters);
                        announced_ready = true;
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(suback))) => {
                    let refused = filters.iter().zip(&suback.return_codes).find(|(_, code)| {
                        !matches!(code, SubscribeReasonCode::Success(_))
                    });
                    if let Some((filter, code)) = refused {
                        break Err(LiveError::SubscriptionRefused { filter: filter.clone(), code: *code });
                    }
                    if !announced_ready {
                        announce_ready(&broker, &filters);
                        announced_ready = true;
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
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
                Ok(Event::Incoming(Packet::Disconnect(disconnect))) => {
                    warn!("broker {broker} disconnected us: {:?}", disconnect.reason_code);
                }
                Ok(_) => {}
                Err(e) => {
                    stats.connection_errors += 1;
                    if let Some(fatal) = classify(&e, &broker) {
                        break Err(fatal);
                    }
                    let delay = backoff.next_delay();
                    warn!("connection to {broker}: {e}; retrying in {} ms", delay.as_millis());
                    tokio::select! {
                        _ = sigterm.recv() => break Ok(()),
                        _ = sigint.recv() => break Ok(()),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
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
            loop {
                match eventloop.poll().await {
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }
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
    let Ok(topic) = std::str::from_utf8(&publish.topic) else {
        // MQTT requires UTF-8 topics; a broker that breaks this gets its message skipped.
        warn!("skipping a message whose topic is not UTF-8");
        return Ok(());
    };
    let message = Received {
        topic,
        payload: &publish.payload,
        retained: publish.retain,
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
                publish.payload.len(),
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

fn retry_acks(client: &AsyncClient, unsent: &mut VecDeque<Publish>, stats: &mut LiveStats) {
    while let Some(publish) = unsent.front() {
        if client.try_ack(publish).is_err() {
            return;
        }
        stats.ack_retries += 1;
        unsent.pop_front();
    }
}
