#!/usr/bin/env bash
# Fuzzes edgearmor-decode's payload path for a bounded time: ./run.sh [SECONDS] (default 60).
#
# Installs cargo-fuzz when missing (it needs the nightly toolchain, which this project's
# machines have). Seeds: the valid sessions in seeds/ and the malformed-payload corpus
# of ../tests/malformed; new interesting inputs go to corpus/decode_payload (not
# checked in). Exits non-zero on a crash, leaving the input in artifacts/decode_payload/:
# add it to ../tests/malformed/ named after the rejection it must get.
set -euo pipefail
seconds="${1:-60}"
case "$seconds" in
    '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "run.sh: installing cargo-fuzz" >&2
    cargo +nightly install cargo-fuzz --locked
fi
mkdir -p corpus/decode_payload
exec cargo +nightly fuzz run decode_payload corpus/decode_payload seeds ../tests/malformed -- \
    -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1
