#!/usr/bin/env bash
# Builds stripped, static musl binaries of the agent, the decoder (and the VM suite's
# helper) for each TARGET (default: aarch64 and x86_64) and prints their sizes.
#   cross/build.sh [TARGET...]
# Output: target/cross/<TARGET>/release/{edgearmor,edgearmor-decode,setid-probe}
set -euo pipefail
# The stripped static agent must fit this budget (issue: at most 5 MB on a gateway).
agent_budget=$((5 * 1000 * 1000))
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
    size=$(stat -c %s "$out/edgearmor")
    if [ "$size" -gt "$agent_budget" ]; then
        echo "cross: $t agent is $size bytes, over its budget of $agent_budget" >&2
        exit 1
    fi
done
