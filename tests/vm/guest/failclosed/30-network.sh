# The network part (tests/fail_closed/network.rs): sockets decided by what they are.
# tcp is blocked for everyone; udp, sctp, icmp and raw each for one copy of the helper
# (/usr/bin/net-PROTO), so the helper itself shows what stays permitted. Every
# protocol is tried over IPv4 and IPv6 with explicit (family, type, protocol).
net=/etc/edgearmor/failclosed/network
pins=/sys/fs/bpf/edgearmor
# Nothing an earlier part pinned decides the baseline below.
/usr/local/bin/edgearmor unload --config /etc/edgearmor/failclosed/agent.toml > /dev/null 2>&1
for who in udp sctp icmp raw; do cp $probe /usr/bin/net-$who; done
# Ping sockets for root (the default range excludes every group).
echo "0 0" > /proc/sys/net/ipv4/ping_group_range

# net_try NAME PROG FAMILY TYPE PROTOCOL, for inet and inet6 (NAME-4 / NAME-6).
net_try() {
    net_name=$1; net_prog=$2; shift 2
    scenario "$net_name-4" $net_prog socket inet "$@"
    scenario "$net_name-6" $net_prog socket inet6 "$@"
}

# What the kernel does without an agent: the baseline each denial is compared with.
net_baseline() {
    net_try base-tcp $probe stream 0
    net_try base-mptcp $probe stream 262
    net_try base-udplite $probe dgram 136
    net_try base-sctp $probe stream 132
    net_try base-sctp-seq $probe seqpacket 132
    net_try base-dccp $probe 6 33
    scenario base-ping-4 $probe socket inet dgram 1
    scenario base-ping-6 $probe socket inet6 dgram 58
}
net_baseline

start_agent network $net/policies
# Denied: MPTCP is tcp (anyone), UDP-Lite is udp for net-udp, SCTP for net-sctp,
# ping for net-icmp, packet sockets for net-raw, and a protocol the table does not
# know (DCCP) wherever a rule covers the family.
net_try deny-tcp $probe stream 0
net_try deny-mptcp $probe stream 262
net_try deny-udp /usr/bin/net-udp dgram 0
net_try deny-udplite /usr/bin/net-udp dgram 136
net_try deny-sctp /usr/bin/net-sctp stream 132
net_try deny-sctp-seq /usr/bin/net-sctp seqpacket 0
scenario deny-ping-4 /usr/bin/net-icmp socket inet dgram 1
scenario deny-ping-6 /usr/bin/net-icmp socket inet6 dgram 58
scenario deny-packet /usr/bin/net-raw socket packet raw 768
scenario deny-packet-dgram /usr/bin/net-raw socket packet dgram 768
net_try deny-dccp $probe 6 33
# Permitted: the same protocols for processes the rules do not cover, other protocols.
net_try allow-udp $probe dgram 0
net_try allow-udplite $probe dgram 136
net_try allow-sctp $probe stream 132
net_try allow-sctp-seq $probe seqpacket 132
scenario allow-ping-4 $probe socket inet dgram 1
scenario allow-ping-6 $probe socket inet6 dgram 58
net_try allow-raw $probe raw 255
scenario allow-packet $probe socket packet raw 768
scenario allow-unix $probe socket unix stream 0
scenario allow-udp-by-sctp /usr/bin/net-sctp socket inet dgram 136
wait_count "$alerts" '"Operation":"Network"' 18
stop_agent
/usr/local/bin/edgearmor unload --config /etc/edgearmor/failclosed/agent.toml > /dev/null 2>&1
scenario unloaded-tcp-4 $probe socket inet stream 0

# Rule tables that cannot be written stop the agent, even under enforcement = "auto"
# (it used to fall back to monitor-only). The kernel refuses the write for real: the
# pin directory holds a RULES map with room for one entry, as a build with a smaller
# table would have left it, and the agent adopts pinned maps by name.
mkdir -p $pins
scenario pin-small-rules $probe pin-rules-map $pins/RULES 1
/usr/local/bin/edgearmor run --config /etc/edgearmor/failclosed/agent.toml \
    --policies $net/policies --cluster vmtest --host-name gw-vm --enforcement auto \
    > /tmp/tables.out 2> /tmp/tables.err &
tables=$!
tries=0
while kill -0 $tables 2>/dev/null && [ $tries -lt 900 ] && ! grep -q "edgearmor: ready" /tmp/tables.err; do
    sleep 0.1; tries=$((tries + 1))
done
if kill -0 $tables 2>/dev/null; then echo "EA-TABLES still running"; kill -TERM $tables; fi
wait $tables
echo "EA-TABLES-EXIT $?"
while read -r line; do echo "EA-TABLES-ERR $line"; done < /tmp/tables.err
/usr/local/bin/edgearmor unload --config /etc/edgearmor/failclosed/agent.toml > /dev/null 2>&1
scenario after-tables-tcp-4 $probe socket inet stream 0
