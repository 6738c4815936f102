//! Wall-clock steps during a stream, through a real mosquitto: the agent's wall clock
//! (faked through the host seam: `EDGEARMOR_FAKE_WALL_CLOCK_FILE`, debug builds) starts
//! in 1970 like a gateway without a real-time clock, is stepped to now (NTP), then
//! back by an hour while the broker is down. Every event is delivered, each alert
//! keeps the time it was made at, and throttling keeps working in every phase (a
//! throttle, flush timer or backoff on the wall clock would stall or wedge for an hour
//! after the backward step).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::Agent;
use edgearmor_vm::broker::{Broker, Subscriber, free_port, wait_for};
use edgearmor_wire::{EventBody, LossSource};

/// The machine's real wall clock, in seconds (the test's own reference; the agent's
/// is faked).
#[allow(clippy::disallowed_methods)]
fn real_now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Replaces the shift file atomically, so the agent never reads half of it.
fn set_shift(file: &Path, secs: i64) {
    let temp = file.with_extension("tmp");
    std::fs::write(&temp, secs.to_string()).expect("writes");
    std::fs::rename(&temp, file).expect("renames");
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// 1970-01-01, the first hour.
    Epoch,
    /// Now, within 20 minutes.
    Now,
    /// An hour ago, within 20 minutes.
    HourAgo,
}

fn phase(time_us: u64, now_secs: i64) -> Option<Phase> {
    let secs = (time_us / 1_000_000) as i64;
    if secs < 3600 {
        Some(Phase::Epoch)
    } else if (secs - now_secs).abs() < 1200 {
        Some(Phase::Now)
    } else if (secs - (now_secs - 3600)).abs() < 1200 {
        Some(Phase::HourAgo)
    } else {
        None
    }
}

/// Events by sequence number, with their times.
fn timed_events(sub: &Subscriber) -> BTreeMap<u64, (u64, EventBody)> {
    let mut out = BTreeMap::new();
    for (payload, _) in sub.on_topic("gw-clock/events") {
        let Ok(edgearmor_wire::Message::Batch(batch)) = edgearmor_wire::decode(&payload) else {
            panic!("a batch");
        };
        for (i, event) in batch.events.iter().enumerate() {
            out.insert(
                batch.first_seq + i as u64,
                (event.time_us, event.body.clone()),
            );
        }
    }
    out
}

fn thresholds_in(events: &BTreeMap<u64, (u64, EventBody)>, now: i64, wanted: Phase) -> usize {
    events
        .values()
        .filter(|(t, b)| {
            matches!(b, EventBody::AlertThreshold(_)) && phase(*t, now) == Some(wanted)
        })
        .count()
}

#[test]
fn wall_clock_steps_neither_stop_delivery_nor_wedge_throttling() {
    let dir: PathBuf =
        edgearmor_vm::broker::scratch(Path::new(env!("CARGO_TARGET_TMPDIR")), "clock-steps");
    let now = real_now_secs();
    let shift_file = dir.join("wall-clock-shift");
    // 1970-01-01T00:01:40.
    set_shift(&shift_file, 100 - now);
    let port = free_port();
    let mut broker = Broker::start(&dir, port, "");
    let sub = Subscriber::connect(port, "clock-sub");
    let broker_addr = format!("127.0.0.1:{port}");
    let shift_env = shift_file.to_string_lossy().into_owned();
    let mut agent = Agent::start(
        &[("EDGEARMOR_FAKE_WALL_CLOCK_FILE", &shift_env)],
        &[
            "--broker",
            &broker_addr,
            "--count",
            "1000000",
            "--interval-ms",
            "10",
            "--max-alerts-per-sec",
            "20",
            "--throttle-sec",
            "1",
            "--host-name",
            "gw-clock",
            "--shutdown-grace-secs",
            "60",
        ],
    );
    // Two throttle intervals in a phase: one started, ended (alerts passed again) and
    // the next started.
    let two_intervals_in = |wanted: Phase| {
        wait_for(
            &format!("two throttle intervals stamped {wanted:?}"),
            || thresholds_in(&timed_events(&sub), now, wanted) >= 2,
        );
    };
    two_intervals_in(Phase::Epoch);

    // NTP steps the clock forward by 56 years.
    set_shift(&shift_file, 0);
    two_intervals_in(Phase::Now);

    // The broker goes away; while it is away the clock is set back an hour; then it
    // returns: the agent reconnects and delivers what it made on both sides of the step.
    broker.stop();
    agent.wait_stderr("the outage", |e| e.contains("cannot reach broker"));
    set_shift(&shift_file, -3600);
    broker.resume();
    agent.wait_stderr("the reconnection", |e| {
        e.matches("MQTT: connected").count() >= 2
    });
    two_intervals_in(Phase::HourAgo);
    agent.stop();

    let log = agent.stderr();
    let offered: u64 = log
        .lines()
        .find_map(|l| {
            l.split(" from ")
                .nth(1)?
                .strip_suffix(" test alert(s), delivering")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no production line:\n{log}"));
    let produced: u64 = log
        .lines()
        .find_map(|l| {
            l.strip_prefix("edgearmor: produced ")?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .expect("the same line");
    wait_for("every produced event", || {
        timed_events(&sub).len() as u64 >= produced
    });
    let events = timed_events(&sub);

    // Everything delivered: every sequence number from 1, none missing.
    assert_eq!(
        events.keys().copied().collect::<Vec<_>>(),
        (1..=produced).collect::<Vec<_>>()
    );
    // Every alert either delivered or counted by the throttle; nothing else lost.
    let alerts = events
        .values()
        .filter(|(_, b)| matches!(b, EventBody::Alert(_)))
        .count() as u64;
    let mut throttled = 0;
    for (_, body) in events.values() {
        if let EventBody::Loss(l) = body {
            assert_eq!(l.source, LossSource::Throttle, "{l:?}");
            throttled += l.count;
        }
    }
    assert!(throttled > 0);
    assert_eq!(alerts + throttled, offered, "alerts delivered + throttled");

    // Times: 1970, then now, then an hour ago, in sequence order, never mixed: each
    // event kept the time it was made at, whenever it was delivered.
    let mut previous: Option<(Phase, u64)> = None;
    let mut seen = Vec::new();
    for (seq, (time_us, body)) in &events {
        let p = phase(*time_us, now)
            .unwrap_or_else(|| panic!("event {seq} ({body:?}) stamped {time_us} µs fits no phase"));
        if let Some((last_phase, last_time)) = previous {
            assert!(p >= last_phase, "event {seq}: {p:?} after {last_phase:?}");
            if p == last_phase && matches!(body, EventBody::Alert(_)) {
                assert!(*time_us >= last_time, "event {seq} goes back in time");
            }
        }
        if matches!(body, EventBody::Alert(_)) {
            previous = Some((p, *time_us));
        }
        if seen.last() != Some(&p) {
            seen.push(p);
        }
    }
    assert_eq!(seen, [Phase::Epoch, Phase::Now, Phase::HourAgo]);

    // Throttling worked in every phase: intervals started, and alerts passed again
    // after each (after the backward step too: the interval did not last an hour).
    for wanted in [Phase::Epoch, Phase::Now, Phase::HourAgo] {
        let in_phase: Vec<&EventBody> = events
            .values()
            .filter(|(t, _)| phase(*t, now) == Some(wanted))
            .map(|(_, b)| b)
            .collect();
        let first_threshold = in_phase
            .iter()
            .position(|b| matches!(b, EventBody::AlertThreshold(_)))
            .unwrap_or_else(|| panic!("{wanted:?}: no throttle interval"));
        assert!(
            in_phase[first_threshold..]
                .iter()
                .any(|b| matches!(b, EventBody::Alert(_))),
            "{wanted:?}: alerts pass again after the interval"
        );
    }
}
