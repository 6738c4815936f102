#!/bin/busybox sh
# /init of the policy-engine guest: runs the KubeArmorHostPolicy scenarios phase by
# phase (each phase is a policy directory swapped in and applied by SIGHUP or by
# the agent noticing the change), printing EA-* lines for the host test. Powers off.
/bin/busybox mkdir -p /proc /sys /dev /tmp /usr/sbin /usr/bin /sbin /opt /srv/data /var/log/app/sub
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t securityfs securityfs /sys/kernel/security
mount -t bpf bpf /sys/fs/bpf
echo
echo "EA-KERNEL $(uname -r) $(uname -m)"
echo "EA-VERSION $(/usr/local/bin/edgearmor version)"

probe=/usr/local/bin/setid-probe
# Copies of the helper under the paths the rules name (rm first: some may be
# busybox symlinks, which cp would write through).
for p in /usr/bin/ls /usr/bin/lsx /usr/bin/date /usr/bin/bash /usr/bin/other-shell \
         /usr/bin/apt /usr/bin/apt-get /usr/bin/xapt /usr/bin/hostile /usr/bin/tool \
         /usr/bin/allowed /usr/bin/forbidden /usr/bin/target /opt/control; do
    rm -f "$p"
    cp $probe "$p"
done
mkdir -p /usr/bin/sub
cp $probe /usr/bin/sub/deep
echo "root:x:0:0:root:/root:/bin/sh" > /etc/passwd
echo "root:x:0:" > /etc/group
echo "secret" > /srv/data/report.txt
echo "old" > /var/log/app/old.log
echo "EA-SHELL pid=$$"

scenario() {
    name=$1; shift
    echo "EA-SCENARIO $name"
    "$@"
}

# On a wait that never ends: say what was awaited and show the agent's stderr.
give_up() {
    echo "EA-TIMEOUT $1"
    while read -r line; do echo "EA-STUCKERR $line"; done < "$agent_err"
}

# Waits (bounded) until FILE has a line matching PATTERN, while the agent lives.
wait_for() {
    file=$1; pattern=$2; tries=0
    while ! grep -q "$pattern" "$file" 2>/dev/null; do
        tries=$((tries + 1))
        kill -0 $agent 2>/dev/null || { give_up "agent died awaiting $pattern"; return 1; }
        if [ $tries -gt 900 ]; then give_up "$pattern"; return 1; fi
        sleep 0.1
    done
}

# Waits until FILE has at least N lines matching PATTERN.
wait_count() {
    file=$1; pattern=$2; n=$3; tries=0
    # A file the agent has not created yet counts 0 lines ("" would end the loop:
    # `[ "" -lt N ]` is an error, i.e. false).
    while count=$(grep -c "$pattern" "$file" 2>/dev/null); [ "${count:-0}" -lt "$n" ]; do
        tries=$((tries + 1))
        kill -0 $agent 2>/dev/null || { give_up "agent died awaiting $n x $pattern"; return 1; }
        if [ $tries -gt 900 ]; then give_up "$n x $pattern"; return 1; fi
        sleep 0.1
    done
}

policies=/etc/edgearmor/policies
phases=/etc/edgearmor/phases
# Swaps phase $1 in and has agent $2 apply it; waits for the applied line naming
# the phase's policies ($3).
phase() {
    echo "EA-PHASE $1"
    rm -f $policies/*
    cp $phases/$1/* $policies/
    kill -HUP $2
    wait_for "$agent_err" "policies applied: .*\[$3\]"
}

mkdir -p $policies
cp $phases/exec/* $policies/
/usr/local/bin/edgearmor run --config /etc/edgearmor/agent-a.toml --policies $policies \
    --cluster vmtest --host-name gw-vm --max-alerts-per-sec 0 \
    > /tmp/alerts-a.json 2> /tmp/agent-a.err &
agent=$!
agent_err=/tmp/agent-a.err
wait_for "$agent_err" "edgearmor: ready"
echo "EA-AGENT $(grep 'edgearmor: ready' /tmp/agent-a.err)"

# exec: exact path, fromSource, pattern, another host's policy
scenario ls-blocked $probe exec /usr/bin/ls
scenario lsx-control $probe exec /usr/bin/lsx
scenario date-from-bash /usr/bin/bash exec /usr/bin/date
scenario date-from-other /usr/bin/other-shell exec /usr/bin/date
scenario apt-blocked $probe exec /usr/bin/apt
scenario apt-get-blocked $probe exec /usr/bin/apt-get
scenario xapt-control $probe exec /usr/bin/xapt
scenario other-host-no-effect $probe exec /usr/bin/hostile

phase usr-bin $agent hsp-block-usr-bin
scenario usr-bin-tool $probe exec /usr/bin/tool
scenario usr-bin-deep $probe exec /usr/bin/sub/deep
scenario opt-control $probe exec /opt/control

phase files $agent "hsp-audit-app-logs,hsp-block-passwd-reads,hsp-readonly-srv-data"
scenario passwd-read $probe read /etc/passwd
scenario group-read $probe read /etc/group
scenario srv-read $probe read /srv/data/report.txt
scenario srv-write $probe write /srv/data/report.txt
scenario log-write $probe write /var/log/app/sub/new.log
scenario log-unlink $probe unlink /var/log/app/old.log

phase raw $agent hsp-forbid-raw-sockets
scenario raw-socket $probe socket raw
scenario tcp-socket $probe socket tcp

phase cap $agent hsp-deny-cap-net-raw
scenario cap-raw-socket $probe socket raw
scenario cap-tcp-socket $probe socket tcp

phase allowlist $agent hsp-process-allow-list
scenario audit-posture-forbidden $probe exec /usr/bin/forbidden
scenario audit-posture-allowed $probe exec /usr/bin/allowed

kill -TERM $agent
wait $agent
echo "EA-AGENT-A-EXIT $?"

# Agent B: default posture block, noticing policy file changes by itself.
/usr/local/bin/edgearmor run --config /etc/edgearmor/agent-b.toml --policies $policies \
    --cluster vmtest --host-name gw-vm --max-alerts-per-sec 0 \
    > /tmp/alerts-b.json 2> /tmp/agent-b.err &
agent=$!
agent_err=/tmp/agent-b.err
wait_for "$agent_err" "edgearmor: ready"
scenario block-posture-forbidden $probe exec /usr/bin/forbidden
scenario block-posture-allowed $probe exec /usr/bin/allowed

# Hot reload while a loop execs the target: block, then (one rename) audit.
echo "EA-PHASE hot"
cp $phases/hot/block-target.yaml $policies/.staged
mv $policies/.staged $policies/target.yaml
rm -f $policies/allow-list.yaml
wait_for "$agent_err" "policies applied: .*\[hsp-hot-target\]"
$probe loop-exec 100000 /tmp/stop-loop /usr/bin/target > /tmp/loop.out &
loop=$!
wait_count /tmp/alerts-b.json '"Resource":"/usr/bin/target".*"Action":"Block"' 20
cp $phases/hot/audit-target.yaml $policies/.staged
mv $policies/.staged $policies/target.yaml
wait_for "$agent_err" "policies applied: .*\[hsp-hot-target-audit\]"
wait_count /tmp/alerts-b.json '"Resource":"/usr/bin/target".*"Action":"Audit"' 20
touch /tmp/stop-loop
wait $loop
cat /tmp/loop.out
kill -TERM $agent
wait $agent
echo "EA-AGENT-B-EXIT $?"

while read -r line; do echo "EA-ALERT-A $line"; done < /tmp/alerts-a.json
while read -r line; do echo "EA-ALERT-B $line"; done < /tmp/alerts-b.json
while read -r line; do echo "EA-AGENTERR-A $line"; done < /tmp/agent-a.err
while read -r line; do echo "EA-AGENTERR-B $line"; done < /tmp/agent-b.err
echo "EA-DONE"
poweroff -f
