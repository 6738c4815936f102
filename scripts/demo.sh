#!/usr/bin/env bash
# The demo: boots an arm64 Debian 6.12 gateway under QEMU, runs the agent, lets a
# program installed as /usr/sbin/sshd call setgid(0) and shows the blocked call and
# its KubeArmor JSON alert. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo run --quiet --locked -p edgearmor-vm --bin edgearmor-demo
