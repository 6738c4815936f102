//! Drains the kernel ring buffer asynchronously: async-io waits on the ring buffer's
//! fd (epoll), so an idle agent uses no CPU; each wake-up drains everything pending
//! into the pipeline's queue.

use std::io;
use std::sync::atomic::Ordering;

use async_io::Async;
use aya::maps::{MapData, RingBuf};

use std::collections::HashMap;
use std::path::Path;

use crate::events::decode::{Decision, ExecReport};
use crate::events::enrich::{decision_event, monitored_exec_event};
use crate::events::pipeline::{EventQueue, LossLedger};
use crate::host::HostKernel;
use crate::kernel::loader::{DropCounter, KernelEvents};

/// Reads the enforcing probes' decisions. It owns only the ring buffer and the drop
/// counter: the programs stay attached whatever happens to the reader.
pub struct RingbufReader {
    events: Async<RingBuf<MapData>>,
    drops: DropCounter,
    boottime_to_unix_ns: i128,
    /// Records that failed to decode (reported and skipped, never fatal).
    pub malformed: u64,
}

impl RingbufReader {
    pub fn new(events: KernelEvents, boottime_to_unix_ns: i128) -> io::Result<Self> {
        Ok(Self {
            events: Async::new(events.ring)?,
            drops: events.drops,
            boottime_to_unix_ns,
            malformed: 0,
        })
    }

    /// Queues every pending event and publishes the kernel's drop count.
    pub fn drain<const N: usize>(&mut self, queue: &EventQueue<N>, ledger: &LossLedger) -> usize {
        let mut queued = 0;
        // SAFETY: the RingBuf is only advanced, never replaced, so the fd registered
        // with the reactor stays the same.
        let ring = unsafe { self.events.get_mut() };
        while let Some(item) = ring.next() {
            match Decision::try_from(&*item) {
                Ok(decision) => {
                    queue.offer(decision_event(&decision, self.boottime_to_unix_ns));
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
    boottime_to_unix_ns: i128,
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
            boottime_to_unix_ns: host.boottime_to_unix_offset_ns(),
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
                self.boottime_to_unix_ns,
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
    Enforcing(RingbufReader),
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
