//! The `aliases` part of the fail-closed guest (`guest/failclosed/45-aliases.sh`): a
//! Block on `/etc/alias-secret` and a readOnly tree `/etc/alias-ro/`, with names
//! made before the agent started (hard links in /tmp, a bind mount of a
//! subdirectory): every name reaches the protected name's decision, the alert names
//! the protected path, and the start message says which files the agent follows.

use edgearmor_vm::scenarios::{about, alerts, field, outcomes};

use crate::Run;

const DENIED: (i64, i64) = (-1, 13);

pub fn check(run: &Run) {
    let k = run.kernel();
    let ops = outcomes(&run.log);
    let op = |name: &str| {
        *ops.get(name)
            .unwrap_or_else(|| panic!("{k}: no outcome for {name}\n{}", run.agent_err("aliases")))
    };
    for name in [
        "al-secret",
        "al-secret-link",
        "al-secret-link-write",
        "al-g-link-write",
        "al-bind-write",
        "al-link-no-agent",
        "al-link-adopted",
    ] {
        assert_eq!(op(name), DENIED, "{k}: {name} must be denied");
    }
    for name in [
        "al-g-link-read",
        "al-bind-read",
        "al-free-read",
        "al-free-write",
    ] {
        assert_eq!(op(name), (0, 0), "{k}: {name} must succeed");
    }
    let content: Vec<&str> = run.log.lines_with_prefix("EA-ALIAS-CONTENT ").collect();
    assert_eq!(content, ["secret=secret g=ro h=ro"], "{k}: files unchanged");

    let ready: Vec<&str> = run.log.lines_with_prefix("EA-AGENT-aliases ").collect();
    let ready = ready.first().copied().unwrap_or_default();
    for said in [
        "2 protected inode(s) with an alias entry (4 entries with subdirectories and other-linked files)",
        "2 protected file(s) with other hard links: /etc/alias-ro/sub/g (2 links), /etc/alias-secret (2 links)",
    ] {
        assert!(
            ready.contains(said),
            "{k}: the start message says {said:?}: {ready}"
        );
    }

    let all = alerts(&run.log, "EA-ALERT-aliases ");
    assert_eq!(all.len(), 5, "{k}: one alert per denied attempt: {all:?}");
    for a in &all {
        assert_eq!(field(a, "PolicyName"), "hsp-aliases", "{k}: {a:?}");
        assert_eq!(field(a, "Action"), "Block", "{k}: {a:?}");
        assert_eq!(field(a, "Result"), "Permission denied", "{k}: {a:?}");
    }
    // Reached by any name, the alert names the protected path.
    assert_eq!(
        about(&all, "File", "/etc/alias-secret").len(),
        3,
        "{k}: {all:?}"
    );
    assert_eq!(
        about(&all, "File", "/etc/alias-ro/sub/g").len(),
        1,
        "{k}: {all:?}"
    );
    assert_eq!(
        about(&all, "File", "/etc/alias-ro/sub/h").len(),
        1,
        "{k}: {all:?}"
    );

    // The agent that adopted the pinned entries reports both attempts through the link.
    let adopted = alerts(&run.log, "EA-ALERT-aliases-b ");
    assert_eq!(
        adopted.len(),
        2,
        "{k}: {adopted:?}\n{}",
        run.agent_err("aliases-b")
    );
    assert_eq!(
        about(&adopted, "File", "/etc/alias-secret").len(),
        2,
        "{k}: {adopted:?}"
    );
    let ready_b = run
        .log
        .lines_with_prefix("EA-AGENT-aliases-b ")
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        ready_b.contains("adopted the enforcement pinned in"),
        "{k}: {ready_b}"
    );
}
