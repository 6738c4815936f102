#!/usr/bin/env bash
# Rebuilds the committed BPF object probes/edgearmor-probes.bpf.o from source with the
# pinned nightly and bpf-linker. `--check` rebuilds into a temporary file and fails when
# the committed bytes differ (CI uses it to catch a stale object).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
object="$here/edgearmor-probes.bpf.o"
expected_rustc="rustc 1.97.0-nightly (e50aa6fba 2026-05-19)"

cd "$here/bpf"
actual_rustc=$(rustc -V)
if [ "$actual_rustc" != "$expected_rustc" ]; then
    echo "probes/build.sh: need '$expected_rustc' (pinned in probes/bpf/rust-toolchain.toml), found '$actual_rustc'" >&2
    exit 1
fi
command -v bpf-linker >/dev/null || { echo "probes/build.sh: bpf-linker not installed (scripts/install-deps.sh)" >&2; exit 1; }

# Source paths end up in the object (panic locations); map them to fixed names so the
# bytes do not depend on where the checkout or the cargo home lives.
cargo_home=${CARGO_HOME:-$HOME/.cargo}
export RUSTFLAGS="--remap-path-prefix=$repo=/edgearmor --remap-path-prefix=$cargo_home=/cargo -C debuginfo=2 -C link-arg=--btf"
export CARGO_TARGET_DIR="$here/bpf/target"
cargo build --release --locked --target bpfel-unknown-none -Z build-std=core -q
linked="$CARGO_TARGET_DIR/bpfel-unknown-none/release/edgearmor-probes"
# BTF (func_info for the bpf_loop callbacks) needs debug info at link time; the DWARF
# itself is dead weight in the agent binary, so it goes and .BTF/.BTF.ext stay.
objcopy=$(command -v llvm-objcopy-22 || command -v llvm-objcopy || true)
nm=$(command -v llvm-nm-22 || command -v llvm-nm || true)
[ -n "$objcopy" ] && [ -n "$nm" ] || { echo "probes/build.sh: llvm-objcopy/llvm-nm not installed (scripts/install-deps.sh)" >&2; exit 1; }
# Static functions (bpf_loop callbacks must be static) keep mangled names whose crate
# hash depends on the checkout path: drop the hash so the object does not. In v0
# mangling a crate root is `C`, an optional disambiguator `s<base-62>_` (the hash), then
# the length-prefixed crate name; it sits inside the symbol, not at its start, once the
# function is in a module (`_RNvNtCs<hash>_16edgearmor_probes4path9walk_step`). Both of
# our path crates get such a hash, so strip it after every root of either of them.
local_crate_root='Cs[0-9A-Za-z]+_(16edgearmor_probes|19edgearmor_probe_abi)'
renames=()
while read -r symbol; do
    renames+=("--redefine-sym=$symbol=$(echo "$symbol" | sed -E "s/$local_crate_root/C\\1/g")")
done < <("$nm" "$linked" | awk '{print $NF}' | grep -E "$local_crate_root" || true)
built="$CARGO_TARGET_DIR/edgearmor-probes.stripped.o"
"$objcopy" --strip-debug "${renames[@]}" "$linked" "$built"
# Any crate hash left (a new mangling shape, a legacy `17h<hash>E` name) would make
# the object depend on the checkout path again: refuse it.
if leftover=$("$nm" "$built" | awk '{print $NF}' | grep -E "$local_crate_root|edgearmor.*17h[0-9a-f]{16}E"); then
    echo "probes/build.sh: symbols still carry a crate hash (path-dependent object):" >&2
    echo "$leftover" >&2
    exit 1
fi

if [ "${1:-}" = "--check" ]; then
    if ! cmp -s "$built" "$object"; then
        echo "probes/build.sh: committed $object is stale: rebuild with probes/build.sh and commit it" >&2
        echo "  committed: $(sha256sum < "$object")" >&2
        echo "  rebuilt:   $(sha256sum < "$built")" >&2
        exit 1
    fi
    echo "probes: committed BPF object matches its source ($(sha256sum "$object" | cut -c1-16))"
else
    cp "$built" "$object"
    echo "probes: wrote $object ($(stat -c %s "$object") bytes, sha256 $(sha256sum "$object" | cut -c1-16))"
fi
