//! One received MQTT message in, KubeArmor JSON lines out: the decoder's whole payload
//! path, independent of how messages arrive (broker, capture file, fuzzer, benchmark).
//!
//! Status topics carry JSON ([`crate::status`]); every other topic carries the wire
//! format: a [`Batch`] of events (sequence-checked, expanded with
//! [`edgearmor_alert::expand`], written as lines) or a [`PolicyTable`] part (stored for
//! the batches that refer to its ids). Anything that does not decode, or claims an
//! agent identity other than its topic's, is rejected with a [`Rejection`] naming why;
//! the caller logs and counts it and goes on with the next message.

use std::fmt::Write as _;

use edgearmor_alert::expand::{
    ExpandOptions, OPERATION_ALERT_LOSS, expand_event_into, reset, set_identity, write_lost_count,
};
use edgearmor_alert::{AlertType, EventTime, HostAlert};
use edgearmor_wire::{AgentId, Batch, EventBody, Message, PolicyTable, WireError};
use log::{info, warn};

use crate::counters::Counters;
use crate::fleet::Fleet;
use crate::policy_store::PolicyStore;
use crate::sequence::{BatchSeqs, Gap, SequenceTracker, StreamKey, TrackerConfig, Verdict};
use crate::sink::{AlertSink, LineOrigin, SinkError};
use crate::status::{self, StatusError};
use crate::topic::{self, TopicKind};

/// `Resource` of the decoder's own loss lines: the events went missing in delivery.
pub const GAP_RESOURCE: &str = "mqtt delivery";

#[derive(Clone, Debug)]
pub struct DecoderConfig {
    /// First level(s) of the topic convention (`<prefix>/<cluster>/<node>/...`).
    pub topic_prefix: String,
    pub expand: ExpandOptions,
    pub tracker: TrackerConfig,
    /// Agent boots whose policy tables are kept.
    pub max_agents: usize,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        Self {
            topic_prefix: topic::DEFAULT_PREFIX.into(),
            expand: ExpandOptions::default(),
            tracker: TrackerConfig {
                gap_reports: true,
                reorder_window_us: 2_000_000,
                max_streams: 10_000,
            },
            max_agents: 10_000,
        }
    }
}

/// One message as received.
#[derive(Clone, Copy, Debug)]
pub struct Received<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    /// Sent by the broker from its retained store (a status from before we subscribed).
    pub retained: bool,
    /// Unix microseconds: the clock of the reorder window and of timeless statuses.
    pub now_us: u64,
}

/// Why a message was skipped.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Longer than any valid wire message (`Message::MAX_ENCODED_LEN`).
    #[error("oversized payload: {len} bytes, a valid one has at most {max}")]
    Oversized { len: usize, max: usize },
    /// Empty, unknown version, truncated, garbage or trailing bytes.
    #[error(transparent)]
    Wire(WireError),
    /// The payload's agent is not the one its topic names.
    #[error(
        "payload from agent {cluster:?}/{node:?} on the topic of {topic_cluster:?}/{topic_node:?}"
    )]
    TopicMismatch {
        topic_cluster: String,
        topic_node: String,
        cluster: String,
        node: String,
    },
    /// `first_seq + events` does not fit in 64 bits.
    #[error("batch of {events} events from first_seq={first_seq} overflows the sequence numbers")]
    SequenceOverflow { first_seq: u64, events: usize },
    #[error("invalid policy table part: {0}")]
    PolicyTable(#[source] edgearmor_alert::expand::PolicyTableError),
    #[error("invalid status: {0}")]
    Status(#[source] StatusError),
}

impl Rejection {
    /// A short stable name, for counters and the malformed-payload corpus.
    pub fn kind(&self) -> &'static str {
        match self {
            Rejection::Oversized { .. } => "oversized",
            Rejection::Wire(WireError::Empty) => "empty",
            Rejection::Wire(WireError::UnknownVersion(_)) => "unknown-version",
            Rejection::Wire(WireError::TrailingBytes(_)) => "trailing-bytes",
            Rejection::Wire(WireError::Malformed(_) | WireError::BufferTooSmall) => "malformed",
            Rejection::TopicMismatch { .. } => "topic-mismatch",
            Rejection::SequenceOverflow { .. } => "sequence-overflow",
            Rejection::PolicyTable(_) => "policy-table",
            Rejection::Status(_) => "status",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    #[error("rejected ({kind}): {0}", kind = .0.kind())]
    Rejected(#[source] Rejection),
    /// Writing lines failed; the lines of this message that could not be written are
    /// counted in `lines_not_written`.
    #[error("output failed: {0}")]
    Output(#[source] SinkError),
}

impl From<Rejection> for HandleError {
    fn from(r: Rejection) -> Self {
        HandleError::Rejected(r)
    }
}

/// What an accepted message was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    Batch {
        written: usize,
        dropped: usize,
    },
    PolicyPart {
        table_complete: bool,
    },
    Status,
    /// An empty payload on a status or policies topic: someone cleared that retained
    /// message (how MQTT deletes one), which is not bad input.
    RetainedCleared,
}

pub struct Decoder {
    config: DecoderConfig,
    tracker: SequenceTracker,
    policies: PolicyStore,
    counters: Counters,
    fleet: Fleet,
    // Reused for every event so the hot path does not allocate.
    alert: HostAlert,
    line: String,
    verdicts: Vec<Verdict>,
    gaps: Vec<Gap>,
}

impl Decoder {
    pub fn new(config: DecoderConfig) -> Self {
        Self {
            tracker: SequenceTracker::new(config.tracker),
            policies: PolicyStore::new(config.max_agents),
            fleet: Fleet::new(config.max_agents),
            config,
            counters: Counters::default(),
            alert: HostAlert::new(AlertType::MatchedHostPolicy),
            line: String::with_capacity(1024),
            verdicts: Vec::with_capacity(edgearmor_wire::MAX_BATCH_EVENTS),
            gaps: Vec::new(),
        }
    }

    /// The counters, with the tracker's and the policy store's folded in.
    pub fn counters(&self) -> Counters {
        let mut counters = self.counters.clone();
        counters.tracker = self.tracker.stats();
        counters.policy_store = self.policies.stats();
        counters.agents_evicted = self.fleet.evicted;
        counters
    }

    /// Every node's health as last seen (the metrics endpoint's per-agent part).
    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    /// Decodes one message and writes its lines to `sink` (without flushing it).
    pub fn handle(
        &mut self,
        message: &Received<'_>,
        sink: &mut dyn AlertSink,
    ) -> Result<Accepted, HandleError> {
        self.counters.messages += 1;
        self.counters.payload_bytes += message.payload.len() as u64;
        let result = self.dispatch(message, sink);
        if let Err(HandleError::Rejected(rejection)) = &result {
            self.counters.count_rejection(rejection);
        }
        result
    }

    fn dispatch(
        &mut self,
        message: &Received<'_>,
        sink: &mut dyn AlertSink,
    ) -> Result<Accepted, HandleError> {
        let node_topic = topic::parse(&self.config.topic_prefix, message.topic);
        if message.payload.is_empty()
            && node_topic.is_some_and(|t| matches!(t.kind, TopicKind::Status | TopicKind::Policies))
        {
            self.counters.retained_cleared += 1;
            info!("{}: retained message cleared", message.topic);
            return Ok(Accepted::RetainedCleared);
        }
        if let Some(t) = node_topic.filter(|t| t.kind == TopicKind::Status) {
            let status = status::parse(message.payload).map_err(Rejection::Status)?;
            self.counters.statuses += 1;
            self.fleet.record_status(t.cluster, t.node, &status);
            status::to_alert(
                &status,
                t.cluster,
                t.node,
                message.retained,
                message.now_us,
                self.config.expand,
                &mut self.alert,
            );
            let origin = LineOrigin {
                cluster: t.cluster,
                node: t.node,
            };
            emit(
                &self.alert,
                &mut self.line,
                &origin,
                sink,
                &mut self.counters,
            )
            .map_err(HandleError::Output)?;
            return Ok(Accepted::Status);
        }
        let max = Message::MAX_ENCODED_LEN;
        if message.payload.len() > max {
            return Err(Rejection::Oversized {
                len: message.payload.len(),
                max,
            }
            .into());
        }
        let decoded = edgearmor_wire::decode(message.payload).map_err(Rejection::Wire)?;
        let agent = match &decoded {
            Message::Batch(batch) => &batch.agent,
            Message::PolicyTable(table) => &table.agent,
        };
        if let Some(t) = node_topic
            && (t.cluster != agent.cluster.as_str() || t.node != agent.node.as_str())
        {
            return Err(Rejection::TopicMismatch {
                topic_cluster: t.cluster.into(),
                topic_node: t.node.into(),
                cluster: agent.cluster.as_str().into(),
                node: agent.node.as_str().into(),
            }
            .into());
        }
        match decoded {
            Message::Batch(batch) => self.handle_batch(&batch, message.now_us, sink),
            Message::PolicyTable(table) => self.handle_policy_part(&table),
        }
    }

    fn handle_batch(
        &mut self,
        batch: &Batch,
        now_us: u64,
        sink: &mut dyn AlertSink,
    ) -> Result<Accepted, HandleError> {
        let events = batch.events.len();
        if events > 0 && batch.first_seq.checked_add(events as u64 - 1).is_none() {
            return Err(Rejection::SequenceOverflow {
                first_seq: batch.first_seq,
                events,
            }
            .into());
        }
        self.counters.batches += 1;
        self.counters.events += events as u64;
        let key = stream_key(&batch.agent);
        self.verdicts.clear();
        self.gaps.clear();
        let seqs = BatchSeqs {
            first_seq: batch.first_seq,
            count: events,
            time_us: batch.events.first().map_or(0, |e| e.time_us),
        };
        self.tracker
            .admit_batch(&key, seqs, now_us, &mut self.verdicts, &mut self.gaps);
        let Self {
            config,
            policies,
            counters,
            alert,
            line,
            verdicts,
            ..
        } = self;
        let lookup = policies.get(&key, batch.policy_set);
        let origin = LineOrigin {
            cluster: &key.cluster,
            node: &key.node,
        };
        let mut written = 0;
        let mut first_error = None;
        for (event, verdict) in batch.events.iter().zip(verdicts.iter()) {
            match verdict {
                Verdict::Duplicate => {
                    counters.duplicates += 1;
                    continue;
                }
                Verdict::Stale => {
                    counters.stale += 1;
                    continue;
                }
                Verdict::New => {}
            }
            let unknown = expand_event_into(&batch.agent, event, lookup, config.expand, alert);
            if let Some(unknown) = unknown {
                counters.unknown_policy += 1;
                // Every power of two: a missing table would otherwise log once per event.
                if counters.unknown_policy.is_power_of_two() {
                    warn!(
                        "agent {}/{} boot {}: policy id {} is not in policy set {:016x} ({}); \
                         PolicyName left empty ({} such events so far)",
                        key.cluster,
                        key.node,
                        boot_hex(&key.boot_id),
                        unknown.id,
                        batch.policy_set,
                        if lookup.is_some() {
                            "the table has no such id"
                        } else {
                            "no table part received for this set"
                        },
                        counters.unknown_policy
                    );
                }
            }
            // Events the spool could not persist are still delivered (unless the
            // agent stopped first, which shows as a gap): not counted as lost.
            if let EventBody::Loss(loss) = &event.body
                && loss.source != edgearmor_wire::LossSource::Spool
            {
                counters.agent_reported_lost =
                    counters.agent_reported_lost.saturating_add(loss.count);
            }
            match emit(alert, line, &origin, sink, counters) {
                Ok(()) => {
                    written += 1;
                    counters.alerts += 1;
                }
                Err(e) if e.is_fatal() => return Err(HandleError::Output(e)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        self.fleet.entry(&key.cluster, &key.node).alerts += written as u64;
        let dropped = events - written;
        if let Err(e) = self.write_gaps(sink) {
            first_error.get_or_insert(e);
        }
        match first_error {
            Some(e) => Err(HandleError::Output(e)),
            None => Ok(Accepted::Batch { written, dropped }),
        }
    }

    fn handle_policy_part(&mut self, table: &PolicyTable) -> Result<Accepted, HandleError> {
        let key = stream_key(&table.agent);
        let table_complete = self
            .policies
            .insert_part(&key, table)
            .map_err(Rejection::PolicyTable)?;
        self.counters.policy_parts += 1;
        if table_complete {
            info!(
                "agent {}/{} boot {}: policy set {:016x} complete ({} policies)",
                key.cluster,
                key.node,
                boot_hex(&key.boot_id),
                table.policy_set,
                table.total
            );
        }
        Ok(Accepted::PolicyPart { table_complete })
    }

    /// Reports gaps whose reorder window has passed. Call it periodically.
    pub fn tick(&mut self, now_us: u64, sink: &mut dyn AlertSink) -> Result<(), SinkError> {
        self.gaps.clear();
        self.tracker.expire(now_us, &mut self.gaps);
        self.write_gaps(sink)
    }

    /// Reports every pending gap: at shutdown, or at the end of a capture.
    pub fn finish(&mut self, sink: &mut dyn AlertSink) -> Result<(), SinkError> {
        self.gaps.clear();
        self.tracker.drain(&mut self.gaps);
        self.write_gaps(sink)
    }

    fn write_gaps(&mut self, sink: &mut dyn AlertSink) -> Result<(), SinkError> {
        let mut first_error = None;
        for gap in std::mem::take(&mut self.gaps) {
            self.counters.gaps += 1;
            self.counters.gap_lost = self.counters.gap_lost.saturating_add(gap.lost());
            let agent = self.fleet.entry(&gap.stream.cluster, &gap.stream.node);
            agent.gaps += 1;
            agent.gap_lost = agent.gap_lost.saturating_add(gap.lost());
            warn!(
                "agent {}/{} boot {}: {} events lost in delivery, sequence numbers {}..={}",
                gap.stream.cluster,
                gap.stream.node,
                boot_hex(&gap.stream.boot_id),
                gap.lost(),
                gap.first_seq,
                gap.last_seq
            );
            gap_alert(&gap, self.config.expand, &mut self.alert);
            let origin = LineOrigin {
                cluster: &gap.stream.cluster,
                node: &gap.stream.node,
            };
            if let Err(e) = emit(
                &self.alert,
                &mut self.line,
                &origin,
                sink,
                &mut self.counters,
            ) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// The `SystemEvent` line of a delivery gap.
pub fn gap_alert(gap: &Gap, options: ExpandOptions, out: &mut HostAlert) {
    reset(out);
    out.alert_type = AlertType::SystemEvent;
    set_identity(out, &gap.stream.cluster, &gap.stream.node, options);
    out.time = EventTime::from_unix_micros(gap.time_us);
    out.operation.push_str(OPERATION_ALERT_LOSS);
    out.resource.push_str(GAP_RESOURCE);
    let _ = write!(
        out.data,
        "lost={} first_seq={} last_seq={}",
        gap.lost(),
        gap.first_seq,
        gap.last_seq
    );
    write_lost_count(&mut out.message, gap.lost());
    let _ = write!(
        out.message,
        "sequence numbers {}..{} of agent boot {} never reached the decoder",
        gap.first_seq,
        gap.last_seq,
        &boot_hex(&gap.stream.boot_id)[..8]
    );
}

fn emit(
    alert: &HostAlert,
    line: &mut String,
    origin: &LineOrigin<'_>,
    sink: &mut dyn AlertSink,
    counters: &mut Counters,
) -> Result<(), SinkError> {
    line.clear();
    alert.write_json(line);
    match sink.write_alert(origin, alert, line) {
        Ok(()) => {
            counters.lines += 1;
            Ok(())
        }
        Err(e) => {
            counters.lines_not_written += 1;
            Err(e)
        }
    }
}

pub fn stream_key(agent: &AgentId) -> StreamKey {
    StreamKey {
        cluster: agent.cluster.as_str().into(),
        node: agent.node.as_str().into(),
        boot_id: agent.boot_id,
    }
}

pub fn boot_hex(boot_id: &[u8; 16]) -> String {
    let mut hex = String::with_capacity(32);
    for b in boot_id {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}
