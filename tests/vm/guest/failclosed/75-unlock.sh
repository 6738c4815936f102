# Unlock (tests/fail_closed/unlock.rs): in locked mode `edgearmor unload` without a
# token, or with an expired, foreign-node or badly signed one, is refused (exit 3,
# nothing removed, one self-protection alert each, delivered by the running agent);
# with a valid token it unloads (pins gone, the blocked exec runs again); the same
# token once more, on a kernel locked again, is refused as replayed; a refusal made
# while no agent runs is delivered by the next agent. Tokens and fleet.pub come from
# the host side (a key made by the test).
echo "EA-UL-UPTIME start $(cut -d" " -f1 /proc/uptime)"
ul_dir=/etc/edgearmor/failclosed/unlock
ul_pins=/sys/fs/bpf/edgearmor
mkdir -p /opt/unlock
cp "$probe" /opt/unlock/victim

# start_locked NAME: an agent locked by $ul_dir/agent.toml alone (a locked run takes
# no overrides); sets what start_agent sets.
start_locked() {
    agent_name=$1
    agent_err=/tmp/agent-$agent_name.err
    alerts=/tmp/alerts-$agent_name.json
    /usr/local/bin/edgearmor run --config "$ul_dir/agent.toml" > "$alerts" 2> "$agent_err" &
    agent=$!
    agents="$agents $agent_name"
    wait_for "$agent_err" "edgearmor: ready"
    echo "EA-AGENT-$agent_name $(grep 'edgearmor: ready' "$agent_err")"
}

# ul_unload SCENARIO [TOKEN]: unload with the locked configuration, EA-UNLOAD-RC.
ul_unload() {
    echo "EA-SCENARIO $1"
    if [ -n "$2" ]; then
        /usr/local/bin/edgearmor unload --config "$ul_dir/agent.toml" --token "$ul_dir/$2" \
            > /tmp/ul-unload.out 2>&1
    else
        /usr/local/bin/edgearmor unload --config "$ul_dir/agent.toml" > /tmp/ul-unload.out 2>&1
    fi
    echo "EA-UNLOAD-RC $1 $?"
    while read -r line; do echo "EA-UNLOAD-OUT $1 $line"; done < /tmp/ul-unload.out
}

# ul_pins SCENARIO: how many pins are left.
ul_pins() {
    echo "EA-UL-PINS $1 $(find "$ul_pins" -mindepth 1 2>/dev/null | wc -l)"
}

start_locked unlock
scenario ul-victim-locked $probe exec /opt/unlock/victim
ul_unload ul-no-token
ul_unload ul-expired expired.unlock
ul_unload ul-foreign foreign.unlock
ul_unload ul-badsig badsig.unlock
ul_unload ul-notatoken fleet.pub
ul_pins ul-after-refusals
scenario ul-victim-after-refusals $probe exec /opt/unlock/victim
# Five refused unloads, five alerts, delivered by the running agent.
wait_count "$alerts" '"Resource":"edgearmor unload' 5
# PID 1 (this init) may stop the locked agent; enforcement stays pinned.
stop_agent
scenario ul-victim-no-agent $probe exec /opt/unlock/victim
ul_unload ul-valid valid.unlock
ul_pins ul-after-valid
scenario ul-victim-unlocked $probe exec /opt/unlock/victim

# Locked again: the used token is refused, and a refusal made while no agent runs
# waits for the next one.
start_locked unlock-b
ul_unload ul-replayed valid.unlock
wait_count "$alerts" '"Resource":"edgearmor unload' 1
stop_agent
ul_unload ul-no-agent
start_locked unlock-c
wait_count "$alerts" '"Resource":"edgearmor unload' 1
stop_agent
ul_unload ul-second-valid second.unlock
ul_pins ul-end
scenario ul-victim-end $probe exec /opt/unlock/victim
rm -rf /opt/unlock /var/lib/edgearmor/unlock
echo "EA-UL-UPTIME end $(cut -d" " -f1 /proc/uptime)"
