#!/bin/busybox sh
# /init of the benchmark guest (edgearmor-vm-bench). Measures syscall costs without
# the agent (B phases) and with it (A phases, shipped policies + generated rules that
# never match), in the order $SEQUENCE gives (B1 A1 A2 B2 B3 A3 ...: ABBA, so that a
# machine drifting during the run slows both sides alike); during the first agent run,
# after its A phases, reads its footprint idle and under a steady stream of audited
# opens, and the BPF programs' run times (kernel.bpf_stats_enabled) during the stream
# and during a short batch of the four operations. Prints EA-* lines for the host. Parameters: /etc/edgearmor/bench.env. Powers off.
/bin/busybox mkdir -p /proc /sys /dev /tmp /usr/sbin /usr/bin /sbin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t securityfs securityfs /sys/kernel/security
mount -t bpf bpf /sys/fs/bpf
# Firmware leaves terminal escapes on the console line: start ours on a fresh one.
echo
. /etc/edgearmor/bench.env
echo "EA-KERNEL $(uname -r) $(uname -m)"
echo "EA-LSM $(cat /sys/kernel/security/lsm)"
echo "EA-NPROC $(grep -c ^processor /proc/cpuinfo)"
echo "EA-MEM $(grep MemTotal /proc/meminfo)"
echo "EA-VERSION $(/usr/local/bin/edgearmor version)"
echo "EA-PARAMS phase_execs=$PHASE_EXECS phase_ops=$PHASE_OPS rate=$STREAM_RATE seconds=$STREAM_SECONDS sequence=$SEQUENCE"

bench=/usr/local/bin/ea-bench
# Busybox applet links under paths the shipped policies name (/bin/rpm, /usr/bin/dpkg)
# resolve to /bin/busybox, so those Block rules would forbid every busybox command of
# this script: remove the links (a gateway has no such links; its rules name real files).
for p in $(grep -h 'path: /' /etc/edgearmor/policies/*.yaml | sed 's/.*path: //'); do
    if [ -L "$p" ]; then rm -f "$p"; fi
done
mkdir -p /tmp/bench/audited
echo "a small file the open benchmark reads" > /tmp/bench/small
echo "the file the alert stream opens" > /tmp/bench/audited/file

# Each step's stderr is shown on failure; the host fails the run on EA-STEP-FAILED.
step() {
    "$@" 2> /tmp/step.err || {
        echo "EA-STEP-FAILED $*"
        while read -r line; do echo "EA-STEPERR $line"; done < /tmp/step.err
    }
}

finish() {
    for f in /tmp/agent-*.err; do
        [ -f "$f" ] || continue
        while read -r line; do echo "EA-AGENTERR $line"; done < "$f"
    done
    echo "EA-DONE"
    poweroff -f
}

agent=""
instance=0
# Starts agent instance N+1 and waits (bounded: 20 min under emulation) for its
# readiness line on stderr.
start_agent() {
    instance=$((instance + 1))
    err=/tmp/agent-$instance.err
    /usr/local/bin/edgearmor run --policies /etc/edgearmor/policies \
        --cluster bench --host-name gw-bench --max-alerts-per-sec 0 \
        > /tmp/alerts-$instance.json 2> $err &
    agent=$!
    tries=0
    while ! grep -q "edgearmor: ready" $err; do
        if ! kill -0 $agent 2>/dev/null; then
            echo "EA-TIMEOUT agent exited before it was ready"
            finish
        fi
        tries=$((tries + 1))
        if [ $tries -gt 12000 ]; then
            echo "EA-TIMEOUT agent not ready"
            finish
        fi
        sleep 0.1
    done
    echo "EA-AGENT instance=$instance pid=$agent $(grep 'edgearmor: ready' $err)"
    if [ $instance = 1 ]; then step $bench proc ready $agent; fi
}

# The first instance's footprint: idle, then under the stream of audited opens.
footprint() {
    step $bench proc idle $agent
    step $bench bpf idle $agent
    echo "EA-PHASE stream"
    # Per-program run counts and times for the stream only (the counters cost a little).
    echo 1 > /proc/sys/kernel/bpf_stats_enabled 2>/dev/null && echo "EA-BPF-STATS on"
    step $bench stream $agent "$STREAM_RATE" "$STREAM_SECONDS" /tmp/bench/audited/file
    step $bench bpf loaded $agent
    # The four operations once more, counters still on: the programs' time per call.
    echo "EA-PHASE stats"
    step $bench ops stats 0 "$STATS_EXECS" "$STATS_OPS" /tmp/bench/small
    step $bench bpf stats $agent
    echo 0 > /proc/sys/kernel/bpf_stats_enabled 2>/dev/null
    # Wait (bounded) until the agent has written every alert of the stream.
    want=$((STREAM_RATE * STREAM_SECONDS))
    alerts=/tmp/alerts-$instance.json
    tries=0
    while [ "$(grep -c '"Resource":"/tmp/bench/audited/file"' $alerts)" -lt "$want" ]; do
        tries=$((tries + 1))
        kill -0 $agent 2>/dev/null || break
        [ $tries -gt 600 ] && break
        sleep 0.1
    done
    step $bench proc loaded $agent
    echo "EA-ALERTS audited=$(grep -c '"Resource":"/tmp/bench/audited/file"' $alerts) lines=$(wc -l < $alerts) expected=$want lost=$(grep -c '"Operation":"AlertLoss"' $alerts)"
}

stop_agent() {
    if [ $instance = 1 ]; then footprint; fi
    kill -TERM $agent
    wait $agent
    echo "EA-AGENT-EXIT instance=$instance status=$?"
    agent=""
    # Enforcement is pinned and outlives the agent: remove it, or the next baseline
    # phase would measure the programs it is meant to run without.
    step /usr/local/bin/edgearmor unload
}

for item in $SEQUENCE; do
    kind=${item%"${item#?}"}
    round=${item#?}
    echo "EA-PHASE $item"
    if [ "$kind" = A ]; then
        [ -n "$agent" ] || start_agent
        step $bench attached "agent-$round"
        step $bench ops agent "$round" "$PHASE_EXECS" "$PHASE_OPS" /tmp/bench/small
    else
        [ -z "$agent" ] || stop_agent
        step $bench attached "baseline-$round"
        step $bench ops baseline "$round" "$PHASE_EXECS" "$PHASE_OPS" /tmp/bench/small
    fi
done
[ -z "$agent" ] || stop_agent
finish
