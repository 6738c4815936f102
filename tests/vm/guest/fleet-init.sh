#!/bin/busybox sh
# /init of the fleet guest: the agent takes its policies only from signed bundles
# the host publishes on the broker. After each bundle the host offers, the agent's
# verdict line appears on its stderr; then the guest tries the exec the bundles are
# about (/usr/bin/ls) and reports the syscall outcome (EA-OP). The host offers the
# next bundle only after it has read that EA-OP line on the console, so the exec
# always meets the policy of the verdict just seen. The first wait that times out
# ends the sequence (the host stops offering when it reads EA-TIMEOUT).
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin:/usr/local/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t securityfs none /sys/kernel/security
echo
echo "EA-KERNEL $(uname -r) $(uname -m)"
. /etc/net-setup.sh
rm -f /usr/bin/ls
cp /usr/local/bin/setid-probe /usr/bin/ls
edgearmor run --config /etc/edgearmor/fleet.toml --cluster vmtest --host-name gw-fleet \
    --broker 10.0.2.100:1883 --max-alerts-per-sec 0 > /tmp/alerts.json 2> /tmp/agent.err &
agent=$!

# Waits (bounded) until the agent's stderr has a line matching PATTERN.
wait_err() {
    tries=0
    while ! grep -q "$1" /tmp/agent.err; do
        tries=$((tries + 1))
        if [ $tries -gt 1200 ] || ! kill -0 $agent 2>/dev/null; then
            echo "EA-TIMEOUT $1"
            return 1
        fi
        sleep 0.1
    done
}

# One step: the agent's verdict on the bundle just offered, then the kernel's answer.
step() {
    wait_err "$2" || return 1
    echo "EA-STEP $1"
    /usr/local/bin/setid-probe exec /usr/bin/ls
}
wait_err "MQTT: connected" &&
    step applied-v2 "bundle v2 from the fleet topic applied" &&
    step bad-signature "rejected: bundle signature" &&
    step rollback-v1 "bundle v1 from the fleet topic rejected" &&
    step foreign-v4 "bundle v4 from the fleet topic rejected" &&
    step oversize "rejected: bundle of" &&
    step applied-v6 "bundle v6 from the node topic applied"
kill -TERM $agent
wait $agent
echo "EA-AGENT-EXIT $?"
while read -r line; do echo "EA-ALERT $line"; done < /tmp/alerts.json
while read -r line; do echo "EA-AGENTERR $line"; done < /tmp/agent.err
echo "EA-DONE"
poweroff -f
