//! Every input the fuzzer found a problem with (`fuzz/regressions/bundle_verify/`) and
//! every seed (`fuzz/seeds/bundle_verify/`), through the fuzz harness: a normal test
//! run checks the invariants again on each.

use std::path::Path;

use edgearmor_bundle::fuzzing::{FUZZ_SEED, run_input};
use edgearmor_bundle::{Scope, SigningKey, verify};

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
    for file in inputs("regressions/bundle_verify") {
        run_input(&std::fs::read(&file).expect("regression input"));
    }
}

#[test]
fn seeds_keep_every_invariant_and_the_whole_bundle_verifies() {
    let seeds = inputs("seeds/bundle_verify");
    assert!(seeds.len() >= 4);
    for file in &seeds {
        run_input(&std::fs::read(file).expect("seed"));
    }
    // The checked-in bundle is signed with the fuzz key (`edgearmor bundle create
    // --key` with the seed's secret key text), so the fuzzer starts past the signature.
    let bytes = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/seeds/bundle_verify/bundle-v2-node.bin"),
    )
    .expect("bundle seed");
    let key = SigningKey::from_seed(&FUZZ_SEED);
    let bundle = verify(&bytes, &[key.verifying_key()], 1 << 20).expect("seed verifies");
    assert_eq!(bundle.scope(), Scope::Node);
}
