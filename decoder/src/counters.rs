//! What the decoder did, counted: printed to stderr at exit as one `name=value` line.
//!
//! Every message is accounted for: it was accepted (a batch, a policy-table part, a
//! status) or rejected under exactly one reason; every event of an accepted batch was
//! written, dropped as a duplicate or stale, or failed to write.

use edgearmor_wire::WireError;

use crate::pipeline::Rejection;
use crate::policy_store::PolicyStoreStats;
use crate::sequence::TrackerStats;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub messages: u64,
    pub payload_bytes: u64,
    pub batches: u64,
    /// Events in accepted batches, duplicates included.
    pub events: u64,
    /// Alert lines written: events of accepted batches, duplicates and stale ones not.
    pub alerts: u64,
    /// Lines written: events, status and gap `SystemEvent`s.
    pub lines: u64,
    pub lines_not_written: u64,
    pub duplicates: u64,
    pub stale: u64,
    /// Delivery gaps reported, and the events they lost.
    pub gaps: u64,
    pub gap_lost: u64,
    /// Events the agents themselves reported lost (`Loss` events).
    pub agent_reported_lost: u64,
    pub unknown_policy: u64,
    pub policy_parts: u64,
    pub statuses: u64,
    /// Empty payloads on status/policies topics (a retained message deleted).
    pub retained_cleared: u64,
    pub rejected: RejectedCounters,
    pub tracker: TrackerStats,
    pub policy_store: PolicyStoreStats,
    /// Nodes whose health ([`crate::fleet::Fleet`]) was forgotten.
    pub agents_evicted: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RejectedCounters {
    pub oversized: u64,
    pub empty: u64,
    pub unknown_version: u64,
    pub malformed: u64,
    pub trailing_bytes: u64,
    pub topic_mismatch: u64,
    pub sequence_overflow: u64,
    pub policy_table: u64,
    pub status: u64,
}

impl RejectedCounters {
    pub fn total(&self) -> u64 {
        self.oversized
            + self.empty
            + self.unknown_version
            + self.malformed
            + self.trailing_bytes
            + self.topic_mismatch
            + self.sequence_overflow
            + self.policy_table
            + self.status
    }
}

impl Counters {
    pub fn count_rejection(&mut self, rejection: &Rejection) {
        let r = &mut self.rejected;
        let counter = match rejection {
            Rejection::Oversized { .. } => &mut r.oversized,
            Rejection::Wire(WireError::Empty) => &mut r.empty,
            Rejection::Wire(WireError::UnknownVersion(_)) => &mut r.unknown_version,
            Rejection::Wire(WireError::TrailingBytes(_)) => &mut r.trailing_bytes,
            Rejection::Wire(WireError::Malformed(_) | WireError::BufferTooSmall) => {
                &mut r.malformed
            }
            Rejection::TopicMismatch { .. } => &mut r.topic_mismatch,
            Rejection::SequenceOverflow { .. } => &mut r.sequence_overflow,
            Rejection::PolicyTable(_) => &mut r.policy_table,
            Rejection::Status(_) => &mut r.status,
        };
        *counter += 1;
    }

    /// `name=value` pairs, in a stable order.
    pub fn pairs(&self) -> Vec<(&'static str, u64)> {
        let r = &self.rejected;
        vec![
            ("messages", self.messages),
            ("payload_bytes", self.payload_bytes),
            ("batches", self.batches),
            ("events", self.events),
            ("alerts", self.alerts),
            ("lines", self.lines),
            ("lines_not_written", self.lines_not_written),
            ("duplicates", self.duplicates),
            ("stale", self.stale),
            ("late_accepted", self.tracker.late_accepted),
            ("unchecked_accepted", self.tracker.unchecked_accepted),
            ("gaps", self.gaps),
            ("gap_lost_events", self.gap_lost),
            ("agent_reported_lost_events", self.agent_reported_lost),
            ("unknown_policy_ids", self.unknown_policy),
            ("policy_parts", self.policy_parts),
            (
                "policy_tables_completed",
                self.policy_store.tables_completed,
            ),
            ("policy_tables_evicted", self.policy_store.tables_evicted),
            ("streams_evicted", self.tracker.evicted_streams),
            ("agents_evicted", self.agents_evicted),
            ("statuses", self.statuses),
            ("retained_cleared", self.retained_cleared),
            ("rejected", r.total()),
            ("rejected_oversized", r.oversized),
            ("rejected_empty", r.empty),
            ("rejected_unknown_version", r.unknown_version),
            ("rejected_malformed", r.malformed),
            ("rejected_trailing_bytes", r.trailing_bytes),
            ("rejected_topic_mismatch", r.topic_mismatch),
            ("rejected_sequence_overflow", r.sequence_overflow),
            ("rejected_policy_table", r.policy_table),
            ("rejected_status", r.status),
        ]
    }
}

/// `a=1 b=2 ...`
pub fn format_pairs(pairs: &[(&'static str, u64)]) -> String {
    pairs
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join(" ")
}
