//! Arbitrary bytes as `agent.toml` and as a `[[setid]]` rules file (see
//! `edgearmor::fuzzing` for the invariants checked).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    edgearmor::fuzzing::run_input(data);
});
