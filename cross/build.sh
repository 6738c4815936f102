#!/usr/bin/env bash
# Builds stripped, static musl binaries of the agent, the decoder (and the VM suite's
# helper) for each TARGET (default: aarch64 and x86_64) and prints their sizes.
#   cross/build.sh [TARGET...]
# Output: target/cross/<TARGET>/release/{edgearmor,edgearmor-decode,setid-probe}
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(aarch64-unknown-linux-musl x86_64-unknown-linux-musl)
cd "$root"
for t in "${targets[@]}"; do
    # Linkers per target come from .cargo/config.toml (rust-lld: no cross gcc needed).
    cargo build --release --locked --target "$t" --target-dir "$root/target/cross" \
        -p edgearmor -p edgearmor-decode -p edgearmor-test-helpers
    out="$root/target/cross/$t/release"
    for bin in edgearmor edgearmor-decode; do
        printf 'cross: %-28s %-17s %8d bytes (static, stripped)\n' "$t" "$bin" "$(stat -c %s "$out/$bin")" >&2
    done
done
