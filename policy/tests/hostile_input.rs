//! Whatever bytes a policy file holds, checking it ends in policies or in
//! diagnostics: never a panic, never unbounded work.

use std::path::{Path, PathBuf};

use edgearmor_policy::loader::MAX_POLICY_FILE_BYTES;
use edgearmor_policy::{PolicyError, parse_policy_text, read_policy_file};

fn fixtures() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["tests/valid", "tests/malformed", "../policies"] {
        for entry in std::fs::read_dir(dir).expect("fixture directory") {
            files.push(entry.expect("entry").path());
        }
    }
    files.sort();
    files
}

#[test]
fn every_truncation_of_every_fixture_is_handled() {
    for file in fixtures() {
        let text = std::fs::read_to_string(&file).expect("fixture is UTF-8");
        for (cut, _) in text.char_indices() {
            // Either outcome is fine; reaching the next iteration is the test.
            let _ = parse_policy_text(&file, &text[..cut]);
        }
    }
}

#[test]
fn deeply_nested_yaml_is_refused_not_recursed_into() {
    // Block nesting: only edgearmor's own limit stands in the way.
    let text: String = (0..200)
        .map(|depth| format!("{}a:\n", " ".repeat(depth)))
        .collect();
    let diagnostics = parse_policy_text(Path::new("deep.yaml"), &text).expect_err("too deep");
    assert_eq!(
        diagnostics[0].error,
        PolicyError::NestingTooDeep { limit: 64 }
    );
    // Flow nesting: the YAML parser gives up first.
    let text = format!("spec: {}{}", "[".repeat(10_000), "]".repeat(10_000));
    let diagnostics = parse_policy_text(Path::new("deep.yaml"), &text).expect_err("too deep");
    assert!(matches!(
        diagnostics[0].error,
        PolicyError::NestingTooDeep { .. } | PolicyError::YamlSyntax { .. }
    ));
}

#[test]
fn aliases_are_expanded() {
    let text = r#"
apiVersion: security.kubearmor.com/v1
kind: KubeArmorHostPolicy
metadata:
  name: aliases
spec:
  nodeSelector:
    matchLabels:
      kubearmor.io/hostname: "*"
  tags: &common [NIST, MITRE]
  process:
    tags: *common
    matchPaths:
      - path: /usr/bin/apt
"#;
    let policies = parse_policy_text(Path::new("a.yaml"), text).expect("valid");
    assert_eq!(
        policies[0]
            .process
            .as_ref()
            .and_then(|s| s.overrides.tags.clone()),
        Some(vec!["NIST".to_string(), "MITRE".to_string()])
    );
}

fn scratch_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = std::env::temp_dir().join(format!("edgearmor-policy-{}-{name}", std::process::id()));
    std::fs::write(&path, bytes).expect("temp dir writable");
    path
}

#[test]
fn files_that_are_not_utf8_are_rejected() {
    let path = scratch_file("latin1.yaml", b"metadata:\n  name: caf\xe9\n");
    let diagnostics = read_policy_file(&path).expect_err("not UTF-8");
    assert_eq!(diagnostics[0].error, PolicyError::NotUtf8);
    let _ = std::fs::remove_file(path);
}

#[test]
fn oversized_files_are_rejected_before_parsing() {
    let size = usize::try_from(MAX_POLICY_FILE_BYTES).expect("fits") + 1;
    let path = scratch_file("huge.yaml", &vec![b'#'; size]);
    let diagnostics = read_policy_file(&path).expect_err("too large");
    assert!(matches!(
        diagnostics[0].error,
        PolicyError::FileTooLarge { .. }
    ));
    let _ = std::fs::remove_file(path);
}
