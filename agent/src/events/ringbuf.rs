//! Drains the kernel ring buffer asynchronously: async-io waits on the ring buffer's
//! fd (epoll), so an idle agent uses no CPU. Each drain step takes at most
//! [`DRAIN_CHUNK`] records and never more than the queue has room for, and the reader
//! yields between steps: the batcher empties the queue while records wait in the ring
//! (which is larger), instead of the queue dropping a burst the ring could hold.

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

/// Records taken per drain step at most, so that a busy ring (the kernel writing on
/// other CPUs while the reader drains) cannot keep the reader from yielding.
pub const DRAIN_CHUNK: usize = 64;

/// What one drain step did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drained {
    pub queued: usize,
    /// Stopped at [`DRAIN_CHUNK`] or at a full queue: records may still be pending.
    pub more: bool,
}

/// Where records come from: the kernel's ring buffer, or a test's ring. The seam
/// between the kernel and the pipeline.
pub trait RecordRing {
    /// Hands the next pending record to `take` (and consumes it); false when none is
    /// pending.
    fn next_record(&mut self, take: &mut dyn FnMut(&[u8])) -> bool;
}

impl RecordRing for RingBuf<MapData> {
    fn next_record(&mut self, take: &mut dyn FnMut(&[u8])) -> bool {
        match self.next() {
            Some(item) => {
                take(&item);
                true
            }
            None => false,
        }
    }
}

/// A source of kernel records for the agent's reader task (`read_kernel`).
pub trait KernelRecords {
    /// Waits until the kernel has written something.
    fn readable(&self) -> impl std::future::Future<Output = io::Result<()>>;
    /// One bounded drain step into `queue`; publishes the kernel's drop count.
    fn drain<const N: usize>(&mut self, queue: &EventQueue<N>, ledger: &LossLedger) -> Drained;
}

/// Decodes up to [`DRAIN_CHUNK`] decisions from `ring` into `queue`, taking a record
/// only while the queue has room for it (what stays is kept by the ring).
pub(crate) fn drain_decisions<R: RecordRing + ?Sized, const N: usize>(
    ring: &mut R,
    host: &dyn HostKernel,
    time: &KernelTime<'_>,
    queue: &EventQueue<N>,
    malformed: &mut u64,
) -> Drained {
    let mut drained = Drained::default();
    let mut taken = 0;
    loop {
        if taken == DRAIN_CHUNK || queue.free() == 0 {
            drained.more = true;
            return drained;
        }
        let more = ring.next_record(&mut |record| match Decision::try_from(record) {
            Ok(mut decision) => {
                if !decision.invoked.is_empty() && !decision.by_arguments {
                    let cwd = host.process_cwd(decision.tid);
                    decision.invoked = absolute_invoked(&decision.invoked, cwd.as_deref());
                }
                let offset = time.offset_at(decision.boot_ns);
                queue.offer(decision_event(&decision, offset));
                drained.queued += 1;
            }
            Err(e) => {
                *malformed += 1;
                log::warn!("skipping malformed kernel event: {e}");
            }
        });
        if !more {
            return drained;
        }
        taken += 1;
    }
}

/// The wall-clock offset of kernel stamps, sampled from the host.
pub(crate) struct KernelTime<'h> {
    host: &'h dyn HostKernel,
    clock: BootToWall,
}

impl<'h> KernelTime<'h> {
    pub(crate) fn new(host: &'h dyn HostKernel) -> Self {
        let boot = host.boottime_ns();
        Self {
            host,
            clock: BootToWall::new(boot, host.wall_clock_ns() - boot),
        }
    }

    /// Samples the offset now (before a drain: every pending record is older).
    pub(crate) fn sample(&mut self) {
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

    /// One bounded drain step ([`drain_decisions`]); publishes the kernel's drop count.
    pub fn drain<const N: usize>(&mut self, queue: &EventQueue<N>, ledger: &LossLedger) -> Drained {
        self.time.sample();
        // SAFETY: the RingBuf is only advanced, never replaced, so the fd registered
        // with the reactor stays the same.
        let ring = unsafe { self.events.get_mut() };
        let drained = drain_decisions(ring, self.host, &self.time, queue, &mut self.malformed);
        ledger
            .kernel_ring_buffer
            .store(self.drops.total(), Ordering::Relaxed);
        drained
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

    /// One bounded drain step: at most [`DRAIN_CHUNK`] records, and no more than the
    /// queue has room for (each record makes one event at most).
    pub fn drain<const N: usize>(&mut self, queue: &EventQueue<N>, ledger: &LossLedger) -> Drained {
        let mut drained = Drained::default();
        let mut reports = Vec::new();
        self.time.sample();
        let room = queue.free().min(DRAIN_CHUNK);
        // SAFETY: the RingBuf is only advanced, never replaced, so the fd registered
        // with the reactor stays the same.
        let ring = unsafe { self.events.get_mut() };
        let mut taken = 0;
        while taken < room {
            let more = ring.next_record(&mut |record| match ExecReport::try_from(record) {
                Ok(r) => reports.push(r),
                Err(e) => {
                    self.malformed += 1;
                    log::warn!("skipping malformed kernel exec event: {e}");
                }
            });
            if !more {
                break;
            }
            taken += 1;
        }
        drained.more = taken == room;
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
            drained.queued += 1;
        }
        ledger
            .kernel_ring_buffer
            .store(self.drops.total(), Ordering::Relaxed);
        drained
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

impl KernelRecords for KernelSource<'_> {
    async fn readable(&self) -> io::Result<()> {
        match self {
            KernelSource::Enforcing(r) => r.readable().await,
            KernelSource::Monitoring(w) => w.readable().await,
        }
    }

    fn drain<const N: usize>(&mut self, queue: &EventQueue<N>, ledger: &LossLedger) -> Drained {
        match self {
            KernelSource::Enforcing(r) => r.drain(queue, ledger),
            KernelSource::Monitoring(w) => w.drain(queue, ledger),
        }
    }
}

impl KernelSource<'_> {
    /// Records that failed to decode so far.
    pub fn malformed(&self) -> u64 {
        match self {
            KernelSource::Enforcing(r) => r.malformed,
            KernelSource::Monitoring(w) => w.malformed,
        }
    }
}

#[cfg(test)]
mod tests;
