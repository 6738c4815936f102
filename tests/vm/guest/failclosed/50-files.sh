# Every way into a protected file (tests/fail_closed/files.rs, issue 14): /etc/shadow
# (a test copy) under a Block rule, /etc/ro/ (recursive) and /etc/hostname readOnly.
# Each attempt runs in its own process (EA-FPID gives its pid, so its alerts can be
# counted); after each one the state of every protected file (inode, mode, owner,
# links, size, mtime, ctime, and the content of those that may be read) is compared
# with the state before it: EA-FSAME, or EA-FCHANGED with EA-FDIFF lines.
fl_dir=/etc/edgearmor/failclosed/files
fl_hostname_saved=$(cat /etc/hostname 2>/dev/null)
printf 'root:$6$ea.fixture$0123456789abcdef:19700:0:99999:7:::\nsvc:!:19700::::::\n' > /etc/shadow
chmod 640 /etc/shadow
echo gw-vm > /etc/hostname
rm -rf /etc/ro /tmp/fl /opt/pkg-fl /var/log/app-fl
mkdir -p /etc/ro/sub /etc/ro/empty /tmp/fl /opt/pkg-fl /var/log/app-fl /mnt/ro
echo "read-only setting" > /etc/ro/f
echo "nested setting" > /etc/ro/sub/g
for n in outside outside2 new swap swap2; do echo "$n" > /tmp/fl/$n; done
echo v1 > /opt/pkg-fl/conf
echo "log line" > /var/log/app-fl/app.log
# Made before the agent starts: hard links, and descriptors every attempt inherits
# (7: /etc/shadow, 8: /etc/ro/f, 9: /etc/hostname, all read-write).
ln /etc/shadow /tmp/fl/shadow-pre
ln /etc/ro/f /tmp/fl/ro-pre
exec 7<>/etc/shadow 8<>/etc/ro/f 9<>/etc/hostname
# Truncations are to 1 byte: to the size a file already has would change nothing
# even when allowed.
# Where ftruncate lands: file_truncate where the kernel has the hook, else path_truncate.
if grep -q ' bpf_lsm_file_truncate$' /proc/kallsyms; then
    echo "EA-FL-FTRUNCATE-HOOK file"
else
    echo "EA-FL-FTRUNCATE-HOOK path"
fi

fl_state() {
    $probe fstate -s /etc/shadow -s /tmp/fl/shadow-pre /etc/hostname /etc/ro /tmp/fl/ro-pre
}
fl_protected="/etc/shadow /etc/hostname /etc/ro/f /etc/ro/sub/g"
sha256sum $fl_protected | while read -r line; do echo "EA-FL-HASH-BEFORE $line"; done
fl_state > /tmp/fl-state.prev
while read -r line; do echo "EA-FL-BASE $line"; done < /tmp/fl-state.prev

# fl NAME COMMAND...: one attempt in its own process, then the state comparison.
fl() {
    fl_name=$1; shift
    echo "EA-SCENARIO $fl_name"
    "$@" &
    fl_pid=$!
    wait $fl_pid
    echo "EA-FPID $fl_name $fl_pid"
    fl_state > /tmp/fl-state.now
    if cmp -s /tmp/fl-state.prev /tmp/fl-state.now; then
        echo "EA-FSAME $fl_name"
    else
        echo "EA-FCHANGED $fl_name"
        diff /tmp/fl-state.prev /tmp/fl-state.now | grep '^[-+]/' |
            while read -r line; do echo "EA-FDIFF $fl_name $line"; done
        mv /tmp/fl-state.now /tmp/fl-state.prev
    fi
}

echo "EA-FL-UPTIME start $(cut -d" " -f1 /proc/uptime)"
start_agent files "$fl_dir/policies"
# An attacker's bind mount, made while the policy is in force.
mount --bind /etc/ro /mnt/ro
# Permitted: reads of readOnly files (by any name or descriptor), work elsewhere,
# a package-style update by rename, log rotation (rename, then create).
fl fl-ok-read-ro $probe read /etc/ro/f
fl fl-ok-read-ro-sub $probe read /etc/ro/sub/g
fl fl-ok-read-hostname $probe read /etc/hostname
fl fl-ok-read-ro-pre-link $probe read /tmp/fl/ro-pre
fl fl-ok-read-ro-bind $probe read /mnt/ro/f
fl fl-ok-read-ro-fd $probe read-fd 8
fl fl-ok-read-hostname-fd $probe read-fd 9
fl fl-ok-mmap-private-hostname $probe mmap-private 9
fl fl-ok-mmap-read-ro $probe mmap-read 8
fl fl-ok-write-elsewhere $probe write /tmp/fl/elsewhere
fl fl-ok-pkg-stage $probe append /opt/pkg-fl/conf.new
fl fl-ok-pkg-rename $probe rename /opt/pkg-fl/conf.new /opt/pkg-fl/conf
fl fl-ok-log-rotate $probe rename /var/log/app-fl/app.log /var/log/app-fl/app.log.1
fl fl-ok-log-create $probe append /var/log/app-fl/app.log
# /etc/shadow (Block): every name, every descriptor.
fl fl-sh-read $probe read /etc/shadow
fl fl-sh-link $probe link /etc/shadow /tmp/fl/x
fl fl-sh-link-read $probe read /tmp/fl/x
fl fl-sh-pre-link-read $probe read /tmp/fl/shadow-pre
fl fl-sh-pre-link-write $probe write /tmp/fl/shadow-pre
fl fl-sh-fd-read $probe read-fd 7
fl fl-sh-fd-write $probe write-fd 7
fl fl-sh-fd-mmap $probe mmap-write 7
fl fl-sh-fd-mmap-read $probe mmap-read 7
fl fl-sh-chmod $probe chmod /etc/shadow 666
fl fl-sh-chown $probe chown /etc/shadow 1000 1000
fl fl-sh-fd-ftruncate $probe ftruncate 7 1
fl fl-sh-truncate $probe truncate /etc/shadow 1
fl fl-sh-exchange $probe exchange /tmp/fl/swap /etc/shadow
fl fl-sh-replace $probe rename /tmp/fl/new /etc/shadow
fl fl-sh-mv-away $probe rename /etc/shadow /tmp/fl/y
fl fl-sh-mv-away-read $probe read /tmp/fl/y
fl fl-sh-unlink $probe unlink /etc/shadow
# /etc/ro/ (readOnly, recursive): no new name, no change, no way out.
fl fl-ro-write $probe write /etc/ro/f
fl fl-ro-sub-write $probe write /etc/ro/sub/g
fl fl-ro-pre-link-write $probe write /tmp/fl/ro-pre
fl fl-ro-bind-write $probe write /mnt/ro/f
fl fl-ro-fd-write $probe write-fd 8
fl fl-ro-fd-mmap $probe mmap-write 8
fl fl-ro-creat $probe create /etc/ro/new
fl fl-ro-creat-excl $probe create-excl /etc/ro/new-excl
fl fl-ro-bind-creat $probe create /mnt/ro/new-bind
fl fl-ro-mkdir $probe mkdir /etc/ro/newdir
fl fl-ro-symlink $probe symlink /etc/shadow /etc/ro/link
fl fl-ro-mknod $probe mknod /etc/ro/fifo
fl fl-ro-link-in $probe link /tmp/fl/outside /etc/ro/linked
fl fl-ro-rename-in $probe rename /tmp/fl/outside2 /etc/ro/renamed
fl fl-ro-chmod $probe chmod /etc/ro/f 777
fl fl-ro-chown $probe chown /etc/ro/f 1000 1000
fl fl-ro-fd-ftruncate $probe ftruncate 8 1
fl fl-ro-truncate $probe truncate /etc/ro/f 1
fl fl-ro-exchange $probe exchange /tmp/fl/swap2 /etc/ro/f
fl fl-ro-rmdir $probe rmdir /etc/ro/empty
fl fl-ro-unlink $probe unlink /etc/ro/f
fl fl-ro-rename-out $probe rename /etc/ro/f /tmp/fl/stolen
fl fl-ro-rename-subdir $probe rename /etc/ro/sub /tmp/fl/sub
fl fl-ro-rename-dir $probe rename /etc/ro /etc/ro-moved
# /etc/hostname (readOnly): `ln /etc/hostname /tmp/h; echo x >> /tmp/h`, descriptors.
fl fl-hn-link $probe link /etc/hostname /tmp/fl/h
fl fl-hn-link-append $probe append /tmp/fl/h
fl fl-hn-fd-write $probe write-fd 9
fl fl-hn-fd-mmap $probe mmap-write 9
fl fl-hn-fd-ftruncate $probe ftruncate 9 1
# Last: a denial main has always reported; once its alert is out, every earlier
# attempt's alert is too (one ring buffer, read in order).
fl fl-hn-write $probe write /etc/hostname
wait_for "$alerts" "\"PID\":$fl_pid,"
stop_agent
echo "EA-FL-UPTIME end $(cut -d" " -f1 /proc/uptime)"
# The pins outlive the agent (fail closed): unloaded, the files can be read and removed.
/usr/local/bin/edgearmor unload --config /etc/edgearmor/failclosed/agent.toml 2>&1 |
    while read -r line; do echo "EA-UNLOAD $line"; done
umount /mnt/ro
exec 7>&- 8>&- 9>&-
sha256sum $fl_protected 2>&1 | while read -r line; do echo "EA-FL-HASH-AFTER $line"; done
rm -rf /etc/ro /etc/ro-moved /tmp/fl /opt/pkg-fl /var/log/app-fl /mnt/ro /etc/shadow
if [ -n "$fl_hostname_saved" ]; then echo "$fl_hostname_saved" > /etc/hostname; else rm -f /etc/hostname; fi
