//! edgearmor's alert paths against serde_json, in one run, on the same alerts.
//!
//! `cargo bench -p edgearmor --bench vs_json` (about 15 s; `taskset -c 1 ...` pins it to
//! one core; `BENCH_ROUND_MS` sets the time per measured round, default 250, and
//! `BENCH_ROUNDS` the number of rounds, default 7).
//!
//! The alerts: a repeating mix of three realistic ones, each with its policy's name,
//! severity, tags and message:
//!
//! - `setgid`: `/usr/sbin/sshd` calling `setgid(0)`, blocked (KubeArmorHostPolicy
//!   `syscalls` rule);
//! - `exec`: `/usr/bin/bash` running `/usr/bin/apt-get install -y curl`, blocked;
//! - `file`: `/usr/bin/cat` reading `/etc/shadow`, audited.
//!
//! Paths measured (throughput on one thread, alerts per second; the median of
//! `BENCH_ROUNDS` rounds, the paths interleaved round by round so that a noisy
//! machine slows all of them alike):
//!
//! - **encode + batch** (the agent's hot path to MQTT): each alert a wire `Event` whose
//!   time and pid are set in place (the same work the serde_json baseline does to its
//!   prepared struct), pushed through [`Batcher`], which encodes it into the batch at
//!   once; each 32-event batch's payload copied into a fresh vector, as the MQTT sink
//!   does. **build + encode + batch** builds an owned `Event` per alert first (against
//!   serde_json building an owned alert).
//! - **serde_json encode** (baseline): each alert as KubeArmor's host-alert JSON object,
//!   serialised with serde_json from a `#[derive(Serialize)]` struct mirroring
//!   KubeArmor's fields (omitempty as Go does), borrowing every string and with the
//!   `UpdatedTime` text, `ATags` and `EventData` prepared once: this baseline does
//!   nothing but serialise, the most favourable setting for serde_json. The bench
//!   checks that it writes the same bytes as `edgearmor_alert` for every alert kind.
//! - **decode** (the gateway-side decoder's core): 32-event postcard payloads back to
//!   KubeArmor JSON lines with `edgearmor_wire::decode` + `edgearmor_alert::expand`
//!   (the full decoder with MQTT topics and sequence tracking is
//!   `cargo bench -p edgearmor-decode`).
//! - **serde_json parse + re-serialise** (baseline): the same JSON lines parsed and
//!   written again, as `serde_json::Value` and as the typed struct (owned strings, the
//!   way a Go or Rust consumer unmarshals them).
//!
//! Bytes per alert: a whole encoded payload (version byte, agent id, sequence numbers,
//! 32 events) divided by 32, against the JSON object (without its newline).
//!
//! Prints a human summary, every target with its gap when missed, and one JSON line of
//! figures. Asserts nothing about the targets: a missed target is reported, not fatal.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use edgearmor::events::pipeline::{BatchPolicy, BatchSink, Batcher};
use edgearmor_alert::expand::{ExpandOptions, PolicyLookup, expand_event, expand_event_into};
use edgearmor_alert::{AlertType, HostAlert};
use edgearmor_wire::{
    Action, AgentId, Alert, Data, EncodedBatch, Event, EventBody, LsmHook, MAX_BATCH_EVENTS,
    Message, Operation, Outcome, PolicyMeta, PolicyRef, SetIdSyscall, Source,
};
use serde::{Deserialize, Serialize};

/// Targets of issue #8.
const TARGET_BYTES_RATIO: f64 = 0.25;
const TARGET_ENCODE_VS_JSON: f64 = 10.0;
const TARGET_ENCODE_RATE: f64 = 1_000_000.0;
const TARGET_DECODE_RATE: f64 = 500_000.0;

/// Alerts per unit of work between two clock reads (100 batches).
const CHUNK: u64 = 100 * MAX_BATCH_EVENTS as u64;

const KINDS: [&str; 3] = ["setgid", "exec", "file"];

fn s<const N: usize>(v: &str) -> heapless::String<N> {
    heapless::String::try_from(v).expect("bench strings fit their bounds")
}

fn agent() -> AgentId {
    AgentId {
        cluster: s("factory-eu-1"),
        node: s("gw-0042"),
        boot_id: [7; 16],
    }
}

fn policies() -> [PolicyMeta; 3] {
    [
        PolicyMeta {
            name: s("hsp-block-sshd-setid"),
            severity: 8,
            tags: s("NIST,NIST_800-53_AC-6,MITRE,MITRE_T1548_abuse_elevation_control_mechanism"),
            message: s("sshd may not change its user or group ids"),
        },
        PolicyMeta {
            name: s("block-package-managers"),
            severity: 5,
            tags: s(
                "NIST,NIST_800-53_CM-7(4),NIST_800-53_CM-11,MITRE,MITRE_T1072_software_deployment_tools",
            ),
            message: s("package management is not allowed on this gateway"),
        },
        PolicyMeta {
            name: s("audit-shadow-reads"),
            severity: 4,
            tags: s("NIST,NIST_800-53_AU-2,MITRE,MITRE_T1003.008_etc_passwd_and_etc_shadow"),
            message: s("every read of the shadow file is recorded"),
        },
    ]
}

/// The three alert kinds, in [`KINDS`] order.
fn templates() -> [Event; 3] {
    let time_us = 1_795_932_048_204_372;
    [
        Event {
            time_us,
            body: EventBody::Alert(Alert {
                pid: 1_791_316,
                ppid: 1_791_315,
                uid: 204,
                process: s("/usr/sbin/sshd"),
                parent_process: s("/usr/sbin/sshd"),
                source: Source::Process,
                policy: PolicyRef::Id(0),
                operation: Operation::Syscall,
                resource: s(""),
                data: Data::SetId {
                    syscall: SetIdSyscall::Setgid,
                    id: 0,
                },
                action: Action::Block,
                result: Outcome::OperationNotPermitted,
                cwd: s("/"),
            }),
        },
        Event {
            time_us,
            body: EventBody::Alert(Alert {
                pid: 24_518,
                ppid: 24_390,
                uid: 1000,
                process: s("/usr/bin/apt-get"),
                parent_process: s("/usr/bin/bash"),
                source: Source::ParentProcess,
                policy: PolicyRef::Id(1),
                operation: Operation::Process,
                resource: s("/usr/bin/apt-get install -y curl"),
                data: Data::Lsm(LsmHook::BprmCheckSecurity),
                action: Action::Block,
                result: Outcome::PermissionDenied,
                cwd: s("/home/admin"),
            }),
        },
        Event {
            time_us,
            body: EventBody::Alert(Alert {
                pid: 31_877,
                ppid: 24_390,
                uid: 0,
                process: s("/usr/bin/cat"),
                parent_process: s("/usr/bin/bash"),
                source: Source::Process,
                policy: PolicyRef::Id(2),
                operation: Operation::File,
                resource: s("/etc/shadow"),
                data: Data::Lsm(LsmHook::FileOpen),
                action: Action::Audit,
                result: Outcome::Passed,
                cwd: s("/root"),
            }),
        },
    ]
}

/// What varies from alert to alert: time and pid.
fn vary(i: u64) -> (u64, u32) {
    (37 * i, (i % 4096) as u32)
}

/// Makes `live` (a copy of the templates) hold alert number `i` of the stream, in
/// place: what the serde_json baseline does to its prepared struct (time and pid).
fn vary_in_place<'a>(live: &'a mut [Event; 3], templates: &[Event; 3], i: u64) -> &'a Event {
    let k = (i % 3) as usize;
    let (dt, dpid) = vary(i);
    let e = &mut live[k];
    e.time_us = templates[k].time_us + dt;
    if let (EventBody::Alert(a), EventBody::Alert(t)) = (&mut e.body, &templates[k].body) {
        a.pid = t.pid + dpid;
    }
    e
}

/// Alert number `i` of the stream (kinds in turn), as the agent builds it.
fn event(templates: &[Event; 3], i: u64) -> Event {
    let mut e = templates[(i % 3) as usize].clone();
    let (dt, dpid) = vary(i);
    e.time_us += dt;
    if let EventBody::Alert(a) = &mut e.body {
        a.pid += dpid;
    }
    e
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

/// KubeArmor's host alert as a serde struct, borrowing everything: the baseline encoder.
/// Field order and omitempty as KubeArmor's Go `json.Marshal` writes them.
#[derive(Clone, Copy, Serialize)]
struct KubeArmorAlertRef<'a> {
    #[serde(rename = "Timestamp", skip_serializing_if = "is_zero_i64")]
    timestamp: i64,
    #[serde(rename = "UpdatedTime", skip_serializing_if = "str::is_empty")]
    updated_time: &'a str,
    #[serde(rename = "ClusterName", skip_serializing_if = "str::is_empty")]
    cluster_name: &'a str,
    #[serde(rename = "HostName", skip_serializing_if = "str::is_empty")]
    host_name: &'a str,
    #[serde(rename = "HostPPID", skip_serializing_if = "is_zero_i32")]
    host_ppid: i32,
    #[serde(rename = "HostPID", skip_serializing_if = "is_zero_i32")]
    host_pid: i32,
    #[serde(rename = "PPID")]
    ppid: i32,
    #[serde(rename = "PID", skip_serializing_if = "is_zero_i32")]
    pid: i32,
    #[serde(rename = "UID")]
    uid: i32,
    #[serde(rename = "ParentProcessName", skip_serializing_if = "str::is_empty")]
    parent_process_name: &'a str,
    #[serde(rename = "ProcessName", skip_serializing_if = "str::is_empty")]
    process_name: &'a str,
    #[serde(rename = "PolicyName", skip_serializing_if = "str::is_empty")]
    policy_name: &'a str,
    #[serde(rename = "Severity", skip_serializing_if = "str::is_empty")]
    severity: &'a str,
    #[serde(rename = "Tags", skip_serializing_if = "str::is_empty")]
    tags: &'a str,
    #[serde(rename = "ATags", skip_serializing_if = "<[_]>::is_empty")]
    atags: &'a [&'a str],
    #[serde(rename = "Message", skip_serializing_if = "str::is_empty")]
    message: &'a str,
    #[serde(rename = "Type", skip_serializing_if = "str::is_empty")]
    alert_type: &'a str,
    #[serde(rename = "Source", skip_serializing_if = "str::is_empty")]
    source: &'a str,
    #[serde(rename = "Operation", skip_serializing_if = "str::is_empty")]
    operation: &'a str,
    #[serde(rename = "Resource", skip_serializing_if = "str::is_empty")]
    resource: &'a str,
    #[serde(rename = "Data", skip_serializing_if = "str::is_empty")]
    data: &'a str,
    #[serde(rename = "EventData", skip_serializing_if = "BTreeMap::is_empty")]
    event_data: &'a BTreeMap<String, String>,
    #[serde(rename = "Enforcer", skip_serializing_if = "str::is_empty")]
    enforcer: &'a str,
    #[serde(rename = "Action", skip_serializing_if = "str::is_empty")]
    action: &'a str,
    #[serde(rename = "Result", skip_serializing_if = "str::is_empty")]
    result: &'a str,
    #[serde(rename = "Cwd", skip_serializing_if = "str::is_empty")]
    cwd: &'a str,
    #[serde(rename = "TTY", skip_serializing_if = "str::is_empty")]
    tty: &'a str,
    #[serde(rename = "MaxAlertsPerSec", skip_serializing_if = "is_zero_i32")]
    max_alerts_per_sec: i32,
    #[serde(rename = "DroppingAlertsInterval", skip_serializing_if = "is_zero_i32")]
    dropping_alerts_interval: i32,
    #[serde(rename = "NodeID", skip_serializing_if = "str::is_empty")]
    node_id: &'a str,
    #[serde(rename = "UserName", skip_serializing_if = "str::is_empty")]
    user_name: &'a str,
}

/// The same alert with owned fields, as a consumer unmarshals a JSON line.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KubeArmorAlert {
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    timestamp: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    updated_time: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    cluster_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    host_name: String,
    #[serde(rename = "HostPPID", default, skip_serializing_if = "is_zero_i32")]
    host_ppid: i32,
    #[serde(rename = "HostPID", default, skip_serializing_if = "is_zero_i32")]
    host_pid: i32,
    #[serde(rename = "PPID", default)]
    ppid: i32,
    #[serde(rename = "PID", default, skip_serializing_if = "is_zero_i32")]
    pid: i32,
    #[serde(rename = "UID", default)]
    uid: i32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    parent_process_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    process_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    policy_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    severity: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    tags: String,
    #[serde(rename = "ATags", default, skip_serializing_if = "Vec::is_empty")]
    atags: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    message: String,
    #[serde(rename = "Type", default, skip_serializing_if = "String::is_empty")]
    alert_type: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    source: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    operation: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    resource: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    data: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    event_data: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    enforcer: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    action: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    result: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    cwd: String,
    #[serde(rename = "TTY", default, skip_serializing_if = "String::is_empty")]
    tty: String,
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    max_alerts_per_sec: i32,
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    dropping_alerts_interval: i32,
    #[serde(rename = "NodeID", default, skip_serializing_if = "String::is_empty")]
    node_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    user_name: String,
}

/// What the baseline encoder borrows from, per alert kind: the KubeArmor alert's
/// strings, prepared once.
struct JsonTemplate {
    alert: HostAlert,
    updated_time: String,
    atags: Vec<&'static str>,
    event_data: BTreeMap<String, String>,
}

impl JsonTemplate {
    fn new(alert: HostAlert) -> Self {
        let mut updated_time = String::new();
        alert.time.write_updated_time(&mut updated_time);
        // Leaked once per kind so that `atags` can be a plain `&[&str]`.
        let tags: &'static str = Box::leak(alert.tags.clone().into_boxed_str());
        let atags = if tags.is_empty() {
            Vec::new()
        } else {
            tags.split(',').collect()
        };
        let event_data = alert
            .data
            .split_whitespace()
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| {
                let mut key = k[..1].to_uppercase();
                key.push_str(&k[1..]);
                (key, v.to_owned())
            })
            .collect();
        Self {
            alert,
            updated_time,
            atags,
            event_data,
        }
    }

    fn as_ref(&self) -> KubeArmorAlertRef<'_> {
        let a = &self.alert;
        KubeArmorAlertRef {
            timestamp: a.time.unix_secs,
            updated_time: &self.updated_time,
            cluster_name: &a.cluster_name,
            host_name: &a.host_name,
            host_ppid: a.host_ppid,
            host_pid: a.host_pid,
            ppid: a.ppid,
            pid: a.pid,
            uid: a.uid,
            parent_process_name: &a.parent_process_name,
            process_name: &a.process_name,
            policy_name: &a.policy_name,
            severity: &a.severity,
            tags: &a.tags,
            atags: &self.atags,
            message: &a.message,
            alert_type: a.alert_type.as_str(),
            source: &a.source,
            operation: &a.operation,
            resource: &a.resource,
            data: &a.data,
            event_data: &self.event_data,
            enforcer: &a.enforcer,
            action: &a.action,
            result: &a.result,
            cwd: &a.cwd,
            tty: &a.tty,
            max_alerts_per_sec: a.max_alerts_per_sec,
            dropping_alerts_interval: a.dropping_alerts_interval,
            node_id: &a.node_id,
            user_name: &a.user_name,
        }
    }
}

/// The owned KubeArmor alert of stream alert `i`, built the way an agent that holds its
/// alerts as KubeArmor structs does: every string copied, `UpdatedTime` formatted,
/// `ATags` split, `EventData` parsed into a map.
fn owned_alert(t: &HostAlert, i: u64) -> KubeArmorAlert {
    let (dt, dpid) = vary(i);
    let mut time = t.time;
    time.micros += (dt % 1_000_000) as u32;
    if time.micros >= 1_000_000 {
        time.micros -= 1_000_000;
        time.unix_secs += 1;
    }
    time.unix_secs += (dt / 1_000_000) as i64;
    let mut updated_time = String::with_capacity(27);
    time.write_updated_time(&mut updated_time);
    KubeArmorAlert {
        timestamp: time.unix_secs,
        updated_time,
        cluster_name: t.cluster_name.clone(),
        host_name: t.host_name.clone(),
        host_ppid: t.host_ppid,
        host_pid: t.host_pid + dpid as i32,
        ppid: t.ppid,
        pid: t.pid + dpid as i32,
        uid: t.uid,
        parent_process_name: t.parent_process_name.clone(),
        process_name: t.process_name.clone(),
        policy_name: t.policy_name.clone(),
        severity: t.severity.clone(),
        tags: t.tags.clone(),
        atags: if t.tags.is_empty() {
            Vec::new()
        } else {
            t.tags.split(',').map(str::to_owned).collect()
        },
        message: t.message.clone(),
        alert_type: t.alert_type.as_str().to_owned(),
        source: t.source.clone(),
        operation: t.operation.clone(),
        resource: t.resource.clone(),
        data: t.data.clone(),
        event_data: t
            .data
            .split_whitespace()
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| {
                let mut key = k[..1].to_uppercase();
                key.push_str(&k[1..]);
                (key, v.to_owned())
            })
            .collect(),
        enforcer: t.enforcer.clone(),
        action: t.action.clone(),
        result: t.result.clone(),
        cwd: t.cwd.clone(),
        tty: t.tty.clone(),
        max_alerts_per_sec: t.max_alerts_per_sec,
        dropping_alerts_interval: t.dropping_alerts_interval,
        node_id: t.node_id.clone(),
        user_name: t.user_name.clone(),
    }
}

/// Takes each batch as the MQTT sink does: the batcher encoded it, the sink copies the
/// payload into a fresh vector (what the offline buffer keeps until the broker acks).
struct EncodingSink {
    bytes: u64,
    events: u64,
    keep: Option<Vec<Vec<u8>>>,
}

impl EncodingSink {
    fn new() -> Self {
        Self {
            bytes: 0,
            events: 0,
            keep: None,
        }
    }
}

impl BatchSink for EncodingSink {
    fn deliver(&mut self, batch: &EncodedBatch<'_>) {
        let payload = batch.payload.to_vec();
        self.bytes += payload.len() as u64;
        self.events += batch.len as u64;
        match self.keep.as_mut() {
            Some(keep) => keep.push(payload),
            None => drop(black_box(payload)),
        }
    }
}

fn batch_policy() -> BatchPolicy {
    BatchPolicy {
        flush_interval: Duration::from_secs(3600),
        max_alerts_per_sec: 0,
        ..BatchPolicy::default()
    }
}

/// Payloads of `alerts` alerts (in 32-event batches) made by `make(i)`.
fn encode_all(alerts: u64, make: impl Fn(u64) -> Event) -> (Vec<Vec<u8>>, u64) {
    let mut sink = EncodingSink::new();
    sink.keep = Some(Vec::new());
    let mut batcher = Batcher::new(agent(), 1, batch_policy());
    let now = Instant::now();
    for i in 0..alerts {
        batcher.push(&make(i), now, &mut sink);
    }
    batcher.flush(&mut sink);
    (sink.keep.unwrap_or_default(), sink.bytes)
}

/// Appends to a buffer recycled every MiB: a buffered writer's work without syscalls.
fn append(out: &mut Vec<u8>, bytes: &[u8]) {
    if out.len() + bytes.len() > out.capacity() {
        black_box(&out);
        out.clear();
    }
    out.extend_from_slice(bytes);
}

/// Decodes payloads into JSON lines the way the decoder does.
struct LineDecoder {
    lookup: PolicyLookup,
    alert: HostAlert,
    line: String,
}

impl LineDecoder {
    fn decode(&mut self, payload: &[u8], mut each: impl FnMut(&str)) -> u64 {
        let Ok(Message::Batch(batch)) = edgearmor_wire::decode(payload) else {
            panic!("not a batch");
        };
        for event in &batch.events {
            expand_event_into(
                &batch.agent,
                event,
                Some(&self.lookup),
                ExpandOptions::default(),
                &mut self.alert,
            );
            self.line.clear();
            self.alert.write_json(&mut self.line);
            self.line.push('\n');
            each(&self.line);
        }
        batch.events.len() as u64
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One measured path: a unit of work returning the alerts it handled.
struct Path<'a> {
    name: &'static str,
    work: Box<dyn FnMut() -> u64 + 'a>,
    rates: Vec<f64>,
}

impl Path<'_> {
    fn round(&mut self, budget: Duration) {
        let start = Instant::now();
        let mut alerts = 0;
        while start.elapsed() < budget {
            alerts += (self.work)();
        }
        self.rates
            .push(alerts as f64 / start.elapsed().as_secs_f64());
    }
}

/// `met`, or the gap to the target when missed (higher is better).
fn verdict_at_least(value: f64, target: f64, unit: &str) -> String {
    if value >= target {
        format!("met ({:.2}x the target)", value / target)
    } else {
        format!(
            "MISSED: gap {:.2}{unit} ({:.1}% short; needs {:.2}x faster)",
            target - value,
            100.0 * (target - value) / target,
            target / value
        )
    }
}

fn main() {
    let round_ms = env_u64("BENCH_ROUND_MS", 250);
    let rounds = env_u64("BENCH_ROUNDS", 7).max(1);
    let budget = Duration::from_millis(round_ms);
    let agent = agent();
    let metas = policies();
    let lookup = PolicyLookup::from_policies(1, metas.iter()).expect("three policies");
    let templates = templates();

    // The baseline's prepared alerts, checked byte for byte against edgearmor's JSON.
    let json_templates: Vec<JsonTemplate> = templates
        .iter()
        .map(|e| JsonTemplate::new(expand_event(&agent, e, Some(&lookup))))
        .collect();
    let mut json_len = [0usize; 3];
    for (k, t) in json_templates.iter().enumerate() {
        let ours = t.alert.to_json();
        let theirs = serde_json::to_string(&t.as_ref()).expect("serialisable");
        assert_eq!(
            ours, theirs,
            "{} alert: serde_json baseline differs from edgearmor's JSON",
            KINDS[k]
        );
        let typed: KubeArmorAlert = serde_json::from_str(&ours).expect("typed parse");
        assert_eq!(
            serde_json::to_string(&typed).expect("serialisable"),
            ours,
            "{} alert: typed round trip changed the line",
            KINDS[k]
        );
        json_len[k] = ours.len();
    }

    for i in 0..6 {
        let ours = expand_event(&agent, &event(&templates, i), Some(&lookup)).to_json();
        let built = owned_alert(&json_templates[(i % 3) as usize].alert, i);
        assert_eq!(
            serde_json::to_string(&built).expect("serialisable"),
            ours,
            "alert {i}: owned serde_json baseline differs from edgearmor's JSON"
        );
    }

    // Bytes per alert, per kind and for the mix.
    let batches = 1000u64;
    let alerts = batches * MAX_BATCH_EVENTS as u64;
    let mut postcard_per_alert = [0f64; 3];
    for (k, per_alert) in postcard_per_alert.iter_mut().enumerate() {
        let (_, bytes) = encode_all(alerts, |i| event(&templates, 3 * i + k as u64));
        *per_alert = bytes as f64 / alerts as f64;
    }
    let (payloads, mix_bytes) = encode_all(alerts, |i| event(&templates, i));
    let mix_postcard = mix_bytes as f64 / alerts as f64;
    let mix_json = json_len.iter().sum::<usize>() as f64 / 3.0;
    let (_, single_bytes) = {
        let mut sink = EncodingSink::new();
        let mut batcher = Batcher::new(agent.clone(), 1, batch_policy());
        batcher.push(&event(&templates, 0), Instant::now(), &mut sink);
        batcher.flush(&mut sink);
        ((), sink.bytes)
    };

    // The decoder's JSON lines of the mix: the baseline parses exactly these.
    let mut decoder = LineDecoder {
        lookup: lookup.clone(),
        alert: HostAlert::new(AlertType::MatchedHostPolicy),
        line: String::with_capacity(1024),
    };
    let mut lines = Vec::new();
    for p in &payloads {
        decoder.decode(p, |l| lines.push(l.trim_end().to_owned()));
    }
    assert_eq!(lines.len() as u64, alerts, "every alert decoded");
    for (i, line) in lines.iter().enumerate().take(3) {
        let expected = expand_event(&agent, &event(&templates, i as u64), Some(&lookup));
        assert_eq!(line, &expected.to_json(), "decoded line {i}");
    }

    // The measured paths.
    let now = Instant::now();
    let mut encode_batcher = Batcher::new(agent.clone(), 1, batch_policy());
    let mut encode_sink = EncodingSink::new();
    let mut encode_i = 0u64;
    let mut live = templates.clone();
    let mut built_batcher = Batcher::new(agent.clone(), 1, batch_policy());
    let mut built_sink = EncodingSink::new();
    let mut owned_i = 0u64;
    let mut json_out = Vec::with_capacity(1 << 20);
    let mut json_i = 0u64;
    let mut built_out = Vec::with_capacity(1 << 20);
    let mut built_i = 0u64;
    let mut build_i = 0u64;
    let built_batch = match edgearmor_wire::decode(&payloads[0]) {
        Ok(m) => m,
        Err(e) => panic!("decode: {e}"),
    };
    let mut wire_buf = vec![0u8; Message::MAX_ENCODED_LEN];
    let mut decode_out = Vec::with_capacity(1 << 20);
    let mut decode_at = 0usize;
    let mut value_out = Vec::with_capacity(1 << 20);
    let mut value_at = 0usize;
    let mut typed_out = Vec::with_capacity(1 << 20);
    let mut typed_at = 0usize;
    let per_chunk_batches = (CHUNK / MAX_BATCH_EVENTS as u64) as usize;
    let mut paths = vec![
        Path {
            name: "edgearmor encode + batch (postcard, 32-event batches)",
            work: Box::new(|| {
                for _ in 0..CHUNK {
                    let e = vary_in_place(&mut live, &templates, encode_i);
                    encode_batcher.push(black_box(e), now, &mut encode_sink);
                    encode_i += 1;
                }
                CHUNK
            }),
            rates: Vec::new(),
        },
        Path {
            name: "edgearmor build + encode + batch (owned Event per alert)",
            work: Box::new(|| {
                for _ in 0..CHUNK {
                    let e = event(&templates, owned_i);
                    built_batcher.push(black_box(&e), now, &mut built_sink);
                    owned_i += 1;
                }
                CHUNK
            }),
            rates: Vec::new(),
        },
        Path {
            name: "serde_json encode (KubeArmor JSON, derive(Serialize))",
            work: Box::new(|| {
                for _ in 0..CHUNK {
                    let mut a = json_templates[(json_i % 3) as usize].as_ref();
                    let (dt, dpid) = vary(json_i);
                    a.timestamp += (dt / 1_000_000) as i64;
                    a.pid += dpid as i32;
                    a.host_pid += dpid as i32;
                    if json_out.len() + 2048 > json_out.capacity() {
                        black_box(&json_out);
                        json_out.clear();
                    }
                    serde_json::to_writer(&mut json_out, black_box(&a)).expect("serialise");
                    json_out.push(b'\n');
                    json_i += 1;
                }
                CHUNK
            }),
            rates: Vec::new(),
        },
        Path {
            name: "serde_json build + encode (owned alert struct per alert)",
            work: Box::new(|| {
                for _ in 0..CHUNK {
                    let t = &json_templates[(built_i % 3) as usize].alert;
                    let a = owned_alert(t, built_i);
                    if built_out.len() + 2048 > built_out.capacity() {
                        black_box(&built_out);
                        built_out.clear();
                    }
                    serde_json::to_writer(&mut built_out, black_box(&a)).expect("serialise");
                    built_out.push(b'\n');
                    built_i += 1;
                }
                CHUNK
            }),
            rates: Vec::new(),
        },
        Path {
            name: "  (part of encode + batch: building the wire Event)",
            work: Box::new(|| {
                for _ in 0..CHUNK {
                    black_box(event(&templates, build_i));
                    build_i += 1;
                }
                CHUNK
            }),
            rates: Vec::new(),
        },
        Path {
            name: "  (part of encode + batch: wire encode of a built batch)",
            work: Box::new(|| {
                for _ in 0..per_chunk_batches {
                    let encoded = edgearmor_wire::encode(black_box(&built_batch), &mut wire_buf)
                        .expect("encode");
                    black_box(encoded);
                }
                CHUNK
            }),
            rates: Vec::new(),
        },
        Path {
            name: "edgearmor decode (postcard batch -> KubeArmor JSON line)",
            work: Box::new(|| {
                let mut n = 0;
                for _ in 0..per_chunk_batches {
                    let p = &payloads[decode_at % payloads.len()];
                    decode_at += 1;
                    n += decoder.decode(black_box(p), |l| append(&mut decode_out, l.as_bytes()));
                }
                n
            }),
            rates: Vec::new(),
        },
        Path {
            name: "serde_json parse + re-serialise (Value)",
            work: Box::new(|| {
                for _ in 0..CHUNK {
                    let line = &lines[value_at % lines.len()];
                    value_at += 1;
                    let v: serde_json::Value =
                        serde_json::from_str(black_box(line)).expect("valid JSON");
                    if value_out.len() + 2048 > value_out.capacity() {
                        black_box(&value_out);
                        value_out.clear();
                    }
                    serde_json::to_writer(&mut value_out, &v).expect("serialise");
                    value_out.push(b'\n');
                }
                CHUNK
            }),
            rates: Vec::new(),
        },
        Path {
            name: "serde_json parse + re-serialise (typed struct)",
            work: Box::new(|| {
                for _ in 0..CHUNK {
                    let line = &lines[typed_at % lines.len()];
                    typed_at += 1;
                    let v: KubeArmorAlert =
                        serde_json::from_str(black_box(line)).expect("valid alert");
                    if typed_out.len() + 2048 > typed_out.capacity() {
                        black_box(&typed_out);
                        typed_out.clear();
                    }
                    serde_json::to_writer(&mut typed_out, &v).expect("serialise");
                    typed_out.push(b'\n');
                }
                CHUNK
            }),
            rates: Vec::new(),
        },
    ];
    // Warm-up, then interleaved rounds.
    for p in &mut paths {
        (p.work)();
    }
    for _ in 0..rounds {
        for p in &mut paths {
            p.round(budget);
        }
    }
    let rate: Vec<f64> = paths.iter().map(|p| median(&p.rates)).collect();
    let spread: Vec<(f64, f64)> = paths
        .iter()
        .map(|p| {
            let min = p.rates.iter().copied().fold(f64::INFINITY, f64::min);
            let max = p.rates.iter().copied().fold(0.0, f64::max);
            (min, max)
        })
        .collect();
    let names: Vec<&str> = paths.iter().map(|p| p.name).collect();
    drop(paths);
    let [
        encode,
        encode_built,
        json_encode,
        json_built,
        build,
        wire,
        decode,
        json_value,
        json_typed,
    ] = [0, 1, 2, 3, 4, 5, 6, 7, 8].map(|i| rate[i]);

    println!(
        "vs_json: 3 alert kinds ({}) in turn; median of {rounds} interleaved rounds of {round_ms} ms, one thread",
        KINDS.join(", ")
    );
    println!();
    println!("bytes per alert            KubeArmor JSON   postcard (32-batch)   ratio");
    for k in 0..3 {
        println!(
            "  {:<24} {:>10} B {:>17.1} B {:>9.1}%",
            KINDS[k],
            json_len[k],
            postcard_per_alert[k],
            100.0 * postcard_per_alert[k] / json_len[k] as f64
        );
    }
    println!(
        "  {:<24} {:>10.1} B {:>17.1} B {:>9.1}%",
        "mix",
        mix_json,
        mix_postcard,
        100.0 * mix_postcard / mix_json
    );
    println!("  (one alert alone in a batch, as at a trickle of alerts: {single_bytes} B payload)");
    println!();
    println!(
        "throughput (alerts/s, one core)                              median     min..max       ns/alert"
    );
    for (i, name) in names.iter().enumerate() {
        println!(
            "  {name:<58} {:>10.0}  {:>9.0}..{:<9.0} {:>7.0}",
            rate[i],
            spread[i].0,
            spread[i].1,
            1e9 / rate[i]
        );
    }
    println!(
        "  encode + batch: {:.0} ns/alert, of which postcard {:.0}; the events are encoded where they\n  \
         are (a wire Event is {} bytes in memory; the batcher holds only its encoding). Building an\n  \
         owned Event per alert costs {:.0} ns more",
        1e9 / encode,
        1e9 / wire,
        std::mem::size_of::<Event>(),
        1e9 / build
    );
    println!();
    println!("ratios (edgearmor / serde_json)");
    println!(
        "  encode + batch vs serde_json encode:                 {:.2}x",
        encode / json_encode
    );
    println!(
        "  build + encode + batch vs serde_json build + encode: {:.2}x",
        encode_built / json_built
    );
    println!(
        "  decode vs serde_json parse+serialise (Value):        {:.2}x",
        decode / json_value
    );
    println!(
        "  decode vs serde_json parse+serialise (typed struct): {:.2}x",
        decode / json_typed
    );
    println!(
        "  bytes: postcard / JSON (mix):                        {:.3}",
        mix_postcard / mix_json
    );
    println!();
    println!("targets");
    let bytes_ratio = mix_postcard / mix_json;
    let bytes_verdict = if bytes_ratio <= TARGET_BYTES_RATIO {
        format!(
            "met ({:.1}% of JSON; {:.1}x under the limit)",
            100.0 * bytes_ratio,
            TARGET_BYTES_RATIO / bytes_ratio
        )
    } else {
        format!(
            "MISSED: {:.1}% of JSON, gap {:.1} percentage points ({:.1} B/alert too many)",
            100.0 * bytes_ratio,
            100.0 * (bytes_ratio - TARGET_BYTES_RATIO),
            mix_postcard - TARGET_BYTES_RATIO * mix_json
        )
    };
    println!("  postcard bytes/alert <= 25% of JSON:      {bytes_verdict}");
    println!(
        "  encode+batch >= 10x serde_json:           {:.2}x: {}",
        encode / json_encode,
        verdict_at_least(encode / json_encode, TARGET_ENCODE_VS_JSON, "x")
    );
    println!(
        "  build+encode+batch >= 10x serde_json build+encode: {:.2}x: {}",
        encode_built / json_built,
        verdict_at_least(encode_built / json_built, TARGET_ENCODE_VS_JSON, "x")
    );
    println!(
        "  encode+batch >= 1,000,000 alerts/s:       {encode:.0}/s: {}",
        verdict_at_least(encode, TARGET_ENCODE_RATE, " alerts/s")
    );
    println!(
        "  decode >= 500,000 alerts/s:               {decode:.0}/s: {}",
        verdict_at_least(decode, TARGET_DECODE_RATE, " alerts/s")
    );
    println!(
        "{{\"bench\":\"vs_json\",\"json_bytes_per_alert\":{mix_json:.1},\"postcard_bytes_per_alert\":{mix_postcard:.1},\
         \"bytes_ratio\":{bytes_ratio:.4},\"encode_batch_per_sec\":{encode:.0},\"serde_json_encode_per_sec\":{json_encode:.0},\
         \"encode_ratio\":{:.3},\"build_encode_batch_per_sec\":{encode_built:.0},\"serde_json_build_encode_per_sec\":{json_built:.0},\"encode_ratio_vs_build\":{:.3},\"decode_per_sec\":{decode:.0},\"serde_json_value_roundtrip_per_sec\":{json_value:.0},\
         \"serde_json_typed_roundtrip_per_sec\":{json_typed:.0},\"decode_ratio_value\":{:.3},\"decode_ratio_typed\":{:.3}}}",
        encode / json_encode,
        encode_built / json_built,
        decode / json_value,
        decode / json_typed
    );
}
