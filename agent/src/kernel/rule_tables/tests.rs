//! The kernel tables checked against a reference decision walk.

use super::*;
use edgearmor_policy::{DefaultPostures, compile, parse_policy_text};
use edgearmor_probe_abi::{
    ACTION_NONE, AF_INET, AF_INET6, AF_PACKET, IPPROTO_MPTCP, IPPROTO_SCTP, IPPROTO_UDPLITE,
    LSM_SETID_ID, MAX_PATTERN_PREFIXES, PREFIX_DIRECTORY, SETID_KIND_GID, SOCK_DGRAM, SOCK_RAW,
    SOCK_SEQPACKET, SOCK_STREAM, SipState, setid_bit, socket_items,
};
use std::path::Path;

pub(super) const KEY: [u64; 2] = [11, 22];

fn build(yaml: &str, posture: DefaultPosture) -> (KernelRuleSet, PolicyCatalog) {
    let policies = parse_policy_text(Path::new("t.yaml"), yaml).expect("valid policy");
    let compiled = compile(&policies, DefaultPostures::uniform(posture));
    let mut catalog = PolicyCatalog::default();
    let identity = |p: &str| p.to_owned();
    let set = KernelRuleSet::build(
        &SetidRuleSet::default(),
        &compiled,
        &mut catalog,
        KEY,
        &identity,
    );
    (set, catalog)
}

pub(super) fn lookup(
    set: &KernelRuleSet,
    source: u64,
    target: u64,
    class: u32,
    kind: u32,
) -> Option<RuleValue> {
    set.rules.get(&(source, target, class, kind)).copied()
}

/// What the probes decide for `path` (same walk, same precedence), from the
/// tables alone.
fn decide(set: &KernelRuleSet, class: u32, source: u64, path: &str, slot: usize) -> Verdict {
    let mut sourced = RuleValue::NONE;
    let mut anyone = RuleValue::NONE;
    let both = |target: u64, kind: u32, sourced: &mut RuleValue, anyone: &mut RuleValue| {
        if let Some(v) = lookup(set, source, target, class, kind) {
            sourced.merge(&v);
        }
        if let Some(v) = lookup(set, ANY_SOURCE, target, class, kind) {
            anyone.merge(&v);
        }
    };
    let mut state = SipState::new(&KEY);
    let mut last = (0u64, 0u32, 0usize);
    let mut patterns = Vec::new();
    for (i, b) in path.bytes().enumerate() {
        state.push(b);
        if b == b'/' {
            let prefix = state.finish();
            let flags = set.prefixes.get(&(prefix, class)).copied().unwrap_or(0);
            last = (prefix, flags, i);
            if flags & PREFIX_PATTERN != 0 && patterns.len() < MAX_PATTERN_PREFIXES {
                patterns.push((prefix, i));
            }
            if flags & PREFIX_RECURSIVE != 0 {
                both(prefix, MATCH_RECURSIVE, &mut sourced, &mut anyone);
            }
        }
    }
    both(state.finish(), MATCH_EXACT, &mut sourced, &mut anyone);
    if last.1 & PREFIX_DIRECTORY != 0 {
        both(last.0, MATCH_DIRECTORY, &mut sourced, &mut anyone);
    }
    for (prefix, slash) in patterns {
        for (src, into) in [(source, &mut sourced), (ANY_SOURCE, &mut anyone)] {
            for g in set.globs.get(&(src, prefix, class)).into_iter().flatten() {
                if g.matches(&path.as_bytes()[slash + 1..], 4096) {
                    into.merge(&g.value);
                }
            }
        }
    }
    settle(set, class, source, slot, sourced, anyone)
}

/// The probes' `settle`: the source's rules, then anyone's, then the allow-list posture.
fn settle(
    set: &KernelRuleSet,
    class: u32,
    source: u64,
    slot: usize,
    sourced: RuleValue,
    anyone: RuleValue,
) -> Verdict {
    if sourced.slots[slot].action != ACTION_NONE {
        return sourced.slots[slot];
    }
    if anyone.slots[slot].action != ACTION_NONE {
        return anyone.slots[slot];
    }
    lookup(set, source, 0, class, MATCH_ALLOW_LIST)
        .filter(|v| v.slots[slot].action != ACTION_NONE)
        .or_else(|| lookup(set, ANY_SOURCE, 0, class, MATCH_ALLOW_LIST))
        .map(|v| v.slots[slot])
        .unwrap_or(Verdict::NONE)
}

/// What the probes decide for `socket(family, type, protocol)` by `source`.
fn decide_socket(set: &KernelRuleSet, source: &str, socket: (u32, u32, u32)) -> u32 {
    let mut sourced = RuleValue::NONE;
    let mut anyone = RuleValue::NONE;
    let source = hash(source);
    for item in socket_items(socket.0, socket.1, socket.2) {
        if item == 0 {
            continue;
        }
        if let Some(v) = lookup(set, source, item, CLASS_NETWORK, MATCH_ITEM) {
            sourced.merge(&v);
        }
        if let Some(v) = lookup(set, ANY_SOURCE, item, CLASS_NETWORK, MATCH_ITEM) {
            anyone.merge(&v);
        }
    }
    settle(set, CLASS_NETWORK, source, SLOT_READ, sourced, anyone).action
}

pub(super) fn hash(p: &str) -> u64 {
    path_hash(&KEY, p.as_bytes())
}

pub(super) const HEADER: &str = "apiVersion: security.kubearmor.com/v1
kind: KubeArmorHostPolicy
metadata:
  name: p
spec:
  nodeSelector:
    matchLabels:
      kubearmor.io/hostname: \"*\"
";

#[test]
fn process_matchers_decide_like_the_reference_matcher() {
    let (set, _) = build(
        &format!(
            "{HEADER}  process:
    matchPaths:
      - path: /usr/bin/ls
      - path: /usr/bin/date
        fromSource:
          - path: /usr/bin/bash
        action: Allow
      - path: /usr/bin/date
    matchDirectories:
      - dir: /opt/untrusted/
        recursive: true
      - dir: /srv/flat/
    matchPatterns:
      - pattern: /usr/bin/apt*
      - pattern: /home/*/bin/x?
  action: Block
"
        ),
        DefaultPosture::Audit,
    );
    let block = |path: &str, source: &str| {
        decide(&set, CLASS_PROCESS, hash(source), path, SLOT_READ).action
    };
    let sh = "/bin/sh";
    assert_eq!(block("/usr/bin/ls", sh), ACTION_BLOCK);
    assert_eq!(block("/usr/bin/lsx", sh), ACTION_NONE);
    assert_eq!(block("/usr/bin/date", sh), ACTION_BLOCK);
    assert_eq!(block("/usr/bin/date", "/usr/bin/bash"), ACTION_ALLOW);
    // bash is in allow-list mode: what it runs beyond date gets the posture.
    assert_eq!(block("/usr/bin/id", "/usr/bin/bash"), ACTION_AUDIT);
    assert_eq!(block("/usr/bin/id", sh), ACTION_NONE);
    assert_eq!(block("/opt/untrusted/a/b/c", sh), ACTION_BLOCK);
    assert_eq!(block("/opt/untrustedx", sh), ACTION_NONE);
    assert_eq!(block("/srv/flat/x", sh), ACTION_BLOCK);
    assert_eq!(block("/srv/flat/x/y", sh), ACTION_NONE);
    assert_eq!(block("/usr/bin/apt", sh), ACTION_BLOCK);
    assert_eq!(block("/usr/bin/apt-get", sh), ACTION_BLOCK);
    assert_eq!(block("/usr/bin/xapt", sh), ACTION_NONE);
    assert_eq!(block("/home/ann/bin/xy", sh), ACTION_BLOCK);
    assert_eq!(block("/home/ann/sub/bin/xy", sh), ACTION_NONE);
    assert_eq!(set.class_mask, class_bit(CLASS_PROCESS));
}

#[test]
fn read_only_files_split_reads_and_writes() {
    let (set, _) = build(
        &format!(
            "{HEADER}  file:
    matchDirectories:
      - dir: /srv/data/
        readOnly: true
    matchPaths:
      - path: /etc/shadow
  action: Block
"
        ),
        DefaultPosture::Audit,
    );
    let d = |path: &str, slot| decide(&set, CLASS_FILE, hash("/bin/cat"), path, slot).action;
    assert_eq!(d("/srv/data/r", SLOT_READ), ACTION_NONE);
    assert_eq!(d("/srv/data/r", SLOT_WRITE), ACTION_BLOCK);
    assert_eq!(d("/etc/shadow", SLOT_READ), ACTION_BLOCK);
    assert_eq!(d("/etc/shadow", SLOT_WRITE), ACTION_BLOCK);
    let flags = set.prefixes[&(hash("/srv/data/"), CLASS_FILE)];
    assert_eq!(flags, PREFIX_DIRECTORY);
}

#[test]
fn global_allow_list_gets_the_configured_posture_with_its_policy_id() {
    let (set, _) = build(
        &format!(
            "{HEADER}  process:
    matchPaths:
      - path: /bin/busybox
  action: Allow
"
        ),
        DefaultPosture::Block,
    );
    let v = decide(
        &set,
        CLASS_PROCESS,
        hash("/bin/busybox"),
        "/usr/bin/x",
        SLOT_READ,
    );
    assert_eq!(
        (v.action, v.policy_id),
        (ACTION_BLOCK, POLICY_DEFAULT_POSTURE)
    );
    let v = decide(
        &set,
        CLASS_PROCESS,
        hash("/bin/sh"),
        "/bin/busybox",
        SLOT_READ,
    );
    assert_eq!(v.action, ACTION_ALLOW);
}

#[test]
fn items_and_setid_rules_merge_block_over_audit() {
    let (set, catalog) = build(
        &format!(
            "{HEADER}  network:
    matchProtocols:
      - protocol: raw
  capabilities:
    matchCapabilities:
      - capability: net_raw
        action: Audit
  syscalls:
    matchSyscalls:
      - syscall: [setgid]
        fromSource:
          - path: /usr/sbin/sshd
  action: Block
"
        ),
        DefaultPosture::Audit,
    );
    let raw = lookup(&set, ANY_SOURCE, ITEM_RAW, CLASS_NETWORK, MATCH_ITEM).expect("raw rule");
    assert_eq!(raw.slots[SLOT_READ].action, ACTION_BLOCK);
    let cap = lookup(
        &set,
        ANY_SOURCE,
        item_capability(13),
        CLASS_CAPABILITY,
        MATCH_ITEM,
    )
    .expect("net_raw rule");
    assert_eq!(cap.slots[SLOT_READ].action, ACTION_AUDIT);
    let bit = setid_bit(SETID_KIND_GID, LSM_SETID_ID).expect("bit");
    let setgid = lookup(
        &set,
        hash("/usr/sbin/sshd"),
        item_setid(bit),
        CLASS_SETID,
        MATCH_ITEM,
    )
    .expect("setgid rule");
    assert_eq!(setgid.slots[SLOT_READ].action, ACTION_BLOCK);
    assert!(!catalog.is_empty());
    let mask = class_bit(CLASS_NETWORK) | class_bit(CLASS_CAPABILITY) | class_bit(CLASS_SETID);
    assert_eq!(set.class_mask, mask);
}

#[test]
fn paths_up_to_path_max_are_hashed_and_too_many_patterns_refuse_the_set() {
    let long = format!("/{}", vec!["a".repeat(200); 20].join("/"));
    let mut patterns = String::new();
    for i in 0..=GLOBS_PER_KEY {
        patterns.push_str(&format!("      - pattern: /usr/bin/p{i}*\n"));
    }
    let (set, _) = build(
        &format!(
            "{HEADER}  process:
    matchPaths:
      - path: {long}
    matchPatterns:
{patterns}  action: Block
"
        ),
        DefaultPosture::Audit,
    );
    assert!(set.skipped.is_empty(), "{:?}", set.skipped);
    let exact = lookup(&set, ANY_SOURCE, hash(&long), CLASS_PROCESS, MATCH_EXACT);
    assert_eq!(exact.map(|v| v.slots[SLOT_READ].action), Some(ACTION_BLOCK));
    assert_eq!(set.refused.len(), 1, "{:?}", set.refused);
    assert!(
        set.refused[0].reason.contains("GLOBS_PER_KEY = 8"),
        "{}",
        set.refused[0]
    );
    assert_eq!(set.refused[0].rule, format!("/usr/bin/p{GLOBS_PER_KEY}*"));
}

#[test]
fn patterns_under_many_prefixes_all_apply() {
    let (set, _) = build(
        &format!(
            "{HEADER}  process:
    matchPatterns:
      - pattern: /*.bak
      - pattern: /usr/*.bak
      - pattern: /usr/bin/*.bak
      - pattern: /usr/bin/x/*.bak
      - pattern: /usr/bin/x/apt*
      - pattern: /usr/bin/x/y/*.bak
  action: Block
"
        ),
        DefaultPosture::Audit,
    );
    assert!(set.refused.is_empty(), "{:?}", set.refused);
    let d = |p| decide(&set, CLASS_PROCESS, 0, p, SLOT_READ).action;
    assert_eq!(d("/usr/bin/x/apt-get"), ACTION_BLOCK);
    assert_eq!(d("/usr/bin/x/y/z.bak"), ACTION_BLOCK);
    assert_eq!(d("/usr/bin/x/other"), ACTION_NONE);
    assert_eq!(d("/opt/z.bak/w"), ACTION_NONE);
}

#[test]
fn more_nested_pattern_prefixes_than_the_probes_keep_refuse_the_set() {
    let mut patterns = String::new();
    let mut dir = String::from("/");
    for i in 0..=MAX_PATTERN_PREFIXES {
        patterns.push_str(&format!("      - pattern: {dir}*.bak\n"));
        dir.push_str(&format!("d{i}/"));
    }
    let (set, _) = build(
        &format!("{HEADER}  file:\n    matchPatterns:\n{patterns}  action: Block\n"),
        DefaultPosture::Audit,
    );
    assert_eq!(set.refused.len(), 1, "{:?}", set.refused);
    assert!(set.refused[0].reason.contains("MAX_PATTERN_PREFIXES = 8"));
    assert_eq!(set.refused[0].policy, "p");
}

#[test]
fn directories_merged_by_symlinks_count_their_patterns_together() {
    let mut patterns = String::new();
    for i in 0..GLOBS_PER_KEY {
        patterns.push_str(&format!("      - pattern: /usr/bin/p{i}*\n"));
    }
    patterns.push_str("      - pattern: /bin/q*\n");
    let yaml = format!("{HEADER}  process:\n    matchPatterns:\n{patterns}  action: Block\n");
    let policies = parse_policy_text(Path::new("t.yaml"), &yaml).expect("valid");
    let compiled = compile(&policies, DefaultPostures::uniform(DefaultPosture::Audit));
    let merged_usr = |p: &str| match p.strip_prefix("/bin") {
        Some(rest) => format!("/usr/bin{rest}"),
        None => p.to_owned(),
    };
    let set = KernelRuleSet::build(
        &SetidRuleSet::default(),
        &compiled,
        &mut PolicyCatalog::default(),
        KEY,
        &merged_usr,
    );
    assert_eq!(set.refused.len(), 1, "{:?}", set.refused);
    assert_eq!(set.refused[0].rule, "/bin/q*");
}

#[test]
fn undecidable_paths_get_the_strongest_verdict_of_their_class() {
    let (set, catalog) = build(
        &format!(
            "{HEADER}  file:
    matchPaths:
      - path: /etc/shadow
  process:
    matchPaths:
      - path: /usr/bin/x
    action: Audit
  action: Block
"
        ),
        DefaultPosture::Audit,
    );
    let undecidable = |class| lookup(&set, ANY_SOURCE, 0, class, MATCH_UNDECIDABLE);
    let file = undecidable(CLASS_FILE).expect("file class has one");
    assert_eq!(file.slots[SLOT_READ].action, ACTION_BLOCK);
    assert_eq!(file.slots[SLOT_WRITE].action, ACTION_BLOCK);
    assert!(!catalog.is_empty());
    let process = undecidable(CLASS_PROCESS).expect("process class has one");
    assert_eq!(process.slots[SLOT_READ].action, ACTION_AUDIT);
    assert!(undecidable(CLASS_NETWORK).is_none());
    // An allow list with a block posture blocks what cannot be decided.
    let (set, _) = build(
        &format!("{HEADER}  file:\n    matchPaths:\n      - path: /etc/hosts\n  action: Allow\n"),
        DefaultPosture::Block,
    );
    let file = lookup(&set, ANY_SOURCE, 0, CLASS_FILE, MATCH_UNDECIDABLE).expect("entry");
    assert_eq!(
        file.slots[SLOT_READ],
        Verdict {
            action: ACTION_BLOCK,
            policy_id: POLICY_DEFAULT_POSTURE
        }
    );
}

#[test]
fn symlinked_rule_paths_become_the_kernel_path() {
    let policies = parse_policy_text(
        Path::new("t.yaml"),
        &format!("{HEADER}  process:\n    matchPaths:\n      - path: /bin/ls\n  action: Block\n"),
    )
    .expect("valid");
    let compiled = compile(&policies, DefaultPostures::uniform(DefaultPosture::Audit));
    let merged_usr = |p: &str| p.replacen("/bin/", "/usr/bin/", 1);
    let set = KernelRuleSet::build(
        &SetidRuleSet::default(),
        &compiled,
        &mut PolicyCatalog::default(),
        KEY,
        &merged_usr,
    );
    assert!(
        lookup(
            &set,
            ANY_SOURCE,
            hash("/usr/bin/ls"),
            CLASS_PROCESS,
            MATCH_EXACT
        )
        .is_some()
    );
}

#[test]
fn sockets_are_decided_by_what_they_are() {
    let (set, _) = build(
        &format!(
            "{HEADER}  network:
    matchProtocols:
      - protocol: tcp
      - protocol: udp
        fromSource:
          - path: /usr/bin/curl
  action: Block
"
        ),
        DefaultPosture::Audit,
    );
    let (sh, curl) = ("/bin/sh", "/usr/bin/curl");
    for family in [AF_INET, AF_INET6] {
        let decide = |source: &str, sock_type: u32, protocol: u32| {
            decide_socket(&set, source, (family, sock_type, protocol))
        };
        // MPTCP is TCP, UDP-Lite is UDP.
        assert_eq!(decide(sh, SOCK_STREAM, IPPROTO_MPTCP), ACTION_BLOCK);
        assert_eq!(decide(curl, SOCK_DGRAM, IPPROTO_UDPLITE), ACTION_BLOCK);
        assert_eq!(decide(curl, SOCK_DGRAM, 0), ACTION_BLOCK);
        // What the rules do not name, or a process they do not cover, passes.
        assert_eq!(decide(sh, SOCK_DGRAM, IPPROTO_UDPLITE), ACTION_NONE);
        assert_eq!(decide(sh, SOCK_SEQPACKET, IPPROTO_SCTP), ACTION_NONE);
        assert_eq!(decide(sh, SOCK_RAW, 255), ACTION_NONE);
        // A protocol the table does not know is held where a rule covers the family.
        assert_eq!(decide(sh, 6, 33), ACTION_BLOCK);
    }
    assert_eq!(
        decide_socket(&set, sh, (AF_PACKET, SOCK_RAW, 3)),
        ACTION_NONE
    );
    assert_eq!(decide_socket(&set, sh, (1, SOCK_STREAM, 0)), ACTION_NONE);
}

#[test]
fn an_allowed_protocol_never_allows_unclassified_sockets() {
    let (set, _) = build(
        &format!(
            "{HEADER}  network:
    matchProtocols:
      - protocol: sctp
        fromSource:
          - path: /usr/bin/app
  action: Allow
"
        ),
        DefaultPosture::Block,
    );
    let app = "/usr/bin/app";
    let sctp = (AF_INET6, SOCK_STREAM, IPPROTO_SCTP);
    assert_eq!(decide_socket(&set, app, sctp), ACTION_ALLOW);
    assert_eq!(decide_socket(&set, app, (AF_INET, 6, 33)), ACTION_BLOCK);
    assert_eq!(
        decide_socket(&set, app, (AF_INET, SOCK_STREAM, IPPROTO_MPTCP)),
        ACTION_BLOCK
    );
    assert_eq!(
        decide_socket(&set, "/bin/sh", (AF_INET, 6, 33)),
        ACTION_NONE
    );
}
