#!/usr/bin/env bash
# Fuzzes what edgearmor reads from files and the fleet, each target for a bounded time:
# ./run.sh [SECONDS] [TARGET...] (default 60 seconds each; targets: policy_check,
# agent_config, bundle_verify; default all three, one after the other).
#
# Installs cargo-fuzz when missing (it needs the nightly toolchain, which this project's
# machines have). Seeds: seeds/<target>/ and the project's own files (shipped and test
# policies, board agent.toml files); new interesting inputs go to corpus/<target> (not
# checked in). Exits non-zero on the first crash, leaving the input in
# artifacts/<target>/: add it to regressions/<target>/ named after what it broke; the
# crates' normal tests (fuzz_regressions.rs) run every file there.
set -euo pipefail
seconds="${1:-60}"
case "$seconds" in
    '' | *[!0-9]*) echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 2 ;;
esac
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=(policy_check agent_config bundle_verify)
fi
cd "$(dirname "$0")"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "run.sh: installing cargo-fuzz" >&2
    cargo +nightly install cargo-fuzz --locked
fi
for target in "${targets[@]}"; do
    case "$target" in
        policy_check)
            seeds=(seeds/policy_check ../policies ../policy/tests/valid ../policy/tests/malformed
                   ../policy/tests/mixed-directory regressions/policy_check)
            max_len=65536 ;;
        agent_config)
            seeds=(seeds/agent_config ../board-configs/*/agent.toml regressions/agent_config)
            max_len=16384 ;;
        bundle_verify)
            seeds=(seeds/bundle_verify regressions/bundle_verify)
            max_len=65536 ;;
        *) echo "run.sh: unknown target $target" >&2; exit 2 ;;
    esac
    # libFuzzer takes directories only: the board files go through a scratch copy.
    dirs=()
    for seed in "${seeds[@]}"; do
        if [ -d "$seed" ]; then
            dirs+=("$seed")
        elif [ -f "$seed" ]; then
            mkdir -p "corpus/$target-files"
            cp "$seed" "corpus/$target-files/$(echo "$seed" | tr '/.' '__')"
        fi
    done
    [ -d "corpus/$target-files" ] && dirs+=("corpus/$target-files")
    mkdir -p "corpus/$target"
    echo "run.sh: fuzzing $target for ${seconds}s" >&2
    cargo +nightly fuzz run "$target" "corpus/$target" "${dirs[@]}" -- \
        -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1
done
