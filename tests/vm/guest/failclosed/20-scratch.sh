# scratch: decisions that no preemption, path length or number of pattern prefixes
# changes (host side: tests/fail_closed/scratch.rs).
#
# 1. Race: 100,000 opens of a blocked file and 100,000 permitted reads (50,000 of a
#    read-only file, 50,000 of an audited one), three processes at once on the one
#    vCPU, so runs of the file hook preempt each other half-way. Alerts are counted
#    here per policy and per acting PID (150,000 would flood the console), then the
#    agent's alert file is emptied.
# 2. Patterns under five nested prefixes, plus unrelated ones; a sixth prefix.
# 3. Paths of ~300 and ~4,000 bytes (open and exec, blocked and permitted), and one
#    longer than PATH_MAX (reached with relative paths), denied as unresolvable.
sd=/etc/edgearmor/failclosed/scratch
w=/tmp/scratch
scratch_started=$(date +%s)
mkdir -p $w/bin $w/g/h /opt/scratch
for f in secret ro-a aud-b; do echo "$f" > $w/$f; done
for f in /top.p5 /tmp/t.p5 $w/t.p5 $w/g/t.p5 $w/g/h/t.p5 $w/g/h/t.p6 /opt/scratch/t.p5; do
    echo p > "$f"
done
cp $probe $w/bin/apt-get
cp $probe $w/bin/other

# Names of N bytes, for long paths.
name() { head -c "$2" /dev/zero | tr '\0' "$1"; }
d3=$w/p3/$(name a 220)/$(name b 60)
d4=$w/p4
i=0
while [ $i -lt 19 ]; do d4=$d4/$(name c 200); i=$((i + 1)); done
d4=$d4/$(name e 150)
mkdir -p "$d3" "$d4"
for d in "$d3" "$d4"; do
    echo x > "$d/bo"; echo x > "$d/ao"
    cp $probe "$d/bx"; cp $probe "$d/ax"
done
echo "EA-SCRATCH-LEN d3=${#d3} d4=${#d4}"
scenario scratch-deep-make sh -c "cd $w && $probe deep-make 25"

mkdir -p $w/policies
cp $sd/main/*.yaml $w/policies/
cat > $w/policies/long.yaml <<YAML
apiVersion: security.kubearmor.com/v1
kind: KubeArmorHostPolicy
metadata:
  name: scratch-long
spec:
  nodeSelector:
    matchLabels:
      kubearmor.io/hostname: "*"
  severity: 5
  message: "long paths are decided like short ones"
  process:
    matchPaths:
      - path: $d3/bx
      - path: $d4/bx
  file:
    matchPaths:
      - path: $d3/bo
      - path: $d4/bo
  action: Block
YAML

# Without enforcement there is nothing to race: say why, quickly (the host fails).
enforcing() {
    grep -q "ready: enforcing" "$agent_err" && return 0
    echo "EA-SCRATCH-NOT-ENFORCING $(grep 'edgearmor: ready' "$agent_err")"
    while read -r line; do echo "EA-SCRATCH-AGENTERR $line"; done < "$agent_err"
    stop_agent
    return 1
}

scratch_part() {
    # ---- 1. the race. The agent's rate limit (500 a second, then a pause of a second)
    # keeps the alert file small while sampling alerts over the whole run: what it holds
    # back is reported as a loss, so alerts + losses still add up to the decisions.
    start_agent scratch-race $sd/race --max-alerts-per-sec 500 --throttle-sec 1
    enforcing || return
    scenario scratch-race-start true
    $probe loop-open 100000 $w/secret > $w/race-secret.out &
    r1=$!
    $probe loop-open 50000 $w/ro-a > $w/race-ro-a.out &
    r2=$!
    $probe loop-open 50000 $w/aud-b > $w/race-aud-b.out &
    r3=$!
    wait $r1 $r2 $r3
    echo "EA-SCRATCH-TIME race_loops_done=$(( $(date +%s) - scratch_started ))"
    cat $w/race-secret.out $w/race-ro-a.out $w/race-aud-b.out
    pid_of() { sed -n 's/.* pid=\([0-9]*\).*/\1/p' "$1"; }
    denied_of() { sed -n 's/.* denied=\([0-9]*\).*/\1/p' "$1"; }
    # Every denial is an alert, and so is every read of the audited file.
    expected=$(( $(denied_of $w/race-secret.out) + $(denied_of $w/race-ro-a.out) + 50000 ))
    # Alerts still in flight: wait until every decision is an alert or a reported loss.
    lost() { sed -n 's/.*"Operation":"AlertLoss".*"Data":"dropped=\([0-9]*\).*/\1/p' "$alerts" | awk '{s+=$1} END {print s+0}'; }
    counted() { echo $(( $(grep -c '"Type":"MatchedHostPolicy"' "$alerts") + $(lost) )); }
    tries=0
    while [ "$(counted)" -lt "$expected" ] && [ $tries -lt 1200 ]; do sleep 0.1; tries=$((tries + 1)); done
    stop_agent
    echo "EA-SCRATCH-TIME race_drained=$(( $(date +%s) - scratch_started ))"
    count() { grep "\"PolicyName\":\"$1\"" "$alerts" | grep -c "$2"; }
    echo "EA-SCRATCH-RACE expected=$expected lost=$(lost)" \
        "secret_alerts=$(count scratch-block-secret '"PID"')" \
        "secret_alerts_by_blocker=$(count scratch-block-secret "\"PID\":$(pid_of $w/race-secret.out),")" \
        "audit_alerts=$(count scratch-audit-b '"PID"')" \
        "audit_alerts_by_reader=$(count scratch-audit-b "\"PID\":$(pid_of $w/race-aud-b.out),")" \
        "readonly_alerts=$(count scratch-readonly-a '"PID"')" \
        "alerts=$(grep -c '"Type":"MatchedHostPolicy"' "$alerts")"
    # Any alert not made by the process the policy is about, shown whole.
    { grep '"PolicyName":"scratch-block-secret"' "$alerts" | grep -v "\"PID\":$(pid_of $w/race-secret.out),"
      grep '"PolicyName":"scratch-audit-b"' "$alerts" | grep -v "\"PID\":$(pid_of $w/race-aud-b.out),"
      grep '"PolicyName":"scratch-readonly-a"' "$alerts"
    } | head -5 | while read -r line; do echo "EA-SCRATCH-ODD $line"; done
    : > "$alerts"

    # ---- 2. and 3.
    start_agent scratch $w/policies
    enforcing || return
    for f in /top.p5 /tmp/t.p5 $w/t.p5 $w/g/t.p5 $w/g/h/t.p5 $w/g/h/t.p6 /opt/scratch/t.p5; do
        scenario "scratch-pattern-read $f" $probe read "$f"
    done
    scenario scratch-pattern-exec-apt $probe exec $w/bin/apt-get
    scenario scratch-pattern-exec-other $probe exec $w/bin/other
    for n in 3 4; do
        eval d=\$d$n
        scenario scratch-long$n-open-blocked $probe read "$d/bo"
        scenario scratch-long$n-open-permitted $probe read "$d/ao"
        scenario scratch-long$n-exec-blocked $probe exec "$d/bx"
        scenario scratch-long$n-exec-permitted $probe exec "$d/ax"
    done
    scenario scratch-beyond-path-max sh -c "cd $w && $probe deep-open 25"
    wait_count "$alerts" '"PolicyName":"scratch-' 11
    stop_agent
}
scratch_part
echo "EA-SCRATCH-TIME seconds=$(( $(date +%s) - scratch_started ))"
