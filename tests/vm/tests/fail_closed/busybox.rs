//! The `busybox` part of the fail-closed guest (`guest/failclosed/40-busybox.sh`):
//! a Block on `/usr/bin/wget`, a link to the multi-call `/bin/busybox`, stops wget
//! however it is exec'd (EACCES when the invoked name says wget, SIGKILL after
//! commit when only the arguments do), and nothing else busybox runs; a Block on
//! `/usr/bin/nc` loaded before the link existed applies once it does.

use edgearmor_vm::scenarios::{Alert, about, alerts, field, outcomes};

use crate::Run;

const DENIED: (i64, i64) = (-1, 13);
const KILLED: (i64, i64) = (-9, 0);

pub fn check(run: &Run) {
    let k = run.kernel();
    let ops = outcomes(&run.log);
    let op = |name: &str| {
        *ops.get(name)
            .unwrap_or_else(|| panic!("{k}: no outcome for {name}\n{}", run.agent_err("busybox")))
    };
    for name in [
        "bb-wget-absolute",
        "bb-wget-relative",
        "bb-wget-dotdot",
        "bb-wget-other-link",
        "bb-wget-execv",
        "bb-nc-absolute",
    ] {
        assert_eq!(op(name), DENIED, "{k}: {name} must be denied");
    }
    for name in [
        "bb-wget-path",
        "bb-wget-argv",
        "bb-wget-argv-chain",
        "bb-wget-exec-as",
        "bb-wget-exec-as-sh",
        "bb-nc-path",
    ] {
        assert_eq!(op(name), KILLED, "{k}: {name} must be killed");
    }
    // No such file yet: the shell says so (127), nothing was denied.
    assert_eq!(op("bb-nc-before-link"), (127, 0), "{k}: nc before its link");
    for (name, status) in [
        ("bb-cat", 0),
        ("bb-sh", 3),
        ("bb-sleep", 0),
        ("bb-busybox-cat", 0),
        ("bb-cat-after-stop", 0),
        // `cat noop`: cat runs and cannot open `noop`.
        ("bb-cat-execv", 1),
        ("bb-cat-exec-as", 1),
    ] {
        assert_eq!(op(name), (status, 0), "{k}: {name} must run");
    }

    let all = alerts(&run.log, "EA-ALERT-busybox ");
    let check_data = |a: &Alert, data: &str| {
        assert_eq!(field(a, "PolicyName"), "hsp-busybox-applets", "{k}: {a:?}");
        assert_eq!(field(a, "Action"), "Block", "{k}: {a:?}");
        assert_eq!(field(a, "Result"), "Permission denied", "{k}: {a:?}");
        assert_eq!(field(a, "ProcessName"), field(a, "Resource"), "{k}: {a:?}");
        assert_eq!(field(a, "Data"), data, "{k}: {a:?}");
        let binary = a
            .get("EventData")
            .and_then(|d| d.get("Binary"))
            .and_then(|v| v.as_str());
        assert_eq!(binary, Some("/bin/busybox"), "{k}: {a:?}");
    };
    let at_exec = "lsm=SECURITY_BPRM_CHECK binary=/bin/busybox";
    let after_commit = "lsm=SECURITY_BPRM_COMMITTED_CREDS binary=/bin/busybox signal=SIGKILL";
    // Absolute, `..`/`//` (made absolute for the report), the helper's execv.
    let wget = about(&all, "Process", "/usr/bin/wget");
    assert!(wget.len() >= 3, "{k}: alerts about /usr/bin/wget: {all:?}");
    let mut at_exec_seen = 0;
    for a in &wget {
        if field(a, "Data") == at_exec {
            at_exec_seen += 1;
        }
        let data = if field(a, "Data") == at_exec {
            at_exec
        } else {
            after_commit
        };
        check_data(a, data);
    }
    assert!(at_exec_seen >= 3, "{k}: {wget:?}");
    for (resource, data, count) in [
        ("/tmp/wget", at_exec, 1),
        ("/usr/bin/nc", at_exec, 1),
        // By the arguments: PATH lookup in this busybox's shell, `busybox wget`,
        // `busybox busybox wget`, exec-as wget; nc by PATH.
        ("wget", after_commit, 4),
        ("nc", after_commit, 1),
    ] {
        let found = about(&all, "Process", resource);
        assert!(
            found.len() >= count,
            "{k}: alerts about {resource}: {all:?}"
        );
        for a in found {
            check_data(a, data);
        }
    }
    // Nothing else busybox ran was decided on: every alert is about wget or nc.
    for a in &all {
        let resource = field(a, "Resource");
        assert!(
            resource.ends_with("wget") || resource.ends_with("nc"),
            "{k}: unexpected alert {a:?}"
        );
    }
    for name in ["bb-limit-hardlink", "bb-limit-copy", "bb-wget-after-stop"] {
        eprintln!("{k}: {name}: {:?}", ops.get(name));
    }
}
