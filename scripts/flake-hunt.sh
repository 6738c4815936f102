#!/usr/bin/env bash
# Runs tests N times and prints, per test function, how many runs passed and failed,
# with the first failing assertion (the panic message) of every failed run.
# A diagnostic for flaky tests; not part of .ci/run.
#
#   scripts/flake-hunt.sh N [TEST...]
#
# TEST names a cargo test target, optionally narrowed by a name filter:
#
#   PACKAGE:TARGET[:FILTER]
#
#   PACKAGE  a workspace package (edgearmor, edgearmor-decode, edgearmor-vm, ...)
#   TARGET   one of its integration-test targets: tests/TARGET.rs
#   FILTER   passed to the test binary as libtest's name filter (the test functions
#            whose names contain it run), like `cargo test -p PACKAGE --test TARGET FILTER`
#
#   scripts/flake-hunt.sh 3 edgearmor-vm:fleet_bundles
#   scripts/flake-hunt.sh 5 edgearmor:broker edgearmor-decode:broker
#   scripts/flake-hunt.sh 2 edgearmor-vm:policy_enforcement:x86_64_debian_6_12
#   scripts/flake-hunt.sh 2 edgearmor:broker:throttling
#
# Without TEST: every VM test target (every integration test of edgearmor-vm), the
# broker matrix (every test of edgearmor-broker-tests) and the agent's and decoder's
# tests against a real broker (edgearmor:broker, clock_steps, disk_full, fleet_scope,
# edgearmor-decode:broker).
#
# How: one build, the way CI builds (`cargo test --workspace --locked --no-run`, test
# profile), whose --message-format=json names the test executables; the static guest
# binaries the selected VM targets boot (cross/build.sh, for the architectures their
# sources name; FLAKE_HUNT_CROSS="TARGET..." overrides, "" skips); then N rounds, each
# running every TEST's executable directly, in turn, from its package directory as
# cargo does. So the runs measure the tests, not the compiler. libtest's defaults are
# kept (tests of one binary run in parallel, as under CI); set RUST_TEST_THREADS to
# change that.
#
# Output: a line per run as it ends, then the summary. Every run's full output is kept
# under target/flake-hunt/<date-time>/. Exit status: 0 if every run passed, 1 if any
# failed, 2 on a usage or build error.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
}

[ $# -ge 1 ] || usage
rounds=$1
shift
case "$rounds" in
'' | *[!0-9]* | 0) echo "flake-hunt: N must be a positive number, not '$rounds'" >&2; exit 2 ;;
esac

specs=("$@")
if [ ${#specs[@]} -eq 0 ]; then
    for file in tests/vm/tests/*.rs; do
        name=$(basename "$file" .rs)
        specs+=("edgearmor-vm:$name")
    done
    for file in tests/brokers/tests/*.rs; do
        specs+=("edgearmor-broker-tests:$(basename "$file" .rs)")
    done
    specs+=("edgearmor:broker" "edgearmor:clock_steps" "edgearmor:disk_full"
            "edgearmor:fleet_scope" "edgearmor-decode:broker")
fi
for spec in "${specs[@]}"; do
    IFS=: read -r package target filter extra <<<"$spec"
    if [ -z "$package" ] || [ -z "$target" ] || [ -n "${extra:-}" ]; then
        echo "flake-hunt: '$spec' is not PACKAGE:TARGET[:FILTER]" >&2
        exit 2
    fi
done

out="$root/target/flake-hunt/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"

# --- build once --------------------------------------------------------------------
echo "flake-hunt: building the test executables (cargo test --workspace --locked --no-run)" >&2
if ! cargo test --workspace --locked --no-run --message-format=json-render-diagnostics \
    >"$out/build.json" 2>"$out/build.log"; then
    tail -n 40 "$out/build.log" >&2
    echo "flake-hunt: the build failed (full log: $out/build.log)" >&2
    exit 2
fi

# "package<TAB>target<TAB>executable<TAB>package dir<TAB>source" per integration test.
cargo metadata --no-deps --format-version 1 --locked >"$out/metadata.json"
python3 - "$out/metadata.json" "$out/build.json" >"$out/executables.tsv" <<'EOF'
import json, os, sys

names = {}
with open(sys.argv[1]) as f:
    for package in json.load(f)["packages"]:
        names[package["id"]] = package["name"]
with open(sys.argv[2]) as f:
    for line in f:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if message.get("reason") != "compiler-artifact" or not message.get("executable"):
            continue
        target = message["target"]
        if target.get("kind") != ["test"]:
            continue
        package = names.get(message["package_id"])
        if package is None:
            continue
        directory = os.path.dirname(message["manifest_path"])
        print("\t".join([package, target["name"], message["executable"], directory, target["src_path"]]))
EOF

declare -A exe dir src
while IFS=$'\t' read -r package target executable directory source; do
    exe["$package:$target"]=$executable
    dir["$package:$target"]=$directory
    src["$package:$target"]=$source
done <"$out/executables.tsv"

vm_sources=()
for spec in "${specs[@]}"; do
    IFS=: read -r package target filter <<<"$spec"
    if [ -z "${exe[$package:$target]:-}" ]; then
        echo "flake-hunt: no test target '$target' in package '$package'; there are:" >&2
        cut -f1,2 --output-delimiter=: "$out/executables.tsv" | sort | sed 's/^/  /' >&2
        exit 2
    fi
    [ "$package" != edgearmor-vm ] || vm_sources+=("${src[$package:$target]}")
done

# --- the static guest binaries the VM targets boot -----------------------------------
if [ -n "${FLAKE_HUNT_CROSS+set}" ]; then
    read -r -a cross_targets <<<"$FLAKE_HUNT_CROSS"
else
    cross_targets=()
    if [ ${#vm_sources[@]} -gt 0 ]; then
        grep -q 'Arch::X86_64' "${vm_sources[@]}" && cross_targets+=(x86_64-unknown-linux-musl)
        grep -q 'Arch::Aarch64' "${vm_sources[@]}" && cross_targets+=(aarch64-unknown-linux-musl)
    fi
fi
if [ ${#cross_targets[@]} -gt 0 ]; then
    echo "flake-hunt: building the guest binaries (cross/build.sh ${cross_targets[*]})" >&2
    if ! cross/build.sh "${cross_targets[@]}" >"$out/cross.log" 2>&1; then
        tail -n 40 "$out/cross.log" >&2
        echo "flake-hunt: cross/build.sh failed (full log: $out/cross.log)" >&2
        exit 2
    fi
fi

# --- N rounds ----------------------------------------------------------------------
# Per test function (key: spec, tab, test name): pass and fail counts, failure lines.
sep=$'\t'
declare -A passed failed failures
order=()
note_test() {
    local key=$1
    if [ -z "${passed[$key]+set}" ]; then
        passed[$key]=0
        failed[$key]=0
        failures[$key]=""
        order+=("$key")
    fi
}

# Prints "RESULT<TAB>name<TAB>ok|FAILED" per test and "PANIC<TAB>name<TAB>location: message"
# for the first panic reported in each failed test's output section.
parse_log() {
    awk '
        /^test .* \.\.\. (ok|FAILED)$/ {
            name = $2
            status = $NF
            printf "RESULT\t%s\t%s\n", name, status
            next
        }
        /^---- .* stdout ----$/ {
            section = $2
            next
        }
        section != "" && !(section in seen) && /panicked at .*:$/ {
            location = $0
            sub(/^.*panicked at /, "", location)
            sub(/:$/, "", location)
            message = ""
            if ((getline line) > 0) message = line
            printf "PANIC\t%s\t%s: %s\n", section, location, message
            seen[section] = 1
        }
    ' "$1"
}

any_failed=0
for ((round = 1; round <= rounds; round++)); do
    for spec in "${specs[@]}"; do
        IFS=: read -r package target filter <<<"$spec"
        binary="$package:$target"
        tag=$(printf '%s' "$spec" | tr -c 'A-Za-z0-9_.-' '_')
        log="$out/$tag.run$round.log"
        args=()
        [ -z "$filter" ] || args+=("$filter")
        start=$(date +%s)
        set +e
        (cd "${dir[$binary]}" && CARGO_MANIFEST_DIR="${dir[$binary]}" "${exe[$binary]}" "${args[@]}") >"$log" 2>&1
        status=$?
        set -e
        took=$(($(date +%s) - start))

        # One pass over the log: verdicts in order, the first panic of each test.
        declare -A panic_of=()
        verdicts=()
        while IFS=$'\t' read -r kind name rest; do
            case "$kind" in
            PANIC) panic_of[$name]=$rest ;;
            RESULT) verdicts+=("$name$sep$rest") ;;
            esac
        done < <(parse_log "$log")
        results=${#verdicts[@]}
        for verdict in "${verdicts[@]}"; do
            name=${verdict%%"$sep"*}
            key="$spec$sep$name"
            note_test "$key"
            if [ "${verdict#*"$sep"}" = ok ]; then
                passed[$key]=$((${passed[$key]} + 1))
            else
                failed[$key]=$((${failed[$key]} + 1))
                failures[$key]+="      run $round: ${panic_of[$name]:-no panic message found} ($log)"$'\n'
            fi
        done
        unset panic_of
        if [ "$status" -ne 0 ] && ! grep -q '^test .* \.\.\. FAILED$' "$log"; then
            # Died without a libtest verdict (killed, aborted, crashed): a failure too.
            key="$spec$sep(the test binary)"
            note_test "$key"
            failed[$key]=$((${failed[$key]} + 1))
            failures[$key]+="      run $round: exited with status $status and no test verdict: $(tail -n 1 "$log") ($log)"$'\n'
        fi
        if [ "$status" -eq 0 ] && [ "$results" -gt 0 ]; then
            verdict=ok
        elif [ "$status" -eq 0 ]; then
            verdict="ok (no test matched)"
        else
            verdict=FAILED
            any_failed=1
        fi
        echo "flake-hunt: round $round/$rounds $spec: $verdict (${took}s)" >&2
    done
done

# --- summary -----------------------------------------------------------------------
echo
echo "flake-hunt: $rounds round(s); logs in $out"
current=""
for key in "${order[@]}"; do
    spec=${key%%"$sep"*}
    name=${key#*"$sep"}
    if [ "$spec" != "$current" ]; then
        echo "$spec"
        current=$spec
    fi
    printf '  %-70s %3d passed %3d failed\n' "$name" "${passed[$key]}" "${failed[$key]}"
    [ -z "${failures[$key]}" ] || printf '%s' "${failures[$key]}"
done
exit "$any_failed"
