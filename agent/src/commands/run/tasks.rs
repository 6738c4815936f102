//! The running agent's tasks, one per concern. Each waits on its own source and on the
//! stop announcement (checked first, so a busy source cannot starve a stop), and none
//! holds the shared policy set across an await.

use std::cell::RefCell;
use std::time::Duration;

use futures_lite::{FutureExt, StreamExt};

use super::report::Reporter;
use crate::commands::session::Stopping;
use crate::control::reload::{Bundles, Enforced};
use crate::events::pipeline::LossLedger;
use crate::events::ringbuf::{DRAIN_CHUNK, KernelRecords};
use crate::host::ClockSteps;
use crate::sinks::mqtt::Inbound;
use crate::sinks::outputs::AgentQueue;

/// Kernel records into the queue until the stop (after a last drain) or until the
/// ring buffer cannot be waited on. A wall-clock step drains at once, so what was
/// pending gets the offset from before the step and what follows the new one. Drains
/// in bounded steps and yields after each, so the batcher empties the queue between
/// them; a step that stopped early (chunk done, queue full) is followed by another
/// without waiting for the fd.
pub async fn read_kernel(
    source: &mut impl KernelRecords,
    queue: &AgentQueue,
    ledger: &LossLedger,
    stopping: &Stopping,
    clock_steps: &mut ClockSteps,
) {
    let mut more = false;
    loop {
        let readable = if more {
            // Records are waiting: no wait for the fd, but a stop is still seen.
            (!stopping.stopped()).then_some(Ok(()))
        } else {
            async {
                stopping.wait().await;
                None
            }
            .or(async { Some(source.readable().await) })
            .or(async {
                clock_steps.next().await;
                Some(Ok(()))
            })
            .await
        };
        more = source.drain(queue, ledger).more;
        match readable {
            None => {
                // The last drain: what the ring holds now, within a bound (a kernel
                // that keeps writing must not hold the stop back).
                for _ in 0..LAST_DRAIN_STEPS {
                    if !more {
                        break;
                    }
                    futures_lite::future::yield_now().await;
                    more = source.drain(queue, ledger).more;
                }
                return;
            }
            Some(Ok(())) => {
                // A ring buffer that is always readable must not starve the other tasks.
                futures_lite::future::yield_now().await;
            }
            Some(Err(e)) => {
                log::error!("ring buffer wait failed: {e}");
                return;
            }
        }
    }
}

/// Drain steps at the stop: the largest ring buffer, in [`DRAIN_CHUNK`] records of the
/// smallest size, with room to spare.
const LAST_DRAIN_STEPS: usize =
    2 * edgearmor_probe_abi::EVENTS_RING_BYTES as usize / (8 * DRAIN_CHUNK);

/// A reload on every SIGHUP, inside systemd's `RELOADING=1` ... `READY=1`.
pub async fn reload_on_hangup(
    hangups: &mut async_signal::Signals,
    enforced: &RefCell<Enforced<'_>>,
    reporter: &Reporter,
    stopping: &Stopping,
) {
    loop {
        let hangup = async {
            stopping.wait().await;
            false
        }
        .or(async { hangups.next().await.is_some() })
        .await;
        if !hangup {
            return;
        }
        log::info!("SIGHUP: reloading policies");
        reporter.notifier.reloading();
        enforced.borrow_mut().reload_logged();
        // Applied or refused, a set is in force again: the line says which.
        let line = reporter.report(&enforced.borrow()).status_line();
        reporter.notifier.reloaded(&line);
    }
}

/// A reload whenever a policy file changed, looked at every `every` (never without).
pub async fn reload_on_change(
    every: Option<Duration>,
    enforced: &RefCell<Enforced<'_>>,
    stopping: &Stopping,
) {
    let Some(every) = every else {
        return;
    };
    loop {
        let due = async {
            stopping.wait().await;
            false
        }
        .or(async {
            async_io::Timer::after(every).await;
            true
        })
        .await;
        if !due {
            return;
        }
        enforced.borrow_mut().reload_if_changed();
    }
}

/// Every bundle the broker delivers, checked and applied (or refused) and reported.
pub async fn apply_bundles(
    bundles: Option<Bundles>,
    inbox: Option<async_channel::Receiver<Inbound>>,
    enforced: &RefCell<Enforced<'_>>,
    stopping: &Stopping,
) {
    let (Some(mut bundles), Some(inbox)) = (bundles, inbox) else {
        return;
    };
    loop {
        let message = async {
            stopping.wait().await;
            None
        }
        .or(async { inbox.recv().await.ok() })
        .await;
        let Some(message) = message else {
            return;
        };
        bundles.offer(&message, &mut enforced.borrow_mut());
    }
}

/// How often the running agent looks for tamper reports (refused `unload`s).
pub const TAMPER_POLL: Duration = Duration::from_secs(1);

/// Tamper reports from `state_dir` into the queue as alerts, once at start and then
/// every [`TAMPER_POLL`], while the kernel says locked (the self-protection policy id
/// is the lock's; unlocked, none are made and any left wait for a locked agent).
pub async fn deliver_tamper_reports(
    state_dir: &std::path::Path,
    pin_dir: &std::path::Path,
    queue: &AgentQueue,
    stopping: &Stopping,
) {
    use crate::control::tamper::{self, TamperReport};
    loop {
        use crate::commands::unload::{LivePins, Pins};
        // The marker's (this agent's lock) comes first; read only when there is
        // something to deliver.
        let states = if tamper::pending(state_dir) {
            LivePins.lock_states(pin_dir).unwrap_or_default()
        } else {
            Vec::new()
        };
        let locked = states
            .into_iter()
            .find(|s| s.locked == edgearmor_probe_abi::LOCKED);
        if let Some(state) = locked {
            let now_us = crate::events::pipeline::unix_micros();
            let drained = tamper::drain(
                state_dir,
                &mut |report| queue.offer(report.event(state.policy_id)),
                &|count| TamperReport::summary(count, now_us),
            );
            match drained {
                Ok(0) => {}
                Ok(n) => log::info!("delivered {n} tamper report(s)"),
                Err(e) => log::warn!("tamper reports: {e}"),
            }
        }
        let due = async {
            stopping.wait().await;
            false
        }
        .or(async {
            async_io::Timer::after(TAMPER_POLL).await;
            true
        })
        .await;
        if !due {
            return;
        }
    }
}
