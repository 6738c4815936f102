#!/usr/bin/env bash
# Installs what the demo and the tests need on a fresh Debian 12 machine; a second run
# changes nothing. Debian packages: QEMU, LLVM 22 for
# bpf-linker, the brokers of the broker matrix (mosquitto, nats-server, rabbitmq-server
# with erlang; the tests start their own instances on free loopback ports), the SOC side of the
# decoder tests (prometheus, rsyslog with rsyslog-gnutls for TLS; likewise started by the tests,
# with generated configurations; their packaged services are not used); for the Debian
# gateway image the VM harness builds (tests/vm/image/debian-gateway.sh): mmdebstrap, and
# the host tools that configure it (systemctl, systemd-sysusers, ssh-keygen, mke2fs). (Guest
# kernels and busybox are downloaded, not installed, by the VM harness.) Rust: musl
# targets, nightly rust-src, bpf-linker 0.13.
set -euo pipefail

log() { echo "install-deps: $*" >&2; }

apt_updated=0
apt_update_once() {
    if [ "$apt_updated" = 0 ]; then
        log "apt-get update"
        apt-get update -qq
        apt_updated=1
    fi
}

# arm64 guests need arm64 kernel and busybox packages.
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    log "adding dpkg architecture arm64"
    dpkg --add-architecture arm64
    apt_update_once
fi

# The VM harness downloads guest kernels and busybox with apt-get download: it needs
# current package lists for both architectures.
apt-cache show busybox-static:arm64 >/dev/null 2>&1 || apt_update_once

packages=(qemu-system-x86 qemu-system-arm
          llvm-22 llvm-22-dev libpolly-22-dev libzstd-dev mosquitto xz-utils
          nats-server rabbitmq-server
          prometheus rsyslog rsyslog-gnutls
          gcc-aarch64-linux-gnu libc6-dev-arm64-cross
          mmdebstrap openssh-client systemd e2fsprogs)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt_update_once
    log "installing ${missing[*]}"
    # Recommends would drag in a qemu-utils that conflicts with the machine's own.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

installed_targets=$(rustup target list --installed)
for t in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
    grep -qx "$t" <<<"$installed_targets" || rustup target add "$t"
done
rustup component list --toolchain nightly --installed | grep -q '^rust-src' \
    || rustup component add rust-src --toolchain nightly

if ! bpf-linker --version 2>/dev/null | grep -q '^bpf-linker 0\.13\.'; then
    log "building bpf-linker 0.13 against LLVM 22"
    LLVM_SYS_221_PREFIX=/usr/lib/llvm-22 \
    RUSTFLAGS="-L /usr/lib/llvm-22/lib -C link-args=-Wl,-rpath,/usr/lib/llvm-22/lib" \
        cargo install bpf-linker --version '~0.13' --no-default-features --features llvm-22 --quiet
fi
# oelint-adv lints the Yocto layer; kept in its own virtualenv, pinned.
oelint_venv=${EDGEARMOR_OELINT_VENV:-${HOME:-/root}/.cache/edgearmor-oelint}
if ! "$oelint_venv/bin/oelint-adv" --version 2>/dev/null | grep -q '9\.11\.2'; then
    log "installing oelint-adv 9.11.2"
    python3 -m venv "$oelint_venv"
    "$oelint_venv/bin/pip" install --quiet 'oelint-adv==9.11.2'
fi
log "ok"
