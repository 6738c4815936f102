# The notify part (tests/fail_closed/notify.rs): the agent as systemd sees it, without
# systemd. `setid-probe notify-listen` is the NOTIFY_SOCKET; it prints every datagram
# (EA-NOTIFY t=MS msg=...) and EA-NOTIFY-SILENT once 1.5 s pass without one; the part
# marks its own steps in that timeline with notify-send MARK=.... WATCHDOG_USEC=600000:
# pings every 300 ms, so 1.5 s of silence is five missed pings.
nfy=/etc/edgearmor/failclosed/notify
nfy_sock=/run/notify.sock
nfy_log=/tmp/notify.log
nfy_config=/etc/edgearmor/failclosed/agent.toml
cp $probe /usr/bin/nfy-blocked
cp $probe /usr/bin/nfy-allowed
$probe notify-listen $nfy_sock 1500 > $nfy_log 2>&1 &
nfy_listener=$!
nfy_tries=0
while [ ! -S $nfy_sock ] && [ $nfy_tries -lt 300 ]; do nfy_tries=$((nfy_tries + 1)); sleep 0.1; done
nfy_mark() { $probe notify-send $nfy_sock "MARK=$1"; }
# nfy_wait PATTERN N: until the listener printed N lines matching PATTERN (bounded;
# also after the agent exited, unlike wait_count).
nfy_wait() {
    nfy_tries=0
    while nfy_n=$(grep -c "$1" $nfy_log); [ "${nfy_n:-0}" -lt "$2" ]; do
        nfy_tries=$((nfy_tries + 1))
        if [ $nfy_tries -gt 900 ]; then echo "EA-TIMEOUT notify $2 x $1"; return 1; fi
        sleep 0.1
    done
}

# nfy_status NAME: `edgearmor status` as EA-NOTIFY-STATUS-NAME lines and its exit status.
nfy_status() {
    /usr/local/bin/edgearmor status --config $nfy_config > /tmp/status-$1.txt 2>&1
    echo "EA-NOTIFY-STATUS-$1-EXIT $?"
    while read -r line; do echo "EA-NOTIFY-STATUS-$1 $line"; done < /tmp/status-$1.txt
}

export NOTIFY_SOCKET=$nfy_sock WATCHDOG_USEC=600000
start_agent notify $nfy/policies
wait_for $nfy_log "msg=READY=1"
wait_count $nfy_log "msg=WATCHDOG=1" 3
nfy_status running
scenario nfy-blocked-running $probe exec /usr/bin/nfy-blocked
scenario nfy-allowed-running $probe exec /usr/bin/nfy-allowed

# SIGHUP: RELOADING=1, then READY=1 again.
nfy_mark hup
kill -HUP $agent
wait_count $nfy_log "msg=READY=1" 2

# A stopped agent stops pinging; the kernel keeps enforcing meanwhile.
nfy_silent=$(grep -c "EA-NOTIFY-SILENT" $nfy_log)
nfy_mark stop
kill -STOP $agent
nfy_wait "EA-NOTIFY-SILENT" $((nfy_silent + 1))
scenario nfy-blocked-stopped $probe exec /usr/bin/nfy-blocked
scenario nfy-allowed-stopped $probe exec /usr/bin/nfy-allowed
nfy_pings=$(grep -c "msg=WATCHDOG=1" $nfy_log)
nfy_mark cont
kill -CONT $agent
wait_count $nfy_log "msg=WATCHDOG=1" $((nfy_pings + 2))
# The decision made while it was stopped still becomes an alert.
wait_count "$alerts" "nfy-blocked" 2
stop_agent
# Datagrams arrive in order: once the mark is printed, so is everything sent before.
nfy_mark stopped
nfy_wait "msg=MARK=stopped" 1
nfy_status stopped

# The next agent adopts the pinned enforcement and says so.
start_agent notify2 $nfy/policies
wait_count $nfy_log "msg=READY=1" 3
nfy_status adopted
stop_agent
unset NOTIFY_SOCKET WATCHDOG_USEC
nfy_mark end
nfy_wait "msg=MARK=end" 1
kill $nfy_listener
wait $nfy_listener 2>/dev/null
while read -r line; do echo "$line"; done < $nfy_log
