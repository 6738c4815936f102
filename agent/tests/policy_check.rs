//! `edgearmor policy check` as an operator runs it: one precise line per malformed file,
//! a non-zero exit; the shipped policy set passes.

use std::path::Path;
use std::process::Command;

fn check(paths: &[&Path]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_edgearmor"))
        .args(["policy", "check"])
        .args(paths)
        .output()
        .expect("edgearmor runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn each_malformed_policy_gets_one_precise_error_and_a_failing_exit() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policy/tests/malformed");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("malformed fixtures")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "at least ten malformed fixtures");
    for file in &files {
        let (ok, stdout) = check(&[file]);
        assert!(!ok, "{} must fail", file.display());
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{}: one error, got {lines:?}",
            file.display()
        );
        let name = file.file_name().and_then(|n| n.to_str()).expect("name");
        assert!(
            lines[0].contains(name) && lines[0].contains(".yaml:"),
            "file and line named: {}",
            lines[0]
        );
    }
}

#[test]
fn the_shipped_policy_set_is_clean() {
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let (ok, stdout) = check(&[&policies]);
    assert!(ok, "shipped policies must pass: {stdout}");
}
