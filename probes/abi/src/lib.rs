//! The kernel <-> user-space contract of edgearmor's BPF probes.
//!
//! Everything the probes and the agent exchange (map keys, map values, ring-buffer
//! events, load-time globals) is defined here and nowhere else. The rules that keep
//! this contract safe across the kernel boundary:
//!
//! - `#[repr(C)]`, fixed-width integers only, explicit padding fields: no `bool`, no
//!   enums, nothing whose layout the compiler may choose. Discriminants travel as
//!   `u32` constants and are decoded in user space with `TryFrom`.
//! - Sizes are asserted at compile time so a change in layout is a build error.
//! - No kernel struct offsets are compiled in: the agent reads them from the running
//!   kernel's BTF and hands them to the probes as [`KernelOffsets`] at load time.
#![no_std]

/// Capacity of a resolved executable path, NUL included. Longer paths are reported
/// with [`EXE_FLAG_TOO_LONG`] and never match a rule.
pub const PATH_CAP: usize = 256;
/// [`PATH_CAP`] in 64-bit words: the unit the path hash consumes.
pub const PATH_WORDS: usize = PATH_CAP / 8;

/// Names of the maps and globals in the BPF object, as user space looks them up.
pub mod names {
    pub const SETID_RULES: &str = "SETID_RULES";
    pub const PROC_IDENTITY: &str = "PROC_IDENTITY";
    pub const EXE_PATHS: &str = "EXE_PATHS";
    pub const EVENTS: &str = "EVENTS";
    pub const EVENT_DROPS: &str = "EVENT_DROPS";
    pub const EXEC_EVENTS: &str = "EXEC_EVENTS";
    pub const KERNEL_OFFSETS: &str = "KERNEL_OFFSETS";
    pub const PATH_HASH_KEY: &str = "PATH_HASH_KEY";
}

/// Program names in the BPF object and the kernel hook each one attaches to.
pub mod programs {
    /// `(program, hook)` for BPF-LSM programs.
    pub const LSM: [(&str, &str); 3] = [
        ("record_exec", "bprm_committed_creds"),
        ("deny_setuid", "task_fix_setuid"),
        ("deny_setgid", "task_fix_setgid"),
    ];
    /// `(program, tracepoint)` for BTF-typed tracepoints.
    pub const BTF_TRACEPOINTS: [(&str, &str); 1] = [("inherit_identity", "sched_process_fork")];
    /// Monitor-only mode (no BPF-LSM): reports every exec; needs no trampoline.
    pub const MONITOR_EXEC: (&str, &str) = ("watch_exec", "sched_process_exec");
}

/// Byte offsets of the kernel struct members the probes read, taken from the running
/// kernel's BTF at load time (aya-ebpf emits no CO-RE relocations, and one object must
/// run on every kernel).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_tgid: u32,
    pub task_real_parent: u32,
    pub binprm_file: u32,
    pub binprm_filename: u32,
    pub file_f_path: u32,
    pub cred_uid: u32,
    pub cred_euid: u32,
    pub cred_fsuid: u32,
    pub cred_gid: u32,
    pub cred_egid: u32,
    pub cred_fsgid: u32,
}

impl KernelOffsets {
    pub const ZERO: Self = Self {
        task_tgid: 0,
        task_real_parent: 0,
        binprm_file: 0,
        binprm_filename: 0,
        file_f_path: 0,
        cred_uid: 0,
        cred_euid: 0,
        cred_fsuid: 0,
        cred_gid: 0,
        cred_egid: 0,
        cred_fsgid: 0,
    };
}

/// A resolved absolute executable path, NUL-padded to [`PATH_CAP`] bytes. Stored as
/// words so the hash reads it without unaligned loads.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExePath {
    /// Length in bytes without the NUL; 0 when unknown.
    pub len: u32,
    /// `EXE_FLAG_*` bits.
    pub flags: u32,
    pub words: [u64; PATH_WORDS],
}

/// The path did not fit in [`PATH_CAP`]; `words` holds nothing useful.
pub const EXE_FLAG_TOO_LONG: u32 = 1;

impl ExePath {
    pub const EMPTY: Self = Self {
        len: 0,
        flags: 0,
        words: [0; PATH_WORDS],
    };

    /// Builds the zero-padded form of `path`; `None` when it does not fit.
    pub fn from_bytes(path: &[u8]) -> Option<Self> {
        if path.len() >= PATH_CAP {
            return None;
        }
        let mut out = Self::EMPTY;
        for (i, byte) in path.iter().enumerate() {
            out.words[i / 8] |= u64::from(*byte) << ((i % 8) * 8);
        }
        out.len = path.len() as u32;
        Some(out)
    }

    /// Zeroes every byte from offset `n` on. `bpf_d_path` builds the path at the end of
    /// the buffer and then moves it to the front, leaving a stale copy behind: the hash
    /// covers all [`PATH_CAP`] bytes, so they must be zero past the string.
    #[inline(always)]
    pub fn zero_from(&mut self, n: usize) {
        let mut i = 0;
        while i < PATH_WORDS {
            let start = i * 8;
            if start >= n {
                self.words[i] = 0;
            } else if start + 8 > n {
                self.words[i] &= (1u64 << ((n - start) * 8)) - 1;
            }
            i += 1;
        }
    }

    /// The path bytes (without padding), clamped to the capacity whatever `len` says.
    pub fn byte_at(&self, i: usize) -> u8 {
        (self.words[i / 8] >> ((i % 8) * 8)) as u8
    }
}

/// Value of the `SETID_RULES` map, keyed by the path hash of the calling executable
/// (or [`SETID_ANY_EXECUTABLE`] for rules without `fromSource`). One bit per syscall
/// (see [`setid_bit`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetidRule {
    /// Calls denied with -EPERM and reported.
    pub deny_mask: u32,
    /// Calls allowed and reported.
    pub audit_mask: u32,
    /// Per bit: the rule id events carry.
    pub rule_ids: [u32; SETID_BITS],
}

/// Key of rules that apply to every executable.
pub const SETID_ANY_EXECUTABLE: u64 = u64::MAX;
/// Two kinds (uid, gid) times four syscall families.
pub const SETID_BITS: usize = 8;

/// The bit of a `(kind, LSM_SETID_* flags)` pair: uids in bits 0..4, gids in 4..8,
/// `ID`, `RE`, `RES`, `FS` in that order. `None` for flags the kernel never passes.
#[inline(always)]
pub fn setid_bit(kind: u32, flags: u32) -> Option<u32> {
    let family = match flags {
        LSM_SETID_ID => 0,
        LSM_SETID_RE => 1,
        LSM_SETID_RES => 2,
        LSM_SETID_FS => 3,
        _ => return None,
    };
    let base = if kind == SETID_KIND_UID { 0 } else { 4 };
    Some(base + family)
}

/// Every syscall family of one kind, as a mask.
pub const SETID_ALL_UID: u32 = 0x0f;
pub const SETID_ALL_GID: u32 = 0xf0;

/// `SetidEvent::kind`.
pub const SETID_KIND_UID: u32 = 1;
pub const SETID_KIND_GID: u32 = 2;

/// `SetidEvent::flags`: the kernel's `LSM_SETID_*` values telling which syscall family called.
pub const LSM_SETID_ID: u32 = 1;
pub const LSM_SETID_RE: u32 = 2;
pub const LSM_SETID_RES: u32 = 4;
pub const LSM_SETID_FS: u32 = 8;

/// `SetidEvent::verdict`.
pub const VERDICT_DENIED: u32 = 1;
pub const VERDICT_AUDITED: u32 = 2;

/// A setuid/setgid decision, written to the `EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SetidEvent {
    /// `CLOCK_BOOTTIME` nanoseconds.
    pub boot_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    /// The id the caller asked for (uid or gid depending on `kind`).
    pub requested_id: u32,
    pub kind: u32,
    pub flags: u32,
    pub verdict: u32,
    pub rule_id: u32,
    pub _pad: u32,
    pub exe: ExePath,
    pub parent_exe: ExePath,
}

impl SetidEvent {
    pub const SIZE: usize = core::mem::size_of::<Self>();
}

const _: () = assert!(core::mem::size_of::<ExePath>() == 8 + PATH_CAP);
const _: () = assert!(core::mem::size_of::<SetidEvent>() == 48 + 2 * (8 + PATH_CAP));
const _: () = assert!(core::mem::size_of::<SetidRule>() == 8 + 4 * SETID_BITS);
const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 44);
const _: () = assert!(core::mem::size_of::<ExecEvent>() == 24 + 8 + PATH_CAP);

/// Keyed SipHash-1-3 over the zero-padded path words. The key is random per agent
/// start, so nobody can craft a path that collides with a rule's path.
///
/// The same function runs in the probes and in the agent; it consumes a fixed number
/// of words so the BPF verifier sees a constant-bound loop.
#[inline(always)]
pub fn path_hash(key: &[u64; 2], words: &[u64; PATH_WORDS]) -> u64 {
    let mut v0 = key[0] ^ 0x736f_6d65_7073_6575;
    let mut v1 = key[1] ^ 0x646f_7261_6e64_6f6d;
    let mut v2 = key[0] ^ 0x6c79_6765_6e65_7261;
    let mut v3 = key[1] ^ 0x7465_6462_7974_6573;
    let mut i = 0;
    while i < PATH_WORDS {
        let m = words[i];
        v3 ^= m;
        sip_round(&mut v0, &mut v1, &mut v2, &mut v3);
        v0 ^= m;
        i += 1;
    }
    let b = (PATH_CAP as u64) << 56;
    v3 ^= b;
    sip_round(&mut v0, &mut v1, &mut v2, &mut v3);
    v0 ^= b;
    v2 ^= 0xff;
    sip_round(&mut v0, &mut v1, &mut v2, &mut v3);
    sip_round(&mut v0, &mut v1, &mut v2, &mut v3);
    sip_round(&mut v0, &mut v1, &mut v2, &mut v3);
    v0 ^ v1 ^ v2 ^ v3
}

#[inline(always)]
fn sip_round(v0: &mut u64, v1: &mut u64, v2: &mut u64, v3: &mut u64) {
    *v0 = v0.wrapping_add(*v1);
    *v1 = v1.rotate_left(13);
    *v1 ^= *v0;
    *v0 = v0.rotate_left(32);
    *v2 = v2.wrapping_add(*v3);
    *v3 = v3.rotate_left(16);
    *v3 ^= *v2;
    *v0 = v0.wrapping_add(*v3);
    *v3 = v3.rotate_left(21);
    *v3 ^= *v0;
    *v2 = v2.wrapping_add(*v1);
    *v1 = v1.rotate_left(17);
    *v1 ^= *v2;
    *v2 = v2.rotate_left(32);
}

/// An exec seen in monitor-only mode: the path as passed to execve (`bprm->filename`;
/// resolved in user space), written to the `EXEC_EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecEvent {
    /// `CLOCK_BOOTTIME` nanoseconds.
    pub boot_ns: u64,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub _pad: u32,
    pub filename: ExePath,
}

impl ExecEvent {
    pub const SIZE: usize = core::mem::size_of::<Self>();
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all four types are #[repr(C)], made only of integers with explicit
    // padding fields, so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::KernelOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ExePath {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SetidRule {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SetidEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ExecEvent {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exe_path_round_trips_bytes_and_rejects_overlong() {
        let p = ExePath::from_bytes(b"/usr/sbin/sshd").expect("fits");
        assert_eq!(p.len, 14);
        let back: [u8; 14] = core::array::from_fn(|i| p.byte_at(i));
        assert_eq!(&back, b"/usr/sbin/sshd");
        assert_eq!(p.byte_at(14), 0);
        assert!(ExePath::from_bytes(&[b'a'; PATH_CAP]).is_none());
        assert!(ExePath::from_bytes(&[b'a'; PATH_CAP - 1]).is_some());
    }

    #[test]
    fn zero_from_leaves_the_same_words_as_a_fresh_path() {
        let fresh = ExePath::from_bytes(b"/usr/sbin/sshd").expect("fits");
        let mut dirty = fresh;
        // Stale bytes after the NUL (byte 14): byte 15 and everything from word 2 on.
        for w in dirty.words.iter_mut().skip(2) {
            *w = u64::MAX;
        }
        dirty.words[1] |= 0xff00_0000_0000_0000;
        dirty.zero_from(15); // 14 bytes + NUL, as bpf_d_path reports
        assert_eq!(dirty.words, fresh.words);
        let mut full = ExePath::EMPTY;
        full.words = [u64::MAX; PATH_WORDS];
        full.zero_from(PATH_CAP);
        assert_eq!(full.words, [u64::MAX; PATH_WORDS]);
        full.zero_from(0);
        assert_eq!(full.words, [0; PATH_WORDS]);
    }

    #[test]
    fn setid_bits_are_distinct_per_kind_and_family() {
        let mut seen = 0u32;
        for kind in [SETID_KIND_UID, SETID_KIND_GID] {
            for flags in [LSM_SETID_ID, LSM_SETID_RE, LSM_SETID_RES, LSM_SETID_FS] {
                let bit = setid_bit(kind, flags).expect("known flags");
                assert_eq!(seen & (1 << bit), 0);
                seen |= 1 << bit;
            }
        }
        assert_eq!(seen, SETID_ALL_UID | SETID_ALL_GID);
        assert_eq!(setid_bit(SETID_KIND_UID, 3), None);
    }

    #[test]
    fn path_hash_depends_on_key_and_every_byte() {
        let key = [1, 2];
        let a = ExePath::from_bytes(b"/usr/sbin/sshd").expect("fits");
        let b = ExePath::from_bytes(b"/usr/sbin/sshe").expect("fits");
        assert_ne!(path_hash(&key, &a.words), path_hash(&key, &b.words));
        assert_ne!(path_hash(&key, &a.words), path_hash(&[1, 3], &a.words));
        assert_eq!(path_hash(&key, &a.words), path_hash(&key, &a.words));
    }
}
