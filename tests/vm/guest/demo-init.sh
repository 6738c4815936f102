#!/bin/busybox sh
# /init of the demo gateway: start the agent, let "sshd" try to become root's group,
# show what happened. EA-* lines are read by edgearmor-demo on the host.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin:/usr/local/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t securityfs none /sys/kernel/security
echo
echo "EA-KERNEL $(uname -r) $(uname -m)"
echo "EA-LSM $(cat /sys/kernel/security/lsm)"
cp /usr/local/bin/setid-probe /usr/sbin/sshd
cp /usr/local/bin/setid-probe /usr/bin/sshd-other
edgearmor run --rules /etc/edgearmor/rules.toml --host-name demo-gateway > /tmp/alerts.json 2> /tmp/agent.err &
agent=$!
tries=0
while ! grep -q "edgearmor: ready" /tmp/agent.err && kill -0 $agent 2>/dev/null && [ $tries -lt 3000 ]; do
    tries=$((tries + 1))
    sleep 0.1
done
echo "EA-AGENT $(grep -m 1 "^edgearmor:" /tmp/agent.err)"
echo "EA-BLOCKED $(/usr/sbin/sshd setgid 0)"
echo "EA-ALLOWED $(/usr/bin/sshd-other setgid 0)"
kill -TERM $agent
wait $agent
while read -r line; do echo "EA-ALERT $line"; done < /tmp/alerts.json
echo "EA-DONE"
poweroff -f
