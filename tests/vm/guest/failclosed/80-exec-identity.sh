# Exec identity (tests/fail_closed/exec_identity.rs): a Block on /usr/bin/apt, a real
# glibc dynamic program, holds for every name of the file: hard links made before
# and after the agent started, a rename, a bind mount (also in a new mount
# namespace), a chroot, an overlayfs view, a replace-by-rename upgrade and a link of
# the new file, and the loader running it (ld.so, or any PROT_EXEC mapping); the
# same attempts on an unblocked copy (/usr/bin/xi-free) succeed, and dynamic
# programs and their libraries run normally.
xi_dir=/etc/edgearmor/failclosed/exec-identity
xi_loader=$(ls /lib64/ld-linux-x86-64.so.2 /lib/ld-linux-aarch64.so.1 2>/dev/null | head -n1)
[ -f /lib/modules/extra/overlay.ko ] && insmod /lib/modules/extra/overlay.ko
mkdir -p /tmp/xi /mnt/xi-bin /mnt/xi-ns /tmp/xi-ov/up /tmp/xi-ov/work /tmp/xi-ov/merged
mkdir -p /tmp/xi-root/lib /tmp/xi-root/lib64 /tmp/xi-root/bin2 /tmp/xi-root/probe
cp /opt/glibc/bin/echo /usr/bin/apt
cp /opt/glibc/bin/echo /usr/bin/xi-free
ln /usr/bin/apt /tmp/xi/apt-pre
ln /usr/bin/xi-free /tmp/xi/free-pre
mount --bind /usr/bin /mnt/xi-bin
for d in lib lib64; do [ -d /$d ] && mount --bind /$d /tmp/xi-root/$d; done
mount --bind /usr/bin /tmp/xi-root/bin2
mount --bind /usr/local/bin /tmp/xi-root/probe
mount -t overlay overlay -o lowerdir=/usr/bin,upperdir=/tmp/xi-ov/up,workdir=/tmp/xi-ov/work /tmp/xi-ov/merged
echo "EA-XI-OVERLAY $(grep -c ' /tmp/xi-ov/merged overlay ' /proc/mounts)"

# ld.so PROGRAM: the loader's exit status and what it said (its errno's text).
xi_ldso() {
    echo "EA-SCENARIO $1"
    out=$($xi_loader "$2" noop 2>&1)
    echo "EA-XI-LDSO $1 rc=$? out=$out"
}

# The pinned EXEC_ALIASES entry of the inode numbered $2 (on the root's device).
xi_alias() {
    echo "EA-XI-ALIAS-OF $1"
    $probe exec-alias /sys/fs/bpf/edgearmor "$2" "$(stat -c %d /)"
}

# xi_all PREFIX PROGRAM PRE_LINK: every way to run PROGRAM (a name under /usr/bin).
# (`scenario` sets $name: the names here start with xi_.)
xi_all() {
    p=$1; prog=$2; xi_n=${prog##*/}
    scenario $p-path $probe exec $prog
    scenario $p-pre-link $probe exec /tmp/xi/$3
    ln $prog /tmp/xi/$xi_n-new
    scenario $p-new-link $probe exec /tmp/xi/$xi_n-new
    mv $prog /usr/bin/$xi_n-renamed
    scenario $p-renamed $probe exec /usr/bin/$xi_n-renamed
    mv /usr/bin/$xi_n-renamed $prog
    scenario $p-bind $probe exec /mnt/xi-bin/$xi_n
    echo "EA-SCENARIO $p-bind-ns"
    unshare -m sh -c "mount --bind /usr/bin /mnt/xi-ns && $probe exec /mnt/xi-ns/$xi_n"
    scenario $p-chroot chroot /tmp/xi-root /probe/setid-probe exec /bin2/$xi_n
    scenario $p-overlay $probe exec /tmp/xi-ov/merged/$xi_n
    xi_ldso $p-ldso $prog
    scenario $p-mmap-exec $probe mmap-exec $prog
    scenario $p-mprotect-exec $probe mprotect-exec $prog
    # A package upgrade: the new file renamed over the old, then linked elsewhere.
    xi_old=$(stat -c %i $prog)
    cp /opt/glibc/bin/echo $prog.new
    xi_new=$(stat -c %i $prog.new)
    mv $prog.new $prog
    xi_alias $p-new-file $xi_new
    scenario $p-upgraded $probe exec $prog
    ln $prog /tmp/xi/$xi_n-upgraded-link
    scenario $p-upgraded-link $probe exec /tmp/xi/$xi_n-upgraded-link
    # The file the upgrade replaced keeps its names (the link made before the agent).
    scenario $p-replaced-pre-link $probe exec /tmp/xi/$3
}

start_agent exec-identity "$xi_dir/policies"
xi_all xi-apt /usr/bin/apt apt-pre
xi_apt_old=$xi_old
xi_all xi-free /usr/bin/xi-free free-pre
# Dynamic programs and their libraries run normally.
scenario xi-dynamic $probe exec /opt/glibc/bin/true
scenario xi-libc-mmap-exec $probe mmap-exec $(ls /lib/*-linux-gnu/libc.so.6)
echo "EA-XI-LOADER $($xi_loader /opt/glibc/bin/echo ran 2>&1)"
echo "EA-XI-CAT $(echo piped | /opt/glibc/bin/cat)"
# Every Block above reported (14), before the agent stops.
wait_count "$alerts" '"PolicyName":"hsp-exec-identity"' 14
stop_agent
umount /tmp/xi-ov/merged /mnt/xi-bin /tmp/xi-root/bin2 /tmp/xi-root/probe
# The file the upgrade replaced loses its entry with its last name (the probes stay
# attached with the agent stopped).
xi_alias xi-old-before-free $xi_apt_old
rm /tmp/xi/apt-pre /tmp/xi/apt-new
xi_alias xi-old-freed $xi_apt_old
for d in lib lib64; do umount /tmp/xi-root/$d 2>/dev/null; done
rm -rf /tmp/xi /tmp/xi-ov /tmp/xi-root /mnt/xi-bin /mnt/xi-ns /usr/bin/apt /usr/bin/xi-free
