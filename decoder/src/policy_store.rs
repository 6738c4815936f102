//! Policy tables assembled from their retained parts, per agent boot and policy set.
//!
//! An agent publishes its policy metadata (names, severities, tags, messages) once per
//! policy set, retained, in parts of up to 16 policies; batches then refer to policies
//! by id within a `policy_set`. The store assembles the parts into
//! [`PolicyLookup`]s keyed by the agent's [`StreamKey`] and the set.
//!
//! Bounded: [`MAX_SETS_PER_AGENT`] sets per agent boot (the oldest goes), `max_agents`
//! agent boots and [`MEMORY_BUDGET`] bytes overall (least recently used agents go first).

use std::collections::HashMap;

use edgearmor_alert::expand::{PolicyLookup, PolicyTableError};
use edgearmor_wire::PolicyTable;

use crate::sequence::StreamKey;

/// Policy sets kept per agent boot: the current one and a few before it, for batches
/// still in flight when the policies changed.
pub const MAX_SETS_PER_AGENT: usize = 4;
/// Heap bytes all tables may hold together. One full set of 4096 policies with every
/// string at its bound is about 2.6 MiB; real sets are far smaller.
pub const MEMORY_BUDGET: usize = 64 << 20;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyStoreStats {
    pub parts_accepted: u64,
    pub tables_completed: u64,
    pub tables_evicted: u64,
}

pub struct PolicyStore {
    agents: HashMap<StreamKey, AgentTables>,
    max_agents: usize,
    bytes: usize,
    tick: u64,
    stats: PolicyStoreStats,
}

struct AgentTables {
    /// Oldest first.
    sets: Vec<PolicyLookup>,
    last_used: u64,
}

impl AgentTables {
    fn bytes(&self) -> usize {
        self.sets.iter().map(PolicyLookup::heap_bytes).sum()
    }
}

impl PolicyStore {
    pub fn new(max_agents: usize) -> Self {
        Self {
            agents: HashMap::new(),
            max_agents: max_agents.max(1),
            bytes: 0,
            tick: 0,
            stats: PolicyStoreStats::default(),
        }
    }

    pub fn stats(&self) -> PolicyStoreStats {
        self.stats
    }

    /// Adds one part; returns whether its set is now complete.
    pub fn insert_part(
        &mut self,
        key: &StreamKey,
        part: &PolicyTable,
    ) -> Result<bool, PolicyTableError> {
        self.tick += 1;
        let tick = self.tick;
        if !self.agents.contains_key(key) {
            // Validate before making room: a bad part must not evict a good table.
            PolicyLookup::new(part.policy_set, part.total)?;
            if self.agents.len() >= self.max_agents {
                self.evict_least_recently_used();
            }
            self.agents.insert(
                key.clone(),
                AgentTables {
                    sets: Vec::new(),
                    last_used: tick,
                },
            );
        }
        let Some(agent) = self.agents.get_mut(key) else {
            return Ok(false);
        };
        agent.last_used = tick;
        let before = agent.bytes();
        let result = match agent
            .sets
            .iter_mut()
            .find(|set| set.policy_set() == part.policy_set)
        {
            Some(lookup) => {
                let was_complete = lookup.is_complete();
                lookup
                    .insert_part(part)
                    .map(|()| !was_complete && lookup.is_complete())
            }
            None => {
                let mut lookup = PolicyLookup::new(part.policy_set, part.total)?;
                lookup.insert_part(part)?;
                if agent.sets.len() >= MAX_SETS_PER_AGENT {
                    agent.sets.remove(0);
                    self.stats.tables_evicted += 1;
                }
                let complete = lookup.is_complete();
                agent.sets.push(lookup);
                Ok(complete)
            }
        };
        let after = agent.bytes();
        self.bytes = self.bytes - before + after;
        if result.is_ok() {
            self.stats.parts_accepted += 1;
        }
        if result == Ok(true) {
            self.stats.tables_completed += 1;
        }
        while self.bytes > MEMORY_BUDGET && self.agents.len() > 1 {
            self.evict_least_recently_used();
        }
        result
    }

    /// The (possibly still incomplete) table of `policy_set` for this agent boot.
    pub fn get(&mut self, key: &StreamKey, policy_set: u64) -> Option<&PolicyLookup> {
        self.tick += 1;
        let agent = self.agents.get_mut(key)?;
        agent.last_used = self.tick;
        agent.sets.iter().find(|set| set.policy_set() == policy_set)
    }

    fn evict_least_recently_used(&mut self) {
        // Linear scan: only reached beyond `max_agents` agents or the memory budget.
        let Some(oldest) = self
            .agents
            .iter()
            .min_by_key(|(_, a)| a.last_used)
            .map(|(k, _)| k.clone())
        else {
            return;
        };
        if let Some(agent) = self.agents.remove(&oldest) {
            self.bytes -= agent.bytes();
            self.stats.tables_evicted += agent.sets.len() as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgearmor_wire::{AgentId, PolicyMeta};

    fn key(node: &str) -> StreamKey {
        StreamKey {
            cluster: "c".into(),
            node: node.into(),
            boot_id: [3; 16],
        }
    }

    fn part(policy_set: u64, total: u32, first_id: u32, names: &[&str]) -> PolicyTable {
        PolicyTable {
            agent: AgentId {
                cluster: heapless::String::try_from("c").expect("fits"),
                node: heapless::String::try_from("n").expect("fits"),
                boot_id: [3; 16],
            },
            policy_set,
            total,
            first_id,
            policies: names
                .iter()
                .map(|n| PolicyMeta {
                    name: heapless::String::try_from(*n).expect("fits"),
                    severity: 2,
                    tags: heapless::String::new(),
                    message: heapless::String::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn parts_assemble_per_agent_and_set() {
        let mut store = PolicyStore::new(4);
        assert_eq!(
            store.insert_part(&key("a"), &part(1, 3, 0, &["x", "y"])),
            Ok(false)
        );
        assert_eq!(
            store.insert_part(&key("a"), &part(1, 3, 2, &["z"])),
            Ok(true)
        );
        assert_eq!(
            store.insert_part(&key("a"), &part(1, 3, 2, &["z"])),
            Ok(false)
        );
        let name = |s: &mut PolicyStore, k, set, id| {
            s.get(&key(k), set)
                .and_then(|l| l.get(id))
                .map(|p| p.name.clone())
        };
        assert_eq!(name(&mut store, "a", 1, 2).as_deref(), Some("z"));
        assert_eq!(name(&mut store, "b", 1, 2), None, "tables are per agent");
        assert_eq!(name(&mut store, "a", 2, 2), None, "and per set");
        assert_eq!(store.stats().tables_completed, 1);
    }

    #[test]
    fn sets_per_agent_and_agents_are_bounded() {
        let mut store = PolicyStore::new(2);
        for set in 0..(MAX_SETS_PER_AGENT as u64 + 1) {
            store
                .insert_part(&key("a"), &part(set, 1, 0, &["p"]))
                .expect("valid");
        }
        assert!(store.get(&key("a"), 0).is_none(), "the oldest set went");
        assert!(store.get(&key("a"), MAX_SETS_PER_AGENT as u64).is_some());
        store
            .insert_part(&key("b"), &part(0, 1, 0, &["p"]))
            .expect("valid");
        store.get(&key("a"), 1);
        store
            .insert_part(&key("c"), &part(0, 1, 0, &["p"]))
            .expect("valid");
        assert!(
            store.get(&key("b"), 0).is_none(),
            "b was least recently used"
        );
        assert!(store.get(&key("a"), 1).is_some());
    }

    #[test]
    fn a_bad_part_is_an_error_and_evicts_nothing() {
        let mut store = PolicyStore::new(1);
        store
            .insert_part(&key("a"), &part(0, 1, 0, &["p"]))
            .expect("valid");
        assert!(matches!(
            store.insert_part(&key("b"), &part(0, PolicyLookup::MAX_POLICIES + 1, 0, &[])),
            Err(PolicyTableError::TooManyPolicies { .. })
        ));
        assert!(store.get(&key("a"), 0).is_some());
    }
}
