//! The `walker` part of the fail-closed guest (`guest/failclosed/60-walker.sh`): the
//! file hooks resolve their targets with their own dentry walk (no `bpf_d_path`,
//! which 6.1 refuses in `path_*` hooks), and it names files as the kernel does: a
//! plain path, paths across one and two mounts (opens and unlinks), a chroot's path
//! under its root; with `FILE_ALIASES` entries, a protected directory through a bind
//! mount and a protected file through an older hard link are decided and reported by
//! their protected names, while an unprotected bind mount stays permitted.

use edgearmor_vm::scenarios::{about, alerts, field, outcomes};

use crate::Run;

const DENIED: (i64, i64) = (-1, 13);
const DONE: (i64, i64) = (0, 0);

pub fn check(run: &Run) {
    let k = run.kernel();
    let ops = outcomes(&run.log);
    let op = |name: &str| {
        *ops.get(name)
            .unwrap_or_else(|| panic!("{k}: no outcome for {name}\n{}", run.agent_err("walker")))
    };
    let ready = run.log.first_with_prefix("EA-AGENT-walker ").unwrap_or("");
    assert!(
        ready.contains("ready: enforcing") && !ready.contains("degraded"),
        "{k}: walker agent: {ready}\n{}",
        run.agent_err("walker")
    );
    for name in [
        "walker-plain-blocked",
        "walker-mount-blocked",
        "walker-nest-blocked",
        "walker-mount-unlink-blocked",
        "walker-prot-blocked",
        "walker-chroot-blocked",
        "walker-bind-blocked",
        "walker-hardlink-blocked",
    ] {
        assert_eq!(op(name), DENIED, "{k}: {name} must be denied");
    }
    for name in [
        "walker-plain-permitted",
        "walker-mount-permitted",
        "walker-nest-permitted",
        "walker-mount-unlink-audited",
        "walker-bind-open-permitted",
        "walker-alias-dir",
        "walker-alias-file",
        "walker-bind-open-permitted-after",
        "walker-plain-permitted-after",
    ] {
        assert_eq!(op(name), DONE, "{k}: {name} must succeed");
    }
    assert_eq!(
        run.log.first_with_prefix("EA-WALKER-LEFT "),
        Some("secret=yes gone=no"),
        "{k}: the blocked unlink must leave its file, the audited one remove its"
    );

    let all = alerts(&run.log, "EA-ALERT-walker ");
    let open = "lsm=SECURITY_FILE_OPEN";
    let unlink = "lsm=SECURITY_PATH_UNLINK";
    // Resource, policy, Data of each alert: the alias cases (bind mount, hard link)
    // and the chroot name the protected path, never the name used.
    let expected: [(&str, &str, &[&str]); 5] = [
        (
            "/tmp/walker/plain/secret",
            "walker-block",
            &[open, open, open],
        ),
        ("/mnt/wx/inner/secret", "walker-block", &[open, unlink]),
        ("/mnt/wx/nest/secret", "walker-block", &[open]),
        ("/tmp/walker/prot/sub/deep", "walker-block", &[open, open]),
        ("/mnt/wx/inner/gone", "walker-audit", &[unlink]),
    ];
    let mut total = 0;
    for (resource, policy, datas) in expected {
        let found = about(&all, "File", resource);
        let mut seen: Vec<&str> = found.iter().map(|a| field(a, "Data")).collect();
        seen.sort_unstable();
        let mut want = datas.to_vec();
        want.sort_unstable();
        assert_eq!(seen, want, "{k}: alerts about {resource}: {found:?}");
        for a in &found {
            assert_eq!(field(a, "PolicyName"), policy, "{k}: {a:?}");
            let (action, result) = if policy == "walker-audit" {
                ("Audit", "Passed")
            } else {
                ("Block", "Permission denied")
            };
            assert_eq!(field(a, "Action"), action, "{k}: {a:?}");
            assert_eq!(field(a, "Result"), result, "{k}: {a:?}");
        }
        total += found.len();
    }
    assert_eq!(total, all.len(), "{k}: unexpected walker alerts: {all:?}");
}
