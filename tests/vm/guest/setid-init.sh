#!/bin/busybox sh
# /init of the setid enforcement guest. Prints machine-readable EA-* lines on the
# console; the host test parses them. Runs once per boot, then powers off.
/bin/busybox mkdir -p /proc /sys /dev /tmp /usr/sbin /usr/bin /sbin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t securityfs securityfs /sys/kernel/security
mount -t bpf bpf /sys/fs/bpf
# Firmware leaves terminal escapes on the console line: start ours on a fresh one.
echo
echo "EA-KERNEL $(uname -r) $(uname -m)"
echo "EA-LSM $(cat /sys/kernel/security/lsm)"
echo "EA-VERSION $(/usr/local/bin/edgearmor version)"
/usr/local/bin/edgearmor check > /tmp/check.txt 2>&1
check_exit=$?
echo "EA-CHECK-EXIT $check_exit"
while read -r line; do echo "EA-CHECK $line"; done < /tmp/check.txt
if [ "$check_exit" != 0 ]; then
    # Where enforcement is impossible, `required` must refuse to start.
    /usr/local/bin/edgearmor run --enforcement required --rules /etc/edgearmor/rules.toml > /dev/null 2> /tmp/required.err
    echo "EA-REQUIRED-EXIT $?"
    while read -r line; do echo "EA-REQERR $line"; done < /tmp/required.err
fi

# The helper under the paths the rules name: a copy is a different executable, a
# symlink resolves to its target.
cp /usr/local/bin/setid-probe /usr/sbin/sshd
cp /usr/local/bin/setid-probe /usr/bin/sshd-other
cp /usr/local/bin/setid-probe /usr/bin/sshd-policy
cp /usr/local/bin/setid-probe /usr/bin/sshd-audited
ln -s /usr/sbin/sshd /usr/bin/sshd-link
echo "EA-SHELL pid=$$"

scenario() {
    name=$1; shift
    echo "EA-SCENARIO $name"
    "$@"
}

# Started before the agent: its identity must come from the agent's /proc scan. The
# agent starts only once the process runs sshd (its exec is done), not while the
# forked shell may still be busybox.
/usr/sbin/sshd wait /tmp/go setgid 0 > /tmp/early.out &
early=$!
tries=0
while [ "$(readlink /proc/$early/exe 2>/dev/null)" != /usr/sbin/sshd ]; do
    tries=$((tries + 1))
    if [ $tries -gt 600 ] || ! kill -0 $early 2>/dev/null; then
        echo "EA-TIMEOUT early sshd exec"
        break
    fi
    sleep 0.05
done

/usr/local/bin/edgearmor run --rules /etc/edgearmor/rules.toml --policies /etc/edgearmor/policies \
    --cluster vmtest --host-name gw-vm --max-alerts-per-sec 0 \
    > /tmp/alerts.json 2> /tmp/agent.err &
agent=$!
# Wait for the agent's readiness line (or its exit), bounded.
tries=0
while ! grep -q "edgearmor: ready" /tmp/agent.err; do
    kill -0 $agent 2>/dev/null || break
    tries=$((tries + 1))
    [ $tries -gt 3000 ] && break
    sleep 0.1
done

if grep -q "edgearmor: ready" /tmp/agent.err; then
    echo "EA-AGENT $(grep 'edgearmor: ready' /tmp/agent.err)"
    scenario sshd-setgid /usr/sbin/sshd setgid 0
    scenario other-setgid /usr/bin/sshd-other setgid 0
    scenario sshd-setuid /usr/sbin/sshd setuid 0
    scenario other-setuid /usr/bin/sshd-other setuid 0
    scenario link-setgid /usr/bin/sshd-link setgid 0
    # A real change: the kernel skips the hook for a no-op setres*id.
    scenario sshd-setresgid /usr/sbin/sshd setresgid 1234
    scenario fork-setgid /usr/sbin/sshd fork setgid 0
    # KubeArmorHostPolicy syscalls rules: Block, Audit, and one for another host.
    scenario policy-setgid /usr/bin/sshd-policy setgid 0
    scenario policy-setuid-allowed /usr/bin/sshd-policy setuid 0
    scenario audited-setuid /usr/bin/sshd-audited setuid 0
    touch /tmp/go
    wait $early
    scenario early-setgid cat /tmp/early.out
    # Flood while the agent is stopped: the ring buffer fills, the kernel counts what it
    # could not queue, and the agent reports that count once it runs again.
    kill -STOP $agent
    scenario flood-setgid /usr/sbin/sshd repeat 2000 setgid 0
    kill -CONT $agent
    kill -TERM $agent
fi
kill $early 2>/dev/null
wait $agent
echo "EA-AGENT-EXIT $?"
while read -r line; do echo "EA-ALERT $line"; done < /tmp/alerts.json
while read -r line; do echo "EA-AGENTERR $line"; done < /tmp/agent.err
echo "EA-DONE"
poweroff -f
