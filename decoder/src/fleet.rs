//! Every agent's health as the decoder last saw it, per node (`cluster`/`node`, across
//! boots): online or offline and the counters of its latest status message, plus what the
//! decoder counted for it (alert lines, delivery gaps). The metrics endpoint prints it.
//!
//! Bounded like the sequence tracker: at most `max_agents` nodes, the least recently heard
//! from is forgotten first (counted in `evicted`).

use std::collections::HashMap;

use edgearmor_mqtt::status::{AgentState, Counters as AgentCounters, StatusMessage};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentHealth {
    /// `None` until a status arrived (events alone do not say).
    pub online: Option<bool>,
    /// The latest status's `time` (Unix seconds), when it had one.
    pub status_time: Option<u64>,
    pub agent_version: String,
    /// The latest online status's kernel release and enforcement (`available`, ...).
    pub kernel: String,
    pub enforcement: &'static str,
    /// The latest online status's counters (a last will carries none: they are kept).
    pub counters: AgentCounters,
    /// Alert lines the decoder wrote for this node.
    pub alerts: u64,
    /// Delivery gaps reported for this node, and the events they lost.
    pub gaps: u64,
    pub gap_lost: u64,
    last_heard: u64,
}

pub struct Fleet {
    agents: HashMap<(String, String), AgentHealth>,
    max_agents: usize,
    clock: u64,
    pub evicted: u64,
}

impl Fleet {
    pub fn new(max_agents: usize) -> Self {
        Self {
            agents: HashMap::new(),
            max_agents: max_agents.max(1),
            clock: 0,
            evicted: 0,
        }
    }

    /// The entry of `cluster`/`node`, created (evicting the stalest) if new.
    pub fn entry(&mut self, cluster: &str, node: &str) -> &mut AgentHealth {
        self.clock += 1;
        let key = (cluster.to_owned(), node.to_owned());
        if !self.agents.contains_key(&key) && self.agents.len() >= self.max_agents {
            let stalest = self
                .agents
                .iter()
                .min_by_key(|(_, a)| a.last_heard)
                .map(|(k, _)| k.clone());
            if let Some(stalest) = stalest {
                self.agents.remove(&stalest);
                self.evicted += 1;
            }
        }
        let clock = self.clock;
        let agent = self.agents.entry(key).or_default();
        agent.last_heard = clock;
        agent
    }

    pub fn record_status(&mut self, cluster: &str, node: &str, status: &StatusMessage) {
        let agent = self.entry(cluster, node);
        agent.online = Some(status.state == AgentState::Online);
        agent.status_time = status.time;
        agent.agent_version.clone_from(&status.agent_version);
        if status.state == AgentState::Online {
            // An older agent's status has no counters: none are shown rather than stale ones.
            agent.counters = status.counters.clone();
            agent.kernel.clone_from(&status.kernel);
            agent.enforcement = status.enforcement.map_or("", |e| e.as_str());
        }
    }

    /// The agents sorted by cluster, then node (stable output).
    pub fn sorted(&self) -> Vec<(&(String, String), &AgentHealth)> {
        let mut all: Vec<_> = self.agents.iter().collect();
        all.sort_by(|a, b| a.0.cmp(b.0));
        all
    }

    pub fn len(&self) -> usize {
        self.agents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stalest_node_is_forgotten_first_and_counted() {
        let mut fleet = Fleet::new(2);
        fleet.entry("c", "a").alerts += 1;
        fleet.entry("c", "b").alerts += 1;
        fleet.entry("c", "a").alerts += 1;
        fleet.entry("c", "new").gaps += 1;
        let names: Vec<&str> = fleet.sorted().iter().map(|(k, _)| k.1.as_str()).collect();
        assert_eq!(names, ["a", "new"]);
        assert_eq!(fleet.evicted, 1);
        assert_eq!(fleet.entry("c", "a").alerts, 2);
    }

    #[test]
    fn a_last_will_keeps_the_counters_and_marks_offline() {
        let online = StatusMessage::from_json(
            br#"{"state":"online","agent_version":"0.1.0","boot_id":"0123456789abcdef0123456789abcdef","time":5,"counters":{"alerts_sent":12}}"#,
        )
        .expect("valid");
        let will = StatusMessage::last_will("0.1.0", [1; 16]);
        let mut fleet = Fleet::new(10);
        fleet.record_status("c", "n", &online);
        fleet.record_status("c", "n", &will);
        let agent = fleet.entry("c", "n");
        assert_eq!(agent.online, Some(false));
        assert_eq!(agent.counters.get("alerts_sent"), Some(12));
    }
}
