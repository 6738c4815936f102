//! Decoded events per second, postcard payload to KubeArmor JSON line, on one core.
//!
//! `cargo bench -p edgearmor-decode --bench decode_throughput` (pin it with
//! `taskset -c 0 ...` to be strict about "one core"; `BENCH_SECONDS` sets the time per
//! measurement, default 3). The workload: 8 agents with 16-policy tables, full batches
//! of 32 events (policy-id alerts with tags and messages, default-posture exec alerts,
//! an occasional loss report), through the whole `Decoder::handle` path: wire decode,
//! topic identity check, sequence tracking, policy lookup, expansion, JSON, into a
//! buffered sink. Baseline: serde_json parsing and re-serialising the same JSON lines
//! (`Value` round trip), the cost of merely touching KubeArmor JSON in a generic way.
//!
//! Prints a human summary and one JSON line of figures.

use std::hint::black_box;
use std::time::{Duration, Instant};

use edgearmor_decode::pipeline::{Decoder, DecoderConfig, Received};
use edgearmor_decode::sink::{AlertSink, LineOrigin, MemorySink, SinkError};
use edgearmor_wire::{
    Action, AgentId, Alert, Batch, Data, Event, EventBody, Loss, LossSource, LsmHook, Message,
    Operation, Outcome, PolicyMeta, PolicyRef, PolicyTable, SetIdSyscall, Source,
};

const AGENTS: u8 = 8;
const BATCHES_PER_AGENT: u64 = 250;
const POLICIES: u32 = 16;
const TARGET_ACCEPTANCE: f64 = 300_000.0;
const TARGET_PERFORMANCE: f64 = 500_000.0;

fn s<const N: usize>(v: &str) -> heapless::String<N> {
    heapless::String::try_from(v).unwrap_or_default()
}

fn agent(i: u8) -> AgentId {
    AgentId {
        cluster: s("factory-eu-1"),
        node: s(&format!("gateway-{i:03}")),
        boot_id: [i; 16],
    }
}

fn event(n: u64) -> Event {
    let time_us = 1_795_932_048_000_000 + n * 37;
    let body = match n % 10 {
        0..=6 => EventBody::Alert(Alert {
            pid: 4000 + (n % 30_000) as u32,
            ppid: 812,
            uid: 0,
            process: s("/usr/sbin/sshd"),
            parent_process: s("/usr/sbin/sshd"),
            source: Source::Process,
            policy: PolicyRef::Id((n % u64::from(POLICIES)) as u32),
            operation: Operation::Syscall,
            resource: s(""),
            data: Data::SetId {
                syscall: SetIdSyscall::Setgid,
                id: 0,
            },
            action: Action::Block,
            result: Outcome::OperationNotPermitted,
            cwd: Default::default(),
        }),
        7..=8 => EventBody::Alert(Alert {
            pid: 9000 + (n % 30_000) as u32,
            ppid: 1582,
            uid: 1000,
            process: s("/usr/bin/apt-get"),
            parent_process: s("/usr/bin/bash"),
            source: Source::ParentProcess,
            policy: PolicyRef::DefaultPosture,
            operation: Operation::Process,
            resource: s("/usr/bin/apt-get install -y curl"),
            data: Data::Lsm(LsmHook::BprmCheckSecurity),
            action: Action::Audit,
            result: Outcome::Passed,
            cwd: Default::default(),
        }),
        _ => EventBody::Loss(Loss {
            source: LossSource::KernelRingBuffer,
            count: n % 7 + 1,
            first_seq: 0,
            last_seq: 0,
        }),
    };
    Event { time_us, body }
}

fn encode(message: &Message) -> Vec<u8> {
    let mut buf = vec![0u8; Message::MAX_ENCODED_LEN];
    match edgearmor_wire::encode(message, &mut buf) {
        Ok(bytes) => bytes.to_vec(),
        Err(e) => panic!("encode: {e}"),
    }
}

/// Messages as received: (topic, payload).
type Messages = Vec<(String, Vec<u8>)>;

/// Every policy table part, every batch (agents interleaved), and the event count.
fn workload() -> (Messages, Messages, u64) {
    let mut tables = Vec::new();
    let mut batches = Vec::new();
    let mut events = 0;
    for a in 0..AGENTS {
        let agent = agent(a);
        let policies = (0..POLICIES)
            .map(|p| PolicyMeta {
                name: s(&format!("hsp-gateway-hardening-{p:02}")),
                severity: (p % 10 + 1) as u8,
                tags: s("NIST,NIST_800-53_AC-6,MITRE,MITRE_T1548_abuse_elevation_control"),
                message: s("sshd may not change its uid or gid"),
            })
            .collect();
        tables.push((
            format!("edgearmor/{}/{}/policies/0", agent.cluster, agent.node),
            encode(&Message::PolicyTable(PolicyTable {
                agent: agent.clone(),
                policy_set: 1,
                total: POLICIES,
                first_id: 0,
                policies,
            })),
        ));
    }
    for b in 0..BATCHES_PER_AGENT {
        for a in 0..AGENTS {
            let agent = agent(a);
            let first_seq = 1 + b * 32;
            let events_of_batch = (0..32).map(|i| event(first_seq + i)).collect();
            batches.push((
                format!("edgearmor/{}/{}/events", agent.cluster, agent.node),
                encode(&Message::Batch(Batch {
                    agent,
                    policy_set: 1,
                    first_seq,
                    events: events_of_batch,
                })),
            ));
            events += 32;
        }
    }
    (tables, batches, events)
}

/// A buffered writer's work without the syscalls: lines are copied into a buffer that
/// is recycled every MiB.
struct BufferSink {
    buffer: Vec<u8>,
    bytes: u64,
}

impl AlertSink for BufferSink {
    fn write_line(&mut self, _: &LineOrigin<'_>, line: &str) -> Result<(), SinkError> {
        if self.buffer.len() + line.len() + 1 > self.buffer.capacity() {
            black_box(&self.buffer);
            self.buffer.clear();
        }
        self.buffer.extend_from_slice(line.as_bytes());
        self.buffer.push(b'\n');
        self.bytes += line.len() as u64 + 1;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

fn feed(decoder: &mut Decoder, messages: &[(String, Vec<u8>)], sink: &mut dyn AlertSink) {
    for (topic, payload) in messages {
        let received = Received {
            topic,
            payload,
            retained: false,
            now_us: 0,
        };
        if let Err(e) = decoder.handle(&received, sink) {
            panic!("{topic}: {e}");
        }
    }
}

/// Repeats `round` until `budget` has passed; returns (rounds, elapsed).
fn measure(budget: Duration, mut round: impl FnMut()) -> (u64, Duration) {
    round(); // warm-up
    let start = Instant::now();
    let mut rounds = 0;
    while start.elapsed() < budget {
        round();
        rounds += 1;
    }
    (rounds, start.elapsed())
}

fn main() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let budget = Duration::from_secs(seconds);
    let (tables, batches, events_per_round) = workload();
    let payload_bytes: usize = batches.iter().map(|(_, p)| p.len()).sum();

    // Full path.
    let mut sink = BufferSink {
        buffer: Vec::with_capacity(1 << 20),
        bytes: 0,
    };
    let (rounds, elapsed) = measure(budget, || {
        // A fresh decoder per round: the same sequence numbers are new again.
        let mut decoder = Decoder::new(DecoderConfig::default());
        feed(&mut decoder, &tables, &mut sink);
        feed(&mut decoder, &batches, &mut sink);
        black_box(decoder.counters());
    });
    let events = rounds * events_per_round;
    let events_per_sec = events as f64 / elapsed.as_secs_f64();
    let json_bytes_per_round = sink.bytes / (rounds + 1);

    // Wire decode alone.
    let (decode_rounds, decode_elapsed) = measure(budget / 3, || {
        for (_, payload) in &batches {
            let _ = black_box(edgearmor_wire::decode(black_box(payload)));
        }
    });
    let decode_per_sec = (decode_rounds * events_per_round) as f64 / decode_elapsed.as_secs_f64();

    // Baseline: serde_json parse + serialise of the same lines.
    let mut lines_sink = MemorySink::default();
    let mut decoder = Decoder::new(DecoderConfig::default());
    feed(&mut decoder, &tables, &mut lines_sink);
    feed(&mut decoder, &batches, &mut lines_sink);
    let lines = lines_sink.lines;
    let (baseline_rounds, baseline_elapsed) = measure(budget, || {
        for line in &lines {
            let value: serde_json::Value = match serde_json::from_str(black_box(line)) {
                Ok(v) => v,
                Err(e) => panic!("{e}"),
            };
            black_box(serde_json::to_string(&value).unwrap_or_default());
        }
    });
    let baseline_per_sec =
        (baseline_rounds * lines.len() as u64) as f64 / baseline_elapsed.as_secs_f64();

    println!(
        "decode_throughput: {events_per_round} events per round in {} batches of 32 from {AGENTS} agents",
        batches.len()
    );
    println!(
        "  payload {:.1} B/event postcard -> {:.1} B/event JSON",
        payload_bytes as f64 / events_per_round as f64,
        json_bytes_per_round as f64 / events_per_round as f64
    );
    println!(
        "  full path (decode + sequence + expand + JSON): {:.0} events/s, {:.0} ns/event, {:.1} MB/s of JSON",
        events_per_sec,
        1e9 / events_per_sec,
        events_per_sec * json_bytes_per_round as f64 / events_per_round as f64 / 1e6
    );
    println!(
        "  vs targets: {:.2}x the 300,000/s acceptance target, {:.2}x the 500,000/s performance target",
        events_per_sec / TARGET_ACCEPTANCE,
        events_per_sec / TARGET_PERFORMANCE
    );
    println!("  wire decode alone: {decode_per_sec:.0} events/s");
    println!(
        "  baseline serde_json Value parse+serialise of the same lines: {baseline_per_sec:.0} lines/s; the decoder is {:.2}x that",
        events_per_sec / baseline_per_sec
    );
    println!(
        "{{\"bench\":\"decode_throughput\",\"events_per_sec\":{events_per_sec:.0},\"ns_per_event\":{:.0},\
         \"vs_300k\":{:.3},\"vs_500k\":{:.3},\"wire_decode_events_per_sec\":{decode_per_sec:.0},\
         \"serde_json_roundtrip_lines_per_sec\":{baseline_per_sec:.0},\"ratio_to_serde_json\":{:.3}}}",
        1e9 / events_per_sec,
        events_per_sec / TARGET_ACCEPTANCE,
        events_per_sec / TARGET_PERFORMANCE,
        events_per_sec / baseline_per_sec
    );
}
