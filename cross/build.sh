#!/usr/bin/env bash
# Builds stripped, static musl binaries of the agent (and the VM suite's helper) for
# each TARGET (default: aarch64 and x86_64) and prints their sizes.
#   cross/build.sh [TARGET...]
# Output: target/cross/<TARGET>/release/{edgearmor,setid-probe}
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(aarch64-unknown-linux-musl x86_64-unknown-linux-musl)
cd "$root"
for t in "${targets[@]}"; do
    # Linkers per target come from .cargo/config.toml (rust-lld: no cross gcc needed).
    cargo build --release --locked --target "$t" --target-dir "$root/target/cross" \
        -p edgearmor -p edgearmor-test-helpers
    out="$root/target/cross/$t/release"
    printf 'cross: %-28s edgearmor %8d bytes (static, stripped)\n' "$t" "$(stat -c %s "$out/edgearmor")" >&2
done
