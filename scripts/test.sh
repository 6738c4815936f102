#!/usr/bin/env bash
# Every check and every test, from a fresh machine: installs what is missing, then
# formatting, clippy, the committed BPF object's freshness, the Yocto layer (crates
# list against Cargo.lock, oelint-adv), the static cross builds, the board configs,
# unit tests, broker tests (real mosquitto, nats-server alone and clustered,
# rabbitmq-server), the decoder's SOC tests (real prometheus and rsyslog), the VM suite (real Debian kernels under QEMU) and bounded fuzzing
# runs of the decoder and of policy files, agent TOML and bundles (before the tests, so
# cargo test's summary closes the output).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The BPF crate is outside the workspace (its own pinned nightly, target bpfel-unknown-none):
# format and lint it on its own. Only the probes binary: there is no test harness for BPF.
(cd probes/bpf && cargo fmt --check \
    && cargo clippy --locked --release --target bpfel-unknown-none -Z build-std=core -- -D warnings)
probes/build.sh --check
scripts/check-yocto-crates.sh --check
oelint="${EDGEARMOR_OELINT_VENV:-${HOME:-/root}/.cache/edgearmor-oelint}/bin/oelint-adv"
for release in scarthgap walnascar; do
    "$oelint" --quiet --hide info --hide warning --release "$release" \
        yocto-layer/meta-edgearmor/recipes-security/edgearmor/edgearmor_0.1.0.bb \
        yocto-layer/meta-edgearmor/recipes-kernel/linux/linux-%.bbappend
done
cross/build.sh
decoder/fuzz/run.sh 60
fuzz/run.sh 20
cargo build --locked -p edgearmor
scripts/check-board-configs.sh
cargo test --workspace --locked
