//! The fuzz harness's entry point, here so that the fuzz target (`decoder/fuzz`), the
//! seed regression test and anyone reproducing a crash run exactly the same code.
//!
//! An input is either one raw payload, fed on the events topic of `default/gw1` (so
//! every file of `tests/malformed/` is a seed as it is), or, when it starts with
//! [`MULTI_MAGIC`], a sequence of messages, which lets the fuzzer reach the stateful
//! parts (sequence tracking across batches, policy tables assembled from parts):
//!
//! ```text
//! "EAFZ" ( topic: u8, len: u16 little-endian, payload: len bytes )*
//! topic % 4: 0 events, 1 policies, 2 status (all of default/gw1), 3 a foreign topic
//! ```
//!
//! A truncated frame ends the input. Messages are 0.5 s apart on the decoder's clock, so
//! gaps time out and are reported along the way. Every line written must be a JSON
//! object with a `Type`; anything else panics, which is what the fuzzer looks for.

use crate::pipeline::{Decoder, DecoderConfig, HandleError, Received};
use crate::sequence::TrackerConfig;
use crate::sink::MemorySink;

pub const MULTI_MAGIC: &[u8; 4] = b"EAFZ";
pub const TOPICS: [&str; 4] = [
    "edgearmor/default/gw1/events",
    "edgearmor/default/gw1/policies/0",
    "edgearmor/default/gw1/status",
    "somewhere/else",
];

/// The messages of an input, as (topic, payload).
pub fn split_input(data: &[u8]) -> Vec<(&'static str, &[u8])> {
    let Some(mut rest) = data.strip_prefix(MULTI_MAGIC.as_slice()) else {
        return vec![(TOPICS[0], data)];
    };
    let mut messages = Vec::new();
    while let [topic, lo, hi, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*lo, *hi]));
        if tail.len() < len {
            break;
        }
        let (payload, next) = tail.split_at(len);
        messages.push((TOPICS[usize::from(*topic) % TOPICS.len()], payload));
        rest = next;
    }
    messages
}

/// Encodes messages as a multi-message input (for seeds).
pub fn join_input(messages: &[(u8, &[u8])]) -> Vec<u8> {
    let mut out = MULTI_MAGIC.to_vec();
    for (topic, payload) in messages {
        let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
        out.push(*topic);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&payload[..usize::from(len)]);
    }
    out
}

/// Runs one input through the whole payload path; panics if an invariant breaks.
pub fn run_input(data: &[u8]) {
    let mut decoder = Decoder::new(DecoderConfig {
        tracker: TrackerConfig {
            gap_reports: true,
            reorder_window_us: 1_000_000,
            // Small, so that eviction is reached too.
            max_streams: 4,
        },
        max_agents: 4,
        ..DecoderConfig::default()
    });
    let mut sink = MemorySink::default();
    let messages = split_input(data);
    let mut rejected = 0u64;
    for (i, (topic, payload)) in messages.iter().enumerate() {
        let now_us = 500_000 * i as u64;
        let received = Received {
            topic,
            payload,
            retained: i % 2 == 1,
            now_us,
        };
        match decoder.handle(&received, &mut sink) {
            Ok(_) => {}
            Err(HandleError::Rejected(r)) => {
                rejected += 1;
                // Every rejection has a name and a message.
                assert!(!r.kind().is_empty() && !r.to_string().is_empty());
            }
            Err(HandleError::Output(e)) => panic!("a memory sink cannot fail: {e}"),
        }
        if let Err(e) = decoder.tick(now_us, &mut sink) {
            panic!("a memory sink cannot fail: {e}");
        }
    }
    if let Err(e) = decoder.finish(&mut sink) {
        panic!("a memory sink cannot fail: {e}");
    }
    let counters = decoder.counters();
    assert_eq!(counters.messages, messages.len() as u64);
    assert_eq!(counters.rejected.total(), rejected);
    assert_eq!(counters.lines, sink.lines.len() as u64);
    for line in &sink.lines {
        let value: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => panic!("not JSON ({e}): {line}"),
        };
        assert!(
            value.get("Type").is_some_and(serde_json::Value::is_string),
            "{line}"
        );
        assert!(
            value.get("PPID").is_some() && value.get("UID").is_some(),
            "{line}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_split_into_messages() {
        assert_eq!(split_input(b"raw"), vec![(TOPICS[0], b"raw".as_slice())]);
        let joined = join_input(&[(2, b"{}"), (5, b"xyz")]);
        assert_eq!(
            split_input(&joined),
            vec![
                (TOPICS[2], b"{}".as_slice()),
                (TOPICS[1], b"xyz".as_slice())
            ]
        );
        assert_eq!(split_input(&joined[..joined.len() - 1]).len(), 1);
        run_input(&joined);
        run_input(b"");
    }
}
