//! `edgearmor send-test-alerts`: N synthetic, clearly named audit alerts through the
//! same pipeline and outputs as real ones, delivered, then exit. Proves a gateway's
//! path to its broker without a violation and without a BPF-capable kernel.

use std::process::ExitCode;
use std::time::Duration;

use edgearmor_wire::{
    Action, Alert, Data, Event, EventBody, Operation, Outcome, PolicyRef, SetIdSyscall, Source,
};
use futures_lite::{FutureExt, StreamExt};

use super::service::ServiceNotifier;
use super::session::{Session, stop_channel, stop_signals};
use crate::config::AgentConfig;
use crate::control::policy_table::PolicyCatalog;
use crate::events::enrich::bounded;
use crate::events::pipeline::{Batcher, unix_micros};
use crate::host::LiveKernel;
use crate::sinks::outputs::{AgentQueue, batch_policy};

/// A synthetic alert: audit, clearly named, about this agent's own process.
fn test_alert(n: u64) -> Event {
    let me = std::env::current_exe()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    Event {
        time_us: unix_micros(),
        body: EventBody::Alert(Alert {
            pid: std::process::id(),
            ppid: 0,
            uid: 0,
            process: bounded(&me),
            parent_process: heapless::String::new(),
            source: Source::Process,
            policy: PolicyRef::Id(0),
            operation: Operation::Syscall,
            resource: bounded(&format!("test alert {n}")),
            data: Data::SetId {
                syscall: SetIdSyscall::Setgid,
                id: n as u32,
            },
            action: Action::Audit,
            result: Outcome::Passed,
            cwd: Default::default(),
        }),
    }
}

pub fn send_test_alerts(config: AgentConfig, count: u64, interval: Duration) -> ExitCode {
    let host = LiveKernel;
    let mut signals = match stop_signals() {
        Ok(s) => s,
        Err(e) => return super::fail(1, e),
    };
    // Policy id 0 names the test alerts.
    let mut catalog = PolicyCatalog::default();
    catalog.intern(edgearmor_wire::PolicyMeta {
        name: bounded("edgearmor-test-alert"),
        severity: 1,
        tags: bounded("edgearmor,test"),
        message: bounded("synthetic alert from edgearmor send-test-alerts"),
    });
    let enforcement = Err("send-test-alerts does not enforce".into());
    let Session {
        agent,
        policies,
        mut outputs,
        ledger,
    } = match Session::start(&config, catalog.snapshot(), &host, enforcement) {
        Ok(s) => s,
        Err(e) => return super::fail(1, e),
    };
    eprintln!("edgearmor: ready: sending {count} test alert(s)");
    // A oneshot service (or a test) sees the same notifications as `run` gives.
    let notifier = ServiceNotifier::from_env();
    notifier.ready(&format!("sending {count} test alert(s)"));
    let (announcer, stopping) = stop_channel();
    let queue = AgentQueue::default();
    let mut batcher = Batcher::new(agent, policies.hash, batch_policy(&config));
    let offered = std::cell::Cell::new(0u64);
    // The executor borrows the pipeline; its block ends those borrows.
    {
        let executor = smol::LocalExecutor::new();
        let (produced_tx, produced) = async_channel::bounded::<()>(1);
        let produce = executor.spawn(async {
            // Dropped when this task ends: the batcher's signal to deliver what is left.
            let _produced = produced_tx;
            for n in 0..count {
                queue.offer(test_alert(n));
                offered.set(n + 1);
                let pause = async {
                    async_io::Timer::after(interval).await;
                    false
                };
                if pause.or(async { signals.next().await.is_some() }).await {
                    break;
                }
            }
        });
        let deliver = executor.spawn(batcher.run(&queue, &ledger, &mut outputs, async move {
            let _ = produced.recv().await;
        }));
        let pings = executor.spawn(notifier.watchdog(&stopping));
        smol::block_on(executor.run(async {
            produce.await;
            deliver.await;
            drop(announcer);
            pings.await;
        }));
    }
    let produced = batcher.next_seq() - 1;
    eprintln!(
        "edgearmor: produced {produced} event(s) from {} test alert(s), delivering",
        offered.get()
    );
    notifier.stopping();
    outputs.shutdown();
    eprintln!("edgearmor: done");
    ExitCode::SUCCESS
}
