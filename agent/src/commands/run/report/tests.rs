//! The reporter over a monitor-only agent's parts (no kernel maps): what systemd is
//! told, what the status file holds, and that the stop removes the file.

use std::cell::RefCell;
use std::rc::Rc;

use super::*;
use crate::control::policy_state::PolicyState;
use crate::events::pipeline::{BatchPolicy, BatchSink, Batcher, EventQueue, LossLedger};
use crate::host::LiveKernel;
use crate::host::notify::ServiceManager;
use crate::status::AgentStatus;

#[derive(Clone, Default)]
struct Recorder(Rc<RefCell<Vec<String>>>);

impl ServiceManager for Recorder {
    fn notify(&self, message: &str) -> std::io::Result<()> {
        self.0.borrow_mut().push(message.to_owned());
        Ok(())
    }
}

struct Discard;
impl BatchSink for Discard {
    fn deliver(&mut self, _batch: &edgearmor_wire::EncodedBatch<'_>) {}
}

fn agent_status() -> AgentStatus {
    AgentStatus {
        agent_version: "0.1.0".into(),
        boot_id: [7; 16],
        kernel: "test".into(),
        enforcement: Err("no bpf".into()),
        policy_set: 0xab,
        unix_secs: 1,
        labels: Default::default(),
        counters: Default::default(),
    }
}

#[test]
fn ready_status_file_and_stop() {
    let dir = std::env::temp_dir().join(format!("edgearmor-report-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let file = dir.join("run").join("status.json");
    let mut config = AgentConfig::default();
    config.status.file = file.clone();
    config.status.interval_sec = 5;
    let sent = Recorder::default();
    let notifier = ServiceNotifier::new(Some(Box::new(sent.clone())), None);
    let mut reporter = Reporter::new(&config, notifier, Rc::new(RefCell::new(agent_status())));
    reporter.kernel.unavailable = Some("no bpf".into());
    reporter.kernel.ring_bytes = Some(65536);
    // Three events the offline buffer dropped, reported by the batcher.
    let ledger: SharedLedger = Arc::new(LossLedger::default());
    ledger.offline_dropped(3, 1, 3);
    let agent = edgearmor_wire::AgentId {
        cluster: heapless::String::try_from("c").expect("short"),
        node: heapless::String::try_from("n").expect("short"),
        boot_id: [7; 16],
    };
    let mut batcher = Batcher::new(agent, 0xab, BatchPolicy::default());
    batcher.collect_losses(&EventQueue::<1>::default(), &ledger, 0);
    batcher.flush(&mut Discard);
    reporter.ledger = ledger;
    reporter.alerts_sent = batcher.alerts_sent_handle();
    let state = PolicyState::new(&config, "n".into(), Default::default(), [1, 2], None);
    let enforced = Enforced {
        host: &LiveKernel,
        state,
        maps: None,
        updates: Default::default(),
        batch_policy_set: Default::default(),
        reloads_failed: 2,
    };

    reporter.ready(&enforced);
    assert_eq!(
        sent.0.borrow().as_slice(),
        ["READY=1\nSTATUS=monitor-only (no bpf); policy set 00000000000000ab; no broker"]
    );
    let written: AgentReport =
        serde_json::from_slice(&std::fs::read(&file).expect("status file")).expect("json");
    assert_eq!(written.pid, std::process::id());
    assert_eq!(
        (written.mode.as_str(), written.interval_sec),
        ("monitor-only", 5)
    );
    let counter = |name: &str| written.counters.get(name).copied();
    assert_eq!(counter("alerts_lost_buffer"), Some(3));
    assert_eq!(counter("alerts_sent"), Some(0));
    assert_eq!(counter("policy_reloads_failed"), Some(2));
    assert_eq!(counter("ringbuf_size_bytes"), Some(65536));
    // Monitor-only: no kernel tables, so no generation; no broker, so no broker counters.
    assert_eq!(counter("policy_generation"), None);
    assert_eq!(counter("broker_reconnects"), None);
    for name in written.counters.keys() {
        assert!(
            edgearmor_mqtt::counter_help(name).is_some(),
            "{name} not in COUNTERS"
        );
    }

    // The stop: STOPPING=1, and the file goes with the agent.
    let enforced = RefCell::new(enforced);
    let (announcer, stopping) = crate::commands::session::stop_channel();
    drop(announcer);
    smol::block_on(reporter.run(&enforced, &stopping));
    assert_eq!(
        sent.0.borrow().last().map(String::as_str),
        Some("STOPPING=1\nSTATUS=stopping")
    );
    assert!(!file.exists());
    let _ = std::fs::remove_dir_all(&dir);
}
