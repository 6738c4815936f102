//! The agent's retained status on `<prefix>/<cluster>/<node>/status`: a birth message
//! after every connect and a last will the broker publishes when the connection dies.
//! The message is [`edgearmor_mqtt::StatusMessage`], which the decoder reads.

use edgearmor_mqtt::{AgentState, Enforcement, StatusMessage};

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
            counters: Default::default(),
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
}
