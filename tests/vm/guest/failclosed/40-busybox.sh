# Multi-call binaries (tests/fail_closed/busybox.rs): a Block on /usr/bin/wget, a
# link to /bin/busybox as on Yocto, stops wget however it is exec'd and nothing else
# busybox runs; a Block on /usr/bin/nc, loaded while no such file exists, applies
# once the link appears. This guest's busybox (Debian's static build) runs applets
# found by PATH as `/proc/self/exe` with argv[0] = the applet; a Yocto busybox execs
# the link: both ways are tried (the link explicitly).
bb_dir=/etc/edgearmor/failclosed/busybox
# Yocto puts wget and nc in /usr/bin only; `--install -s /bin` put them in /bin too.
rm -f /bin/wget /bin/nc /usr/bin/nc
ln -s /bin/busybox /usr/bin/wget

# bb_sh NAME COMMAND: runs COMMAND in a busybox shell. EA-OP rc=-1 errno=13 when the
# shell could not exec it (status 126, "Permission denied"), rc=-9 when it was
# killed (137), else its status.
bb_sh() {
    echo "EA-SCENARIO $1"
    out=$(sh -c "$2" 2>&1)
    rc=$?
    case "$rc:$out" in
        126:*"Permission denied"*) echo "EA-OP rc=-1 errno=13" ;;
        137:*) echo "EA-OP rc=-9 errno=0" ;;
        *) echo "EA-OP rc=$rc errno=0" ;;
    esac
}
# wget of a closed local port: status 1 when wget runs.
get="-q -O /dev/null http://127.0.0.1:9/"

start_agent busybox "$bb_dir/policies"
# Denied at exec (EACCES): the invoked name's last component is wget.
bb_sh bb-wget-absolute "/usr/bin/wget $get"
bb_sh bb-wget-relative "cd /usr/bin && ./wget $get"
bb_sh bb-wget-dotdot "/usr/bin/../bin//wget $get"
ln -s /bin/busybox /tmp/wget
bb_sh bb-wget-other-link "/tmp/wget $get"
scenario bb-wget-execv $probe exec /usr/bin/wget
# Killed after commit: the arguments name wget.
bb_sh bb-wget-path "wget $get"
bb_sh bb-wget-argv "busybox wget $get"
bb_sh bb-wget-argv-chain "/bin/busybox busybox wget $get"
scenario bb-wget-exec-as $probe exec-as /bin/busybox wget
scenario bb-wget-exec-as-sh $probe exec-as /bin/sh /usr/bin/wget
# Everything else busybox runs.
bb_sh bb-cat "cat /dev/null"
bb_sh bb-sh "/bin/sh -c 'exit 3'"
bb_sh bb-sleep "sleep 0"
bb_sh bb-busybox-cat "/bin/busybox cat /dev/null"
scenario bb-cat-execv $probe exec /bin/cat
scenario bb-cat-exec-as $probe exec-as /bin/busybox cat
# The link appears after the policy was loaded.
bb_sh bb-nc-before-link "/usr/bin/nc 127.0.0.1 9 </dev/null"
ln -s /bin/busybox /usr/bin/nc
bb_sh bb-nc-absolute "/usr/bin/nc 127.0.0.1 9 </dev/null"
bb_sh bb-nc-path "nc 127.0.0.1 9 </dev/null"
# Reported, not asserted: a hard link of busybox is busybox by inode (exec identity:
# denied since issue 15), a copy is not the marked file (content identity).
ln /bin/busybox /usr/sbin/wget && bb_sh bb-limit-hardlink "/usr/sbin/wget $get"
mkdir -p /tmp/copy && cp /bin/busybox /tmp/copy/wget \
    && bb_sh bb-limit-copy "/tmp/copy/wget $get"
# Every Block above reported (12), before the agent stops.
wait_count "$alerts" '"PolicyName":"hsp-busybox-applets"' 12
stop_agent
bb_sh bb-cat-after-stop "cat /dev/null"
bb_sh bb-wget-after-stop "/usr/bin/wget $get"
rm -rf /usr/bin/nc /usr/sbin/wget /tmp/wget /tmp/copy
