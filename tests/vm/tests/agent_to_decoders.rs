//! End to end across the fleet path: the real agent pipeline (`edgearmor
//! send-test-alerts`) -> a real mosquitto -> two `edgearmor-decode` instances in one
//! MQTT 5 shared-subscription group. Every event must come out exactly once across the
//! two outputs, as KubeArmor JSON with its policy metadata resolved.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use edgearmor_vm::broker::{Broker, free_port, scratch, wait_for};
use edgearmor_vm::process::WatchedProcess;
use edgearmor_vm::{Arch, guest_binaries, workspace_root};

/// `test alert N` resources of the MatchedHostPolicy lines in `file`. The decoders
/// write while this reads, so the last line may be cut short (a read can land between
/// the pages of one write, and "test alert 4" can be the start of "test alert 45"):
/// only lines ending in a newline count.
fn test_alert_numbers(file: &PathBuf) -> Vec<u64> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let complete = text.rsplit_once('\n').map_or("", |(whole, _)| whole);
    complete
        .lines()
        .filter(|l| l.contains("\"Type\":\"MatchedHostPolicy\""))
        .filter_map(|l| {
            let rest = l.split("\"Resource\":\"test alert ").nth(1)?;
            rest.split('"').next()?.parse().ok()
        })
        .collect()
}

fn spawn(program: &std::path::Path, args: &[&str]) -> WatchedProcess {
    let mut command = Command::new(program);
    command.args(args);
    WatchedProcess::spawn(command)
}

#[test]
fn every_event_exactly_once_across_two_shared_subscription_decoders() {
    const EVENTS: u64 = 500;
    let bins = guest_binaries(Arch::X86_64).expect("static binaries");
    let dir = scratch(
        &workspace_root().join("target/vm-runs"),
        "agent-to-decoders",
    );
    let port = free_port();
    let _broker = Broker::start(&dir, port, "");
    let address = format!("127.0.0.1:{port}");
    let outputs: Vec<PathBuf> = (0..2)
        .map(|i| dir.join(format!("decoder-{i}.json")))
        .collect();
    let decoders: Vec<WatchedProcess> = outputs
        .iter()
        .map(|out| {
            let out = out.to_string_lossy().into_owned();
            spawn(
                &bins.decoder,
                &[
                    "--broker",
                    &address,
                    "--share-group",
                    "decoders",
                    "--output",
                    &out,
                ],
            )
        })
        .collect();
    for d in &decoders {
        wait_for("decoder ready", || {
            d.stderr().contains("edgearmor-decode: ready:")
        });
    }
    let count = EVENTS.to_string();
    let agent = spawn(
        &bins.agent,
        &[
            "send-test-alerts",
            "--config",
            "/dev/null",
            "--no-stdout",
            "--broker",
            &address,
            "--count",
            &count,
            "--interval-ms",
            "1",
            "--max-alerts-per-sec",
            "0",
            "--host-name",
            "gw-e2e",
        ],
    );
    wait_for("the agent to deliver and exit", || {
        agent.stderr().contains("edgearmor: done")
    });
    wait_for("every event decoded", || {
        outputs
            .iter()
            .map(test_alert_numbers)
            .map(|v| v.len() as u64)
            .sum::<u64>()
            >= EVENTS
    });
    let per_decoder: Vec<Vec<u64>> = outputs.iter().map(test_alert_numbers).collect();
    assert!(
        per_decoder.iter().all(|v| !v.is_empty()),
        "the broker shares the load: {:?}",
        per_decoder.iter().map(Vec::len).collect::<Vec<_>>()
    );
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    for n in per_decoder.iter().flatten() {
        *seen.entry(*n).or_default() += 1;
    }
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (0..EVENTS).collect::<Vec<_>>()
    );
    assert!(seen.values().all(|n| *n == 1), "every event exactly once");
    // Both resolved the policy id through the retained policy table.
    for out in &outputs {
        let text = std::fs::read_to_string(out).expect("output");
        let line = text
            .lines()
            .find(|l| l.contains("\"Type\":\"MatchedHostPolicy\""))
            .expect("an alert");
        assert!(
            line.contains("\"PolicyName\":\"edgearmor-test-alert\"")
                && line.contains("\"HostName\":\"gw-e2e\""),
            "{line}"
        );
    }
}
