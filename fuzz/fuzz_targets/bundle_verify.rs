//! Arbitrary bytes as a bundle, or as a body signed with the fuzz key so the body
//! reader is reached (see `edgearmor_bundle::fuzzing` for the input format and the
//! invariants checked).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    edgearmor_bundle::fuzzing::run_input(data);
});
