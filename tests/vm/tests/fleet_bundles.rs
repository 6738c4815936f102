//! Signed policy bundles over a real mosquitto, enforced in a real kernel: the host
//! publishes bundles one after the other (a valid one, a forged signature, an older
//! version, one for another node, an oversize one, then a newer valid one); the guest
//! tries a blocked exec after each and reports the syscall outcome, so "the previous
//! policy stays enforced" is checked by the kernel's answer, not by logs.
//!
//! Host and guest move in lock-step: the host offers bundle N+1 only once it has seen
//! both the agent's report on bundle N (MQTT, `.../policy/reported`) and the guest's
//! `EA-OP` line for it on the console (followed live through the console tap). The
//! guest runs its exec only after the agent's verdict on bundle N is on its stderr.
//! So each exec sees exactly the policy the verdict on bundle N left in force: never
//! an earlier one, never a later one.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use edgearmor_bundle::{BundleBody, BundleFile, Scope, SigningKey, create};
use edgearmor_vm::broker::{Broker, Subscriber, WAIT, free_port, scratch};
use edgearmor_vm::network::{add_virtio_net, restricted_nic_args};
use edgearmor_vm::{
    Arch, BootConfig, Initramfs, boot, cache_dir, fetch_busybox, fetch_kernel, guest_binaries,
    workspace_root,
};
use serde_json::Value;

fn ls_policy(name: &str, action: &str, padding: usize) -> Vec<u8> {
    format!(
        "apiVersion: security.kubearmor.com/v1
kind: KubeArmorHostPolicy
metadata:
  name: {name}
spec:
  nodeSelector:
    matchLabels:
      kubearmor.io/hostname: \"*\"
  severity: 6
  message: \"ls from the fleet\"
  process:
    matchPaths:
      - path: /usr/bin/ls
  action: {action}
#{}
",
        "x".repeat(padding)
    )
    .into_bytes()
}

fn bundle(
    key: &SigningKey,
    version: u64,
    scope: Scope,
    targets: &[&str],
    policy: Vec<u8>,
) -> Vec<u8> {
    let body = BundleBody {
        version,
        created_unix: 1_800_000_000,
        targets: targets.iter().map(|t| t.to_string()).collect(),
        files: vec![BundleFile {
            name: "ls.yaml".into(),
            contents: policy,
        }],
        scope,
    };
    create(key, &body).expect("a valid bundle")
}

const MAX_BYTES: usize = 8192;

/// The host's view of the guest's console, line by line as the guest prints it.
struct GuestConsole {
    console: Receiver<String>,
    /// `EA-OP` lines seen so far: one per exec the guest ran after an offer.
    ops: usize,
    /// When the guest finished (`EA-DONE`, or its console closed).
    finished: Option<Instant>,
    deadline: Instant,
}

/// What a wait is about: the guest's own progress, or something the broker shows.
#[derive(Clone, Copy, PartialEq)]
enum Awaited {
    Guest,
    Broker,
}

impl GuestConsole {
    /// Follows the console until `done(ops)` holds (checked before each line, and at
    /// least every 20 ms for conditions on the broker side). Fails, naming `what`,
    /// when the guest gives up a wait (`EA-TIMEOUT`) or the deadline passes; a wait
    /// on the guest also fails once the guest has finished, a wait on the broker gets
    /// [`WAIT`] more after that (what the agent published before it stopped may still
    /// be on its way to the subscriber).
    fn until(
        &mut self,
        what: &str,
        awaited: Awaited,
        mut done: impl FnMut(usize) -> bool,
    ) -> Result<(), String> {
        loop {
            if done(self.ops) {
                return Ok(());
            }
            if Instant::now() >= self.deadline {
                return Err(format!("timed out waiting for {what}"));
            }
            if let Some(at) = self.finished {
                if awaited == Awaited::Guest {
                    return Err(format!("the guest finished before {what}"));
                }
                if at.elapsed() > WAIT {
                    return Err(format!(
                        "{what}: not there {WAIT:?} after the guest finished"
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            let left = self.deadline.saturating_duration_since(Instant::now());
            match self
                .console
                .recv_timeout(left.min(Duration::from_millis(20)))
            {
                Ok(line) => {
                    let line = line.trim();
                    if line.starts_with("EA-OP ") {
                        self.ops += 1;
                    } else if line.starts_with("EA-TIMEOUT ") {
                        return Err(format!("the guest gave up ({line}) before {what}"));
                    } else if line.ends_with("EA-DONE") {
                        self.finished = Some(Instant::now());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => self.finished = Some(Instant::now()),
            }
        }
    }
}

#[test]
fn x86_64_guest_applies_only_valid_bundles_and_reports_each() {
    let arch = Arch::X86_64;
    let cache = cache_dir();
    let kernel = fetch_kernel(&cache, arch, "6.12").expect("kernel");
    let busybox = fetch_busybox(&cache, arch).expect("busybox");
    let bins = guest_binaries(arch).expect("static binaries");
    let work = workspace_root().join("target/vm-runs/fleet-x86_64");
    std::fs::create_dir_all(&work).expect("work dir");

    let fleet_key = SigningKey::from_seed(&[42; 32]);
    let forger = SigningKey::from_seed(&[66; 32]);
    let config = format!(
        "[fleet]\npublic_keys = [\"/etc/edgearmor/fleet.pub\"]\nbundle_max_bytes = {MAX_BYTES}\nstate_dir = \"/var/lib/edgearmor/fleet\"\n"
    );

    let port = free_port();
    let _broker = Broker::start(&scratch(&work, "host"), port, "");
    let sub = Arc::new(Subscriber::connect(port, "fleet-host"));

    let guest = workspace_root().join("tests/vm/guest");
    let mut initramfs = Initramfs::busybox_base(&busybox);
    let net_setup = add_virtio_net(&mut initramfs, &kernel).expect("virtio-net modules");
    initramfs
        .file_bytes("/etc/net-setup.sh", net_setup, 0o644)
        .file_from_host("/init", &guest.join("fleet-init.sh"), 0o755)
        .file_from_host("/usr/local/bin/edgearmor", &bins.agent, 0o755)
        .file_from_host("/usr/local/bin/setid-probe", &bins.setid_probe, 0o755)
        .file_bytes("/etc/edgearmor/fleet.toml", config.into_bytes(), 0o644)
        .file_bytes(
            "/etc/edgearmor/fleet.pub",
            fleet_key
                .verifying_key()
                .to_text()
                .as_str()
                .as_bytes()
                .to_vec(),
            0o644,
        );
    let initrd = work.join("initramfs.cpio");
    initramfs.write(&initrd).expect("initramfs");

    // The host's side of the sequence: offer a bundle, wait for its report.
    let fleet_topic = "edgearmor/vmtest/policy";
    let node_topic = "edgearmor/vmtest/gw-fleet/policy";
    let offers: Vec<(&str, Vec<u8>)> = vec![
        (
            fleet_topic,
            bundle(
                &fleet_key,
                2,
                Scope::Fleet,
                &[],
                ls_policy("fleet-block-ls", "Block", 0),
            ),
        ),
        (
            node_topic,
            bundle(
                &forger,
                3,
                Scope::Fleet,
                &[],
                ls_policy("forged-audit-ls", "Audit", 0),
            ),
        ),
        (
            fleet_topic,
            bundle(
                &fleet_key,
                1,
                Scope::Fleet,
                &[],
                ls_policy("old-audit-ls", "Audit", 0),
            ),
        ),
        (
            fleet_topic,
            bundle(
                &fleet_key,
                4,
                Scope::Fleet,
                &["other-gw"],
                ls_policy("foreign-audit-ls", "Audit", 0),
            ),
        ),
        (
            node_topic,
            bundle(
                &fleet_key,
                5,
                Scope::Fleet,
                &[],
                ls_policy("huge-audit-ls", "Audit", MAX_BYTES),
            ),
        ),
        (
            node_topic,
            bundle(
                &fleet_key,
                6,
                Scope::Node,
                &["gw-*"],
                ls_policy("node-audit-ls", "Audit", 0),
            ),
        ),
    ];
    let mut cfg = BootConfig::new(kernel, &initrd, work.join("console.log"));
    cfg.done_marker = "EA-DONE".into();
    cfg.extra_append = "quiet loglevel=1".into();
    cfg.extra_qemu_args = restricted_nic_args(port);
    cfg.timeout = Duration::from_secs(600);
    let (tap, console) = channel();
    cfg.console_tap = Some(tap);

    let publisher_sub = sub.clone();
    let mut guest = GuestConsole {
        console,
        ops: 0,
        finished: None,
        deadline: Instant::now() + cfg.timeout,
    };
    let publisher = std::thread::spawn(move || -> Result<(), String> {
        guest.until("the agent online", Awaited::Broker, |_| {
            publisher_sub
                .on_topic("gw-fleet/status")
                .iter()
                .any(|(p, _)| String::from_utf8_lossy(p).contains("\"online\""))
        })?;
        for (i, (topic, payload)) in offers.into_iter().enumerate() {
            publisher_sub.publish_retained(topic, payload);
            let report = format!("the report on offer {}", i + 1);
            guest.until(&report, Awaited::Broker, |_| {
                publisher_sub.on_topic("gw-fleet/policy/reported").len() > i
            })?;
            let exec = format!("the guest's exec after offer {}", i + 1);
            guest.until(&exec, Awaited::Guest, |ops| ops > i)?;
        }
        Ok(())
    });

    let log = boot(&cfg).expect("guest ran");
    // Closes the console tap: a publisher still waiting on the guest stops.
    drop(cfg);
    let err = log
        .lines_with_prefix("EA-AGENTERR ")
        .collect::<Vec<_>>()
        .join("\n");
    let published = publisher
        .join()
        .unwrap_or_else(|_| Err("the host publisher panicked".into()));
    assert!(published.is_ok(), "host publisher: {published:?}\n{err}");
    let timeouts: Vec<&str> = log.lines_with_prefix("EA-TIMEOUT ").collect();
    assert!(timeouts.is_empty(), "{timeouts:?}\n{err}");
    assert_eq!(log.first_with_prefix("EA-AGENT-EXIT "), Some("0"), "{err}");

    // The kernel's answer after each offer.
    let mut outcomes = Vec::new();
    let mut step = None;
    for line in &log.lines {
        if let Some(name) = line.strip_prefix("EA-STEP ") {
            step = Some(name.trim().to_owned());
        } else if let Some(op) = line.strip_prefix("EA-OP ") {
            outcomes.push((step.clone().expect("op after a step"), op.to_owned()));
        }
    }
    let expect = [
        ("applied-v2", "rc=-1 errno=13"),
        ("bad-signature", "rc=-1 errno=13"),
        ("rollback-v1", "rc=-1 errno=13"),
        ("foreign-v4", "rc=-1 errno=13"),
        ("oversize", "rc=-1 errno=13"),
        ("applied-v6", "rc=0 errno=0"),
    ];
    assert_eq!(outcomes.len(), expect.len(), "{outcomes:?}\n{err}");
    for ((step, op), (want_step, want)) in outcomes.iter().zip(expect) {
        assert_eq!(step, want_step);
        assert!(op.ends_with(want), "{step}: {op} (want {want})");
    }

    // The reports, in order, retained.
    let reports: Vec<Value> = sub
        .on_topic("gw-fleet/policy/reported")
        .iter()
        .map(|(p, _)| serde_json::from_slice(p).expect("report is JSON"))
        .collect();
    let summary: Vec<(u64, String, String)> = reports
        .iter()
        .map(|r| {
            (
                r["version"].as_u64().unwrap_or(u64::MAX),
                r["result"].as_str().unwrap_or("").to_owned(),
                r["reason"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(summary.len(), 6, "{summary:?}");
    assert_eq!((summary[0].0, summary[0].1.as_str()), (2, "applied"));
    assert_eq!(summary[1].1, "rejected");
    assert!(summary[1].2.contains("signature"), "{summary:?}");
    assert_eq!((summary[2].0, summary[2].1.as_str()), (1, "rejected"));
    assert!(summary[2].2.contains("version"), "{summary:?}");
    assert_eq!((summary[3].0, summary[3].1.as_str()), (4, "rejected"));
    assert!(summary[3].2.contains("targets"), "{summary:?}");
    assert_eq!(summary[4].1, "rejected");
    assert!(summary[4].2.contains("exceeds the limit"), "{summary:?}");
    assert_eq!((summary[5].0, summary[5].1.as_str()), (6, "applied"));
    assert_eq!(reports[5]["scope"], "node");
    assert_eq!(reports[0]["sha256"].as_str().map(str::len), Some(64));

    // Alerts name the bundle's policy: Block under v2, Audit under v6.
    let alerts: Vec<Value> = log
        .lines_with_prefix("EA-ALERT ")
        .map(|l| serde_json::from_str(l).expect("alert JSON"))
        .filter(|a: &Value| a["Resource"] == "/usr/bin/ls")
        .collect();
    let names: Vec<(&str, &str)> = alerts
        .iter()
        .map(|a| {
            (
                a["PolicyName"].as_str().unwrap_or(""),
                a["Action"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![
            ("fleet-block-ls", "Block"),
            ("fleet-block-ls", "Block"),
            ("fleet-block-ls", "Block"),
            ("fleet-block-ls", "Block"),
            ("fleet-block-ls", "Block"),
            ("node-audit-ls", "Audit"),
        ]
    );
}
