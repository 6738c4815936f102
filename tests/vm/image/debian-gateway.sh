#!/bin/sh
# Builds a Debian 12 (bookworm) gateway root filesystem for ARCH (amd64 | arm64) in the
# empty directory TARGET, from Debian's packages, without running any guest binary: this
# machine has no binfmt_misc, so a foreign chroot cannot run maintainer scripts.
#
#   debian-gateway.sh ARCH TARGET
#   debian-gateway.sh install TARGET DEB...   (unpack and register more packages)
#
# mmdebstrap --variant=extract downloads and unpacks the packages below with their
# dependencies; this script then does on the host, with the host's tools, what their
# maintainer scripts would have done for this image: the dpkg database, the users and
# groups (base-passwd's masters, systemd-sysusers, sshd's user), PAM's common-* files
# (pam-auth-update), sshd's configuration and host keys, unit enablement (systemctl
# --root), a machine id. The VM harness caches TARGET keyed by this file's bytes: change
# the package list or any step here and every machine builds a fresh image once.
#
# APT sources: $EDGEARMOR_VM_APT_SOURCES if set, else the host's own Debian sources.
set -eu


# register ROOT DEB: records the (already unpacked) package DEB in ROOT's dpkg database as
# installed, with its control files, file list and conffiles, as dpkg would.
register() {
    r=$1 deb=$2
    info=$r/var/lib/dpkg/info
    pkg=$(dpkg-deb -f "$deb" Package)
    name=$pkg
    [ "$(dpkg-deb -f "$deb" Multi-Arch)" = same ] && name="$pkg:$(dpkg-deb -f "$deb" Architecture)"
    ctl=$(mktemp -d)
    dpkg-deb --ctrl-tarfile "$deb" | tar -x -C "$ctl"
    dpkg-deb -f "$deb" | awk '{print} /^Package:/ {print "Status: install ok installed"}' > "$ctl/para"
    if [ -s "$ctl/conffiles" ]; then
        echo "Conffiles:" >> "$ctl/para"
        while read -r conf; do
            [ -f "$r$conf" ] || continue
            echo " $conf $(md5sum < "$r$conf" | cut -d' ' -f1)" >> "$ctl/para"
        done < "$ctl/conffiles"
    fi
    { cat "$ctl/para"; echo; } >> "$r/var/lib/dpkg/status"
    for f in "$ctl"/*; do
        case ${f##*/} in control|para) ;; *) cp "$f" "$info/$name.${f##*/}" ;; esac
    done
    dpkg-deb --fsys-tarfile "$deb" | tar -t | sed -e 's|^\./|/|' -e 's|/$||' -e 's|^$|/.|' > "$info/$name.list"
    rm -rf "$ctl"
}

if [ "$1" = install ]; then
    root=$2
    shift 2
    for deb in "$@"; do
        dpkg-deb --fsys-tarfile "$deb" | tar -x --keep-directory-symlink -C "$root"
        register "$root" "$deb"
    done
    exit 0
fi

arch=$1
root=$2

# systemd as PID 1 (systemd-sysv's /sbin/init), a real sshd, the package managers the
# policy must stop, busybox for the test's small tools (nc). No udev: the guest's initramfs
# loads the few modules it needs and configures the network before systemd starts.
packages="base-files base-passwd bash coreutils dash diffutils findutils grep gzip hostname
login mawk passwd sed tar util-linux mount procps libpam-runtime libpam-modules
libpam-modules-bin systemd systemd-sysv openssh-server busybox apt dpkg"

sources=${EDGEARMOR_VM_APT_SOURCES:-}
if [ -z "$sources" ]; then
    for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
        if [ -s "$f" ]; then sources=$f; break; fi
    done
fi
[ -n "$sources" ] || { echo "debian-gateway.sh: no apt sources (set EDGEARMOR_VM_APT_SOURCES)" >&2; exit 1; }

links="bin sbin lib"
[ "$arch" = amd64 ] && links="$links lib64"
# Merged /usr as on every bookworm install: the directories exist as symlinks before
# extraction (tar keeps directory symlinks), so /bin/dpkg is /usr/bin/dpkg.
setup_hook="for d in $links; do mkdir -p \"\$1/usr/\$d\"; ln -s usr/\$d \"\$1/\$d\"; done"

# shellcheck disable=SC2086
mmdebstrap --quiet --variant=extract --mode=root --architectures="$arch" \
    --include="$(echo $packages | tr ' ' ',')" \
    --skip=check/qemu,cleanup/apt/cache \
    --setup-hook="$setup_hook" \
    bookworm "$root" "$sources"

for deb in "$root"/var/cache/apt/archives/*.deb; do register "$root" "$deb"; done
rm -f "$root"/var/cache/apt/archives/*.deb
rm -rf "$root"/var/lib/apt/lists/*
# The alternatives the postinsts would register (mawk's awk, debianutils' which).
update-alternatives --quiet --root "$root" --install /usr/bin/awk awk /usr/bin/mawk 5
update-alternatives --quiet --root "$root" --install /usr/bin/which which /usr/bin/which.debianutils 0

# --- users and groups (base-passwd, systemd-sysusers, openssh-server's sshd user) ----
cp "$root/usr/share/base-passwd/passwd.master" "$root/etc/passwd"
cp "$root/usr/share/base-passwd/group.master" "$root/etc/group"
echo "sshd:x:100:65534::/run/sshd:/usr/sbin/nologin" >> "$root/etc/passwd"
: > "$root/etc/shadow"
: > "$root/etc/gshadow"
out=$(systemd-sysusers --root="$root" 2>&1) || { echo "$out" >&2; exit 1; }
# Locked passwords: root logs in with a key only.
awk -F: '{print $1 ":*:19000:0:99999:7:::"}' "$root/etc/passwd" > "$root/etc/shadow"
awk -F: '{print $1 ":*::"}' "$root/etc/group" > "$root/etc/gshadow"
chmod 640 "$root/etc/shadow" "$root/etc/gshadow"
chgrp "$(awk -F: '$1=="shadow"{print $3}' "$root/etc/group")" "$root/etc/shadow" "$root/etc/gshadow"

# --- PAM (libpam-runtime's postinst) -------------------------------------------------
DEBIAN_FRONTEND=noninteractive pam-auth-update --root "$root" --package --force

# --- openssh-server's postinst: configuration, host keys, the unit enabled -----------
cp "$root/usr/share/openssh/sshd_config" "$root/etc/ssh/sshd_config"
for t in rsa ecdsa ed25519; do
    ssh-keygen -q -t "$t" -N '' -C "root@gw-debian" -f "$root/etc/ssh/ssh_host_${t}_key"
done
# SYSTEMCTL_SKIP_SYSV: the sysv script would be registered by running update-rc.d in the
# (foreign) root; systemd ignores /etc/init.d scripts that have a unit anyway.
SYSTEMCTL_SKIP_SYSV=1 systemctl --root="$root" --quiet enable ssh.service

# --- the rest of first boot ----------------------------------------------------------
od -An -N16 -tx1 /dev/urandom | tr -d ' \n' > "$root/etc/machine-id"
echo >> "$root/etc/machine-id"
# libpam-modules' postinst creates it (pam_env reads it at every login).
touch "$root/etc/environment"
echo gw-debian > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tgw-debian\n' > "$root/etc/hosts"
# Nothing to mount: the initramfs mounts the root read-write, and without udev a device
# named in fstab would never appear.
echo "# the root file system is mounted by the initramfs" > "$root/etc/fstab"
# /etc/.updated marks /etc as up to date with /usr: the sysusers and other
# ConditionNeedsUpdate= services have been done above.
touch "$root/etc/.updated" "$root/var/.updated"
# Documentation is dead weight in a test image (and in the cache).
rm -rf "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/info" "$root/usr/share/locale"
