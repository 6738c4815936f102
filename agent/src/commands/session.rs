//! What `run` and `send-test-alerts` share: the agent's identity on the wire, its
//! outputs, the loss ledger, the signals that stop it, and how the pipeline's tasks
//! learn that it is stopping.

use crate::config::AgentConfig;
use crate::control::policy_table::PolicySet;
use crate::events::pipeline::{SharedLedger, unix_micros};
use crate::host::HostKernel;
use crate::sinks::outputs::{self, Outputs};
use crate::status::AgentStatus;
use edgearmor_wire::AgentId;

/// Identity, policy table, status and outputs of one agent process.
pub struct Session {
    pub agent: AgentId,
    pub policies: PolicySet,
    pub outputs: Outputs,
    pub ledger: SharedLedger,
}

/// `HostName` and the node topic level: `node` from the configuration, else `uname -n`.
pub fn node_name(config: &AgentConfig, host: &dyn HostKernel) -> String {
    if config.node.is_empty() {
        host.node_name()
    } else {
        config.node.clone()
    }
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
        let node = node_name(config, host);
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
}
