//! The `notify` part of the fail-closed guest (`guest/failclosed/70-notify.sh`): the
//! real `run` agent on a real kernel, as a service manager sees it through
//! `NOTIFY_SOCKET` (the guest's listener stands in for systemd): `READY=1` once the
//! probes are attached with a `STATUS=` line saying what is enforced, the policy set,
//! its generation and the broker; watchdog pings at half `WATCHDOG_USEC` that stop
//! while the agent is stopped (SIGSTOP) and resume after SIGCONT, with the kernel
//! enforcing meanwhile; `RELOADING=1` ... `READY=1` around SIGHUP with the next
//! generation; `STOPPING=1`; the next agent adopting the pins; `edgearmor status` with
//! the agent, without it (the pins), and after adoption.

use edgearmor_vm::scenarios::{about, alerts, field, outcomes};

use crate::Run;

const DENIED: (i64, i64) = (-1, 13);
const RAN: (i64, i64) = (0, 0);
/// `WATCHDOG_USEC=600000`: a ping every 300 ms, never faster; the listener sees them
/// with the guest's scheduling delays, which can bring two closer by what delayed the
/// first, hence the slack.
const MIN_PING_GAP_MS: u64 = 200;

/// One line of the listener: milliseconds since it started, and the datagram (or
/// `SILENT` for its silence report).
struct Note {
    t: u64,
    msg: String,
}

fn notes(run: &Run) -> Vec<Note> {
    run.log
        .lines
        .iter()
        .filter_map(|l| {
            let l = l.trim();
            let (t, msg) = if let Some(rest) = l.strip_prefix("EA-NOTIFY t=") {
                let (t, msg) = rest.split_once(" msg=")?;
                (t, msg.to_owned())
            } else {
                let rest = l.strip_prefix("EA-NOTIFY-SILENT t=")?;
                (rest.split_whitespace().next()?, "SILENT".to_owned())
            };
            Some(Note {
                t: t.parse().ok()?,
                msg,
            })
        })
        .collect()
}

/// The index of the first note at or after `from` whose message starts with `prefix`.
fn find(notes: &[Note], from: usize, prefix: &str, k: &str) -> usize {
    notes[from..]
        .iter()
        .position(|n| n.msg.starts_with(prefix))
        .map(|i| i + from)
        .unwrap_or_else(|| panic!("{k}: no {prefix:?} after note {from}"))
}

/// `generation N` of a READY's status line.
fn generation(msg: &str, k: &str) -> u64 {
    msg.split("generation ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .and_then(|g| g.trim().parse().ok())
        .unwrap_or_else(|| panic!("{k}: no generation in {msg:?}"))
}

/// The `edgearmor status` lines printed as `NAME`, and its exit status.
fn status_lines(run: &Run, name: &str) -> (Vec<String>, Option<String>) {
    let prefix = format!("EA-NOTIFY-STATUS-{name} ");
    let lines = run
        .log
        .lines_with_prefix(&prefix)
        .map(str::to_owned)
        .collect();
    let exit_prefix = format!("EA-NOTIFY-STATUS-{name}-EXIT ");
    let exit = run.log.first_with_prefix(&exit_prefix).map(str::to_owned);
    (lines, exit)
}

pub fn check(run: &Run) {
    let k = run.kernel();
    let n = notes(run);
    let all: Vec<&str> = n.iter().map(|n| n.msg.as_str()).collect();
    let k = format!("{k} (notifications: {all:?})\n{}", run.agent_err("notify"));
    let ready = find(&n, 0, "READY=1|STATUS=", &k);
    let first = &n[ready].msg;
    assert!(
        first.starts_with("READY=1|STATUS=enforcing process; policy set ")
            && first.ends_with("; no broker"),
        "{k}"
    );
    let g1 = generation(first, &k);

    let hup = find(&n, ready, "MARK=hup", &k);
    let pings_before: Vec<u64> = n[ready..hup]
        .iter()
        .filter(|n| n.msg == "WATCHDOG=1")
        .map(|n| n.t)
        .collect();
    assert!(pings_before.len() >= 3, "{k}");
    for pair in pings_before.windows(2) {
        assert!(pair[1] - pair[0] >= MIN_PING_GAP_MS, "{k}: pings {pair:?}");
    }
    let reloading = find(&n, hup, "RELOADING=1|MONOTONIC_USEC=", &k);
    let usec = n[reloading]
        .msg
        .split(['=', '|'])
        .nth(3)
        .unwrap_or_default();
    assert!(usec.parse::<u64>().is_ok_and(|u| u > 0), "{k}");
    let reloaded = find(&n, reloading, "READY=1|STATUS=enforcing process", &k);
    assert_eq!(
        generation(&n[reloaded].msg, &k),
        g1 + 1,
        "{k}: the reload's set"
    );

    // Stopped: not one ping from MARK=stop to MARK=cont, and the listener saw the silence.
    let stop = find(&n, reloaded, "MARK=stop", &k);
    let cont = find(&n, stop, "MARK=cont", &k);
    let stopped: Vec<&str> = n[stop..cont].iter().map(|n| n.msg.as_str()).collect();
    assert!(
        !stopped.contains(&"WATCHDOG=1"),
        "{k}: pinged while stopped"
    );
    assert!(stopped.contains(&"SILENT"), "{k}");
    let stopping = find(&n, cont, "STOPPING=1", &k);
    let resumed = n[cont..stopping]
        .iter()
        .filter(|n| n.msg == "WATCHDOG=1")
        .count();
    assert!(resumed >= 2, "{k}: pings after SIGCONT");
    // The next agent adopts what is pinned and applies its set over it.
    let marked = find(&n, stopping, "MARK=stopped", &k);
    let adopted = find(&n, marked, "READY=1|STATUS=enforcing process", &k);
    assert_eq!(
        generation(&n[adopted].msg, &k),
        g1 + 2,
        "{k}: adopted generation"
    );

    let ops = outcomes(&run.log);
    for (name, expected) in [
        ("nfy-blocked-running", DENIED),
        ("nfy-allowed-running", RAN),
        ("nfy-blocked-stopped", DENIED),
        ("nfy-allowed-stopped", RAN),
    ] {
        assert_eq!(ops.get(name), Some(&expected), "{k}: {name}");
    }
    let alerts = alerts(&run.log, "EA-ALERT-notify ");
    let blocked = about(&alerts, "Process", "/usr/bin/nfy-blocked");
    assert_eq!(
        blocked.len(),
        2,
        "{k}: one alert per denied exec, the stopped one too"
    );
    assert!(blocked.iter().all(|a| field(a, "Action") == "Block"), "{k}");

    check_status(run, &k);
}

fn check_status(run: &Run, k: &str) {
    let (running, exit) = status_lines(run, "running");
    assert_eq!(
        exit.as_deref(),
        Some("0"),
        "{k}: status while running: {running:?}"
    );
    let text = running.join("\n");
    for expected in [
        "enforcement  enforcing",
        "agent        running (pid ",
        "status       enforcing process; policy set ",
        "pinned in    /sys/fs/bpf/edgearmor",
        "locked       no",
        "broker       none configured",
        "alerts_sent ",
        "policy_generation ",
    ] {
        assert!(text.contains(expected), "{k}: {expected:?} in\n{text}");
    }
    assert!(
        running
            .iter()
            .any(|l| l.starts_with("pins ") && l.contains("(process, generation ")),
        "{k}: {text}"
    );
    let (stopped, exit) = status_lines(run, "stopped");
    let text = stopped.join("\n");
    assert_eq!(
        exit.as_deref(),
        Some("0"),
        "{k}: the pins still enforce: {text}"
    );
    assert!(text.contains("enforcement  pinned"), "{k}: {text}");
    assert!(text.contains("agent        no agent runs"), "{k}: {text}");
    let (adopted, exit) = status_lines(run, "adopted");
    let text = adopted.join("\n");
    assert_eq!(exit.as_deref(), Some("0"), "{k}: {text}");
    assert!(
        text.contains("pinned in    /sys/fs/bpf/edgearmor (adopted from an earlier agent)"),
        "{k}: {text}"
    );
}
