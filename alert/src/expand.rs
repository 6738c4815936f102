//! Wire events → KubeArmor host alerts: the one mapping the agent and the decoder share.
//!
//! The wire format ([`edgearmor_wire`]) carries only what a reader cannot reconstruct:
//! policy metadata travels as ids into a [`PolicyTable`], `Data` as enums, the node's
//! names once per batch. [`expand_event_into`] puts everything back into a
//! [`HostAlert`], whose [`HostAlert::write_json`] then prints the `karmor logs --json`
//! line. Keeping this in one function is what guarantees that an alert printed on the
//! gateway and the same alert decoded from MQTT are the same bytes.
//!
//! Policy metadata comes from a [`PolicyLookup`]: the agent builds one from its own
//! policies, the decoder assembles one from the retained [`PolicyTable`] parts.

use std::fmt::Write as _;

use edgearmor_wire::{
    Action, AgentId, Alert, AlertThreshold, Data, Event, EventBody, Loss, LossSource, Operation,
    PolicyMeta, PolicyRef, PolicyTable, Source,
};

use crate::{AlertType, EventTime, HostAlert};

/// `Enforcer` of every event the agent reports: its decisions come from BPF-LSM programs.
pub const ENFORCER: &str = "BPFLSM";
/// `Enforcer` of what was observed but not enforced (KubeArmor's name for it).
pub const ENFORCER_MONITOR: &str = "eBPF Monitor";
/// `PolicyName` of a decision taken by a resource class's default posture.
pub const DEFAULT_POSTURE: &str = "DefaultPosture";
/// `PolicyName` of every denial by locked mode's self-protection (a reserved name: a
/// policy file naming itself so is refused).
pub const SELF_PROTECTION: &str = "edgearmor-self-protection";
/// `Operation` of a `SystemEvent` reporting lost events.
pub const OPERATION_ALERT_LOSS: &str = "AlertLoss";
/// `Operation` of KubeArmor's rate-limit `SystemEvent`.
pub const OPERATION_ALERT_THRESHOLD: &str = "AlertThreshold";

/// Which optional keys an expanded alert carries.
///
/// Both default to on, as current KubeArmor prints them. The host-alert examples of the
/// schema reference come from older `karmor` releases that printed neither, so turning
/// both off reproduces those lines byte for byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpandOptions {
    /// Write `EventData` (see [`HostAlert::event_data`]).
    pub event_data: bool,
    /// Fill `NodeID` with the node name.
    pub node_id: bool,
}

impl Default for ExpandOptions {
    fn default() -> Self {
        Self {
            event_data: true,
            node_id: true,
        }
    }
}

/// One policy's metadata, pre-rendered as the alert fields it becomes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyInfo {
    pub name: String,
    /// `"1"`..`"10"`, or empty when the policy has no severity (then `Severity` is omitted).
    pub severity: String,
    /// Comma-separated, as KubeArmor's `Tags`.
    pub tags: String,
    pub message: String,
}

impl PolicyInfo {
    pub fn from_meta(meta: &PolicyMeta) -> Self {
        Self {
            name: meta.name.as_str().into(),
            // Rendered once here rather than per alert. Values over 10 are out of the
            // wire format's range but are printed as sent: the decoder reports what the
            // agent said, it does not second-guess it.
            severity: if meta.severity == 0 {
                String::new()
            } else {
                meta.severity.to_string()
            },
            tags: meta.tags.as_str().into(),
            message: meta.message.as_str().into(),
        }
    }
}

/// Why a [`PolicyTable`] part cannot be added to a [`PolicyLookup`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyTableError {
    /// The set announces more policies than a lookup holds.
    #[error(
        "policy set {policy_set:016x} announces {total} policies, more than the {max} a table may hold"
    )]
    TooManyPolicies {
        policy_set: u64,
        total: u32,
        max: u32,
    },
    /// The part belongs to another policy set than the lookup.
    #[error("policy table part of set {got:016x} offered to the table of set {expected:016x}")]
    WrongPolicySet { expected: u64, got: u64 },
    /// The part's `total` contradicts the lookup's (parts of one set must agree).
    #[error(
        "policy set {policy_set:016x}: a part says total={got}, an earlier part said total={expected}"
    )]
    TotalMismatch {
        policy_set: u64,
        expected: u32,
        got: u32,
    },
    /// The part's ids `first_id..first_id+count` do not fit in `0..total`.
    #[error(
        "policy set {policy_set:016x}: part with ids {first_id}..{first_id}+{count} exceeds total={total}"
    )]
    IdsOutOfRange {
        policy_set: u64,
        first_id: u32,
        count: usize,
        total: u32,
    },
}

/// Policy metadata of one policy set, by id.
///
/// Built whole by the agent ([`PolicyLookup::insert`]) or part by part by the decoder
/// ([`PolicyLookup::insert_part`]); ids not yet known resolve to nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyLookup {
    policy_set: u64,
    total: u32,
    /// Indexed by id; grows only up to `total`, which is capped by [`Self::MAX_POLICIES`],
    /// so a hostile `total` cannot make it allocate much.
    policies: Vec<Option<PolicyInfo>>,
    known: u32,
}

impl PolicyLookup {
    /// Policies one set may hold. Generous for a gateway; it bounds the decoder's memory.
    pub const MAX_POLICIES: u32 = 4096;

    pub fn new(policy_set: u64, total: u32) -> Result<Self, PolicyTableError> {
        if total > Self::MAX_POLICIES {
            return Err(PolicyTableError::TooManyPolicies {
                policy_set,
                total,
                max: Self::MAX_POLICIES,
            });
        }
        Ok(Self {
            policy_set,
            total,
            policies: Vec::new(),
            known: 0,
        })
    }

    /// A lookup holding exactly `policies`, with ids `0..`.
    pub fn from_policies<'a>(
        policy_set: u64,
        policies: impl IntoIterator<Item = &'a PolicyMeta>,
    ) -> Result<Self, PolicyTableError> {
        let infos: Vec<PolicyInfo> = policies.into_iter().map(PolicyInfo::from_meta).collect();
        let total = u32::try_from(infos.len()).unwrap_or(u32::MAX);
        let mut lookup = Self::new(policy_set, total)?;
        lookup.known = total;
        lookup.policies = infos.into_iter().map(Some).collect();
        Ok(lookup)
    }

    pub fn policy_set(&self) -> u64 {
        self.policy_set
    }

    pub fn total(&self) -> u32 {
        self.total
    }

    /// Whether every id `0..total` is known.
    pub fn is_complete(&self) -> bool {
        self.known == self.total
    }

    /// Sets the metadata of policy `id` (replacing what was there).
    pub fn insert(&mut self, id: u32, meta: &PolicyMeta) -> Result<(), PolicyTableError> {
        if id >= self.total {
            return Err(PolicyTableError::IdsOutOfRange {
                policy_set: self.policy_set,
                first_id: id,
                count: 1,
                total: self.total,
            });
        }
        let index = id as usize;
        if self.policies.len() <= index {
            self.policies.resize(index + 1, None);
        }
        if self.policies[index].is_none() {
            self.known += 1;
        }
        self.policies[index] = Some(PolicyInfo::from_meta(meta));
        Ok(())
    }

    /// Adds one part of the set. The whole part is checked before anything is stored,
    /// so a rejected part leaves the lookup as it was.
    pub fn insert_part(&mut self, part: &PolicyTable) -> Result<(), PolicyTableError> {
        if part.policy_set != self.policy_set {
            return Err(PolicyTableError::WrongPolicySet {
                expected: self.policy_set,
                got: part.policy_set,
            });
        }
        if part.total != self.total {
            return Err(PolicyTableError::TotalMismatch {
                policy_set: self.policy_set,
                expected: self.total,
                got: part.total,
            });
        }
        let count = part.policies.len();
        let end = u64::from(part.first_id) + count as u64;
        if end > u64::from(self.total) {
            return Err(PolicyTableError::IdsOutOfRange {
                policy_set: self.policy_set,
                first_id: part.first_id,
                count,
                total: self.total,
            });
        }
        for (offset, meta) in part.policies.iter().enumerate() {
            self.insert(part.first_id + offset as u32, meta)?;
        }
        Ok(())
    }

    pub fn get(&self, id: u32) -> Option<&PolicyInfo> {
        self.policies.get(id as usize).and_then(Option::as_ref)
    }

    /// Approximate heap bytes held, for the decoder's memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.policies.capacity() * std::mem::size_of::<Option<PolicyInfo>>()
            + self
                .policies
                .iter()
                .flatten()
                .map(|p| p.name.len() + p.severity.len() + p.tags.len() + p.message.len())
                .sum::<usize>()
    }
}

/// An alert referred to a policy id its [`PolicyLookup`] does not know (or there was no
/// lookup). The alert is still produced, with an empty `PolicyName`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownPolicy {
    pub id: u32,
}

/// The alert of `event`, with the default [`ExpandOptions`].
pub fn expand_event(agent: &AgentId, event: &Event, policies: Option<&PolicyLookup>) -> HostAlert {
    let mut alert = HostAlert::new(AlertType::MatchedHostPolicy);
    let _ = expand_event_into(agent, event, policies, ExpandOptions::default(), &mut alert);
    alert
}

/// Overwrites every field of `out` with the alert of `event`.
///
/// Taking `out` by reference lets a caller reuse one [`HostAlert`] (and its strings'
/// buffers) for a whole stream of events: the decoder's hot path allocates nothing per
/// event this way.
pub fn expand_event_into(
    agent: &AgentId,
    event: &Event,
    policies: Option<&PolicyLookup>,
    options: ExpandOptions,
    out: &mut HostAlert,
) -> Option<UnknownPolicy> {
    reset(out);
    out.time = EventTime::from_unix_micros(event.time_us);
    set_identity(out, agent.cluster.as_str(), agent.node.as_str(), options);
    match &event.body {
        EventBody::Alert(alert) => expand_alert(alert, policies, out),
        EventBody::MonitorAlert(alert) => {
            let unknown = expand_alert(alert, policies, out);
            set(&mut out.enforcer, ENFORCER_MONITOR);
            unknown
        }
        EventBody::Loss(loss) => {
            expand_loss(loss, out);
            None
        }
        EventBody::AlertThreshold(threshold) => {
            expand_threshold(threshold, out);
            None
        }
    }
}

/// `ClusterName`, `HostName` and (if enabled) `NodeID`, plus the `EventData` switch:
/// what every line about one node carries, including the decoder's own `SystemEvent`s.
pub fn set_identity(out: &mut HostAlert, cluster: &str, node: &str, options: ExpandOptions) {
    set(&mut out.cluster_name, cluster);
    set(&mut out.host_name, node);
    if options.node_id {
        set(&mut out.node_id, node);
    } else {
        out.node_id.clear();
    }
    out.event_data = options.event_data;
}

/// Every field back to its zero value, keeping the strings' buffers.
pub fn reset(out: &mut HostAlert) {
    let HostAlert {
        time,
        cluster_name,
        host_name,
        host_ppid,
        host_pid,
        ppid,
        pid,
        uid,
        parent_process_name,
        process_name,
        policy_name,
        severity,
        tags,
        message,
        alert_type,
        source,
        operation,
        resource,
        data,
        enforcer,
        action,
        result,
        cwd,
        tty,
        max_alerts_per_sec,
        dropping_alerts_interval,
        node_id,
        user_name,
        event_data,
    } = out;
    *time = EventTime::default();
    *alert_type = AlertType::MatchedHostPolicy;
    *event_data = true;
    for n in [host_ppid, host_pid, ppid, pid, uid] {
        *n = 0;
    }
    *max_alerts_per_sec = 0;
    *dropping_alerts_interval = 0;
    for s in [
        cluster_name,
        host_name,
        parent_process_name,
        process_name,
        policy_name,
        severity,
        tags,
        message,
        source,
        operation,
        resource,
        data,
        enforcer,
        action,
        result,
        cwd,
        tty,
        node_id,
        user_name,
    ] {
        s.clear();
    }
}

fn expand_alert(
    alert: &Alert,
    policies: Option<&PolicyLookup>,
    out: &mut HostAlert,
) -> Option<UnknownPolicy> {
    out.alert_type = AlertType::MatchedHostPolicy;
    // KubeArmor's protobuf fields are int32; pids and uids above i32::MAX do not occur
    // on Linux (pid_max <= 2^22, uids are reported as the kernel's u32 bit pattern).
    out.host_ppid = alert.ppid as i32;
    out.ppid = alert.ppid as i32;
    out.host_pid = alert.pid as i32;
    out.pid = alert.pid as i32;
    out.uid = alert.uid as i32;
    set(&mut out.parent_process_name, &alert.parent_process);
    set(&mut out.process_name, &alert.process);
    let unknown = match alert.policy {
        PolicyRef::DefaultPosture => {
            set(&mut out.policy_name, DEFAULT_POSTURE);
            None
        }
        PolicyRef::Id(id) => match policies.and_then(|p| p.get(id)) {
            Some(policy) => {
                set(&mut out.policy_name, &policy.name);
                set(&mut out.severity, &policy.severity);
                set(&mut out.tags, &policy.tags);
                set(&mut out.message, &policy.message);
                None
            }
            None => Some(UnknownPolicy { id }),
        },
    };
    set(
        &mut out.source,
        match &alert.source {
            Source::Process => &alert.process,
            Source::ParentProcess => &alert.parent_process,
            Source::Other(path) => path,
        },
    );
    set(&mut out.operation, operation_name(alert.operation));
    set(&mut out.resource, &alert.resource);
    match &alert.data {
        Data::SetId { syscall, id } => {
            let _ = write!(out.data, "syscall={} userid={id}", syscall.kubearmor_name());
        }
        Data::Lsm(hook) => {
            let _ = write!(out.data, "lsm={}", hook.kubearmor_name());
        }
        Data::Execve => out.data.push_str("syscall=SYS_EXECVE"),
        Data::MultiCall {
            hook,
            binary,
            killed,
        } => {
            let _ = write!(out.data, "lsm={} binary={binary}", hook.kubearmor_name());
            if *killed {
                out.data.push_str(" signal=SIGKILL");
            }
        }
    }
    set(&mut out.enforcer, ENFORCER);
    set(&mut out.action, action_name(alert.action));
    set(&mut out.result, alert.result.kubearmor_name());
    set(&mut out.cwd, &alert.cwd);
    unknown
}

fn expand_loss(loss: &Loss, out: &mut HostAlert) {
    out.alert_type = AlertType::SystemEvent;
    set(&mut out.operation, OPERATION_ALERT_LOSS);
    set(&mut out.resource, loss_source_name(loss.source));
    let _ = write!(out.data, "dropped={}", loss.count);
    if loss.first_seq != 0 || loss.last_seq != 0 {
        let _ = write!(
            out.data,
            " first_seq={} last_seq={}",
            loss.first_seq, loss.last_seq
        );
    }
    if loss.source == LossSource::Spool {
        // Delivered all the same unless the agent stops first: not persisted, not lost.
        write_count(
            &mut out.message,
            loss.count,
            "was not persisted",
            "were not persisted",
        );
    } else {
        write_lost_count(&mut out.message, loss.count);
    }
    out.message.push_str(loss_reason(loss.source));
    set(&mut out.enforcer, ENFORCER);
}

/// As KubeArmor prints it (its "Alert Throttling" documentation): the rate limit's
/// settings, `Result: Passed`, and no message.
fn expand_threshold(threshold: &AlertThreshold, out: &mut HostAlert) {
    out.alert_type = AlertType::SystemEvent;
    set(&mut out.operation, OPERATION_ALERT_THRESHOLD);
    set(&mut out.enforcer, ENFORCER);
    set(&mut out.result, "Passed");
    out.max_alerts_per_sec = saturating_i32(threshold.max_alerts_per_sec);
    out.dropping_alerts_interval = saturating_i32(threshold.dropping_alerts_interval);
}

/// `"N events were lost: "` (singular for one), the start of every loss message.
pub fn write_lost_count(out: &mut String, count: u64) {
    write_count(out, count, "was lost", "were lost");
}

/// `"1 event <one>: "` or `"N events <many>: "`.
fn write_count(out: &mut String, count: u64, one: &str, many: &str) {
    if count == 1 {
        let _ = write!(out, "1 event {one}: ");
    } else {
        let _ = write!(out, "{count} events {many}: ");
    }
}

/// `Resource` of a loss `SystemEvent`: where the events were lost.
pub fn loss_source_name(source: LossSource) -> &'static str {
    match source {
        LossSource::KernelRingBuffer => "kernel ring buffer",
        LossSource::Channel => "agent channel",
        LossSource::OfflineBuffer => "offline buffer",
        LossSource::Throttle => "alert throttle",
        LossSource::Spool => "spool",
    }
}

fn loss_reason(source: LossSource) -> &'static str {
    match source {
        LossSource::KernelRingBuffer => "the kernel ring buffer was full",
        LossSource::Channel => "the agent's event channel was full",
        LossSource::OfflineBuffer => {
            "the agent's offline buffer was full while the broker was unreachable, the oldest batches were dropped"
        }
        LossSource::Throttle => "the alert rate limit (max_alerts_per_sec) dropped them",
        LossSource::Spool => {
            "the spool could not persist them (disk full or not writable), they were kept in memory only and are lost if the agent stops before the broker acknowledges them"
        }
    }
}

pub fn operation_name(operation: Operation) -> &'static str {
    match operation {
        Operation::Process => "Process",
        Operation::File => "File",
        Operation::Network => "Network",
        Operation::Capabilities => "Capabilities",
        Operation::Syscall => "Syscall",
    }
}

pub fn action_name(action: Action) -> &'static str {
    match action {
        Action::Allow => "Allow",
        Action::Audit => "Audit",
        Action::Block => "Block",
    }
}

fn saturating_i32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

fn set(dst: &mut String, src: &str) {
    dst.clear();
    dst.push_str(src);
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgearmor_wire::{LsmHook, Outcome, SetIdSyscall};

    fn s<const N: usize>(v: &str) -> heapless::String<N> {
        heapless::String::try_from(v).expect("fits")
    }

    fn agent() -> AgentId {
        AgentId {
            cluster: s("default"),
            node: s("gw1"),
            boot_id: [7; 16],
        }
    }

    fn meta(name: &str, severity: u8, tags: &str, message: &str) -> PolicyMeta {
        PolicyMeta {
            name: s(name),
            severity,
            tags: s(tags),
            message: s(message),
        }
    }

    fn exec_alert(policy: PolicyRef) -> Event {
        Event {
            time_us: 1_717_259_989_360_067,
            body: EventBody::Alert(Alert {
                pid: 2420,
                ppid: 1582,
                uid: 1000,
                process: s("/usr/bin/sleep"),
                parent_process: s("/usr/bin/bash"),
                source: Source::ParentProcess,
                policy,
                operation: Operation::Process,
                resource: s("/usr/bin/sleep"),
                data: Data::Lsm(LsmHook::BprmCheckSecurity),
                action: Action::Block,
                result: Outcome::PermissionDenied,
                cwd: Default::default(),
            }),
        }
    }

    #[test]
    fn multi_call_data_names_the_binary_and_a_kill() {
        let mut event = exec_alert(PolicyRef::Id(0));
        let EventBody::Alert(alert) = &mut event.body else {
            unreachable!()
        };
        alert.resource = s("wget");
        alert.data = Data::MultiCall {
            hook: LsmHook::BprmCommittedCreds,
            binary: s("/bin/busybox"),
            killed: true,
        };
        let json = expand_event(&agent(), &event, None).to_json();
        assert!(
            json.contains(concat!(
                r#""Data":"lsm=SECURITY_BPRM_COMMITTED_CREDS binary=/bin/busybox signal=SIGKILL","#,
                r#""EventData":{"Binary":"/bin/busybox","Lsm":"SECURITY_BPRM_COMMITTED_CREDS","Signal":"SIGKILL"}"#
            )),
            "{json}"
        );
    }

    #[test]
    fn policy_ids_resolve_to_name_severity_tags_and_message() {
        let policies = PolicyLookup::from_policies(
            9,
            &[
                meta("p0", 0, "", ""),
                meta("hsp-block", 5, "NIST,MITRE", "no"),
            ],
        )
        .expect("fits");
        let json = expand_event(&agent(), &exec_alert(PolicyRef::Id(1)), Some(&policies)).to_json();
        assert_eq!(
            json,
            concat!(
                r#"{"Timestamp":1717259989,"UpdatedTime":"2024-06-01T16:39:49.360067Z","ClusterName":"default","HostName":"gw1","#,
                r#""HostPPID":1582,"HostPID":2420,"PPID":1582,"PID":2420,"UID":1000,"ParentProcessName":"/usr/bin/bash","#,
                r#""ProcessName":"/usr/bin/sleep","PolicyName":"hsp-block","Severity":"5","Tags":"NIST,MITRE","ATags":["NIST","MITRE"],"#,
                r#""Message":"no","Type":"MatchedHostPolicy","Source":"/usr/bin/bash","Operation":"Process","#,
                r#""Resource":"/usr/bin/sleep","Data":"lsm=SECURITY_BPRM_CHECK","EventData":{"Lsm":"SECURITY_BPRM_CHECK"},"#,
                r#""Enforcer":"BPFLSM","Action":"Block","Result":"Permission denied","NodeID":"gw1"}"#
            )
        );
        // Severity 0 means "unset": omitted, not "0".
        let json = expand_event(&agent(), &exec_alert(PolicyRef::Id(0)), Some(&policies)).to_json();
        assert!(json.contains(r#""PolicyName":"p0","Type""#), "{json}");
    }

    #[test]
    fn unknown_policy_id_leaves_the_name_empty_and_is_reported() {
        let mut out = HostAlert::new(AlertType::HostLog);
        let policies = PolicyLookup::new(1, 3).expect("fits");
        for lookup in [None, Some(&policies)] {
            let unknown = expand_event_into(
                &agent(),
                &exec_alert(PolicyRef::Id(2)),
                lookup,
                ExpandOptions::default(),
                &mut out,
            );
            assert_eq!(unknown, Some(UnknownPolicy { id: 2 }));
            assert!(out.policy_name.is_empty());
            assert_eq!(out.alert_type, AlertType::MatchedHostPolicy);
        }
    }

    #[test]
    fn default_posture_and_setid_data() {
        let event = Event {
            time_us: 5_000_001,
            body: EventBody::Alert(Alert {
                pid: 3,
                ppid: 2,
                uid: 0,
                process: s("/usr/sbin/sshd"),
                parent_process: s("/sbin/init"),
                source: Source::Other(s("/usr/sbin/sshd -D")),
                policy: PolicyRef::DefaultPosture,
                operation: Operation::Syscall,
                resource: s(""),
                data: Data::SetId {
                    syscall: SetIdSyscall::Setresuid,
                    id: 65534,
                },
                action: Action::Audit,
                result: Outcome::Passed,
                cwd: Default::default(),
            }),
        };
        let a = expand_event(&agent(), &event, None);
        assert_eq!(a.policy_name, "DefaultPosture");
        assert_eq!(a.source, "/usr/sbin/sshd -D");
        assert_eq!(a.data, "syscall=SYS_SETRESUID userid=65534");
        assert_eq!(a.action, "Audit");
        assert_eq!(a.result, "Passed");
        assert_eq!((a.time.unix_secs, a.time.micros), (5, 1));
    }

    #[test]
    fn losses_name_their_source_count_and_range() {
        let loss = |source, count, first_seq, last_seq| Event {
            time_us: 1_000_000,
            body: EventBody::Loss(Loss {
                source,
                count,
                first_seq,
                last_seq,
            }),
        };
        let a = expand_event(
            &agent(),
            &loss(LossSource::OfflineBuffer, 64, 101, 164),
            None,
        );
        assert_eq!(
            a.to_json(),
            concat!(
                r#"{"Timestamp":1,"UpdatedTime":"1970-01-01T00:00:01.000000Z","ClusterName":"default","HostName":"gw1","#,
                r#""PPID":0,"UID":0,"Message":"64 events were lost: the agent's offline buffer was full while the broker "#,
                r#"was unreachable, the oldest batches were dropped","Type":"SystemEvent","Operation":"AlertLoss","#,
                r#""Resource":"offline buffer","Data":"dropped=64 first_seq=101 last_seq=164","#,
                r#""EventData":{"Dropped":"64","First_seq":"101","Last_seq":"164"},"Enforcer":"BPFLSM","NodeID":"gw1"}"#
            )
        );
        let a = expand_event(&agent(), &loss(LossSource::KernelRingBuffer, 1, 0, 0), None);
        assert_eq!(a.data, "dropped=1");
        assert_eq!(a.resource, "kernel ring buffer");
        assert_eq!(
            a.message,
            "1 event was lost: the kernel ring buffer was full"
        );
        let a = expand_event(&agent(), &loss(LossSource::Spool, 32, 65, 96), None);
        assert_eq!(a.resource, "spool");
        assert_eq!(a.data, "dropped=32 first_seq=65 last_seq=96");
        assert!(
            a.message.starts_with(
                "32 events were not persisted: the spool could not persist them (disk full"
            ),
            "{}",
            a.message
        );
        for (source, name) in [
            (LossSource::Channel, "agent channel"),
            (LossSource::Throttle, "alert throttle"),
        ] {
            assert_eq!(
                expand_event(&agent(), &loss(source, 2, 0, 0), None).resource,
                name
            );
        }
    }

    #[test]
    fn alert_threshold_is_printed_as_kubearmor_documents_it() {
        let event = Event {
            time_us: 0,
            body: EventBody::AlertThreshold(AlertThreshold {
                max_alerts_per_sec: 2,
                dropping_alerts_interval: 30,
            }),
        };
        let mut a = expand_event(&agent(), &event, None);
        a.cluster_name.clear();
        a.host_name.clear();
        a.node_id.clear();
        assert_eq!(
            a.to_json(),
            r#"{"PPID":0,"UID":0,"Type":"SystemEvent","Operation":"AlertThreshold","Enforcer":"BPFLSM","Result":"Passed","MaxAlertsPerSec":2,"DroppingAlertsInterval":30}"#
        );
    }

    #[test]
    fn a_reused_alert_keeps_nothing_from_the_previous_event() {
        let policies = PolicyLookup::from_policies(1, &[meta("p", 3, "T", "m")]).expect("fits");
        let mut reused = HostAlert::new(AlertType::HostLog);
        let loss = Event {
            time_us: 9,
            body: EventBody::Loss(Loss {
                source: LossSource::Channel,
                count: 5,
                first_seq: 0,
                last_seq: 0,
            }),
        };
        for event in [exec_alert(PolicyRef::Id(0)), loss] {
            let _ = expand_event_into(
                &agent(),
                &event,
                Some(&policies),
                ExpandOptions::default(),
                &mut reused,
            );
            assert_eq!(reused, expand_event(&agent(), &event, Some(&policies)));
        }
    }

    #[test]
    fn options_drop_event_data_and_node_id() {
        let options = ExpandOptions {
            event_data: false,
            node_id: false,
        };
        let mut a = HostAlert::new(AlertType::MatchedHostPolicy);
        let _ = expand_event_into(
            &agent(),
            &exec_alert(PolicyRef::DefaultPosture),
            None,
            options,
            &mut a,
        );
        let json = a.to_json();
        assert!(
            !json.contains("EventData") && !json.contains("NodeID"),
            "{json}"
        );
        assert!(
            json.contains(r#""Data":"lsm=SECURITY_BPRM_CHECK""#),
            "{json}"
        );
    }

    #[test]
    fn policy_table_parts_assemble_and_bad_parts_change_nothing() {
        let part = |first_id, total, names: &[&str]| PolicyTable {
            agent: agent(),
            policy_set: 4,
            total,
            first_id,
            policies: names.iter().map(|n| meta(n, 1, "", "")).collect(),
        };
        let mut lookup = PolicyLookup::new(4, 3).expect("fits");
        lookup.insert_part(&part(0, 3, &["a", "b"])).expect("valid");
        assert!(!lookup.is_complete());
        assert_eq!(
            lookup.insert_part(&part(2, 3, &["c", "d"])),
            Err(PolicyTableError::IdsOutOfRange {
                policy_set: 4,
                first_id: 2,
                count: 2,
                total: 3
            })
        );
        assert!(lookup.get(2).is_none(), "a rejected part stores nothing");
        assert_eq!(
            lookup.insert_part(&part(2, 4, &["c"])),
            Err(PolicyTableError::TotalMismatch {
                policy_set: 4,
                expected: 3,
                got: 4
            })
        );
        lookup.insert_part(&part(2, 3, &["c"])).expect("valid");
        assert!(lookup.is_complete());
        assert_eq!(lookup.get(1).map(|p| p.name.as_str()), Some("b"));
        assert_eq!(lookup.get(1).map(|p| p.severity.as_str()), Some("1"));
        assert!(matches!(
            PolicyLookup::new(4, PolicyLookup::MAX_POLICIES + 1),
            Err(PolicyTableError::TooManyPolicies { .. })
        ));
    }
}
