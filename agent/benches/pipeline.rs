//! Pipeline figures: wire bytes per alert against the KubeArmor JSON of the same alert,
//! and events per second through batching + postcard encoding on one core.
//! Run: `cargo bench -p edgearmor --bench pipeline`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use edgearmor::events::pipeline::{BatchPolicy, BatchSink, Batcher};
use edgearmor_alert::expand::{PolicyLookup, expand_event};
use edgearmor_wire::{
    Action, AgentId, Alert, Data, EncodedBatch, Event, EventBody, Operation, Outcome, PolicyMeta,
    PolicyRef, SetIdSyscall, Source,
};

fn agent() -> AgentId {
    AgentId {
        cluster: heapless::String::try_from("default").expect("fits"),
        node: heapless::String::try_from("gw-0042").expect("fits"),
        boot_id: [7; 16],
    }
}

fn alert(i: u64) -> Event {
    Event {
        time_us: 1_795_932_048_204_372 + i,
        body: EventBody::Alert(Alert {
            pid: 1_791_316 + (i % 1000) as u32,
            ppid: 1_791_315,
            uid: 204,
            process: heapless::String::try_from("/usr/sbin/sshd").expect("fits"),
            parent_process: heapless::String::try_from("/usr/sbin/sshd").expect("fits"),
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

/// Takes each encoded batch as the MQTT sink does (a copy of the payload) and counts
/// the bytes.
struct EncodingSink {
    bytes: u64,
    events: u64,
}

impl BatchSink for EncodingSink {
    fn deliver(&mut self, batch: &EncodedBatch<'_>) {
        let payload = black_box(batch.payload.to_vec());
        self.bytes += payload.len() as u64;
        self.events += batch.len as u64;
    }
}

fn main() {
    let meta = PolicyMeta {
        name: heapless::String::try_from("hsp-block-sshd-setid").expect("fits"),
        severity: 8,
        tags: heapless::String::try_from(
            "NIST,NIST_800-53_AC-6,MITRE,MITRE_T1548_abuse_elevation_control",
        )
        .expect("fits"),
        message: heapless::String::try_from("sshd may not change its uid or gid").expect("fits"),
    };
    let lookup = PolicyLookup::from_policies(1, [&meta]).expect("one policy");
    let json_len = expand_event(&agent(), &alert(0), Some(&lookup))
        .to_json()
        .len();

    let policy = BatchPolicy {
        flush_interval: Duration::from_secs(3600),
        ..BatchPolicy::default()
    };
    let mut sink = EncodingSink {
        bytes: 0,
        events: 0,
    };
    let mut batcher = Batcher::new(agent(), 1, policy.clone());
    let now = Instant::now();
    // Warm up, then measure.
    for i in 0..100_000 {
        batcher.push(&alert(i), now, &mut sink);
    }
    let events = 2_000_000u64;
    sink.bytes = 0;
    sink.events = 0;
    let start = Instant::now();
    for i in 0..events {
        batcher.push(black_box(&alert(i)), now, &mut sink);
    }
    batcher.flush(&mut sink);
    let elapsed = start.elapsed();
    let per_event = sink.bytes as f64 / sink.events as f64;
    let rate = events as f64 / elapsed.as_secs_f64();
    println!("alert as KubeArmor JSON:            {json_len} bytes");
    println!(
        "alert as postcard in 32-event batch: {per_event:.1} bytes ({:.1}% of JSON, target <= 25%)",
        100.0 * per_event / json_len as f64
    );
    println!(
        "encode + batch, one core:            {rate:.0} events/s (target >= 500,000/s; {:.2}x)",
        rate / 500_000.0
    );

    // The JSON path for comparison: the same alerts written as KubeArmor JSON.
    let mut line = String::with_capacity(1024);
    let json_events = 500_000u64;
    let start = Instant::now();
    for i in 0..json_events {
        line.clear();
        expand_event(&agent(), &black_box(alert(i)), Some(&lookup)).write_json(&mut line);
        black_box(&line);
    }
    let json_rate = json_events as f64 / start.elapsed().as_secs_f64();
    println!(
        "KubeArmor JSON writing, one core:    {json_rate:.0} events/s (postcard path is {:.1}x faster)",
        rate / json_rate
    );
}
