//! The `locked` part of the fail-closed guest (`guest/failclosed/70-locked.sh`,
//! issue 16): tamper protection. As root, with the agent in locked mode: the pins
//! (rm, mv, create, `BPF_OBJ_GET`), their bpffs (umount, lazy umount, a mount over
//! the pin directory), raw `bpf()` through ids (link detach, map update and delete of
//! a rule, a program's fd), the agent (kill -9 and -TERM, ptrace, `/proc/PID/mem`,
//! `process_vm_writev`), its files (the policy directory, agent.toml, the binary by
//! a hard link, rename, truncate, chmod, its directory, state_dir).
//!
//! For each denied attempt: the exact errno and exactly one alert from its process
//! (`Type: MatchedHostPolicy`, `PolicyName: edgearmor-self-protection`,
//! `Action: Block`, the class's `Operation` and hook). The permitted work runs and
//! draws no alert; a blocked exec is blocked before, during, with no agent, and
//! under the next agent; `run` with another configuration or flags is refused, so
//! is `keygen`; a copy of the binary cannot unload; the agent's own reload works; SIGTERM from PID 1
//! stops the agent and the next one adopts the pins, locked; the last step unlocks.

use std::collections::HashMap;

use edgearmor_vm::scenarios::{Alert, alerts, field, outcomes};
use serde_json::Value;

use crate::Run;

const SELF: &str = "edgearmor-self-protection";
const PROBE: &str = "/usr/local/bin/setid-probe";
const EPERM: i64 = libc::EPERM as i64;
const EACCES: i64 = libc::EACCES as i64;

/// What an attempt must do.
#[derive(Clone, Copy)]
enum Expect {
    /// rc 0, no alert.
    Runs,
    /// `errno`, one self-protection alert with `operation` and `Data: lsm=hook`
    /// whose `Resource` contains `resource`.
    Denied {
        errno: i64,
        operation: &'static str,
        hook: &'static str,
        resource: &'static str,
    },
    /// The exec of `/usr/bin/lk-blocked` refused (its alert is counted apart).
    ExecBlocked,
    /// The kernel's own refusal before any hook (`ETXTBSY`: the running agent's
    /// binary opened for writing or truncated), no alert.
    Busy,
}

const fn denied(
    errno: i64,
    operation: &'static str,
    hook: &'static str,
    resource: &'static str,
) -> Expect {
    Expect::Denied {
        errno,
        operation,
        hook,
        resource,
    }
}

fn table() -> Vec<(&'static str, Expect)> {
    use Expect::{Busy, ExecBlocked, Runs};
    let file = |hook, resource| denied(EACCES, "File", hook, resource);
    let bpf = |resource| denied(EPERM, "Syscall", "SECURITY_BPF", resource);
    let agent = |errno, hook, resource| denied(errno, "Process", hook, resource);
    vec![
        ("lk-exec-blocked-before", ExecBlocked),
        (
            "lk-rm-pin",
            file(
                "SECURITY_PATH_UNLINK",
                "/sys/fs/bpf/edgearmor/links/check_exec",
            ),
        ),
        (
            "lk-mv-pin",
            file("SECURITY_PATH_RENAME", "/sys/fs/bpf/edgearmor/RULES"),
        ),
        (
            "lk-mv-pin-dir",
            file("SECURITY_PATH_RENAME", "/sys/fs/bpf/edgearmor"),
        ),
        (
            "lk-create-pin",
            file("SECURITY_PATH_MKDIR", "/sys/fs/bpf/edgearmor/links/new"),
        ),
        (
            "lk-obj-get",
            denied(
                EPERM,
                "File",
                "SECURITY_INODE_PERMISSION",
                "edgearmor pin inode",
            ),
        ),
        (
            "lk-obj-get-map",
            denied(
                EPERM,
                "File",
                "SECURITY_INODE_PERMISSION",
                "edgearmor pin inode",
            ),
        ),
        (
            "lk-umount",
            denied(
                EPERM,
                "Syscall",
                "SECURITY_SB_UMOUNT",
                "umount of the edgearmor pins",
            ),
        ),
        (
            "lk-umount-lazy",
            denied(EPERM, "Syscall", "SECURITY_SB_UMOUNT", "(flags 0x2)"),
        ),
        (
            "lk-mount-over",
            denied(
                EPERM,
                "Syscall",
                "SECURITY_SB_MOUNT",
                "mount on a protected path",
            ),
        ),
        (
            "lk-umount-lazy-sys",
            denied(
                EPERM,
                "Syscall",
                "SECURITY_SB_UMOUNT",
                "or a mount above it (flags 0x2)",
            ),
        ),
        (
            "lk-mount-over-sysfs",
            denied(
                EPERM,
                "Syscall",
                "SECURITY_SB_MOUNT",
                "mount on a protected path",
            ),
        ),
        (
            "lk-mount-over-policies",
            denied(
                EPERM,
                "Syscall",
                "SECURITY_SB_MOUNT",
                "mount on a protected path",
            ),
        ),
        (
            "lk-mount-over-bin-dir",
            denied(
                EPERM,
                "Syscall",
                "SECURITY_SB_MOUNT",
                "mount on a protected path",
            ),
        ),
        ("lk-link-detach", bpf("bpf(BPF_LINK_GET_FD_BY_ID)")),
        ("lk-prog-fd", bpf("bpf(BPF_PROG_GET_FD_BY_ID)")),
        ("lk-map-update", bpf("bpf(BPF_MAP_GET_FD_BY_ID)")),
        ("lk-map-delete", bpf("bpf(BPF_MAP_GET_FD_BY_ID)")),
        ("lk-map-state", bpf("bpf(BPF_MAP_GET_FD_BY_ID)")),
        (
            "lk-kill-9",
            agent(EPERM, "SECURITY_TASK_KILL", "SIGKILL to the agent"),
        ),
        (
            "lk-kill-term",
            agent(EPERM, "SECURITY_TASK_KILL", "SIGTERM to the agent"),
        ),
        (
            "lk-ptrace",
            agent(EPERM, "SECURITY_PTRACE_ACCESS_CHECK", "ptrace of the agent"),
        ),
        (
            "lk-mem-write",
            agent(
                EACCES,
                "SECURITY_PTRACE_ACCESS_CHECK",
                "ptrace of the agent",
            ),
        ),
        (
            "lk-vm-write",
            agent(EPERM, "SECURITY_PTRACE_ACCESS_CHECK", "ptrace of the agent"),
        ),
        (
            "lk-policy-create",
            file(
                "SECURITY_PATH_MKNOD",
                "/etc/edgearmor/failclosed/locked/policies/evil.yaml",
            ),
        ),
        (
            "lk-policy-append",
            file(
                "SECURITY_FILE_OPEN",
                "/etc/edgearmor/failclosed/locked/policies/block.yaml",
            ),
        ),
        (
            "lk-policy-unlink",
            file(
                "SECURITY_PATH_UNLINK",
                "/etc/edgearmor/failclosed/locked/policies/block.yaml",
            ),
        ),
        (
            "lk-policy-dir-rename",
            file(
                "SECURITY_PATH_RENAME",
                "/etc/edgearmor/failclosed/locked/policies",
            ),
        ),
        (
            "lk-config-append",
            file(
                "SECURITY_FILE_OPEN",
                "/etc/edgearmor/failclosed/locked/agent.toml",
            ),
        ),
        (
            "lk-config-rename",
            file(
                "SECURITY_PATH_RENAME",
                "/etc/edgearmor/failclosed/locked/agent.toml",
            ),
        ),
        ("lk-bin-write", Busy),
        (
            "lk-bin-link",
            file("SECURITY_PATH_LINK", "/usr/local/bin/edgearmor"),
        ),
        (
            "lk-bin-rename",
            file("SECURITY_PATH_RENAME", "/usr/local/bin/edgearmor"),
        ),
        ("lk-bin-truncate", Busy),
        (
            "lk-bin-chmod",
            file("SECURITY_PATH_CHMOD", "/usr/local/bin/edgearmor"),
        ),
        (
            "lk-bin-dir-rename",
            file("SECURITY_PATH_RENAME", "/usr/local/bin"),
        ),
        (
            "lk-state-create",
            file("SECURITY_PATH_MKNOD", "/var/lib/ea-locked/new"),
        ),
        (
            "lk-state-append",
            file("SECURITY_FILE_OPEN", "/var/lib/ea-locked/version"),
        ),
        ("lk-ok-ordinary", Runs),
        ("lk-ok-read-config", Runs),
        ("lk-ok-read-bin", Runs),
        ("lk-ok-map-read", Runs),
        ("lk-ok-signal-0", Runs),
        ("lk-exec-blocked-after", ExecBlocked),
        ("lk-exec-blocked-stopped", ExecBlocked),
        (
            "lk-rm-pin-stopped",
            file(
                "SECURITY_PATH_UNLINK",
                "/sys/fs/bpf/edgearmor/links/check_exec",
            ),
        ),
        (
            "lk-bin-write-stopped",
            file("SECURITY_FILE_OPEN", "/usr/local/bin/edgearmor"),
        ),
        (
            "lk-bin-truncate-stopped",
            file("SECURITY_PATH_TRUNCATE", "/usr/local/bin/edgearmor"),
        ),
        ("lk-exec-blocked-adopted", ExecBlocked),
        (
            "lk-kill-9-adopted",
            agent(EPERM, "SECURITY_TASK_KILL", "SIGKILL to the agent"),
        ),
    ]
}

fn pid_of(alert: &Alert) -> Option<u64> {
    alert.get("PID").and_then(Value::as_u64)
}

/// The faults of one alert against a Denied row.
fn alert_faults(a: &Alert, operation: &str, hook: &str, resource: &str) -> Vec<String> {
    let data = field(a, "Data");
    let mut faults = Vec::new();
    for (key, ok) in [
        ("PolicyName", field(a, "PolicyName") == SELF),
        ("Operation", field(a, "Operation") == operation),
        ("ProcessName", field(a, "ProcessName") == PROBE),
        ("Resource", field(a, "Resource").contains(resource)),
        ("Data", data == format!("lsm={hook}")),
        ("Action", field(a, "Action") == "Block"),
    ] {
        if !ok {
            faults.push(format!("{key}={:?}", field(a, key)));
        }
    }
    faults
}

/// The faults of one row.
fn row_faults(
    expect: Expect,
    outcome: Option<(i64, i64)>,
    mine: &[&Alert],
    blocked_execs: usize,
) -> Vec<String> {
    let mut faults = Vec::new();
    let want = match expect {
        Expect::Runs => (0, 0),
        Expect::Denied { errno, .. } => (-1, errno),
        Expect::ExecBlocked => (-1, EACCES),
        Expect::Busy => (-1, i64::from(libc::ETXTBSY)),
    };
    if outcome != Some(want) {
        faults.push(format!("rc/errno {outcome:?}, want {want:?}"));
    }
    match expect {
        Expect::Runs | Expect::Busy if !mine.is_empty() => {
            faults.push(format!("unexpected alerts {mine:?}"))
        }
        Expect::Denied {
            operation,
            hook,
            resource,
            ..
        } => {
            if mine.len() != 1 {
                let seen: Vec<(&str, &str)> = mine
                    .iter()
                    .map(|a| (field(a, "Data"), field(a, "Resource")))
                    .collect();
                faults.push(format!("{} alerts (want 1): {seen:?}", mine.len()));
            }
            for a in mine {
                let bad = alert_faults(a, operation, hook, resource);
                if !bad.is_empty() {
                    faults.push(format!("alert {}", bad.join(" ")));
                }
            }
        }
        Expect::ExecBlocked if blocked_execs == 0 => faults.push("no exec alert at all".into()),
        _ => {}
    }
    faults
}

pub fn check(run: &Run) {
    let k = run.kernel();
    let err = || format!("{}\n{}", run.agent_err("locked"), run.agent_err("locked2"));
    let ops = outcomes(&run.log);
    let pids: HashMap<&str, u64> = run
        .log
        .lines_with_prefix("EA-LPID ")
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(n, p)| Some((n, p.parse().ok()?)))
        .collect();
    let mut all = alerts(&run.log, "EA-ALERT-locked ");
    all.extend(alerts(&run.log, "EA-ALERT-locked2 "));
    let uptime = |at: &str| {
        run.log
            .lines_with_prefix("EA-LK-UPTIME ")
            .find_map(|l| l.strip_prefix(at)?.trim().parse::<f64>().ok())
    };
    if let (Some(start), Some(end)) = (uptime("start"), uptime("end")) {
        eprintln!("{k}: locked part: {:.1} s", end - start);
    }
    for name in ["locked", "locked2"] {
        let tag = format!("EA-AGENT-{name} ");
        let ready = run.log.first_with_prefix(&tag).unwrap_or("");
        assert!(
            ready.contains("ready: enforcing") && ready.contains(", locked (tamper protection"),
            "{k}: {name} agent: {ready}\n{}",
            err()
        );
    }
    let adopted = run.log.first_with_prefix("EA-AGENT-locked2 ").unwrap_or("");
    assert!(
        adopted.contains("adopted the enforcement pinned"),
        "{k}: {adopted}"
    );
    let blocked_execs = all
        .iter()
        .filter(|a| field(a, "PolicyName") == "hsp-locked-block-tool")
        .count();
    // Not locked: what the kernel does itself with BPF_LINK_DETACH on an LSM link.
    eprintln!(
        "{k}: unlocked BPF_LINK_GET_FD_BY_ID + BPF_LINK_DETACH of an LSM link: {:?}",
        ops.get("lk-unlocked-detach")
    );
    let mut failures = Vec::new();
    eprintln!("{k}: locked part (attempt | rc errno | alerts)");
    for (name, expect) in table() {
        let outcome = ops.get(name).copied();
        let pid = pids.get(name).copied();
        let mine: Vec<&Alert> = all
            .iter()
            .filter(|a| pid.is_some() && pid_of(a) == pid)
            .collect();
        let faults = row_faults(expect, outcome, &mine, blocked_execs);
        let verdict = if faults.is_empty() { "ok" } else { "FAIL" };
        eprintln!(
            "{k}: {verdict:4} {name:26} {outcome:?} alerts={} {}",
            mine.len(),
            faults.join("; ")
        );
        if !faults.is_empty() {
            failures.push(format!("{name}: {}", faults.join("; ")));
        }
    }
    // Four blocked execs (before, after, with no agent, under the next), each with
    // its alert.
    if blocked_execs != 4 {
        failures.push(format!("{blocked_execs} blocked-exec alerts, want 4"));
    }
    check_lifecycle(run, &all, &pids, &mut failures);
    assert!(
        failures.is_empty(),
        "{k}: locked: {} failures:\n{}\n{}",
        failures.len(),
        failures.join("\n"),
        err()
    );
}

/// `run` refusals, the copy of the binary, the reload, the stop from PID 1 and the
/// unlock.
fn check_lifecycle(
    run: &Run,
    all: &[Alert],
    pids: &HashMap<&str, u64>,
    failures: &mut Vec<String>,
) {
    let line = |tag: &str| run.log.first_with_prefix(tag).unwrap_or("").to_owned();
    let other = line("EA-LK-RUN-OTHER ");
    if !(other.starts_with("1 ") && other.contains("the kernel is locked")) {
        failures.push(format!("run with another config: {other:?}"));
    }
    let flags = line("EA-LK-RUN-FLAGS ");
    if !(flags.starts_with("1 ") && flags.contains("--policies would override")) {
        failures.push(format!("run with flags: {flags:?}"));
    }
    let keygen = line("EA-LK-KEYGEN ");
    if keygen != "1 0 the kernel is locked" {
        failures.push(format!("keygen on the locked gateway: {keygen:?}"));
    }
    let copy_pid = pids.get("lk-copy-unload").copied();
    let copy_alerts = all
        .iter()
        .filter(|a| copy_pid.is_some() && pid_of(a) == copy_pid)
        .filter(|a| field(a, "PolicyName") == SELF)
        .count();
    if copy_alerts == 0 {
        failures.push("the copy's unload drew no self-protection alert".into());
    }
    let pins = line("EA-LK-PINS-AFTER-COPY ");
    if pins.trim().parse::<usize>().unwrap_or(0) == 0 {
        failures.push(format!("links left after the copy's unload: {pins:?}"));
    }
    // "EA-TRACED-PID 123 rc=1": the traced binary's unload failed, with alerts.
    let traced = line("EA-LK-TRACED ");
    let traced_pid: Option<u64> = traced
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok());
    let traced_alerts = all
        .iter()
        .filter(|a| traced_pid.is_some() && pid_of(a) == traced_pid)
        .filter(|a| field(a, "PolicyName") == SELF)
        .count();
    if traced_alerts == 0 || traced.ends_with("rc=0") {
        failures.push(format!(
            "the binary exec'd traced acted as the agent: {traced:?}"
        ));
    }
    let pins = line("EA-LK-PINS-AFTER-TRACED ");
    if pins.trim().parse::<usize>().unwrap_or(0) == 0 {
        failures.push(format!("links left after the traced unload: {pins:?}"));
    }
    if run.log.first_with_prefix("EA-LK-RELOADED").is_none() {
        failures.push("the agent's own reload did not apply".into());
    }
    for name in ["locked", "locked2"] {
        let exit = line(&format!("EA-AGENT-{name}-EXIT "));
        if exit != "0" {
            failures.push(format!("{name} after SIGTERM from PID 1: exit {exit:?}"));
        }
    }
    if run.log.first_with_prefix("EA-LK-MARKER-GONE").is_none() {
        failures.push("the lock marker outlived unload".into());
    }
}
