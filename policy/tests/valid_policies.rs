//! Valid policies: loading (files, directories, hosts), metadata resolution,
//! allow-list mode, and the policy set shipped in the repository's `policies/`.

use std::path::{Path, PathBuf};

use edgearmor_policy::{
    Action, CompiledPolicySet, DefaultPosture, DefaultPostures, FileMatcher, HostPolicy,
    HostSelector, NetworkProtocol, PathMatcher, PolicyError, SetIdSyscall, check_policy_paths,
    compile, load_policy_directory, parse_policy_text, read_policy_file,
};

fn valid(file: &str) -> Vec<HostPolicy> {
    read_policy_file(&Path::new("tests/valid").join(file)).unwrap_or_else(|diagnostics| {
        panic!(
            "{file} should be valid:\n{}",
            diagnostics
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

fn audit_everywhere() -> DefaultPostures {
    DefaultPostures::uniform(DefaultPosture::Audit)
}

fn metadata_of<M>(
    set: &CompiledPolicySet,
    rule: &edgearmor_policy::CompiledRule<M>,
) -> (String, u8, String, String) {
    let m = set.metadata(rule.policy_id).expect("policy id in table");
    (
        m.policy_name.clone(),
        m.severity.get(),
        m.joined_tags(),
        m.message.clone(),
    )
}

#[test]
fn innermost_metadata_wins() {
    let set = compile(&valid("innermost-wins.yaml"), audit_everywhere());
    assert_eq!(set.process.rules.len(), 2);

    let inherits = &set.process.rules[0];
    assert_eq!(
        inherits.matcher,
        PathMatcher::Exact("/usr/bin/inherits-section".into())
    );
    assert_eq!(
        inherits.action,
        Action::Block,
        "section action over policy action"
    );
    assert!(inherits.from_source.is_empty());
    assert_eq!(
        metadata_of(&set, inherits),
        (
            "innermost-wins".into(),
            6,
            "POLICY_TAG".into(),
            "policy message".into()
        ),
        "section severity, policy tags and message"
    );

    let overrides = &set.process.rules[1];
    assert_eq!(overrides.action, Action::Allow);
    assert_eq!(overrides.from_source, vec!["/usr/bin/bash".to_string()]);
    assert_eq!(
        metadata_of(&set, overrides),
        (
            "innermost-wins".into(),
            9,
            "RULE_TAG,SECOND".into(),
            "rule message".into()
        )
    );

    let file_rule = &set.file.rules[0];
    assert_eq!(
        file_rule.matcher,
        FileMatcher {
            target: PathMatcher::Exact("/etc/inherits-policy".into()),
            read_only: true
        }
    );
    assert_eq!(file_rule.action, Action::Audit, "policy action");
    assert_eq!(
        metadata_of(&set, file_rule),
        (
            "innermost-wins".into(),
            3,
            "POLICY_TAG".into(),
            "policy message".into()
        )
    );
    assert_eq!(set.policy_table.len(), 3);
}

#[test]
fn unset_metadata_gets_kubearmor_defaults() {
    let yaml = r#"
apiVersion: security.kubearmor.com/v1
kind: KubeArmorHostPolicy
metadata:
  name: bare
spec:
  nodeSelector:
    matchLabels:
      kubearmor.io/hostname: "*"
  message: ""
  tags: []
  process:
    matchPaths:
      - path: /usr/bin/sleep
"#;
    let policies = parse_policy_text(Path::new("bare.yaml"), yaml).expect("valid");
    let set = compile(&policies, audit_everywhere());
    let rule = &set.process.rules[0];
    assert_eq!(rule.action, Action::Block, "KubeArmor's default action");
    assert_eq!(
        metadata_of(&set, rule),
        ("bare".into(), 1, String::new(), String::new())
    );
}

#[test]
fn rules_with_equal_metadata_share_a_policy_id() {
    let set = compile(&valid("multi-document.yaml"), audit_everywhere());
    let ids: Vec<_> = set.capabilities.rules.iter().map(|r| r.policy_id).collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(|&id| id == ids[0]));
}

#[test]
fn several_documents_per_file() {
    let policies = valid("multi-document.yaml");
    let names: Vec<&str> = policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["first", "second", "third"]);
    assert_eq!(policies[0].position.line, 3);
    assert_eq!(policies[1].host_selector, HostSelector::any_host());

    let set = compile(&policies, audit_everywhere());
    // "tcp,UDP": one rule per protocol, KubeArmor's upper case accepted.
    let protocols: Vec<_> = set.network.rules.iter().map(|r| r.matcher).collect();
    assert_eq!(protocols, [NetworkProtocol::Tcp, NetworkProtocol::Udp]);
    assert!(
        set.network
            .rules
            .iter()
            .all(|r| r.from_source == ["/usr/sbin/chronyd"])
    );
    let capabilities: Vec<_> = set
        .capabilities
        .rules
        .iter()
        .map(|r| r.matcher.number())
        .collect();
    assert_eq!(capabilities, [13, 12, 39]);
    // Duplicates in a syscall list collapse.
    let syscalls: Vec<_> = set.setid.iter().map(|r| r.matcher).collect();
    assert_eq!(syscalls, [SetIdSyscall::Setuid, SetIdSyscall::Setresgid]);
    assert!(set.setid.iter().all(|r| r.action == Action::Audit));

    let file_targets: Vec<_> = set
        .file
        .rules
        .iter()
        .map(|r| (r.matcher.target.as_str(), r.matcher.read_only))
        .collect();
    assert_eq!(
        file_targets,
        [
            ("/var/log/", false),
            ("/etc/ssl/", true),
            ("/home/*/.ssh/id_*", false)
        ]
    );
    let pattern = &set.file.rules[2];
    assert!(pattern.matcher.target.matches("/home/pi/.ssh/id_ed25519"));
    assert_eq!(pattern.from_source, ["/usr/bin/scp"]);
    assert!(set.file.rules[0].matcher.target.matches("/var/log/syslog"));
    assert!(
        !set.file.rules[0]
            .matcher
            .target
            .matches("/var/log/nginx/access.log")
    );
    assert!(
        set.file.rules[1]
            .matcher
            .target
            .matches("/etc/ssl/certs/ca.pem")
    );
}

#[test]
fn allow_rules_put_their_class_in_allow_list_mode() {
    let postures = DefaultPostures {
        process: DefaultPosture::Block,
        file: DefaultPosture::Audit,
        network: DefaultPosture::Audit,
        capabilities: DefaultPosture::Block,
    };
    let set = compile(&valid("allow-list.yaml"), postures);
    assert!(set.process.allow_list);
    assert_eq!(set.process.default_posture, DefaultPosture::Block);
    assert!(!set.network.allow_list);
    assert_eq!(set.network.default_posture, DefaultPosture::Audit);
    assert!(!set.file.allow_list && !set.capabilities.allow_list);
    let actions: Vec<_> = set
        .process
        .rules
        .iter()
        .map(|r| (r.action, r.from_source.len()))
        .collect();
    assert_eq!(actions, [(Action::Allow, 1), (Action::Block, 0)]);
}

#[test]
fn a_directory_loads_for_one_host_and_rejects_bad_files_whole() {
    let load = load_policy_directory(Path::new("tests/mixed-directory"), "gw-1").expect("listable");
    let loaded: Vec<&str> = load.policies.iter().map(|p| p.name.as_str()).collect();
    // 20-broken.yml's valid first document is not loaded: the file is rejected whole.
    assert_eq!(loaded, ["block-ls", "only-on-gw-1"]);

    assert_eq!(load.skipped.len(), 1);
    let skipped = &load.skipped[0];
    assert_eq!(skipped.name, "only-on-gw-2");
    assert_eq!(skipped.selector, HostSelector::hostname("gw-2"));
    assert_eq!(
        skipped.to_string(),
        "tests/mixed-directory/30-other-host.yaml:1: policy \"only-on-gw-2\" selects nodes with kubearmor.io/hostname=gw-2, not host \"gw-1\" (no labels): skipped"
    );

    let rejected: Vec<String> = load.diagnostics().map(ToString::to_string).collect();
    assert_eq!(
        rejected,
        [
            "tests/mixed-directory/20-broken.yml:26: spec.network.matchProtocols[0].protocol: protocol \"dccp\" is not supported yet: edgearmor's network rules name tcp, udp, icmp (ICMP and ICMPv6), raw (every SOCK_RAW and AF_PACKET socket) and sctp",
            "tests/mixed-directory/50-duplicate-name.yaml:5: metadata.name: policy \"block-ls\" is already defined at tests/mixed-directory/10-block-ls.yaml:4",
        ]
    );
    assert_eq!(load.rejected.len(), 2);

    // The same directory for another host.
    let load = load_policy_directory(Path::new("tests/mixed-directory"), "gw-2").expect("listable");
    let loaded: Vec<&str> = load.policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(loaded, ["block-ls", "only-on-gw-2"]);
}

#[test]
fn a_missing_directory_is_an_error() {
    assert!(load_policy_directory(Path::new("tests/no-such-directory"), "gw-1").is_err());
}

#[test]
fn the_content_hash_is_canonical() {
    let policies = valid("multi-document.yaml");
    let set = compile(&policies, audit_everywhere());
    assert_eq!(set, compile(&policies, audit_everywhere()));

    // Independent of the order the policies were loaded in.
    let mut reversed = policies.clone();
    reversed.reverse();
    assert_eq!(
        compile(&reversed, audit_everywhere()).content_hash,
        set.content_hash
    );

    // Sensitive to the postures and to every rule.
    let blocking = compile(&policies, DefaultPostures::uniform(DefaultPosture::Block));
    assert_ne!(blocking.content_hash, set.content_hash);
    let fewer = compile(&policies[..2], audit_everywhere());
    assert_ne!(fewer.content_hash, set.content_hash);

    // Stable across runs and machines: pinned.
    let hash = set.content_hash.to_string();
    assert_eq!(hash.len(), 64);
    assert_eq!(hash, PINNED_MULTI_DOCUMENT_HASH);
    assert_eq!(
        set.content_hash.short_id(),
        u64::from_str_radix(&PINNED_MULTI_DOCUMENT_HASH[..16], 16).expect("hex")
    );
}

/// Changes only when the canonical encoding (or the fixture) changes.
const PINNED_MULTI_DOCUMENT_HASH: &str =
    "7723239f4caec24199b5624eec3f1b5b71c8cae2522aaf7e72bd3e73653eb0e5";

#[test]
fn the_empty_set_compiles() {
    let set = compile(&[], audit_everywhere());
    assert_eq!(set.rule_count(), 0);
    assert!(!set.process.allow_list);
}

// ---------------------------------------------------------------- the shipped set

fn shipped_policies_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

#[test]
fn the_shipped_policies_check_cleanly() {
    let diagnostics = check_policy_paths(&[shipped_policies_dir()]);
    assert!(
        diagnostics.is_empty(),
        "{}",
        diagnostics
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_shipped_policies_compile_to_what_the_issue_asks_for() {
    let load = load_policy_directory(&shipped_policies_dir(), "any-gateway").expect("listable");
    assert!(load.rejected.is_empty() && load.skipped.is_empty());
    let set = compile(
        &load.policies,
        DefaultPostures::uniform(DefaultPosture::Block),
    );
    assert_eq!(
        set.policy_names,
        [
            "block-package-managers",
            "block-sshd-setid",
            "forbid-raw-sockets",
            "protect-account-files"
        ]
    );

    // Package managers: every one blocked, by exact path and by pattern.
    for manager in [
        "/usr/bin/apt",
        "/usr/bin/apt-get",
        "/usr/bin/dpkg",
        "/sbin/apk",
        "/bin/opkg",
        "/usr/bin/rpm",
        "/usr/bin/yum",
        "/usr/bin/dnf",
        "/usr/bin/pip",
        "/usr/bin/npm",
    ] {
        assert!(
            set.process
                .rules
                .iter()
                .any(|r| r.matcher == PathMatcher::Exact(manager.into())
                    && r.action == Action::Block),
            "{manager}"
        );
    }
    for variant in [
        "/usr/bin/apt-cache",
        "/usr/bin/aptitude",
        "/usr/bin/dpkg-deb",
        "/usr/bin/pip3.11",
    ] {
        assert!(
            set.process.rules.iter().any(|r| matches!(r.matcher, PathMatcher::Pattern(_)) && r.matcher.matches(variant)),
            "{variant}"
        );
    }
    assert!(
        !set.process
            .rules
            .iter()
            .any(|r| r.matcher.matches("/usr/bin/ls"))
    );

    // sshd: every setid syscall blocked, only from sshd.
    assert_eq!(set.setid.len(), SetIdSyscall::ALL.len());
    assert!(
        set.setid
            .iter()
            .all(|r| r.action == Action::Block && r.from_source == ["/usr/sbin/sshd"])
    );

    // Account files: read-only.
    for file in ["/etc/shadow", "/etc/passwd"] {
        assert!(set.file.rules.iter().any(|r| r.matcher
            == FileMatcher {
                target: PathMatcher::Exact(file.into()),
                read_only: true
            }
            && r.action == Action::Block));
    }

    // Raw sockets.
    assert_eq!(set.network.rules.len(), 1);
    assert_eq!(set.network.rules[0].matcher, NetworkProtocol::Raw);
    assert_eq!(set.network.rules[0].action, Action::Block);

    // Nothing allows, so no class is in allow-list mode.
    assert!(!set.process.allow_list && !set.file.allow_list && !set.network.allow_list);

    // Every policy carries NIST and MITRE tags and a severity.
    for metadata in &set.policy_table {
        assert!(
            metadata.tags.iter().any(|t| t == "NIST"),
            "{}",
            metadata.policy_name
        );
        assert!(
            metadata.tags.iter().any(|t| t.starts_with("NIST_800-53_")),
            "{}",
            metadata.policy_name
        );
        assert!(
            metadata.tags.iter().any(|t| t.starts_with("MITRE_T")),
            "{}",
            metadata.policy_name
        );
        assert!(!metadata.message.is_empty());
    }
}

#[test]
fn explicit_yaml_tags_are_refused() {
    let yaml = r#"
apiVersion: security.kubearmor.com/v1
kind: KubeArmorHostPolicy
metadata:
  name: tagged
spec:
  nodeSelector:
    matchLabels:
      kubearmor.io/hostname: "*"
  severity: !!int 5
  process:
    matchPaths:
      - path: /usr/bin/sleep
"#;
    let diagnostics = parse_policy_text(Path::new("t.yaml"), yaml).expect_err("tag");
    assert_eq!(diagnostics.len(), 1);
    assert!(matches!(diagnostics[0].error, PolicyError::Unsupported(_)));
    assert_eq!(diagnostics[0].yaml_path, "spec.severity");
}
