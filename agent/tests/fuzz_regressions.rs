//! Every input the fuzzer found a problem with (`fuzz/regressions/agent_config/`) and
//! every seed (`fuzz/seeds/agent_config/`), through the fuzz harness: a normal test
//! run checks the invariants again on each.

use std::path::Path;

use edgearmor::fuzzing::run_input;

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
    for file in inputs("regressions/agent_config") {
        run_input(&std::fs::read(&file).expect("regression input"));
    }
}

#[test]
fn seeds_keep_every_invariant() {
    let seeds = inputs("seeds/agent_config");
    assert!(!seeds.is_empty());
    for file in seeds {
        run_input(&std::fs::read(&file).expect("seed"));
    }
}
