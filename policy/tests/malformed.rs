//! `edgearmor policy check` on malformed files: each file in `tests/malformed/`
//! has exactly one problem, reported exactly as below.

use std::path::{Path, PathBuf};

use edgearmor_policy::{PolicyError, check_policy_paths, read_policy_file};

/// (file, the one line `edgearmor policy check` prints for it)
const EXPECTED: &[(&str, &str)] = &[
    (
        "bad-yaml-syntax.yaml",
        "tests/malformed/bad-yaml-syntax.yaml:13: YAML syntax error: while parsing a block mapping, did not find expected key",
    ),
    (
        "wrong-kind.yaml",
        "tests/malformed/wrong-kind.yaml:3: kind: unsupported kind \"KubeArmorPolicy\": edgearmor enforces \"KubeArmorHostPolicy\" documents only",
    ),
    (
        "wrong-api-version.yaml",
        "tests/malformed/wrong-api-version.yaml:2: apiVersion: unsupported apiVersion \"security.accuknox.com/v1\" (expected \"security.kubearmor.com/v1\")",
    ),
    (
        "unknown-key.yaml",
        "tests/malformed/unknown-key.yaml:13: spec.process.matchPaths[0].fromsource: unknown key \"fromsource\" (did you mean \"fromSource\"?)",
    ),
    (
        "bad-action.yaml",
        "tests/malformed/bad-action.yaml:13: spec.action: invalid action \"Deny\" (expected \"Allow\", \"Audit\" or \"Block\")",
    ),
    (
        "relative-path.yaml",
        "tests/malformed/relative-path.yaml:13: spec.process.matchPaths[1].path: \"sbin/sshd\" is not an absolute path",
    ),
    (
        "severity-42.yaml",
        "tests/malformed/severity-42.yaml:10: spec.severity: severity 42 is out of range (1 to 10)",
    ),
    (
        "empty-rule.yaml",
        "tests/malformed/empty-rule.yaml:12: spec.process.matchPaths[0]: missing required key \"path\"",
    ),
    (
        "empty-section.yaml",
        "tests/malformed/empty-section.yaml:10: spec.file: the file section has no rules (give matchPaths, matchDirectories or matchPatterns)",
    ),
    (
        "bad-protocol.yaml",
        "tests/malformed/bad-protocol.yaml:12: spec.network.matchProtocols[0].protocol: protocol \"dccp\" is not supported yet: edgearmor's network rules name tcp, udp, icmp (ICMP and ICMPv6), raw (every SOCK_RAW and AF_PACKET socket) and sctp",
    ),
    (
        "bad-capability.yaml",
        "tests/malformed/bad-capability.yaml:12: spec.capabilities.matchCapabilities[0].capability: unknown capability \"CAP_NET_RAW\" (did you mean \"net_raw\"? capabilities are written in lower case without CAP_)",
    ),
    (
        "directory-without-trailing-slash.yaml",
        "tests/malformed/directory-without-trailing-slash.yaml:12: spec.file.matchDirectories[0].dir: directory \"/etc\" must end with '/'",
    ),
    (
        "unsupported-owner-only.yaml",
        "tests/malformed/unsupported-owner-only.yaml:13: spec.file.matchPaths[0].ownerOnly: ownerOnly: true is not supported: edgearmor cannot yet restrict a path to its owner; remove it (or set it to false)",
    ),
    (
        "unsupported-syscall.yaml",
        "tests/malformed/unsupported-syscall.yaml:13: spec.syscalls.matchSyscalls[0].syscall[0]: syscall \"unlink\" is not supported: edgearmor enforces setuid, setgid, setreuid, setregid, setresuid, setresgid, setfsuid and setfsgid",
    ),
    (
        "bad-glob.yaml",
        "tests/malformed/bad-glob.yaml:12: spec.process.matchPatterns[0].pattern: pattern \"/usr/bin/[apt\" has a \"[\" without its \"]\"",
    ),
    (
        "bad-node-label.yaml",
        "tests/malformed/bad-node-label.yaml:9: spec.nodeSelector.matchLabels.site: node label value \"plant 7\": must be letters, digits, '-', '_' and '.', starting and ending with a letter or digit",
    ),
    (
        "node-match-expressions.yaml",
        "tests/malformed/node-match-expressions.yaml:10: spec.nodeSelector.matchExpressions: nodeSelector.matchExpressions is not part of KubeArmor's KubeArmorHostPolicy (its nodeSelector has matchLabels only): select nodes with matchLabels",
    ),
    (
        "duplicate-key.yaml",
        "tests/malformed/duplicate-key.yaml:14: spec.file.matchPaths[0].readOnly: key \"readOnly\" given twice (first on line 13)",
    ),
    (
        "allow-in-syscalls.yaml",
        "tests/malformed/allow-in-syscalls.yaml:12: spec.syscalls.matchSyscalls[0]: action Allow (from spec.action) is not supported for syscalls: setid rules Audit or Block",
    ),
    (
        "regex-pattern.yaml",
        "tests/malformed/regex-pattern.yaml:12: spec.file.matchPatterns[0].pattern: pattern \"^/proc/[0-9]+/mem$\" is a regular expression (it starts with '^'), not a path glob: patterns match the whole path with '*', '?' and [...]; write it without the '^' and '$' anchors",
    ),
];

fn malformed(file: &str) -> PathBuf {
    Path::new("tests/malformed").join(file)
}

#[test]
fn each_malformed_file_has_its_one_exact_error() {
    for (file, expected) in EXPECTED {
        let diagnostics = read_policy_file(&malformed(file)).expect_err(file);
        let printed: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
        assert_eq!(printed, vec![expected.to_string()], "{file}");
    }
}

#[test]
fn every_malformed_file_is_covered() {
    let mut on_disk: Vec<String> = std::fs::read_dir("tests/malformed")
        .expect("tests/malformed exists")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut covered: Vec<String> = EXPECTED.iter().map(|(f, _)| f.to_string()).collect();
    covered.sort();
    assert_eq!(on_disk, covered);
    assert!(covered.len() >= 10);
}

#[test]
fn checking_the_directory_reports_one_line_per_file() {
    let diagnostics = check_policy_paths(&[PathBuf::from("tests/malformed")]);
    assert_eq!(diagnostics.len(), EXPECTED.len());
    let mut printed: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    printed.sort();
    let mut expected: Vec<String> = EXPECTED.iter().map(|(_, e)| e.to_string()).collect();
    expected.sort();
    assert_eq!(printed, expected);
}

#[test]
fn diagnostics_carry_structured_values() {
    let diagnostics = read_policy_file(&malformed("relative-path.yaml")).expect_err("malformed");
    let d = &diagnostics[0];
    assert_eq!((d.line, d.column), (13, 15));
    assert_eq!(d.yaml_path, "spec.process.matchPaths[1].path");
    assert_eq!(
        d.error,
        PolicyError::NotAbsolute {
            path: "sbin/sshd".into()
        }
    );
    assert_eq!(d.message(), "\"sbin/sshd\" is not an absolute path");

    let diagnostics = read_policy_file(&malformed("severity-42.yaml")).expect_err("malformed");
    assert_eq!(
        diagnostics[0].error,
        PolicyError::SeverityOutOfRange { found: 42 }
    );
}

#[test]
fn unreadable_files_are_reported_without_a_line() {
    let diagnostics = check_policy_paths(&[PathBuf::from("tests/malformed/no-such-file.yaml")]);
    assert_eq!(diagnostics.len(), 1);
    assert_eq!(diagnostics[0].line, 0);
    assert!(matches!(
        diagnostics[0].error,
        PolicyError::Unreadable { .. }
    ));
    assert!(
        diagnostics[0]
            .to_string()
            .starts_with("tests/malformed/no-such-file.yaml: cannot read the file: ")
    );
}
