#!/bin/busybox sh
# /init of the restart guest: a loop keeps trying a blocked exec while the agent is
# SIGKILLed, started again, and replaced by another binary; then an event storm.
# Prints EA-* lines for the host test.
/bin/busybox mkdir -p /proc /sys /dev /tmp /usr/bin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t securityfs securityfs /sys/kernel/security
mount -t bpf bpf /sys/fs/bpf
echo
echo "EA-KERNEL $(uname -r) $(uname -m)"
probe=/usr/local/bin/setid-probe
rm -f /usr/bin/target
cp $probe /usr/bin/target
cp /usr/local/bin/edgearmor /usr/local/bin/edgearmor-next

# Waits (bounded) until FILE has at least N lines matching PATTERN.
wait_count() {
    file=$1; pattern=$2; n=$3; tries=0
    # A file the agent has not created yet counts 0 lines ("" would end the loop:
    # `[ "" -lt N ]` is an error, i.e. false).
    while count=$(grep -c "$pattern" "$file" 2>/dev/null); [ "${count:-0}" -lt "$n" ]; do
        tries=$((tries + 1))
        if [ $tries -gt 1200 ]; then echo "EA-TIMEOUT $n x $pattern in $file"; return 1; fi
        sleep 0.1
    done
}

# Waits until the loop has made N more attempts than now.
wait_attempts() {
    start=$(cat /tmp/progress 2>/dev/null); tries=0
    while made=$(cat /tmp/progress 2>/dev/null); [ "${made:-0}" -lt $((${start:-0} + $1)) ]; do
        tries=$((tries + 1))
        if [ $tries -gt 1200 ]; then echo "EA-TIMEOUT $1 attempts"; return 1; fi
        sleep 0.05
    done
}

start_agent() {
    $1 run --policies /etc/edgearmor/policies --cluster vmtest --host-name gw-vm \
        --max-alerts-per-sec 0 > /tmp/alerts-$2.json 2> /tmp/agent-$2.err &
    agent=$!
    wait_count /tmp/agent-$2.err "edgearmor: ready" 1
    echo "EA-READY-$2 $(grep 'edgearmor: ready' /tmp/agent-$2.err)"
}

start_agent /usr/local/bin/edgearmor a
EA_PROGRESS=/tmp/progress $probe loop-exec 1000000 /tmp/stop /usr/bin/target > /tmp/loop.out &
loop=$!
wait_count /tmp/alerts-a.json '"Resource":"/usr/bin/target"' 20
kill -KILL $agent
wait $agent 2>/dev/null
echo "EA-KILLED"
# No agent at all: the pinned programs must keep denying.
wait_attempts 30
start_agent /usr/local/bin/edgearmor b
wait_count /tmp/alerts-b.json '"Resource":"/usr/bin/target"' 50
kill -TERM $agent
wait $agent
echo "EA-AGENT-B-EXIT $?"
wait_attempts 30
start_agent /usr/local/bin/edgearmor-next c
wait_count /tmp/alerts-c.json '"Resource":"/usr/bin/target"' 20
touch /tmp/stop
wait $loop
cat /tmp/loop.out
echo "EA-PINS $(ls /sys/fs/bpf/edgearmor /sys/fs/bpf/edgearmor/links | tr '\n' ' ')"

# Storm: 100,000 denied execs with the default throttle; the agent's memory is read
# at the end (VmHWM is its peak).
kill -TERM $agent
wait $agent
/usr/local/bin/edgearmor-next run --policies /etc/edgearmor/policies --cluster vmtest \
    --host-name gw-vm > /tmp/alerts-storm.json 2> /tmp/agent-storm.err &
agent=$!
wait_count /tmp/agent-storm.err "edgearmor: ready" 1
grep VmRSS /proc/$agent/status | sed 's/^/EA-RSS-IDLE /'
rm -f /tmp/stop
$probe loop-exec 100000 /tmp/stop /usr/bin/target > /tmp/storm.out &
storm=$!
# The agent's resident memory while the storm runs, sampled.
max=0
while kill -0 $storm 2>/dev/null; do
    rss=$(grep VmRSS /proc/$agent/status | tr -s ' ' | cut -d' ' -f2)
    [ "$rss" -gt "$max" ] && max=$rss
    sleep 0.2
done
wait $storm
cat /tmp/storm.out | sed 's/^EA-LOOP/EA-STORM/'
echo "EA-RSS-STORM-MAX $max"
grep -E "VmRSS|VmHWM" /proc/$agent/status | sed 's/^/EA-RSS /'
kill -TERM $agent
wait $agent
echo "EA-STORM-EXIT $?"
/usr/local/bin/edgearmor unload
ls /sys/fs/bpf/edgearmor 2>/dev/null | sed 's/^/EA-LEFT /'
$probe exec /usr/bin/target

for n in a b c; do
    while read -r line; do echo "EA-ALERT-$n $line"; done < /tmp/alerts-$n.json
done
grep -v '"Resource":"/usr/bin/target"' /tmp/alerts-storm.json | while read -r line; do echo "EA-STORMSYS $line"; done
echo "EA-STORM-ALERTS $(grep -c '"Resource":"/usr/bin/target"' /tmp/alerts-storm.json)"
for n in a b c storm; do
    while read -r line; do echo "EA-AGENTERR-$n $line"; done < /tmp/agent-$n.err
done
echo "EA-DONE"
poweroff -f
