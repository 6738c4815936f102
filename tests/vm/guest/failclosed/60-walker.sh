# walker: the file hooks' own path resolution (a dentry walk, no bpf_d_path) agrees
# with the kernel's names (host side: tests/fail_closed/walker.rs):
# 1. a plain path; paths across one and two mounts (tmpfs at /mnt/wx, another at
#    /mnt/wx/nest), for opens and unlinks;
# 2. in a chroot, the path is the one under the task's root (as d_path gives it);
# 3. with a FILE_ALIASES entry (written here by the helper, as the agent would), a
#    protected directory reached through a bind mount and a protected file reached
#    through a hard link made before the agent are decided (and reported) by their
#    protected names; a bind mount of an unprotected directory stays permitted.
# Paths of ~4,000 bytes and beyond PATH_MAX: the scratch part.
wd=/etc/edgearmor/failclosed/walker
ww=/tmp/walker
mkdir -p $ww/plain $ww/prot/sub $ww/open $ww/jail/tmp/walker/plain /mnt/wx /mnt/wb /mnt/wo
echo s > $ww/plain/secret; echo o > $ww/plain/other
echo p > $ww/prot/file; echo p > $ww/prot/sub/deep; echo f > $ww/open/f
ln $ww/plain/secret $ww/hl
mount -t tmpfs tmpfs /mnt/wx
mkdir -p /mnt/wx/inner /mnt/wx/nest
mount -t tmpfs tmpfs /mnt/wx/nest
echo s > /mnt/wx/inner/secret; echo o > /mnt/wx/inner/other; echo g > /mnt/wx/inner/gone
echo s > /mnt/wx/nest/secret; echo o > /mnt/wx/nest/other
mount --bind $ww/prot /mnt/wb
mount --bind $ww/open /mnt/wo
# The jail's own file at the path that is protected outside it.
echo j > $ww/jail/tmp/walker/plain/secret
cp $probe $ww/jail/probe

walker_part() {
    start_agent walker $wd
    scenario walker-plain-blocked $probe read $ww/plain/secret
    scenario walker-plain-permitted $probe read $ww/plain/other
    scenario walker-mount-blocked $probe read /mnt/wx/inner/secret
    scenario walker-mount-permitted $probe read /mnt/wx/inner/other
    scenario walker-nest-blocked $probe read /mnt/wx/nest/secret
    scenario walker-nest-permitted $probe read /mnt/wx/nest/other
    scenario walker-mount-unlink-blocked $probe unlink /mnt/wx/inner/secret
    scenario walker-mount-unlink-audited $probe unlink /mnt/wx/inner/gone
    scenario walker-prot-blocked $probe read $ww/prot/sub/deep
    scenario walker-chroot-blocked chroot $ww/jail /probe read /tmp/walker/plain/secret
    scenario walker-bind-open-permitted $probe read /mnt/wo/f
    pin=/sys/fs/bpf/edgearmor
    scenario walker-alias-dir $probe alias-add $pin $ww/prot $ww/prot/
    scenario walker-alias-file $probe alias-add $pin $ww/plain/secret $ww/plain/secret
    scenario walker-bind-blocked $probe read /mnt/wb/sub/deep
    scenario walker-hardlink-blocked $probe read $ww/hl
    scenario walker-bind-open-permitted-after $probe read /mnt/wo/f
    scenario walker-plain-permitted-after $probe read $ww/plain/other
    # What the unlinks left (a stat: no open, no decision).
    left() { [ -e "$1" ] && echo yes || echo no; }
    echo "EA-WALKER-LEFT secret=$(left /mnt/wx/inner/secret) gone=$(left /mnt/wx/inner/gone)"
    wait_count "$alerts" '"PolicyName":"walker-' 9
    stop_agent
}
walker_part
umount /mnt/wb /mnt/wo /mnt/wx/nest /mnt/wx
