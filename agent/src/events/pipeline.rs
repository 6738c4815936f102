//! The user-space event path between the kernel reader and the sinks:
//!
//! ```text
//! reader ──try_send──► EventQueue<N> ──► Batcher (throttle, sequence numbers,
//!   (counts drops)    (embassy-sync)      flush on size or time, loss reports) ──► BatchSink(s)
//! ```
//!
//! Everything is bounded: the queue's capacity is in its type, a batch holds at most
//! [`MAX_BATCH_EVENTS`]. A full queue hands the event back and the drop is counted;
//! every count (kernel ring buffer, queue, offline buffer, throttle) reaches the sinks
//! as a `Loss` event with its own sequence number, so a consumer can account for every
//! missing number.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use edgearmor_wire::{
    AgentId, BatchEncoder, EncodedBatch, Event, EventBody, Loss, LossSource, MAX_BATCH_EVENTS,
};
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::channel::Channel;
use futures_lite::FutureExt;

use crate::events::throttle::{AlertThrottle, ThrottleVerdict};

/// The queue between the kernel reader and the batcher, `N` events deep.
pub struct EventQueue<const N: usize> {
    channel: Channel<CriticalSectionRawMutex, Event, N>,
    dropped: AtomicU64,
}

impl<const N: usize> Default for EventQueue<N> {
    fn default() -> Self {
        Self {
            channel: Channel::new(),
            dropped: AtomicU64::new(0),
        }
    }
}

impl<const N: usize> EventQueue<N> {
    /// Queues `event`, or counts it as dropped when the queue is full.
    pub fn offer(&self, event: Event) -> bool {
        match self.channel.try_send(event) {
            Ok(()) => true,
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Events the queue has room for now.
    pub fn free(&self) -> usize {
        self.channel.free_capacity()
    }

    /// Events refused because the queue was full, since creation.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Counters of events lost outside the batcher's sight (kernel ring buffer, offline
/// buffer, spool), which it turns into `Loss` events.
#[derive(Default)]
pub struct LossLedger {
    pub kernel_ring_buffer: AtomicU64,
    /// Losses with sequence ranges (offline buffer, spool), in order.
    offline: std::sync::Mutex<Vec<Loss>>,
    /// Loss reports that were themselves in a batch the offline buffer dropped: sent
    /// again (what they said is lost otherwise), not counted again.
    carried: std::sync::Mutex<Vec<Loss>>,
    /// Events of every loss reported so far, by [`LossSource`] (the status counters).
    reported: [AtomicU64; 5],
}

/// Ranged losses kept before they are merged (bounded, like everything else).
const MAX_PENDING_OFFLINE_LOSSES: usize = 64;

/// Adds `loss` to a bounded list of losses waiting to be reported: merged into the
/// previous report of its source when contiguous, or (so the list stays bounded) into
/// the last of its source when full; the count stays exact either way.
fn push_ranged(pending: &mut Vec<Loss>, loss: Loss) {
    let full = pending.len() >= MAX_PENDING_OFFLINE_LOSSES;
    let mergeable =
        |l: &Loss| l.source == loss.source && (full || l.last_seq + 1 == loss.first_seq);
    let index = if full {
        pending.iter().rposition(mergeable)
    } else {
        pending
            .len()
            .checked_sub(1)
            .filter(|&i| mergeable(&pending[i]))
    };
    if let Some(last) = index.and_then(|i| pending.get_mut(i)) {
        last.count += loss.count;
        last.first_seq = last.first_seq.min(loss.first_seq);
        last.last_seq = last.last_seq.max(loss.last_seq);
        return;
    }
    pending.push(loss);
}

impl LossLedger {
    /// Records batches the offline buffer had to drop: `count` events, `first..=last`.
    pub fn offline_dropped(&self, count: u64, first_seq: u64, last_seq: u64) {
        self.ranged(LossSource::OfflineBuffer, count, first_seq, last_seq);
    }

    /// Records batches the spool could not persist (they stay in memory):
    /// `count` events, `first..=last`.
    pub fn spool_unpersisted(&self, count: u64, first_seq: u64, last_seq: u64) {
        self.ranged(LossSource::Spool, count, first_seq, last_seq);
    }

    fn ranged(&self, source: LossSource, count: u64, first_seq: u64, last_seq: u64) {
        let mut pending = self.offline.lock().unwrap_or_else(|p| p.into_inner());
        push_ranged(
            &mut pending,
            Loss {
                source,
                count,
                first_seq,
                last_seq,
            },
        );
    }

    /// Events lost from `source` in the loss reports made so far, since the start.
    pub fn reported(&self, source: LossSource) -> u64 {
        self.reported[loss_index(source)].load(Ordering::Relaxed)
    }

    fn count_reported(&self, source: LossSource, count: u64) {
        self.reported[loss_index(source)].fetch_add(count, Ordering::Relaxed);
    }

    /// Keeps the loss reports inside a batch the offline buffer is dropping (its
    /// encoded `payload`), so they are reported again with the next losses; bounded
    /// as the ranged losses are ([`push_ranged`]).
    pub fn carry_lost_reports(&self, payload: &[u8]) {
        let Ok(edgearmor_wire::Message::Batch(batch)) = edgearmor_wire::decode(payload) else {
            return;
        };
        let mut carried = self.carried.lock().unwrap_or_else(|p| p.into_inner());
        for event in &batch.events {
            if let EventBody::Loss(loss) = &event.body {
                push_ranged(&mut carried, *loss);
            }
        }
    }

    pub(crate) fn take_offline(&self) -> Vec<Loss> {
        std::mem::take(&mut *self.offline.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

fn loss_index(source: LossSource) -> usize {
    match source {
        LossSource::KernelRingBuffer => 0,
        LossSource::Channel => 1,
        LossSource::OfflineBuffer => 2,
        LossSource::Throttle => 3,
        LossSource::Spool => 4,
    }
}

/// Where finished batches go: stdout, MQTT, tests. A batch arrives encoded (its
/// payload is what MQTT publishes); sinks that print events decode them from it.
pub trait BatchSink {
    fn deliver(&mut self, batch: &EncodedBatch<'_>);
}

/// Batcher settings.
#[derive(Clone, Debug)]
pub struct BatchPolicy {
    /// Flush when this many events are waiting (at most [`MAX_BATCH_EVENTS`]).
    pub max_events: usize,
    /// Flush a non-empty batch at least this often.
    pub flush_interval: Duration,
    pub max_alerts_per_sec: u32,
    pub throttle_sec: u32,
}

impl Default for BatchPolicy {
    fn default() -> Self {
        Self {
            max_events: MAX_BATCH_EVENTS,
            flush_interval: Duration::from_millis(200),
            max_alerts_per_sec: 0,
            throttle_sec: 30,
        }
    }
}

/// Assigns sequence numbers and cuts the event stream into batches.
pub struct Batcher {
    agent: AgentId,
    /// Shared so a policy reload can switch it while the batcher runs.
    policy_set: Arc<AtomicU64>,
    next_seq: u64,
    policy: BatchPolicy,
    /// The batch being filled, encoded event by event: events are never copied into
    /// the batcher, out of it or into the MQTT message (a wire `Event` is over a
    /// kilobyte in memory, its encoding typically under a hundred bytes).
    current: BatchEncoder,
    /// Alerts in `current`.
    current_alerts: u64,
    /// Events of batches that could not be encoded, not yet reported.
    unsent: u64,
    throttle: AlertThrottle,
    reported_queue_drops: u64,
    reported_kernel_drops: u64,
    /// Loss events waiting for room in a batch.
    pending_system: std::collections::VecDeque<Event>,
    /// Alerts handed to the sink so far (the `alerts_sent` counter).
    alerts_sent: Arc<AtomicU64>,
}

impl Batcher {
    pub fn new(agent: AgentId, policy_set: u64, policy: BatchPolicy) -> Self {
        let throttle = AlertThrottle::new(
            policy.max_alerts_per_sec,
            policy.throttle_sec,
            Instant::now(),
        );
        Self {
            agent,
            policy_set: Arc::new(AtomicU64::new(policy_set)),
            next_seq: 1,
            policy: BatchPolicy {
                max_events: policy.max_events.clamp(1, MAX_BATCH_EVENTS),
                ..policy
            },
            current: BatchEncoder::new(),
            current_alerts: 0,
            unsent: 0,
            throttle,
            reported_queue_drops: 0,
            reported_kernel_drops: 0,
            pending_system: Default::default(),
            alerts_sent: Arc::default(),
        }
    }

    /// Alerts handed to the sink so far, readable while the batcher runs.
    pub fn alerts_sent_handle(&self) -> Arc<AtomicU64> {
        self.alerts_sent.clone()
    }

    /// The policy-set id batches carry from their next flush on; a reload stores
    /// the new set's id here after the outputs know its table.
    pub fn policy_set_handle(&self) -> Arc<AtomicU64> {
        self.policy_set.clone()
    }

    /// The sequence number the next event will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Adds one event (alerts pass the throttle first); flushes when full.
    pub fn push(&mut self, event: &Event, now: Instant, sink: &mut dyn BatchSink) {
        if matches!(event.body, EventBody::Alert(_)) {
            match self.throttle.check(now) {
                ThrottleVerdict::Pass => {}
                ThrottleVerdict::Drop => return,
                ThrottleVerdict::StartDropping => {
                    let announce = Event {
                        time_us: event.time_us,
                        body: EventBody::AlertThreshold(self.throttle.threshold_event()),
                    };
                    self.add(&announce, sink);
                    return;
                }
            }
        }
        self.add(event, sink);
    }

    fn add(&mut self, event: &Event, sink: &mut dyn BatchSink) {
        if self.current.push(event).is_err() {
            self.flush(sink);
            // An empty batch always has room.
            let _ = self.current.push(event);
        }
        if matches!(event.body, EventBody::Alert(_)) {
            self.current_alerts += 1;
        }
        if self.current.len() >= self.policy.max_events {
            self.flush(sink);
        }
    }

    /// Turns new drop counts into `Loss` events (they are events too: they get
    /// sequence numbers and cannot themselves be dropped).
    pub fn collect_losses<const N: usize>(
        &mut self,
        queue: &EventQueue<N>,
        ledger: &LossLedger,
        now_us: u64,
    ) {
        let mut losses = Vec::new();
        let queue_drops = queue.dropped();
        let unsent = std::mem::take(&mut self.unsent);
        if queue_drops > self.reported_queue_drops || unsent > 0 {
            losses.push((
                LossSource::Channel,
                queue_drops - self.reported_queue_drops + unsent,
                0,
                0,
            ));
            self.reported_queue_drops = queue_drops;
        }
        let kernel_drops = ledger.kernel_ring_buffer.load(Ordering::Relaxed);
        if kernel_drops > self.reported_kernel_drops {
            losses.push((
                LossSource::KernelRingBuffer,
                kernel_drops - self.reported_kernel_drops,
                0,
                0,
            ));
            self.reported_kernel_drops = kernel_drops;
        }
        let throttled = self.throttle.take_dropped();
        if throttled > 0 {
            losses.push((LossSource::Throttle, throttled, 0, 0));
        }
        for l in ledger.take_offline() {
            losses.push((l.source, l.count, l.first_seq, l.last_seq));
        }
        let fresh = losses.len();
        for l in std::mem::take(&mut *ledger.carried.lock().unwrap_or_else(|p| p.into_inner())) {
            losses.push((l.source, l.count, l.first_seq, l.last_seq));
        }
        for (i, (source, count, first_seq, last_seq)) in losses.into_iter().enumerate() {
            if i < fresh {
                ledger.count_reported(source, count);
            }
            self.pending_system.push_back(Event {
                time_us: now_us,
                body: EventBody::Loss(Loss {
                    source,
                    count,
                    first_seq,
                    last_seq,
                }),
            });
        }
    }

    /// Sends the current batch (with any pending loss reports) to `sink`.
    pub fn flush(&mut self, sink: &mut dyn BatchSink) {
        loop {
            while !self.current.is_full() {
                match self.pending_system.pop_front() {
                    Some(e) => {
                        let _ = self.current.push(&e);
                    }
                    None => break,
                }
            }
            if self.current.is_empty() {
                return;
            }
            let first_seq = self.next_seq;
            self.next_seq += self.current.len() as u64;
            self.alerts_sent
                .fetch_add(self.current_alerts, Ordering::Relaxed);
            let policy_set = self.policy_set.load(Ordering::Relaxed);
            match self.current.finish(&self.agent, policy_set, first_seq) {
                Ok(batch) => sink.deliver(&batch),
                // The header's room is its largest encoding, so this does not happen;
                // if it did, the events are counted as lost (at the queue's count).
                Err(e) => {
                    log::error!("cannot encode batch {first_seq}: {e}");
                    self.unsent += self.current.len() as u64;
                }
            }
            self.current.clear();
            self.current_alerts = 0;
            if self.pending_system.is_empty() {
                return;
            }
        }
    }

    /// Runs until `stop` resolves: receives events, flushes on size and on time.
    pub async fn run<const N: usize>(
        &mut self,
        queue: &EventQueue<N>,
        ledger: &LossLedger,
        sink: &mut dyn BatchSink,
        stop: impl std::future::Future<Output = ()>,
    ) {
        // Lives one loop iteration on the stack; boxing would allocate per event.
        #[allow(clippy::large_enum_variant)]
        enum Next {
            Event(Event),
            Tick,
            Stop,
        }
        let mut stop = std::pin::pin!(stop);
        // One periodic timer for the whole run: an event waits at most one interval
        // for its batch to go, however many follow it (a timer made afresh per event
        // would move the deadline with every event and hold a steady stream back).
        let mut ticks = async_io::Timer::interval(self.policy.flush_interval);
        loop {
            let next = async { Next::Event(queue.channel.receive().await) }
                .or(async {
                    (&mut ticks).await;
                    Next::Tick
                })
                .or(async {
                    (&mut stop).await;
                    Next::Stop
                });
            let stopping = match next.await {
                Next::Event(event) => {
                    self.push(&event, Instant::now(), sink);
                    continue;
                }
                Next::Tick => false,
                Next::Stop => true,
            };
            // Timer or stop: take what is queued, report losses, flush.
            while let Ok(event) = queue.channel.try_receive() {
                self.push(&event, Instant::now(), sink);
            }
            self.collect_losses(queue, ledger, unix_micros());
            self.flush(sink);
            if stopping {
                // Delivering the last batches may itself have cost older ones (a full
                // offline buffer): report until nothing new is lost.
                for _ in 0..4 {
                    self.collect_losses(queue, ledger, unix_micros());
                    if self.pending_system.is_empty() {
                        break;
                    }
                    self.flush(sink);
                }
                return;
            }
        }
    }
}

/// Wall-clock microseconds since the Unix epoch (0 before it), from
/// [`crate::host::wall_clock_ns`]: for stamping events and reports only, never for
/// timing (the batcher and throttle take `Instant`s).
pub fn unix_micros() -> u64 {
    (crate::host::wall_clock_ns() / 1_000).max(0) as u64
}

/// Shared handle to the loss counters.
pub type SharedLedger = Arc<LossLedger>;

#[cfg(test)]
mod tests {
    use super::*;
    use edgearmor_wire::{
        Action, Alert, Batch, Data, Operation, Outcome, PolicyRef, SetIdSyscall, Source,
    };

    fn agent() -> AgentId {
        AgentId {
            cluster: heapless::String::try_from("c").expect("fits"),
            node: heapless::String::try_from("n").expect("fits"),
            boot_id: [1; 16],
        }
    }

    pub(crate) fn alert(pid: u32) -> Event {
        Event {
            time_us: 1,
            body: EventBody::Alert(Alert {
                pid,
                ppid: 1,
                uid: 0,
                process: heapless::String::try_from("/usr/sbin/sshd").expect("fits"),
                parent_process: heapless::String::new(),
                source: Source::Process,
                policy: PolicyRef::Id(0),
                operation: Operation::Syscall,
                resource: heapless::String::new(),
                data: Data::SetId {
                    syscall: SetIdSyscall::Setgid,
                    id: 0,
                },
                action: Action::Block,
                result: Outcome::OperationNotPermitted,
                cwd: Default::default(),
            }),
        }
    }

    #[derive(Default)]
    struct Collect(Vec<Batch>);
    impl BatchSink for Collect {
        fn deliver(&mut self, batch: &EncodedBatch<'_>) {
            self.0.push(batch.to_batch());
        }
    }

    #[test]
    fn sequence_numbers_are_contiguous_across_batches() {
        let mut b = Batcher::new(
            agent(),
            0,
            BatchPolicy {
                max_events: 3,
                ..Default::default()
            },
        );
        let mut sink = Collect::default();
        let now = Instant::now();
        for pid in 0..7 {
            b.push(&alert(pid), now, &mut sink);
        }
        b.flush(&mut sink);
        let firsts: Vec<(u64, usize)> = sink
            .0
            .iter()
            .map(|b| (b.first_seq, b.events.len()))
            .collect();
        assert_eq!(firsts, vec![(1, 3), (4, 3), (7, 1)]);
        assert_eq!(b.next_seq(), 8);
        assert_eq!(b.alerts_sent_handle().load(Ordering::Relaxed), 7);
    }

    /// Events keep coming, each within the flush interval of the one before: a batch
    /// must still go out about one interval after the first, long before the batch
    /// is full (a deadline that moved with every event would wait for that). The
    /// producer stops at the first delivery it sees.
    #[test]
    fn a_steady_stream_is_flushed_every_interval() {
        let queue: EventQueue<8> = EventQueue::default();
        let ledger = LossLedger::default();
        let delivered = std::sync::atomic::AtomicBool::new(false);
        struct Flag<'a>(&'a std::sync::atomic::AtomicBool);
        impl BatchSink for Flag<'_> {
            fn deliver(&mut self, batch: &EncodedBatch<'_>) {
                if batch.len > 0 {
                    self.0.store(true, Ordering::SeqCst);
                }
            }
        }
        let mut batcher = Batcher::new(
            agent(),
            0,
            BatchPolicy {
                flush_interval: Duration::from_millis(50),
                ..Default::default()
            },
        );
        let mut sink = Flag(&delivered);
        let mut sent = 0u32;
        let (done_tx, done_rx) = async_channel::bounded::<()>(1);
        let producer = async {
            while !delivered.load(Ordering::SeqCst) {
                queue.offer(alert(sent));
                sent += 1;
                async_io::Timer::after(Duration::from_millis(40)).await;
            }
            let _ = done_tx.send(()).await;
        };
        let consumer = batcher.run(&queue, &ledger, &mut sink, async {
            let _ = done_rx.recv().await;
        });
        futures_lite::future::block_on(futures_lite::future::zip(producer, consumer));
        assert!(
            (sent as usize) < MAX_BATCH_EVENTS,
            "the first batch went only when full: {sent} events 40 ms apart, flush interval 50 ms"
        );
    }

    #[test]
    fn a_full_queue_hands_back_and_counts() {
        let q: EventQueue<2> = EventQueue::default();
        assert!(q.offer(alert(1)));
        assert!(q.offer(alert(2)));
        assert!(!q.offer(alert(3)));
        assert_eq!(q.dropped(), 1);
    }

    #[test]
    fn losses_become_numbered_events() {
        let q: EventQueue<1> = EventQueue::default();
        q.offer(alert(1));
        q.offer(alert(2));
        let ledger = LossLedger::default();
        ledger.kernel_ring_buffer.store(5, Ordering::Relaxed);
        ledger.offline_dropped(32, 10, 41);
        let mut b = Batcher::new(agent(), 0, BatchPolicy::default());
        let mut sink = Collect::default();
        b.collect_losses(&q, &ledger, 9);
        b.flush(&mut sink);
        let losses: Vec<(LossSource, u64)> = sink.0[0]
            .events
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::Loss(l) => Some((l.source, l.count)),
                _ => None,
            })
            .collect();
        assert_eq!(
            losses,
            vec![
                (LossSource::Channel, 1),
                (LossSource::KernelRingBuffer, 5),
                (LossSource::OfflineBuffer, 32)
            ]
        );
        // Reported once only, and counted for the status as reported.
        b.collect_losses(&q, &ledger, 10);
        b.flush(&mut sink);
        assert_eq!(sink.0.len(), 1);
        let totals = [
            LossSource::Channel,
            LossSource::KernelRingBuffer,
            LossSource::OfflineBuffer,
            LossSource::Throttle,
            LossSource::Spool,
        ]
        .map(|source| ledger.reported(source));
        assert_eq!(totals, [1, 5, 32, 0, 0]);
        assert_eq!(
            b.alerts_sent_handle().load(Ordering::Relaxed),
            0,
            "loss reports are not alerts"
        );
    }

    #[test]
    fn throttled_alerts_are_announced_once_and_counted() {
        let mut b = Batcher::new(
            agent(),
            0,
            BatchPolicy {
                max_alerts_per_sec: 2,
                throttle_sec: 30,
                ..Default::default()
            },
        );
        let mut sink = Collect::default();
        let now = Instant::now();
        for pid in 0..10 {
            b.push(&alert(pid), now, &mut sink);
        }
        let q: EventQueue<1> = EventQueue::default();
        let ledger = LossLedger::default();
        b.collect_losses(&q, &ledger, 0);
        b.flush(&mut sink);
        assert_eq!(ledger.reported(LossSource::Throttle), 8);
        assert_eq!(b.alerts_sent_handle().load(Ordering::Relaxed), 2);
        let bodies: Vec<&EventBody> = sink
            .0
            .iter()
            .flat_map(|b| b.events.iter().map(|e| &e.body))
            .collect();
        assert_eq!(
            bodies
                .iter()
                .filter(|b| matches!(b, EventBody::Alert(_)))
                .count(),
            2
        );
        assert_eq!(
            bodies
                .iter()
                .filter(|b| matches!(b, EventBody::AlertThreshold(_)))
                .count(),
            1
        );
        assert!(bodies.iter().any(|b| matches!(
            b,
            EventBody::Loss(Loss {
                source: LossSource::Throttle,
                count: 8,
                ..
            })
        )));
    }
}
