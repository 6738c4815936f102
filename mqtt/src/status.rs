//! The agent's retained status on `<prefix>/<cluster>/<node>/status`: JSON, so fleet
//! tooling reads it without the wire format. The agent publishes a birth message after
//! every connect and leaves a last will with the broker for when its connection is lost:
//!
//! ```json
//! {"state":"online","agent_version":"0.1.0","boot_id":"<32 hex>","kernel":"6.12.117+deb12-arm64",
//!  "enforcement":"available","enforcement_detail":"","policy_set":"<16 hex>","time":1795932048,
//!  "labels":{"role":"edge","site":"plant-7"},"counters":{"alerts_sent":12,"alerts_lost_ring":0}}
//! {"state":"offline","boot_id":"<32 hex>","agent_version":"0.1.0"}
//! ```
//!
//! While connected the agent republishes its `online` message (retained) every
//! `status_interval_sec` with a fresh `time` and fresh `counters`: fleet tooling reads every
//! gateway's health from the broker without scraping the gateways. The counter names are
//! [`COUNTERS`], one table with the help text the decoder prints as Prometheus `# HELP`.
//!
//! [`StatusMessage`] is both sides of it: the agent serializes it ([`StatusMessage::to_json`],
//! keys in the order above, strings escaped as Go's `encoding/json` does, like the
//! alerts), the decoder reads it ([`StatusMessage::from_json`]). Reading ignores unknown
//! fields (the agent may add some); `labels` (the node labels of `agent.toml`, which
//! policies and bundles select by) is sent only when the gateway has some, `counters` only
//! when the agent says some; counter names not in [`COUNTERS`] are ignored (a newer agent),
//! so are their values; missing required fields, unknown states and malformed values are
//! [`StatusError`]s.

use std::collections::BTreeMap;

use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};

/// Status payloads are small; anything larger is not one.
pub const MAX_STATUS_LEN: usize = 4096;
/// Bound of every free-text field (versions, kernel release, enforcement detail).
pub const MAX_FIELD_LEN: usize = 512;
/// Bound of the node labels, keys and values summed: with the three free-text
/// fields at their bound the birth message stays under [`MAX_STATUS_LEN`].
pub const MAX_LABELS_LEN: usize = 1024;

/// Every counter a status may carry: name, help text (what the decoder prints as the
/// Prometheus `# HELP` line). Values are `u64`; "since the agent started" counters restart
/// from 0 with every agent boot (`boot_id` tells boots apart), the others are gauges taken
/// when the status was.
pub const COUNTERS: &[(&str, &str)] = &[
    (
        "alerts_sent",
        "Alerts the agent handed to its outputs (after the rate limit), since it started.",
    ),
    (
        "alerts_lost_ring",
        "Events the kernel dropped because the ring buffer was full, since the agent started.",
    ),
    (
        "alerts_lost_queue",
        "Events dropped because the agent's internal queue was full, since it started.",
    ),
    (
        "alerts_lost_throttle",
        "Alerts dropped by the rate limit (max_alerts_per_sec), since the agent started.",
    ),
    (
        "alerts_lost_buffer",
        "Events whose batches the full offline buffer dropped while the broker was unreachable, since the agent started.",
    ),
    (
        "alerts_unpersisted_spool",
        "Events whose batches the spool could not write to disk (kept in memory only), since the agent started.",
    ),
    (
        "ringbuf_used_bytes",
        "Bytes waiting in the kernel ring buffer for the agent when the status was taken.",
    ),
    (
        "ringbuf_size_bytes",
        "Size of the kernel ring buffer in bytes.",
    ),
    (
        "offline_buffered_batches",
        "Batches waiting in the offline buffer for the broker when the status was taken.",
    ),
    (
        "policy_generation",
        "Generation of the policy set in force (grows with every applied reload).",
    ),
    (
        "policy_reloads_failed",
        "Policy reloads refused (the previous set stayed in force), since the agent started.",
    ),
    (
        "broker_reconnects",
        "Connections to the broker after the first one, since the agent started.",
    ),
    ("uptime_seconds", "Seconds since the agent started."),
];

/// Bound of the `counters` object as sent: every name of [`COUNTERS`] with a 20-digit value
/// (`"name":18446744073709551615,`), plus `,"counters":{}`. With labels and the free-text
/// fields at their bounds the birth message stays under [`MAX_STATUS_LEN`].
pub const MAX_COUNTERS_LEN: usize = counters_len_bound();

const fn counters_len_bound() -> usize {
    let mut len = ",\"counters\":{}".len();
    let mut i = 0;
    while i < COUNTERS.len() {
        len += COUNTERS[i].0.len() + "\"\":,".len() + 20;
        i += 1;
    }
    len
}

/// The help text of a counter, `None` for a name not in [`COUNTERS`].
pub fn counter_help(name: &str) -> Option<&'static str> {
    COUNTERS.iter().find(|(n, _)| *n == name).map(|(_, h)| *h)
}

/// Counter values by name, names only from [`COUNTERS`], iterated in the table's order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters(BTreeMap<usize, u64>);

impl Counters {
    /// Sets `name` to `value`; `false` (and nothing set) for a name not in [`COUNTERS`].
    pub fn set(&mut self, name: &str, value: u64) -> bool {
        match COUNTERS.iter().position(|(n, _)| *n == name) {
            Some(index) => {
                self.0.insert(index, value);
                true
            }
            None => false,
        }
    }

    pub fn get(&self, name: &str) -> Option<u64> {
        let index = COUNTERS.iter().position(|(n, _)| *n == name)?;
        self.0.get(&index).copied()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `(name, value)` in the order of [`COUNTERS`].
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.0
            .iter()
            .map(|(&index, &value)| (COUNTERS[index].0, value))
    }
}

impl Serialize for Counters {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in self.iter() {
            map.serialize_entry(name, &value)?;
        }
        map.end()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    #[error("status of {len} bytes, over the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    /// Not JSON, or not the status object (serde_json's message says where).
    #[error("status is not the expected JSON object: {0}")]
    Json(String),
    #[error("unknown state {0:?} (expected \"online\" or \"offline\")")]
    UnknownState(String),
    /// `boot_id` is not 32 lowercase hex digits.
    #[error("boot_id {0:?} is not 32 lowercase hex digits")]
    BadBootId(String),
    /// `policy_set` is not 16 lowercase hex digits.
    #[error("policy_set {0:?} is not 16 lowercase hex digits")]
    BadPolicySet(String),
    #[error("unknown enforcement {0:?} (expected \"available\" or \"unavailable\")")]
    UnknownEnforcement(String),
    /// A field over its bound, or with characters it may not hold.
    #[error("field {field}: {reason}")]
    BadField {
        field: &'static str,
        reason: &'static str,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentState {
    /// The birth message.
    Online,
    /// The last will: the broker lost the agent's connection.
    Offline,
}

impl AgentState {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Online => "online",
            AgentState::Offline => "offline",
        }
    }
}

/// Whether the agent's kernel can enforce (BPF-LSM) or the agent runs monitor-only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enforcement {
    Available,
    Unavailable,
}

impl Enforcement {
    pub fn as_str(self) -> &'static str {
        match self {
            Enforcement::Available => "available",
            Enforcement::Unavailable => "unavailable",
        }
    }
}

/// One status message.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawStatus")]
pub struct StatusMessage {
    pub state: AgentState,
    pub agent_version: String,
    /// The agent's boot id (`boot_id` in the wire format's batches), as 32 hex digits.
    pub boot_id: [u8; 16],
    /// Kernel release; empty when not said.
    pub kernel: String,
    /// `None` when not said (the last will).
    pub enforcement: Option<Enforcement>,
    /// Why enforcement is unavailable; empty otherwise.
    pub enforcement_detail: String,
    /// The policy set in force, as 16 hex digits.
    pub policy_set: Option<u64>,
    /// Unix seconds, from the agent's clock.
    pub time: Option<u64>,
    /// The node's labels (key -> value); empty when it has none or did not say.
    pub labels: BTreeMap<String, String>,
    /// The agent's counters; empty when it did not say (older agents, the last will).
    pub counters: Counters,
}

impl StatusMessage {
    /// The last will of an agent boot.
    pub fn last_will(agent_version: &str, boot_id: [u8; 16]) -> Self {
        Self {
            state: AgentState::Offline,
            agent_version: agent_version.to_owned(),
            boot_id,
            kernel: String::new(),
            enforcement: None,
            enforcement_detail: String::new(),
            policy_set: None,
            time: None,
            labels: BTreeMap::new(),
            counters: Counters::default(),
        }
    }

    /// `boot_id` as it is sent: 32 lowercase hex digits.
    pub fn boot_id_hex(&self) -> String {
        self.boot_id.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// `policy_set` as it is sent: 16 lowercase hex digits.
    pub fn policy_set_hex(&self) -> Option<String> {
        self.policy_set.map(|p| format!("{p:016x}"))
    }

    /// The payload the agent publishes.
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(256);
        let mut serializer = serde_json::Serializer::with_formatter(&mut out, GoEscapes);
        // Writing strings and integers into memory cannot fail, and the formatter only
        // writes whole UTF-8 slices of its input or ASCII escapes.
        self.serialize(&mut serializer)
            .expect("a status serializes into memory");
        String::from_utf8(out).expect("serde_json writes UTF-8")
    }

    /// Reads a payload, checking every field (hostile input: bounded, no whitespace or
    /// `=` in the fields the decoder prints as `key=value` words).
    pub fn from_json(payload: &[u8]) -> Result<Self, StatusError> {
        if payload.len() > MAX_STATUS_LEN {
            return Err(StatusError::TooLarge {
                len: payload.len(),
                max: MAX_STATUS_LEN,
            });
        }
        let raw: RawStatus =
            serde_json::from_slice(payload).map_err(|e| StatusError::Json(e.to_string()))?;
        Self::try_from(raw)
    }
}

/// Keys in the order agents have always sent them: the birth message in full, the last
/// will short (`state`, `boot_id`, `agent_version`, then only what was said).
impl Serialize for StatusMessage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let boot_id = self.boot_id_hex();
        let policy_set = self.policy_set_hex();
        let mut s = serializer.serialize_struct("StatusMessage", 10)?;
        s.serialize_field("state", self.state.as_str())?;
        match self.state {
            AgentState::Online => {
                s.serialize_field("agent_version", &self.agent_version)?;
                s.serialize_field("boot_id", &boot_id)?;
                s.serialize_field("kernel", &self.kernel)?;
                if let Some(e) = self.enforcement {
                    s.serialize_field("enforcement", e.as_str())?;
                }
                s.serialize_field("enforcement_detail", &self.enforcement_detail)?;
            }
            AgentState::Offline => {
                s.serialize_field("boot_id", &boot_id)?;
                s.serialize_field("agent_version", &self.agent_version)?;
                if !self.kernel.is_empty() {
                    s.serialize_field("kernel", &self.kernel)?;
                }
                if let Some(e) = self.enforcement {
                    s.serialize_field("enforcement", e.as_str())?;
                }
                if !self.enforcement_detail.is_empty() {
                    s.serialize_field("enforcement_detail", &self.enforcement_detail)?;
                }
            }
        }
        if let Some(p) = &policy_set {
            s.serialize_field("policy_set", p)?;
        }
        if let Some(t) = self.time {
            s.serialize_field("time", &t)?;
        }
        // Last and only when there are some: a birth without labels is byte for byte
        // what agents sent before labels existed.
        if !self.labels.is_empty() {
            s.serialize_field("labels", &self.labels)?;
        }
        if !self.counters.is_empty() {
            s.serialize_field("counters", &self.counters)?;
        }
        s.end()
    }
}

/// The payload as JSON types, before the checks.
#[derive(Deserialize)]
struct RawStatus {
    state: String,
    agent_version: String,
    boot_id: String,
    #[serde(default)]
    kernel: String,
    #[serde(default)]
    enforcement: Option<String>,
    #[serde(default)]
    enforcement_detail: String,
    #[serde(default)]
    policy_set: String,
    #[serde(default)]
    time: Option<u64>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// Any JSON values: only the names of [`COUNTERS`] are read (and must be `u64`).
    #[serde(default)]
    counters: BTreeMap<String, serde_json::Value>,
}

impl TryFrom<RawStatus> for StatusMessage {
    type Error = StatusError;

    fn try_from(raw: RawStatus) -> Result<Self, StatusError> {
        let state = match raw.state.as_str() {
            "online" => AgentState::Online,
            "offline" => AgentState::Offline,
            _ => return Err(StatusError::UnknownState(truncated(&raw.state))),
        };
        let Some(boot_id) = parse_hex::<16>(&raw.boot_id) else {
            return Err(StatusError::BadBootId(truncated(&raw.boot_id)));
        };
        let policy_set = if raw.policy_set.is_empty() {
            None
        } else {
            match parse_hex::<8>(&raw.policy_set) {
                Some(bytes) => Some(u64::from_be_bytes(bytes)),
                None => return Err(StatusError::BadPolicySet(truncated(&raw.policy_set))),
            }
        };
        let enforcement = match raw.enforcement.as_deref() {
            None => None,
            Some("available") => Some(Enforcement::Available),
            Some("unavailable") => Some(Enforcement::Unavailable),
            Some(other) => return Err(StatusError::UnknownEnforcement(truncated(other))),
        };
        // The decoder prints these as `key=value` words: no whitespace, no '='.
        for (field, value) in [
            ("agent_version", &raw.agent_version),
            ("kernel", &raw.kernel),
        ] {
            if value.len() > MAX_FIELD_LEN {
                return Err(StatusError::BadField {
                    field,
                    reason: "longer than 512 bytes",
                });
            }
            if value
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '=')
            {
                return Err(StatusError::BadField {
                    field,
                    reason: "holds whitespace, control characters or '='",
                });
            }
        }
        if raw.enforcement_detail.len() > MAX_FIELD_LEN {
            return Err(StatusError::BadField {
                field: "enforcement_detail",
                reason: "longer than 512 bytes",
            });
        }
        check_labels(&raw.labels)?;
        let counters = read_counters(&raw.counters)?;
        Ok(Self {
            state,
            agent_version: raw.agent_version,
            boot_id,
            kernel: raw.kernel,
            enforcement,
            enforcement_detail: raw.enforcement_detail,
            policy_set,
            time: raw.time,
            labels: raw.labels,
            counters,
        })
    }
}

/// The known counters of a payload; a known name whose value is not a `u64` is an error
/// (the agent's contract is broken), unknown names are a newer agent's and ignored.
fn read_counters(raw: &BTreeMap<String, serde_json::Value>) -> Result<Counters, StatusError> {
    let mut counters = Counters::default();
    for (name, value) in raw {
        if counter_help(name).is_none() {
            continue;
        }
        let Some(value) = value.as_u64() else {
            return Err(StatusError::BadField {
                field: "counters",
                reason: "a counter of COUNTERS whose value is not an unsigned 64-bit integer",
            });
        };
        counters.set(name, value);
    }
    Ok(counters)
}

/// Labels within [`MAX_LABELS_LEN`], without whitespace, control characters, `=` or
/// `,` (tooling prints them as `key=value,...`; Kubernetes labels have none of them).
pub fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), StatusError> {
    let total: usize = labels.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > MAX_LABELS_LEN {
        return Err(StatusError::BadField {
            field: "labels",
            reason: "keys and values longer than 1024 bytes (MAX_LABELS_LEN) together",
        });
    }
    let bad = |t: &String| {
        t.chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '=' || c == ',')
    };
    if labels.iter().any(|(k, v)| k.is_empty() || bad(k) || bad(v)) {
        return Err(StatusError::BadField {
            field: "labels",
            reason: "an empty key, or whitespace, control characters, '=' or ','",
        });
    }
    Ok(())
}

/// Exactly `2 * N` lowercase hex digits.
fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let digits = s.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let nibble = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

/// A bad value for an error message: bounded, so a hostile payload cannot flood the log.
fn truncated(s: &str) -> String {
    s.chars().take(64).collect()
}

/// serde_json's escaping plus Go's: `<`, `>`, `&`, U+2028 and U+2029 as `\u` escapes,
/// as in the alerts (`edgearmor_alert::write_go_string`). serde_json already writes
/// control characters, `"` and `\` the way Go does.
struct GoEscapes;

impl serde_json::ser::Formatter for GoEscapes {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let escape = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..i])?;
            writer.write_all(escape.as_bytes())?;
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn birth() -> StatusMessage {
        StatusMessage {
            state: AgentState::Online,
            agent_version: "0.1.0".into(),
            boot_id: [0xab; 16],
            kernel: "6.12.117+deb12-arm64".into(),
            enforcement: Some(Enforcement::Unavailable),
            enforcement_detail: "no \"trampoline\"".into(),
            policy_set: Some(0x1234),
            time: Some(1795932048),
            labels: BTreeMap::new(),
            counters: Counters::default(),
        }
    }

    #[test]
    fn counters_go_after_labels_in_table_order() {
        let mut s = birth();
        s.labels = BTreeMap::from([("site".to_owned(), "plant-7".to_owned())]);
        // Set out of the table's order: they are sent in the table's.
        assert!(s.counters.set("broker_reconnects", 3));
        assert!(s.counters.set("alerts_sent", 12));
        assert!(s.counters.set("alerts_lost_ring", 0));
        assert!(
            !s.counters.set("not_a_counter", 1),
            "names come from COUNTERS"
        );
        let json = s.to_json();
        assert!(
            json.ends_with(concat!(
                r#""labels":{"site":"plant-7"},"#,
                r#""counters":{"alerts_sent":12,"alerts_lost_ring":0,"broker_reconnects":3}}"#
            )),
            "{json}"
        );
        let read = StatusMessage::from_json(json.as_bytes()).expect("reads back");
        assert_eq!(read, s);
        assert_eq!(read.counters.get("broker_reconnects"), Some(3));
        assert_eq!(read.counters.get("uptime_seconds"), None);
        // Without counters the message is what agents sent before counters existed.
        assert!(!birth().to_json().contains("counters"));
    }

    #[test]
    fn readers_ignore_unknown_counters_and_refuse_bad_known_ones() {
        let base = r#"{"state":"online","agent_version":"1","boot_id":"0123456789abcdef0123456789abcdef","#;
        let newer = format!(
            r#"{base}"counters":{{"from_the_future":"text","alerts_sent":7,"also_new":-1,"uptime_seconds":18446744073709551615}}}}"#
        );
        let s = StatusMessage::from_json(newer.as_bytes()).expect("unknown counters are ignored");
        assert_eq!(
            s.counters.iter().collect::<Vec<_>>(),
            [("alerts_sent", 7), ("uptime_seconds", u64::MAX)]
        );
        for bad in ["-1", "1.5", "\"7\"", "null", "18446744073709551616"] {
            let payload = format!(r#"{base}"counters":{{"alerts_sent":{bad}}}}}"#);
            assert_eq!(
                StatusMessage::from_json(payload.as_bytes()),
                Err(StatusError::BadField {
                    field: "counters",
                    reason: "a counter of COUNTERS whose value is not an unsigned 64-bit integer",
                }),
                "{payload}"
            );
        }
        let not_an_object = format!(r#"{base}"counters":[1]}}"#);
        assert!(matches!(
            StatusMessage::from_json(not_an_object.as_bytes()),
            Err(StatusError::Json(_))
        ));
    }

    #[test]
    fn the_largest_birth_fits_the_status_limit() {
        let names: std::collections::BTreeSet<_> = COUNTERS.iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), COUNTERS.len(), "counter names are unique");
        for (name, help) in COUNTERS {
            // Prometheus metric names, and a one-line help text.
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{name}"
            );
            assert!(!help.is_empty() && !help.contains('\n'), "{name}");
        }
        let mut s = birth();
        s.agent_version = "v".repeat(MAX_FIELD_LEN);
        s.kernel = "k".repeat(MAX_FIELD_LEN);
        s.enforcement_detail = "d".repeat(MAX_FIELD_LEN);
        s.labels = (0..16)
            .map(|i| (format!("k{i:02}"), "v".repeat(MAX_LABELS_LEN / 16 - 3)))
            .collect();
        let without_counters = s.to_json().len();
        for (name, _) in COUNTERS {
            s.counters.set(name, u64::MAX);
        }
        let json = s.to_json();
        assert!(json.len() - without_counters <= MAX_COUNTERS_LEN, "{json}");
        assert!(json.len() <= MAX_STATUS_LEN, "{} bytes", json.len());
        assert_eq!(StatusMessage::from_json(json.as_bytes()), Ok(s));
    }

    #[test]
    fn labels_go_last_and_are_checked_when_read() {
        let mut s = birth();
        s.labels = BTreeMap::from([
            ("site".to_owned(), "plant-7".to_owned()),
            ("node.example/role".to_owned(), "edge".to_owned()),
        ]);
        let json = s.to_json();
        assert!(
            json.ends_with(
                r#""time":1795932048,"labels":{"node.example/role":"edge","site":"plant-7"}}"#
            ),
            "{json}"
        );
        assert_eq!(StatusMessage::from_json(json.as_bytes()), Ok(s.clone()));
        for bad in ["a b", "a=b", "a,b", ""] {
            let mut hostile = s.clone();
            hostile.labels.insert(bad.to_owned(), "x".to_owned());
            let err = StatusMessage::from_json(hostile.to_json().as_bytes());
            assert!(
                matches!(
                    err,
                    Err(StatusError::BadField {
                        field: "labels",
                        ..
                    })
                ),
                "{bad:?}: {err:?}"
            );
        }
        let mut big = s;
        big.labels = (0..20)
            .map(|i| (format!("k{i:02}{}", "x".repeat(40)), "v".repeat(12)))
            .collect();
        let err = StatusMessage::from_json(big.to_json().as_bytes());
        assert!(
            matches!(&err, Err(StatusError::BadField { reason, .. }) if reason.contains("MAX_LABELS_LEN")),
            "{err:?}"
        );
    }

    #[test]
    fn birth_and_will_are_the_documented_json() {
        assert_eq!(
            birth().to_json(),
            concat!(
                r#"{"state":"online","agent_version":"0.1.0","boot_id":"abababababababababababababababab","#,
                r#""kernel":"6.12.117+deb12-arm64","enforcement":"unavailable","enforcement_detail":"no \"trampoline\"","#,
                r#""policy_set":"0000000000001234","time":1795932048}"#
            )
        );
        assert_eq!(
            StatusMessage::last_will("0.1.0", [0xab; 16]).to_json(),
            r#"{"state":"offline","boot_id":"abababababababababababababababab","agent_version":"0.1.0"}"#
        );
    }

    /// The JSON agents published before this type: hand-written with the alerts' Go
    /// string writer.
    fn go_birth(s: &StatusMessage) -> String {
        use edgearmor_alert::write_go_string;
        let mut out = String::from("{");
        for (key, value) in [
            ("state", "online".to_owned()),
            ("agent_version", s.agent_version.clone()),
            ("boot_id", s.boot_id_hex()),
            ("kernel", s.kernel.clone()),
            ("enforcement", "unavailable".to_owned()),
            ("enforcement_detail", s.enforcement_detail.clone()),
            ("policy_set", s.policy_set_hex().unwrap_or_default()),
        ] {
            if out.len() > 1 {
                out.push(',');
            }
            write_go_string(&mut out, key);
            out.push(':');
            write_go_string(&mut out, &value);
        }
        out.push_str(&format!(",\"time\":{}}}", s.time.unwrap_or_default()));
        out
    }

    #[test]
    fn strings_are_escaped_as_go_does() {
        for text in [
            "a<b>&c",
            "line\u{2028}para\u{2029}end",
            "\n\t\r\u{8}\u{c}\u{0}\u{1}\u{1f}\u{7f}",
            "quote \" backslash \\ slash /",
            "é ß 日本 \u{1f600}",
            "",
        ] {
            let mut s = birth();
            s.enforcement_detail = text.into();
            s.kernel = "6.12<x>&y".into();
            s.agent_version = "v<1>&2".into();
            let json = s.to_json();
            assert_eq!(json, go_birth(&s), "{text:?}");
            assert_eq!(StatusMessage::from_json(json.as_bytes()), Ok(s), "{text:?}");
        }
    }

    #[test]
    fn statuses_round_trip() {
        let will = StatusMessage::last_will("0.2.0-rc1", *b"0123456789abcdef");
        let available = StatusMessage {
            enforcement: Some(Enforcement::Available),
            enforcement_detail: String::new(),
            policy_set: Some(u64::MAX),
            ..birth()
        };
        let offline_with_extras = StatusMessage {
            state: AgentState::Offline,
            ..birth()
        };
        let online_saying_little = StatusMessage {
            state: AgentState::Online,
            ..StatusMessage::last_will("1", [0; 16])
        };
        for status in [
            birth(),
            will,
            available,
            offline_with_extras,
            online_saying_little,
        ] {
            let json = status.to_json();
            assert_eq!(
                StatusMessage::from_json(json.as_bytes()),
                Ok(status.clone())
            );
            let via_serde: StatusMessage = serde_json::from_str(&json).expect("deserializes");
            assert_eq!(via_serde, status, "{json}");
        }
    }

    #[test]
    fn what_decoders_accept_and_refuse() {
        let extra = r#"{"state":"online","agent_version":"1","boot_id":"0123456789abcdef0123456789abcdef","future_field":[1,2]}"#;
        let s = StatusMessage::from_json(extra.as_bytes()).expect("unknown fields are ignored");
        assert_eq!(
            (s.kernel.as_str(), s.enforcement, s.policy_set, s.time),
            ("", None, None, None)
        );
        assert_eq!(s.boot_id_hex(), "0123456789abcdef0123456789abcdef");
        let cases: &[(&str, StatusError)] = &[
            (
                r#"{"state":"online","agent_version":"1","boot_id":"0123456789abcdef0123456789abcdef","policy_set":"12"}"#,
                StatusError::BadPolicySet("12".into()),
            ),
            (
                r#"{"state":"online","agent_version":"1","boot_id":"0123456789ABCDEF0123456789abcdef"}"#,
                StatusError::BadBootId("0123456789ABCDEF0123456789abcdef".into()),
            ),
            (
                r#"{"state":"asleep","agent_version":"1","boot_id":"x"}"#,
                StatusError::UnknownState("asleep".into()),
            ),
            (
                r#"{"state":"online","agent_version":"a=b","boot_id":"0123456789abcdef0123456789abcdef"}"#,
                StatusError::BadField {
                    field: "agent_version",
                    reason: "holds whitespace, control characters or '='",
                },
            ),
        ];
        for (payload, expected) in cases {
            assert_eq!(
                StatusMessage::from_json(payload.as_bytes()).as_ref(),
                Err(expected),
                "{payload}"
            );
        }
        let long = format!(
            r#"{{"state":"online","agent_version":"1","boot_id":"0123456789abcdef0123456789abcdef","kernel":"{}"}}"#,
            "k".repeat(MAX_FIELD_LEN + 1)
        );
        assert!(matches!(
            StatusMessage::from_json(long.as_bytes()),
            Err(StatusError::BadField {
                field: "kernel",
                ..
            })
        ));
        let huge = vec![b' '; MAX_STATUS_LEN + 1];
        assert_eq!(
            StatusMessage::from_json(&huge),
            Err(StatusError::TooLarge {
                len: MAX_STATUS_LEN + 1,
                max: MAX_STATUS_LEN
            })
        );
    }
}
