//! Kernel events decoded into owned, validated values. The ring buffer hands over raw
//! bytes; nothing here trusts their length or their discriminants.

use edgearmor_probe_abi::{
    ACCESS_READ, ACCESS_WRITE, ACTION_AUDIT, ACTION_BLOCK, CLASS_CAPABILITY, CLASS_FILE,
    CLASS_NETWORK, CLASS_PROCESS, CLASS_SETID, CLASS_TAMPER, DecisionEvent, EXE_FLAG_TOO_LONG,
    EXE_FLAG_TRUNCATED, EXEC_BY_ARGUMENTS, ExePath, ExecEvent, MAX_REPORTED_PATH_BYTES,
    POLICY_DEFAULT_POSTURE, TAMPER_BPF, TAMPER_SIGIO, UNDECIDED_MATCH_STEPS, UNDECIDED_NO_SCRATCH,
    UNDECIDED_PATTERN_PREFIXES, UNDECIDED_UNRESOLVED, VERDICT_AUDITED, VERDICT_DENIED,
    exec_identity::EXEC_BY_MAPPING,
};
use edgearmor_wire::{LsmHook, SetIdSyscall, SetidFlavour, SetidKind};

/// What was acted on, by class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// An exec of `target` (the executable about to run).
    Exec,
    /// A `PROT_EXEC` mapping of the protected executable `target` (a loader running
    /// it), decided like its exec by `hook` (`mmap_file`, `file_mprotect`).
    MappedExec {
        hook: LsmHook,
    },
    /// A file operation on `target` (an open, a rename, a read through a
    /// descriptor, ...): what it needed, and the hook that decided.
    File {
        read: bool,
        write: bool,
        hook: LsmHook,
    },
    Socket {
        family: u32,
        sock_type: u32,
        protocol: u32,
    },
    Capability {
        cap: u32,
    },
    Setid {
        syscall: SetIdSyscall,
        requested_id: u32,
    },
    /// Locked mode denied a tamper attempt: `TAMPER_*`, and its two details (see
    /// the ABI's `TAMPER_*`).
    Tamper {
        kind: u32,
        arg: u32,
        target: u32,
    },
}

/// Which policy decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecidedBy {
    /// An id of the agent's policy catalog.
    Policy(u32),
    /// The class's default posture (allow-list mode, nothing allowed this).
    DefaultPosture,
}

/// Why a path hook could not decide, and fell back to the class's undecidable
/// verdict (fail closed under a Block rule or block posture).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Undecided {
    /// `bpf_d_path` failed with this errno (`ENAMETOOLONG`: longer than `PATH_MAX`).
    Unresolved { errno: u32 },
    /// Every scratch slot of the CPU was held by preempted runs.
    NoScratch,
    /// A pattern needed more matching steps than the probes allow.
    MatchSteps,
    /// The path passed more prefixes with patterns than the probes keep.
    PatternPrefixes,
}

impl Undecided {
    /// From `detail[2]` (errno) and `detail[3]` (reason) of exec and file events.
    fn from_detail(detail: [u32; 4]) -> Result<Option<Self>, EventDecodeError> {
        Ok(Some(match detail[3] {
            0 => return Ok(None),
            UNDECIDED_UNRESOLVED => Self::Unresolved { errno: detail[2] },
            UNDECIDED_NO_SCRATCH => Self::NoScratch,
            UNDECIDED_MATCH_STEPS => Self::MatchSteps,
            UNDECIDED_PATTERN_PREFIXES => Self::PatternPrefixes,
            r => return Err(EventDecodeError::Undecided(r)),
        }))
    }

    /// What an alert says in place of (or about) the path.
    pub fn describe(&self) -> String {
        match self {
            Self::Unresolved { errno: 36 } => {
                "path not resolved by the kernel (ENAMETOOLONG: longer than PATH_MAX)".to_owned()
            }
            Self::Unresolved { errno } => {
                format!("path not resolved by the kernel (errno {errno})")
            }
            Self::NoScratch => "not decided: every scratch slot of the CPU busy".to_owned(),
            Self::MatchSteps => "not decided: pattern match over its step bound".to_owned(),
            Self::PatternPrefixes => "not decided: too many pattern prefixes".to_owned(),
        }
    }
}

/// One enforcement decision the kernel reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub boot_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub subject: Subject,
    /// Denied (Block) or only reported (Audit).
    pub denied: bool,
    pub decided_by: DecidedBy,
    /// Resolved executable of the acting process; empty when unknown or too long.
    pub exe: String,
    pub parent_exe: String,
    /// The file or executable acted on (exec and file decisions); a path longer than
    /// events carry is its first bytes.
    pub target: String,
    /// For an exec of a multi-call binary: the name it was invoked as (as given to
    /// execve, made absolute by [`absolute_invoked`]), or with `by_arguments` the
    /// argument that named the applet; else empty.
    pub invoked: String,
    /// Decided after commit by the arguments (`EXEC_BY_ARGUMENTS`).
    pub by_arguments: bool,
    /// Set when the hook could not decide and failed closed (or audited).
    pub undecided: Option<Undecided>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum EventDecodeError {
    #[error("kernel event of {got} bytes, expected {want}")]
    Length { got: usize, want: usize },
    #[error("decision with unknown class {0}")]
    Class(u32),
    #[error("decision with unknown verdict {0}")]
    Verdict(u32),
    #[error("setid decision with unknown kind {0}")]
    Kind(u32),
    #[error("setid decision with unknown LSM_SETID flags {0:#x}")]
    Flags(u32),
    #[error("decision with unknown undecided reason {0}")]
    Undecided(u32),
    #[error("file decision with unknown hook {0}")]
    FileHook(u32),
    #[error("self-protection decision with unknown kind {0}")]
    TamperKind(u32),
}

/// Ends a path reported by its first bytes only.
pub const TRUNCATED_MARK: &str = "...";

fn path_string(p: &ExePath) -> String {
    if p.flags & EXE_FLAG_TOO_LONG != 0 {
        return String::new();
    }
    let len = (p.len as usize).min(MAX_REPORTED_PATH_BYTES);
    let bytes: Vec<u8> = (0..len).map(|i| p.byte_at(i)).collect();
    let mut s = String::from_utf8_lossy(&bytes).into_owned();
    if p.flags & EXE_FLAG_TRUNCATED != 0 {
        // The wire carries PATH_LEN bytes: keep room for the mark that says so.
        while s.len() > MAX_REPORTED_PATH_BYTES - TRUNCATED_MARK.len() {
            s.pop();
        }
        s.push_str(TRUNCATED_MARK);
    }
    s
}

fn setid_subject(detail: [u32; 4]) -> Result<Subject, EventDecodeError> {
    let kind = SetidKind::from_kernel_kind(detail[0]).ok_or(EventDecodeError::Kind(detail[0]))?;
    let flavour =
        SetidFlavour::from_lsm_flags(detail[1]).ok_or(EventDecodeError::Flags(detail[1]))?;
    Ok(Subject::Setid {
        syscall: SetIdSyscall::of(kind, flavour),
        requested_id: detail[2],
    })
}

impl TryFrom<&[u8]> for Decision {
    type Error = EventDecodeError;

    fn try_from(bytes: &[u8]) -> Result<Self, Self::Error> {
        if bytes.len() != DecisionEvent::SIZE {
            return Err(EventDecodeError::Length {
                got: bytes.len(),
                want: DecisionEvent::SIZE,
            });
        }
        // SAFETY: the length is exactly one DecisionEvent, which is #[repr(C)] plain
        // integers (any bit pattern is valid); read_unaligned makes no alignment claim.
        let raw: DecisionEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        let undecided = match raw.class {
            CLASS_PROCESS | CLASS_FILE => Undecided::from_detail(raw.detail)?,
            _ => None,
        };
        let subject = match raw.class {
            CLASS_PROCESS if raw.detail[0] == EXEC_BY_MAPPING => Subject::MappedExec {
                hook: LsmHook::from_file_hook(raw.detail[1])
                    .ok_or(EventDecodeError::FileHook(raw.detail[1]))?,
            },
            CLASS_PROCESS => Subject::Exec,
            CLASS_FILE => Subject::File {
                read: raw.detail[0] & ACCESS_READ != 0,
                write: raw.detail[0] & ACCESS_WRITE != 0,
                hook: LsmHook::from_file_hook(raw.detail[1])
                    .ok_or(EventDecodeError::FileHook(raw.detail[1]))?,
            },
            CLASS_NETWORK => Subject::Socket {
                family: raw.detail[0],
                sock_type: raw.detail[1],
                protocol: raw.detail[2],
            },
            CLASS_CAPABILITY => Subject::Capability { cap: raw.detail[0] },
            CLASS_SETID => setid_subject(raw.detail)?,
            CLASS_TAMPER if (TAMPER_BPF..=TAMPER_SIGIO).contains(&raw.detail[0]) => {
                Subject::Tamper {
                    kind: raw.detail[0],
                    arg: raw.detail[1],
                    target: raw.detail[2],
                }
            }
            CLASS_TAMPER => return Err(EventDecodeError::TamperKind(raw.detail[0])),
            c => return Err(EventDecodeError::Class(c)),
        };
        let denied = match raw.verdict {
            VERDICT_DENIED => true,
            VERDICT_AUDITED => false,
            v => return Err(EventDecodeError::Verdict(v)),
        };
        let decided_by = if raw.policy_id == POLICY_DEFAULT_POSTURE
            && matches!(raw.posture, ACTION_AUDIT | ACTION_BLOCK)
        {
            DecidedBy::DefaultPosture
        } else {
            DecidedBy::Policy(raw.policy_id)
        };
        Ok(Self {
            boot_ns: raw.boot_ns,
            tgid: raw.tgid,
            tid: raw.tid,
            ppid: raw.ppid,
            uid: raw.uid,
            subject,
            denied,
            decided_by,
            exe: path_string(&raw.exe),
            parent_exe: path_string(&raw.parent_exe),
            target: path_string(&raw.target),
            invoked: path_string(&raw.invoked),
            by_arguments: raw.class == CLASS_PROCESS && raw.detail[0] == EXEC_BY_ARGUMENTS,
            undecided,
        })
    }
}

/// `name` (an exec's invoked name) as an absolute path without `.`, `..` or empty
/// components; a relative name is taken from `cwd`, and stays as given without one.
/// Only for the report: the kernel decides by the last component, which this keeps.
pub fn absolute_invoked(name: &str, cwd: Option<&std::path::Path>) -> String {
    let joined = if name.starts_with('/') {
        name.to_owned()
    } else {
        match cwd {
            Some(dir) => format!("{}/{name}", dir.to_string_lossy()),
            None => return name.to_owned(),
        }
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// An exec reported in monitor-only mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecReport {
    pub boot_ns: u64,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    /// The path as given to execve (may be relative).
    pub filename: String,
}

impl TryFrom<&[u8]> for ExecReport {
    type Error = EventDecodeError;

    fn try_from(bytes: &[u8]) -> Result<Self, Self::Error> {
        if bytes.len() != ExecEvent::SIZE {
            return Err(EventDecodeError::Length {
                got: bytes.len(),
                want: ExecEvent::SIZE,
            });
        }
        // SAFETY: exactly one ExecEvent of plain integers (any bit pattern is valid);
        // read_unaligned makes no alignment claim.
        let raw: ExecEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        Ok(Self {
            boot_ns: raw.boot_ns,
            tgid: raw.tgid,
            ppid: raw.ppid,
            uid: raw.uid,
            filename: path_string(&raw.filename),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use edgearmor_probe_abi::{LSM_SETID_ID, SETID_KIND_GID, SETID_KIND_UID};

    pub(crate) fn raw_event(class: u32, detail: [u32; 4]) -> DecisionEvent {
        DecisionEvent {
            boot_ns: 5_000_000_123,
            tgid: 42,
            tid: 43,
            ppid: 7,
            uid: 0,
            class,
            verdict: VERDICT_DENIED,
            policy_id: 0,
            posture: 0,
            detail,
            exe: ExePath::from_bytes(b"/usr/sbin/sshd").expect("fits"),
            parent_exe: ExePath::from_bytes(b"/bin/busybox").expect("fits"),
            target: ExePath::EMPTY,
            invoked: ExePath::EMPTY,
        }
    }

    pub(crate) fn setid_raw(kind: u32, flags: u32) -> DecisionEvent {
        raw_event(CLASS_SETID, [kind, flags, 0, 0])
    }

    pub(crate) fn bytes_of(ev: &DecisionEvent) -> Vec<u8> {
        // SAFETY: DecisionEvent is #[repr(C)] plain integers with explicit padding
        // fields, so all SIZE bytes are initialized.
        unsafe {
            std::slice::from_raw_parts(
                (ev as *const DecisionEvent).cast::<u8>(),
                DecisionEvent::SIZE,
            )
        }
        .to_vec()
    }

    #[test]
    fn decodes_a_setgid_decision() {
        let d = Decision::try_from(bytes_of(&setid_raw(SETID_KIND_GID, LSM_SETID_ID)).as_slice())
            .expect("valid");
        assert_eq!(d.exe, "/usr/sbin/sshd");
        assert_eq!(d.parent_exe, "/bin/busybox");
        let Subject::Setid { syscall, .. } = d.subject else {
            panic!("setid")
        };
        assert_eq!(syscall.kubearmor_name(), "SYS_SETGID");
        assert!(d.denied);
        assert_eq!(d.decided_by, DecidedBy::Policy(0));
    }

    #[test]
    fn decodes_file_and_default_posture_decisions() {
        let mut raw = raw_event(CLASS_FILE, [ACCESS_READ | ACCESS_WRITE, 0, 0, 0]);
        raw.target = ExePath::from_bytes(b"/etc/passwd").expect("fits");
        raw.verdict = VERDICT_AUDITED;
        raw.policy_id = POLICY_DEFAULT_POSTURE;
        raw.posture = ACTION_AUDIT;
        let d = Decision::try_from(bytes_of(&raw).as_slice()).expect("valid");
        assert_eq!(
            d.subject,
            Subject::File {
                read: true,
                write: true,
                hook: LsmHook::FileOpen
            }
        );
        assert_eq!(d.target, "/etc/passwd");
        assert!(!d.denied);
        assert_eq!(d.decided_by, DecidedBy::DefaultPosture);
    }

    #[test]
    fn file_decisions_name_the_hook_that_decided() {
        use edgearmor_probe_abi::{ACCESS_UNLINK, FILE_HOOKS};
        for (id, name) in FILE_HOOKS {
            let raw = raw_event(CLASS_FILE, [ACCESS_WRITE | ACCESS_UNLINK, id, 0, 0]);
            let d = Decision::try_from(bytes_of(&raw).as_slice()).expect("valid");
            let Subject::File { read, write, hook } = d.subject else {
                panic!("a file decision")
            };
            assert!(!read && write, "{name}");
            assert_eq!(hook.kubearmor_name(), name);
        }
        let unknown = FILE_HOOKS.len() as u32;
        let raw = raw_event(CLASS_FILE, [ACCESS_READ, unknown, 0, 0]);
        assert_eq!(
            Decision::try_from(bytes_of(&raw).as_slice()),
            Err(EventDecodeError::FileHook(unknown))
        );
    }

    #[test]
    fn rejects_wrong_length_and_unknown_discriminants() {
        let good = bytes_of(&setid_raw(SETID_KIND_GID, LSM_SETID_ID));
        for len in [0, 1, good.len() - 1] {
            assert_eq!(
                Decision::try_from(&good[..len]),
                Err(EventDecodeError::Length {
                    got: len,
                    want: DecisionEvent::SIZE
                })
            );
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(Decision::try_from(longer.as_slice()).is_err());
        assert_eq!(
            Decision::try_from(bytes_of(&setid_raw(9, LSM_SETID_ID)).as_slice()),
            Err(EventDecodeError::Kind(9))
        );
        assert_eq!(
            Decision::try_from(bytes_of(&setid_raw(SETID_KIND_UID, 3)).as_slice()),
            Err(EventDecodeError::Flags(3))
        );
        assert_eq!(
            Decision::try_from(bytes_of(&raw_event(77, [0; 4])).as_slice()),
            Err(EventDecodeError::Class(77))
        );
        let mut bad_verdict = raw_event(CLASS_PROCESS, [0; 4]);
        bad_verdict.verdict = 0;
        assert_eq!(
            Decision::try_from(bytes_of(&bad_verdict).as_slice()),
            Err(EventDecodeError::Verdict(0))
        );
    }

    #[test]
    fn exec_reports_check_their_length() {
        let mut ev = ExecEvent {
            boot_ns: 1,
            tgid: 2,
            ppid: 3,
            uid: 0,
            _pad: 0,
            filename: ExePath::from_bytes(b"/usr/sbin/sshd").expect("fits"),
        };
        // SAFETY: ExecEvent is #[repr(C)] plain integers, fully initialized.
        let bytes = unsafe {
            std::slice::from_raw_parts((&ev as *const ExecEvent).cast::<u8>(), ExecEvent::SIZE)
        }
        .to_vec();
        let r = ExecReport::try_from(bytes.as_slice()).expect("valid");
        assert_eq!(
            (r.tgid, r.ppid, r.filename.as_str()),
            (2, 3, "/usr/sbin/sshd")
        );
        assert!(ExecReport::try_from(&bytes[..10]).is_err());
        ev.filename.len = 9999;
        let _ = ev;
    }

    #[test]
    fn overlong_or_lying_paths_decode_safely() {
        let mut ev = setid_raw(SETID_KIND_GID, LSM_SETID_ID);
        ev.exe.len = u32::MAX;
        ev.parent_exe.flags = EXE_FLAG_TOO_LONG;
        let d = Decision::try_from(bytes_of(&ev).as_slice()).expect("valid");
        assert!(d.exe.starts_with("/usr/sbin/sshd"));
        assert_eq!(d.parent_exe, "");
    }
}

#[cfg(test)]
mod undecided_tests {
    use super::tests::{bytes_of, raw_event};
    use super::*;
    use edgearmor_probe_abi::PATH_WORDS;

    #[test]
    fn undecided_reasons_are_decoded_and_unknown_ones_refused() {
        let d = |detail| Decision::try_from(bytes_of(&raw_event(CLASS_FILE, detail)).as_slice());
        let unresolved = d([ACCESS_READ, 0, 36, UNDECIDED_UNRESOLVED]).expect("valid");
        assert_eq!(
            unresolved.undecided,
            Some(Undecided::Unresolved { errno: 36 })
        );
        assert!(
            unresolved
                .undecided
                .is_some_and(|u| u.describe().contains("ENAMETOOLONG"))
        );
        let busy = d([ACCESS_READ, 0, 0, UNDECIDED_NO_SCRATCH]).expect("valid");
        assert_eq!(busy.undecided, Some(Undecided::NoScratch));
        let edgearmor_wire::EventBody::Alert(alert) =
            crate::events::enrich::decision_event(&unresolved, 0).body
        else {
            panic!("an alert")
        };
        assert!(
            alert.resource.contains("path not resolved"),
            "the alert says why: {}",
            alert.resource
        );
        assert_eq!(d([ACCESS_READ, 0, 0, 0]).expect("valid").undecided, None);
        assert_eq!(
            d([ACCESS_READ, 0, 0, 99]),
            Err(EventDecodeError::Undecided(99))
        );
        // Other classes use detail[3] for nothing: not read as a reason.
        let socket = raw_event(CLASS_NETWORK, [2, 1, 6, 99]);
        let socket = Decision::try_from(bytes_of(&socket).as_slice()).expect("valid");
        assert_eq!(socket.undecided, None);
    }

    #[test]
    fn a_target_longer_than_events_carry_is_its_first_bytes_marked() {
        let mut raw = raw_event(CLASS_FILE, [ACCESS_READ, 0, 0, 0]);
        raw.target.len = 4000;
        raw.target.flags = EXE_FLAG_TRUNCATED;
        raw.target.words = [u64::from_le_bytes(*b"/aaaaaaa"); PATH_WORDS];
        let d = Decision::try_from(bytes_of(&raw).as_slice()).expect("valid");
        assert!(d.target.starts_with("/aaaaaaa/aaaaaaa"), "{}", d.target);
        assert!(d.target.ends_with(TRUNCATED_MARK), "{}", d.target);
        assert_eq!(d.target.len(), MAX_REPORTED_PATH_BYTES);
    }
}
