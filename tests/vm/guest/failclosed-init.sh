#!/bin/busybox sh
# /init of the fail-closed guest (tests/fail_closed.rs): the attacks of one boot.
# Every file /etc/edgearmor/failclosed/NN-*.sh is sourced in order; each starts the
# agents it needs with `start_agent`, runs `scenario` lines (the helper prints
# EA-OP rc=.. errno=..), and stops them with `stop_agent`. Alerts and agent stderr
# are printed afterwards as EA-ALERT-<name> / EA-AGENTERR-<name>. Powers off.
/bin/busybox mkdir -p /proc /sys /dev /tmp /usr/sbin /usr/bin /sbin /opt /run
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t securityfs securityfs /sys/kernel/security
mount -t bpf bpf /sys/fs/bpf
mount -t debugfs debugfs /sys/kernel/debug
echo
echo "EA-KERNEL $(uname -r) $(uname -m)"
echo "EA-PREEMPT $(cat /sys/kernel/debug/sched/preempt 2>/dev/null || uname -v)"
probe=/usr/local/bin/setid-probe
echo "root:x:0:0:root:/root:/bin/sh" > /etc/passwd
echo "root:x:0:" > /etc/group

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
    while count=$(grep -c "$pattern" "$file" 2>/dev/null); [ "${count:-0}" -lt "$n" ]; do
        tries=$((tries + 1))
        kill -0 $agent 2>/dev/null || { give_up "agent died awaiting $n x $pattern"; return 1; }
        if [ $tries -gt 900 ]; then give_up "$n x $pattern"; return 1; fi
        sleep 0.1
    done
}

# start_agent NAME POLICY_DIR [agent args...]: runs an agent on the policies in
# POLICY_DIR; alerts go to /tmp/alerts-NAME.json, stderr to /tmp/agent-NAME.err.
# Sets $agent, $agent_err, $alerts; prints EA-AGENT-NAME <ready line>.
agents=""
start_agent() {
    agent_name=$1; dir=$2; shift 2
    agent_err=/tmp/agent-$agent_name.err
    alerts=/tmp/alerts-$agent_name.json
    /usr/local/bin/edgearmor run --config /etc/edgearmor/failclosed/agent.toml \
        --policies "$dir" --cluster vmtest --host-name gw-vm --max-alerts-per-sec 0 "$@" \
        > "$alerts" 2> "$agent_err" &
    agent=$!
    agents="$agents $agent_name"
    wait_for "$agent_err" "edgearmor: ready"
    echo "EA-AGENT-$agent_name $(grep 'edgearmor: ready' "$agent_err")"
}

# stop_agent: SIGTERM, and the exit status as EA-AGENT-NAME-EXIT.
stop_agent() {
    kill -TERM $agent
    wait $agent
    echo "EA-AGENT-$agent_name-EXIT $?"
}

for part in /etc/edgearmor/failclosed/[0-9]*.sh; do
    [ -f "$part" ] || continue
    # Each part starts from no enforcement: agents pin what they enforce, and an
    # earlier part's pins (and its unread events) must not leak into the next one.
    /usr/local/bin/edgearmor unload --config /etc/edgearmor/failclosed/agent.toml 2>&1 |
        while read -r line; do echo "EA-UNLOAD $line"; done
    echo "EA-PART $(basename "$part")"
    . "$part"
done

for name in $agents; do
    while read -r line; do echo "EA-ALERT-$name $line"; done < /tmp/alerts-$name.json
    while read -r line; do echo "EA-AGENTERR-$name $line"; done < /tmp/agent-$name.err
done
echo "EA-DONE"
poweroff -f
