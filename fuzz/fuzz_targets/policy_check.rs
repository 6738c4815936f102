//! Arbitrary bytes as a policy file: checked as `edgearmor policy check` does, and
//! compiled when valid (see `edgearmor_policy::fuzzing` for the invariants checked).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    edgearmor_policy::fuzzing::run_input(data);
});
