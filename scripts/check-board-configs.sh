#!/usr/bin/env bash
# Checks the per-board configurations in board-configs/ with the agent itself.
#
#   scripts/check-board-configs.sh [BOARD...]      every board (or the named ones)
#   scripts/check-board-configs.sh --merge-only BOARD
#                                                  print stock.config + edgearmor.cfg merged
#
# For each board directory (stock.config, edgearmor.cfg, bootargs.txt, agent.toml):
#   1. stock.config alone must FAIL `edgearmor check --kernel-config` (the fragment matters);
#   2. stock.config merged with edgearmor.cfg must PASS it;
#   3. the lsm= line of bootargs.txt must equal CONFIG_LSM of edgearmor.cfg and end in bpf;
#   4. agent.toml must be accepted by the agent's own configuration parser.
# The merge follows scripts/kconfig/merge_config.sh: every symbol the fragment sets
# (`CONFIG_X=...` or `# CONFIG_X is not set`) is removed from the base, then the fragment
# is appended, so the fragment's value wins.
#
# The agent is target/debug/edgearmor (built with `cargo build -p edgearmor` when missing);
# EDGEARMOR_BIN=path overrides it.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
boards_dir="$root/board-configs"
rules_toml="$root/yocto-layer/meta-edgearmor/recipes-security/edgearmor/files/rules.toml"

usage() {
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
}

# merge BASE FRAGMENT: merge_config.sh semantics, result on stdout.
merge() {
    awk '
        function symbol(line) {
            if (match(line, /^CONFIG_[A-Za-z0-9_]+=/)) return substr(line, 1, RLENGTH - 1)
            if (match(line, /^# CONFIG_[A-Za-z0-9_]+ is not set$/)) {
                s = substr(line, 3); sub(/ is not set$/, "", s); return s
            }
            return ""
        }
        FNR == NR { s = symbol($0); if (s != "") set[s] = 1; frag[++n] = $0; next }
        { s = symbol($0); if (s == "" || !(s in set)) print }
        END { for (i = 1; i <= n; i++) print frag[i] }
    ' "$2" "$1"
}

# Value of CONFIG_X in a config, the last line winning ("" when unset).
config_value() {
    awk -v sym="$2" '
        index($0, sym "=") == 1 { v = substr($0, length(sym) + 2) }
        $0 == "# " sym " is not set" { v = "" }
        END { print v }
    ' "$1"
}

# The merge itself, checked on a small example, so a broken merge cannot make boards pass.
merge_self_test() {
    local tmp base frag got want
    tmp="$(mktemp -d)"
    base="$tmp/base" frag="$tmp/frag"
    printf '%s\n' 'CONFIG_A=y' '# CONFIG_B is not set' 'CONFIG_C=m' 'CONFIG_AB=y' \
        'CONFIG_D="x"' '# comment kept' >"$base"
    printf '%s\n' '# fragment' 'CONFIG_B=y' '# CONFIG_A is not set' 'CONFIG_D="x,bpf"' >"$frag"
    got="$(merge "$base" "$frag")"
    want="$(printf '%s\n' 'CONFIG_C=m' 'CONFIG_AB=y' '# comment kept' '# fragment' \
        'CONFIG_B=y' '# CONFIG_A is not set' 'CONFIG_D="x,bpf"')"
    rm -rf "$tmp"
    if [ "$got" != "$want" ]; then
        printf 'check-board-configs: merge self-test failed\n--- expected\n%s\n--- got\n%s\n' \
            "$want" "$got" >&2
        exit 1
    fi
}

board_files_present() {
    local dir="$1" f
    for f in stock.config edgearmor.cfg bootargs.txt agent.toml README.md; do
        [ -f "$dir/$f" ] || { echo "missing $f"; return 1; }
    done
}

if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
    usage
    exit 0
fi

merge_self_test

if [ "${1:-}" = "--merge-only" ]; then
    [ $# -eq 2 ] || { usage >&2; exit 2; }
    dir="$boards_dir/$2"
    if [ ! -f "$dir/stock.config" ] || [ ! -f "$dir/edgearmor.cfg" ]; then
        echo "check-board-configs: no board $2 in board-configs/" >&2
        exit 2
    fi
    merge "$dir/stock.config" "$dir/edgearmor.cfg"
    exit 0
fi

if [ $# -gt 0 ]; then
    boards=("$@")
else
    boards=()
    for d in "$boards_dir"/*/; do boards+=("$(basename "$d")"); done
fi

bin="${EDGEARMOR_BIN:-$root/target/debug/edgearmor}"
if [ ! -x "$bin" ]; then
    echo "check-board-configs: building the agent (cargo build -p edgearmor)" >&2
    (cd "$root" && cargo build -q -p edgearmor)
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failures=0
fail() {
    echo "FAIL  $board: $*"
    failures=$((failures + 1))
}

for board in "${boards[@]}"; do
    dir="$boards_dir/$board"
    if ! missing="$(board_files_present "$dir")"; then
        fail "$missing"
        continue
    fi

    # 1. the stock configuration alone cannot enforce
    status=0
    "$bin" check --kernel-config "$dir/stock.config" >"$work/stock.out" 2>&1 || status=$?
    if [ "$status" -eq 0 ]; then
        fail "edgearmor check passes on stock.config alone: the excerpt no longer shows what the fragment fixes"
    else
        echo "ok    $board: stock.config alone fails as expected (exit $status):"
        grep -E '^(FAIL|WARN)' "$work/stock.out" | sed 's/^/        /' || true
    fi

    # 2. stock + fragment can
    merge "$dir/stock.config" "$dir/edgearmor.cfg" >"$work/$board.config"
    status=0
    "$bin" check --kernel-config "$work/$board.config" >"$work/merged.out" 2>&1 || status=$?
    if [ "$status" -eq 0 ]; then
        echo "ok    $board: stock.config + edgearmor.cfg passes edgearmor check"
        grep -E '^WARN' "$work/merged.out" | sed 's/^/        /' || true
    else
        fail "edgearmor check fails on stock.config + edgearmor.cfg (exit $status):"
        sed 's/^/        /' "$work/merged.out"
    fi

    # 3. the boot argument names the same LSM list as the fragment
    lsm_cfg="$(config_value "$dir/edgearmor.cfg" CONFIG_LSM | tr -d '"')"
    lsm_args="$(grep -E '^lsm=' "$dir/bootargs.txt" || true)"
    if [ "$(printf '%s\n' "$lsm_args" | grep -c .)" -ne 1 ]; then
        fail "bootargs.txt must hold exactly one uncommented lsm=... line"
    elif [ "$lsm_args" != "lsm=$lsm_cfg" ]; then
        fail "bootargs.txt says $lsm_args but edgearmor.cfg has CONFIG_LSM=\"$lsm_cfg\""
    elif [ "${lsm_cfg##*,}" != bpf ]; then
        fail "CONFIG_LSM=\"$lsm_cfg\" does not end in bpf"
    else
        echo "ok    $board: bootargs.txt and CONFIG_LSM agree ($lsm_args)"
    fi

    # 4. agent.toml is valid for the agent (its rule files replaced by the layer's rules.toml,
    #    since /etc/edgearmor does not exist here; no broker is configured, so nothing is sent)
    sed "s|^rules = .*|rules = [\"$rules_toml\"]|" "$dir/agent.toml" >"$work/agent.toml"
    if "$bin" send-test-alerts --config "$work/agent.toml" --count 0 >"$work/agent.out" 2>&1; then
        echo "ok    $board: agent.toml accepted by the agent"
    else
        fail "agent.toml refused by the agent:"
        sed -e '/^usage:/,$d' -e 's/^/        /' "$work/agent.out"
    fi
done

# The Yocto layer's default agent.toml and rules.toml (package edgearmor-config) too.
if [ $# -eq 0 ]; then
    board="meta-edgearmor default"
    sed "s|^rules = .*|rules = [\"$rules_toml\"]|" "$(dirname "$rules_toml")/agent.toml" >"$work/agent.toml"
    if "$bin" send-test-alerts --config "$work/agent.toml" --count 0 >"$work/agent.out" 2>&1; then
        echo "ok    $board: agent.toml and rules.toml accepted by the agent"
    else
        fail "agent.toml or rules.toml refused by the agent:"
        sed -e '/^usage:/,$d' -e 's/^/        /' "$work/agent.out"
    fi
fi

if [ "$failures" -gt 0 ]; then
    echo "check-board-configs: $failures problem(s) in ${#boards[@]} board(s)"
    exit 1
fi
echo "check-board-configs: ${#boards[@]} board(s) OK"
