//! Per agent boot sequence tracking: duplicate events are dropped, missing ones reported.
//!
//! Every event an agent sends has a sequence number (`Batch::first_seq + i`) that
//! restarts with each boot. For each stream (cluster, node, boot id) the tracker keeps
//! the highest sequence number seen and a bitmap of the [`WINDOW`] numbers below it:
//!
//! - a number already in the bitmap is a duplicate (QoS 1 redelivery) and is dropped;
//! - a number above the highest opens a gap if it skips some; the gap stays *pending*
//!   for the reorder window (late events fill it) and is then reported as lost;
//! - a number inside the window but not yet seen is a late arrival and is accepted;
//! - a number older than the window cannot be checked. With gap reporting on, its gap
//!   was already reported lost (gaps are reported at the latest when they leave the
//!   window), so it is dropped as stale: every sequence number is either output once or
//!   reported lost once, never both. With gap reporting off it is accepted.
//!
//! The first event seen of a stream sets its baseline: a decoder that starts while an
//! agent is running cannot tell lost events from events sent before it subscribed.
//!
//! State is bounded: at most `max_streams` streams (least recently used evicted, their
//! pending gaps reported) and [`MAX_PENDING_GAPS`] pending gaps per stream.

use std::collections::{HashMap, VecDeque};

/// Sequence numbers below the highest one seen that are still checked for duplicates.
pub const WINDOW: u64 = 4096;
const WINDOW_WORDS: usize = (WINDOW / 64) as usize;
/// Gaps a stream may hold pending at once; older ones are reported when more open.
pub const MAX_PENDING_GAPS: usize = 64;

/// One boot of one agent.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StreamKey {
    pub cluster: String,
    pub node: String,
    pub boot_id: [u8; 16],
}

/// Sequence numbers `first_seq..=last_seq` of a stream never arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    pub stream: StreamKey,
    pub first_seq: u64,
    pub last_seq: u64,
    /// Unix microseconds of the first event after the gap (the one that revealed it).
    pub time_us: u64,
}

impl Gap {
    pub fn lost(&self) -> u64 {
        self.last_seq - self.first_seq + 1
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// First time seen: output it.
    New,
    /// Seen before: drop it.
    Duplicate,
    /// Older than the window, and its gap was already reported lost: drop it.
    Stale,
}

/// The sequence numbers of one batch: `first_seq..first_seq + count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSeqs {
    pub first_seq: u64,
    pub count: usize,
    /// Unix microseconds of the batch's first event (the time of a gap it reveals).
    pub time_us: u64,
}

#[derive(Clone, Copy, Debug)]
pub struct TrackerConfig {
    /// Report gaps at all. Off for a member of a shared-subscription group, which sees
    /// only its share of every stream: it would take the others' events for losses.
    pub gap_reports: bool,
    /// How long a gap may wait for late events before it is reported.
    pub reorder_window_us: u64,
    pub max_streams: usize,
}

/// What happened besides the verdicts, for the decoder's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackerStats {
    pub late_accepted: u64,
    /// Older than the window, accepted unchecked (gap reporting off).
    pub unchecked_accepted: u64,
    pub evicted_streams: u64,
}

pub struct SequenceTracker {
    config: TrackerConfig,
    streams: HashMap<StreamKey, Stream>,
    /// Logical clock for least-recently-used eviction.
    tick: u64,
    stats: TrackerStats,
}

struct PendingGap {
    first_seq: u64,
    last_seq: u64,
    detected_us: u64,
    time_us: u64,
}

struct Stream {
    highest: u64,
    /// Bit `seq % WINDOW` is set when `seq` (within the window) was seen.
    seen: Box<[u64; WINDOW_WORDS]>,
    pending: VecDeque<PendingGap>,
    last_used: u64,
}

impl Stream {
    fn new(first_seq: u64, last_used: u64) -> Self {
        let mut stream = Self {
            highest: first_seq,
            seen: Box::new([0; WINDOW_WORDS]),
            pending: VecDeque::new(),
            last_used,
        };
        stream.mark(first_seq);
        stream
    }

    fn bit(seq: u64) -> (usize, u64) {
        let slot = seq % WINDOW;
        ((slot / 64) as usize, 1 << (slot % 64))
    }

    fn mark(&mut self, seq: u64) {
        let (word, mask) = Self::bit(seq);
        self.seen[word] |= mask;
    }

    fn is_marked(&self, seq: u64) -> bool {
        let (word, mask) = Self::bit(seq);
        self.seen[word] & mask != 0
    }

    /// Moves the window up to `new_highest`, clearing the slots it now covers.
    fn advance(&mut self, new_highest: u64) {
        let distance = new_highest - self.highest;
        if distance >= WINDOW {
            self.seen.fill(0);
        } else {
            for seq in self.highest + 1..=new_highest {
                let (word, mask) = Self::bit(seq);
                self.seen[word] &= !mask;
            }
        }
        self.highest = new_highest;
    }

    /// Removes `seq` from the pending gaps (a late event filled it).
    fn fill(&mut self, seq: u64) {
        let Some(index) = self
            .pending
            .iter()
            .position(|g| g.first_seq <= seq && seq <= g.last_seq)
        else {
            return;
        };
        let gap = &mut self.pending[index];
        if gap.first_seq == gap.last_seq {
            self.pending.remove(index);
        } else if seq == gap.first_seq {
            gap.first_seq += 1;
        } else if seq == gap.last_seq {
            gap.last_seq -= 1;
        } else {
            let upper = PendingGap {
                first_seq: seq + 1,
                last_seq: gap.last_seq,
                detected_us: gap.detected_us,
                time_us: gap.time_us,
            };
            gap.last_seq = seq - 1;
            self.pending.insert(index + 1, upper);
        }
    }
}

impl SequenceTracker {
    pub fn new(config: TrackerConfig) -> Self {
        Self {
            config: TrackerConfig {
                max_streams: config.max_streams.max(1),
                ..config
            },
            streams: HashMap::new(),
            tick: 0,
            stats: TrackerStats::default(),
        }
    }

    pub fn stats(&self) -> TrackerStats {
        self.stats
    }

    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Classifies the events `first_seq..first_seq + count` of one batch (the caller
    /// has checked that the range does not overflow), pushing one verdict per event.
    /// Gaps that must be reported now (pushed out of the window, over the pending
    /// bound, or from an evicted stream) are pushed to `gaps`.
    pub fn admit_batch(
        &mut self,
        key: &StreamKey,
        batch: BatchSeqs,
        now_us: u64,
        verdicts: &mut Vec<Verdict>,
        gaps: &mut Vec<Gap>,
    ) {
        if batch.count == 0 {
            return;
        }
        self.tick += 1;
        let tick = self.tick;
        if !self.streams.contains_key(key) {
            if self.streams.len() >= self.config.max_streams {
                self.evict_least_recently_used(gaps);
            }
            // The batch's first event is the baseline; the rest are admitted below.
            self.streams
                .insert(key.clone(), Stream::new(batch.first_seq, tick));
            verdicts.push(Verdict::New);
            // A one-event batch at u64::MAX has no rest: saturate rather than overflow.
            let rest = BatchSeqs {
                first_seq: batch.first_seq.saturating_add(1),
                count: batch.count - 1,
                ..batch
            };
            self.admit_rest(key, rest, now_us, verdicts, gaps);
            return;
        }
        self.admit_rest(key, batch, now_us, verdicts, gaps);
    }

    fn admit_rest(
        &mut self,
        key: &StreamKey,
        batch: BatchSeqs,
        now_us: u64,
        verdicts: &mut Vec<Verdict>,
        gaps: &mut Vec<Gap>,
    ) {
        let config = self.config;
        let tick = self.tick;
        let Some(stream) = self.streams.get_mut(key) else {
            return;
        };
        stream.last_used = tick;
        // Not `(first_seq..).take(count)`: a range from steps past its last item, which
        // overflows when that item is u64::MAX (the caller allows a batch ending there).
        for seq in (0..batch.count as u64).map(|i| batch.first_seq + i) {
            let verdict = if seq > stream.highest {
                if config.gap_reports && seq > stream.highest + 1 {
                    if stream.pending.len() >= MAX_PENDING_GAPS
                        && let Some(oldest) = stream.pending.pop_front()
                    {
                        gaps.push(to_gap(key, oldest));
                    }
                    stream.pending.push_back(PendingGap {
                        first_seq: stream.highest + 1,
                        last_seq: seq - 1,
                        detected_us: now_us,
                        time_us: batch.time_us,
                    });
                }
                stream.advance(seq);
                stream.mark(seq);
                // Gaps that left the window can no longer be filled: report them now.
                let window_floor = stream.highest.saturating_sub(WINDOW - 1);
                while stream
                    .pending
                    .front()
                    .is_some_and(|g| g.last_seq < window_floor)
                {
                    if let Some(gap) = stream.pending.pop_front() {
                        gaps.push(to_gap(key, gap));
                    }
                }
                Verdict::New
            } else if stream.highest - seq < WINDOW {
                if stream.is_marked(seq) {
                    Verdict::Duplicate
                } else {
                    stream.mark(seq);
                    stream.fill(seq);
                    self.stats.late_accepted += 1;
                    Verdict::New
                }
            } else if config.gap_reports {
                Verdict::Stale
            } else {
                self.stats.unchecked_accepted += 1;
                Verdict::New
            };
            verdicts.push(verdict);
        }
    }

    /// Reports the gaps whose reorder window has passed.
    pub fn expire(&mut self, now_us: u64, gaps: &mut Vec<Gap>) {
        let window = self.config.reorder_window_us;
        for (key, stream) in &mut self.streams {
            while stream
                .pending
                .front()
                .is_some_and(|g| g.detected_us.saturating_add(window) <= now_us)
            {
                if let Some(gap) = stream.pending.pop_front() {
                    gaps.push(to_gap(key, gap));
                }
            }
        }
    }

    /// Reports every pending gap (at shutdown or the end of a capture).
    pub fn drain(&mut self, gaps: &mut Vec<Gap>) {
        for (key, stream) in &mut self.streams {
            gaps.extend(stream.pending.drain(..).map(|g| to_gap(key, g)));
        }
    }

    fn evict_least_recently_used(&mut self, gaps: &mut Vec<Gap>) {
        // A linear scan: eviction only happens beyond `max_streams` agents, and then
        // once per new stream, which keeps this simpler than an intrusive LRU list.
        let Some(oldest) = self
            .streams
            .iter()
            .min_by_key(|(_, s)| s.last_used)
            .map(|(k, _)| k.clone())
        else {
            return;
        };
        if let Some(mut stream) = self.streams.remove(&oldest) {
            gaps.extend(stream.pending.drain(..).map(|g| to_gap(&oldest, g)));
            self.stats.evicted_streams += 1;
        }
    }
}

fn to_gap(key: &StreamKey, gap: PendingGap) -> Gap {
    Gap {
        stream: key.clone(),
        first_seq: gap.first_seq,
        last_seq: gap.last_seq,
        time_us: gap.time_us,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(node: &str) -> StreamKey {
        StreamKey {
            cluster: "c".into(),
            node: node.into(),
            boot_id: [1; 16],
        }
    }

    fn tracker(gap_reports: bool, max_streams: usize) -> SequenceTracker {
        SequenceTracker::new(TrackerConfig {
            gap_reports,
            reorder_window_us: 1_000,
            max_streams,
        })
    }

    /// Admits one batch; returns its verdicts and the gaps reported on the way.
    fn admit(
        t: &mut SequenceTracker,
        k: &StreamKey,
        first: u64,
        count: usize,
        now: u64,
    ) -> (Vec<Verdict>, Vec<Gap>) {
        let (mut v, mut g) = (Vec::new(), Vec::new());
        let batch = BatchSeqs {
            first_seq: first,
            count,
            time_us: 7,
        };
        t.admit_batch(k, batch, now, &mut v, &mut g);
        (v, g)
    }

    fn ranges(gaps: &[Gap]) -> Vec<(u64, u64)> {
        gaps.iter().map(|g| (g.first_seq, g.last_seq)).collect()
    }

    #[test]
    fn batches_ending_at_the_last_sequence_number_are_admitted() {
        let mut t = tracker(true, 8);
        let k = key("a");
        assert_eq!(
            admit(&mut t, &k, u64::MAX - 2, 3, 0).0,
            vec![Verdict::New; 3]
        );
        assert_eq!(
            admit(&mut t, &k, u64::MAX, 1, 0).0,
            vec![Verdict::Duplicate]
        );
        let k = key("b");
        assert_eq!(admit(&mut t, &k, u64::MAX, 1, 0).0, vec![Verdict::New]);
    }

    #[test]
    fn duplicates_are_dropped_new_ones_kept() {
        let mut t = tracker(true, 8);
        let k = key("a");
        assert_eq!(admit(&mut t, &k, 1, 3, 0).0, vec![Verdict::New; 3]);
        assert_eq!(
            admit(&mut t, &k, 2, 3, 0).0,
            vec![Verdict::Duplicate, Verdict::Duplicate, Verdict::New]
        );
    }

    #[test]
    fn a_gap_waits_for_late_events_then_is_reported_once() {
        let mut t = tracker(true, 8);
        let k = key("a");
        admit(&mut t, &k, 1, 10, 0);
        let (v, g) = admit(&mut t, &k, 31, 10, 100);
        assert_eq!(v, vec![Verdict::New; 10]);
        assert!(g.is_empty(), "pending, not yet reported");
        // 15 arrives late: it splits the gap 11..=30 in two.
        assert_eq!(admit(&mut t, &k, 15, 1, 200).0, vec![Verdict::New]);
        let mut gaps = Vec::new();
        t.expire(1_099, &mut gaps);
        assert!(gaps.is_empty(), "the reorder window has not passed");
        t.expire(1_100, &mut gaps);
        assert_eq!(ranges(&gaps), vec![(11, 14), (16, 30)]);
        assert_eq!(gaps[0].lost(), 4);
        assert_eq!(gaps[0].time_us, 7);
        gaps.clear();
        t.drain(&mut gaps);
        assert!(gaps.is_empty(), "each gap is reported once");
        assert_eq!(t.stats().late_accepted, 1);
    }

    #[test]
    fn gaps_leaving_the_window_are_reported_and_their_events_are_then_stale() {
        let mut t = tracker(true, 8);
        let k = key("a");
        admit(&mut t, &k, 1, 1, 0);
        admit(&mut t, &k, 3, 1, 0);
        // The window is now 4..=3+WINDOW: gap 2..=2 left it, gap 4..=2+WINDOW did not.
        let (_, g) = admit(&mut t, &k, 3 + WINDOW, 1, 0);
        assert_eq!(ranges(&g), vec![(2, 2)]);
        assert_eq!(admit(&mut t, &k, 2, 1, 0).0, vec![Verdict::Stale]);
        assert_eq!(admit(&mut t, &k, 4, 1, 0).0, vec![Verdict::New]);
        let mut gaps = Vec::new();
        t.drain(&mut gaps);
        assert_eq!(ranges(&gaps), vec![(5, 2 + WINDOW)]);
    }

    #[test]
    fn without_gap_reports_nothing_is_reported_and_old_events_pass() {
        let mut t = tracker(false, 8);
        let k = key("a");
        admit(&mut t, &k, 1, 1, 0);
        let (_, g) = admit(&mut t, &k, 2 * WINDOW, 1, 0);
        assert!(g.is_empty());
        assert_eq!(admit(&mut t, &k, 5, 1, 0).0, vec![Verdict::New]);
        assert_eq!(t.stats().unchecked_accepted, 1);
        let mut gaps = Vec::new();
        t.drain(&mut gaps);
        assert!(gaps.is_empty());
    }

    #[test]
    fn a_new_boot_is_a_new_stream() {
        let mut t = tracker(true, 8);
        let old = key("a");
        let new = StreamKey {
            boot_id: [2; 16],
            ..key("a")
        };
        admit(&mut t, &old, 100, 5, 0);
        assert_eq!(admit(&mut t, &new, 1, 2, 0).0, vec![Verdict::New; 2]);
        let mut gaps = Vec::new();
        t.drain(&mut gaps);
        assert!(gaps.is_empty(), "restarting at 1 is not a gap");
    }

    #[test]
    fn streams_are_bounded_and_eviction_reports_pending_gaps() {
        let mut t = tracker(true, 2);
        admit(&mut t, &key("a"), 1, 1, 0);
        admit(&mut t, &key("a"), 5, 1, 0); // gap 2..=4 pending
        admit(&mut t, &key("b"), 1, 1, 0);
        let (_, g) = admit(&mut t, &key("c"), 1, 1, 0); // evicts "a", least recently used
        assert_eq!(ranges(&g), vec![(2, 4)]);
        assert_eq!(g[0].stream.node, "a");
        assert_eq!(t.stream_count(), 2);
        assert_eq!(t.stats().evicted_streams, 1);
    }

    #[test]
    fn pending_gaps_are_bounded() {
        let mut t = tracker(true, 1);
        let k = key("a");
        let mut reported = Vec::new();
        for i in 0..(MAX_PENDING_GAPS as u64 + 5) {
            reported.extend(admit(&mut t, &k, 1 + 2 * i, 1, 0).1);
        }
        assert_eq!(reported.len(), 4, "the oldest gaps went out first");
        assert_eq!(reported[0].first_seq, 2);
    }
}
