# identity: fromSource identities are task-local storage. A 50,000-fork flood does not
# change the decisions for the protected program (P), a process that reuses P's PID
# does not get P's identity, processes started before the agent (and their children
# forked while it starts) are identified, and an agent that adopts the pinned state
# keeps every identity. Host side: fail_closed/identity.rs.
id_dir=/etc/edgearmor/failclosed/identity
cp $probe /usr/bin/ea-protected
echo secret > /etc/ea-secret
echo key > /etc/ea-key
rm -f /tmp/identity-go /tmp/identity-cmd
mkfifo /tmp/identity-cmd

# Bounded wait for PATTERN in FILE, with no agent needed.
id_wait() {
    tries=0
    while ! grep -q "$2" "$1" 2>/dev/null; do
        tries=$((tries + 1))
        if [ $tries -gt 3000 ]; then echo "EA-TIMEOUT identity: $2 in $1"; return 1; fi
        sleep 0.1
    done
}

# id_cmd TAG OP PATH: P runs it; waits for its result line.
id_cmd() {
    echo "$1 $2 $3" > /tmp/identity-cmd
    id_wait /tmp/identity-p.out "tag=$1 "
}

# Before the agent: P waiting for commands, and a spawner (also P's executable)
# forking children until the agent is ready.
/usr/bin/ea-protected serve /tmp/identity-cmd > /tmp/identity-p.out 2>&1 &
p=$!
/usr/bin/ea-protected spawn-until /tmp/identity-go /etc/ea-secret /etc/ea-key > /tmp/identity-spawn.out 2>&1 &
spawner=$!
id_wait /tmp/identity-p.out EA-SERVE
id_wait /tmp/identity-spawn.out EA-SPAWNER-START
$probe now identity-agent-start
start_agent identity $id_dir/policies
$probe now identity-agent-ready
touch /tmp/identity-go
wait $spawner

id_cmd before-flood-secret read /etc/ea-secret
id_cmd before-flood-key read /etc/ea-key
scenario identity-flood $probe flood 50000 /etc/ea-secret
# Two floods at once on the one vCPU: new tasks are created while others exit (the
# kernel frees their task storage) and the two preempt each other (preempt=full), so
# task-storage calls meet one another half-way; none may refuse a fork.
$probe flood 10000 /etc/ea-secret > /tmp/identity-pair-a.out 2>&1 &
pair_a=$!
$probe flood 10000 /etc/ea-secret > /tmp/identity-pair-b.out 2>&1 &
pair_b=$!
wait $pair_a
wait $pair_b
echo "EA-PAIR-A $(cat /tmp/identity-pair-a.out)"
echo "EA-PAIR-B $(cat /tmp/identity-pair-b.out)"
id_cmd after-flood-secret read /etc/ea-secret
id_cmd after-flood-key read /etc/ea-key
id_cmd after-flood-fork fork-read /etc/ea-secret
id_cmd after-flood-thread thread-read /etc/ea-secret
id_cmd after-flood-exec exec-read /etc/ea-secret
# A new agent adopts the pinned identities: P is still P.
stop_agent
start_agent identity-b $id_dir/policies
id_cmd adopted-secret read /etc/ea-secret
id_cmd adopted-key read /etc/ea-key
echo quit > /tmp/identity-cmd
wait $p

# P is gone and reaped: the next process gets its PID and must not get its identity.
$probe reuse-pid $p reuse-key /etc/ea-key reuse-secret /etc/ea-secret > /tmp/identity-reuse.out 2>&1
scenario identity-other-secret $probe read /etc/ea-secret
scenario identity-other-key $probe read /etc/ea-key
stop_agent
for f in p spawn reuse; do
    while read -r line; do echo "$line"; done < /tmp/identity-$f.out
done
$probe now identity-done
