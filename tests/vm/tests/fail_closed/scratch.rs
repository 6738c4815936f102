//! The `scratch` part of the fail-closed guest (`guest/failclosed/20-scratch.sh`):
//! decisions that preemption, path length and the number of pattern prefixes do not
//! change.

use std::collections::HashMap;

use edgearmor_vm::scenarios::{Alert, alerts, field, outcomes};

use crate::Run;

const EACCES: i64 = 13;

/// `key=value` fields of the first line starting with `prefix` whose `key0` is `value0`.
fn fields<'a>(
    run: &'a Run,
    prefix: &'a str,
    key0: &str,
    value0: &str,
) -> HashMap<&'a str, &'a str> {
    run.log
        .lines_with_prefix(prefix)
        .map(|l| {
            l.split_whitespace()
                .filter_map(|f| f.split_once('='))
                .collect::<HashMap<_, _>>()
        })
        .find(|f| f.get(key0) == Some(&value0))
        .unwrap_or_else(|| panic!("{}: no {prefix} line with {key0}={value0}", run.kernel()))
}

/// `key=value` fields of the first line starting with `prefix`.
fn first<'a>(run: &'a Run, prefix: &'a str) -> HashMap<&'a str, &'a str> {
    let line = run
        .log
        .first_with_prefix(prefix)
        .unwrap_or_else(|| panic!("{}: no {prefix} line", run.kernel()));
    line.split_whitespace()
        .filter_map(|f| f.split_once('='))
        .collect()
}

fn num(f: &HashMap<&str, &str>, key: &str) -> u64 {
    f.get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number {key} in {f:?}"))
}

pub fn check(run: &Run) {
    let not_enforcing: Vec<&str> = run
        .log
        .lines_with_prefix("EA-SCRATCH-NOT-ENFORCING ")
        .chain(run.log.lines_with_prefix("EA-SCRATCH-AGENTERR "))
        .collect();
    assert!(
        not_enforcing.is_empty(),
        "{}: the scratch part's agent did not enforce:\n{}",
        run.kernel(),
        not_enforcing.join("\n")
    );
    race(run);
    let ops = outcomes(&run.log);
    let all = alerts(&run.log, "EA-ALERT-scratch ");
    patterns(run, &ops, &all);
    long_paths(run, &ops, &all);
}

/// 100,000 blocked opens all denied, 100,000 permitted reads all allowed, every alert
/// naming the policy of what the process did (and made by that process).
fn race(run: &Run) {
    let k = run.kernel();
    let secret = fields(run, "EA-LOOP ", "target", "/tmp/scratch/secret");
    let ro = fields(run, "EA-LOOP ", "target", "/tmp/scratch/ro-a");
    let aud = fields(run, "EA-LOOP ", "target", "/tmp/scratch/aud-b");
    eprintln!("{k}: race: blocked {secret:?}, read-only {ro:?}, audited {aud:?}");
    assert_eq!(
        (num(&secret, "attempts"), num(&secret, "denied")),
        (100_000, 100_000),
        "{k}: every open of the blocked file is denied: {secret:?}"
    );
    for reads in [&ro, &aud] {
        assert_eq!(
            (num(reads, "attempts"), num(reads, "passed")),
            (50_000, 50_000),
            "{k}: every permitted read passes: {reads:?}"
        );
    }
    let r = first(run, "EA-SCRATCH-RACE ");
    eprintln!("{k}: race alerts: {r:?}");
    assert_eq!(
        num(&r, "secret_alerts"),
        num(&r, "secret_alerts_by_blocker"),
        "{k}: only the blocked opener's opens are reported under its policy: {r:?}"
    );
    assert_eq!(
        num(&r, "audit_alerts"),
        num(&r, "audit_alerts_by_reader"),
        "{k}: only the audited reader's reads are reported under the audit policy: {r:?}"
    );
    assert_eq!(
        (num(&r, "alerts"), num(&r, "readonly_alerts")),
        (num(&r, "secret_alerts") + num(&r, "audit_alerts"), 0),
        "{k}: no alert names another policy: {r:?}"
    );
    assert_eq!(
        num(&r, "alerts") + num(&r, "lost"),
        num(&r, "expected"),
        "{k}: every decision is an alert or a reported loss: {r:?}"
    );
    assert!(
        num(&r, "secret_alerts") <= 100_000 && num(&r, "audit_alerts") <= 50_000,
        "{k}: {r:?}"
    );
}

fn outcome(run: &Run, ops: &HashMap<String, (i64, i64)>, name: &str) -> (i64, i64) {
    *ops.get(name)
        .unwrap_or_else(|| panic!("{}: no outcome for {name}", run.kernel()))
}

fn alert_for<'a>(all: &'a [Alert], op: &str, policy: &str, resource: &str) -> Option<&'a Alert> {
    all.iter().find(|a| {
        field(a, "Operation") == op
            && field(a, "PolicyName") == policy
            && field(a, "Resource").starts_with(resource)
            && field(a, "Action") == "Block"
    })
}

/// Patterns under five nested prefixes all apply; unrelated patterns do not switch
/// off a deeper one; a sixth, unrelated prefix is unaffected.
fn patterns(run: &Run, ops: &HashMap<String, (i64, i64)>, all: &[Alert]) {
    let k = run.kernel();
    for f in [
        "/top.p5",
        "/tmp/t.p5",
        "/tmp/scratch/t.p5",
        "/tmp/scratch/g/t.p5",
        "/tmp/scratch/g/h/t.p5",
    ] {
        let got = outcome(run, ops, &format!("scratch-pattern-read {f}"));
        assert_eq!(got, (-1, EACCES), "{k}: {f} matches its pattern");
        assert!(
            alert_for(all, "File", "scratch-patterns-file", f).is_some(),
            "{k}: alert for {f}"
        );
    }
    for f in ["/tmp/scratch/g/h/t.p6", "/opt/scratch/t.p5"] {
        let got = outcome(run, ops, &format!("scratch-pattern-read {f}"));
        assert_eq!(got, (0, 0), "{k}: {f} matches no pattern");
    }
    let apt = outcome(run, ops, "scratch-pattern-exec-apt");
    assert_eq!(apt, (-1, EACCES), "{k}: apt* under four pattern prefixes");
    assert!(
        alert_for(
            all,
            "Process",
            "scratch-patterns-exec",
            "/tmp/scratch/bin/apt-get"
        )
        .is_some(),
        "{k}: alert for apt-get"
    );
    let other = outcome(run, ops, "scratch-pattern-exec-other");
    assert_eq!(other, (0, 0), "{k}: other executables still run");
}

/// ~300- and ~4,000-byte paths are decided like short ones; a path beyond PATH_MAX
/// is denied as unresolvable, and the alert says so.
fn long_paths(run: &Run, ops: &HashMap<String, (i64, i64)>, all: &[Alert]) {
    let k = run.kernel();
    let lens = first(run, "EA-SCRATCH-LEN ");
    let (d3, d4) = (num(&lens, "d3") + 3, num(&lens, "d4") + 3);
    assert!(
        (290..=310).contains(&d3) && (3950..=4095).contains(&d4),
        "{k}: path lengths {d3} and {d4}"
    );
    for n in [3, 4] {
        for (what, want) in [
            ("open-blocked", (-1, EACCES)),
            ("open-permitted", (0, 0)),
            ("exec-blocked", (-1, EACCES)),
            ("exec-permitted", (0, 0)),
        ] {
            let name = format!("scratch-long{n}-{what}");
            assert_eq!(outcome(run, ops, &name), want, "{k}: {name}");
        }
        let dir = format!("/tmp/scratch/p{n}/");
        for op in ["File", "Process"] {
            let a = alert_for(all, op, "scratch-long", &dir)
                .unwrap_or_else(|| panic!("{k}: {op} alert for the long path under {dir}"));
            assert!(
                field(a, "Resource").ends_with("..."),
                "{k}: a long path is reported by its first bytes, marked: {a:?}"
            );
        }
    }
    let deep = outcome(run, ops, "scratch-beyond-path-max");
    assert_eq!(
        deep,
        (-1, EACCES),
        "{k}: a path beyond PATH_MAX fails closed under Block"
    );
    let reported = all.iter().find(|a| {
        field(a, "Operation") == "File"
            && field(a, "Action") == "Block"
            && field(a, "Resource").contains("path not resolved")
            && field(a, "Resource").contains("ENAMETOOLONG")
    });
    assert!(reported.is_some(), "{k}: the unresolvable path is reported");
}
