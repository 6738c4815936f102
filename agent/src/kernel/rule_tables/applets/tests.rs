//! The multi-call translation on a busybox host (no root: a fake resolver).

use std::collections::BTreeSet;
use std::path::Path;

use edgearmor_policy::{DefaultPosture, DefaultPostures, compile, parse_policy_text};
use edgearmor_probe_abi::{
    ACTION_BLOCK, ANY_SOURCE, CLASS_PROCESS, MATCH_APPLET, MATCH_EXACT, MATCH_MULTI_CALL,
    MATCH_UNDECIDABLE, SLOT_READ,
};

use super::super::tests::{HEADER, KEY, hash, lookup};
use crate::control::policy_table::PolicyCatalog;
use crate::control::setid_rules::SetidRuleSet;
use crate::kernel::rule_tables::{KernelRuleSet, PathResolver};

/// A Yocto busybox image: applets are links to `/bin/busybox.nosuid`.
struct BusyboxHost;

impl PathResolver for BusyboxHost {
    fn real_path(&self, path: &str) -> Option<String> {
        match path {
            "/bin/busybox" | "/usr/bin/wget" | "/bin/sh" | "/bin/cat" => {
                Some("/bin/busybox.nosuid".into())
            }
            "/usr/bin/python3" => Some("/usr/bin/python3.11".into()),
            "/usr/bin/python3.11" => Some(path.into()),
            _ => None,
        }
    }

    fn multi_call_binaries(&self) -> BTreeSet<String> {
        crate::kernel::multi_call::installed(&|p| self.real_path(p))
    }
}

fn build_on_busybox(process_rules: &str) -> KernelRuleSet {
    let policies = parse_policy_text(
        Path::new("t.yaml"),
        &format!("{HEADER}  process:\n{process_rules}  action: Block\n"),
    )
    .expect("valid");
    let compiled = compile(&policies, DefaultPostures::uniform(DefaultPosture::Audit));
    KernelRuleSet::build(
        &SetidRuleSet::default(),
        &compiled,
        &mut PolicyCatalog::default(),
        KEY,
        &BusyboxHost,
    )
}

fn kinds(set: &KernelRuleSet) -> Vec<(u64, u32)> {
    set.rules
        .keys()
        // The undecidable entry every path class with rules has is tested on its own.
        .filter(|k| k.2 == CLASS_PROCESS && k.3 != MATCH_UNDECIDABLE)
        .map(|&(_, target, _, kind)| (target, kind))
        .collect()
}

#[test]
fn a_link_to_busybox_is_an_applet_rule_and_marks_busybox() {
    let set = build_on_busybox("    matchPaths:\n      - path: /usr/bin/wget\n");
    let mut want = vec![
        (hash("wget"), MATCH_APPLET),
        (hash("/bin/busybox.nosuid"), MATCH_MULTI_CALL),
    ];
    want.sort();
    let mut got = kinds(&set);
    got.sort();
    // Not an exact rule on busybox: that would block cat, sh, sleep ...
    assert_eq!(got, want);
    assert!(set.warnings.is_empty(), "{:?}", set.warnings);
    let v = lookup(&set, ANY_SOURCE, hash("wget"), CLASS_PROCESS, MATCH_APPLET).expect("rule");
    assert_eq!(v.slots[SLOT_READ].action, ACTION_BLOCK);
}

#[test]
fn a_missing_path_is_exact_and_applet_so_a_later_link_is_covered() {
    let set = build_on_busybox("    matchPaths:\n      - path: /usr/bin/nc\n");
    let mut got = kinds(&set);
    got.sort();
    let mut want = vec![
        (hash("/usr/bin/nc"), MATCH_EXACT),
        (hash("nc"), MATCH_APPLET),
        (hash("/bin/busybox.nosuid"), MATCH_MULTI_CALL),
    ];
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn other_links_resolve_to_their_target_and_mark_nothing() {
    let set = build_on_busybox("    matchPaths:\n      - path: /usr/bin/python3\n");
    assert_eq!(
        kinds(&set),
        vec![(hash("/usr/bin/python3.11"), MATCH_EXACT)]
    );
}

#[test]
fn naming_busybox_itself_or_as_a_source_is_warned_about() {
    let set = build_on_busybox("    matchPaths:\n      - path: /bin/busybox\n");
    assert_eq!(
        kinds(&set),
        vec![(hash("/bin/busybox.nosuid"), MATCH_EXACT)]
    );
    assert_eq!(set.warnings.len(), 1, "{:?}", set.warnings);
    assert!(set.warnings[0].reason.contains("multi-call binary"));
    let set = build_on_busybox(
        "    matchPaths:\n      - path: /usr/bin/python3.11\n        fromSource:\n          - path: /bin/sh\n",
    );
    assert_eq!(set.warnings.len(), 1, "{:?}", set.warnings);
    assert!(
        set.warnings[0]
            .reason
            .contains("every process running /bin/busybox.nosuid")
    );
}
