//! The `exec-identity` part of the fail-closed guest (`guest/failclosed/80-exec-identity.sh`):
//! a Block on `/usr/bin/apt` (a real glibc dynamic program) holds for every name of
//! the file (hard links before and after the agent, a rename, bind mounts, a new mount
//! namespace, a chroot, an overlayfs view, a replace-by-rename upgrade) and for the
//! loader running it; each denial is one alert naming the policy and the protected
//! path. The same attempts on an unblocked copy succeed; dynamic programs run.

use edgearmor_vm::scenarios::{alerts, field, outcomes};
use edgearmor_vm::{GuestKernel, Initramfs, network::add_kernel_module};

use crate::Run;

const DENIED: (i64, i64) = (-1, 13);
/// Every way the part runs a program, as scenario suffixes (`xi-apt-bind`, ...),
/// except `ldso` (the loader's own report, `EA-XI-LDSO`).
const WAYS: [&str; 13] = [
    "path",
    "pre-link",
    "new-link",
    "renamed",
    "bind",
    "bind-ns",
    "chroot",
    "overlay",
    "mmap-exec",
    "mprotect-exec",
    "upgraded",
    "upgraded-link",
    "replaced-pre-link",
];

/// The overlayfs module (a module on Debian's kernels), for the overlay view.
pub fn add_files(initramfs: &mut Initramfs, kernel: &GuestKernel) {
    add_kernel_module(initramfs, kernel, "overlay").expect("overlay module");
}

pub fn check(run: &Run) {
    let k = run.kernel();
    let err = || run.agent_err("exec-identity");
    let ops = outcomes(&run.log);
    let op = |name: &str| {
        *ops.get(name)
            .unwrap_or_else(|| panic!("{k}: no outcome for {name}\n{}", err()))
    };
    let overlay: Vec<&str> = run.log.lines_with_prefix("EA-XI-OVERLAY ").collect();
    assert_eq!(overlay, ["1"], "{k}: the overlay view is mounted");
    for way in WAYS {
        assert_eq!(op(&format!("xi-apt-{way}")), DENIED, "{k}: apt by {way}");
        assert_eq!(
            op(&format!("xi-free-{way}")),
            (0, 0),
            "{k}: xi-free by {way}"
        );
    }
    let ldso = |name: &str| {
        run.log
            .lines_with_prefix(&format!("EA-XI-LDSO {name} "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    // The loader cannot map the program's text (the EACCES it gets is the one
    // `mmap-exec` shows) and exits 127.
    let apt = ldso("xi-apt-ldso");
    assert!(
        apt.starts_with("rc=127 ") && apt.ends_with("failed to map segment from shared object"),
        "{k}: ld.so /usr/bin/apt: {apt}"
    );
    assert_eq!(ldso("xi-free-ldso"), "rc=0 out=noop", "{k}: ld.so xi-free");
    assert_eq!(op("xi-dynamic"), (0, 0), "{k}: a dynamic program runs");
    assert_eq!(op("xi-libc-mmap-exec"), (0, 0), "{k}: libc maps executable");
    let loader: Vec<&str> = run.log.lines_with_prefix("EA-XI-LOADER ").collect();
    assert_eq!(loader, ["ran"], "{k}: the loader runs a program");
    let cat: Vec<&str> = run.log.lines_with_prefix("EA-XI-CAT ").collect();
    assert_eq!(cat, ["piped"], "{k}: a dynamic program reads its input");

    let ready = run
        .log
        .lines_with_prefix("EA-AGENT-exec-identity ")
        .collect::<Vec<_>>()
        .join("\n");
    let said = "exec identity: 1 executable(s) followed by inode (1 entries with other-linked files), 1 executable(s) with other hard links: /usr/bin/apt (2 links)";
    assert!(
        ready.contains(said),
        "{k}: the start message says {said:?}: {ready}"
    );

    let all = alerts(&run.log, "EA-ALERT-exec-identity ");
    assert_eq!(
        all.len(),
        WAYS.len() + 1,
        "{k}: one alert per denied attempt: {all:?}\n{}",
        err()
    );
    for a in &all {
        assert_eq!(field(a, "PolicyName"), "hsp-exec-identity", "{k}: {a:?}");
        assert_eq!(field(a, "Action"), "Block", "{k}: {a:?}");
        assert_eq!(field(a, "Result"), "Permission denied", "{k}: {a:?}");
        assert_eq!(field(a, "Operation"), "Process", "{k}: {a:?}");
        // Reached by any name, the alert names the protected path.
        assert_eq!(field(a, "Resource"), "/usr/bin/apt", "{k}: {a:?}");
    }
    // The mappings (ld.so, mmap, mprotect) say which hook decided.
    let mapped = |hook: &str| {
        all.iter()
            .filter(|a| field(a, "Data").contains(hook))
            .count()
    };
    assert_eq!(mapped("SECURITY_MMAP_FILE"), 2, "{k}: {all:?}");
    assert_eq!(mapped("SECURITY_FILE_MPROTECT"), 1, "{k}: {all:?}");

    // The kernel added the upgrade's new file (blocked) and no unblocked one, and
    // dropped the replaced file's entry with its last name.
    let alias = |name: &str| -> String {
        let mut lines = run
            .log
            .lines
            .iter()
            .skip_while(|l| l.trim() != format!("EA-XI-ALIAS-OF {name}"));
        lines.next();
        let line = lines
            .next()
            .map(|l| l.trim().to_owned())
            .unwrap_or_default();
        let found = line
            .split_whitespace()
            .find_map(|f| f.strip_prefix("found="));
        let named = line
            .split_whitespace()
            .find_map(|f| f.strip_prefix("name="));
        format!(
            "found={} name={}",
            found.unwrap_or("?"),
            named.unwrap_or("")
        )
    };
    assert_eq!(alias("xi-apt-new-file"), "found=1 name=/usr/bin/apt", "{k}");
    assert_eq!(alias("xi-free-new-file"), "found=0 name=", "{k}");
    assert_eq!(
        alias("xi-old-before-free"),
        "found=1 name=/usr/bin/apt",
        "{k}"
    );
    assert_eq!(alias("xi-old-freed"), "found=0 name=", "{k}");
}
