#!/usr/bin/env bash
# Every check and every test, from a fresh machine: installs what is missing, then
# formatting, clippy, the committed BPF object's freshness, the static cross builds,
# unit tests and the VM suite (real Debian kernels under QEMU).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
probes/build.sh --check
cross/build.sh
cargo test --workspace --locked
