//! Drains the kernel ring buffer asynchronously: async-io waits on the ring buffer's
//! fd (epoll), so an idle agent uses no CPU; each wake-up drains everything pending
//! into the pipeline's queue.

use std::io;
use std::sync::atomic::Ordering;

use async_io::Async;
use aya::Ebpf;
use aya::maps::{MapData, RingBuf};

use crate::alerts::setid_event;
use crate::events::SetidDecision;
use crate::loader::{DropCounter, LoadedProbes};
use crate::pipeline::{EventQueue, LossLedger};

pub struct RingbufReader {
    events: Async<RingBuf<MapData>>,
    drops: DropCounter,
    /// Keeps the programs attached while the reader runs.
    _ebpf: Ebpf,
    boottime_to_unix_ns: i128,
    /// Records that failed to decode (reported and skipped, never fatal).
    pub malformed: u64,
}

impl RingbufReader {
    pub fn new(probes: LoadedProbes, boottime_to_unix_ns: i128) -> io::Result<Self> {
        Ok(Self {
            events: Async::new(probes.events)?,
            drops: probes.drops,
            _ebpf: probes.ebpf,
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
            match SetidDecision::try_from(&*item) {
                Ok(decision) => {
                    queue.offer(setid_event(&decision, self.boottime_to_unix_ns));
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
