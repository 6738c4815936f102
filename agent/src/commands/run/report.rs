//! The running agent's account of itself, every second and every `[status]
//! interval_sec`: the systemd `STATUS=` line when it changes, the state file
//! `edgearmor status` reads, and the retained `online` status with fresh counters.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use edgearmor_mqtt::Counters;
use edgearmor_probe_abi::{
    CLASS_CAPABILITY, CLASS_FILE, CLASS_NETWORK, CLASS_PROCESS, CLASS_SETID, class_bit,
};
use edgearmor_wire::LossSource;
use futures_lite::FutureExt;

use crate::commands::service::ServiceNotifier;
use crate::commands::session::Stopping;
use crate::config::AgentConfig;
use crate::control::reload::Enforced;
use crate::events::pipeline::{SharedLedger, unix_micros};
use crate::sinks::mqtt::StatusHandle;
use crate::sinks::outputs::StatusBoard;
use crate::status::{AgentReport, BrokerReport};

/// How often the `STATUS=` line is brought up to date (broker state changes).
const STATUS_CHECK: Duration = Duration::from_secs(1);

/// The class names `edgearmor status` and `STATUS=` print, in the policy language's words.
pub const CLASS_NAMES: [(u32, &str); 5] = [
    (CLASS_PROCESS, "process"),
    (CLASS_FILE, "file"),
    (CLASS_NETWORK, "network"),
    (CLASS_CAPABILITY, "capabilities"),
    (CLASS_SETID, "setid"),
];

/// The names of the classes set in `mask`.
pub fn class_names(mask: u32) -> Vec<String> {
    CLASS_NAMES
        .iter()
        .filter(|(class, _)| mask & class_bit(*class) != 0)
        .map(|(_, name)| (*name).to_owned())
        .collect()
}

/// What the kernel side started as (fixed for the agent's life).
#[derive(Clone, Debug, Default)]
pub struct KernelFacts {
    /// Why enforcement is unavailable (monitor-only mode).
    pub unavailable: Option<String>,
    pub pin_dir: Option<PathBuf>,
    pub adopted: bool,
    /// The ring buffer's size in bytes, if known.
    pub ring_bytes: Option<u64>,
    /// Its fill level, where its position pages could be mapped.
    pub ring_usage: Option<std::rc::Rc<crate::kernel::ring_usage::RingUsage>>,
}

/// Everything the reports are made from.
pub struct Reporter {
    pub notifier: ServiceNotifier,
    pub board: StatusBoard,
    /// The MQTT thread's status side and the broker's address.
    pub mqtt: Option<(StatusHandle, String)>,
    pub ledger: SharedLedger,
    pub alerts_sent: Arc<AtomicU64>,
    pub kernel: KernelFacts,
    pub started: Instant,
    pub interval: Duration,
    /// `[status] file`, or none.
    pub file: Option<PathBuf>,
    /// A failed write is logged once, until one succeeds.
    file_failed: std::cell::Cell<bool>,
}

impl Reporter {
    pub fn new(config: &AgentConfig, notifier: ServiceNotifier, board: StatusBoard) -> Self {
        Self {
            notifier,
            board,
            mqtt: None,
            ledger: Default::default(),
            alerts_sent: Default::default(),
            kernel: KernelFacts::default(),
            started: Instant::now(),
            interval: Duration::from_secs(config.status.interval_sec.max(1)),
            file: (!config.status.file.as_os_str().is_empty()).then(|| config.status.file.clone()),
            file_failed: Default::default(),
        }
    }

    /// The report as of now.
    pub fn report(&self, enforced: &Enforced<'_>) -> AgentReport {
        let maps = enforced.maps.as_ref();
        let broker = self.mqtt.as_ref().map(|(handle, address)| BrokerReport {
            address: address.clone(),
            connected: handle.link().connected(),
            last_error: handle.link().last_error(),
        });
        AgentReport {
            pid: std::process::id(),
            time: unix_micros() / 1_000_000,
            interval_sec: self.interval.as_secs(),
            mode: match self.kernel.unavailable {
                None => "enforcing",
                Some(_) => "monitor-only",
            }
            .into(),
            detail: self.kernel.unavailable.clone().unwrap_or_default(),
            classes: maps
                .map(|m| class_names(m.class_mask()))
                .unwrap_or_default(),
            policy_set: format!("{:016x}", self.board.borrow().policy_set),
            generation: maps.map(|m| m.generation()),
            pin_dir: self
                .kernel
                .pin_dir
                .as_ref()
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
            adopted: self.kernel.adopted,
            broker,
            counters: self
                .counters(enforced)
                .iter()
                .map(|(n, v)| (n.to_owned(), v))
                .collect(),
        }
    }

    /// The counters of [`edgearmor_mqtt::COUNTERS`] this agent can say.
    pub fn counters(&self, enforced: &Enforced<'_>) -> Counters {
        let mut c = Counters::default();
        let mut set = |name: &str, value: u64| {
            // Every name used here is in COUNTERS (the test of `report` checks).
            let known = c.set(name, value);
            debug_assert!(known, "{name} is not in COUNTERS");
        };
        set("alerts_sent", self.alerts_sent.load(Ordering::Relaxed));
        for (name, source) in [
            ("alerts_lost_ring", LossSource::KernelRingBuffer),
            ("alerts_lost_queue", LossSource::Channel),
            ("alerts_lost_throttle", LossSource::Throttle),
            ("alerts_lost_buffer", LossSource::OfflineBuffer),
            ("alerts_unpersisted_spool", LossSource::Spool),
        ] {
            set(name, self.ledger.reported(source));
        }
        if let Some(bytes) = self.kernel.ring_bytes {
            set("ringbuf_size_bytes", bytes);
        }
        if let Some(ring) = &self.kernel.ring_usage {
            set("ringbuf_used_bytes", ring.used());
        }
        if let Some((handle, _)) = &self.mqtt {
            set("offline_buffered_batches", handle.buffered_batches() as u64);
            set(
                "broker_reconnects",
                handle.link().connects().saturating_sub(1),
            );
        }
        if let Some(maps) = &enforced.maps {
            set("policy_generation", u64::from(maps.generation()));
        }
        set("policy_reloads_failed", enforced.reloads_failed);
        set("uptime_seconds", self.started.elapsed().as_secs());
        c
    }

    /// `READY=1` with the first status line, and the first state file.
    pub fn ready(&self, enforced: &Enforced<'_>) {
        let report = self.report(enforced);
        self.notifier.ready(&report.status_line());
        self.write_file(&report);
    }

    /// Brings `STATUS=` (and the file, when the line changed) up to date.
    fn check(&self, enforced: &Enforced<'_>, last: &mut String) {
        let report = self.report(enforced);
        let line = report.status_line();
        if line != *last {
            self.notifier.status(&line);
            self.write_file(&report);
            *last = line;
        }
    }

    /// The periodic refresh: the file, and the retained status with fresh counters.
    fn refresh(&self, enforced: &Enforced<'_>) {
        let report = self.report(enforced);
        self.write_file(&report);
        let Some((handle, _)) = &self.mqtt else {
            return;
        };
        let birth = {
            let mut status = self.board.borrow_mut();
            status.counters = self.counters(enforced);
            status.unix_secs = report.time;
            status.birth_json()
        };
        handle.refresh(birth);
    }

    /// Every [`STATUS_CHECK`] and every interval until the stop; then the state file
    /// goes (nothing runs to describe).
    pub async fn run(&self, enforced: &RefCell<Enforced<'_>>, stopping: &Stopping) {
        let mut last = String::new();
        let mut next_refresh = Instant::now() + self.interval;
        loop {
            let stop = async {
                stopping.wait().await;
                true
            }
            .or(async {
                async_io::Timer::after(STATUS_CHECK).await;
                false
            })
            .await;
            if stop {
                break;
            }
            self.check(&enforced.borrow(), &mut last);
            if Instant::now() >= next_refresh {
                self.refresh(&enforced.borrow());
                next_refresh = Instant::now() + self.interval;
            }
        }
        self.notifier.stopping();
        if let Some(file) = &self.file {
            let _ = std::fs::remove_file(file);
        }
    }

    /// Writes the state file whole (a temporary file renamed over it), so a reader
    /// never sees half of one; a failure is logged once, until a write succeeds.
    fn write_file(&self, report: &AgentReport) {
        let Some(file) = &self.file else {
            return;
        };
        match write_atomically(file, report) {
            Ok(()) => self.file_failed.set(false),
            Err(e) if !self.file_failed.replace(true) => log::warn!(
                "cannot write the status file {} (edgearmor status will not see this agent): {e}",
                file.display()
            ),
            Err(_) => {}
        }
    }
}

fn write_atomically(file: &Path, report: &AgentReport) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let json = serde_json::to_vec(report).map_err(std::io::Error::other)?;
    let tmp = file.with_extension("json.tmp");
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, file)
}

#[cfg(test)]
mod tests;
