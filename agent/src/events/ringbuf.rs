//! Drains the kernel ring buffer asynchronously: async-io waits on the ring buffer's
//! fd (epoll), so an idle agent uses no CPU; each wake-up drains everything pending
//! into the pipeline's queue.

use std::io;
use std::sync::atomic::Ordering;

use async_io::Async;
use aya::maps::{MapData, RingBuf};

use std::collections::HashMap;
use std::path::Path;

use crate::events::decode::{Decision, ExecReport, absolute_invoked};
use crate::events::enrich::{decision_event, monitored_exec_event};
use crate::events::pipeline::{EventQueue, LossLedger};
use crate::events::wall_time::BootToWall;
use crate::host::HostKernel;
use crate::kernel::loader::{DropCounter, KernelEvents};

/// The wall-clock offset of kernel stamps, sampled from the host.
struct KernelTime<'h> {
    host: &'h dyn HostKernel,
    clock: BootToWall,
}

impl<'h> KernelTime<'h> {
    fn new(host: &'h dyn HostKernel) -> Self {
        let boot = host.boottime_ns();
        Self {
            host,
            clock: BootToWall::new(boot, host.wall_clock_ns() - boot),
        }
    }

    /// Samples the offset now (before a drain: every pending record is older).
    fn sample(&mut self) {
        let boot = self.host.boottime_ns();
        let offset = self.host.wall_clock_ns() - boot;
        if let Some(step) = self.clock.observe(boot, offset) {
            log::info!(
                "the wall clock stepped by {:+.3} s: events from before keep their times",
                step as f64 / 1e9
            );
        }
    }

    fn offset_at(&self, boot_ns: u64) -> i128 {
        self.clock.offset_at(i128::from(boot_ns))
    }
}

/// Reads the enforcing probes' decisions. It owns only the ring buffer and the drop
/// counter: the programs stay attached whatever happens to the reader.
pub struct RingbufReader<'h> {
    /// Working directories of processes that exec'd a multi-call binary by a
    /// relative name.
    host: &'h dyn HostKernel,
    events: Async<RingBuf<MapData>>,
    drops: DropCounter,
    time: KernelTime<'h>,
    /// Records that failed to decode (reported and skipped, never fatal).
    pub malformed: u64,
}

impl<'h> RingbufReader<'h> {
    pub fn new(events: KernelEvents, host: &'h dyn HostKernel) -> io::Result<Self> {
        Ok(Self {
            host,
            events: Async::new(events.ring)?,
            drops: events.drops,
            time: KernelTime::new(host),
            malformed: 0,
        })
    }

    /// Queues every pending event and publishes the kernel's drop count.
    pub fn drain<const N: usize>(&mut self, queue: &EventQueue<N>, ledger: &LossLedger) -> usize {
        let mut queued = 0;
        self.time.sample();
        // SAFETY: the RingBuf is only advanced, never replaced, so the fd registered
        // with the reactor stays the same.
        let ring = unsafe { self.events.get_mut() };
        while let Some(item) = ring.next() {
            match Decision::try_from(&*item) {
                Ok(mut decision) => {
                    if !decision.invoked.is_empty() && !decision.by_arguments {
                        let cwd = self.host.process_cwd(decision.tid);
                        decision.invoked = absolute_invoked(&decision.invoked, cwd.as_deref());
                    }
                    let offset = self.time.offset_at(decision.boot_ns);
                    queue.offer(decision_event(&decision, offset));
                    queued += 1;
                }
                Err(e) => {
                    self.malformed += 1;
                    log::warn!("skipping malformed kernel event: {e}");
                }
            }
        }
        ledger
            .kernel_ring_buffer
            .store(self.drops.total(), Ordering::Relaxed);
        queued
    }

    /// Waits until the kernel has written something.
    pub async fn readable(&self) -> io::Result<()> {
        self.events.readable().await
    }
}

/// Monitor-only mode: every exec the kernel reports is resolved to a real path and,
/// when it is a watched executable, queued as an audit alert.
pub struct ExecWatcher<'h> {
    events: Async<RingBuf<MapData>>,
    drops: DropCounter,
    host: &'h dyn HostKernel,
    time: KernelTime<'h>,
    /// Real path of each watched executable -> the rule watching it.
    watched: HashMap<String, u32>,
    pub malformed: u64,
}

impl<'h> ExecWatcher<'h> {
    pub fn new(
        events: KernelEvents,
        host: &'h dyn HostKernel,
        watched: HashMap<String, u32>,
    ) -> io::Result<Self> {
        Ok(Self {
            events: Async::new(events.ring)?,
            drops: events.drops,
            host,
            time: KernelTime::new(host),
            watched,
            malformed: 0,
        })
    }

    /// The executable an exec ran: what execve was given, resolved; for a relative
    /// name, the process's own executable (if it is still there).
    fn resolve(&self, r: &ExecReport) -> Option<String> {
        let real = if r.filename.starts_with('/') {
            self.host.real_path(Path::new(&r.filename))
        } else {
            self.host.process_executable(r.tgid)
        };
        real.map(|p| p.to_string_lossy().into_owned())
            .or_else(|| r.filename.starts_with('/').then(|| r.filename.clone()))
    }

    pub fn drain<const N: usize>(&mut self, queue: &EventQueue<N>, ledger: &LossLedger) -> usize {
        let mut queued = 0;
        let mut reports = Vec::new();
        self.time.sample();
        // SAFETY: the RingBuf is only advanced, never replaced, so the fd registered
        // with the reactor stays the same.
        let ring = unsafe { self.events.get_mut() };
        while let Some(item) = ring.next() {
            match ExecReport::try_from(&*item) {
                Ok(r) => reports.push(r),
                Err(e) => {
                    self.malformed += 1;
                    log::warn!("skipping malformed kernel exec event: {e}");
                }
            }
        }
        for r in reports {
            let Some(path) = self.resolve(&r) else {
                continue;
            };
            let Some(rule_id) = self.watched.get(&path).copied() else {
                continue;
            };
            let parent = self
                .host
                .process_executable(r.ppid)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            queue.offer(monitored_exec_event(
                &r,
                &path,
                &parent,
                rule_id,
                self.time.offset_at(r.boot_ns),
            ));
            queued += 1;
        }
        ledger
            .kernel_ring_buffer
            .store(self.drops.total(), Ordering::Relaxed);
        queued
    }

    pub async fn readable(&self) -> io::Result<()> {
        self.events.readable().await
    }
}

/// Where kernel events come from: the enforcing probes, or the exec watcher of
/// monitor-only mode.
pub enum KernelSource<'h> {
    Enforcing(RingbufReader<'h>),
    Monitoring(ExecWatcher<'h>),
}

impl KernelSource<'_> {
    /// Waits until the kernel has written something.
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            KernelSource::Enforcing(r) => r.readable().await,
            KernelSource::Monitoring(w) => w.readable().await,
        }
    }

    /// Queues every pending event and publishes the kernel's drop count.
    pub fn drain<const N: usize>(&mut self, queue: &EventQueue<N>, ledger: &LossLedger) -> usize {
        match self {
            KernelSource::Enforcing(r) => r.drain(queue, ledger),
            KernelSource::Monitoring(w) => w.drain(queue, ledger),
        }
    }

    /// Records that failed to decode so far.
    pub fn malformed(&self) -> u64 {
        match self {
            KernelSource::Enforcing(r) => r.malformed,
            KernelSource::Monitoring(w) => w.malformed,
        }
    }
}
