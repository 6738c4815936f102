//! The walking skeleton, end to end on real kernels: the committed BPF object, loaded
//! by the static musl agent inside Debian's kernels under QEMU, denies setgid/setuid
//! to `/usr/sbin/sshd` and reports each denial as one KubeArmor JSON alert.
//!
//! Matrix: x86_64 Debian 6.1 and 6.12, arm64 Debian 6.12 (enforcing), arm64 Debian
//! 6.1 (no BPF trampolines: the agent must refuse with errno 524 named).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edgearmor_vm::{
    Arch, BootConfig, BootLog, Flavour, Initramfs, KernelName, boot, cache_dir, fetch_busybox,
    fetch_kernel, guest_binaries, workspace_root,
};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

fn committed_object_sha256() -> String {
    let bytes = std::fs::read(workspace_root().join("probes/edgearmor-probes.bpf.o"))
        .expect("committed object");
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn boot_setid_guest(arch: Arch, series: &str) -> BootLog {
    let cache = cache_dir();
    let kernel = fetch_kernel(&cache, arch, series).expect("guest kernel");
    let busybox = fetch_busybox(&cache, arch).expect("busybox");
    let bins = guest_binaries(arch).expect("static guest binaries");
    let guest = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest");
    let mut initramfs = Initramfs::busybox_base(&busybox);
    initramfs
        .file_from_host("/init", &guest.join("setid-init.sh"), 0o755)
        .file_from_host("/usr/local/bin/edgearmor", &bins.agent, 0o755)
        .file_from_host("/usr/local/bin/setid-probe", &bins.setid_probe, 0o755)
        .file_from_host(
            "/etc/edgearmor/rules.toml",
            &guest.join("setid-rules.toml"),
            0o644,
        );
    for policy in [
        "block-setgid-from-sshd-policy.yaml",
        "audit-setuid-from-sshd-audited.yaml",
        "other-host-only.yaml",
    ] {
        initramfs.file_from_host(
            &format!("/etc/edgearmor/policies/{policy}"),
            &guest.join("policies").join(policy),
            0o644,
        );
    }
    let work = workspace_root()
        .join("target/vm-runs")
        .join(format!("setid-{}-{series}", arch.name()));
    std::fs::create_dir_all(&work).expect("work dir");
    let initrd = work.join("initramfs.cpio");
    initramfs.write(&initrd).expect("initramfs written");
    let mut cfg = BootConfig::new(kernel, &initrd, work.join("console.log"));
    cfg.done_marker = "EA-DONE".into();
    cfg.extra_append = "quiet loglevel=1".into();
    cfg.timeout = match arch {
        Arch::X86_64 => Duration::from_secs(300),
        Arch::Aarch64 => Duration::from_secs(600),
    };
    let log = boot(&cfg).unwrap_or_else(|e| panic!("{} {series} guest: {e}", arch.name()));
    eprintln!(
        "{} {series}: console log at {}",
        arch.name(),
        work.join("console.log").display()
    );
    log
}

/// `key=value` fields of an `EA-SETID` line.
fn fields(line: &str) -> HashMap<&str, &str> {
    line.split_whitespace()
        .filter_map(|f| f.split_once('='))
        .collect()
}

/// Scenario name -> the helper's EA-SETID fields.
fn scenario_results(log: &BootLog) -> HashMap<String, HashMap<String, String>> {
    let mut current = None;
    let mut out = HashMap::new();
    for line in &log.lines {
        if let Some(name) = line.strip_prefix("EA-SCENARIO ") {
            current = Some(name.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("EA-SETID ") {
            let name = current.clone().expect("EA-SETID after a scenario");
            let f = fields(rest)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            out.insert(name, f);
        }
    }
    out
}

/// KubeArmor's key order (protobuf declaration order) for host alerts.
const KUBEARMOR_KEY_ORDER: &[&str] = &[
    "Timestamp",
    "UpdatedTime",
    "ClusterName",
    "HostName",
    "HostPPID",
    "HostPID",
    "PPID",
    "PID",
    "UID",
    "ParentProcessName",
    "ProcessName",
    "PolicyName",
    "Severity",
    "Tags",
    "ATags",
    "Message",
    "Type",
    "Source",
    "Operation",
    "Resource",
    "Data",
    "EventData",
    "Enforcer",
    "Action",
    "Result",
    "Cwd",
    "TTY",
    "MaxAlertsPerSec",
    "DroppingAlertsInterval",
    "ExecEvent",
    "KubeArmorVersion",
    "NodeID",
    "UserName",
];

/// Keys of the user's "Blocked SETGID" example, in its order.
const SEED_SETGID_KEYS: &[&str] = &[
    "Timestamp",
    "UpdatedTime",
    "ClusterName",
    "HostName",
    "HostPPID",
    "HostPID",
    "PPID",
    "PID",
    "UID",
    "ParentProcessName",
    "ProcessName",
    "PolicyName",
    "Type",
    "Source",
    "Operation",
    "Data",
    "Enforcer",
    "Action",
    "Result",
];

/// Keys are known and in KubeArmor order.
fn assert_key_order_only(alert: &Map<String, Value>) {
    let keys: Vec<&str> = alert.keys().map(String::as_str).collect();
    let positions: Vec<usize> = keys
        .iter()
        .map(|k| {
            KUBEARMOR_KEY_ORDER
                .iter()
                .position(|o| o == k)
                .unwrap_or_else(|| panic!("unknown key {k}"))
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "keys out of KubeArmor order: {keys:?}"
    );
}

fn assert_key_order(alert: &Map<String, Value>) {
    assert_key_order_only(alert);
    let keys: Vec<&str> = alert.keys().map(String::as_str).collect();
    let seed_keys: Vec<&str> = keys
        .iter()
        .copied()
        .filter(|k| SEED_SETGID_KEYS.contains(k))
        .collect();
    assert_eq!(
        seed_keys, SEED_SETGID_KEYS,
        "every key of the seed's Blocked SETGID example"
    );
}

fn alerts(log: &BootLog) -> Vec<Map<String, Value>> {
    log.lines_with_prefix("EA-ALERT ")
        .map(|line| match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(m)) => m,
            other => panic!("alert is not a JSON object: {line:?} ({other:?})"),
        })
        .collect()
}

fn int(alert: &Map<String, Value>, key: &str) -> i64 {
    alert
        .get(key)
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("{key} missing in {alert:?}"))
}

fn string<'a>(alert: &'a Map<String, Value>, key: &str) -> &'a str {
    alert
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{key} missing in {alert:?}"))
}

fn assert_common(log: &BootLog, arch: Arch, series: &str) {
    let timeouts: Vec<&str> = log.lines_with_prefix("EA-TIMEOUT ").collect();
    assert!(timeouts.is_empty(), "guest waits timed out: {timeouts:?}");
    let kernel = log
        .first_with_prefix("EA-KERNEL ")
        .expect("guest printed its kernel");
    let name = KernelName::parse(series).expect("kernel name");
    let release = kernel.split_whitespace().next().unwrap_or_default();
    assert!(
        release.starts_with(&format!("{}.", name.series))
            && release.ends_with(&name.flavour.debian(arch)),
        "booted {kernel}, wanted {series}"
    );
    let version = log
        .first_with_prefix("EA-VERSION ")
        .expect("agent version line");
    let sha = committed_object_sha256();
    assert!(
        version.ends_with(&format!("probes-sha256 {sha}")),
        "{} {series}: agent embeds a different BPF object: {version} (committed {sha})",
        arch.name()
    );
}

fn enforcing_vm(arch: Arch, series: &str) {
    let log = boot_setid_guest(arch, series);
    assert_common(&log, arch, series);
    let check: Vec<&str> = log.lines_with_prefix("EA-CHECK ").collect();
    assert_eq!(
        log.first_with_prefix("EA-CHECK-EXIT "),
        Some("0"),
        "edgearmor check: {check:#?}"
    );
    // The agent checked its ring buffers against the kernel's own page size.
    let page = match KernelName::parse(series).expect("kernel name").flavour {
        Flavour::Pages16k => 16384,
        Flavour::Standard | Flavour::Rt => 4096,
    };
    assert!(
        check.iter().any(|l| l.starts_with("ok")
            && l.contains("ring buffer")
            && l.contains(&format!("in whole {page}-byte pages"))),
        "{check:#?}"
    );
    // `warn` when an optional hook is refused (path_unlink before 6.6): the rest
    // attaches and enforces.
    assert!(
        check
            .iter()
            .any(|l| (l.starts_with("ok") || l.starts_with("WARN")) && l.contains("attach")),
        "{check:#?}"
    );
    let ready = log.first_with_prefix("EA-AGENT ").unwrap_or_else(|| {
        panic!(
            "agent never became ready; its stderr:\n{}",
            log.lines_with_prefix("EA-AGENTERR ")
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    assert!(
        ready.contains(&committed_object_sha256()),
        "ready line names the object: {ready}"
    );
    assert_eq!(
        log.first_with_prefix("EA-AGENT-EXIT "),
        Some("0"),
        "agent stops cleanly on SIGTERM"
    );

    let results = scenario_results(&log);
    let shell_pid: i64 = log
        .first_with_prefix("EA-SHELL pid=")
        .and_then(|p| p.trim().parse().ok())
        .expect("shell pid");
    let blocked = [
        "sshd-setgid",
        "sshd-setuid",
        "link-setgid",
        "sshd-setresgid",
        "fork-setgid",
        "early-setgid",
    ];
    let allowed = ["other-setgid", "other-setuid", "policy-setuid-allowed"];
    for name in blocked {
        let r = results
            .get(name)
            .unwrap_or_else(|| panic!("scenario {name} printed no result"));
        assert_eq!(
            (r["rc"].as_str(), r["errno"].as_str()),
            ("-1", "1"),
            "{name} must get EPERM: {r:?}"
        );
    }
    for name in allowed {
        let r = results
            .get(name)
            .unwrap_or_else(|| panic!("scenario {name} printed no result"));
        assert_eq!(r["rc"], "0", "{name} must succeed: {r:?}");
    }

    let (alerts, system_events): (Vec<_>, Vec<_>) = alerts(&log)
        .into_iter()
        .partition(|a| string(a, "Type") == "MatchedHostPolicy");
    let pid_of = |name: &str| -> i64 { results[name]["pid"].parse().expect("pid") };
    let ppid_of = |name: &str| -> i64 { results[name]["ppid"].parse().expect("ppid") };
    for name in allowed {
        assert!(
            alerts.iter().all(|a| int(a, "PID") != pid_of(name)),
            "{name} must raise no alert"
        );
    }
    let mut by_scenario = HashMap::new();
    for name in blocked {
        let matching: Vec<_> = alerts
            .iter()
            .filter(|a| int(a, "PID") == pid_of(name))
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "{name}: exactly one alert, got {matching:?}"
        );
        by_scenario.insert(name, matching[0]);
    }

    // The flood: every call denied; what the ring buffer could not hold is counted and
    // reported, so alerts + reported drops account for every call.
    let flood = &results["flood-setgid"];
    assert_eq!(
        flood["denied"], "2000",
        "every flood call is denied: {flood:?}"
    );
    let flood_alerts = alerts
        .iter()
        .filter(|a| int(a, "PID") == pid_of("flood-setgid"))
        .count();
    let reported_drops: u64 = system_events
        .iter()
        .map(|e| {
            assert_eq!(string(e, "Operation"), "AlertLoss", "{e:?}");
            let data = string(e, "Data");
            data.strip_prefix("dropped=")
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{data}"))
        })
        .sum();
    assert!(
        reported_drops > 0,
        "a 2000-call flood must overflow the ring buffer"
    );
    assert_eq!(
        flood_alerts as u64 + reported_drops,
        2000,
        "alerts {flood_alerts} + drops {reported_drops}"
    );
    // KubeArmorHostPolicy `syscalls` rules: one Block, one Audit (a policy for another
    // host is skipped: sshd-other stays allowed, checked above).
    let one_alert = |name: &str| {
        let matching: Vec<_> = alerts
            .iter()
            .filter(|a| int(a, "PID") == pid_of(name))
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "{name}: exactly one alert, got {matching:?}"
        );
        matching[0]
    };
    let r = &results["policy-setgid"];
    assert_eq!(
        (r["rc"].as_str(), r["errno"].as_str()),
        ("-1", "1"),
        "policy Block: {r:?}"
    );
    let a = one_alert("policy-setgid");
    assert_key_order_only(a);
    assert_eq!(string(a, "PolicyName"), "hsp-block-setgid-from-sshd-policy");
    assert_eq!(string(a, "Severity"), "9");
    assert_eq!(
        string(a, "Tags"),
        "MITRE,MITRE_T1548_abuse_elevation_control"
    );
    assert_eq!(string(a, "Message"), "setgid from sshd-policy is blocked");
    assert_eq!(string(a, "ProcessName"), "/usr/bin/sshd-policy");
    assert_eq!(string(a, "Data"), "syscall=SYS_SETGID userid=0");
    assert_eq!(
        (string(a, "Action"), string(a, "Result")),
        ("Block", "Operation not permitted")
    );
    let r = &results["audited-setuid"];
    assert_eq!(r["rc"], "0", "policy Audit lets the call through: {r:?}");
    let a = one_alert("audited-setuid");
    assert_eq!(string(a, "PolicyName"), "hsp-audit-setuid");
    assert_eq!(string(a, "Severity"), "3");
    assert_eq!(string(a, "Data"), "syscall=SYS_SETUID userid=0");
    assert_eq!(
        (string(a, "Action"), string(a, "Result")),
        ("Audit", "Passed")
    );
    assert_eq!(
        alerts.len(),
        blocked.len() + flood_alerts + 2,
        "no alerts beyond the blocked and audited calls"
    );

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    for (name, alert) in &by_scenario {
        assert_key_order(alert);
        assert_eq!(int(alert, "HostPID"), int(alert, "PID"), "{name}");
        assert_eq!(int(alert, "HostPPID"), int(alert, "PPID"), "{name}");
        assert_eq!(
            int(alert, "PPID"),
            ppid_of(name),
            "{name}: PPID is the real parent"
        );
        assert_eq!(int(alert, "UID"), 0, "{name}");
        assert!(
            (int(alert, "Timestamp") - now).abs() < 3600,
            "{name}: Timestamp near now"
        );
        let updated = string(alert, "UpdatedTime");
        assert!(
            updated.len() == 27 && updated.ends_with('Z') && updated.as_bytes()[19] == b'.',
            "{updated}"
        );
        assert_eq!(string(alert, "ClusterName"), "vmtest");
        assert_eq!(string(alert, "HostName"), "gw-vm");
        assert_eq!(
            string(alert, "ProcessName"),
            "/usr/sbin/sshd",
            "{name}: resolved executable path"
        );
        assert_eq!(string(alert, "Source"), "/usr/sbin/sshd", "{name}");
        assert_eq!(string(alert, "PolicyName"), "hsp-block-sshd-setid");
        assert_eq!(string(alert, "Severity"), "8");
        assert_eq!(
            string(alert, "Message"),
            "sshd may not change its uid or gid"
        );
        assert_eq!(string(alert, "Type"), "MatchedHostPolicy");
        assert_eq!(string(alert, "Operation"), "Syscall");
        assert_eq!(string(alert, "Enforcer"), "BPFLSM");
        assert_eq!(string(alert, "Action"), "Block");
        assert_eq!(string(alert, "Result"), "Operation not permitted");
    }
    let data = |name: &str| string(by_scenario[name], "Data").to_owned();
    assert_eq!(data("sshd-setgid"), "syscall=SYS_SETGID userid=0");
    assert_eq!(data("sshd-setuid"), "syscall=SYS_SETUID userid=0");
    assert_eq!(data("sshd-setresgid"), "syscall=SYS_SETRESGID userid=1234");
    for name in [
        "sshd-setgid",
        "sshd-setuid",
        "link-setgid",
        "sshd-setresgid",
    ] {
        assert_eq!(
            ppid_of(name),
            shell_pid,
            "{name} was started by the init shell"
        );
        assert_eq!(
            string(by_scenario[name], "ParentProcessName"),
            "/bin/busybox",
            "{name}"
        );
    }
    // A forked worker of sshd keeps sshd's identity; its parent is sshd.
    assert_eq!(
        string(by_scenario["fork-setgid"], "ParentProcessName"),
        "/usr/sbin/sshd"
    );
}

#[test]
fn x86_64_debian_6_1_enforces_setid_rules() {
    enforcing_vm(Arch::X86_64, "6.1");
}

#[test]
fn x86_64_debian_6_12_enforces_setid_rules() {
    enforcing_vm(Arch::X86_64, "6.12");
}

#[test]
fn arm64_debian_6_12_enforces_setid_rules() {
    enforcing_vm(Arch::Aarch64, "6.12");
}

#[test]
fn arm64_debian_6_12_rt_enforces_setid_rules() {
    enforcing_vm(Arch::Aarch64, "6.12-rt");
}

#[test]
fn arm64_debian_6_12_16k_enforces_setid_rules() {
    enforcing_vm(Arch::Aarch64, "6.12-16k");
}

#[test]
fn arm64_debian_6_1_refuses_when_required_and_monitors_in_auto_mode() {
    let log = boot_setid_guest(Arch::Aarch64, "6.1");
    assert_common(&log, Arch::Aarch64, "6.1");
    let check: Vec<&str> = log.lines_with_prefix("EA-CHECK ").collect();
    assert_eq!(
        log.first_with_prefix("EA-CHECK-EXIT "),
        Some("2"),
        "edgearmor check: {check:#?}"
    );
    assert!(
        check
            .iter()
            .any(|l| l.starts_with("FAIL") && l.contains("attach") && l.contains("errno 524")),
        "check names the failed attach and errno 524: {check:#?}"
    );

    // enforcement = "required": refuses, naming the missing piece.
    assert_eq!(
        log.first_with_prefix("EA-REQUIRED-EXIT "),
        Some("2"),
        "exit code 2: cannot enforce"
    );
    let err: Vec<&str> = log.lines_with_prefix("EA-REQERR ").collect();
    let refusal = err
        .iter()
        .find(|l| l.starts_with("edgearmor: cannot enforce here:"))
        .unwrap_or_else(|| panic!("no refusal line: {err:?}"));
    assert!(
        refusal.contains("no BPF trampoline support") && refusal.contains("errno 524"),
        "refusal must name the missing trampoline support and errno 524: {refusal}"
    );

    // enforcement = "auto" (the default): monitor-only, execs of watched binaries reported.
    let ready = log
        .first_with_prefix("EA-AGENT ")
        .expect("the auto-mode agent starts");
    assert!(
        ready.contains("monitor-only") && ready.contains("errno 524"),
        "{ready}"
    );
    assert_eq!(log.first_with_prefix("EA-AGENT-EXIT "), Some("0"));
    let results = scenario_results(&log);
    for name in ["sshd-setgid", "other-setgid", "link-setgid"] {
        assert_eq!(
            results[name]["rc"], "0",
            "{name}: nothing is enforced in monitor-only mode"
        );
    }
    let alerts = alerts(&log);
    let pid_of = |name: &str| -> i64 { results[name]["pid"].parse().expect("pid") };
    for name in ["sshd-setgid", "link-setgid"] {
        let seen: Vec<_> = alerts
            .iter()
            .filter(|a| a.get("PID").and_then(Value::as_i64) == Some(pid_of(name)))
            .collect();
        assert_eq!(seen.len(), 1, "{name}: one exec alert: {alerts:?}");
        let a = seen[0];
        assert_key_order_only(a);
        assert_eq!(string(a, "Type"), "MatchedHostPolicy");
        assert_eq!(string(a, "Operation"), "Process");
        assert_eq!(
            string(a, "ProcessName"),
            "/usr/sbin/sshd",
            "{name}: resolved path"
        );
        assert_eq!(string(a, "Resource"), "/usr/sbin/sshd");
        assert_eq!(string(a, "ParentProcessName"), "/bin/busybox");
        assert_eq!(string(a, "Data"), "syscall=SYS_EXECVE");
        assert_eq!(string(a, "Enforcer"), "eBPF Monitor");
        assert_eq!(string(a, "Action"), "Audit");
        assert_eq!(string(a, "Result"), "Passed");
        assert_eq!(string(a, "PolicyName"), "hsp-block-sshd-setid");
    }
    assert!(
        alerts
            .iter()
            .all(|a| a.get("PID").and_then(Value::as_i64) != Some(pid_of("other-setgid"))),
        "an unwatched executable raises nothing"
    );
}
