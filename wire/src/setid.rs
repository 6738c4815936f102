//! The setid syscall family, defined once for every side: the wire encoding (the
//! variant order of [`SetIdSyscall`] is its postcard discriminant), the name a
//! policy writes (`setgid`), KubeArmor's name in alerts (`SYS_SETGID`), and the
//! kernel's view of it (the probes' `SETID_KIND_*` and the kernel's `LSM_SETID_*`
//! flags, from `edgearmor-probe-abi`).
//!
//! It lives here rather than in the probe ABI because the enum is a wire type (it
//! needs serde and postcard derives, which the ABI crate, built for the kernel, does
//! not have); the kernel constants it maps to stay in the ABI, the probes' contract.

use edgearmor_probe_abi::{
    LSM_SETID_FS, LSM_SETID_ID, LSM_SETID_RE, LSM_SETID_RES, SETID_KIND_GID, SETID_KIND_UID,
    setid_bit,
};
use postcard::experimental::max_size::MaxSize;
use serde::{Deserialize, Serialize};

/// A syscall that changes a process's user or group ids; the kernel funnels all of
/// them through `task_fix_setuid` / `task_fix_setgid`, which is where edgearmor
/// enforces `syscalls` rules.
///
/// Append-only: the variant order is the wire encoding (`docs/wire-format.md`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, MaxSize,
)]
pub enum SetIdSyscall {
    Setuid,
    Setgid,
    Setreuid,
    Setregid,
    Setresuid,
    Setresgid,
    Setfsuid,
    Setfsgid,
}

/// Which id a setid syscall changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SetidKind {
    User,
    Group,
}

/// Which family of setid syscall, as the kernel's `LSM_SETID_*` flags tell them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SetidFlavour {
    /// `setuid`/`setgid` (`LSM_SETID_ID`).
    Id,
    /// `setre*id` (`LSM_SETID_RE`).
    Re,
    /// `setres*id` (`LSM_SETID_RES`).
    Res,
    /// `setfs*id` (`LSM_SETID_FS`).
    Fs,
}

impl SetIdSyscall {
    /// Every setid syscall, in wire order.
    pub const ALL: [SetIdSyscall; 8] = [
        SetIdSyscall::Setuid,
        SetIdSyscall::Setgid,
        SetIdSyscall::Setreuid,
        SetIdSyscall::Setregid,
        SetIdSyscall::Setresuid,
        SetIdSyscall::Setresgid,
        SetIdSyscall::Setfsuid,
        SetIdSyscall::Setfsgid,
    ];

    /// The syscall's name, as policies write it (`matchSyscalls`), e.g. `setgid`.
    pub fn name(self) -> &'static str {
        match self {
            SetIdSyscall::Setuid => "setuid",
            SetIdSyscall::Setgid => "setgid",
            SetIdSyscall::Setreuid => "setreuid",
            SetIdSyscall::Setregid => "setregid",
            SetIdSyscall::Setresuid => "setresuid",
            SetIdSyscall::Setresgid => "setresgid",
            SetIdSyscall::Setfsuid => "setfsuid",
            SetIdSyscall::Setfsgid => "setfsgid",
        }
    }

    /// The syscall named `name` (exact spelling, see [`Self::name`]).
    pub fn from_name(name: &str) -> Option<SetIdSyscall> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// KubeArmor's name, e.g. `SYS_SETGID`.
    pub fn kubearmor_name(self) -> &'static str {
        match self {
            SetIdSyscall::Setuid => "SYS_SETUID",
            SetIdSyscall::Setgid => "SYS_SETGID",
            SetIdSyscall::Setreuid => "SYS_SETREUID",
            SetIdSyscall::Setregid => "SYS_SETREGID",
            SetIdSyscall::Setresuid => "SYS_SETRESUID",
            SetIdSyscall::Setresgid => "SYS_SETRESGID",
            SetIdSyscall::Setfsuid => "SYS_SETFSUID",
            SetIdSyscall::Setfsgid => "SYS_SETFSGID",
        }
    }

    pub fn kind(self) -> SetidKind {
        match self {
            SetIdSyscall::Setuid
            | SetIdSyscall::Setreuid
            | SetIdSyscall::Setresuid
            | SetIdSyscall::Setfsuid => SetidKind::User,
            SetIdSyscall::Setgid
            | SetIdSyscall::Setregid
            | SetIdSyscall::Setresgid
            | SetIdSyscall::Setfsgid => SetidKind::Group,
        }
    }

    pub fn flavour(self) -> SetidFlavour {
        match self {
            SetIdSyscall::Setuid | SetIdSyscall::Setgid => SetidFlavour::Id,
            SetIdSyscall::Setreuid | SetIdSyscall::Setregid => SetidFlavour::Re,
            SetIdSyscall::Setresuid | SetIdSyscall::Setresgid => SetidFlavour::Res,
            SetIdSyscall::Setfsuid | SetIdSyscall::Setfsgid => SetidFlavour::Fs,
        }
    }

    /// The syscall of this kind and flavour.
    pub fn of(kind: SetidKind, flavour: SetidFlavour) -> SetIdSyscall {
        use SetidFlavour::*;
        use SetidKind::*;
        match (kind, flavour) {
            (User, Id) => SetIdSyscall::Setuid,
            (User, Re) => SetIdSyscall::Setreuid,
            (User, Res) => SetIdSyscall::Setresuid,
            (User, Fs) => SetIdSyscall::Setfsuid,
            (Group, Id) => SetIdSyscall::Setgid,
            (Group, Re) => SetIdSyscall::Setregid,
            (Group, Res) => SetIdSyscall::Setresgid,
            (Group, Fs) => SetIdSyscall::Setfsgid,
        }
    }

    /// The probes' rule bit for this syscall (`edgearmor_probe_abi::setid_bit`);
    /// `None` only if the ABI stopped knowing one of the `LSM_SETID_*` flags.
    pub fn kernel_bit(self) -> Option<u32> {
        setid_bit(self.kind().kernel_kind(), self.flavour().lsm_flags())
    }
}

impl core::fmt::Display for SetIdSyscall {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

impl SetidKind {
    /// The probes' `SETID_KIND_*` value (`DecisionEvent::detail[0]` of setid events).
    pub fn kernel_kind(self) -> u32 {
        match self {
            SetidKind::User => SETID_KIND_UID,
            SetidKind::Group => SETID_KIND_GID,
        }
    }

    /// The kind of a `SETID_KIND_*` value; `None` for a value the probes never send.
    pub fn from_kernel_kind(kind: u32) -> Option<SetidKind> {
        match kind {
            SETID_KIND_UID => Some(SetidKind::User),
            SETID_KIND_GID => Some(SetidKind::Group),
            _ => None,
        }
    }

    /// The probes' rule bits of every syscall of this kind (a `setuid` or `setgid`
    /// rule of the agent's TOML rules covers the whole family).
    pub fn kernel_mask(self) -> u32 {
        SetIdSyscall::ALL
            .into_iter()
            .filter(|s| s.kind() == self)
            .filter_map(SetIdSyscall::kernel_bit)
            .fold(0, |mask, bit| mask | 1 << bit)
    }
}

impl SetidFlavour {
    /// The kernel's `LSM_SETID_*` flags for this family.
    pub fn lsm_flags(self) -> u32 {
        match self {
            SetidFlavour::Id => LSM_SETID_ID,
            SetidFlavour::Re => LSM_SETID_RE,
            SetidFlavour::Res => LSM_SETID_RES,
            SetidFlavour::Fs => LSM_SETID_FS,
        }
    }

    /// The family of `LSM_SETID_*` flags; `None` for flags the kernel never passes.
    pub fn from_lsm_flags(flags: u32) -> Option<SetidFlavour> {
        match flags {
            LSM_SETID_ID => Some(SetidFlavour::Id),
            LSM_SETID_RE => Some(SetidFlavour::Re),
            LSM_SETID_RES => Some(SetidFlavour::Res),
            LSM_SETID_FS => Some(SetidFlavour::Fs),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_syscall_round_trips_through_each_of_its_names() {
        for s in SetIdSyscall::ALL {
            assert_eq!(SetIdSyscall::from_name(s.name()), Some(s));
            assert_eq!(SetIdSyscall::of(s.kind(), s.flavour()), s);
            let kind = SetidKind::from_kernel_kind(s.kind().kernel_kind());
            let flavour = SetidFlavour::from_lsm_flags(s.flavour().lsm_flags());
            assert_eq!((kind, flavour), (Some(s.kind()), Some(s.flavour())));
            let bare = s
                .kubearmor_name()
                .strip_prefix("SYS_")
                .expect("SYS_ prefix");
            assert!(bare.eq_ignore_ascii_case(s.name()), "{s}");
        }
        assert_eq!(SetIdSyscall::from_name("setuid32"), None);
        assert_eq!(SetidKind::from_kernel_kind(9), None);
        assert_eq!(SetidFlavour::from_lsm_flags(3), None);
    }

    #[test]
    fn kernel_bits_are_distinct_and_split_by_kind() {
        let mut seen = 0u32;
        for s in SetIdSyscall::ALL {
            let bit = s.kernel_bit().expect("every flavour has a bit");
            assert_eq!(seen & (1 << bit), 0, "{s}");
            seen |= 1 << bit;
        }
        assert_eq!(seen, 0xff);
        assert_eq!(SetidKind::User.kernel_mask(), 0x0f);
        assert_eq!(SetidKind::Group.kernel_mask(), 0xf0);
    }

    #[test]
    fn wire_order_is_the_documented_one() {
        for (index, s) in SetIdSyscall::ALL.into_iter().enumerate() {
            let mut buf = [0u8; 8];
            let bytes = postcard::to_slice(&s, &mut buf).expect("fits");
            assert_eq!(bytes, [index as u8], "{s}");
        }
    }
}
