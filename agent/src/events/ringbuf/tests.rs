//! The reader through its seam ([`RecordRing`], [`KernelRecords`]) and the agent's own
//! reader task and pipeline, with a ring that behaves like the kernel's under a burst.

use std::collections::VecDeque;

use edgearmor_probe_abi::{DecisionEvent, EVENTS_RING_BYTES, LSM_SETID_ID, SETID_KIND_GID};
use edgearmor_wire::{EncodedBatch, EventBody};

use super::*;
use crate::commands::run::tasks::read_kernel;
use crate::commands::session::{StopAnnouncer, stop_channel};
use crate::events::decode::tests::{bytes_of, setid_raw};
use crate::events::pipeline::{BatchPolicy, BatchSink, Batcher};
use crate::host::{ClockSteps, LiveKernel};
use crate::sinks::outputs::{AgentQueue, run_pipeline};

/// A ring of the kernel's size and record accounting (8-byte header, 8-byte aligned)
/// that a producer on other CPUs keeps full: every record taken is replaced at once
/// while the burst lasts. A reader that drains "until empty" never stops.
struct BusyRing {
    records: VecDeque<Vec<u8>>,
    bytes: usize,
    made: u64,
    burst: u64,
}

const RECORD_BYTES: usize = 8 + DecisionEvent::SIZE.div_ceil(8) * 8;

impl BusyRing {
    fn new(burst: u64) -> Self {
        let mut ring = Self {
            records: VecDeque::new(),
            bytes: 0,
            made: 0,
            burst,
        };
        ring.refill();
        ring
    }

    fn refill(&mut self) {
        while self.made < self.burst && self.bytes + RECORD_BYTES <= EVENTS_RING_BYTES as usize {
            let mut raw = setid_raw(SETID_KIND_GID, LSM_SETID_ID);
            raw.tgid = self.made as u32;
            self.records.push_back(bytes_of(&raw));
            self.bytes += RECORD_BYTES;
            self.made += 1;
        }
    }

    fn exhausted(&self) -> bool {
        self.made == self.burst && self.records.is_empty()
    }
}

impl RecordRing for BusyRing {
    fn next_record(&mut self, take: &mut dyn FnMut(&[u8])) -> bool {
        let Some(record) = self.records.pop_front() else {
            return false;
        };
        self.bytes -= RECORD_BYTES;
        take(&record);
        self.refill();
        true
    }
}

/// The reader's source over a [`BusyRing`]; announces the stop once the burst is read.
struct BurstSource<'h> {
    ring: BusyRing,
    host: &'h LiveKernel,
    time: KernelTime<'h>,
    malformed: u64,
    steps: u64,
    stop: Option<StopAnnouncer>,
}

impl KernelRecords for BurstSource<'_> {
    fn readable(&self) -> impl std::future::Future<Output = io::Result<()>> {
        let pending = !self.ring.records.is_empty();
        async move {
            if !pending {
                std::future::pending::<()>().await;
            }
            Ok(())
        }
    }

    fn drain<const N: usize>(&mut self, queue: &EventQueue<N>, _ledger: &LossLedger) -> Drained {
        self.time.sample();
        self.steps += 1;
        let drained = drain_decisions(
            &mut self.ring,
            self.host,
            &self.time,
            queue,
            &mut self.malformed,
        );
        if self.ring.exhausted() {
            self.stop = None;
        }
        drained
    }
}

#[derive(Default)]
struct CountAlerts(Vec<u32>);

impl BatchSink for CountAlerts {
    fn deliver(&mut self, batch: &EncodedBatch<'_>) {
        for event in batch.events() {
            if let EventBody::Alert(a) = event.body {
                self.0.push(a.pid);
            }
        }
    }
}

/// 10,000 decisions written as fast as the ring takes them, through the 256-event
/// queue, with throttling off: every one arrives, none is dropped at the queue, in
/// order, and the reader took them in bounded steps.
#[test]
fn a_burst_through_a_busy_ring_loses_nothing_at_the_queue() {
    // The queue holds its 256 events inline (as the agent's does, on its 8 MiB main
    // stack): more than a test thread's default stack takes in a debug build.
    std::thread::Builder::new()
        .stack_size(32 << 20)
        .spawn(burst)
        .expect("test thread starts")
        .join()
        .expect("burst test passed");
}

fn burst() {
    const BURST: u64 = 10_000;
    let host = LiveKernel;
    let (announcer, stopping) = stop_channel();
    let mut source = BurstSource {
        ring: BusyRing::new(BURST),
        host: &host,
        time: KernelTime::new(&host),
        malformed: 0,
        steps: 0,
        stop: Some(announcer),
    };
    assert!(
        source.ring.records.len() < BURST as usize,
        "the burst is larger than the ring holds"
    );
    let queue = AgentQueue::default();
    let ledger = LossLedger::default();
    let agent = edgearmor_wire::AgentId {
        cluster: heapless::String::try_from("c").expect("fits"),
        node: heapless::String::try_from("n").expect("fits"),
        boot_id: [3; 16],
    };
    let mut batcher = Batcher::new(
        agent,
        0,
        BatchPolicy {
            max_alerts_per_sec: 0,
            ..BatchPolicy::default()
        },
    );
    let mut sink = CountAlerts::default();
    let mut clock_steps = ClockSteps::none();
    futures_lite::future::block_on(run_pipeline(
        &queue,
        &ledger,
        &mut batcher,
        &mut sink,
        read_kernel(&mut source, &queue, &ledger, &stopping, &mut clock_steps),
    ));
    assert_eq!(queue.dropped(), 0, "events dropped at the queue");
    assert_eq!(source.malformed, 0);
    assert_eq!(sink.0.len() as u64, BURST, "alerts delivered");
    let in_order = sink.0.iter().enumerate().all(|(i, pid)| *pid == i as u32);
    assert!(in_order, "alerts out of order");
    assert!(
        source.steps >= BURST / DRAIN_CHUNK as u64,
        "{} drain steps for {BURST} records: not bounded by DRAIN_CHUNK",
        source.steps
    );
}
