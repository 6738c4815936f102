//! The `identity` part of the fail-closed guest (`guest/failclosed/10-identity.sh`):
//! fromSource identities live in task-local storage. P (`/usr/bin/ea-protected`,
//! started before the agent) may not read /etc/ea-secret, which everyone else may,
//! and is the only program that may read /etc/ea-key. Losing P's identity would flip
//! both of P's decisions; handing it to another process would let that one read the
//! key and refuse it the secret.

use std::collections::HashMap;

use edgearmor_vm::scenarios::{Alert, alerts, field, outcomes};

use crate::Run;

const P: &str = "/usr/bin/ea-protected";
const HELPER: &str = "/usr/local/bin/setid-probe";
const SECRET: &str = "/etc/ea-secret";
const KEY: &str = "/etc/ea-key";
const SECRET_POLICY: &str = "hsp-identity-secret-not-from-protected";
const KEY_POLICY: &str = "hsp-identity-key-only-from-protected";
const DENIED: (i64, i64) = (-1, 13);
const ALLOWED: (i64, i64) = (0, 0);

/// The text after `prefix` on the first console line starting with it.
fn first<'a>(run: &'a Run, prefix: &str) -> &'a str {
    run.log
        .lines
        .iter()
        .find_map(|l| l.trim_start().strip_prefix(prefix))
        .unwrap_or_else(|| panic!("{}: no {prefix} line", run.kernel()))
}

fn split_fields(line: &str) -> HashMap<&str, &str> {
    line.split_whitespace()
        .filter_map(|f| f.split_once('='))
        .collect()
}

/// `key=value` fields of the first line starting with `prefix`.
fn fields<'a>(run: &'a Run, prefix: &str) -> HashMap<&'a str, &'a str> {
    split_fields(first(run, prefix))
}

fn num(run: &Run, f: &HashMap<&str, &str>, key: &str) -> i64 {
    f.get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{}: no number {key} in {f:?}", run.kernel()))
}

/// `EA-IDOP tag=TAG ...`: (pid, (rc, errno)).
fn op(run: &Run, tag: &str) -> (i64, (i64, i64)) {
    let f = fields(run, &format!("EA-IDOP tag={tag} "));
    (
        num(run, &f, "pid"),
        (num(run, &f, "rc"), num(run, &f, "errno")),
    )
}

fn alerts_of<'a>(all: &'a [Alert], pid: i64, resource: &str) -> Vec<&'a Alert> {
    all.iter()
        .filter(|a| {
            a.get("HostPID").and_then(|v| v.as_i64()) == Some(pid)
                && field(a, "Resource") == resource
        })
        .collect()
}

fn assert_blocked_by(run: &Run, found: &[&Alert], policy: &str, process: &str, what: &str) {
    let k = run.kernel();
    assert!(!found.is_empty(), "{k}: no alert for {what}");
    for a in found {
        assert_eq!(field(a, "PolicyName"), policy, "{k}: {what}: {a:?}");
        assert_eq!(field(a, "ProcessName"), process, "{k}: {what}: {a:?}");
        assert_eq!(field(a, "Action"), "Block", "{k}: {what}: {a:?}");
    }
}

pub fn check(run: &Run) {
    let k = run.kernel();
    // The first agent's alerts, then those of the one that adopted its pins.
    let mut all = alerts(&run.log, "EA-ALERT-identity ");
    all.extend(alerts(&run.log, "EA-ALERT-identity-b "));
    let p = num(run, &fields(run, "EA-SERVE "), "pid");

    // P, started before the agent, is identified: both decisions are P's.
    for (tag, want) in [
        ("before-flood-secret", DENIED),
        ("before-flood-key", ALLOWED),
        ("after-flood-secret", DENIED),
        ("after-flood-key", ALLOWED),
        ("after-flood-thread", DENIED),
        ("adopted-secret", DENIED),
        ("adopted-key", ALLOWED),
    ] {
        assert_eq!(op(run, tag), (p, want), "{k}: P's {tag}");
    }
    // The flood: 50,000 new processes, each opening the hooked secret (permitted:
    // they are not P), none refused.
    let flood = fields(run, "EA-FLOOD ");
    assert_eq!(num(run, &flood, "forks"), 50_000, "{k}: {flood:?}");
    assert_eq!(num(run, &flood, "opened"), 50_000, "{k}: {flood:?}");
    for key in ["denied", "other", "failed"] {
        assert_eq!(num(run, &flood, key), 0, "{k}: {flood:?}");
    }
    eprintln!(
        "{k}: 50,000-fork flood took {} ms",
        num(run, &flood, "elapsed_ms")
    );
    // Two floods at once: forks racing exits and each other, none refused.
    for prefix in ["EA-PAIR-A EA-FLOOD ", "EA-PAIR-B EA-FLOOD "] {
        let pair = fields(run, prefix);
        assert_eq!(num(run, &pair, "opened"), 10_000, "{k}: {prefix}{pair:?}");
        for key in ["denied", "other", "failed"] {
            assert_eq!(num(run, &pair, key), 0, "{k}: {prefix}{pair:?}");
        }
    }
    // P's fork after the flood inherits; an exec replaces the identity.
    let (child, outcome) = op(run, "after-flood-fork");
    assert!(
        child != p && outcome == DENIED,
        "{k}: P's child {child}: {outcome:?}"
    );
    let (exec, outcome) = op(run, "after-flood-exec");
    assert!(
        exec != p && outcome == ALLOWED,
        "{k}: P's exec {exec}: {outcome:?}"
    );
    assert_blocked_by(
        run,
        &alerts_of(&all, p, SECRET),
        SECRET_POLICY,
        P,
        "P's secret",
    );
    assert_blocked_by(
        run,
        &alerts_of(&all, child, SECRET),
        SECRET_POLICY,
        P,
        "P's child",
    );
    assert!(
        alerts_of(&all, p, KEY)
            .iter()
            .all(|a| field(a, "ProcessName") != P)
    );
    assert!(
        alerts_of(&all, exec, SECRET).is_empty(),
        "{k}: exec'd child alerted"
    );

    let adopted = first(run, "EA-AGENT-identity-b ");
    assert!(
        adopted.contains("adopted the enforcement pinned"),
        "{k}: the second agent did not adopt: {adopted}"
    );
    check_spawned(run);
    check_reuse(run, &all, p);

    // Everyone else: the secret is readable, the key is not.
    let out = outcomes(&run.log);
    assert_eq!(out.get("identity-other-secret"), Some(&ALLOWED), "{k}");
    assert_eq!(out.get("identity-other-key"), Some(&DENIED), "{k}");
    let other_key: Vec<&Alert> = all
        .iter()
        .filter(|a| field(a, "Resource") == KEY && field(a, "ProcessName") == HELPER)
        .collect();
    assert_blocked_by(run, &other_key, KEY_POLICY, HELPER, "another program's key");
    assert!(
        !all.iter()
            .any(|a| field(a, "Resource") == SECRET && field(a, "ProcessName") != P),
        "{k}: a read of the secret by another program was refused"
    );
}

/// Children P's executable forked before, while and after the agent started: all
/// identified as P.
fn check_spawned(run: &Run) {
    let k = run.kernel();
    let now = |label: &str| -> i64 {
        let text = first(run, &format!("EA-NOW {label} "));
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{k}: EA-NOW {label} {text}"))
    };
    let (start, ready) = (now("identity-agent-start"), now("identity-agent-ready"));
    eprintln!(
        "{k}: identity part ran {} ms (the agent's start {} ms)",
        (now("identity-done") - start) / 1_000_000,
        (ready - start) / 1_000_000
    );
    let mut during = 0;
    let mut seen = 0;
    for line in run.log.lines_with_prefix("EA-SPAWNED ") {
        let f = split_fields(line);
        seen += 1;
        assert_eq!(f.get(SECRET), Some(&"-1/13"), "{k}: spawned child: {line}");
        assert_eq!(f.get(KEY), Some(&"0/0"), "{k}: spawned child: {line}");
        let forked = num(run, &f, "forked_ns");
        if forked > start && forked < ready {
            during += 1;
        }
    }
    let children = num(run, &fields(run, "EA-SPAWNER "), "children");
    assert_eq!(seen, children, "{k}: every spawned child reported");
    assert!(
        during > 0,
        "{k}: no child was forked while the agent started"
    );
    eprintln!(
        "{k}: {children} children of P's executable, {during} forked while the agent started"
    );
}

/// A process that got P's PID after P exited is not P.
fn check_reuse(run: &Run, all: &[Alert], p: i64) {
    let k = run.kernel();
    let reused = fields(run, "EA-REUSED ");
    assert_eq!(num(run, &reused, "want"), p, "{k}: {reused:?}");
    assert_eq!(
        num(run, &reused, "got"),
        p,
        "{k}: the PID was not reused: {reused:?}"
    );
    assert_eq!(
        op(run, "reuse-key"),
        (p, DENIED),
        "{k}: reused PID reads the key"
    );
    assert_eq!(
        op(run, "reuse-secret"),
        (p, ALLOWED),
        "{k}: reused PID reads the secret"
    );
    let key: Vec<&Alert> = alerts_of(all, p, KEY);
    assert_blocked_by(run, &key, KEY_POLICY, HELPER, "the reused PID's key");
}
