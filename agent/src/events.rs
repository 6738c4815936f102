//! Kernel events decoded into owned, validated values. The ring buffer hands over raw
//! bytes; nothing here trusts their length or their discriminants.

use std::fmt;

use edgearmor_probe_abi::{
    EXE_FLAG_TOO_LONG, ExePath, ExecEvent, LSM_SETID_FS, LSM_SETID_ID, LSM_SETID_RE, LSM_SETID_RES,
    PATH_CAP, SETID_KIND_GID, SETID_KIND_UID, SetidEvent, VERDICT_DENIED,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetidKind {
    Uid,
    Gid,
}

/// Which syscall family asked for the change (the kernel's `LSM_SETID_*` flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetidSyscall {
    Id,
    Re,
    Res,
    Fs,
}

/// A setuid/setgid decision the kernel reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetidDecision {
    pub boot_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub requested_id: u32,
    pub kind: SetidKind,
    pub syscall: SetidSyscall,
    pub denied: bool,
    pub rule_id: u32,
    /// Resolved executable path; empty when unknown or too long.
    pub exe: String,
    pub parent_exe: String,
}

impl SetidDecision {
    /// KubeArmor's syscall name, e.g. `SYS_SETGID`, `SYS_SETRESUID`.
    pub fn syscall_name(&self) -> &'static str {
        use SetidKind::*;
        use SetidSyscall::*;
        match (self.kind, self.syscall) {
            (Uid, Id) => "SYS_SETUID",
            (Uid, Re) => "SYS_SETREUID",
            (Uid, Res) => "SYS_SETRESUID",
            (Uid, Fs) => "SYS_SETFSUID",
            (Gid, Id) => "SYS_SETGID",
            (Gid, Re) => "SYS_SETREGID",
            (Gid, Res) => "SYS_SETRESGID",
            (Gid, Fs) => "SYS_SETFSGID",
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum EventDecodeError {
    Length { got: usize, want: usize },
    Kind(u32),
    Flags(u32),
}

impl fmt::Display for EventDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventDecodeError::Length { got, want } => {
                write!(f, "setid event of {got} bytes, expected {want}")
            }
            EventDecodeError::Kind(k) => write!(f, "setid event with unknown kind {k}"),
            EventDecodeError::Flags(v) => {
                write!(f, "setid event with unknown LSM_SETID flags {v:#x}")
            }
        }
    }
}

impl std::error::Error for EventDecodeError {}

fn path_string(p: &ExePath) -> String {
    if p.flags & EXE_FLAG_TOO_LONG != 0 {
        return String::new();
    }
    let len = (p.len as usize).min(PATH_CAP - 1);
    let bytes: Vec<u8> = (0..len).map(|i| p.byte_at(i)).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

impl TryFrom<&[u8]> for SetidDecision {
    type Error = EventDecodeError;

    fn try_from(bytes: &[u8]) -> Result<Self, Self::Error> {
        if bytes.len() != SetidEvent::SIZE {
            return Err(EventDecodeError::Length {
                got: bytes.len(),
                want: SetidEvent::SIZE,
            });
        }
        // SAFETY: the length is exactly one SetidEvent, which is #[repr(C)] plain
        // integers (any bit pattern is valid); read_unaligned makes no alignment claim.
        let raw: SetidEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        let kind = match raw.kind {
            SETID_KIND_UID => SetidKind::Uid,
            SETID_KIND_GID => SetidKind::Gid,
            k => return Err(EventDecodeError::Kind(k)),
        };
        let syscall = match raw.flags {
            LSM_SETID_ID => SetidSyscall::Id,
            LSM_SETID_RE => SetidSyscall::Re,
            LSM_SETID_RES => SetidSyscall::Res,
            LSM_SETID_FS => SetidSyscall::Fs,
            f => return Err(EventDecodeError::Flags(f)),
        };
        Ok(Self {
            boot_ns: raw.boot_ns,
            tgid: raw.tgid,
            tid: raw.tid,
            ppid: raw.ppid,
            uid: raw.uid,
            requested_id: raw.requested_id,
            kind,
            syscall,
            denied: raw.verdict == VERDICT_DENIED,
            rule_id: raw.rule_id,
            exe: path_string(&raw.exe),
            parent_exe: path_string(&raw.parent_exe),
        })
    }
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

    pub(crate) fn raw_event(kind: u32, flags: u32) -> SetidEvent {
        SetidEvent {
            boot_ns: 5_000_000_123,
            tgid: 42,
            tid: 43,
            ppid: 7,
            uid: 0,
            requested_id: 0,
            kind,
            flags,
            verdict: VERDICT_DENIED,
            rule_id: 0,
            _pad: 0,
            exe: ExePath::from_bytes(b"/usr/sbin/sshd").expect("fits"),
            parent_exe: ExePath::from_bytes(b"/bin/busybox").expect("fits"),
        }
    }

    pub(crate) fn bytes_of(ev: &SetidEvent) -> Vec<u8> {
        // SAFETY: SetidEvent is #[repr(C)] plain integers with explicit padding fields,
        // so all SIZE bytes are initialized.
        unsafe {
            std::slice::from_raw_parts((ev as *const SetidEvent).cast::<u8>(), SetidEvent::SIZE)
        }
        .to_vec()
    }

    #[test]
    fn decodes_a_setgid_event() {
        let d =
            SetidDecision::try_from(bytes_of(&raw_event(SETID_KIND_GID, LSM_SETID_ID)).as_slice())
                .expect("valid");
        assert_eq!(d.exe, "/usr/sbin/sshd");
        assert_eq!(d.parent_exe, "/bin/busybox");
        assert_eq!(d.syscall_name(), "SYS_SETGID");
        assert!(d.denied);
        let d =
            SetidDecision::try_from(bytes_of(&raw_event(SETID_KIND_UID, LSM_SETID_RES)).as_slice())
                .expect("valid");
        assert_eq!(d.syscall_name(), "SYS_SETRESUID");
    }

    #[test]
    fn rejects_wrong_length_and_unknown_discriminants() {
        let good = bytes_of(&raw_event(SETID_KIND_GID, LSM_SETID_ID));
        for len in [0, 1, good.len() - 1] {
            assert_eq!(
                SetidDecision::try_from(&good[..len]),
                Err(EventDecodeError::Length {
                    got: len,
                    want: SetidEvent::SIZE
                })
            );
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(SetidDecision::try_from(longer.as_slice()).is_err());
        assert_eq!(
            SetidDecision::try_from(bytes_of(&raw_event(9, LSM_SETID_ID)).as_slice()),
            Err(EventDecodeError::Kind(9))
        );
        assert_eq!(
            SetidDecision::try_from(bytes_of(&raw_event(SETID_KIND_UID, 3)).as_slice()),
            Err(EventDecodeError::Flags(3))
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
        let mut ev = raw_event(SETID_KIND_GID, LSM_SETID_ID);
        ev.exe.len = u32::MAX;
        ev.parent_exe.flags = EXE_FLAG_TOO_LONG;
        let d = SetidDecision::try_from(bytes_of(&ev).as_slice()).expect("valid");
        assert!(d.exe.starts_with("/usr/sbin/sshd"));
        assert_eq!(d.parent_exe, "");
    }
}
