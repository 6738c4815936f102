//! The payload path in process: policy tables, duplicates, gaps, boots, statuses, agent
//! loss reports and identity checks, each asserted on the exact lines and counters.

mod support;

use edgearmor_decode::pipeline::{Accepted, Decoder, DecoderConfig, HandleError, Received};
use edgearmor_decode::sequence::TrackerConfig;
use edgearmor_decode::sink::MemorySink;
use edgearmor_wire::{AgentId, Event, EventBody, Loss, LossSource, Message};
use support::{
    agent, batch, encode, events_topic, field, policies_topic, policy_table, status_topic,
};

struct Harness {
    decoder: Decoder,
    sink: MemorySink,
}

impl Harness {
    fn new() -> Self {
        Self::with(DecoderConfig::default())
    }

    fn with(config: DecoderConfig) -> Self {
        Self {
            decoder: Decoder::new(config),
            sink: MemorySink::default(),
        }
    }

    fn feed(&mut self, topic: &str, payload: &[u8], now_us: u64) -> Result<Accepted, HandleError> {
        self.decoder.handle(
            &Received {
                topic,
                payload,
                retained: false,
                now_us,
            },
            &mut self.sink,
        )
    }

    fn send(&mut self, agent: &AgentId, message: &Message) -> Accepted {
        let topic = match message {
            Message::Batch(_) => events_topic(agent),
            Message::PolicyTable(_) => policies_topic(agent, 0),
        };
        self.feed(&topic, &encode(message), 0).expect("accepted")
    }

    fn pids(&self) -> Vec<i64> {
        self.sink
            .lines
            .iter()
            .filter_map(|l| field(l, "PID").as_i64())
            .collect()
    }
}

#[test]
fn policy_ids_resolve_through_table_parts() {
    let gw = agent("default", "gw1", 1);
    let mut h = Harness::new();
    let Message::PolicyTable(mut table) = policy_table(
        &gw,
        42,
        &[
            (
                "hsp-block-sshd-setid",
                8,
                "NIST,MITRE_T1548",
                "sshd may not change its uid or gid",
            ),
            ("second", 0, "", ""),
        ],
    ) else {
        unreachable!()
    };
    // Published in two parts.
    let second = table.policies.pop().expect("two");
    let mut part2 = table.clone();
    part2.first_id = 1;
    part2.policies.clear();
    part2.policies.push(second).expect("room");
    assert_eq!(
        h.send(&gw, &Message::PolicyTable(table)),
        Accepted::PolicyPart {
            table_complete: false
        }
    );
    assert_eq!(
        h.send(&gw, &Message::PolicyTable(part2)),
        Accepted::PolicyPart {
            table_complete: true
        }
    );
    h.send(&gw, &batch(&gw, 42, 1, 1));
    let line = &h.sink.lines[0];
    assert!(
        line.contains(concat!(
            r#""PolicyName":"hsp-block-sshd-setid","Severity":"8","Tags":"NIST,MITRE_T1548","#,
            r#""ATags":["NIST","MITRE_T1548"],"Message":"sshd may not change its uid or gid","#
        )),
        "{line}"
    );
    assert_eq!(h.decoder.counters().unknown_policy, 0);
}

#[test]
fn an_unknown_policy_set_leaves_the_name_empty_and_is_counted() {
    let gw = agent("default", "gw1", 1);
    let mut h = Harness::new();
    h.send(&gw, &batch(&gw, 99, 1, 3));
    assert_eq!(h.sink.lines.len(), 3);
    assert!(h.sink.lines.iter().all(|l| !l.contains("PolicyName")));
    assert_eq!(h.decoder.counters().unknown_policy, 3);
}

#[test]
fn duplicates_are_dropped_and_counted() {
    let gw = agent("default", "gw1", 1);
    let mut h = Harness::new();
    assert_eq!(
        h.send(&gw, &batch(&gw, 0, 1, 4)),
        Accepted::Batch {
            written: 4,
            dropped: 0
        }
    );
    // A QoS 1 redelivery, then an overlapping batch.
    assert_eq!(
        h.send(&gw, &batch(&gw, 0, 1, 4)),
        Accepted::Batch {
            written: 0,
            dropped: 4
        }
    );
    h.send(&gw, &batch(&gw, 0, 3, 4));
    assert_eq!(h.pids(), (1..=6).map(|n| 100_000 + n).collect::<Vec<_>>());
    let c = h.decoder.counters();
    assert_eq!((c.events, c.duplicates, c.lines), (12, 6, 6));
}

#[test]
fn a_gap_becomes_one_system_event_naming_the_range() {
    let gw = agent("default", "gw1", 0xab);
    let mut h = Harness::new();
    h.send(&gw, &batch(&gw, 0, 1, 10));
    h.send(&gw, &batch(&gw, 0, 21, 10)); // 11..=20 missing
    assert_eq!(
        h.sink.lines.len(),
        20,
        "the gap waits for late events first"
    );
    h.decoder.finish(&mut h.sink).expect("memory");
    assert_eq!(h.sink.lines.len(), 21);
    assert_eq!(
        h.sink.lines[20],
        concat!(
            r#"{"Timestamp":1795932048,"UpdatedTime":"2026-11-29T06:00:48.000021Z","ClusterName":"default","HostName":"gw1","#,
            r#""PPID":0,"UID":0,"Message":"10 events were lost: sequence numbers 11..20 of agent boot abababab never reached "#,
            r#"the decoder","Type":"SystemEvent","Operation":"AlertLoss","Resource":"mqtt delivery","#,
            r#""Data":"lost=10 first_seq=11 last_seq=20","EventData":{"First_seq":"11","Last_seq":"20","Lost":"10"},"#,
            r#""NodeID":"gw1"}"#
        )
    );
    let c = h.decoder.counters();
    assert_eq!((c.gaps, c.gap_lost), (1, 10));
}

#[test]
fn a_gap_is_reported_when_the_reorder_window_passes_and_late_events_shrink_it() {
    let gw = agent("default", "gw1", 1);
    let mut h = Harness::with(DecoderConfig {
        tracker: TrackerConfig {
            gap_reports: true,
            reorder_window_us: 1_000_000,
            max_streams: 16,
        },
        ..DecoderConfig::default()
    });
    let topic = events_topic(&gw);
    h.feed(&topic, &encode(&batch(&gw, 0, 1, 2)), 0)
        .expect("ok");
    h.feed(&topic, &encode(&batch(&gw, 0, 10, 2)), 100)
        .expect("ok"); // 3..=9 missing
    h.feed(&topic, &encode(&batch(&gw, 0, 3, 2)), 200)
        .expect("ok"); // 3, 4 arrive late
    h.decoder.tick(999_999, &mut h.sink).expect("memory");
    assert!(h.sink.lines.iter().all(|l| !l.contains("AlertLoss")));
    h.decoder.tick(1_000_100, &mut h.sink).expect("memory");
    let losses: Vec<&String> = h
        .sink
        .lines
        .iter()
        .filter(|l| l.contains("AlertLoss"))
        .collect();
    assert_eq!(losses.len(), 1);
    assert_eq!(field(losses[0], "Data"), "lost=5 first_seq=5 last_seq=9");
    assert_eq!(h.decoder.counters().tracker.late_accepted, 2);
}

#[test]
fn a_new_boot_starts_a_new_sequence() {
    let first = agent("default", "gw1", 1);
    let second = agent("default", "gw1", 2);
    let mut h = Harness::new();
    h.send(&first, &batch(&first, 0, 1, 5));
    h.send(&second, &batch(&second, 0, 1, 5));
    h.decoder.finish(&mut h.sink).expect("memory");
    assert_eq!(
        h.sink.lines.len(),
        10,
        "no duplicates, no gaps: {:?}",
        h.sink.lines
    );
}

#[test]
fn gap_reports_off_for_a_share_group_member() {
    let gw = agent("default", "gw1", 1);
    let mut h = Harness::with(DecoderConfig {
        tracker: TrackerConfig {
            gap_reports: false,
            reorder_window_us: 0,
            max_streams: 16,
        },
        ..DecoderConfig::default()
    });
    h.send(&gw, &batch(&gw, 0, 1, 2));
    h.send(&gw, &batch(&gw, 0, 9, 2));
    h.send(&gw, &batch(&gw, 0, 9, 2));
    h.decoder.finish(&mut h.sink).expect("memory");
    assert_eq!(h.sink.lines.len(), 4);
    assert_eq!(h.decoder.counters().duplicates, 2);
}

#[test]
fn agent_loss_reports_become_system_events() {
    let gw = agent("default", "gw1", 1);
    let mut h = Harness::new();
    let mut message = batch(&gw, 0, 1, 1);
    if let Message::Batch(b) = &mut message {
        b.events[0] = Event {
            time_us: 2_000_000,
            body: EventBody::Loss(Loss {
                source: LossSource::KernelRingBuffer,
                count: 12,
                first_seq: 0,
                last_seq: 0,
            }),
        };
    }
    h.send(&gw, &message);
    assert_eq!(
        h.sink.lines,
        vec![concat!(
            r#"{"Timestamp":2,"UpdatedTime":"1970-01-01T00:00:02.000000Z","ClusterName":"default","HostName":"gw1","#,
            r#""PPID":0,"UID":0,"Message":"12 events were lost: the kernel ring buffer was full","Type":"SystemEvent","#,
            r#""Operation":"AlertLoss","Resource":"kernel ring buffer","Data":"dropped=12","EventData":{"Dropped":"12"},"#,
            r#""Enforcer":"BPFLSM","NodeID":"gw1"}"#
        )]
    );
    assert_eq!(h.decoder.counters().agent_reported_lost, 12);
}

#[test]
fn statuses_become_system_events_and_bad_ones_are_counted() {
    let gw = agent("edge", "gw7", 1);
    let mut h = Harness::new();
    let birth = br#"{"state":"online","agent_version":"0.1.0","boot_id":"0123456789abcdef0123456789abcdef","kernel":"6.12.117+deb12-arm64","enforcement":"unavailable","enforcement_detail":"bpf is not in the active LSM list","policy_set":"000000000000002a","time":1795932048}"#;
    assert_eq!(
        h.feed(&status_topic(&gw), birth, 0).expect("valid"),
        Accepted::Status
    );
    let line = &h.sink.lines[0];
    assert_eq!(field(line, "Type"), "SystemEvent");
    assert_eq!(field(line, "Operation"), "AgentStatus");
    assert_eq!(field(line, "ClusterName"), "edge");
    assert_eq!(field(line, "HostName"), "gw7");
    assert_eq!(
        field(line, "Message"),
        "edgearmor agent 0.1.0 online (boot 01234567), kernel 6.12.117+deb12-arm64, \
         enforcement unavailable (monitor only): bpf is not in the active LSM list"
    );
    // Deleting the retained status (an empty payload) is not bad input.
    assert_eq!(
        h.feed(&status_topic(&gw), b"", 0).expect("ok"),
        Accepted::RetainedCleared
    );
    let rejected = h.feed(&status_topic(&gw), b"{\"state\":\"online\"", 0);
    assert!(matches!(rejected, Err(HandleError::Rejected(ref r)) if r.kind() == "status"));
    let c = h.decoder.counters();
    assert_eq!((c.statuses, c.rejected.status), (1, 1));
}

#[test]
fn a_payload_must_come_from_the_agent_its_topic_names() {
    let gw1 = agent("default", "gw1", 1);
    let gw2 = agent("default", "gw2", 1);
    let mut h = Harness::new();
    let result = h.feed(&events_topic(&gw1), &encode(&batch(&gw2, 0, 1, 1)), 0);
    match result {
        Err(HandleError::Rejected(r)) => assert_eq!(
            r.to_string(),
            r#"payload from agent "default"/"gw2" on the topic of "default"/"gw1""#
        ),
        other => panic!("expected a rejection, got {other:?}"),
    }
    // Topics outside the convention (a custom --topic) are decoded without the check.
    h.feed("lab/raw", &encode(&batch(&gw2, 0, 1, 1)), 0)
        .expect("accepted");
    assert_eq!(h.sink.lines.len(), 1);
}
