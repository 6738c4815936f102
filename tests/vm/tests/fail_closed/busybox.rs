//! The `busybox` part of the fail-closed guest (`guest/failclosed/40-busybox.sh`):
//! a Block on `/usr/bin/wget`, a link to the multi-call `/bin/busybox`, stops wget
//! exec'd through links however a busybox shell names it, and nothing else busybox
//! runs; a Block on `/usr/bin/nc` loaded before the link existed applies once it does.

use edgearmor_vm::scenarios::{about, alerts, field, outcomes};

use crate::Run;

const DENIED: (i64, i64) = (-1, 13);

pub fn check(run: &Run) {
    let k = run.kernel();
    let ops = outcomes(&run.log);
    let op = |name: &str| {
        *ops.get(name)
            .unwrap_or_else(|| panic!("{k}: no outcome for {name}\n{}", run.agent_err("busybox")))
    };
    for name in [
        "bb-wget-path",
        "bb-wget-absolute",
        "bb-wget-relative",
        "bb-wget-dotdot",
        "bb-wget-other-link",
        "bb-wget-execv",
        "bb-nc-path",
        "bb-nc-absolute",
    ] {
        assert_eq!(op(name), DENIED, "{k}: {name} must be denied");
    }
    // wget and nc ran (and failed to connect: status 1) where no rule applied.
    assert_eq!(op("bb-nc-before-link").1, 0, "{k}: nc before its link");
    for (name, status) in [
        ("bb-cat", 0),
        ("bb-sh", 3),
        ("bb-sleep", 0),
        ("bb-busybox-cat", 0),
        ("bb-cat-after-stop", 0),
    ] {
        assert_eq!(op(name), (status, 0), "{k}: {name} must run");
    }
    // `cat noop`: cat runs and cannot open `noop`.
    assert_eq!(op("bb-cat-execv"), (1, 0), "{k}: cat exec'd directly must run");

    let all = alerts(&run.log, "EA-ALERT-busybox ");
    let wget = about(&all, "Process", "/usr/bin/wget");
    // PATH lookup, absolute, `..`/`//` (made absolute for the report), execv.
    assert!(wget.len() >= 4, "{k}: alerts about /usr/bin/wget: {wget:?}");
    for a in &wget {
        assert_eq!(field(a, "ProcessName"), "/usr/bin/wget", "{k}: {a:?}");
        assert_eq!(field(a, "PolicyName"), "hsp-busybox-applets", "{k}: {a:?}");
        assert_eq!(field(a, "Action"), "Block", "{k}: {a:?}");
        assert_eq!(
            field(a, "Data"),
            "lsm=SECURITY_BPRM_CHECK binary=/bin/busybox",
            "{k}: {a:?}"
        );
        let binary = a
            .get("EventData")
            .and_then(|d| d.get("Binary"))
            .and_then(|v| v.as_str());
        assert_eq!(binary, Some("/bin/busybox"), "{k}: {a:?}");
    }
    assert!(
        !about(&all, "Process", "/usr/bin/nc").is_empty(),
        "{k}: no alert about /usr/bin/nc: {all:?}"
    );
    assert!(
        !about(&all, "Process", "/tmp/wget").is_empty(),
        "{k}: no alert about /tmp/wget: {all:?}"
    );
    // Nothing else busybox ran was decided on: no alert names busybox itself, cat or sh.
    for a in &all {
        let resource = field(a, "Resource");
        assert!(
            resource.ends_with("/wget") || resource.ends_with("/nc"),
            "{k}: unexpected alert {a:?}"
        );
    }
    for name in [
        "bb-limit-argv",
        "bb-limit-hardlink",
        "bb-limit-copy",
        "bb-wget-after-stop",
    ] {
        eprintln!("{k}: {name}: {:?}", ops.get(name));
    }
}
