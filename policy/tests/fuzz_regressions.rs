//! Every input the fuzzer found a problem with (`fuzz/regressions/policy_check/`) and
//! every seed (`fuzz/seeds/policy_check/`), through the fuzz harness: a normal test
//! run checks the invariants again on each.

use std::path::Path;

use edgearmor_policy::{fuzzing, parse_policy_text};

fn inputs(dir: &str) -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
        .join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn regression_inputs_keep_every_invariant() {
    for file in inputs("regressions/policy_check") {
        let data = std::fs::read(&file).expect("regression input");
        fuzzing::run_input(&data);
    }
}

#[test]
fn seeds_are_valid_policies_and_keep_every_invariant() {
    let seeds = inputs("seeds/policy_check");
    assert!(!seeds.is_empty());
    for file in seeds {
        let data = std::fs::read(&file).expect("seed");
        fuzzing::run_input(&data);
        let text = String::from_utf8(data).expect("UTF-8 seed");
        // A seed that does not parse would start the fuzzer in the wrong place.
        parse_policy_text(&file, &text).unwrap_or_else(|d| panic!("{}: {d:?}", file.display()));
    }
}
