//! `edgearmor run`: the agent. [`Agent::start`] loads the policies, makes the kernel
//! enforce them (or, where it cannot and `enforcement = "auto"`, watch execs only) and
//! connects the outputs; [`Agent::run`] then runs one task per concern on a smol
//! executor until SIGTERM or SIGINT:
//!
//! - kernel events: ring buffer → queue ([`tasks::read_kernel`]);
//! - batches: queue → throttle, batch → sinks (the batcher);
//! - reloads on SIGHUP, reloads when policy files change, fleet bundles from MQTT
//!   ([`tasks`]), all three acting on the one [`Enforced`] policy set;
//! - the agent's account of itself ([`report`]): systemd `STATUS=`, the state file of
//!   `edgearmor status`, the retained status with counters; and the systemd watchdog
//!   pings, from this same executor so a wedged loop stops them.
//! - tamper reports (refused `unload`s) into the queue ([`tasks::deliver_tamper_reports`]).
//!
//! The loaded programs and links are a field of their own ([`AttachedProbes`]): no
//! task owns them, so no task ending can drop enforcement.

pub mod report;
mod start;
pub(crate) mod tasks;

use std::cell::RefCell;
use std::process::ExitCode;

use futures_lite::{FutureExt, StreamExt};

use super::session::{Stopping, stop_channel};
use crate::cli::ConfigOrigin;
use crate::config::AgentConfig;
use crate::control::reload::{Bundles, Enforced};
use crate::control::setid_rules::SetidRuleSet;
use crate::events::pipeline::{Batcher, SharedLedger};
use crate::events::ringbuf::KernelSource;
use crate::host::{ClockSteps, LiveKernel};
use crate::kernel::loader::AttachedProbes;
use crate::sinks::outputs::{AgentQueue, Outputs};

/// `edgearmor run` with this configuration and these setid rules.
pub fn run(config: AgentConfig, rules: SetidRuleSet, origin: &ConfigOrigin) -> ExitCode {
    let host = LiveKernel;
    match Agent::start(&host, config, rules, origin) {
        Ok(agent) => agent.run(),
        Err(e) => super::fail(e.code, e.message),
    }
}

/// Why the agent did not start, and the exit status that says so.
#[derive(Debug)]
pub struct StartError {
    pub code: u8,
    pub message: String,
}

impl StartError {
    /// Usage, configuration, input or I/O: exit status 1.
    fn input(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: message.into(),
        }
    }

    /// This kernel cannot enforce (or watch): exit status 2.
    fn kernel(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: message.into(),
        }
    }
}

/// A started agent: each field is one running part.
pub struct Agent<'h> {
    config: AgentConfig,
    /// systemd notifications, the state file, the status refresh.
    reporter: report::Reporter,
    /// Keeps the programs (or the monitor's tracepoint) attached.
    probes: AttachedProbes,
    /// Kernel records: the enforcing probes' ring buffer or the exec watcher's.
    source: KernelSource<'h>,
    /// The policy set in force and how to change it.
    enforced: Enforced<'h>,
    /// Signed bundles from the fleet (with `[fleet] public_keys` and MQTT).
    bundles: Option<Bundles>,
    queue: AgentQueue,
    batcher: Batcher,
    outputs: Outputs,
    ledger: SharedLedger,
    stop_signals: async_signal::Signals,
    reload_signals: async_signal::Signals,
    /// Wall-clock steps, so kernel stamps keep the right times across them.
    clock_steps: ClockSteps,
}

impl Agent<'_> {
    /// Runs every task until SIGTERM or SIGINT (or the ring buffer fails), then
    /// delivers what is pending within `mqtt.shutdown_grace_secs`.
    pub fn run(self) -> ExitCode {
        let Agent {
            config,
            reporter,
            probes,
            mut source,
            enforced,
            bundles,
            queue,
            mut batcher,
            mut outputs,
            ledger,
            mut stop_signals,
            mut reload_signals,
            mut clock_steps,
        } = self;
        let inbox = outputs.mqtt.as_ref().map(|m| m.inbox());
        let poll = (config.policy_poll_ms > 0 && enforced.state.source.is_some())
            .then(|| std::time::Duration::from_millis(config.policy_poll_ms));
        // Probes attached (or adopted), policies applied, outputs started.
        reporter.ready(&enforced);
        let enforced = RefCell::new(enforced);
        let (announcer, stopping) = stop_channel();
        let (kernel_done_tx, kernel_done) = stop_channel();
        // The executor borrows every part; its block ends those borrows.
        {
            let executor = smol::LocalExecutor::new();
            let kernel = executor.spawn(async {
                let _done = kernel_done_tx;
                tasks::read_kernel(&mut source, &queue, &ledger, &stopping, &mut clock_steps).await;
            });
            let reloads = executor.spawn(tasks::reload_on_hangup(
                &mut reload_signals,
                &enforced,
                &reporter,
                &stopping,
            ));
            let reports = executor.spawn(reporter.run(&enforced, &stopping));
            let pings = executor.spawn(reporter.notifier.watchdog(&stopping));
            let polls = executor.spawn(tasks::reload_on_change(poll, &enforced, &stopping));
            let offers = executor.spawn(tasks::apply_bundles(bundles, inbox, &enforced, &stopping));
            let tamper = executor.spawn(tasks::deliver_tamper_reports(
                &config.fleet.state_dir,
                &config.pin_dir,
                &queue,
                &stopping,
            ));
            let batches = executor.spawn(batcher.run(&queue, &ledger, &mut outputs, {
                let kernel_done: Stopping = kernel_done.clone();
                async move { kernel_done.wait().await }
            }));
            smol::block_on(executor.run(async {
                // Stop on a signal, or when the kernel reader gave up.
                async {
                    stop_signals.next().await;
                }
                .or(kernel_done.wait())
                .await;
                drop(announcer);
                kernel.await;
                reloads.await;
                reports.await;
                pings.await;
                polls.await;
                offers.await;
                tamper.await;
                batches.await;
            }));
        }
        outputs.shutdown();
        eprintln!(
            "edgearmor: stopped ({} malformed kernel events skipped)",
            source.malformed()
        );
        // Last: without pins, this detaches the programs.
        drop(probes);
        ExitCode::SUCCESS
    }
}
