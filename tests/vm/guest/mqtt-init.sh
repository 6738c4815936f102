#!/bin/busybox sh
# /init of the MQTT guest: bring up the restricted NIC, run the agent publishing to the
# host broker, trigger one blocked setgid, stop the agent (it delivers before exiting).
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin:/usr/local/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t securityfs none /sys/kernel/security
echo
echo "EA-KERNEL $(uname -r) $(uname -m)"
. /etc/net-setup.sh
cp /usr/local/bin/setid-probe /usr/sbin/sshd
edgearmor run --rules /etc/edgearmor/rules.toml --cluster vmtest --host-name gw-arm64 \
    --broker 10.0.2.100:1883 --max-alerts-per-sec 0 --shutdown-grace-secs 60 > /tmp/alerts.json 2> /tmp/agent.err &
agent=$!
tries=0
while ! grep -q "MQTT: connected" /tmp/agent.err && kill -0 $agent 2>/dev/null && [ $tries -lt 3000 ]; do
    tries=$((tries + 1))
    sleep 0.1
done
echo "EA-CONNECTED $(grep -c 'MQTT: connected' /tmp/agent.err)"
/usr/sbin/sshd setgid 0
kill -TERM $agent
wait $agent
echo "EA-AGENT-EXIT $?"
while read -r line; do echo "EA-AGENTERR $line"; done < /tmp/agent.err
echo "EA-DONE"
poweroff -f
