# Aliases (tests/fail_closed/aliases.rs): names made before the agent starts (hard
# links out of a protected file and a readOnly tree, a bind mount of a subdirectory
# of that tree) reach the same decision as the protected name, and the alert names
# the protected path; unprotected files and reads of readOnly ones still work.
al_dir=/etc/edgearmor/failclosed/aliases
mkdir -p /etc/alias-ro/sub /tmp/alias /mnt/alias-ro
echo secret > /etc/alias-secret
echo ro > /etc/alias-ro/f
echo ro > /etc/alias-ro/sub/g
echo ro > /etc/alias-ro/sub/h
echo free > /tmp/alias/free
ln /etc/alias-secret /tmp/alias/secret-link
ln /etc/alias-ro/sub/g /tmp/alias/g-link
mount --bind /etc/alias-ro/sub /mnt/alias-ro

start_agent aliases "$al_dir/policies"
scenario al-secret $probe read /etc/alias-secret
scenario al-secret-link $probe read /tmp/alias/secret-link
scenario al-secret-link-write $probe write /tmp/alias/secret-link
scenario al-g-link-write $probe write /tmp/alias/g-link
# h has one link: the walk from the bind mount meets sub/'s entry.
scenario al-bind-write $probe write /mnt/alias-ro/h
# Permitted: reads of the readOnly tree by any name, files nothing protects.
scenario al-g-link-read $probe read /tmp/alias/g-link
scenario al-bind-read $probe read /mnt/alias-ro/g
scenario al-free-read $probe read /tmp/alias/free
scenario al-free-write $probe write /tmp/alias/free
# Every Block above reported (5), before the agent stops.
wait_count "$alerts" '"PolicyName":"hsp-aliases"' 5
stop_agent
# The entries are pinned with the rules: they hold with no agent running, and the
# next agent adopts them (its own generation replaces them).
scenario al-link-no-agent $probe read /tmp/alias/secret-link
start_agent aliases-b "$al_dir/policies"
scenario al-link-adopted $probe read /tmp/alias/secret-link
# The attempt made with no agent is handed over in the pinned ring buffer.
wait_count "$alerts" '"PolicyName":"hsp-aliases"' 2
stop_agent
# Enforcement outlives the agent (pinned): unload it to read what is on disk.
/usr/local/bin/edgearmor unload --config /etc/edgearmor/failclosed/agent.toml 2>&1 |
    while read -r line; do echo "EA-UNLOAD $line"; done
echo "EA-ALIAS-CONTENT secret=$(cat /etc/alias-secret) g=$(cat /etc/alias-ro/sub/g) h=$(cat /etc/alias-ro/sub/h)"
umount /mnt/alias-ro
rm -rf /tmp/alias /etc/alias-secret /etc/alias-ro /mnt/alias-ro
