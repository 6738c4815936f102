#!/bin/sh
# The Debian gateway's scenarios, run once per boot by ea-scenarios.service as root.
# Prints EA-<NAME> lines on the console. At each `handshake NAME` it prints
# "EA-WAIT NAME" and blocks until the host, having done its part (an ssh login, reading
# its broker), connects to port 7000 (forwarded by QEMU). Every wait is on a condition,
# bounded; no fixed sleeps.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
say() { echo "EA-$*"; }
up() { cut -d' ' -f1 /proc/uptime; }

# wait_until WHAT CMD...: polls CMD every 0.1 s, at most 300 s.
wait_until() {
    what=$1; shift
    n=0
    until "$@" >/dev/null 2>&1; do
        n=$((n + 1))
        if [ $n -ge 3000 ]; then say "TIMEOUT $what"; return 1; fi
        sleep 0.1
    done
}
# The host connects until it reads "go" back: a connection before nc listens is refused.
handshake() {
    say "WAIT $1"
    echo go | busybox nc -l -p 7000 > /dev/null
}
journal() { journalctl -q --no-pager -o cat -u "$@"; }
ready_count() { journal edgearmor | grep -c 'edgearmor: ready'; }
agent_ready() { [ "$(systemctl is-active edgearmor)" = active ] && [ "$(ready_count)" -ge "$1" ]; }
show() {
    systemctl show -p Type,ActiveState,SubState,StatusText,WatchdogUSec,MainPID,NRestarts edgearmor |
        sed 's/^/EA-SHOW /'
}
# try NAME CMD...: runs CMD, prints EA-TRY NAME rc=RC and its first output line.
try() {
    name=$1; shift
    "$@" > /tmp/try.out 2>&1
    rc=$?
    say "TRY $name rc=$rc $(head -n1 /tmp/try.out)"
}

say "BOOTED $(up) $(uname -r) $(uname -m) init=$(cat /proc/1/comm)"
wait_until agent-ready agent_ready 1
say "AGENT-READY $(up)"
systemctl status --no-pager -l edgearmor 2>&1 | sed 's/^/EA-SYSTEMCTL /'
show
say "BPFFS $(awk '$2 == "/sys/fs/bpf" {print $3, $4}' /proc/mounts)"
say "PINS $(ls /sys/fs/bpf/edgearmor 2>&1 | head -n 3 | tr '\n' ' ')"
edgearmor status 2>&1 | sed 's/^/EA-EDGEARMOR-STATUS /'

# --- package managers: the shipped block-package-managers policy ---------------------
deb=/root/ea-tiny_1.0_all.deb
try apt-get apt-get install -y "$deb"
try dpkg dpkg -i "$deb"
# Ways around: other names of the same programs, and the rest of the family.
try bin-dpkg /bin/dpkg -i "$deb"
try dotdot-dpkg /usr/bin/../bin/dpkg -i "$deb"
ln -sf /usr/bin/dpkg /tmp/installer
try symlink-dpkg /tmp/installer -i "$deb"
try env-apt-get env apt-get install -y "$deb"
try apt apt install -y "$deb"
try dpkg-deb dpkg-deb -x "$deb" /tmp/unpacked
# What stays permitted: reading the programs, and everything else.
try read-dpkg md5sum /usr/bin/dpkg
try ls ls /var/lib/dpkg/status
say "TINY-INSTALLED $(test -e /usr/share/ea-tiny/installed && echo yes || echo no)"

# --- ssh: a login from the host to the real sshd -------------------------------------
wait_until sshd systemctl is-active ssh
say "SSH-READY $(up)"
handshake ssh-block
# sshd's child logs why it gave up before the host's ssh sees the connection close; the
# journal may take a moment to have it.
wait_until sshd-log sh -c "journalctl -q --no-pager -u ssh | grep -q 'Operation not permitted'"
journal ssh | sed 's/^/EA-SSHLOG-BLOCK /'
# The policy's own advice for OpenSSH before 9.8: deploy it with `action: Audit` first.
policy=/etc/edgearmor/policies/block-sshd-setid.yaml
sed -i 's/^  action: Block$/  action: Audit/' "$policy"
say "SSH-POLICY $(grep '^  action:' "$policy")"
applied_count() { journal edgearmor | grep -c 'edgearmor: policies applied'; }
before=$(applied_count)
applied() { [ "$(applied_count)" -gt "$before" ]; }
systemctl reload edgearmor
wait_until reload applied
say "RELOADED $(journal edgearmor | grep 'edgearmor: policies applied' | tail -n1)"
handshake ssh-audit
journal ssh | sed 's/^/EA-SSHLOG /'

# --- watchdog: a stopped agent is restarted, enforcement holds throughout ------------
wd=$(systemctl show -p WatchdogUSec --value edgearmor)
case $wd in
0|infinity|"") say "WATCHDOG none ($wd)" ;;
*)
    pid=$(systemctl show -p MainPID --value edgearmor)
    before=$(ready_count)
    kill -STOP "$pid"
    t0=$(up)
    say "STOPPED pid=$pid at $t0 watchdog=$wd"
    checks=0 breaches=0
    while :; do
        dpkg --version > /dev/null 2>&1
        if [ $? -ne 126 ]; then breaches=$((breaches + 1)); fi
        checks=$((checks + 1))
        now=$(systemctl show -p MainPID --value edgearmor)
        if [ "$now" != "$pid" ] && [ "$now" != 0 ] && agent_ready $((before + 1)); then break; fi
        if [ $checks -ge 3000 ]; then say "TIMEOUT restart"; break; fi
        sleep 0.1
    done
    say "RESTARTED pid=$now after $(echo "$(up) $t0" | awk '{printf "%.1f", $1 - $2}') s checks=$checks breaches=$breaches"
    try after-restart-dpkg dpkg -i "$deb"
    show
    ;;
esac

# --- alerts: the agent's KubeArmor JSON in the journal, then the host's broker -------
journal edgearmor | grep '"Type":"MatchedHostPolicy"' | sed 's/^/EA-JOURNAL /'
handshake alerts
say "DONE"
