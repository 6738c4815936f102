//! Wiring: builds the outputs a configuration asks for (stdout, MQTT with its offline
//! buffer and spool), and runs the pipeline with a producer (the kernel reader, or
//! the synthetic alerts of `send-test-alerts`) until the producer stops.

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use edgearmor_alert::expand::PolicyLookup;
use edgearmor_wire::{AgentId, EncodedBatch};
use futures_lite::FutureExt;

use crate::config::{AgentConfig, ConfigError};
use crate::control::policy_table::PolicySet;
use crate::events::pipeline::{
    BatchPolicy, BatchSink, Batcher, EventQueue, LossLedger, SharedLedger,
};
use crate::sinks::mqtt::{MqttError, MqttPublisher, SessionMessages};
use crate::sinks::offline::{OfflineBuffer, Spool, SpoolError};
use crate::sinks::stdout::JsonLinesSink;
use crate::status::AgentStatus;

/// The current birth message's contents: the outputs change its policy set on a
/// reload, the status task its counters and time.
pub type StatusBoard = Rc<RefCell<AgentStatus>>;

/// Events between the kernel reader and the batcher.
pub const QUEUE_EVENTS: usize = 256;
pub type AgentQueue = EventQueue<QUEUE_EVENTS>;

#[derive(Debug)]
pub enum DaemonError {
    Config(ConfigError),
    Spool(SpoolError),
    Mqtt(MqttError),
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DaemonError::Config(e) => e.fmt(f),
            DaemonError::Spool(e) => e.fmt(f),
            // The one line `run` prints: the causes (file, value) included.
            DaemonError::Mqtt(e) => edgearmor_mqtt::ErrorChain(e).fmt(f),
        }
    }
}

impl std::error::Error for DaemonError {}

/// A policy table waiting to reach the outputs: a reload leaves it here and the
/// outputs pick it up before they deliver their next batch, so no batch naming the
/// new policy set goes out before its table.
#[derive(Clone, Default)]
pub struct PolicyUpdates(Arc<std::sync::Mutex<Option<PolicySet>>>);

impl PolicyUpdates {
    pub fn publish(&self, set: PolicySet) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(set);
    }

    fn take(&self) -> Option<PolicySet> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Every sink the configuration enables.
pub struct Outputs {
    stdout: Option<JsonLinesSink<std::io::Stdout>>,
    pub mqtt: Option<MqttPublisher>,
    shutdown_grace: Duration,
    updates: PolicyUpdates,
    /// Shared with the status task, which refreshes its counters and time.
    status: StatusBoard,
    agent: AgentId,
    /// Where bundle reports go (with MQTT).
    pub bundle_reported_topic: Option<String>,
}

impl BatchSink for Outputs {
    fn deliver(&mut self, batch: &EncodedBatch<'_>) {
        if let Some(set) = self.updates.take() {
            self.switch_policies(&set);
        }
        if let Some(s) = self.stdout.as_mut() {
            s.deliver(batch);
        }
        if let Some(m) = self.mqtt.as_mut() {
            m.deliver(batch);
        }
    }
}

impl Outputs {
    pub fn build(
        config: &AgentConfig,
        agent: &AgentId,
        policies: &PolicySet,
        status: &AgentStatus,
        ledger: &SharedLedger,
    ) -> Result<Self, DaemonError> {
        let stdout = config.output.stdout.then(|| {
            let lookup = PolicyLookup::from_policies(policies.hash, &policies.policies).ok();
            JsonLinesSink::new(std::io::stdout(), lookup)
        });
        let mut bundle_reported_topic = None;
        let mqtt = if config.mqtt.broker.is_empty() {
            None
        } else {
            let spool = match &config.offline.spool_dir {
                Some(dir) => {
                    Some(Spool::open(dir, config.offline.spool_bytes).map_err(DaemonError::Spool)?)
                }
                None => None,
            };
            let buffer = OfflineBuffer::new(config.offline.buffer_bytes, spool);
            let topics = config.mqtt.topics(&agent.cluster, &agent.node);
            bundle_reported_topic = Some(topics.bundle_reported.clone());
            let fleet = !config.fleet.public_keys.is_empty();
            let subscriptions = if fleet {
                vec![topics.fleet_bundle.clone(), topics.node_bundle.clone()]
            } else {
                Vec::new()
            };
            // Room for a bundle over the limit, so it is refused (and reported) by the
            // agent rather than dropping the connection.
            let max_inbound = if fleet {
                config
                    .fleet
                    .bundle_max_bytes
                    .saturating_mul(2)
                    .saturating_add(4096)
            } else {
                0
            };
            let session = SessionMessages {
                birth: status.birth_json(),
                will: status.will_json(),
                policy_tables: policies.encode(agent),
                retained: Vec::new(),
                fresh_status: None,
            };
            Some(
                MqttPublisher::start(
                    &config.mqtt,
                    agent,
                    session,
                    buffer,
                    ledger.clone(),
                    subscriptions,
                    max_inbound,
                )
                .map_err(DaemonError::Mqtt)?,
            )
        };
        Ok(Self {
            stdout,
            mqtt,
            shutdown_grace: Duration::from_secs(config.mqtt.shutdown_grace_secs),
            updates: PolicyUpdates::default(),
            status: Rc::new(RefCell::new(status.clone())),
            agent: agent.clone(),
            bundle_reported_topic,
        })
    }

    /// Where a reload leaves the new policy table for these outputs.
    pub fn policy_updates(&self) -> PolicyUpdates {
        self.updates.clone()
    }

    fn switch_policies(&mut self, set: &PolicySet) {
        if let Some(s) = self.stdout.as_mut() {
            // The catalog only grows, so the new table also names every older id.
            s.set_policies(PolicyLookup::from_policies(set.hash, &set.policies).ok());
        }
        let birth = {
            let mut status = self.status.borrow_mut();
            status.policy_set = set.hash;
            status.birth_json()
        };
        if let Some(m) = self.mqtt.as_mut() {
            m.update_session(birth, set.encode(&self.agent));
        }
    }

    /// The birth message's contents, shared with the status task.
    pub fn status_board(&self) -> StatusBoard {
        self.status.clone()
    }

    /// Delivers what MQTT still holds (within `mqtt.shutdown_grace_secs`) and stops it.
    pub fn shutdown(self) {
        if let Some(m) = self.mqtt {
            m.shutdown(self.shutdown_grace);
        }
    }
}

/// The batcher's settings from the configuration.
pub fn batch_policy(config: &AgentConfig) -> BatchPolicy {
    BatchPolicy {
        max_events: config.pipeline.batch_max_events,
        flush_interval: config.flush_interval(),
        max_alerts_per_sec: config.throttle.max_alerts_per_sec,
        throttle_sec: config.throttle.throttle_sec,
    }
}

/// Runs `producer` and the batcher side by side on this thread. When the producer
/// returns, the batcher delivers what is left and returns too.
pub async fn run_pipeline(
    queue: &AgentQueue,
    ledger: &LossLedger,
    batcher: &mut Batcher,
    sink: &mut dyn BatchSink,
    producer: impl std::future::Future<Output = ()>,
) {
    let (done_tx, done_rx) = async_channel::bounded::<()>(1);
    let produce = async move {
        producer.await;
        // Closing the channel is the batcher's stop signal.
        drop(done_tx);
        std::future::pending::<()>().await;
    };
    let stop = async move {
        let _ = done_rx.recv().await;
    };
    batcher.run(queue, ledger, sink, stop).or(produce).await;
}

/// A fresh loss ledger.
pub fn ledger() -> SharedLedger {
    Arc::new(LossLedger::default())
}
