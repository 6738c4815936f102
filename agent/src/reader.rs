//! Drains the kernel ring buffer asynchronously: async-io waits on the ring buffer's
//! fd (epoll), so an idle agent uses no CPU; each wake-up drains everything pending.

use std::io;

use async_io::Async;
use aya::Ebpf;
use aya::maps::{MapData, RingBuf};
use futures_lite::StreamExt;

use crate::alerts::AlertBuilder;
use crate::events::SetidDecision;
use crate::loader::{DropCounter, LoadedProbes};
use crate::rules::SetidRuleSet;
use crate::sink::AlertSink;

pub struct RingbufReader {
    events: Async<RingBuf<MapData>>,
    drops: DropCounter,
    /// Keeps the programs attached while the reader runs.
    _ebpf: Ebpf,
    reported_drops: u64,
    /// Records that failed to decode (reported and skipped, never fatal).
    pub malformed: u64,
}

impl RingbufReader {
    pub fn new(probes: LoadedProbes) -> io::Result<Self> {
        Ok(Self {
            events: Async::new(probes.events)?,
            drops: probes.drops,
            _ebpf: probes.ebpf,
            reported_drops: 0,
            malformed: 0,
        })
    }

    /// Delivers every pending event, then reports new kernel-side drops.
    pub fn drain(
        &mut self,
        rules: &SetidRuleSet,
        builder: &AlertBuilder,
        sink: &mut dyn AlertSink,
    ) -> io::Result<usize> {
        let mut delivered = 0;
        // SAFETY: the RingBuf is only advanced, never replaced, so the fd registered
        // with the reactor stays the same.
        let ring = unsafe { self.events.get_mut() };
        while let Some(item) = ring.next() {
            match SetidDecision::try_from(&*item) {
                Ok(decision) => {
                    sink.deliver(&builder.setid(&decision, rules))?;
                    delivered += 1;
                }
                Err(e) => {
                    self.malformed += 1;
                    log::warn!("skipping malformed kernel event: {e}");
                }
            }
        }
        let dropped = self.drops.total();
        if dropped > self.reported_drops {
            let now = boottime_ns();
            sink.deliver(&builder.ring_buffer_loss(dropped - self.reported_drops, now))?;
            self.reported_drops = dropped;
        }
        sink.flush()?;
        Ok(delivered)
    }

    /// Runs until one of `stop` yields, then drains what is left and returns.
    pub async fn run(
        &mut self,
        rules: &SetidRuleSet,
        builder: &AlertBuilder,
        sink: &mut dyn AlertSink,
        stop: &mut async_signal::Signals,
    ) -> io::Result<()> {
        loop {
            let stopping = futures_lite::future::or(
                async { self.events.readable().await.map(|()| false) },
                async {
                    stop.next().await;
                    Ok(true)
                },
            )
            .await?;
            self.drain(rules, builder, sink)?;
            if stopping {
                return Ok(());
            }
        }
    }
}

fn boottime_ns() -> u64 {
    // SAFETY: timespec is plain old data.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is valid and writable; CLOCK_BOOTTIME exists on every Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}
