//! Arbitrary bytes into the decoder's whole payload path: wire decode, topic identity
//! check, sequence tracking, policy tables, status JSON, expansion and JSON lines (see
//! `edgearmor_decode::fuzzing` for the input format and the invariants checked).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    edgearmor_decode::fuzzing::run_input(data);
});
