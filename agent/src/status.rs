//! The agent's retained status on `<prefix>/<cluster>/<node>/status`: a birth message
//! after every connect and a last will the broker publishes when the connection dies.
//! The message is [`edgearmor_mqtt::StatusMessage`], which the decoder reads.
//!
//! [`AgentReport`] is the gateway-local side: what the running agent writes to
//! `[status] file` (and says in its systemd `STATUS=` line), read by `edgearmor status`.

use std::collections::BTreeMap;

use edgearmor_mqtt::{AgentState, Enforcement, StatusMessage};
use serde::{Deserialize, Serialize};

/// What the birth message reports.
#[derive(Clone, Debug)]
pub struct AgentStatus {
    pub agent_version: String,
    pub boot_id: [u8; 16],
    pub kernel: String,
    /// `Err(reason)` when this kernel cannot enforce.
    pub enforcement: Result<(), String>,
    pub policy_set: u64,
    pub unix_secs: u64,
    /// `[labels]` of `agent.toml`, so fleet tooling can target by them.
    pub labels: edgearmor_policy::NodeLabels,
    /// The counters of the last refresh (none in the first birth).
    pub counters: edgearmor_mqtt::Counters,
}

impl AgentStatus {
    pub fn birth(&self) -> StatusMessage {
        let (enforcement, detail) = match &self.enforcement {
            Ok(()) => (Enforcement::Available, ""),
            Err(reason) => (Enforcement::Unavailable, reason.as_str()),
        };
        StatusMessage {
            state: AgentState::Online,
            agent_version: self.agent_version.clone(),
            boot_id: self.boot_id,
            kernel: self.kernel.clone(),
            enforcement: Some(enforcement),
            enforcement_detail: detail.to_owned(),
            policy_set: Some(self.policy_set),
            time: Some(self.unix_secs),
            labels: self.labels.clone(),
            counters: self.counters.clone(),
        }
    }

    pub fn will(&self) -> StatusMessage {
        StatusMessage::last_will(&self.agent_version, self.boot_id)
    }

    pub fn birth_json(&self) -> String {
        self.birth().to_json()
    }

    pub fn will_json(&self) -> String {
        self.will().to_json()
    }
}

/// The running agent's state file, rewritten every `[status] interval_sec` and
/// whenever its `STATUS=` line changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentReport {
    pub pid: u32,
    /// Unix seconds of this report.
    pub time: u64,
    /// How often the agent rewrites this file, so a reader tells a stale one.
    pub interval_sec: u64,
    /// `enforcing` or `monitor-only`.
    pub mode: String,
    /// Why enforcement is unavailable (monitor-only); empty otherwise.
    pub detail: String,
    /// Classes the policy set in force has rules for (`process`, `file`, ...).
    pub classes: Vec<String>,
    /// The policy table's id, 16 hex digits.
    pub policy_set: String,
    /// The kernel's active generation (enforcing only).
    pub generation: Option<u32>,
    /// Where enforcement is pinned ("" = not pinned: it stops with the agent).
    pub pin_dir: String,
    /// Whether this agent adopted an earlier agent's pinned enforcement.
    pub adopted: bool,
    pub broker: Option<BrokerReport>,
    /// Names of `edgearmor_mqtt::COUNTERS`.
    pub counters: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerReport {
    pub address: String,
    pub connected: bool,
    /// Why the last connection failed or ended ("" before any failure).
    pub last_error: String,
}

impl AgentReport {
    /// The systemd `STATUS=` line: what is enforced, the policy set, the broker.
    pub fn status_line(&self) -> String {
        let what = match (self.mode.as_str(), self.classes.as_slice()) {
            ("enforcing", []) => "enforcing (no rules)".to_owned(),
            ("enforcing", classes) => format!("enforcing {}", classes.join(", ")),
            (mode, _) => format!("{mode} ({})", self.detail),
        };
        let generation = self
            .generation
            .map(|g| format!(" generation {g}"))
            .unwrap_or_default();
        let broker = match &self.broker {
            None => "no broker".to_owned(),
            Some(b) if b.connected => format!("broker {} connected", b.address),
            Some(b) if b.last_error.is_empty() => format!("broker {} connecting", b.address),
            Some(b) => format!("broker {} unreachable: {}", b.address, b.last_error),
        };
        format!(
            "{what}; policy set {}{generation}; {broker}",
            self.policy_set
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn birth_and_will_are_the_documented_json() {
        let s = AgentStatus {
            agent_version: "0.1.0".into(),
            boot_id: [0xab; 16],
            kernel: "6.12.117+deb12-arm64".into(),
            enforcement: Err("no \"trampoline\"".into()),
            policy_set: 0x1234,
            unix_secs: 1795932048,
            labels: Default::default(),
            counters: Default::default(),
        };
        assert_eq!(
            s.birth_json(),
            concat!(
                r#"{"state":"online","agent_version":"0.1.0","boot_id":"abababababababababababababababab","#,
                r#""kernel":"6.12.117+deb12-arm64","enforcement":"unavailable","enforcement_detail":"no \"trampoline\"","#,
                r#""policy_set":"0000000000001234","time":1795932048}"#
            )
        );
        assert_eq!(
            s.will_json(),
            r#"{"state":"offline","boot_id":"abababababababababababababababab","agent_version":"0.1.0"}"#
        );
        let labelled = AgentStatus {
            labels: [("site", "plant-7"), ("role", "edge")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .into(),
            ..s
        };
        assert!(
            labelled
                .birth_json()
                .ends_with(r#""time":1795932048,"labels":{"role":"edge","site":"plant-7"}}"#),
            "{}",
            labelled.birth_json()
        );
        assert!(!labelled.will_json().contains("labels"));
    }

    #[test]
    fn the_status_line_says_what_is_enforced_the_set_and_the_broker() {
        let mut report = AgentReport {
            mode: "enforcing".into(),
            classes: vec!["process".into(), "file".into()],
            policy_set: "00000000000000ab".into(),
            generation: Some(3),
            broker: Some(BrokerReport {
                address: "10.0.0.1:8883".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            report.status_line(),
            "enforcing process, file; policy set 00000000000000ab generation 3; broker 10.0.0.1:8883 connecting"
        );
        report.broker = Some(BrokerReport {
            address: "10.0.0.1:8883".into(),
            connected: false,
            last_error: "connection refused".into(),
        });
        assert!(
            report
                .status_line()
                .ends_with("; broker 10.0.0.1:8883 unreachable: connection refused")
        );
        let monitor = AgentReport {
            mode: "monitor-only".into(),
            detail: "bpf is not an active LSM".into(),
            policy_set: "0000000000000001".into(),
            ..Default::default()
        };
        assert_eq!(
            monitor.status_line(),
            "monitor-only (bpf is not an active LSM); policy set 0000000000000001; no broker"
        );
    }
}
