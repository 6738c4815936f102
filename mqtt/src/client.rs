//! One MQTT client for both protocol versions: rumqttc's 3.1.1 client (`rumqttc::*`)
//! and its MQTT 5 client (`rumqttc::v5`) behind one [`Client`] handle and one
//! [`Connection`] event loop, with the version chosen by [`VersionChoice`] (feature
//! `client`).
//!
//! - [`connect`] builds both halves from [`ClientOptions`]; features that need MQTT 5
//!   (session expiry, Receive Maximum, Maximum Packet Size, content types) are sent only
//!   over MQTT 5.
//! - [`Connection::poll`] connects, reconnects when polled after a failure, negotiates
//!   the version (`auto` falls back to 3.1.1 at once, without waiting, when the broker
//!   refuses 5) and turns every failure into a [`Failure`] whose `Display` is the
//!   sentence an operator reads: the broker, the reason code, the fix.
//! - The caller's own state is the source of truth for what must be sent again:
//!   after a failure, rumqttc's copies of unacknowledged publishes, queued requests and
//!   buffered events of the lost connection are dropped, and while no connection is up
//!   [`Client`] refuses requests ([`RequestError::Offline`]). So every request a caller
//!   makes after [`Event::Connected`] goes out on that connection, in order, and the
//!   packet ids it learns from [`Event::PublishSent`] belong to it.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::v5 as v5b;

use crate::credentials::Credentials;
use crate::refusal::{self, Code, ConnectRefusal, Settings};
use crate::version::{Attempt, MqttVersion, Negotiation, Next, VersionChoice};

/// Content type of JSON payloads (MQTT 5 only).
pub const JSON: &str = "application/json";

/// A connection that lasted this long was healthy: the reconnect backoff starts over
/// after it ends. One lost sooner (another client taking the session over, a broker
/// closing on something we send) is pointed out, and the backoff keeps growing.
pub const STABLE_CONNECTION: Duration = Duration::from_secs(10);

/// How long an MQTT 5 broker keeps a persistent session after the client went away
/// (an MQTT 3.1.1 session has no expiry: it lasts until the client connects clean).
pub const SESSION_EXPIRY_SECS: u32 = 3600;

/// Whether the broker keeps the session while the client is away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Session {
    /// A new session on every connect (3.1.1 clean session, 5 clean start).
    Clean,
    /// Kept (3.1.1: until the client connects clean; 5: this long after a disconnect).
    Persistent { expiry_secs: u32 },
}

/// The last will: QoS 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Will {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    /// Sent as the will's content type over MQTT 5.
    pub content_type: Option<&'static str>,
}

/// Everything a connection needs, for either version.
#[derive(Clone)]
pub struct ClientOptions {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub keep_alive: Duration,
    pub session: Session,
    pub last_will: Option<Will>,
    pub credentials: Option<Credentials>,
    /// TLS ([`crate::tls::transport`]); `None` is plain TCP.
    pub tls: Option<rumqttc::Transport>,
    /// Largest packet accepted from the broker; over 3.1.1 a larger packet ends the
    /// connection.
    pub max_incoming_packet: usize,
    /// MQTT 5 Maximum Packet Size told to the broker, which drops larger packets
    /// (default: `max_incoming_packet`).
    pub announced_max_packet: Option<u32>,
    /// Largest packet sent (3.1.1; over MQTT 5 the broker's CONNACK says).
    pub max_outgoing_packet: usize,
    /// Unacknowledged publishes of ours on the wire at once (and the packet id range).
    pub outgoing_inflight: u16,
    /// MQTT 5 Receive Maximum: unacknowledged publishes the broker may send us.
    pub receive_maximum: Option<u16>,
    /// Acknowledge received publishes only through [`Client::try_ack`].
    pub manual_acks: bool,
    /// Requests queued between [`Client`] and [`Connection`].
    pub request_capacity: usize,
    /// TCP, TLS and CONNECT/CONNACK together must take at most this long.
    pub connection_timeout: Duration,
    /// The binary's setting names, for the fixes in error messages.
    pub settings: Settings,
}

impl ClientOptions {
    /// `host:port` as messages name the broker.
    pub fn broker(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn v311(&self) -> rumqttc::MqttOptions {
        let mut o = rumqttc::MqttOptions::new(&self.client_id, &self.host, self.port);
        o.set_keep_alive(self.keep_alive)
            .set_clean_session(self.session == Session::Clean)
            .set_max_packet_size(self.max_incoming_packet, self.max_outgoing_packet)
            .set_inflight(self.outgoing_inflight.max(1))
            .set_manual_acks(self.manual_acks);
        if let Some(will) = &self.last_will {
            o.set_last_will(rumqttc::LastWill::new(
                &will.topic,
                will.payload.clone(),
                rumqttc::QoS::AtLeastOnce,
                will.retain,
            ));
        }
        if let Some(c) = &self.credentials {
            o.set_credentials(c.username.clone(), c.password.clone());
        }
        if let Some(t) = &self.tls {
            o.set_transport(t.clone());
        }
        o
    }

    fn v5(&self) -> rumqttc::v5::MqttOptions {
        let mut o = rumqttc::v5::MqttOptions::new(&self.client_id, &self.host, self.port);
        o.set_keep_alive(self.keep_alive)
            .set_manual_acks(self.manual_acks)
            .set_outgoing_inflight_upper_limit(self.outgoing_inflight.max(1))
            .set_connection_timeout(self.connection_timeout.as_secs().max(1));
        match self.session {
            Session::Clean => {
                o.set_clean_start(true);
            }
            Session::Persistent { expiry_secs } => {
                o.set_clean_start(false)
                    .set_session_expiry_interval(Some(expiry_secs));
            }
        }
        o.set_receive_maximum(self.receive_maximum);
        o.set_max_packet_size(Some(
            self.announced_max_packet
                .unwrap_or(u32::try_from(self.max_incoming_packet).unwrap_or(u32::MAX)),
        ));
        if let Some(will) = &self.last_will {
            let properties = will.content_type.map(|ct| v5b::LastWillProperties {
                delay_interval: None,
                payload_format_indicator: None,
                message_expiry_interval: None,
                content_type: Some(ct.to_owned()),
                response_topic: None,
                correlation_data: None,
                user_properties: Vec::new(),
            });
            o.set_last_will(v5b::LastWill::new(
                &will.topic,
                will.payload.clone(),
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                will.retain,
                properties,
            ));
        }
        if let Some(c) = &self.credentials {
            o.set_credentials(c.username.clone(), c.password.clone());
        }
        if let Some(t) = &self.tls {
            o.set_transport(t.clone());
        }
        o
    }
}

/// Why a request was not queued.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// No connection is up: requests would go out on a later connection, mixed up with
    /// what the caller sends after [`Event::Connected`].
    #[error("not connected to the broker")]
    Offline,
    /// The request queue is full (or the event loop is gone).
    #[error("the MQTT request queue is full")]
    Full,
}

#[derive(Clone)]
enum Inner {
    V311(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// The current rumqttc client and whether its connection is up. Requests are checked
/// against `online` and queued under the same lock [`Connection`] takes to go offline
/// (after which it drops what was queued), so no request made while the connection is
/// down can reach a later connection.
struct Shared {
    inner: Inner,
    online: bool,
}

/// The requesting half: cheap to clone, usable from any task or thread. Requests never
/// wait: a full queue is [`RequestError::Full`], to be retried after the next event.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Mutex<Shared>>,
}

impl Client {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `request` on the current client if a connection is up.
    fn request(&self, request: impl FnOnce(&Inner) -> bool) -> Result<(), RequestError> {
        let shared = self.lock();
        if !shared.online {
            return Err(RequestError::Offline);
        }
        request(&shared.inner)
            .then_some(())
            .ok_or(RequestError::Full)
    }

    /// Whether a connection is up (as [`Connection::poll`] last saw it).
    pub fn is_connected(&self) -> bool {
        self.lock().online
    }

    /// The version of the current (or next) connection.
    pub fn version(&self) -> MqttVersion {
        match self.lock().inner {
            Inner::V311(_) => MqttVersion::V311,
            Inner::V5(_) => MqttVersion::V5,
        }
    }

    /// Queues a QoS 1 publish; `content_type` is sent over MQTT 5 only.
    pub fn try_publish(
        &self,
        topic: &str,
        retain: bool,
        payload: Vec<u8>,
        content_type: Option<&str>,
    ) -> Result<(), RequestError> {
        self.request(|inner| match inner {
            Inner::V311(c) => c
                .try_publish(topic, rumqttc::QoS::AtLeastOnce, retain, payload)
                .is_ok(),
            Inner::V5(c) => {
                let qos = rumqttc::v5::mqttbytes::QoS::AtLeastOnce;
                match content_type {
                    Some(ct) => c
                        .try_publish_with_properties(
                            topic,
                            qos,
                            retain,
                            payload,
                            content_properties(ct),
                        )
                        .is_ok(),
                    None => c.try_publish(topic, qos, retain, payload).is_ok(),
                }
            }
        })
    }

    /// Subscribes to `filters` at QoS 1 in one SUBSCRIBE; its [`Event::SubAck`] has one
    /// result per filter, in this order.
    pub fn try_subscribe_many(&self, filters: &[String]) -> Result<(), RequestError> {
        self.request(|inner| match inner {
            Inner::V311(c) => c
                .try_subscribe_many(
                    filters.iter().map(|f| {
                        rumqttc::SubscribeFilter::new(f.clone(), rumqttc::QoS::AtLeastOnce)
                    }),
                )
                .is_ok(),
            Inner::V5(c) => c
                .try_subscribe_many(
                    filters.iter().map(|f| {
                        v5b::Filter::new(f.clone(), rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
                    }),
                )
                .is_ok(),
        })
    }

    /// Acknowledges a received publish (with [`ClientOptions::manual_acks`]). A publish
    /// of another version's connection is not acknowledged (its packet id means nothing
    /// now; the broker sends it again).
    pub fn try_ack(&self, publish: &Publish) -> Result<(), RequestError> {
        self.request(|inner| match (inner, &publish.inner) {
            (Inner::V311(c), PublishInner::V311(p)) => c.try_ack(p).is_ok(),
            (Inner::V5(c), PublishInner::V5(p)) => c.try_ack(p).is_ok(),
            _ => true,
        })
    }

    /// Queues a DISCONNECT (the broker then drops the last will).
    pub fn try_disconnect(&self) -> Result<(), RequestError> {
        self.request(|inner| match inner {
            Inner::V311(c) => c.try_disconnect().is_ok(),
            Inner::V5(c) => c.try_disconnect().is_ok(),
        })
    }
}

fn content_properties(content_type: &str) -> v5b::PublishProperties {
    v5b::PublishProperties {
        content_type: Some(content_type.to_owned()),
        ..Default::default()
    }
}

#[derive(Clone, Debug)]
enum PublishInner {
    V311(rumqttc::Publish),
    V5(v5b::Publish),
}

/// A message from the broker.
#[derive(Clone, Debug)]
pub struct Publish {
    inner: PublishInner,
}

impl Publish {
    /// `None` when the topic is not UTF-8 (which MQTT forbids).
    pub fn topic(&self) -> Option<&str> {
        match &self.inner {
            PublishInner::V311(p) => Some(&p.topic),
            PublishInner::V5(p) => std::str::from_utf8(&p.topic).ok(),
        }
    }

    pub fn payload(&self) -> &[u8] {
        match &self.inner {
            PublishInner::V311(p) => &p.payload,
            PublishInner::V5(p) => &p.payload,
        }
    }

    /// Whether the broker delivered it from its retained store.
    pub fn retain(&self) -> bool {
        match &self.inner {
            PublishInner::V311(p) => p.retain,
            PublishInner::V5(p) => p.retain,
        }
    }
}

/// What [`Connection::poll`] yields.
#[derive(Clone, Debug)]
pub enum Event {
    /// A CONNACK accepting us. `fell_back_from` is set once, on the first connection
    /// after `auto` changed versions: what to tell the operator.
    Connected {
        version: MqttVersion,
        session_present: bool,
        fell_back_from: Option<MqttVersion>,
    },
    /// A message on one of our subscriptions.
    Message(Publish),
    /// The broker acknowledged our publish `pkid`; `refused` holds an MQTT 5 failure
    /// reason (the message was not accepted).
    PubAck { pkid: u16, refused: Option<Code> },
    /// The answer to a SUBSCRIBE: per filter, the granted QoS or the refusal.
    SubAck {
        pkid: u16,
        results: Vec<Result<u8, Code>>,
    },
    /// Our publish went out with packet id `pkid` (in request order).
    PublishSent { pkid: u16 },
    /// Our publish waits for packet id `pkid` to be acknowledged first (the broker
    /// acknowledged out of order); it goes out later with another `PublishSent`.
    PublishDeferred { pkid: u16 },
    /// Our DISCONNECT went out.
    DisconnectSent,
    /// Anything else (pings, our own acks, ...).
    Other,
}

enum Loop {
    V311(Box<rumqttc::EventLoop>),
    V5(Box<rumqttc::v5::EventLoop>),
}

/// The event loop half. Poll it continuously; after a [`Failure`], polling again
/// reconnects (the caller decides how long to wait first).
pub struct Connection {
    options: ClientOptions,
    negotiation: Negotiation,
    client: Client,
    eventloop: Loop,
    /// A CONNACK arrived on the current network connection, and when.
    connected_at: Option<Instant>,
    last_connected: Option<MqttVersion>,
}

/// The two halves of a client for `options`, speaking what `choice` says.
pub fn connect(options: ClientOptions, choice: VersionChoice) -> (Client, Connection) {
    let negotiation = Negotiation::new(choice);
    let (inner, eventloop) = build(&options, negotiation.current());
    let client = Client {
        shared: Arc::new(Mutex::new(Shared {
            inner,
            online: false,
        })),
    };
    let connection = Connection {
        options,
        negotiation,
        client: client.clone(),
        eventloop,
        connected_at: None,
        last_connected: None,
    };
    (client, connection)
}

fn build(options: &ClientOptions, version: MqttVersion) -> (Inner, Loop) {
    let capacity = options.request_capacity.max(1);
    match version {
        MqttVersion::V311 => {
            let (client, mut eventloop) = rumqttc::AsyncClient::new(options.v311(), capacity);
            let mut network = rumqttc::NetworkOptions::new();
            network.set_connection_timeout(options.connection_timeout.as_secs().max(1));
            eventloop.set_network_options(network);
            (Inner::V311(client), Loop::V311(Box::new(eventloop)))
        }
        MqttVersion::V5 => {
            let (client, eventloop) = rumqttc::v5::AsyncClient::new(options.v5(), capacity);
            (Inner::V5(client), Loop::V5(Box::new(eventloop)))
        }
    }
}

impl Connection {
    /// A client handle (the same as the one [`connect`] returned).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The version of the current (or next) connection attempt.
    pub fn version(&self) -> MqttVersion {
        self.negotiation.current()
    }

    pub fn broker(&self) -> String {
        self.options.broker()
    }

    /// The next event; connects first when no connection is up.
    pub async fn poll(&mut self) -> Result<Event, Failure> {
        loop {
            let version = self.negotiation.current();
            let result = match &mut self.eventloop {
                Loop::V311(l) => l.poll().await.map(map_v311).map_err(|e| classify_v311(&e)),
                Loop::V5(l) => l.poll().await.map(map_v5).map_err(|e| classify_v5(&e)),
            };
            match result {
                Ok(Event::Connected {
                    session_present, ..
                }) => {
                    self.connected_at = Some(Instant::now());
                    self.negotiation.record(Attempt::Connected);
                    let fell_back_from = (self.negotiation.choice() == VersionChoice::Auto
                        && version != self.negotiation.choice().preferred()
                        && self.last_connected != Some(version))
                    .then_some(version.other());
                    self.last_connected = Some(version);
                    self.client.lock().online = true;
                    return Ok(Event::Connected {
                        version,
                        session_present,
                        fell_back_from,
                    });
                }
                Ok(event) => return Ok(event),
                Err(kind) => {
                    // Offline first, then drop what was queued: nothing queued for the
                    // lost connection reaches the next one.
                    self.client.lock().online = false;
                    self.forget_connection();
                    let connected_for = self.connected_at.take().map(|t| t.elapsed());
                    let kind = match (kind, connected_for) {
                        // Only a failure before the CONNACK can be the version.
                        (FailureKind::ClosedOnConnect(detail), Some(_)) => {
                            FailureKind::Lost(detail)
                        }
                        (kind, _) => kind,
                    };
                    let failure = self.failure(version, kind, connected_for);
                    if connected_for.is_some() {
                        return Err(failure);
                    }
                    match self.negotiation.record(failure.attempt()) {
                        Next::Switch(next) => {
                            log::debug!("{failure}; trying {next} (mqtt version auto) right away");
                            self.rebuild(next);
                            continue;
                        }
                        Next::Probe(other) => {
                            let spoken = probe(&self.options, other).await;
                            if let Next::Unsupported(_) = self.negotiation.probed(spoken) {
                                return Err(self.unsupported(version, None));
                            }
                            return Err(failure);
                        }
                        Next::Unsupported(_) => {
                            let code = match failure.kind {
                                FailureKind::Refused(code) => Some(code),
                                _ => None,
                            };
                            return Err(self.unsupported(version, code));
                        }
                        Next::Continue => {
                            if self.negotiation.current() != version {
                                self.rebuild(self.negotiation.current());
                            }
                            return Err(failure);
                        }
                    }
                }
            }
        }
    }

    fn failure(
        &self,
        version: MqttVersion,
        kind: FailureKind,
        connected_for: Option<Duration>,
    ) -> Failure {
        Failure {
            broker: self.options.broker(),
            client_id: self.options.client_id.clone(),
            settings: self.options.settings,
            version,
            kind,
            connected_for,
        }
    }

    fn unsupported(&self, version: MqttVersion, code: Option<Code>) -> Failure {
        self.failure(version, FailureKind::VersionUnsupported(code), None)
    }

    /// rumqttc keeps unacknowledged publishes, queued requests and buffered events of a
    /// lost connection to replay them; the caller replays from its own state instead.
    fn forget_connection(&mut self) {
        match &mut self.eventloop {
            Loop::V311(l) => {
                l.clean();
                l.pending.clear();
                l.state.events.clear();
            }
            Loop::V5(l) => {
                l.clean();
                l.pending.clear();
                l.state.events.clear();
            }
        }
    }

    fn rebuild(&mut self, version: MqttVersion) {
        let (inner, eventloop) = build(&self.options, version);
        self.client.lock().inner = inner;
        self.eventloop = eventloop;
    }
}

/// `Connected` comes out with the version and `fell_back_from` filled in by the caller.
fn map_v311(event: rumqttc::Event) -> Event {
    use rumqttc::{Event as E, Outgoing, Packet};
    match event {
        E::Incoming(Packet::ConnAck(ack)) => Event::Connected {
            version: MqttVersion::V311,
            session_present: ack.session_present,
            fell_back_from: None,
        },
        E::Incoming(Packet::Publish(p)) => Event::Message(Publish {
            inner: PublishInner::V311(p),
        }),
        E::Incoming(Packet::PubAck(ack)) => Event::PubAck {
            pkid: ack.pkid,
            refused: None,
        },
        E::Incoming(Packet::SubAck(ack)) => Event::SubAck {
            pkid: ack.pkid,
            results: ack
                .return_codes
                .iter()
                .map(|code| match code {
                    rumqttc::SubscribeReasonCode::Success(qos) => Ok(*qos as u8),
                    rumqttc::SubscribeReasonCode::Failure => Err(Code {
                        version: MqttVersion::V311,
                        value: 0x80,
                    }),
                })
                .collect(),
        },
        E::Outgoing(Outgoing::Publish(pkid)) => Event::PublishSent { pkid },
        E::Outgoing(Outgoing::AwaitAck(pkid)) => Event::PublishDeferred { pkid },
        E::Outgoing(Outgoing::Disconnect) => Event::DisconnectSent,
        _ => Event::Other,
    }
}

fn map_v5(event: rumqttc::v5::Event) -> Event {
    use rumqttc::Outgoing;
    use rumqttc::v5::Event as E;
    use v5b::Packet;
    match event {
        E::Incoming(Packet::ConnAck(ack)) => Event::Connected {
            version: MqttVersion::V5,
            session_present: ack.session_present,
            fell_back_from: None,
        },
        E::Incoming(Packet::Publish(p)) => Event::Message(Publish {
            inner: PublishInner::V5(p),
        }),
        E::Incoming(Packet::PubAck(ack)) => Event::PubAck {
            pkid: ack.pkid,
            refused: puback_refusal(ack.reason),
        },
        E::Incoming(Packet::SubAck(ack)) => Event::SubAck {
            pkid: ack.pkid,
            results: ack.return_codes.iter().map(|c| suback_v5(*c)).collect(),
        },
        E::Outgoing(Outgoing::Publish(pkid)) => Event::PublishSent { pkid },
        E::Outgoing(Outgoing::AwaitAck(pkid)) => Event::PublishDeferred { pkid },
        E::Outgoing(Outgoing::Disconnect) => Event::DisconnectSent,
        _ => Event::Other,
    }
}

fn v5code(value: u8) -> Code {
    Code {
        version: MqttVersion::V5,
        value,
    }
}

fn puback_refusal(reason: v5b::PubAckReason) -> Option<Code> {
    use v5b::PubAckReason as R;
    let value = match reason {
        R::Success | R::NoMatchingSubscribers => return None,
        R::UnspecifiedError => 0x80,
        R::ImplementationSpecificError => 0x83,
        R::NotAuthorized => 0x87,
        R::TopicNameInvalid => 0x90,
        R::PacketIdentifierInUse => 0x91,
        R::QuotaExceeded => 0x97,
        R::PayloadFormatInvalid => 0x99,
    };
    Some(v5code(value))
}

fn suback_v5(code: v5b::SubscribeReasonCode) -> Result<u8, Code> {
    use v5b::SubscribeReasonCode as R;
    let value = match code {
        R::Success(qos) => return Ok(qos as u8),
        R::Failure | R::Unspecified => 0x80,
        R::ImplementationSpecific => 0x83,
        R::NotAuthorized => 0x87,
        R::TopicFilterInvalid => 0x8f,
        R::PkidInUse => 0x91,
        R::QuotaExceeded => 0x97,
        R::SharedSubscriptionsNotSupported => 0x9e,
        R::SubscriptionIdNotSupported => 0xa1,
        R::WildcardSubscriptionsNotSupported => 0xa2,
    };
    Err(v5code(value))
}

fn connack_v311(code: rumqttc::ConnectReturnCode) -> Code {
    use rumqttc::ConnectReturnCode as C;
    let value = match code {
        C::Success => 0,
        C::RefusedProtocolVersion => 1,
        C::BadClientId => 2,
        C::ServiceUnavailable => 3,
        C::BadUserNamePassword => 4,
        C::NotAuthorized => 5,
    };
    Code {
        version: MqttVersion::V311,
        value,
    }
}

fn connack_v5(code: v5b::ConnectReturnCode) -> Code {
    use v5b::ConnectReturnCode as C;
    let value = match code {
        C::Success => 0,
        // rumqttc's MQTT 5 type also holds the 3.1.1 codes; a broker answering an MQTT
        // 5 CONNECT with them means the version.
        C::RefusedProtocolVersion | C::UnsupportedProtocolVersion => 0x84,
        C::BadClientId | C::ClientIdentifierNotValid => 0x85,
        C::ServiceUnavailable | C::ServerUnavailable => 0x88,
        C::UnspecifiedError => 0x80,
        C::MalformedPacket => 0x81,
        C::ProtocolError => 0x82,
        C::ImplementationSpecificError => 0x83,
        C::BadUserNamePassword => 0x86,
        C::NotAuthorized => 0x87,
        C::ServerBusy => 0x89,
        C::Banned => 0x8a,
        C::BadAuthenticationMethod => 0x8c,
        C::TopicNameInvalid => 0x90,
        C::PacketTooLarge => 0x95,
        C::QuotaExceeded => 0x97,
        C::PayloadFormatInvalid => 0x99,
        C::RetainNotSupported => 0x9a,
        C::QoSNotSupported => 0x9b,
        C::UseAnotherServer => 0x9c,
        C::ServerMoved => 0x9d,
        C::ConnectionRateExceeded => 0x9f,
    };
    v5code(value)
}

/// Why a connection failed or ended.
#[derive(Debug)]
pub enum FailureKind {
    /// The CONNACK refused us.
    Refused(Code),
    /// The broker does not speak the configured version (a fixed one): it said so
    /// (`Some`), or it closed the connection on our CONNECT and accepted the other
    /// version (`None`).
    VersionUnsupported(Option<Code>),
    /// TLS failed: verification, a refused handshake, a broker that does not speak TLS.
    Tls { reason: String, hint: TlsHint },
    /// TCP could not connect (refused, unreachable, name not resolved).
    Unreachable(std::io::Error),
    /// The broker closed the connection on our CONNECT without a CONNACK we could read.
    ClosedOnConnect(String),
    /// CONNECT, TLS and CONNACK took longer than the connection timeout.
    Timeout,
    /// The broker ended an established connection with an MQTT 5 DISCONNECT.
    Disconnected(Code),
    /// An established connection was lost.
    Lost(String),
}

/// What a TLS failure probably means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsHint {
    UnknownIssuer,
    BadCertificate,
    HandshakeRefused,
    NotTls,
    Other,
}

/// A failed or ended connection, with what the operator needs to fix it.
#[derive(Debug)]
pub struct Failure {
    pub broker: String,
    pub client_id: String,
    pub settings: Settings,
    pub version: MqttVersion,
    pub kind: FailureKind,
    /// How long the connection had been up, when it was.
    pub connected_for: Option<Duration>,
}

impl Failure {
    /// Whether retrying cannot help until something is changed here or at the broker:
    /// TLS verification, refused credentials or client id, an unspoken version, another
    /// client taking our session over (reconnecting would take it back, and so on).
    pub fn needs_a_fix(&self) -> bool {
        match &self.kind {
            FailureKind::Refused(code) => !ConnectRefusal::from_code(*code).retryable(),
            FailureKind::VersionUnsupported(_) => true,
            FailureKind::Tls { hint, .. } => *hint != TlsHint::Other,
            FailureKind::Disconnected(code) => code.value == 0x8e,
            _ => false,
        }
    }

    /// An established connection lost before it was [`STABLE_CONNECTION`].
    pub fn short_lived(&self) -> bool {
        self.connected_for.is_some_and(|d| d < STABLE_CONNECTION)
    }

    /// Whether the reconnect backoff should start over: the connection that ended had
    /// been healthy.
    pub fn after_stable_connection(&self) -> bool {
        self.connected_for.is_some_and(|d| d >= STABLE_CONNECTION)
    }

    fn attempt(&self) -> Attempt {
        match &self.kind {
            FailureKind::Refused(code)
                if ConnectRefusal::from_code(*code) == ConnectRefusal::ProtocolVersion =>
            {
                Attempt::VersionRefused
            }
            FailureKind::ClosedOnConnect(_) => Attempt::ClosedOnConnect,
            _ => Attempt::Other,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let broker = &self.broker;
        let s = &self.settings;
        match &self.kind {
            FailureKind::Refused(code) => {
                f.write_str(&refusal::connect_refused(broker, &self.client_id, *code, s))
            }
            FailureKind::VersionUnsupported(code) => {
                let evidence = match code {
                    Some(code) => format!("it refused it ({code})"),
                    None => format!(
                        "it closed the connection on our {} CONNECT without answering, and accepts {}",
                        self.version,
                        self.version.other()
                    ),
                };
                write!(
                    f,
                    "broker {broker} does not speak {}: {evidence}; set {} to auto or {}",
                    self.version,
                    s.mqtt_version,
                    self.version.other().as_str()
                )
            }
            FailureKind::Tls { reason, hint } => {
                let prefix = if s.ca == "--ca" {
                    "TLS connection to"
                } else {
                    "TLS with broker"
                };
                let hint = match hint {
                    TlsHint::UnknownIssuer => {
                        format!(
                            " (is {} the CA that signed the broker's certificate?)",
                            s.ca
                        )
                    }
                    TlsHint::BadCertificate => format!(
                        " (the broker's certificate must name the {} host and be valid now)",
                        s.broker
                    ),
                    TlsHint::HandshakeRefused => {
                        " (the broker refused the handshake; does it require a client certificate?)"
                            .to_owned()
                    }
                    TlsHint::NotTls => {
                        " (is this the broker's TLS port? it did not complete a TLS handshake)"
                            .to_owned()
                    }
                    TlsHint::Other => String::new(),
                };
                write!(f, "{prefix} {broker} failed: {reason}{hint}")
            }
            FailureKind::Unreachable(e) => write!(f, "cannot reach broker {broker}: {e}"),
            FailureKind::ClosedOnConnect(detail) => write!(
                f,
                "broker {broker} closed the connection on our {} CONNECT without a CONNACK ({detail})",
                self.version
            ),
            FailureKind::Timeout => write!(
                f,
                "broker {broker} did not answer in time (no CONNACK within the connection timeout)"
            ),
            FailureKind::Disconnected(code) => {
                f.write_str(&refusal::disconnected(broker, &self.client_id, *code, s))
            }
            FailureKind::Lost(detail) => {
                write!(f, "connection to broker {broker} lost: {detail}")?;
                if self.short_lived() {
                    // A broker taking a session over for another client says so only
                    // over MQTT 5, and not every broker does (mosquitto 2.0 just closes).
                    write!(
                        f,
                        " (if this repeats right after every connect, another client may be using the client id {:?}: give every client its own {}; or the broker closes on something this client sends: see its log)",
                        self.client_id, s.client_id
                    )?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Failure {}

fn tls_failure(e: &rustls::Error) -> FailureKind {
    let hint = match e {
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => {
            TlsHint::UnknownIssuer
        }
        rustls::Error::InvalidCertificate(_) => TlsHint::BadCertificate,
        rustls::Error::AlertReceived(_) => TlsHint::HandshakeRefused,
        rustls::Error::InvalidMessage(_) => TlsHint::NotTls,
        _ => TlsHint::Other,
    };
    FailureKind::Tls {
        reason: e.to_string(),
        hint,
    }
}

fn rustls_in(io: &std::io::Error) -> Option<&rustls::Error> {
    io.get_ref()?.downcast_ref::<rustls::Error>()
}

fn closed(detail: impl std::fmt::Display) -> FailureKind {
    FailureKind::ClosedOnConnect(detail.to_string())
}

/// A TLS failure, as both protocol versions' clients report it.
fn classify_tls(e: &rumqttc::TlsError) -> FailureKind {
    match e {
        rumqttc::TlsError::TLS(t) => tls_failure(t),
        rumqttc::TlsError::Io(io) => match rustls_in(io) {
            Some(t) => tls_failure(t),
            None => FailureKind::Tls {
                reason: io.to_string(),
                hint: TlsHint::NotTls,
            },
        },
        other => FailureKind::Tls {
            reason: other.to_string(),
            hint: TlsHint::Other,
        },
    }
}

/// An I/O failure before MQTT: TLS underneath, or the broker unreachable.
fn classify_io(io: &std::io::Error) -> FailureKind {
    match rustls_in(io) {
        Some(t) => tls_failure(t),
        None => FailureKind::Unreachable(clone_io(io)),
    }
}

fn classify_v311(e: &rumqttc::ConnectionError) -> FailureKind {
    use rumqttc::{ConnectionError as C, StateError as S};
    let io = match e {
        C::Tls(t) => return classify_tls(t),
        C::Io(io) => return classify_io(io),
        C::MqttState(S::Io(io)) | C::MqttState(S::Deserialization(rumqttc::Error::Io(io))) => io,
        C::ConnectionRefused(code) => return FailureKind::Refused(connack_v311(*code)),
        C::NetworkTimeout => return FailureKind::Timeout,
        C::MqttState(S::ConnectionAborted) => return closed(e),
        C::MqttState(S::Deserialization(d)) => return closed(d),
        other => return FailureKind::Lost(other.to_string()),
    };
    match rustls_in(io) {
        Some(t) => tls_failure(t),
        None => closed(io),
    }
}

fn classify_v5(e: &rumqttc::v5::ConnectionError) -> FailureKind {
    use rumqttc::v5::{ConnectionError as C, StateError as S};
    let io = match e {
        C::Tls(t) => return classify_tls(t),
        C::Io(io) => return classify_io(io),
        C::MqttState(S::Io(io))
        | C::MqttState(S::Deserialization(rumqttc::v5::mqttbytes::Error::Io(io))) => io,
        C::ConnectionRefused(code) => return FailureKind::Refused(connack_v5(*code)),
        C::Timeout(_) => return FailureKind::Timeout,
        C::MqttState(S::ServerDisconnect { reason_code, .. }) => {
            return FailureKind::Disconnected(v5code(*reason_code as u8));
        }
        C::MqttState(S::ConnFail { reason }) => {
            return FailureKind::Refused(connack_v5(*reason));
        }
        C::MqttState(S::ConnectionAborted) => return closed(e),
        // A 3.1.1 CONNACK read as MQTT 5, or garbage.
        C::MqttState(S::Deserialization(d)) => return closed(d),
        other => return FailureKind::Lost(other.to_string()),
    };
    match rustls_in(io) {
        Some(t) => tls_failure(t),
        None => closed(io),
    }
}

fn clone_io(e: &std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), e.to_string())
}

/// Whether the broker accepts a CONNECT in `version` (used to tell an operator that a
/// fixed version is the problem). Connects with the same options, then leaves with a
/// DISCONNECT (so no last will is published).
async fn probe(options: &ClientOptions, version: MqttVersion) -> bool {
    let mut options = options.clone();
    options.request_capacity = 4;
    let (inner, mut eventloop) = build(&options, version);
    let limit = options.connection_timeout + Duration::from_secs(1);
    let accepted = tokio::time::timeout(limit, async {
        match &mut eventloop {
            Loop::V311(l) => matches!(
                l.poll().await,
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)))
            ),
            Loop::V5(l) => matches!(
                l.poll().await,
                Ok(rumqttc::v5::Event::Incoming(v5b::Packet::ConnAck(_)))
            ),
        }
    })
    .await
    .unwrap_or(false);
    if accepted {
        let sent = match &inner {
            Inner::V311(c) => c.try_disconnect().is_ok(),
            Inner::V5(c) => c.try_disconnect().is_ok(),
        };
        if sent {
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                loop {
                    let done = match &mut eventloop {
                        Loop::V311(l) => match l.poll().await {
                            Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect))
                            | Err(_) => true,
                            Ok(_) => false,
                        },
                        Loop::V5(l) => match l.poll().await {
                            Ok(rumqttc::v5::Event::Outgoing(rumqttc::Outgoing::Disconnect))
                            | Err(_) => true,
                            Ok(_) => false,
                        },
                    };
                    if done {
                        break;
                    }
                }
            })
            .await;
        }
    }
    accepted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refusal::DECODER_SETTINGS;

    fn failure(version: MqttVersion, kind: FailureKind) -> Failure {
        Failure {
            broker: "127.0.0.1:1883".into(),
            client_id: "dec-1".into(),
            settings: DECODER_SETTINGS,
            version,
            kind,
            connected_for: None,
        }
    }

    #[test]
    fn failures_read_as_what_to_fix() {
        let f = failure(MqttVersion::V5, FailureKind::VersionUnsupported(None));
        assert_eq!(
            f.to_string(),
            "broker 127.0.0.1:1883 does not speak MQTT 5: it closed the connection on our MQTT 5 CONNECT without answering, and accepts MQTT 3.1.1; set --mqtt-version to auto or 3.1.1"
        );
        assert!(f.needs_a_fix());
        let f = failure(
            MqttVersion::V5,
            FailureKind::Tls {
                reason: "invalid peer certificate: UnknownIssuer".into(),
                hint: TlsHint::UnknownIssuer,
            },
        );
        assert_eq!(
            f.to_string(),
            "TLS connection to 127.0.0.1:1883 failed: invalid peer certificate: UnknownIssuer (is --ca the CA that signed the broker's certificate?)"
        );
        let f = failure(
            MqttVersion::V5,
            FailureKind::ClosedOnConnect("connection closed by peer abruptly".into()),
        );
        assert!(!f.needs_a_fix(), "retried");
        assert_eq!(f.attempt(), Attempt::ClosedOnConnect);
        let mut lost = failure(MqttVersion::V311, FailureKind::Lost("reset".into()));
        lost.connected_for = Some(Duration::from_millis(300));
        assert!(
            lost.to_string()
                .contains("another client may be using the client id \"dec-1\"")
        );
        lost.connected_for = Some(Duration::from_secs(600));
        assert_eq!(
            lost.to_string(),
            "connection to broker 127.0.0.1:1883 lost: reset"
        );
    }

    #[test]
    fn connack_codes_of_both_versions() {
        assert_eq!(
            connack_v311(rumqttc::ConnectReturnCode::BadUserNamePassword),
            Code {
                version: MqttVersion::V311,
                value: 4
            }
        );
        assert_eq!(
            connack_v5(v5b::ConnectReturnCode::UnsupportedProtocolVersion).value,
            0x84
        );
        let f = failure(
            MqttVersion::V5,
            FailureKind::Refused(connack_v5(
                v5b::ConnectReturnCode::UnsupportedProtocolVersion,
            )),
        );
        assert_eq!(f.attempt(), Attempt::VersionRefused);
        assert!(f.needs_a_fix());
    }
}
