//! Enrichment: kernel decisions become wire events. The event carries only what a
//! decoder cannot know (no cluster or host names, policy metadata by id); wall-clock
//! time comes from the kernel's boot-time stamp plus the offset measured at start.

use edgearmor_wire::{
    Action, Alert, Data, Event, EventBody, Operation, Outcome, PolicyRef, SetIdSyscall, Source,
};

use crate::events::{SetidDecision, SetidKind, SetidSyscall};

/// Copies `s` into a bounded wire string, cutting at a char boundary if it is longer
/// (kernel paths and validated rule metadata already fit their capacities).
pub fn bounded<const N: usize>(s: &str) -> heapless::String<N> {
    let mut out = heapless::String::new();
    for c in s.chars() {
        if out.push(c).is_err() {
            break;
        }
    }
    out
}

fn wire_syscall(d: &SetidDecision) -> SetIdSyscall {
    use SetidKind::*;
    use SetidSyscall::*;
    match (d.kind, d.syscall) {
        (Uid, Id) => SetIdSyscall::Setuid,
        (Uid, Re) => SetIdSyscall::Setreuid,
        (Uid, Res) => SetIdSyscall::Setresuid,
        (Uid, Fs) => SetIdSyscall::Setfsuid,
        (Gid, Id) => SetIdSyscall::Setgid,
        (Gid, Re) => SetIdSyscall::Setregid,
        (Gid, Res) => SetIdSyscall::Setresgid,
        (Gid, Fs) => SetIdSyscall::Setfsgid,
    }
}

/// The wire event for a setuid/setgid decision.
pub fn setid_event(d: &SetidDecision, boottime_to_unix_ns: i128) -> Event {
    let unix_ns = i128::from(d.boot_ns) + boottime_to_unix_ns;
    let (action, result) = if d.denied {
        (Action::Block, Outcome::OperationNotPermitted)
    } else {
        (Action::Audit, Outcome::Passed)
    };
    Event {
        time_us: (unix_ns / 1_000).max(0) as u64,
        body: EventBody::Alert(Alert {
            pid: d.tgid,
            ppid: d.ppid,
            uid: d.uid,
            process: bounded(&d.exe),
            parent_process: bounded(&d.parent_exe),
            source: Source::Process,
            policy: PolicyRef::Id(d.rule_id),
            operation: Operation::Syscall,
            resource: heapless::String::new(),
            data: Data::SetId {
                syscall: wire_syscall(d),
                id: d.requested_id,
            },
            action,
            result,
            // The setid hooks cannot resolve paths (not sleepable); exec events will.
            cwd: heapless::String::new(),
        }),
    }
}

/// The wire event for an exec of a watched executable seen in monitor-only mode:
/// reported with `Action: Audit`, since nothing could be enforced.
pub fn monitored_exec_event(
    r: &crate::events::ExecReport,
    executable: &str,
    parent: &str,
    rule_id: u32,
    boottime_to_unix_ns: i128,
) -> Event {
    let unix_ns = i128::from(r.boot_ns) + boottime_to_unix_ns;
    Event {
        time_us: (unix_ns / 1_000).max(0) as u64,
        body: EventBody::MonitorAlert(Alert {
            pid: r.tgid,
            ppid: r.ppid,
            uid: r.uid,
            process: bounded(executable),
            parent_process: bounded(parent),
            source: Source::ParentProcess,
            policy: PolicyRef::Id(rule_id),
            operation: Operation::Process,
            resource: bounded(executable),
            data: Data::Execve,
            action: Action::Audit,
            result: Outcome::Passed,
            cwd: heapless::String::new(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::tests::{bytes_of, raw_event};
    use edgearmor_probe_abi::{LSM_SETID_ID, LSM_SETID_RES, SETID_KIND_GID, SETID_KIND_UID};

    #[test]
    fn setgid_decision_becomes_a_blocking_syscall_alert() {
        let d =
            SetidDecision::try_from(bytes_of(&raw_event(SETID_KIND_GID, LSM_SETID_ID)).as_slice())
                .expect("valid");
        let e = setid_event(&d, 1_692_814_084_000_000_000);
        assert_eq!(e.time_us, 1_692_814_089_000_000);
        let EventBody::Alert(a) = e.body else {
            panic!("an alert")
        };
        assert_eq!((a.pid, a.ppid, a.uid), (42, 7, 0));
        assert_eq!(a.process.as_str(), "/usr/sbin/sshd");
        assert_eq!(a.parent_process.as_str(), "/bin/busybox");
        assert_eq!(
            a.data,
            Data::SetId {
                syscall: SetIdSyscall::Setgid,
                id: 0
            }
        );
        assert_eq!(
            (a.action, a.result),
            (Action::Block, Outcome::OperationNotPermitted)
        );
        assert_eq!(a.policy, PolicyRef::Id(0));
        let d =
            SetidDecision::try_from(bytes_of(&raw_event(SETID_KIND_UID, LSM_SETID_RES)).as_slice())
                .expect("valid");
        let EventBody::Alert(a) = setid_event(&d, 0).body else {
            panic!("an alert")
        };
        assert_eq!(
            a.data,
            Data::SetId {
                syscall: SetIdSyscall::Setresuid,
                id: 0
            }
        );
    }
}
