#!/usr/bin/env bash
# Every check and every test, from a fresh machine: installs what is missing, then
# formatting, clippy, the committed BPF object's freshness, the static cross builds,
# unit tests, broker tests (real mosquitto), the VM suite (real Debian kernels under
# QEMU) and a bounded fuzzing run of the decoder (before the tests, so cargo test's
# summary closes the output).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
probes/build.sh --check
cross/build.sh
decoder/fuzz/run.sh 60
cargo test --workspace --locked
