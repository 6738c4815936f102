//! The agent's retained status on `<prefix>/<cluster>/<node>/status`: a birth message
//! after every connect and a last will the broker publishes when the connection dies.
//! JSON, so fleet tooling reads it without the wire format.

use edgearmor_alert::write_go_string;

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
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn field(out: &mut String, key: &str, value: &str) {
    if out.len() > 1 {
        out.push(',');
    }
    write_go_string(out, key);
    out.push(':');
    write_go_string(out, value);
}

impl AgentStatus {
    pub fn birth_json(&self) -> String {
        let mut out = String::from("{");
        field(&mut out, "state", "online");
        field(&mut out, "agent_version", &self.agent_version);
        field(&mut out, "boot_id", &hex(&self.boot_id));
        field(&mut out, "kernel", &self.kernel);
        let (state, detail) = match &self.enforcement {
            Ok(()) => ("available", ""),
            Err(reason) => ("unavailable", reason.as_str()),
        };
        field(&mut out, "enforcement", state);
        field(&mut out, "enforcement_detail", detail);
        field(&mut out, "policy_set", &format!("{:016x}", self.policy_set));
        out.push_str(&format!(",\"time\":{}}}", self.unix_secs));
        out
    }

    pub fn will_json(&self) -> String {
        let mut out = String::from("{");
        field(&mut out, "state", "offline");
        field(&mut out, "boot_id", &hex(&self.boot_id));
        field(&mut out, "agent_version", &self.agent_version);
        out.push('}');
        out
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
    }
}
