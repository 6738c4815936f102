//! Enforcement that outlives the agent: while a loop keeps trying a blocked exec, the
//! agent is SIGKILLed, started again, and replaced by another binary; not one attempt
//! may succeed, and the alerts of all three agents together name every attempt
//! exactly once (the pinned ring buffer hands over what no agent was there to read).
//! Then an event storm of 100,000 denied execs: the agent's RSS, sampled during the
//! storm, stays under its budget and every event is either an alert or counted in a
//! loss report. Finally
//! `edgearmor unload` really removes enforcement.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use edgearmor_vm::{
    Arch, BootConfig, BootLog, Initramfs, boot, cache_dir, fetch_busybox, fetch_kernel,
    guest_binaries, workspace_root,
};
use serde_json::Value;

const BLOCK_TARGET: &str = "apiVersion: security.kubearmor.com/v1
kind: KubeArmorHostPolicy
metadata:
  name: hsp-block-target
spec:
  nodeSelector:
    matchLabels:
      kubearmor.io/hostname: \"*\"
  severity: 5
  process:
    matchPaths:
      - path: /usr/bin/target
  action: Block
";

/// RSS budget under the storm (issue: 16 MB), sampled while it runs.
const RSS_BUDGET_KB: u64 = 16 * 1024;

fn boot_restart_guest() -> BootLog {
    let arch = Arch::X86_64;
    let cache = cache_dir();
    let kernel = fetch_kernel(&cache, arch, "6.12").expect("kernel");
    let busybox = fetch_busybox(&cache, arch).expect("busybox");
    let bins = guest_binaries(arch).expect("static binaries");
    let guest = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest");
    let mut initramfs = Initramfs::busybox_base(&busybox);
    initramfs
        .file_from_host("/init", &guest.join("restart-init.sh"), 0o755)
        .file_from_host("/usr/local/bin/edgearmor", &bins.agent, 0o755)
        .file_from_host("/usr/local/bin/setid-probe", &bins.setid_probe, 0o755)
        .file_bytes(
            "/etc/edgearmor/policies/block-target.yaml",
            BLOCK_TARGET.as_bytes().to_vec(),
            0o644,
        );
    let work = workspace_root().join("target/vm-runs/restart-x86_64");
    std::fs::create_dir_all(&work).expect("work dir");
    let initrd = work.join("initramfs.cpio");
    initramfs.write(&initrd).expect("initramfs");
    let mut cfg = BootConfig::new(kernel, &initrd, work.join("console.log"));
    cfg.done_marker = "EA-DONE".into();
    cfg.extra_append = "quiet loglevel=1".into();
    cfg.timeout = Duration::from_secs(900);
    boot(&cfg).expect("guest ran")
}

fn fields(line: &str) -> HashMap<&str, u64> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
        .collect()
}

fn json_lines(log: &BootLog, prefix: &str) -> Vec<Value> {
    log.lines_with_prefix(prefix)
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn loss_count(event: &Value) -> u64 {
    event["Data"]
        .as_str()
        .and_then(|d| d.strip_prefix("dropped="))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("loss report {event}"))
}

#[test]
fn x86_64_enforcement_survives_kill_restart_and_upgrade() {
    let log = boot_restart_guest();
    let errs = ["a", "b", "c", "storm"]
        .iter()
        .map(|n| {
            log.lines_with_prefix(&format!("EA-AGENTERR-{n} "))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect::<Vec<_>>()
        .join("\n---\n");
    let timeouts: Vec<&str> = log.lines_with_prefix("EA-TIMEOUT ").collect();
    assert!(timeouts.is_empty(), "{timeouts:?}\n{errs}");
    assert!(log.first_with_prefix("EA-KILLED").is_some());
    for agent in ["b", "c"] {
        let prefix = format!("EA-AGENTERR-{agent} ");
        let ready = log
            .lines_with_prefix(&prefix)
            .find(|l| l.starts_with("edgearmor: ready"))
            .unwrap_or_else(|| panic!("agent {agent} never ready\n{errs}"));
        assert!(
            ready.contains("adopted the enforcement pinned"),
            "{agent}: {ready}"
        );
    }
    assert_eq!(log.first_with_prefix("EA-AGENT-B-EXIT "), Some("0"));

    // Not one attempt got through, across the kill, the restart and the upgrade.
    let line = log.first_with_prefix("EA-LOOP ").expect("loop result");
    let f = fields(line);
    assert_eq!((f["passed"], f["other"]), (0, 0), "{line}");
    assert!(f["denied"] >= 100, "{line}");

    // No attempt is reported twice, whichever agent read it; what could not be
    // reported is counted (events that arrive while an agent loads overflow the ring
    // buffer and are reported as losses by the next one), and only a SIGKILLed
    // agent's in-memory queue and batch can vanish uncounted.
    let mut pids = HashSet::new();
    let mut count = 0;
    let mut lost = 0;
    for agent in ["a", "b", "c"] {
        for alert in json_lines(&log, &format!("EA-ALERT-{agent} ")) {
            if alert["Resource"] == "/usr/bin/target" {
                assert_eq!(alert["Action"], "Block", "{alert}");
                assert_eq!(alert["PolicyName"], "hsp-block-target", "{alert}");
                let pid = alert["PID"].as_u64().expect("PID");
                assert!(pids.insert(pid), "duplicate alert for pid {pid}");
                count += 1;
            } else if alert["Operation"] == "AlertLoss" {
                lost += loss_count(&alert);
            }
        }
    }
    let denied = f["denied"];
    assert!(
        count + lost <= denied,
        "alerts {count} + losses {lost} exceed the {denied} attempts: something was counted twice"
    );
    // The agent queue (256) and a batch (32) are all a SIGKILL can take.
    assert!(
        count + lost + 288 >= denied,
        "alerts {count} + losses {lost} miss more of the {denied} attempts than a SIGKILL can"
    );

    // The storm: bounded memory, every event accounted for.
    let storm = fields(log.first_with_prefix("EA-STORM ").expect("storm result"));
    assert_eq!((storm["denied"], storm["passed"]), (100_000, 0));
    let rss: HashMap<&str, u64> = log
        .lines_with_prefix("EA-RSS ")
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some((
                parts.next()?.trim_end_matches(':'),
                parts.next()?.parse().ok()?,
            ))
        })
        .collect();
    let storm_max_kb: u64 = log
        .first_with_prefix("EA-RSS-STORM-MAX ")
        .and_then(|n| n.trim().parse().ok())
        .expect("RSS samples");
    eprintln!(
        "agent RSS: idle {:?}, storm max {storm_max_kb} kB, after {} kB, lifetime peak (load) {} kB",
        log.first_with_prefix("EA-RSS-IDLE "),
        rss["VmRSS"],
        rss["VmHWM"]
    );
    assert!(
        storm_max_kb > 0 && storm_max_kb < RSS_BUDGET_KB,
        "RSS under the storm {storm_max_kb} kB, budget {RSS_BUDGET_KB} kB"
    );
    let alerts: u64 = log
        .first_with_prefix("EA-STORM-ALERTS ")
        .and_then(|n| n.trim().parse().ok())
        .expect("storm alert count");
    let lost: u64 = json_lines(&log, "EA-STORMSYS ")
        .iter()
        .filter(|e| e["Operation"] == "AlertLoss")
        .map(loss_count)
        .sum();
    assert_eq!(
        alerts + lost,
        100_000,
        "alerts {alerts} + reported losses {lost}"
    );
    assert_eq!(log.first_with_prefix("EA-STORM-EXIT "), Some("0"));

    // `edgearmor unload` removes the pins, and with them enforcement.
    assert!(
        log.first_with_prefix("EA-LEFT ").is_none(),
        "pins left after unload"
    );
    let last_op = log
        .lines_with_prefix("EA-OP ")
        .last()
        .expect("exec after unload");
    assert!(last_op.ends_with("rc=0 errno=0"), "{last_op}");
}
