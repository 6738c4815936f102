//! Enrichment: kernel decisions become wire events. The event carries only what a
//! decoder cannot know (no cluster or host names, policy metadata by id); wall-clock
//! time comes from the kernel's boot-time stamp plus the offset in force when the
//! event happened (see [`crate::events::wall_time`]).

use edgearmor_wire::{
    Action, Alert, Data, Event, EventBody, LsmHook, Operation, Outcome, PolicyRef, Source,
};

use crate::events::decode::{DecidedBy, Decision, Subject};

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

/// KubeArmor's socket description, e.g. `domain=AF_INET type=SOCK_RAW protocol=1`.
pub fn socket_resource(family: u32, sock_type: u32, protocol: u32) -> String {
    let domain = match family {
        1 => "AF_UNIX".to_owned(),
        2 => "AF_INET".to_owned(),
        10 => "AF_INET6".to_owned(),
        16 => "AF_NETLINK".to_owned(),
        17 => "AF_PACKET".to_owned(),
        f => format!("{f}"),
    };
    let base = match sock_type & 0xf {
        1 => "SOCK_STREAM".to_owned(),
        2 => "SOCK_DGRAM".to_owned(),
        3 => "SOCK_RAW".to_owned(),
        4 => "SOCK_RDM".to_owned(),
        5 => "SOCK_SEQPACKET".to_owned(),
        6 => "SOCK_DCCP".to_owned(),
        10 => "SOCK_PACKET".to_owned(),
        t => format!("{t}"),
    };
    let mut kind = base;
    if sock_type & 0o4000 != 0 {
        kind.push_str("|SOCK_NONBLOCK");
    }
    if sock_type & 0o2000000 != 0 {
        kind.push_str("|SOCK_CLOEXEC");
    }
    format!("domain={domain} type={kind} protocol={protocol}")
}

/// The target path; for a decision on a path the kernel could not resolve, what
/// went wrong instead (the alert must say why it was denied).
fn target_or_reason(d: &Decision) -> String {
    match d.undecided {
        Some(u) if d.target.is_empty() => format!("({})", u.describe()),
        _ => d.target.clone(),
    }
}

/// Operation, resource, `Data` and the result a denial reports, by subject.
fn what_was_decided(d: &Decision) -> (Operation, edgearmor_wire::Path, Data, Outcome) {
    match &d.subject {
        Subject::Exec if !d.invoked.is_empty() => (
            Operation::Process,
            bounded(&d.invoked),
            Data::MultiCall {
                hook: if d.by_arguments {
                    LsmHook::BprmCommittedCreds
                } else {
                    LsmHook::BprmCheckSecurity
                },
                binary: bounded(&d.target),
                killed: d.by_arguments && d.denied,
            },
            Outcome::PermissionDenied,
        ),
        Subject::Exec => (
            Operation::Process,
            bounded(&target_or_reason(d)),
            Data::Lsm(LsmHook::BprmCheckSecurity),
            Outcome::PermissionDenied,
        ),
        Subject::MappedExec { hook } => (
            Operation::Process,
            bounded(&target_or_reason(d)),
            Data::Lsm(*hook),
            Outcome::PermissionDenied,
        ),
        Subject::File { hook, .. } => (
            Operation::File,
            bounded(&target_or_reason(d)),
            Data::Lsm(*hook),
            Outcome::PermissionDenied,
        ),
        Subject::Socket {
            family,
            sock_type,
            protocol,
        } => (
            Operation::Network,
            bounded(&socket_resource(*family, *sock_type, *protocol)),
            Data::Lsm(LsmHook::SocketCreate),
            Outcome::PermissionDenied,
        ),
        Subject::Capability { cap } => (
            Operation::Capabilities,
            bounded(
                &u8::try_from(*cap)
                    .ok()
                    .and_then(edgearmor_policy::Capability::from_number)
                    .map(|c| c.kernel_name())
                    .unwrap_or_else(|| format!("CAP_{cap}")),
            ),
            Data::Lsm(LsmHook::Capable),
            Outcome::OperationNotPermitted,
        ),
        Subject::Tamper { kind, arg, target } => {
            let (operation, resource, hook) = crate::events::tamper::describe(*kind, *arg, *target);
            (
                operation,
                bounded(&resource),
                Data::Lsm(hook),
                Outcome::OperationNotPermitted,
            )
        }
        Subject::Setid {
            syscall,
            requested_id,
        } => (
            Operation::Syscall,
            heapless::String::new(),
            Data::SetId {
                syscall: *syscall,
                id: *requested_id,
            },
            Outcome::OperationNotPermitted,
        ),
    }
}

/// The wire event for a kernel decision.
///
/// For an exec, KubeArmor's `ProcessName` is the new executable and `Source` the
/// one that called execve; for everything else the acting process is the process.
pub fn decision_event(d: &Decision, boottime_to_unix_ns: i128) -> Event {
    let unix_ns = i128::from(d.boot_ns) + boottime_to_unix_ns;
    let (operation, resource, data, deny_result) = what_was_decided(d);
    let (action, result) = if d.denied {
        (Action::Block, deny_result)
    } else {
        (Action::Audit, Outcome::Passed)
    };
    let (process, parent_process, source) = match d.subject {
        Subject::Exec => (
            resource.clone(),
            bounded(&d.exe),
            if d.exe == d.parent_exe {
                Source::ParentProcess
            } else {
                Source::Other(bounded(&d.exe))
            },
        ),
        _ => (bounded(&d.exe), bounded(&d.parent_exe), Source::Process),
    };
    Event {
        time_us: (unix_ns / 1_000).max(0) as u64,
        body: EventBody::Alert(Alert {
            pid: d.tgid,
            ppid: d.ppid,
            uid: d.uid,
            process,
            parent_process,
            source,
            policy: match d.decided_by {
                DecidedBy::Policy(id) => PolicyRef::Id(id),
                DecidedBy::DefaultPosture => PolicyRef::DefaultPosture,
            },
            operation,
            resource,
            data,
            action,
            result,
            // Hooks do not resolve the working directory (no path walk for it).
            cwd: heapless::String::new(),
        }),
    }
}

/// The wire event for an exec of a watched executable seen in monitor-only mode:
/// reported with `Action: Audit`, since nothing could be enforced.
pub fn monitored_exec_event(
    r: &crate::events::decode::ExecReport,
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
    use crate::events::decode::tests::{bytes_of, raw_event, setid_raw};
    use edgearmor_probe_abi::{
        CLASS_CAPABILITY, CLASS_PROCESS, ExePath, LSM_SETID_ID, LSM_SETID_RES, SETID_KIND_GID,
        SETID_KIND_UID,
    };
    use edgearmor_wire::SetIdSyscall;

    #[test]
    fn setgid_decision_becomes_a_blocking_syscall_alert() {
        let d = Decision::try_from(bytes_of(&setid_raw(SETID_KIND_GID, LSM_SETID_ID)).as_slice())
            .expect("valid");
        let e = decision_event(&d, 1_692_814_084_000_000_000);
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
        let d = Decision::try_from(bytes_of(&setid_raw(SETID_KIND_UID, LSM_SETID_RES)).as_slice())
            .expect("valid");
        let EventBody::Alert(a) = decision_event(&d, 0).body else {
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

    #[test]
    fn multi_call_exec_names_the_invoked_applet_and_carries_the_binary() {
        let mut raw = raw_event(CLASS_PROCESS, [0; 4]);
        raw.exe = ExePath::from_bytes(b"/bin/busybox").expect("fits");
        raw.target = ExePath::from_bytes(b"/bin/busybox").expect("fits");
        raw.invoked = ExePath::from_bytes(b"./wget").expect("fits");
        let mut d = Decision::try_from(bytes_of(&raw).as_slice()).expect("valid");
        d.invoked = crate::events::decode::absolute_invoked(
            &d.invoked,
            Some(std::path::Path::new("/usr/bin")),
        );
        let EventBody::Alert(a) = decision_event(&d, 0).body else {
            panic!("an alert")
        };
        assert_eq!(a.process.as_str(), "/usr/bin/wget");
        assert_eq!(a.resource.as_str(), "/usr/bin/wget");
        assert_eq!(
            a.data,
            Data::MultiCall {
                hook: LsmHook::BprmCheckSecurity,
                binary: bounded("/bin/busybox"),
                killed: false,
            }
        );
    }

    #[test]
    fn invoked_names_are_made_absolute_for_the_report() {
        use crate::events::decode::absolute_invoked;
        let cwd = Some(std::path::Path::new("/usr/bin"));
        assert_eq!(absolute_invoked("/usr/bin/wget", None), "/usr/bin/wget");
        assert_eq!(
            absolute_invoked("/usr//bin/../bin/./wget", None),
            "/usr/bin/wget"
        );
        assert_eq!(absolute_invoked("./wget", cwd), "/usr/bin/wget");
        assert_eq!(absolute_invoked("../bin/wget", cwd), "/usr/bin/wget");
        // The process is gone: the name as given, never a guessed directory.
        assert_eq!(absolute_invoked("./wget", None), "./wget");
    }

    #[test]
    fn exec_decision_names_the_new_executable_and_its_caller() {
        let mut raw = raw_event(CLASS_PROCESS, [0; 4]);
        raw.exe = ExePath::from_bytes(b"/usr/bin/bash").expect("fits");
        raw.parent_exe = ExePath::from_bytes(b"/usr/bin/bash").expect("fits");
        raw.target = ExePath::from_bytes(b"/usr/bin/sleep").expect("fits");
        let d = Decision::try_from(bytes_of(&raw).as_slice()).expect("valid");
        let EventBody::Alert(a) = decision_event(&d, 0).body else {
            panic!("an alert")
        };
        assert_eq!(a.process.as_str(), "/usr/bin/sleep");
        assert_eq!(a.parent_process.as_str(), "/usr/bin/bash");
        assert_eq!(a.source, Source::ParentProcess);
        assert_eq!(a.resource.as_str(), "/usr/bin/sleep");
        assert_eq!(a.data, Data::Lsm(LsmHook::BprmCheckSecurity));
        assert_eq!(
            (a.action, a.result),
            (Action::Block, Outcome::PermissionDenied)
        );
    }

    #[test]
    fn file_alerts_carry_the_hook_and_the_protected_path() {
        use edgearmor_probe_abi::{
            ACCESS_WRITE, CLASS_FILE, FILE_HOOK_PERMISSION, FILE_HOOK_RENAME, FILE_HOOKS,
            UNDECIDED_UNRESOLVED,
        };
        for (id, name) in FILE_HOOKS {
            let mut raw = raw_event(CLASS_FILE, [ACCESS_WRITE, id, 0, 0]);
            raw.target = ExePath::from_bytes(b"/etc/shadow").expect("fits");
            let d = Decision::try_from(bytes_of(&raw).as_slice()).expect("valid");
            let EventBody::Alert(a) = decision_event(&d, 0).body else {
                panic!("an alert")
            };
            assert_eq!(a.operation, Operation::File, "{name}");
            assert_eq!(a.resource.as_str(), "/etc/shadow", "{name}");
            let Data::Lsm(hook) = a.data else {
                panic!("{name}: lsm data")
            };
            assert_eq!(hook.kubearmor_name(), name);
            assert_eq!(
                (a.action, a.result),
                (Action::Block, Outcome::PermissionDenied)
            );
        }
        let d = Decision::try_from(
            bytes_of(&raw_event(
                CLASS_FILE,
                [ACCESS_WRITE, FILE_HOOK_RENAME, 0, 0],
            ))
            .as_slice(),
        )
        .expect("valid");
        let EventBody::Alert(a) = decision_event(&d, 0).body else {
            panic!("an alert")
        };
        assert_eq!(a.data, Data::Lsm(LsmHook::PathRename));
        // Undecided: the reason stands where the path would.
        let raw = raw_event(
            CLASS_FILE,
            [ACCESS_WRITE, FILE_HOOK_PERMISSION, 36, UNDECIDED_UNRESOLVED],
        );
        let d = Decision::try_from(bytes_of(&raw).as_slice()).expect("valid");
        let EventBody::Alert(a) = decision_event(&d, 0).body else {
            panic!("an alert")
        };
        assert_eq!(a.data, Data::Lsm(LsmHook::FilePermission));
        assert!(a.resource.contains("ENAMETOOLONG"), "{}", a.resource);
    }

    #[test]
    fn socket_and_capability_resources_read_like_kubearmor() {
        assert_eq!(
            socket_resource(2, 3 | 0o2000000, 1),
            "domain=AF_INET type=SOCK_RAW|SOCK_CLOEXEC protocol=1"
        );
        // The protocol as the caller gave it: an MPTCP socket says 262, not TCP.
        assert_eq!(
            socket_resource(10, 1, 262),
            "domain=AF_INET6 type=SOCK_STREAM protocol=262"
        );
        assert_eq!(
            socket_resource(17, 10, 768),
            "domain=AF_PACKET type=SOCK_PACKET protocol=768"
        );
        let raw = raw_event(CLASS_CAPABILITY, [13, 0, 0, 0]);
        let d = Decision::try_from(bytes_of(&raw).as_slice()).expect("valid");
        let EventBody::Alert(a) = decision_event(&d, 0).body else {
            panic!("an alert")
        };
        assert_eq!(a.resource.as_str(), "CAP_NET_RAW");
        assert_eq!(a.operation, Operation::Capabilities);
    }
}
