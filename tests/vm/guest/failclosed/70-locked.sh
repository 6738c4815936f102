# locked: tamper protection (tests/fail_closed/locked.rs, issue 16). An agent with
# `locked = true` (locked/agent.toml, no flags: a locked kernel refuses flags over
# the locked configuration); then, as root, every way to switch enforcement off or
# change it, each attempt in its own process (EA-LPID gives its pid, so its alerts
# can be counted): the pins (rm, mv, create, BPF_OBJ_GET), their bpffs (umount,
# lazy umount, a mount over the pin directory), raw bpf() through ids (link
# detach, map update and delete of a rule, a program's fd for a replacement), the
# agent (kill -9 and -TERM from a shell, ptrace, /proc/PID/mem, process_vm_writev),
# and the files (policy directory, agent.toml, the binary also by a hard link,
# rename, truncate, chmod, its directory renamed, state_dir). The permitted work
# runs: ordinary files elsewhere, reading the protected ones, a read-only map fd,
# signal 0, the agent's own reload (SIGHUP from PID 1). A blocked exec stays
# blocked throughout. `run` with another configuration or with flags is refused,
# so is `keygen`; a copy of the binary is not the agent.
# SIGTERM from PID 1 (this script) stops the agent; the pins keep enforcing (a
# tamper attempt with no agent running is denied, its alert delivered by the next
# agent), and the next agent adopts them, still locked.
# Last, unlocking for the parts after this one: the agent is stopped from PID 1 and
# `edgearmor unload` with an unlock token for gw-vm (signed by the test's fleet key,
# see tests/fail_closed/unlock.rs) removes the pins and the lock marker.
lk=/etc/edgearmor/failclosed/locked
lk_conf=$lk/agent.toml
lk_bin=/usr/local/bin/edgearmor
lk_pins=/sys/fs/bpf/edgearmor
echo "EA-LK-UPTIME start $(cut -d" " -f1 /proc/uptime)"
rm -rf /var/lib/ea-locked /tmp/lk
mkdir -p /var/lib/ea-locked /tmp/lk
echo 1 > /var/lib/ea-locked/version
echo ordinary > /tmp/lk/ordinary
cp $probe /usr/bin/lk-blocked

# lk_start NAME: the locked agent, alerts in /tmp/alerts-NAME.json.
lk_start() {
    agent_name=$1
    agent_err=/tmp/agent-$agent_name.err
    alerts=/tmp/alerts-$agent_name.json
    $lk_bin run --config $lk_conf > "$alerts" 2> "$agent_err" &
    agent=$!
    agents="$agents $agent_name"
    wait_for "$agent_err" "edgearmor: ready"
    echo "EA-AGENT-$agent_name $(grep 'edgearmor: ready' "$agent_err")"
}

# lk NAME COMMAND...: one attempt in its own process.
lk() {
    lk_name=$1; shift
    echo "EA-SCENARIO $lk_name"
    "$@" &
    lk_pid=$!
    wait $lk_pid
    echo "EA-LPID $lk_name $lk_pid"
}

# What the kernel itself does with a detach of an LSM link by id (no lock): the
# reason locked mode refuses the fd rather than the detach.
start_agent lk-unlocked $lk/policies
lk lk-unlocked-detach $probe bpf-link-detach
stop_agent
/usr/local/bin/edgearmor unload --config /etc/edgearmor/failclosed/agent.toml > /dev/null 2>&1

lk_start locked
lk_agent=$agent
lk lk-exec-blocked-before $probe exec /usr/bin/lk-blocked
# The pins and their bpffs.
lk lk-rm-pin $probe unlink $lk_pins/links/check_exec
# (No dots in the new names: bpffs refuses those itself, EPERM, before any hook.)
lk lk-mv-pin $probe rename $lk_pins/RULES $lk_pins/RULES_moved
lk lk-mv-pin-dir $probe rename $lk_pins /sys/fs/bpf/edgearmor_moved
lk lk-create-pin $probe mkdir $lk_pins/links/new
lk lk-obj-get $probe obj-get $lk_pins/links/check_exec
lk lk-obj-get-map $probe obj-get $lk_pins/RULES
lk lk-umount $probe umount /sys/fs/bpf
lk lk-umount-lazy $probe umount-lazy /sys/fs/bpf
lk lk-mount-over $probe mount-tmpfs $lk_pins
# Mounts above the pins, and over the files (a lazy unmount of /sys takes the bpffs
# with it; a tmpfs over the policy directory would feed the agent other policies).
lk lk-umount-lazy-sys $probe umount-lazy /sys
lk lk-mount-over-sysfs $probe mount-tmpfs /sys/fs
lk lk-mount-over-policies $probe mount-tmpfs $lk/policies
lk lk-mount-over-bin-dir $probe mount-tmpfs /usr/local/bin
# Raw bpf() through ids.
lk lk-link-detach $probe bpf-link-detach
lk lk-prog-fd $probe bpf-prog-fd
lk lk-map-update $probe bpf-map RULES update
lk lk-map-delete $probe bpf-map RULES delete
lk lk-map-state $probe bpf-map LOCK_STATE update
# The agent itself.
lk lk-kill-9 $probe kill $lk_agent 9
lk lk-kill-term $probe kill $lk_agent 15
lk lk-ptrace $probe ptrace $lk_agent
lk lk-mem-write $probe mem-write $lk_agent
lk lk-vm-write $probe vm-write $lk_agent
# Its files.
lk lk-policy-create $probe create $lk/policies/evil.yaml
lk lk-policy-append $probe append $lk/policies/block.yaml
lk lk-policy-unlink $probe unlink $lk/policies/block.yaml
lk lk-policy-dir-rename $probe rename $lk/policies /tmp/lk/policies
lk lk-config-append $probe append $lk_conf
lk lk-config-rename $probe rename $lk_conf /tmp/lk/agent.toml
# While the agent runs its binary, the kernel itself refuses to open it for writing
# or truncate it (ETXTBSY, before any hook); the same attempts with no agent
# running are further down.
lk lk-bin-write $probe write $lk_bin
lk lk-bin-link $probe link $lk_bin /usr/local/bin/ea-link
lk lk-bin-rename $probe rename $lk_bin /usr/local/bin/ea-old
lk lk-bin-truncate $probe truncate $lk_bin 1
lk lk-bin-chmod $probe chmod $lk_bin 777
lk lk-bin-dir-rename $probe rename /usr/local/bin /usr/local/bin.old
lk lk-state-create $probe create /var/lib/ea-locked/new
lk lk-state-append $probe append /var/lib/ea-locked/version
# What stays permitted.
lk lk-ok-ordinary $probe append /tmp/lk/ordinary
lk lk-ok-read-config $probe read $lk_conf
lk lk-ok-read-bin $probe read $lk_bin
lk lk-ok-map-read $probe bpf-map RULES read
lk lk-ok-signal-0 $probe kill $lk_agent 0
lk lk-exec-blocked-after $probe exec /usr/bin/lk-blocked
# run with another configuration, or with flags over the locked one: refused.
$lk_bin run --config /etc/edgearmor/failclosed/agent.toml --policies $lk/policies \
    > /dev/null 2> /tmp/lk/run-other.err
echo "EA-LK-RUN-OTHER $? $(grep -o 'the kernel is locked[^;]*' /tmp/lk/run-other.err | head -n 1)"
$lk_bin run --config $lk_conf --policies /tmp/lk > /dev/null 2> /tmp/lk/run-flags.err
echo "EA-LK-RUN-FLAGS $? $(grep -o 'the kernel is locked.*would override' /tmp/lk/run-flags.err | head -n 1)"
# The binary writes what no other process may: its file-writing workstation
# commands are refused here (keygen would replace a fleet key).
$lk_bin keygen --out /tmp/lk/fleet > /dev/null 2> /tmp/lk/keygen.err
echo "EA-LK-KEYGEN $? $(ls /tmp/lk/ | grep -c fleet) $(grep -o 'the kernel is locked' /tmp/lk/keygen.err | head -n 1)"
# A copy of the binary is another inode: not the agent.
cp $lk_bin /tmp/lk/edgearmor-copy
lk lk-copy-unload /tmp/lk/edgearmor-copy unload --config $lk_conf
echo "EA-LK-PINS-AFTER-COPY $(ls $lk_pins/links | wc -l)"
# The binary itself, exec'd traced (PTRACE_TRACEME): never the agent, even after
# its tracer detaches.
$probe traced-exec $lk_bin unload --config $lk_conf > /tmp/lk/traced.out 2>&1
echo "EA-LK-TRACED $(grep -o 'EA-TRACED-PID [0-9]*' /tmp/lk/traced.out) $(grep -o 'rc=[0-9-]*' /tmp/lk/traced.out)"
echo "EA-LK-PINS-AFTER-TRACED $(ls $lk_pins/links | wc -l)"
# The agent's own reload (SIGHUP from PID 1).
lk_applied=$(grep -c 'policies applied' "$agent_err")
kill -HUP $lk_agent
wait_count "$agent_err" 'policies applied' $((lk_applied + 1)) && echo "EA-LK-RELOADED"
# SIGTERM from PID 1 stops it; enforcement stays pinned and locked.
stop_agent
lk lk-exec-blocked-stopped $probe exec /usr/bin/lk-blocked
lk lk-rm-pin-stopped $probe unlink $lk_pins/links/check_exec
lk lk-bin-write-stopped $probe write $lk_bin
lk lk-bin-truncate-stopped $probe truncate $lk_bin 1
# The next agent adopts the pins, locked.
lk_start locked2
lk lk-exec-blocked-adopted $probe exec /usr/bin/lk-blocked
lk lk-kill-9-adopted $probe kill $agent 9
wait_for "$alerts" 'lk-blocked'
stop_agent
# Unlock for the next parts (see the header).
$lk_bin unload --config $lk_conf --token /etc/edgearmor/failclosed/unlock/locked.unlock 2>&1 |
    while read -r line; do echo "EA-LK-UNLOAD $line"; done
[ -e /sys/fs/bpf/edgearmor-locked ] && echo "EA-LK-MARKER-LEFT" || echo "EA-LK-MARKER-GONE"
rm -f /usr/bin/lk-blocked
echo "EA-LK-UPTIME end $(cut -d" " -f1 /proc/uptime)"
