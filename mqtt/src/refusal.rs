//! Every way a broker says no, as one sentence an operator can act on: which broker,
//! what it refused, the reason code it gave (MQTT 3.1.1 return codes and MQTT 5 reason
//! codes alike) and the fix, in the words of the binary's own settings ([`Settings`]).
//!
//! Pure: the codes come in as numbers, so the sentences are tested without a broker;
//! [`crate::client`] maps rumqttc's types to them.

use std::fmt;

use crate::version::MqttVersion;

/// How one binary names the settings a fix points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub broker: &'static str,
    pub username: &'static str,
    pub password_file: &'static str,
    pub ca: &'static str,
    pub client_cert: &'static str,
    pub client_id: &'static str,
    pub mqtt_version: &'static str,
}

/// The agent's `[mqtt]` keys.
pub const AGENT_SETTINGS: Settings = Settings {
    broker: "mqtt.broker",
    username: "mqtt.username",
    password_file: "mqtt.password_file",
    ca: "ca_file",
    client_cert: "mqtt.client_cert",
    client_id: "mqtt.client_id",
    mqtt_version: "mqtt.mqtt_version",
};

/// The decoder's options.
pub const DECODER_SETTINGS: Settings = Settings {
    broker: "--broker",
    username: "--username",
    password_file: "--password-file",
    ca: "--ca",
    client_cert: "--client-cert",
    client_id: "--client-id",
    mqtt_version: "--mqtt-version",
};

/// A reason code as the broker sent it, with the protocol it was sent in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Code {
    pub version: MqttVersion,
    pub value: u8,
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.version {
            MqttVersion::V311 => "return code",
            MqttVersion::V5 => "reason code",
        };
        write!(f, "{} {kind} {:#04x}", self.version, self.value)
    }
}

/// Why a CONNECT was refused (a CONNACK with a failure code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectRefusal {
    ProtocolVersion,
    ClientId,
    /// Unavailable, busy, over a quota or a rate: retrying can help.
    Unavailable,
    BadCredentials,
    NotAuthorized,
    Banned,
    /// The broker sends clients elsewhere.
    Moved,
    /// The last will (retained, QoS 1, on the status topic) is not acceptable.
    Will,
    Other,
}

impl ConnectRefusal {
    pub fn from_code(code: Code) -> Self {
        match (code.version, code.value) {
            (MqttVersion::V311, 1) | (MqttVersion::V5, 0x84) => Self::ProtocolVersion,
            (MqttVersion::V311, 2) | (MqttVersion::V5, 0x85) => Self::ClientId,
            (MqttVersion::V311, 3) | (MqttVersion::V5, 0x88 | 0x89 | 0x97 | 0x9f) => {
                Self::Unavailable
            }
            (MqttVersion::V311, 4) | (MqttVersion::V5, 0x86 | 0x8c) => Self::BadCredentials,
            (MqttVersion::V311, 5) | (MqttVersion::V5, 0x87) => Self::NotAuthorized,
            (MqttVersion::V5, 0x8a) => Self::Banned,
            (MqttVersion::V5, 0x9c | 0x9d) => Self::Moved,
            (MqttVersion::V5, 0x90 | 0x99 | 0x9a | 0x9b) => Self::Will,
            _ => Self::Other,
        }
    }

    /// Whether trying again later can succeed without changing anything here.
    pub fn retryable(self) -> bool {
        matches!(self, Self::Unavailable | Self::Other)
    }
}

/// What a code means, in the words of the specification.
pub fn code_name(code: Code) -> &'static str {
    match (code.version, code.value) {
        (MqttVersion::V311, 1) => "unacceptable protocol version",
        (MqttVersion::V311, 2) => "identifier rejected",
        (MqttVersion::V311, 3) => "server unavailable",
        (MqttVersion::V311, 4) => "bad user name or password",
        (MqttVersion::V311, 5) => "not authorized",
        (MqttVersion::V311, 0x80) => "failure",
        (MqttVersion::V5, 0x10) => "no matching subscribers",
        (MqttVersion::V5, 0x80) => "unspecified error",
        (MqttVersion::V5, 0x81) => "malformed packet",
        (MqttVersion::V5, 0x82) => "protocol error",
        (MqttVersion::V5, 0x83) => "implementation specific error",
        (MqttVersion::V5, 0x84) => "unsupported protocol version",
        (MqttVersion::V5, 0x85) => "client identifier not valid",
        (MqttVersion::V5, 0x86) => "bad user name or password",
        (MqttVersion::V5, 0x87) => "not authorized",
        (MqttVersion::V5, 0x88) => "server unavailable",
        (MqttVersion::V5, 0x89) => "server busy",
        (MqttVersion::V5, 0x8a) => "banned",
        (MqttVersion::V5, 0x8b) => "server shutting down",
        (MqttVersion::V5, 0x8c) => "bad authentication method",
        (MqttVersion::V5, 0x8d) => "keep alive timeout",
        (MqttVersion::V5, 0x8e) => "session taken over",
        (MqttVersion::V5, 0x8f) => "topic filter invalid",
        (MqttVersion::V5, 0x90) => "topic name invalid",
        (MqttVersion::V5, 0x91) => "packet identifier in use",
        (MqttVersion::V5, 0x93) => "receive maximum exceeded",
        (MqttVersion::V5, 0x95) => "packet too large",
        (MqttVersion::V5, 0x96) => "message rate too high",
        (MqttVersion::V5, 0x97) => "quota exceeded",
        (MqttVersion::V5, 0x98) => "administrative action",
        (MqttVersion::V5, 0x99) => "payload format invalid",
        (MqttVersion::V5, 0x9a) => "retain not supported",
        (MqttVersion::V5, 0x9b) => "QoS not supported",
        (MqttVersion::V5, 0x9c) => "use another server",
        (MqttVersion::V5, 0x9d) => "server moved",
        (MqttVersion::V5, 0x9e) => "shared subscriptions not supported",
        (MqttVersion::V5, 0x9f) => "connection rate exceeded",
        (MqttVersion::V5, 0xa1) => "subscription identifiers not supported",
        (MqttVersion::V5, 0xa2) => "wildcard subscriptions not supported",
        _ => "unknown code",
    }
}

/// `broker B refused the connection: <reason> (<code>); <fix>`.
pub fn connect_refused(broker: &str, client_id: &str, code: Code, s: &Settings) -> String {
    let fix = match ConnectRefusal::from_code(code) {
        ConnectRefusal::ProtocolVersion => format!(
            "the broker does not speak {}: set {} to auto or {}",
            code.version,
            s.mqtt_version,
            code.version.other().as_str()
        ),
        ConnectRefusal::ClientId => format!(
            "the broker does not accept the client id {client_id:?}: set {} to one it accepts",
            s.client_id
        ),
        ConnectRefusal::Unavailable => "the broker is overloaded or starting; retrying".into(),
        ConnectRefusal::BadCredentials => {
            format!("check {} and {}", s.username, s.password_file)
        }
        ConnectRefusal::NotAuthorized => format!(
            "check {} and {} (or {}), and that the broker lets this client connect",
            s.username, s.password_file, s.client_cert
        ),
        ConnectRefusal::Banned => "the broker's operator banned this client".into(),
        ConnectRefusal::Moved => format!(
            "the broker sends its clients to another server: point {} at it",
            s.broker
        ),
        ConnectRefusal::Will => {
            "the broker refuses the retained QoS 1 last will on the status topic".into()
        }
        ConnectRefusal::Other => "see the broker's log".into(),
    };
    format!(
        "broker {broker} refused the connection: {} ({code}); {fix}",
        code_name(code)
    )
}

/// `broker B refused the subscription to F: <reason> (<code>); <fix>`.
pub fn subscription_refused(broker: &str, filter: &str, code: Code, user: Option<&str>) -> String {
    let who = match user {
        Some(user) => format!("user {user:?}"),
        None => "this client".into(),
    };
    let fix = match (code.version, code.value) {
        (MqttVersion::V5, 0x9e) => {
            "the broker has no shared subscriptions: split the load with disjoint topic filters instead (see the README's broker table)".to_owned()
        }
        (MqttVersion::V5, 0xa2) => "give a topic filter without wildcards".into(),
        (MqttVersion::V5, 0x8f) => "the broker does not accept this filter".into(),
        (MqttVersion::V5, 0x97) => "the broker's subscription quota is used up".into(),
        _ => format!("the broker's ACL must let {who} read {filter}"),
    };
    format!(
        "broker {broker} refused the subscription to {filter}: {} ({code}); {fix}",
        code_name(code)
    )
}

/// `broker B refused a publish to T: <reason> (<code>); <fix>` (MQTT 5 PUBACK).
pub fn publish_refused(broker: &str, topic: &str, code: Code, user: Option<&str>) -> String {
    let who = match user {
        Some(user) => format!("user {user:?}"),
        None => "this client".into(),
    };
    let fix = match code.value {
        0x97 => "the broker's quota is used up; retrying later".to_owned(),
        0x99 => "the broker does not accept the payload format".into(),
        _ => format!("the broker's ACL must let {who} publish to {topic}"),
    };
    format!(
        "broker {broker} refused a publish to {topic}: {} ({code}); {fix}",
        code_name(code)
    )
}

/// `broker B closed the connection: <reason> (<code>); <fix>` (MQTT 5 DISCONNECT).
pub fn disconnected(broker: &str, client_id: &str, code: Code, s: &Settings) -> String {
    let fix = match code.value {
        0x8e => format!(
            "another client connected with the same client id {client_id:?}: give every client its own {}",
            s.client_id
        ),
        0x87 => format!(
            "check {} and {}, and the broker's ACL for this client",
            s.username, s.password_file
        ),
        0x9c | 0x9d => format!(
            "the broker sends its clients to another server: point {} at it",
            s.broker
        ),
        0x8b => "the broker is shutting down; reconnecting".into(),
        _ => "reconnecting".into(),
    };
    format!(
        "broker {broker} closed the connection: {} ({code}); {fix}",
        code_name(code)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use MqttVersion::{V5, V311};

    fn code(version: MqttVersion, value: u8) -> Code {
        Code { version, value }
    }

    #[test]
    fn both_protocols_codes_map_to_the_same_refusals() {
        for (v311, v5, refusal) in [
            (1, 0x84, ConnectRefusal::ProtocolVersion),
            (2, 0x85, ConnectRefusal::ClientId),
            (3, 0x88, ConnectRefusal::Unavailable),
            (4, 0x86, ConnectRefusal::BadCredentials),
            (5, 0x87, ConnectRefusal::NotAuthorized),
        ] {
            assert_eq!(ConnectRefusal::from_code(code(V311, v311)), refusal);
            assert_eq!(ConnectRefusal::from_code(code(V5, v5)), refusal);
        }
        assert_eq!(
            ConnectRefusal::from_code(code(V5, 0x8a)),
            ConnectRefusal::Banned
        );
        assert!(ConnectRefusal::Unavailable.retryable());
        assert!(!ConnectRefusal::BadCredentials.retryable());
        assert!(!ConnectRefusal::ProtocolVersion.retryable());
    }

    #[test]
    fn refusals_name_the_broker_the_code_and_the_fix() {
        assert_eq!(
            connect_refused("b:1883", "gw", code(V5, 0x86), &DECODER_SETTINGS),
            "broker b:1883 refused the connection: bad user name or password (MQTT 5 reason code 0x86); check --username and --password-file"
        );
        assert_eq!(
            connect_refused("b:1883", "gw", code(V311, 5), &AGENT_SETTINGS),
            "broker b:1883 refused the connection: not authorized (MQTT 3.1.1 return code 0x05); check mqtt.username and mqtt.password_file (or mqtt.client_cert), and that the broker lets this client connect"
        );
        assert_eq!(
            connect_refused("b:1883", "gw", code(V311, 1), &DECODER_SETTINGS),
            "broker b:1883 refused the connection: unacceptable protocol version (MQTT 3.1.1 return code 0x01); the broker does not speak MQTT 3.1.1: set --mqtt-version to auto or 5"
        );
        assert!(
            connect_refused("b:1", "gw-7", code(V5, 0x85), &AGENT_SETTINGS)
                .ends_with("the broker does not accept the client id \"gw-7\": set mqtt.client_id to one it accepts")
        );
        assert_eq!(
            subscription_refused("b:1", "edgearmor/+/+/events", code(V311, 0x80), Some("dec")),
            "broker b:1 refused the subscription to edgearmor/+/+/events: failure (MQTT 3.1.1 return code 0x80); the broker's ACL must let user \"dec\" read edgearmor/+/+/events"
        );
        assert!(
            subscription_refused("b:1", "$share/g/x", code(V5, 0x9e), None)
                .contains("shared subscriptions not supported (MQTT 5 reason code 0x9e)")
        );
        assert_eq!(
            publish_refused("b:1", "edgearmor/c/n/events", code(V5, 0x87), None),
            "broker b:1 refused a publish to edgearmor/c/n/events: not authorized (MQTT 5 reason code 0x87); the broker's ACL must let this client publish to edgearmor/c/n/events"
        );
        assert_eq!(
            disconnected("b:1", "edgearmor-c-n", code(V5, 0x8e), &AGENT_SETTINGS),
            "broker b:1 closed the connection: session taken over (MQTT 5 reason code 0x8e); another client connected with the same client id \"edgearmor-c-n\": give every client its own mqtt.client_id"
        );
    }
}
