//! The policy metadata behind the ids alerts carry.
//!
//! A [`PolicyCatalog`] interns metadata for the life of one agent boot and only
//! grows: ids handed to the kernel stay valid across policy reloads, so an event
//! still in flight from the previous policy set expands with the right metadata.
//! A [`PolicySet`] is a snapshot of it, hashed (the hash names the table in batches
//! and in the birth message) and encoded into retained [`PolicyTable`] parts of at
//! most `MAX_POLICIES_PER_TABLE` policies.

use std::collections::HashMap;

use edgearmor_wire::{AgentId, MAX_POLICIES_PER_TABLE, Message, PolicyMeta, PolicyTable};
use sha2::{Digest, Sha256};

/// Interned metadata, append-only; an entry's index is its policy id.
#[derive(Default)]
pub struct PolicyCatalog {
    policies: Vec<PolicyMeta>,
    ids: HashMap<PolicyMetaKey, u32>,
}

type PolicyMetaKey = (String, u8, String, String);

fn meta_key(m: &PolicyMeta) -> PolicyMetaKey {
    (
        m.name.as_str().to_owned(),
        m.severity,
        m.tags.as_str().to_owned(),
        m.message.as_str().to_owned(),
    )
}

impl PolicyCatalog {
    /// The id of `meta`, adding it when new.
    pub fn intern(&mut self, meta: PolicyMeta) -> u32 {
        let key = meta_key(&meta);
        if let Some(id) = self.ids.get(&key) {
            return *id;
        }
        let id = u32::try_from(self.policies.len()).unwrap_or(u32::MAX - 1);
        self.policies.push(meta);
        self.ids.insert(key, id);
        id
    }

    /// The id of the first policy named `name`.
    pub fn id_of(&self, name: &str) -> Option<u32> {
        let at = self.policies.iter().position(|p| p.name.as_str() == name)?;
        u32::try_from(at).ok()
    }

    pub fn len(&self) -> usize {
        self.policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// The catalog as it is now.
    pub fn snapshot(&self) -> PolicySet {
        PolicySet::from_metadata(self.policies.clone())
    }
}

/// Policy metadata in id order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicySet {
    pub policies: Vec<PolicyMeta>,
    /// First 8 bytes of the SHA-256 of the metadata, big-endian.
    pub hash: u64,
}

impl PolicySet {
    pub fn from_metadata(policies: Vec<PolicyMeta>) -> Self {
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

    fn meta(name: &str, message: &str) -> PolicyMeta {
        PolicyMeta {
            name: heapless::String::try_from(name).expect("fits"),
            severity: 5,
            tags: heapless::String::new(),
            message: heapless::String::try_from(message).expect("fits"),
        }
    }

    #[test]
    fn catalog_interns_and_only_grows() {
        let mut catalog = PolicyCatalog::default();
        assert_eq!(catalog.intern(meta("a", "x")), 0);
        assert_eq!(catalog.intern(meta("b", "x")), 1);
        assert_eq!(catalog.intern(meta("a", "x")), 0);
        let before = catalog.snapshot();
        assert_eq!(catalog.intern(meta("a", "y")), 2);
        let after = catalog.snapshot();
        assert_ne!(before.hash, after.hash);
        assert_eq!(after.policies[..2], before.policies[..]);
    }

    #[test]
    fn table_splits_into_parts() {
        let mut catalog = PolicyCatalog::default();
        for i in 0..20 {
            catalog.intern(meta(&format!("p{i}"), ""));
        }
        let set = catalog.snapshot();
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
    }
}
