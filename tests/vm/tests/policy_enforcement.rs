//! The policy engine on real kernels: KubeArmorHostPolicy files, unchanged, enforced
//! by the committed BPF object for every class (process, file, network,
//! capabilities), with allow-list mode, default postures, another host's policy,
//! and hot reload (SIGHUP and file changes) while a loop keeps exec'ing the target.
//!
//! One guest boot per kernel runs every phase (`guest/policy-init.sh`); each
//! scenario is checked twice: the syscall's outcome as the helper saw it, and the
//! exact fields of the KubeArmor alert the agent wrote (or that none was written).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use edgearmor_vm::{
    Arch, BootConfig, BootLog, Initramfs, boot, cache_dir, fetch_busybox, fetch_kernel,
    guest_binaries,
    scenarios::{Alert, about, alerts, field, outcomes},
    workspace_root,
};

const PHASES: [&str; 7] = ["exec", "usr-bin", "files", "raw", "cap", "allowlist", "hot"];

fn boot_policy_guest(arch: Arch, series: &str) -> BootLog {
    let cache = cache_dir();
    let kernel = fetch_kernel(&cache, arch, series).expect("guest kernel");
    let busybox = fetch_busybox(&cache, arch).expect("busybox");
    let bins = guest_binaries(arch).expect("static guest binaries");
    let guest = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest");
    let mut initramfs = Initramfs::busybox_base(&busybox);
    initramfs
        .file_from_host("/init", &guest.join("policy-init.sh"), 0o755)
        .file_from_host("/usr/local/bin/edgearmor", &bins.agent, 0o755)
        .file_from_host("/usr/local/bin/setid-probe", &bins.setid_probe, 0o755)
        .file_from_host(
            "/etc/edgearmor/agent-a.toml",
            &guest.join("agent-a.toml"),
            0o644,
        )
        .file_from_host(
            "/etc/edgearmor/agent-b.toml",
            &guest.join("agent-b.toml"),
            0o644,
        );
    for phase in PHASES {
        let dir = guest.join("policy-phases").join(phase);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .collect();
        files.sort();
        for file in files {
            let name = file.file_name().expect("file name").to_string_lossy();
            initramfs.file_from_host(
                &format!("/etc/edgearmor/phases/{phase}/{name}"),
                &file,
                0o644,
            );
        }
    }
    let work = workspace_root()
        .join("target/vm-runs")
        .join(format!("policy-{}-{series}", arch.name()));
    std::fs::create_dir_all(&work).expect("work dir");
    let initrd = work.join("initramfs.cpio");
    initramfs.write(&initrd).expect("initramfs written");
    let mut cfg = BootConfig::new(kernel, &initrd, work.join("console.log"));
    cfg.done_marker = "EA-DONE".into();
    cfg.extra_append = "quiet loglevel=1".into();
    cfg.timeout = match arch {
        Arch::X86_64 => Duration::from_secs(600),
        Arch::Aarch64 => Duration::from_secs(900),
    };
    let log = boot(&cfg).unwrap_or_else(|e| panic!("{} {series} guest: {e}", arch.name()));
    eprintln!(
        "{} {series}: console log at {}",
        arch.name(),
        work.join("console.log").display()
    );
    log
}

/// Exactly one alert about `resource`, with these fields.
fn assert_one(alerts: &[Alert], operation: &str, resource: &str, want: &[(&str, &str)]) {
    let found = about(alerts, operation, resource);
    assert_eq!(
        found.len(),
        1,
        "one {operation} alert for {resource}: {found:#?}"
    );
    let a = found[0];
    for (key, value) in want {
        assert_eq!(
            field(a, key),
            *value,
            "{key} of the {operation} alert for {resource}: {a:#?}"
        );
    }
    assert_eq!(field(a, "Enforcer"), "BPFLSM", "{a:#?}");
    assert_eq!(field(a, "ClusterName"), "vmtest");
    assert_eq!(field(a, "HostName"), "gw-vm");
}

fn assert_none(alerts: &[Alert], operation: &str, resource: &str) {
    let found = about(alerts, operation, resource);
    assert!(
        found.is_empty(),
        "no {operation} alert for {resource}: {found:#?}"
    );
}

const EACCES: i64 = 13;
const EPERM: i64 = 1;

fn policy_engine_vm(arch: Arch, series: &str) {
    let log = boot_policy_guest(arch, series);
    let agent_err = |p: &str| log.lines_with_prefix(p).collect::<Vec<_>>().join("\n");
    let ready = log.first_with_prefix("EA-AGENT ").unwrap_or_else(|| {
        panic!(
            "agent A never became ready:\n{}",
            agent_err("EA-AGENTERR-A ")
        )
    });
    // The file hooks resolve paths by their own dentry walk (6.1 refuses bpf_d_path
    // in path_* hooks): unlinks are checked on every kernel, nothing is degraded.
    assert!(
        !ready.contains("degraded"),
        "{} {series}: ready line: {ready}",
        arch.name()
    );
    let timeouts: Vec<&str> = log.lines_with_prefix("EA-TIMEOUT ").collect();
    assert!(
        timeouts.is_empty(),
        "guest waits timed out: {timeouts:?}\nagent A:\n{}\nagent B:\n{}",
        agent_err("EA-AGENTERR-A "),
        agent_err("EA-AGENTERR-B ")
    );
    assert_eq!(log.first_with_prefix("EA-AGENT-A-EXIT "), Some("0"));
    assert_eq!(log.first_with_prefix("EA-AGENT-B-EXIT "), Some("0"));
    let results = outcomes(&log);
    let outcome = |name: &str| -> (i64, i64) {
        *results
            .get(name)
            .unwrap_or_else(|| panic!("scenario {name} printed no result"))
    };
    let expect = [
        ("ls-blocked", (-1, EACCES)),
        ("lsx-control", (0, 0)),
        ("date-from-bash", (0, 0)),
        ("date-from-other", (-1, EACCES)),
        ("apt-blocked", (-1, EACCES)),
        ("apt-get-blocked", (-1, EACCES)),
        ("xapt-control", (0, 0)),
        ("other-host-no-effect", (0, 0)),
        ("usr-bin-tool", (-1, EACCES)),
        ("usr-bin-deep", (-1, EACCES)),
        ("opt-control", (0, 0)),
        ("passwd-read", (-1, EACCES)),
        ("group-read", (0, 0)),
        ("srv-read", (0, 0)),
        ("srv-write", (-1, EACCES)),
        ("log-write", (0, 0)),
        ("log-unlink", (0, 0)),
        ("raw-socket", (-1, EACCES)),
        ("tcp-socket", (0, 0)),
        ("cap-raw-socket", (-1, EPERM)),
        ("cap-tcp-socket", (0, 0)),
        ("audit-posture-forbidden", (0, 0)),
        ("audit-posture-allowed", (0, 0)),
        ("block-posture-forbidden", (-1, EACCES)),
        ("block-posture-allowed", (0, 0)),
    ];
    for (name, want) in expect {
        assert_eq!(
            outcome(name),
            want,
            "{} {series}: {name} (rc, errno)",
            arch.name()
        );
    }

    let a = alerts(&log, "EA-ALERT-A ");
    let probe = "/usr/local/bin/setid-probe";
    let blocked_exec = |policy: &str, severity: &str| {
        vec![
            ("PolicyName", policy.to_owned()),
            ("Severity", severity.to_owned()),
            ("Type", "MatchedHostPolicy".to_owned()),
            ("Source", probe.to_owned()),
            ("ParentProcessName", probe.to_owned()),
            ("Data", "lsm=SECURITY_BPRM_CHECK".to_owned()),
            ("Action", "Block".to_owned()),
            ("Result", "Permission denied".to_owned()),
        ]
    };
    let check = |resource: &str, op: &str, fields: Vec<(&str, String)>| {
        let borrowed: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_one(&a, op, resource, &borrowed);
    };
    let mut ls = blocked_exec("hsp-block-ls", "5");
    ls.extend([
        ("ProcessName", "/usr/bin/ls".to_owned()),
        ("Tags", "NIST,NIST_800-53_CM-7(4)".to_owned()),
        ("Message", "ls is not allowed on this gateway".to_owned()),
    ]);
    check("/usr/bin/ls", "Process", ls);
    let ls_alert = about(&a, "Process", "/usr/bin/ls")[0];
    assert_eq!(
        ls_alert.get("ATags"),
        Some(&serde_json::json!(["NIST", "NIST_800-53_CM-7(4)"]))
    );
    let mut date = blocked_exec("hsp-date-only-from-bash", "4");
    date[3] = ("Source", "/usr/bin/other-shell".to_owned());
    date[4] = ("ParentProcessName", "/usr/bin/other-shell".to_owned());
    check("/usr/bin/date", "Process", date);
    check(
        "/usr/bin/apt",
        "Process",
        blocked_exec("hsp-block-apt-pattern", "7"),
    );
    check(
        "/usr/bin/apt-get",
        "Process",
        blocked_exec("hsp-block-apt-pattern", "7"),
    );
    check(
        "/usr/bin/tool",
        "Process",
        blocked_exec("hsp-block-usr-bin", "6"),
    );
    check(
        "/usr/bin/sub/deep",
        "Process",
        blocked_exec("hsp-block-usr-bin", "6"),
    );
    for control in [
        "/usr/bin/lsx",
        "/usr/bin/xapt",
        "/usr/bin/hostile",
        "/opt/control",
        "/usr/bin/bash",
    ] {
        assert_none(&a, "Process", control);
    }

    let file = |policy: &str, severity: &str, action: &str, result: &str, data: &str| {
        vec![
            ("PolicyName", policy.to_owned()),
            ("Severity", severity.to_owned()),
            ("ProcessName", probe.to_owned()),
            ("Source", probe.to_owned()),
            ("Data", data.to_owned()),
            ("Action", action.to_owned()),
            ("Result", result.to_owned()),
        ]
    };
    let open = "lsm=SECURITY_FILE_OPEN";
    let mut passwd = file(
        "hsp-block-passwd-reads",
        "8",
        "Block",
        "Permission denied",
        open,
    );
    passwd.push(("Message", "the account database is protected".to_owned()));
    check("/etc/passwd", "File", passwd);
    assert_none(&a, "File", "/etc/group");
    check(
        "/srv/data/report.txt",
        "File",
        file(
            "hsp-readonly-srv-data",
            "5",
            "Block",
            "Permission denied",
            open,
        ),
    );
    check(
        "/var/log/app/sub/new.log",
        "File",
        file("hsp-audit-app-logs", "2", "Audit", "Passed", open),
    );
    check(
        "/var/log/app/old.log",
        "File",
        file(
            "hsp-audit-app-logs",
            "2",
            "Audit",
            "Passed",
            "lsm=SECURITY_PATH_UNLINK",
        ),
    );

    let raw = "domain=AF_INET type=SOCK_RAW protocol=1";
    check(
        raw,
        "Network",
        vec![
            ("PolicyName", "hsp-forbid-raw-sockets".to_owned()),
            ("Tags", "MITRE,MITRE_T1040_network_sniffing".to_owned()),
            ("ProcessName", probe.to_owned()),
            ("Data", "lsm=SECURITY_SOCKET_CREATE".to_owned()),
            ("Action", "Block".to_owned()),
            ("Result", "Permission denied".to_owned()),
        ],
    );
    assert_none(&a, "Network", "domain=AF_INET type=SOCK_STREAM protocol=0");
    check(
        "CAP_NET_RAW",
        "Capabilities",
        vec![
            ("PolicyName", "hsp-deny-cap-net-raw".to_owned()),
            ("Message", "CAP_NET_RAW is denied".to_owned()),
            ("ProcessName", probe.to_owned()),
            ("Data", "lsm=SECURITY_CAPABLE".to_owned()),
            ("Action", "Block".to_owned()),
            ("Result", "Operation not permitted".to_owned()),
        ],
    );
    let posture = |action: &str, result: &str| {
        vec![
            ("PolicyName", "DefaultPosture".to_owned()),
            ("Source", probe.to_owned()),
            ("Data", "lsm=SECURITY_BPRM_CHECK".to_owned()),
            ("Action", action.to_owned()),
            ("Result", result.to_owned()),
        ]
    };
    check("/usr/bin/forbidden", "Process", posture("Audit", "Passed"));
    assert_none(&a, "Process", "/usr/bin/allowed");

    let b = alerts(&log, "EA-ALERT-B ");
    let borrowed: Vec<(String, String)> = posture("Block", "Permission denied")
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    let want: Vec<(&str, &str)> = borrowed
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_one(&b, "Process", "/usr/bin/forbidden", &want);
    assert_none(&b, "Process", "/usr/bin/allowed");

    // Hot reload: every attempt was either denied under the block policy or passed
    // under the audit policy, the switch happened at one instant, and each attempt
    // left exactly one alert of its policy (no window without enforcement).
    let line = log
        .first_with_prefix("EA-LOOP ")
        .expect("the exec loop reported");
    let f: HashMap<&str, u64> = line
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k, v.parse().unwrap_or_else(|_| panic!("{line}"))))
        .collect();
    assert_eq!(
        f["other"], 0,
        "no attempt failed for another reason: {line}"
    );
    assert!(f["denied"] >= 20 && f["passed"] >= 20, "{line}");
    assert_eq!(f["denied"] + f["passed"], f["attempts"], "{line}");
    assert!(
        f["last_denied"] < f["first_passed"],
        "all denials precede all passes: {line}"
    );
    let target = about(&b, "Process", "/usr/bin/target");
    let blocked = target
        .iter()
        .filter(|a| field(a, "PolicyName") == "hsp-hot-target")
        .count() as u64;
    let audited = target
        .iter()
        .filter(|a| {
            field(a, "PolicyName") == "hsp-hot-target-audit" && field(a, "Action") == "Audit"
        })
        .count() as u64;
    assert_eq!(
        blocked, f["denied"],
        "one Block alert per denied attempt ({line})"
    );
    assert_eq!(
        audited, f["passed"],
        "one Audit alert per passed attempt ({line})"
    );
}

#[test]
fn x86_64_debian_6_1_enforces_host_policies() {
    policy_engine_vm(Arch::X86_64, "6.1");
}

#[test]
fn x86_64_debian_6_12_enforces_host_policies() {
    policy_engine_vm(Arch::X86_64, "6.12");
}

#[test]
fn arm64_debian_6_12_enforces_host_policies() {
    policy_engine_vm(Arch::Aarch64, "6.12");
}

#[test]
fn arm64_debian_6_12_rt_enforces_host_policies() {
    policy_engine_vm(Arch::Aarch64, "6.12-rt");
}

#[test]
fn arm64_debian_6_12_16k_enforces_host_policies() {
    policy_engine_vm(Arch::Aarch64, "6.12-16k");
}
