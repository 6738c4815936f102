//! What `run` and `send-test-alerts` share: the agent's identity on the wire, its
//! outputs, the loss ledger, the signals that stop it, and how the pipeline's tasks
//! learn that it is stopping.

use crate::config::AgentConfig;
use crate::control::policy_table::PolicySet;
use crate::events::pipeline::{SharedLedger, unix_micros};
use crate::host::HostKernel;
use crate::sinks::outputs::{self, Outputs};
use crate::status::AgentStatus;
use edgearmor_mqtt::topic::{TopicLevelError, validate_level};
use edgearmor_wire::AgentId;

/// Identity, policy table, status and outputs of one agent process.
pub struct Session {
    pub agent: AgentId,
    pub policies: PolicySet,
    pub outputs: Outputs,
    pub ledger: SharedLedger,
}

/// Where the node name comes from when the configuration has none.
pub const UNAME_ORIGIN: &str =
    "uname -n (node is not set: set it in agent.toml or with --host-name)";

/// `HostName` and the node topic level: `node` from the configuration (checked when
/// it was read), else `uname -n`, refused when it cannot be one topic level (a host
/// name with `/`, `+` or `#` would publish on, or subscribe to, other topics).
pub fn node_name(config: &AgentConfig, host: &dyn HostKernel) -> Result<String, TopicLevelError> {
    let (node, origin) = if config.node.is_empty() {
        (host.node_name(), UNAME_ORIGIN)
    } else {
        (config.node.clone(), "node")
    };
    validate_level(&node, origin)?;
    Ok(node)
}

impl Session {
    /// A fresh boot id, the birth message saying what `enforcement` is, and the
    /// outputs the configuration asks for (connected in the background).
    pub fn start(
        config: &AgentConfig,
        policies: PolicySet,
        host: &dyn HostKernel,
        enforcement: Result<(), String>,
    ) -> Result<Self, String> {
        let node = node_name(config, host).map_err(|e| e.to_string())?;
        validate_level(&config.cluster, "cluster").map_err(|e| e.to_string())?;
        let key = host
            .random_key()
            .map_err(|e| format!("cannot read random bytes: {e}"))?;
        let mut boot_id = [0u8; 16];
        boot_id[..8].copy_from_slice(&key[0].to_le_bytes());
        boot_id[8..].copy_from_slice(&key[1].to_le_bytes());
        let bounded = |s: &str, what: &str| {
            heapless::String::try_from(s)
                .map_err(|_| format!("{what} `{s}` is longer than 64 bytes"))
        };
        let agent = AgentId {
            cluster: bounded(&config.cluster, "cluster")?,
            node: bounded(&node, "node name")?,
            boot_id,
        };
        let status = AgentStatus {
            agent_version: env!("CARGO_PKG_VERSION").into(),
            boot_id,
            kernel: host.release(),
            enforcement,
            policy_set: policies.hash,
            unix_secs: unix_micros() / 1_000_000,
            labels: config.labels.clone(),
            counters: Default::default(),
        };
        let ledger = outputs::ledger();
        let outputs = Outputs::build(config, &agent, &policies, &status, &ledger)
            .map_err(|e| e.to_string())?;
        Ok(Self {
            agent,
            policies,
            outputs,
            ledger,
        })
    }
}

/// SIGTERM and SIGINT.
pub fn stop_signals() -> Result<async_signal::Signals, String> {
    async_signal::Signals::new([async_signal::Signal::Term, async_signal::Signal::Int])
        .map_err(|e| format!("cannot install signal handlers: {e}"))
}

/// SIGHUP.
pub fn reload_signals() -> Result<async_signal::Signals, String> {
    async_signal::Signals::new([async_signal::Signal::Hup])
        .map_err(|e| format!("cannot install the SIGHUP handler: {e}"))
}

/// Tells every task that holds a [`Stopping`] that the agent stops: dropping this
/// value is the announcement.
pub struct StopAnnouncer {
    _sender: async_channel::Sender<()>,
}

/// A task's view of the stop announcement.
#[derive(Clone)]
pub struct Stopping(async_channel::Receiver<()>);

/// A new announcer and the view tasks wait on.
pub fn stop_channel() -> (StopAnnouncer, Stopping) {
    let (tx, rx) = async_channel::bounded(1);
    (StopAnnouncer { _sender: tx }, Stopping(rx))
}

impl Stopping {
    /// Resolves once the announcer is gone.
    pub async fn wait(&self) {
        // Nothing is ever sent: `recv` returns only when the channel closes.
        let _ = self.0.recv().await;
    }

    /// Whether the announcer is gone, without waiting.
    pub fn stopped(&self) -> bool {
        self.0.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::path::{Path, PathBuf};

    /// A host whose `uname -n` is what the test says.
    struct NamedHost(&'static str);

    impl HostKernel for NamedHost {
        fn read(&self, _path: &Path) -> io::Result<Vec<u8>> {
            Err(io::ErrorKind::NotFound.into())
        }
        fn mount_securityfs(&self) -> io::Result<()> {
            Err(io::ErrorKind::Unsupported.into())
        }
        fn release(&self) -> String {
            "test".into()
        }
        fn node_name(&self) -> String {
            self.0.into()
        }
        fn process_executable(&self, _tgid: u32) -> Option<PathBuf> {
            None
        }
        fn real_path(&self, _path: &Path) -> Option<PathBuf> {
            None
        }
        fn boottime_to_unix_offset_ns(&self) -> i128 {
            0
        }
        fn random_key(&self) -> io::Result<[u64; 2]> {
            Ok([1, 2])
        }
        fn is_bpffs(&self, _path: &Path) -> bool {
            false
        }
    }

    #[test]
    fn the_uname_fallback_is_refused_when_it_cannot_be_a_topic_level() {
        let config = AgentConfig::default();
        assert_eq!(
            node_name(&config, &NamedHost("gw-12")).as_deref(),
            Ok("gw-12")
        );
        for bad in ["gw/12", "gw+12", "gw#12", ""] {
            let err = node_name(&config, &NamedHost(bad)).expect_err(bad);
            assert_eq!(
                (err.value.as_str(), err.origin.as_str()),
                (bad, UNAME_ORIGIN)
            );
            let message = err.to_string();
            assert!(
                message.starts_with("uname -n (node is not set")
                    && message.contains(&format!("{bad:?} cannot be an MQTT topic level")),
                "{message}"
            );
        }
        // A configured node wins over the host name, whatever the host name is.
        let named = AgentConfig {
            node: "gw-7".into(),
            ..AgentConfig::default()
        };
        assert_eq!(node_name(&named, &NamedHost("a/b")).as_deref(), Ok("gw-7"));
    }

    #[test]
    fn a_session_does_not_start_on_a_host_name_that_would_change_its_topics() {
        let config = AgentConfig {
            output: crate::config::OutputConfig { stdout: false },
            ..AgentConfig::default()
        };
        let policies = crate::control::policy_table::PolicyCatalog::default().snapshot();
        let err = Session::start(&config, policies, &NamedHost("evil/+/#"), Ok(()))
            .err()
            .expect("refused");
        assert!(
            err.contains("uname -n") && err.contains("\"evil/+/#\""),
            "{err}"
        );
    }
}
