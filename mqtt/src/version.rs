//! Which MQTT protocol version to speak: `mqtt_version = "3.1.1" | "5" | "auto"` in the
//! agent's `[mqtt]` table, `--mqtt-version` on both command lines.
//!
//! `auto` (the default) offers MQTT 5 first and falls back to 3.1.1 when the broker
//! refuses 5 (a CONNACK saying so, or a broker that closes the connection on the MQTT 5
//! CONNECT without answering, as Debian's nats-server 2.9 and rabbitmq-server 3.10 do),
//! and says so once. [`Negotiation`] is that decision, kept apart from the client so it
//! can be tested without a broker.
//!
//! What needs MQTT 5 is used only over MQTT 5: shared subscriptions (the decoder's
//! `--share-group`), content types on JSON payloads, session expiry, Receive Maximum and
//! Maximum Packet Size. Over 3.1.1 a persistent session never expires.

use std::fmt;
use std::str::FromStr;

/// A protocol version on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MqttVersion {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5 (protocol level 5).
    V5,
}

impl MqttVersion {
    /// The other one: what `auto` falls back to.
    pub fn other(self) -> Self {
        match self {
            MqttVersion::V311 => MqttVersion::V5,
            MqttVersion::V5 => MqttVersion::V311,
        }
    }

    /// How the version is written in configuration: `3.1.1` or `5`.
    pub fn as_str(self) -> &'static str {
        match self {
            MqttVersion::V311 => "3.1.1",
            MqttVersion::V5 => "5",
        }
    }
}

impl fmt::Display for MqttVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MQTT {}", self.as_str())
    }
}

/// What the configuration asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VersionChoice {
    /// Only this version; a broker that refuses it is an error naming the version.
    Fixed(MqttVersion),
    /// MQTT 5, falling back to 3.1.1 when the broker refuses 5.
    #[default]
    Auto,
}

impl VersionChoice {
    /// The version tried first.
    pub fn preferred(self) -> MqttVersion {
        match self {
            VersionChoice::Fixed(v) => v,
            VersionChoice::Auto => MqttVersion::V5,
        }
    }
}

impl fmt::Display for VersionChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionChoice::Fixed(v) => f.write_str(v.as_str()),
            VersionChoice::Auto => f.write_str("auto"),
        }
    }
}

/// A version that is none of `3.1.1`, `5` and `auto`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an MQTT version: expected \"3.1.1\", \"5\" or \"auto\"")]
pub struct UnknownVersion(pub String);

impl FromStr for VersionChoice {
    type Err = UnknownVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "3.1.1" | "311" | "4" => Ok(VersionChoice::Fixed(MqttVersion::V311)),
            "5" | "5.0" => Ok(VersionChoice::Fixed(MqttVersion::V5)),
            "auto" => Ok(VersionChoice::Auto),
            other => Err(UnknownVersion(other.to_owned())),
        }
    }
}

impl TryFrom<String> for VersionChoice {
    type Error = UnknownVersion;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl<'de> serde::Deserialize<'de> for VersionChoice {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// How a connection attempt with one version ended, as far as choosing a version goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The broker accepted the CONNECT.
    Connected,
    /// The broker said it does not speak this version (CONNACK reason code).
    VersionRefused,
    /// The broker closed the connection on the CONNECT without a CONNACK we could read:
    /// what brokers that do not know the version do, but also what a broker going down
    /// does.
    ClosedOnConnect,
    /// Anything else (unreachable, TLS, credentials, ...): says nothing about versions.
    Other,
}

/// What to do after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Connected, or failed for a reason versions cannot fix: carry on (retry later with
    /// the same version).
    Continue,
    /// Try the other version now, without waiting (`auto` falling back).
    Switch(MqttVersion),
    /// A fixed version failed in a way that may be the version: try the other one once,
    /// only to tell the operator (the result goes to [`Negotiation::probed`]).
    Probe(MqttVersion),
    /// The broker does not speak the configured version: report it (the decoder exits,
    /// the agent keeps retrying).
    Unsupported(MqttVersion),
}

/// The version decision of one client, across reconnects.
#[derive(Clone, Debug)]
pub struct Negotiation {
    choice: VersionChoice,
    current: MqttVersion,
    /// In `auto`: the version the previous attempt failed with, for a hint, since the
    /// last successful connection (both failing means it is not the version).
    hinted: Option<MqttVersion>,
    /// The version the broker accepted last: a broker that spoke it once and now closes
    /// the connection is restarting, not forgetting the version (only a CONNACK saying
    /// so switches then).
    spoken: Option<MqttVersion>,
    /// A fixed version's probe of the other version succeeded: the broker does not
    /// speak the configured one.
    diagnosed: bool,
    probed: bool,
}

impl Negotiation {
    pub fn new(choice: VersionChoice) -> Self {
        Self {
            choice,
            current: choice.preferred(),
            hinted: None,
            spoken: None,
            diagnosed: false,
            probed: false,
        }
    }

    pub fn choice(&self) -> VersionChoice {
        self.choice
    }

    /// The version of the next attempt.
    pub fn current(&self) -> MqttVersion {
        self.current
    }

    /// Whether the broker was found not to speak the configured version (a fixed one).
    pub fn diagnosed(&self) -> bool {
        self.diagnosed
    }

    /// Records the attempt made with [`Self::current`] and says what comes next.
    pub fn record(&mut self, attempt: Attempt) -> Next {
        let version = self.current;
        match attempt {
            Attempt::Connected => {
                self.hinted = None;
                self.spoken = Some(version);
                self.diagnosed = false;
                self.probed = false;
                Next::Continue
            }
            Attempt::Other => Next::Continue,
            Attempt::ClosedOnConnect if self.spoken == Some(version) => Next::Continue,
            Attempt::VersionRefused | Attempt::ClosedOnConnect => match self.choice {
                VersionChoice::Auto => {
                    if self.hinted == Some(version.other()) {
                        // Both versions failed alike: not a version problem. Start again
                        // from the preferred version at the next (delayed) attempt.
                        self.hinted = None;
                        self.current = self.choice.preferred();
                        Next::Continue
                    } else {
                        self.hinted = Some(version);
                        self.current = version.other();
                        Next::Switch(self.current)
                    }
                }
                VersionChoice::Fixed(_) if attempt == Attempt::VersionRefused => {
                    self.diagnosed = true;
                    Next::Unsupported(version)
                }
                VersionChoice::Fixed(_) if self.diagnosed => Next::Unsupported(version),
                VersionChoice::Fixed(_) if self.probed => Next::Continue,
                VersionChoice::Fixed(_) => {
                    self.probed = true;
                    Next::Probe(version.other())
                }
            },
        }
    }

    /// The outcome of a [`Next::Probe`]: whether the other version connected.
    pub fn probed(&mut self, other_connected: bool) -> Next {
        if other_connected {
            self.diagnosed = true;
            Next::Unsupported(self.current)
        } else {
            Next::Continue
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MqttVersion::{V5, V311};

    #[test]
    fn versions_parse_and_print_as_configured() {
        for (text, choice) in [
            ("3.1.1", VersionChoice::Fixed(V311)),
            ("5", VersionChoice::Fixed(V5)),
            ("auto", VersionChoice::Auto),
        ] {
            assert_eq!(text.parse::<VersionChoice>(), Ok(choice));
            assert_eq!(choice.to_string(), text);
        }
        assert_eq!(
            "3.1".parse::<VersionChoice>().map_err(|e| e.to_string()),
            Err("\"3.1\" is not an MQTT version: expected \"3.1.1\", \"5\" or \"auto\"".into())
        );
        assert_eq!(VersionChoice::default(), VersionChoice::Auto);
        assert_eq!(V5.to_string(), "MQTT 5");
        assert_eq!(V311.to_string(), "MQTT 3.1.1");
    }

    #[test]
    fn auto_falls_back_to_311_when_5_is_refused_and_stays_there() {
        let mut n = Negotiation::new(VersionChoice::Auto);
        assert_eq!(n.current(), V5);
        assert_eq!(n.record(Attempt::ClosedOnConnect), Next::Switch(V311));
        assert_eq!(n.current(), V311);
        assert_eq!(n.record(Attempt::Connected), Next::Continue);
        // A broker restart: unreachable for a while, then back; still 3.1.1.
        assert_eq!(n.record(Attempt::Other), Next::Continue);
        assert_eq!(n.current(), V311);
        assert_eq!(n.record(Attempt::Connected), Next::Continue);
    }

    #[test]
    fn a_broker_that_spoke_the_version_and_now_closes_is_restarting() {
        let mut n = Negotiation::new(VersionChoice::Auto);
        assert_eq!(n.record(Attempt::Connected), Next::Continue);
        assert_eq!(n.record(Attempt::ClosedOnConnect), Next::Continue);
        assert_eq!(n.current(), V5, "no fall back during a restart");
        assert_eq!(n.record(Attempt::VersionRefused), Next::Switch(V311));
        let mut fixed = Negotiation::new(VersionChoice::Fixed(V5));
        assert_eq!(fixed.record(Attempt::Connected), Next::Continue);
        assert_eq!(
            fixed.record(Attempt::ClosedOnConnect),
            Next::Continue,
            "no probe"
        );
    }

    #[test]
    fn auto_does_not_blame_the_version_when_both_fail_alike() {
        let mut n = Negotiation::new(VersionChoice::Auto);
        assert_eq!(n.record(Attempt::ClosedOnConnect), Next::Switch(V311));
        assert_eq!(n.record(Attempt::ClosedOnConnect), Next::Continue);
        assert_eq!(n.current(), V5, "back to the preferred version");
        assert_eq!(n.record(Attempt::Connected), Next::Continue);
        assert_eq!(n.current(), V5, "MQTT 5 worked");
    }

    #[test]
    fn auto_on_311_moves_to_5_when_a_broker_refuses_311() {
        let mut n = Negotiation::new(VersionChoice::Auto);
        assert_eq!(n.record(Attempt::VersionRefused), Next::Switch(V311));
        assert_eq!(n.record(Attempt::Connected), Next::Continue);
        // The broker is replaced by one that speaks only 5.
        assert_eq!(n.record(Attempt::VersionRefused), Next::Switch(V5));
        assert_eq!(n.record(Attempt::Connected), Next::Continue);
        assert_eq!(n.current(), V5);
    }

    #[test]
    fn a_fixed_version_is_never_changed_but_its_refusal_is_diagnosed() {
        let mut n = Negotiation::new(VersionChoice::Fixed(V5));
        assert_eq!(n.record(Attempt::VersionRefused), Next::Unsupported(V5));
        assert!(n.diagnosed());
        assert_eq!(n.current(), V5);

        let mut n = Negotiation::new(VersionChoice::Fixed(V5));
        assert_eq!(n.record(Attempt::ClosedOnConnect), Next::Probe(V311));
        assert_eq!(n.probed(true), Next::Unsupported(V5));
        assert_eq!(n.record(Attempt::ClosedOnConnect), Next::Unsupported(V5));
        assert_eq!(n.current(), V5);

        // The probe failed too: an ordinary failure, retried, and not probed again.
        let mut n = Negotiation::new(VersionChoice::Fixed(V5));
        assert_eq!(n.record(Attempt::ClosedOnConnect), Next::Probe(V311));
        assert_eq!(n.probed(false), Next::Continue);
        assert_eq!(n.record(Attempt::ClosedOnConnect), Next::Continue);
        assert_eq!(n.record(Attempt::Connected), Next::Continue);
        assert_eq!(n.record(Attempt::VersionRefused), Next::Unsupported(V5));
    }
}
