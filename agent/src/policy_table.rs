//! The policy metadata behind the ids alerts carry: built from the rule set, hashed
//! (the hash names the set in batches and in the birth message) and encoded into
//! retained [`PolicyTable`] parts of at most `MAX_POLICIES_PER_TABLE` policies.

use edgearmor_wire::{AgentId, MAX_POLICIES_PER_TABLE, Message, PolicyMeta, PolicyTable};
use sha2::{Digest, Sha256};

use crate::alerts::bounded;
use crate::rules::SetidRuleSet;

/// Policy metadata in rule-id order.
pub struct PolicySet {
    pub policies: Vec<PolicyMeta>,
    /// First 8 bytes of the SHA-256 of the metadata, big-endian.
    pub hash: u64,
}

impl PolicySet {
    pub fn from_rules(rules: &SetidRuleSet) -> Self {
        let policies: Vec<PolicyMeta> = rules
            .rules
            .iter()
            .map(|r| PolicyMeta {
                name: bounded(&r.policy),
                severity: r.severity.unwrap_or(0),
                tags: bounded(&r.tags.join(",")),
                message: bounded(&r.message),
            })
            .collect();
        let mut digest = Sha256::new();
        for p in &policies {
            for part in [p.name.as_str(), p.tags.as_str(), p.message.as_str()] {
                digest.update((part.len() as u32).to_le_bytes());
                digest.update(part.as_bytes());
            }
            digest.update([p.severity]);
        }
        let d = digest.finalize();
        let hash = u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
        Self { policies, hash }
    }

    /// Encoded table parts for `agent`, ready to publish.
    pub fn encode(&self, agent: &AgentId) -> Vec<Vec<u8>> {
        let mut buf = vec![0u8; Message::MAX_ENCODED_LEN];
        let mut parts = Vec::new();
        let chunks: Vec<&[PolicyMeta]> = if self.policies.is_empty() {
            vec![&[]]
        } else {
            self.policies.chunks(MAX_POLICIES_PER_TABLE).collect()
        };
        for (i, chunk) in chunks.into_iter().enumerate() {
            let mut policies = heapless::Vec::new();
            for p in chunk {
                let _ = policies.push(p.clone());
            }
            let table = Message::PolicyTable(PolicyTable {
                agent: agent.clone(),
                policy_set: self.hash,
                total: self.policies.len() as u32,
                first_id: (i * MAX_POLICIES_PER_TABLE) as u32,
                policies,
            });
            match edgearmor_wire::encode(&table, &mut buf) {
                Ok(bytes) => parts.push(bytes.to_vec()),
                Err(e) => log::error!("cannot encode policy table part {i}: {e}"),
            }
        }
        parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn table_splits_into_parts_and_hash_tracks_content() {
        let mut rules = SetidRuleSet::default();
        for i in 0..20 {
            rules
                .add_flag("deny-setgid", "setgid", &format!("/bin/p{i}"))
                .expect("valid");
        }
        let set = PolicySet::from_rules(&rules);
        let agent = AgentId {
            cluster: heapless::String::try_from("c").expect("fits"),
            node: heapless::String::try_from("n").expect("fits"),
            boot_id: [0; 16],
        };
        let parts = set.encode(&agent);
        assert_eq!(parts.len(), 2);
        let Ok(Message::PolicyTable(second)) = edgearmor_wire::decode(&parts[1]) else {
            panic!("part 2 decodes");
        };
        assert_eq!(
            (second.total, second.first_id, second.policies.len()),
            (20, 16, 4)
        );
        let mut other = SetidRuleSet::default();
        other
            .add_toml(
                Path::new("r"),
                "[[setid]]\nexecutable = \"/bin/p0\"\ndeny = [\"setgid\"]\nmessage = \"x\"\n",
            )
            .expect("valid");
        assert_ne!(PolicySet::from_rules(&other).hash, set.hash);
    }
}
