//! Agent status messages (retained JSON on `edgearmor/<cluster>/<node>/status`) as
//! `SystemEvent` lines.
//!
//! The agent publishes a birth message when it connects and leaves a last will with
//! the broker for when its connection is lost:
//!
//! ```json
//! {"state":"online","agent_version":"0.1.0","boot_id":"<32 hex>","kernel":"6.12.117+deb12-arm64",
//!  "enforcement":"available","enforcement_detail":"","policy_set":"<16 hex>","time":1795932048}
//! {"state":"offline","boot_id":"<32 hex>","agent_version":"0.1.0"}
//! ```
//!
//! Unknown fields are ignored (the agent may add some); missing required fields,
//! unknown states and malformed values are errors, which the decoder counts and skips.

use std::fmt::Write as _;

use edgearmor_alert::expand::{ExpandOptions, reset, set_identity};
use edgearmor_alert::{AlertType, EventTime, HostAlert};
use serde::Deserialize;

/// `Operation` of status lines.
pub const OPERATION_AGENT_STATUS: &str = "AgentStatus";
/// Status payloads are small; anything larger is not one.
pub const MAX_STATUS_LEN: usize = 4096;
/// Bound of every free-text field (versions, kernel release, enforcement detail).
const MAX_FIELD_LEN: usize = 512;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatusError {
    TooLarge {
        len: usize,
        max: usize,
    },
    /// Not JSON, or not the status object (serde_json's message says where).
    Json(String),
    UnknownState(String),
    /// `boot_id` is not 32 lowercase hex digits.
    BadBootId(String),
    /// `policy_set` is not 16 lowercase hex digits.
    BadPolicySet(String),
    UnknownEnforcement(String),
    /// A field over its bound, or with characters it may not hold.
    BadField {
        field: &'static str,
        reason: &'static str,
    },
}

impl std::fmt::Display for StatusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StatusError::TooLarge { len, max } => {
                write!(f, "status of {len} bytes, over the {max}-byte limit")
            }
            StatusError::Json(e) => write!(f, "status is not the expected JSON object: {e}"),
            StatusError::UnknownState(s) => {
                write!(
                    f,
                    "unknown state {s:?} (expected \"online\" or \"offline\")"
                )
            }
            StatusError::BadBootId(s) => {
                write!(f, "boot_id {s:?} is not 32 lowercase hex digits")
            }
            StatusError::BadPolicySet(s) => {
                write!(f, "policy_set {s:?} is not 16 lowercase hex digits")
            }
            StatusError::UnknownEnforcement(s) => write!(
                f,
                "unknown enforcement {s:?} (expected \"available\" or \"unavailable\")"
            ),
            StatusError::BadField { field, reason } => write!(f, "field {field}: {reason}"),
        }
    }
}

impl std::error::Error for StatusError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentState {
    Online,
    Offline,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentStatus {
    pub state: AgentState,
    pub agent_version: String,
    pub boot_id: String,
    pub kernel: String,
    /// `Some(true)` available, `Some(false)` unavailable, `None` not said (offline).
    pub enforcement: Option<bool>,
    pub enforcement_detail: String,
    pub policy_set: String,
    /// Unix seconds, from the agent's clock.
    pub time: Option<u64>,
}

#[derive(Deserialize)]
struct StatusJson {
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
}

pub fn parse(payload: &[u8]) -> Result<AgentStatus, StatusError> {
    if payload.len() > MAX_STATUS_LEN {
        return Err(StatusError::TooLarge {
            len: payload.len(),
            max: MAX_STATUS_LEN,
        });
    }
    let raw: StatusJson =
        serde_json::from_slice(payload).map_err(|e| StatusError::Json(e.to_string()))?;
    let state = match raw.state.as_str() {
        "online" => AgentState::Online,
        "offline" => AgentState::Offline,
        _ => return Err(StatusError::UnknownState(truncated(&raw.state))),
    };
    if !is_lower_hex(&raw.boot_id, 32) {
        return Err(StatusError::BadBootId(truncated(&raw.boot_id)));
    }
    if !raw.policy_set.is_empty() && !is_lower_hex(&raw.policy_set, 16) {
        return Err(StatusError::BadPolicySet(truncated(&raw.policy_set)));
    }
    let enforcement = match raw.enforcement.as_deref() {
        None => None,
        Some("available") => Some(true),
        Some("unavailable") => Some(false),
        Some(other) => return Err(StatusError::UnknownEnforcement(truncated(other))),
    };
    // These go into `Data` as `key=value` words: no whitespace, no '='.
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
    Ok(AgentStatus {
        state,
        agent_version: raw.agent_version,
        boot_id: raw.boot_id,
        kernel: raw.kernel,
        enforcement,
        enforcement_detail: raw.enforcement_detail,
        policy_set: raw.policy_set,
        time: raw.time,
    })
}

/// The `SystemEvent` line of a status: `Operation: AgentStatus`, the status as `Data`
/// key/value pairs, a sentence in `Message`. `retained` marks a status the broker
/// kept from before this decoder subscribed; `now_us` stamps statuses without a time.
pub fn to_alert(
    status: &AgentStatus,
    cluster: &str,
    node: &str,
    retained: bool,
    now_us: u64,
    options: ExpandOptions,
    out: &mut HostAlert,
) {
    reset(out);
    out.alert_type = AlertType::SystemEvent;
    set_identity(out, cluster, node, options);
    out.time = match status.time {
        // Seconds far in the future would overflow the micros: clamp, it is the agent's word.
        Some(secs) => EventTime::from_unix_micros(secs.saturating_mul(1_000_000)),
        None => EventTime::from_unix_micros(now_us),
    };
    out.operation.push_str(OPERATION_AGENT_STATUS);
    let state = match status.state {
        AgentState::Online => "online",
        AgentState::Offline => "offline",
    };
    let _ = write!(
        out.data,
        "state={state} agent_version={} boot_id={}",
        status.agent_version, status.boot_id
    );
    if !status.kernel.is_empty() {
        let _ = write!(out.data, " kernel={}", status.kernel);
    }
    if let Some(available) = status.enforcement {
        let word = if available {
            "available"
        } else {
            "unavailable"
        };
        let _ = write!(out.data, " enforcement={word}");
    }
    if !status.policy_set.is_empty() {
        let _ = write!(out.data, " policy_set={}", status.policy_set);
    }
    let boot = &status.boot_id[..8.min(status.boot_id.len())];
    let _ = write!(
        out.message,
        "edgearmor agent {} {state} (boot {boot})",
        status.agent_version
    );
    match status.state {
        AgentState::Online => {
            if !status.kernel.is_empty() {
                let _ = write!(out.message, ", kernel {}", status.kernel);
            }
            match status.enforcement {
                Some(true) => out.message.push_str(", enforcement available"),
                Some(false) if status.enforcement_detail.is_empty() => out
                    .message
                    .push_str(", enforcement unavailable (monitor only)"),
                Some(false) => {
                    let _ = write!(
                        out.message,
                        ", enforcement unavailable (monitor only): {}",
                        status.enforcement_detail
                    );
                }
                None => {}
            }
        }
        AgentState::Offline => out
            .message
            .push_str(": its connection to the broker ended (last will)"),
    }
    if retained {
        out.message
            .push_str(" [retained: published before this decoder subscribed]");
    }
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A bad value for an error message: bounded, so a hostile payload cannot flood the log.
fn truncated(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIRTH: &str = r#"{"state":"online","agent_version":"0.1.0","boot_id":"0123456789abcdef0123456789abcdef","kernel":"6.12.117+deb12-arm64","enforcement":"available","enforcement_detail":"","policy_set":"00000000000000ff","time":1795932048}"#;
    const WILL: &str = r#"{"state":"offline","boot_id":"0123456789abcdef0123456789abcdef","agent_version":"0.1.0"}"#;

    fn line(payload: &str, retained: bool) -> String {
        let status = parse(payload.as_bytes()).expect("valid");
        let mut a = HostAlert::new(AlertType::HostLog);
        to_alert(
            &status,
            "default",
            "gw1",
            retained,
            1_000_000,
            ExpandOptions::default(),
            &mut a,
        );
        a.to_json()
    }

    #[test]
    fn birth_becomes_a_system_event() {
        assert_eq!(
            line(BIRTH, false),
            concat!(
                r#"{"Timestamp":1795932048,"UpdatedTime":"2026-11-29T06:00:48.000000Z","ClusterName":"default","#,
                r#""HostName":"gw1","PPID":0,"UID":0,"Message":"edgearmor agent 0.1.0 online (boot 01234567), "#,
                r#"kernel 6.12.117+deb12-arm64, enforcement available","Type":"SystemEvent","Operation":"AgentStatus","#,
                r#""Data":"state=online agent_version=0.1.0 boot_id=0123456789abcdef0123456789abcdef "#,
                r#"kernel=6.12.117+deb12-arm64 enforcement=available policy_set=00000000000000ff","#,
                r#""EventData":{"Agent_version":"0.1.0","Boot_id":"0123456789abcdef0123456789abcdef","#,
                r#""Enforcement":"available","Kernel":"6.12.117+deb12-arm64","Policy_set":"00000000000000ff","State":"online"},"#,
                r#""NodeID":"gw1"}"#
            )
        );
    }

    #[test]
    fn last_will_and_unavailable_enforcement_read_well() {
        let will = line(WILL, true);
        assert!(
            will.contains(r#""Message":"edgearmor agent 0.1.0 offline (boot 01234567): its connection to the broker ended (last will) [retained: published before this decoder subscribed]""#),
            "{will}"
        );
        assert!(
            will.starts_with(r#"{"Timestamp":1,"#),
            "stamped with the receive time: {will}"
        );
        let monitor = BIRTH.replace(r#""available""#, r#""unavailable""#).replace(
            r#""enforcement_detail":"""#,
            r#""enforcement_detail":"no BPF trampolines on this kernel""#,
        );
        assert!(
            line(&monitor, false).contains(
                "enforcement unavailable (monitor only): no BPF trampolines on this kernel"
            )
        );
    }

    #[test]
    fn invalid_statuses_are_errors() {
        type Check = fn(&StatusError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("not json", |e| matches!(e, StatusError::Json(_))),
            (r#"{"state":"online"}"#, |e| {
                matches!(e, StatusError::Json(_))
            }),
            (
                r#"{"state":"napping","agent_version":"1","boot_id":"x"}"#,
                |e| matches!(e, StatusError::UnknownState(_)),
            ),
            (
                r#"{"state":"online","agent_version":"1","boot_id":"ABC"}"#,
                |e| matches!(e, StatusError::BadBootId(_)),
            ),
            (
                r#"{"state":"online","agent_version":"1 2","boot_id":"0123456789abcdef0123456789abcdef"}"#,
                |e| {
                    matches!(
                        e,
                        StatusError::BadField {
                            field: "agent_version",
                            ..
                        }
                    )
                },
            ),
            (
                r#"{"state":"online","agent_version":"1","boot_id":"0123456789abcdef0123456789abcdef","enforcement":"maybe"}"#,
                |e| matches!(e, StatusError::UnknownEnforcement(_)),
            ),
        ];
        for (payload, expected) in cases {
            let err = parse(payload.as_bytes()).expect_err(payload);
            assert!(expected(&err), "{payload}: {err:?}");
        }
        let huge = vec![b' '; MAX_STATUS_LEN + 1];
        assert!(matches!(parse(&huge), Err(StatusError::TooLarge { .. })));
    }
}
