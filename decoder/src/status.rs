//! Agent status messages (retained JSON on `edgearmor/<cluster>/<node>/status`) as
//! `SystemEvent` lines.
//!
//! The message itself, what the agent publishes and what is valid, is
//! [`edgearmor_mqtt::status`], shared with the agent:
//!
//! ```json
//! {"state":"online","agent_version":"0.1.0","boot_id":"<32 hex>","kernel":"6.12.117+deb12-arm64",
//!  "enforcement":"available","enforcement_detail":"","policy_set":"<16 hex>","time":1795932048}
//! {"state":"offline","boot_id":"<32 hex>","agent_version":"0.1.0"}
//! ```
//!
//! With node labels (`"labels":{"site":"plant-7"}`, last) each becomes a `label.KEY=VALUE`
//! word of `Data`. Unknown fields are ignored (the agent may add some); missing required fields,
//! unknown states and malformed values are errors, which the decoder counts and skips.

use std::fmt::Write as _;

use edgearmor_alert::expand::{ExpandOptions, reset, set_identity};
use edgearmor_alert::{AlertType, EventTime, HostAlert};
pub use edgearmor_mqtt::status::{
    AgentState, Enforcement, MAX_STATUS_LEN, StatusError, StatusMessage,
};

/// `Operation` of status lines.
pub const OPERATION_AGENT_STATUS: &str = "AgentStatus";

/// Reads and checks a status payload.
pub fn parse(payload: &[u8]) -> Result<StatusMessage, StatusError> {
    StatusMessage::from_json(payload)
}

/// The `SystemEvent` line of a status: `Operation: AgentStatus`, the status as `Data`
/// key/value pairs, a sentence in `Message`. `retained` marks a status the broker
/// kept from before this decoder subscribed; `now_us` stamps statuses without a time.
pub fn to_alert(
    status: &StatusMessage,
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
    let state = status.state.as_str();
    let boot_id = status.boot_id_hex();
    let _ = write!(
        out.data,
        "state={state} agent_version={} boot_id={boot_id}",
        status.agent_version
    );
    if !status.kernel.is_empty() {
        let _ = write!(out.data, " kernel={}", status.kernel);
    }
    if let Some(enforcement) = status.enforcement {
        let _ = write!(out.data, " enforcement={}", enforcement.as_str());
    }
    if let Some(policy_set) = status.policy_set_hex() {
        let _ = write!(out.data, " policy_set={policy_set}");
    }
    // One word per node label, so tooling filtering on `Data` finds `label.site=plant-7`.
    for (key, value) in &status.labels {
        let _ = write!(out.data, " label.{key}={value}");
    }
    let boot = &boot_id[..8];
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
                Some(Enforcement::Available) => out.message.push_str(", enforcement available"),
                Some(Enforcement::Unavailable) if status.enforcement_detail.is_empty() => out
                    .message
                    .push_str(", enforcement unavailable (monitor only)"),
                Some(Enforcement::Unavailable) => {
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
    fn node_labels_become_data_words() {
        let labelled = BIRTH.replace(
            r#""time":1795932048}"#,
            r#""time":1795932048,"labels":{"site":"plant-7","node.example/role":"edge"}}"#,
        );
        let json = line(&labelled, false);
        assert!(
            json.contains(
                "policy_set=00000000000000ff label.node.example/role=edge label.site=plant-7\""
            ),
            "{json}"
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
