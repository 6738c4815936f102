//! The `files` part of the fail-closed guest (`guest/failclosed/50-files.sh`, issue
//! 14): every way into a protected file. `/etc/shadow` under a Block rule,
//! `/etc/ro/` (recursive) and `/etc/hostname` readOnly; each attempt (its own
//! process) by another name (hard links made before and after the agent started, a
//! bind mount, rename away or over), by metadata (truncate, chmod, chown), by a new
//! name in the protected directory (mkdir, mknod, symlink, link, rename, `O_CREAT`,
//! `O_EXCL`), by renaming the directory, and through descriptors opened before the
//! agent started (read, write, ftruncate, shared writable mmap, a mapping read).
//!
//! For each denied attempt: the exact errno, the protected files' state (content
//! where readable, inode, mode, owner, links, size, mtime, ctime) the same after it
//! as before, and exactly one alert from its process naming the policy, the
//! protected path and the hook. The permitted work runs, changes nothing protected
//! and draws no alert. Every row is printed, then every failure is listed at once.

use std::collections::{HashMap, HashSet};

use edgearmor_probe_abi::{
    FILE_HOOK_CHMOD, FILE_HOOK_CHOWN, FILE_HOOK_FILE_TRUNCATE, FILE_HOOK_LINK, FILE_HOOK_MKDIR,
    FILE_HOOK_MKNOD, FILE_HOOK_MMAP, FILE_HOOK_OPEN, FILE_HOOK_PERMISSION, FILE_HOOK_RENAME,
    FILE_HOOK_RMDIR, FILE_HOOK_SYMLINK, FILE_HOOK_TRUNCATE, FILE_HOOK_UNLINK, FILE_HOOKS,
};
use edgearmor_vm::scenarios::{Alert, alerts, field, outcomes};
use serde_json::Value;

use crate::Run;

const SHADOW: &str = "hsp-files-block-shadow";
const RO_DIR: &str = "hsp-files-readonly-dir";
const HOSTNAME: &str = "hsp-files-readonly-hostname";
/// Every attempt is the helper's process.
const PROBE: &str = "/usr/local/bin/setid-probe";

/// What an attempt must do.
#[derive(Clone, Copy)]
enum Expect {
    /// Runs (rc 0), no alert.
    Runs,
    /// The name an earlier denied attempt would have made does not exist: ENOENT,
    /// no alert.
    Absent,
    /// EACCES from `hook`, one alert of `policy` naming one of `resources`.
    Denied {
        hook: u32,
        policy: &'static str,
        resources: &'static [&'static str],
    },
}

/// `ftruncate` reaches `file_truncate` where the kernel has it, else `path_truncate`;
/// stands for either in the table.
const FTRUNCATE: u32 = u32::MAX;

const fn denied(hook: u32, policy: &'static str, resources: &'static [&'static str]) -> Expect {
    Expect::Denied {
        hook,
        policy,
        resources,
    }
}

/// Every attempt of `50-files.sh`, in its order.
fn table() -> Vec<(&'static str, Expect)> {
    use Expect::{Absent, Runs};
    let shadow = |hook| denied(hook, SHADOW, &["/etc/shadow"]);
    let ro_f = |hook| denied(hook, RO_DIR, &["/etc/ro/f"]);
    let host = |hook| denied(hook, HOSTNAME, &["/etc/hostname"]);
    vec![
        ("fl-ok-read-ro", Runs),
        ("fl-ok-read-ro-sub", Runs),
        ("fl-ok-read-hostname", Runs),
        ("fl-ok-read-ro-pre-link", Runs),
        ("fl-ok-read-ro-bind", Runs),
        ("fl-ok-read-ro-fd", Runs),
        ("fl-ok-read-hostname-fd", Runs),
        ("fl-ok-mmap-private-hostname", Runs),
        ("fl-ok-mmap-read-ro", Runs),
        ("fl-ok-write-elsewhere", Runs),
        ("fl-ok-pkg-stage", Runs),
        ("fl-ok-pkg-rename", Runs),
        ("fl-ok-log-rotate", Runs),
        ("fl-ok-log-create", Runs),
        ("fl-sh-read", shadow(FILE_HOOK_OPEN)),
        ("fl-sh-link", shadow(FILE_HOOK_LINK)),
        ("fl-sh-link-read", Absent),
        ("fl-sh-pre-link-read", shadow(FILE_HOOK_OPEN)),
        ("fl-sh-pre-link-write", shadow(FILE_HOOK_OPEN)),
        ("fl-sh-fd-read", shadow(FILE_HOOK_PERMISSION)),
        ("fl-sh-fd-write", shadow(FILE_HOOK_PERMISSION)),
        ("fl-sh-fd-mmap", shadow(FILE_HOOK_MMAP)),
        // A mapping reads the file without read(2).
        ("fl-sh-fd-mmap-read", shadow(FILE_HOOK_MMAP)),
        ("fl-sh-chmod", shadow(FILE_HOOK_CHMOD)),
        ("fl-sh-chown", shadow(FILE_HOOK_CHOWN)),
        ("fl-sh-fd-ftruncate", shadow(FTRUNCATE)),
        ("fl-sh-truncate", shadow(FILE_HOOK_TRUNCATE)),
        ("fl-sh-exchange", shadow(FILE_HOOK_RENAME)),
        ("fl-sh-replace", shadow(FILE_HOOK_RENAME)),
        ("fl-sh-mv-away", shadow(FILE_HOOK_RENAME)),
        ("fl-sh-mv-away-read", Absent),
        ("fl-sh-unlink", shadow(FILE_HOOK_UNLINK)),
        ("fl-ro-write", ro_f(FILE_HOOK_OPEN)),
        (
            "fl-ro-sub-write",
            denied(FILE_HOOK_OPEN, RO_DIR, &["/etc/ro/sub/g"]),
        ),
        ("fl-ro-pre-link-write", ro_f(FILE_HOOK_OPEN)),
        ("fl-ro-bind-write", ro_f(FILE_HOOK_OPEN)),
        ("fl-ro-fd-write", ro_f(FILE_HOOK_PERMISSION)),
        ("fl-ro-fd-mmap", ro_f(FILE_HOOK_MMAP)),
        (
            "fl-ro-creat",
            denied(FILE_HOOK_MKNOD, RO_DIR, &["/etc/ro/new"]),
        ),
        (
            "fl-ro-creat-excl",
            denied(FILE_HOOK_MKNOD, RO_DIR, &["/etc/ro/new-excl"]),
        ),
        (
            "fl-ro-bind-creat",
            denied(FILE_HOOK_MKNOD, RO_DIR, &["/etc/ro/new-bind"]),
        ),
        (
            "fl-ro-mkdir",
            denied(FILE_HOOK_MKDIR, RO_DIR, &["/etc/ro/newdir"]),
        ),
        (
            "fl-ro-symlink",
            denied(FILE_HOOK_SYMLINK, RO_DIR, &["/etc/ro/link"]),
        ),
        (
            "fl-ro-mknod",
            denied(FILE_HOOK_MKNOD, RO_DIR, &["/etc/ro/fifo"]),
        ),
        (
            "fl-ro-link-in",
            denied(FILE_HOOK_LINK, RO_DIR, &["/etc/ro/linked"]),
        ),
        (
            "fl-ro-rename-in",
            denied(FILE_HOOK_RENAME, RO_DIR, &["/etc/ro/renamed"]),
        ),
        ("fl-ro-chmod", ro_f(FILE_HOOK_CHMOD)),
        ("fl-ro-chown", ro_f(FILE_HOOK_CHOWN)),
        ("fl-ro-fd-ftruncate", ro_f(FTRUNCATE)),
        ("fl-ro-truncate", ro_f(FILE_HOOK_TRUNCATE)),
        ("fl-ro-exchange", ro_f(FILE_HOOK_RENAME)),
        // A directory is named as an entry or as itself (with the `/`): either is
        // the protected name.
        (
            "fl-ro-rmdir",
            denied(
                FILE_HOOK_RMDIR,
                RO_DIR,
                &["/etc/ro/empty", "/etc/ro/empty/"],
            ),
        ),
        ("fl-ro-unlink", ro_f(FILE_HOOK_UNLINK)),
        ("fl-ro-rename-out", ro_f(FILE_HOOK_RENAME)),
        (
            "fl-ro-rename-subdir",
            denied(FILE_HOOK_RENAME, RO_DIR, &["/etc/ro/sub"]),
        ),
        // "/etc/ro" is not under the rule's "/etc/ro/"; the directory itself is.
        (
            "fl-ro-rename-dir",
            denied(FILE_HOOK_RENAME, RO_DIR, &["/etc/ro/"]),
        ),
        ("fl-hn-link", host(FILE_HOOK_LINK)),
        // The link was refused: `/tmp/fl/h` is a new, unprotected file.
        ("fl-hn-link-append", Runs),
        ("fl-hn-fd-write", host(FILE_HOOK_PERMISSION)),
        ("fl-hn-fd-mmap", host(FILE_HOOK_MMAP)),
        ("fl-hn-fd-ftruncate", host(FTRUNCATE)),
        ("fl-hn-write", host(FILE_HOOK_OPEN)),
    ]
}

fn hook_name(id: u32) -> &'static str {
    FILE_HOOKS
        .iter()
        .find(|(hook, _)| *hook == id)
        .map_or("?", |(_, name)| name)
}

/// `EA-<tag> NAME VALUE` lines as NAME -> VALUE.
fn tagged<'a>(run: &'a Run, tag: &'a str) -> HashMap<&'a str, &'a str> {
    run.log
        .lines_with_prefix(tag)
        .filter_map(|rest| rest.split_once(' ').or(Some((rest, ""))))
        .collect()
}

fn pid_of(alert: &Alert) -> Option<u64> {
    alert.get("PID").and_then(Value::as_u64)
}

/// The faults of one alert against a Denied row ("" when it is right).
fn alert_faults(a: &Alert, hook: &str, policy: &str, resources: &[&str]) -> Vec<String> {
    let data = field(a, "Data");
    let data_ok = data == format!("lsm={hook}") || data.starts_with(&format!("lsm={hook} "));
    let mut faults = Vec::new();
    for (key, ok) in [
        ("PolicyName", field(a, "PolicyName") == policy),
        ("Operation", field(a, "Operation") == "File"),
        ("ProcessName", field(a, "ProcessName") == PROBE),
        ("Resource", resources.contains(&field(a, "Resource"))),
        ("Data", data_ok),
        ("Action", field(a, "Action") == "Block"),
        ("Result", field(a, "Result") == "Permission denied"),
    ] {
        if !ok {
            faults.push(format!("{key}={:?}", field(a, key)));
        }
    }
    faults
}

pub fn check(run: &Run) {
    let k = run.kernel();
    let ops = outcomes(&run.log);
    let pids = tagged(run, "EA-FPID ");
    let same: HashSet<&str> = run.log.lines_with_prefix("EA-FSAME ").collect();
    let all = alerts(&run.log, "EA-ALERT-files ");
    let ftruncate = match run.log.first_with_prefix("EA-FL-FTRUNCATE-HOOK ") {
        Some("file") => FILE_HOOK_FILE_TRUNCATE,
        _ => FILE_HOOK_TRUNCATE,
    };
    let uptime = |at: &str| {
        run.log
            .lines_with_prefix("EA-FL-UPTIME ")
            .find_map(|l| l.strip_prefix(at)?.trim().parse::<f64>().ok())
    };
    if let (Some(start), Some(end)) = (uptime("start"), uptime("end")) {
        eprintln!(
            "{k}: files part: {:.1} s from agent start to stop",
            end - start
        );
    }
    let mut failures = Vec::new();
    let mut attempt_pids = HashSet::new();
    eprintln!("{k}: files part (attempt | rc errno | alerts | protected state)");
    for (name, expect) in table() {
        let outcome = ops.get(name).copied();
        let pid: Option<u64> = pids.get(name).and_then(|p| p.parse().ok());
        let mine: Vec<&Alert> = all
            .iter()
            .filter(|a| pid.is_some() && pid_of(a) == pid)
            .collect();
        attempt_pids.extend(pid);
        let mut faults = Vec::new();
        if !same.contains(name) {
            let prefix = format!("EA-FDIFF {name} ");
            let diff: Vec<&str> = run.log.lines_with_prefix(&prefix).collect();
            faults.push(format!("changed protected files: {diff:?}"));
        }
        let (want, alert_want) = match expect {
            Expect::Runs => ((0, 0), None),
            Expect::Absent => ((-1, i64::from(libc::ENOENT)), None),
            Expect::Denied {
                hook,
                policy,
                resources,
            } => {
                let hook = if hook == FTRUNCATE { ftruncate } else { hook };
                (
                    (-1, i64::from(libc::EACCES)),
                    Some((hook, policy, resources)),
                )
            }
        };
        if outcome != Some(want) {
            faults.push(format!("rc/errno {outcome:?}, want {want:?}"));
        }
        match alert_want {
            None if !mine.is_empty() => faults.push(format!("unexpected alerts {mine:?}")),
            None => {}
            Some((hook, policy, resources)) => {
                let hook = hook_name(hook);
                if mine.len() != 1 {
                    let seen: Vec<(&str, &str)> = mine
                        .iter()
                        .map(|a| (field(a, "Data"), field(a, "Resource")))
                        .collect();
                    faults.push(format!("{} alerts (want 1, {hook}): {seen:?}", mine.len()));
                }
                for a in &mine {
                    let bad = alert_faults(a, hook, policy, resources);
                    if !bad.is_empty() {
                        faults.push(format!("alert {}", bad.join(" ")));
                    }
                }
            }
        }
        let verdict = if faults.is_empty() { "ok" } else { "FAIL" };
        eprintln!(
            "{k}: {verdict:4} {name:30} {outcome:?} alerts={} {}",
            mine.len(),
            faults.join("; ")
        );
        if !faults.is_empty() {
            failures.push(format!("{name}: {}", faults.join("; ")));
        }
    }
    // Nothing else drew an alert (the state checks read only what may be read).
    for a in &all {
        if !pid_of(a).is_some_and(|p| attempt_pids.contains(&p)) {
            failures.push(format!("alert from no attempt: {a:?}"));
        }
    }
    let before: Vec<&str> = run.log.lines_with_prefix("EA-FL-HASH-BEFORE ").collect();
    let after: Vec<&str> = run.log.lines_with_prefix("EA-FL-HASH-AFTER ").collect();
    if before.len() != 4 || before != after {
        failures.push(format!("content before {before:?} after {after:?}"));
    }
    assert!(
        failures.is_empty(),
        "{k}: files: {} failures:\n{}\n{}",
        failures.len(),
        failures.join("\n"),
        run.agent_err("files")
    );
}
