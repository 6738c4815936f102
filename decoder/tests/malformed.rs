//! Regression corpus of malformed payloads: `tests/malformed/<reason>--<what>.bin`.
//!
//! Each file is fed to the decoder's payload path (on the events topic of
//! `default/gw1`, or its status topic for `status--*`) and must be rejected with exactly
//! `<reason>` (`Rejection::kind`), writing no line and panicking nowhere. The same files
//! seed the fuzzer (`decoder/fuzz/run.sh`); a crash the fuzzer finds belongs here too,
//! named after the rejection it must get.
//!
//! Regenerate after a wire-format change with
//! `cargo test -p edgearmor-decode --test malformed -- --ignored regenerate`.

mod support;

use std::path::{Path, PathBuf};

use edgearmor_decode::fuzzing;
use edgearmor_decode::pipeline::{Decoder, DecoderConfig, HandleError, Received};
use edgearmor_decode::sink::MemorySink;
use edgearmor_wire::{AgentId, Batch, Message, PolicyTable};
use support::{agent, batch, encode, numbered_alert, policy_table};

const EVENTS_TOPIC: &str = "edgearmor/default/gw1/events";
const STATUS_TOPIC: &str = "edgearmor/default/gw1/status";

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/malformed")
}

fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds")
}

fn gw1() -> AgentId {
    agent("default", "gw1", 0xab)
}

/// The 33-byte header of a batch of `gw1` with policy_set 0 and first_seq 1 (small
/// varints), up to and including the event count.
fn header(count: u8) -> Vec<u8> {
    let mut bytes = vec![1, 0, 7];
    bytes.extend_from_slice(b"default");
    bytes.push(3);
    bytes.extend_from_slice(b"gw1");
    bytes.extend_from_slice(&[0xab; 16]);
    bytes.extend_from_slice(&[0, 1, count]);
    bytes
}

/// Every corpus file: name and bytes.
fn corpus() -> Vec<(String, Vec<u8>)> {
    let valid = encode(&batch(&gw1(), 0, 1, 3));
    let one_event = encode(&batch(&gw1(), 0, 1, 1));
    assert_eq!(&one_event[..header(1).len()], header(1).as_slice());
    let event_bytes = one_event[header(1).len()..].to_vec();

    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>| files.push((format!("{name}.bin"), bytes));

    add("empty--zero-bytes", Vec::new());
    let mut v0 = valid.clone();
    v0[0] = 0;
    add("unknown-version--v0", v0);
    let mut v2 = valid.clone();
    v2[0] = 2;
    add("unknown-version--v2", v2);
    add(
        "unknown-version--kubearmor-json-instead-of-postcard",
        br#"{"Timestamp":1692814089,"Type":"MatchedHostPolicy"}"#.to_vec(),
    );
    for cut in [1, 2, 12, 40, valid.len() / 2, valid.len() - 1] {
        add(
            &format!("malformed--truncated-at-{cut}"),
            valid[..cut].to_vec(),
        );
    }
    add("malformed--unknown-message-variant", vec![1, 7]);
    let mut bad_body = header(1);
    bad_body.extend_from_slice(&[5, 9]); // time_us 5, EventBody variant 9
    add("malformed--unknown-event-variant", bad_body);
    let mut long_cluster = vec![1, 0, 65];
    long_cluster.extend_from_slice(&[b'a'; 65]); // String<64>
    long_cluster.extend_from_slice(&valid[10..]);
    add("malformed--cluster-over-its-bound", long_cluster);
    let mut too_many = header(33); // Vec<Event, 32>
    for _ in 0..33 {
        too_many.extend_from_slice(&event_bytes);
    }
    add("malformed--33-events-in-a-batch", too_many);
    let mut bad_utf8 = header(1);
    bad_utf8.extend_from_slice(&[5, 0, 1, 1, 0, 2, 0xff, 0xfe]); // process path not UTF-8
    add("malformed--path-not-utf8", bad_utf8);
    let mut varint = valid[..header(1).len() - 3].to_vec();
    varint.extend_from_slice(&[0xff; 11]); // policy_set: an 11-byte varint
    add("malformed--varint-over-64-bits", varint);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut garbage = vec![1];
    for _ in 0..64 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        garbage.push(seed as u8);
    }
    add("malformed--random-garbage", garbage);
    let mut trailing = valid.clone();
    trailing.push(0);
    add("trailing-bytes--one-extra-byte", trailing);
    let mut oversized = vec![0u8; Message::MAX_ENCODED_LEN + 1];
    oversized[0] = 1;
    add("oversized--max-encoded-len-plus-one", oversized);
    add(
        "topic-mismatch--batch-of-gw2-on-the-topic-of-gw1",
        encode(&batch(&agent("default", "gw2", 1), 0, 1, 1)),
    );
    let Message::Batch(b) = batch(&gw1(), 0, 1, 2) else {
        unreachable!()
    };
    add(
        "sequence-overflow--first-seq-u64-max-with-2-events",
        encode(&Message::Batch(Batch {
            first_seq: u64::MAX,
            ..b
        })),
    );
    let Message::PolicyTable(t) = policy_table(&gw1(), 1, &[("p", 1, "", "")]) else {
        unreachable!()
    };
    add(
        "policy-table--total-over-the-maximum",
        encode(&Message::PolicyTable(PolicyTable {
            total: 5000,
            ..t.clone()
        })),
    );
    add(
        "policy-table--ids-beyond-total",
        encode(&Message::PolicyTable(PolicyTable { first_id: 7, ..t })),
    );
    add("status--not-json", b"online".to_vec());
    add(
        "status--unknown-state",
        br#"{"state":"sleeping","agent_version":"0.1.0","boot_id":"0123456789abcdef0123456789abcdef"}"#
            .to_vec(),
    );
    add(
        "status--boot-id-not-hex",
        br#"{"state":"online","agent_version":"0.1.0","boot_id":"not-a-boot-id"}"#.to_vec(),
    );
    files
}

/// Valid multi-message inputs for the fuzzer to mutate (see `edgearmor_decode::fuzzing`).
fn seeds() -> Vec<(String, Vec<u8>)> {
    let policies = encode(&policy_table(
        &gw1(),
        0,
        &[(
            "hsp-block-sshd-setid",
            8,
            "NIST,MITRE",
            "sshd may not setgid",
        )],
    ));
    let birth = br#"{"state":"online","agent_version":"0.1.0","boot_id":"abababababababababababababababab","kernel":"6.12.117+deb12-arm64","enforcement":"available","enforcement_detail":"","policy_set":"0000000000000000","time":1795932048}"#;
    let b1 = encode(&batch(&gw1(), 0, 1, 4));
    let b_dup = encode(&batch(&gw1(), 0, 3, 4));
    let b_gap = encode(&batch(&gw1(), 0, 20, 2));
    let mut loss_batch = batch(&gw1(), 0, 22, 1);
    if let Message::Batch(b) = &mut loss_batch {
        b.events[0].body = edgearmor_wire::EventBody::Loss(edgearmor_wire::Loss {
            source: edgearmor_wire::LossSource::OfflineBuffer,
            count: 3,
            first_seq: 9,
            last_seq: 11,
        });
    }
    let loss = encode(&loss_batch);
    vec![
        (
            "session.bin".into(),
            fuzzing::join_input(&[
                (2, birth.as_slice()),
                (1, &policies),
                (0, &b1),
                (0, &b_dup),
                (0, &b_gap),
                (0, &loss),
            ]),
        ),
        ("one-batch.bin".into(), b1.clone()),
        (
            "event-types.bin".into(),
            encode(&{
                let mut m = batch(&gw1(), 0, 1, 1);
                if let Message::Batch(b) = &mut m {
                    b.events.push(support::exec_alert(1)).expect("room");
                    b.events
                        .push(edgearmor_wire::Event {
                            time_us: 7,
                            body: edgearmor_wire::EventBody::AlertThreshold(
                                edgearmor_wire::AlertThreshold {
                                    max_alerts_per_sec: 10,
                                    dropping_alerts_interval: 30,
                                },
                            ),
                        })
                        .expect("room");
                    b.events.push(numbered_alert(3)).expect("room");
                }
                m
            }),
        ),
    ]
}

fn topic_for(name: &str) -> &'static str {
    if name.starts_with("status--") {
        STATUS_TOPIC
    } else {
        EVENTS_TOPIC
    }
}

#[test]
fn every_malformed_payload_is_rejected_for_its_reason() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("tests/malformed exists")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "the corpus is checked in: {files:?}");
    let mut decoder = Decoder::new(DecoderConfig::default());
    let mut sink = MemorySink::default();
    let mut reasons_seen = std::collections::BTreeSet::new();
    for path in &files {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 name");
        let (expected, _) = name
            .split_once("--")
            .unwrap_or_else(|| panic!("{name}: not <reason>--<what>.bin"));
        let payload = std::fs::read(path).expect("readable");
        let result = decoder.handle(
            &Received {
                topic: topic_for(name),
                payload: &payload,
                retained: false,
                now_us: 0,
            },
            &mut sink,
        );
        match result {
            Err(HandleError::Rejected(rejection)) => {
                assert_eq!(rejection.kind(), expected, "{name}: {rejection}");
                assert!(!rejection.to_string().is_empty());
            }
            other => panic!("{name}: expected a {expected} rejection, got {other:?}"),
        }
        // And the fuzz harness's path (with its invariants) takes it without panicking.
        fuzzing::run_input(&payload);
        reasons_seen.insert(expected.to_owned());
    }
    assert!(
        sink.lines.is_empty(),
        "rejected payloads write nothing: {:?}",
        sink.lines
    );
    let counters = decoder.counters();
    assert_eq!(counters.rejected.total(), files.len() as u64);
    assert_eq!(counters.lines, 0);
    for reason in [
        "empty",
        "unknown-version",
        "malformed",
        "trailing-bytes",
        "oversized",
        "topic-mismatch",
        "sequence-overflow",
        "policy-table",
        "status",
    ] {
        assert!(reasons_seen.contains(reason), "no corpus file for {reason}");
    }
}

/// The checked-in files are what the generator makes (hand-added crash reproducers
/// may sit beside them).
#[test]
fn the_corpus_and_seeds_are_up_to_date() {
    for (dir, files) in [(corpus_dir(), corpus()), (seeds_dir(), seeds())] {
        for (name, bytes) in files {
            let path = dir.join(&name);
            let on_disk = std::fs::read(&path).unwrap_or_default();
            assert!(
                on_disk == bytes,
                "{} is stale or missing: run `cargo test -p edgearmor-decode --test malformed -- --ignored regenerate`",
                path.display()
            );
        }
    }
}

#[test]
fn the_fuzz_seeds_run_clean() {
    for (name, bytes) in seeds() {
        fuzzing::run_input(&bytes);
        let messages = fuzzing::split_input(&bytes);
        assert!(!messages.is_empty(), "{name}");
    }
}

#[test]
#[ignore = "writes the corpus and seed files; run after a wire-format change"]
fn regenerate() {
    for (dir, files) in [(corpus_dir(), corpus()), (seeds_dir(), seeds())] {
        std::fs::create_dir_all(&dir).expect("create dir");
        for (name, bytes) in files {
            std::fs::write(dir.join(name), bytes).expect("write");
        }
    }
}
