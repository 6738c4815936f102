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
//!
//! ## How rules are found
//!
//! Every rule of every class lives in one hash map, `RULES`, under a [`RuleKey`]:
//! (generation, class, kind of match, target, source). Paths are never compared
//! byte by byte in the kernel: a path, and each of its directory prefixes (the bytes
//! up to and including a `/`), are named by a keyed SipHash-1-3 of their bytes
//! ([`path_hash`]), computed in one pass. A `PREFIXES` index says at which
//! directory prefixes directory or pattern rules exist, so the walk costs one lookup
//! per path component. `source` is the path hash of the acting process's executable
//! (`fromSource`) or [`ANY_SOURCE`].
//!
//! ## Generations
//!
//! A policy set is written under a fresh generation number next to the one being
//! enforced; one write to `ACTIVE` then switches every hook over at once, and the old
//! generation's entries are deleted afterwards. Each hook reads `ACTIVE` once, so a
//! decision never mixes two policy sets.
#![no_std]

/// Capacity of a path as events and the interned executables (`EXE_PATHS`) carry it,
/// NUL included. Not a matching limit: the probes resolve and match paths up to
/// [`LINUX_PATH_MAX`] in their scratch buffers ([`SCRATCH_PATH_CAP`]); a longer one is
/// reported by its first [`PATH_CAP`] - 1 bytes with [`EXE_FLAG_TRUNCATED`].
pub const PATH_CAP: usize = 256;
/// [`PATH_CAP`] in 64-bit words.
pub const PATH_WORDS: usize = PATH_CAP / 8;

/// Linux's `PATH_MAX`: the longest path, NUL included, the kernel resolves at all
/// (`bpf_d_path` fails with `ENAMETOOLONG` beyond it).
pub const LINUX_PATH_MAX: usize = 4096;
/// The probes' path buffer: a power of two (indices are masked with it) of two
/// [`LINUX_PATH_MAX`] halves: the file hooks' dentry walk builds a path backwards in
/// the upper half and moves it to the start (the ranges never overlap).
pub const SCRATCH_PATH_CAP: usize = 8192;
/// Scratch slots per CPU: one is claimed (compare-and-swap) by every program run
/// that resolves a path and released when it returns, so a run preempted on a CPU
/// keeps its own buffers while others run there. More runs than this preempted at
/// once on one CPU: the next one cannot decide and fails closed
/// ([`UNDECIDED_NO_SCRATCH`]).
pub const SCRATCH_SLOTS: usize = 16;
/// Directory prefixes of one path whose pattern rules the probes try (they are
/// nested: `/`, `/usr/`, `/usr/bin/`, ...). The agent refuses a policy set in which a
/// path could pass more prefixes with patterns than this.
pub const MAX_PATTERN_PREFIXES: usize = 8;

/// Names of the maps and globals in the BPF object, as user space looks them up.
pub mod names {
    pub const RULES: &str = "RULES";
    pub const PREFIXES: &str = "PREFIXES";
    pub const GLOBS: &str = "GLOBS";
    pub const ACTIVE: &str = "ACTIVE";
    /// Task-local storage (`BPF_MAP_TYPE_TASK_STORAGE`): each task's identity.
    pub const TASK_IDENTITY: &str = "TASK_IDENTITY";
    pub const EXE_PATHS: &str = "EXE_PATHS";
    pub const EVENTS: &str = "EVENTS";
    pub const EVENT_DROPS: &str = "EVENT_DROPS";
    pub const EXEC_EVENTS: &str = "EXEC_EVENTS";
    pub const KERNEL_OFFSETS: &str = "KERNEL_OFFSETS";
    pub const PATH_HASH_KEY: &str = "PATH_HASH_KEY";
    pub const AGENT_STATE: &str = "AGENT_STATE";
    /// Canonical names of protected inodes ([`super::AliasKey`]).
    pub const FILE_ALIASES: &str = "FILE_ALIASES";
    /// Locked mode ([`super::LockState`], one entry): who the agent is, and whether
    /// the kernel denies tampering with edgearmor to everyone else.
    pub const LOCK_STATE: &str = "LOCK_STATE";
    /// Task-local storage: [`super::AGENT_MARKED`] on the tasks that are the agent.
    pub const AGENT_MARK: &str = "AGENT_MARK";
    /// The BPF objects and pins locked mode protects ([`super::ProtectedKey`]).
    pub const PROTECTED: &str = "PROTECTED";
    /// Maps pinned in bpffs so that enforcement, identities, rules and unread events
    /// outlive the agent process, and the next agent adopts them.
    pub const PERSISTENT: [&str; 13] = [
        RULES,
        PREFIXES,
        GLOBS,
        FILE_ALIASES,
        ACTIVE,
        TASK_IDENTITY,
        EXE_PATHS,
        EVENTS,
        EVENT_DROPS,
        AGENT_STATE,
        LOCK_STATE,
        AGENT_MARK,
        PROTECTED,
    ];
}

/// Byte size of the `EVENTS` ring buffer (decisions of the enforcing probes).
pub const EVENTS_RING_BYTES: u32 = 256 * 1024;
/// Byte size of the `EXEC_EVENTS` ring buffer (monitor-only mode's exec reports).
pub const EXEC_EVENTS_RING_BYTES: u32 = 64 * 1024;
/// Every ring buffer in the object and its byte size. The kernel creates a ring buffer
/// only when its size is a power of two and a whole number of pages, so the agent
/// checks these against the running kernel's page size before loading.
pub const RING_BUFFERS: [(&str, u32); 2] = [
    (names::EVENTS, EVENTS_RING_BYTES),
    (names::EXEC_EVENTS, EXEC_EVENTS_RING_BYTES),
];
/// The largest page size of the kernels edgearmor targets (arm64 with 64 KiB pages;
/// 16 KiB on a Raspberry Pi 5, 4 KiB elsewhere).
pub const MAX_TARGET_PAGE_SIZE: u32 = 64 * 1024;

/// Whether the kernel can create a ring buffer of `bytes` on `page_size`-byte pages.
pub const fn ring_buffer_fits(bytes: u32, page_size: u32) -> bool {
    bytes.is_power_of_two() && page_size != 0 && bytes.is_multiple_of(page_size)
}

const _: () = {
    let mut i = 0;
    while i < RING_BUFFERS.len() {
        assert!(ring_buffer_fits(RING_BUFFERS[i].1, MAX_TARGET_PAGE_SIZE));
        i += 1;
    }
};

/// `AGENT_STATE[0]`: what an adopting agent needs from the one before it (not read
/// by the probes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentState {
    /// The path-hash key every rule and identity hash was made with.
    pub path_hash_key: [u64; 2],
    /// `EVENT_DROPS` total already accounted for by an agent.
    pub drops_seen: u64,
    /// 1 once written.
    pub valid: u64,
}

/// `LOCK_STATE[0]`: locked mode, written by the agent that locks (and by every agent
/// that loads while locked), read by the probes' self-protection hooks.
///
/// Devices are the kernel's encoding (`sb->s_dev`: `major << 20 | minor`), not
/// `stat`'s; inodes are `i_ino`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LockState {
    /// [`LOCKED`] when the kernel denies tampering; anything else: unlocked.
    pub locked: u32,
    /// The id self-protection alerts carry (`PolicyName: edgearmor-self-protection`).
    pub policy_id: u32,
    /// The agent binary (`/proc/self/exe` of the locking agent): a task that execs it,
    /// untraced, is the agent.
    pub agent_ino: u64,
    pub agent_dev: u32,
    /// The bpffs `pin_dir` is on (umount and mounts over it are denied).
    pub pin_dev: u32,
    /// The configuration file the agent was locked with.
    pub config_ino: u64,
    pub config_dev: u32,
    pub _pad: u32,
}

/// `LockState::locked` of a locked kernel.
pub const LOCKED: u32 = 1;

const _: () = assert!(core::mem::size_of::<LockState>() == 40);

/// `AGENT_MARK` value of a task that is the agent: it (or the task it descends from)
/// exec'd the binary `LockState` names while not being traced.
pub const AGENT_MARKED: u32 = 1;

/// Key of the `PROTECTED` hash map (value: 1): an object of edgearmor's that locked
/// mode keeps every other process from obtaining (by id, or by opening its pin).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProtectedKey {
    /// `PROTECTED_*`.
    pub kind: u32,
    /// [`PROTECTED_MOUNTPOINT`]: the inode's `s_dev`; else 0.
    pub dev: u32,
    /// The map, program or link id; for [`PROTECTED_PIN`] the pin's inode number on
    /// `LockState::pin_dev`; for [`PROTECTED_MOUNTPOINT`] the inode number.
    pub id: u64,
}

pub const PROTECTED_MAP: u32 = 1;
pub const PROTECTED_PROG: u32 = 2;
pub const PROTECTED_LINK: u32 = 3;
pub const PROTECTED_PIN: u32 = 4;
/// An inode nothing may be mounted on (`sb_mount`, `move_mount`) and whose mount may
/// not be unmounted when it is that mount's root (`sb_umount`): every protected file
/// and directory, what the protected directories hold, every directory above them
/// (`/` too), so neither a mount over them nor a lazy unmount of a mount above the
/// pins takes them away.
pub const PROTECTED_MOUNTPOINT: u32 = 5;
/// [`PROTECTED_MOUNTPOINT`] entries the agent writes at most; more refuse the lock,
/// naming the limit.
pub const MAX_PROTECTED_MOUNTPOINTS: usize = 512;
/// Entries of `PROTECTED`: every map, program, link and pin of two agents' objects
/// (the one replaced and the one replacing it) with room to spare, and the
/// mountpoints.
pub const PROTECTED_CAPACITY: u32 = 1024 + MAX_PROTECTED_MOUNTPOINTS as u32;

const _: () = assert!(core::mem::size_of::<ProtectedKey>() == 16);

/// `DecisionEvent::detail[0]` of a [`CLASS_TAMPER`] event: what was denied.
/// `detail[1]` and `detail[2]` per kind: the `bpf()` command and the object id; the
/// umount flags; the mount flags; nothing; the ptrace mode and the target's tgid;
/// the signal and the target's tgid.
pub const TAMPER_BPF: u32 = 1;
/// Opening a pin (`inode_permission`); `detail[2]`: the pin's inode.
pub const TAMPER_PIN: u32 = 2;
pub const TAMPER_UMOUNT: u32 = 3;
pub const TAMPER_MOUNT: u32 = 4;
pub const TAMPER_MOVE_MOUNT: u32 = 5;
pub const TAMPER_PTRACE: u32 = 6;
pub const TAMPER_SIGNAL: u32 = 7;
/// `file_send_sigiotask`: a SIGIO/`F_SETSIG` signal aimed at the agent.
pub const TAMPER_SIGIO: u32 = 8;

/// Program names in the BPF object and the kernel hook each one attaches to.
pub mod programs {
    /// `(program, hook)` for the BPF-LSM programs that keep process identities:
    /// attached first, and the running tasks identified (`IDENTIFY_RUNNING`), before
    /// any hook enforces.
    pub const IDENTITY: [(&str, &str); 2] = [
        ("record_exec", "bprm_committed_creds"),
        ("inherit_identity", "task_alloc"),
    ];
    /// `(program, tracepoint)`: inheritance for the forks that passed `task_alloc`
    /// just before `inherit_identity` was attached.
    pub const IDENTITY_CATCH_UP: (&str, &str) = ("inherit_in_flight", "sched_process_fork");
    /// `(program, iterator)`: a task iterator giving every task that has no identity
    /// yet (it started before the probes) the identity of its executable; run twice,
    /// after the programs above are attached.
    pub const IDENTIFY_RUNNING: (&str, &str) = ("identify_running", "task");
    /// What `identify_running` writes per task it identified, and per task whose
    /// identity the kernel could not store.
    pub const IDENTIFIED: u8 = b'+';
    pub const NOT_STORED: u8 = b'!';
    /// `(program, hook)` for the enforcing BPF-LSM programs.
    pub const LSM: [(&str, &str); 21] = [
        ("check_exec_args", "bprm_committed_creds"),
        ("deny_setuid", "task_fix_setuid"),
        ("deny_setgid", "task_fix_setgid"),
        ("check_exec", "bprm_check_security"),
        ("check_open", "file_open"),
        ("check_unlink", "path_unlink"),
        ("check_rmdir", "path_rmdir"),
        ("check_mkdir", "path_mkdir"),
        ("check_mknod", "path_mknod"),
        ("check_symlink", "path_symlink"),
        ("check_link", "path_link"),
        ("check_rename", "path_rename"),
        ("check_truncate", "path_truncate"),
        ("check_file_truncate", "file_truncate"),
        ("check_chmod", "path_chmod"),
        ("check_chown", "path_chown"),
        ("check_permission", "file_permission"),
        ("check_mmap", "mmap_file"),
        ("check_mprotect", "file_mprotect"),
        ("check_socket", "socket_create"),
        ("check_capable", "capable"),
    ];
    /// `(program, what covers its operation where the kernel lacks its hook)`:
    /// programs attached only where the kernel has the hook (`bpf_lsm_<hook>` in its
    /// BTF). `file_truncate` came in Linux 6.2; before, `ftruncate` calls
    /// `path_truncate` (`check_truncate`), so nothing goes unchecked.
    /// `(program, hook)` for locked mode's self-protection, attached only when the
    /// agent locks (each needs `bpf_lsm_<hook>` in the kernel's BTF).
    pub const LOCK: [(&str, &str); 8] = [
        ("lock_bpf", "bpf"),
        ("lock_pins", "inode_permission"),
        ("lock_umount", "sb_umount"),
        ("lock_mount", "sb_mount"),
        ("lock_move_mount", "move_mount"),
        ("lock_ptrace", "ptrace_access_check"),
        ("lock_kill", "task_kill"),
        ("lock_sigio", "file_send_sigiotask"),
    ];
    pub const WHERE_HOOKED: [(&str, &str); 1] = [(
        "check_file_truncate",
        "ftruncate is checked by path_truncate (check_truncate)",
    )];
    /// Monitor-only mode (no BPF-LSM): reports every exec; needs no trampoline.
    pub const MONITOR_EXEC: (&str, &str) = ("watch_exec", "sched_process_exec");
}

/// Capacities of the rule maps. Each holds two generations during a switch, so one
/// policy set may use half of each ([`RULES_PER_SET`], ...); the agent refuses a set
/// that needs more.
pub const RULES_CAPACITY: u32 = 8192;
pub const PREFIXES_CAPACITY: u32 = 4096;
pub const GLOBS_CAPACITY: u32 = 512;
pub const RULES_PER_SET: usize = RULES_CAPACITY as usize / 2;
pub const PREFIXES_PER_SET: usize = PREFIXES_CAPACITY as usize / 2;
pub const GLOBS_PER_SET: usize = GLOBS_CAPACITY as usize / 2;

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
    pub file_f_mode: u32,
    /// `dentry.d_name.name`.
    pub dentry_name: u32,
    pub cred_uid: u32,
    pub cred_euid: u32,
    pub cred_fsuid: u32,
    pub cred_gid: u32,
    pub cred_egid: u32,
    pub cred_fsgid: u32,
    /// `linux_binprm.p`: where the argument strings start (the new stack).
    pub binprm_p: u32,
    /// `linux_binprm.argc`.
    pub binprm_argc: u32,
    pub task_mm: u32,
    pub mm_exe_file: u32,
    // The dentry walk (`probes/bpf/src/dentry_path.rs`) and the file hooks.
    pub dentry_parent: u32,
    /// `dentry.d_name.len`.
    pub dentry_name_len: u32,
    pub dentry_inode: u32,
    pub inode_ino: u32,
    pub inode_sb: u32,
    pub inode_mode: u32,
    pub sb_dev: u32,
    /// `struct mount` (fs/mount.h) embeds the `struct vfsmount` at `mount.mnt`.
    pub mount_mnt: u32,
    pub mount_parent: u32,
    pub mount_mountpoint: u32,
    pub vfsmount_root: u32,
    pub path_mnt: u32,
    pub path_dentry: u32,
    pub task_fs: u32,
    /// `fs_struct.root`, the task's root directory (a `struct path`).
    pub fs_root: u32,
    /// `vm_area_struct.vm_file` and `vm_flags` (`file_mprotect`).
    pub vma_file: u32,
    pub vma_flags: u32,
    /// `task_struct.ptrace` (non-zero while traced): locked mode's agent mark.
    pub task_ptrace: u32,
    /// `vfsmount.mnt_sb`: locked mode's mount hooks.
    pub vfsmount_sb: u32,
}

impl KernelOffsets {
    pub const ZERO: Self = Self {
        task_tgid: 0,
        task_real_parent: 0,
        binprm_file: 0,
        binprm_filename: 0,
        file_f_path: 0,
        file_f_mode: 0,
        dentry_name: 0,
        cred_uid: 0,
        cred_euid: 0,
        cred_fsuid: 0,
        cred_gid: 0,
        cred_egid: 0,
        cred_fsgid: 0,
        binprm_p: 0,
        binprm_argc: 0,
        task_mm: 0,
        mm_exe_file: 0,
        dentry_parent: 0,
        dentry_name_len: 0,
        dentry_inode: 0,
        inode_ino: 0,
        inode_sb: 0,
        inode_mode: 0,
        sb_dev: 0,
        mount_mnt: 0,
        mount_parent: 0,
        mount_mountpoint: 0,
        vfsmount_root: 0,
        path_mnt: 0,
        path_dentry: 0,
        task_fs: 0,
        fs_root: 0,
        vma_file: 0,
        vma_flags: 0,
        task_ptrace: 0,
        vfsmount_sb: 0,
    };
}

/// A resolved absolute path in [`PATH_CAP`] bytes. Only the first `len` bytes mean
/// anything: `bpf_d_path` leaves stale bytes behind the string, and nothing (hash,
/// decoding) reads past `len`.
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
/// The path is longer than [`PATH_CAP`] - 1 bytes: `words` holds its first
/// [`PATH_CAP`] - 1 bytes, `len` the whole length.
pub const EXE_FLAG_TRUNCATED: u32 = 2;
/// A file event's target was reached by another name (a hard link, a bind mount, a
/// renamed ancestor, another root or mount namespace): the path walk met a protected
/// inode (`FILE_ALIASES`) and the target is its canonical name.
pub const EXE_FLAG_ALIASED: u32 = 4;

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

    /// Byte `i` (0 past the end of the capacity).
    #[inline(always)]
    pub fn byte_at(&self, i: usize) -> u8 {
        (self.words[(i / 8) & (PATH_WORDS - 1)] >> ((i % 8) * 8)) as u8
    }
}

// ------------------------------------------------------------------ classes and rules

/// `RuleKey::class` and `DecisionEvent::class`.
pub const CLASS_PROCESS: u32 = 1;
pub const CLASS_FILE: u32 = 2;
pub const CLASS_NETWORK: u32 = 3;
pub const CLASS_CAPABILITY: u32 = 4;
pub const CLASS_SETID: u32 = 5;
/// Locked mode's self-protection (not a rule class: never in `RULES`).
pub const CLASS_TAMPER: u32 = 6;

/// The bit of a class in [`ActivePolicy::class_mask`].
#[inline(always)]
pub const fn class_bit(class: u32) -> u32 {
    1 << (class & 31)
}

/// `RuleKey::kind`: what `target` names.
/// The path hash of the whole path.
pub const MATCH_EXACT: u32 = 1;
/// The hash of a directory prefix: entries directly in that directory.
pub const MATCH_DIRECTORY: u32 = 2;
/// The hash of a directory prefix: everything below it.
pub const MATCH_RECURSIVE: u32 = 3;
/// A protocol, capability or setid syscall number (see `item_*`).
pub const MATCH_ITEM: u32 = 4;
/// `target` 0: the class (for this source) is in allow-list mode; the value holds
/// the default posture per slot.
pub const MATCH_ALLOW_LIST: u32 = 5;
/// The hash of an applet name (the last component of the name execve was given,
/// e.g. `wget`): process rules on a link to a multi-call binary. They apply only
/// when the executable run is marked with [`MATCH_MULTI_CALL`].
pub const MATCH_APPLET: u32 = 6;
/// The hash of a multi-call binary's path (e.g. `/bin/busybox`), source
/// [`ANY_SOURCE`]: an exec of this file is also matched by its [`MATCH_APPLET`]
/// name. Present only while some applet rule exists; the value is unused.
pub const MATCH_MULTI_CALL: u32 = 7;

/// Multi-call programs, by file name prefix (as busybox itself tests its name):
/// run through a link, they run the applet the link is named after; run as
/// themselves, the one the next argument names (`busybox wget`).
pub const MULTI_CALL_PROGRAMS: [&str; 2] = ["busybox", "toybox"];
/// [`MULTI_CALL_PROGRAMS`] for the probes: each name's bytes as a little-endian
/// word, and its length (at most 8).
pub const MULTI_CALL_WORDS: [(u64, u32); 2] = [
    name_word(MULTI_CALL_PROGRAMS[0]),
    name_word(MULTI_CALL_PROGRAMS[1]),
];

const fn name_word(name: &str) -> (u64, u32) {
    let bytes = name.as_bytes();
    assert!(bytes.len() <= 8);
    let mut word = 0u64;
    let mut i = 0;
    while i < bytes.len() {
        word |= (bytes[i] as u64) << (8 * i);
        i += 1;
    }
    (word, bytes.len() as u32)
}
/// Arguments followed through a multi-call program run as itself
/// (`busybox busybox wget`); a longer chain is denied under applet rules.
pub const MULTI_CALL_DISPATCH_DEPTH: u32 = 4;
/// `DecisionEvent::detail[0]` of an exec decided after commit by the applet its
/// arguments name (the process is killed under Block): `invoked` holds that
/// argument as given, not a path.
pub const EXEC_BY_ARGUMENTS: u32 = 1;
/// `target` 0, [`ANY_SOURCE`]: what a path hook does when it cannot decide (path not
/// resolvable, no scratch slot, pattern match over its step bound): Block when the
/// class has any Block rule or a block posture, else Audit; the verdict names the
/// policy reported. Written for every path class with rules.
pub const MATCH_UNDECIDABLE: u32 = 8;

/// Key of the `RULES` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RuleKey {
    /// Path hash of the acting executable, or [`ANY_SOURCE`].
    pub source: u64,
    pub target: u64,
    pub class: u32,
    pub kind: u32,
    pub generation: u32,
    pub _pad: u32,
}

/// `RuleKey::source` of rules without `fromSource`. No path hashes to it.
pub const ANY_SOURCE: u64 = u64::MAX;

/// `Verdict::action`, ordered: a larger action wins when several rules match.
pub const ACTION_NONE: u32 = 0;
pub const ACTION_ALLOW: u32 = 1;
pub const ACTION_AUDIT: u32 = 2;
pub const ACTION_BLOCK: u32 = 3;

/// `Verdict::policy_id` of a default-posture decision (`PolicyName: DefaultPosture`).
pub const POLICY_DEFAULT_POSTURE: u32 = u32::MAX;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub action: u32,
    /// Index into the agent's policy table; events echo it.
    pub policy_id: u32,
}

impl Verdict {
    pub const NONE: Self = Self {
        action: ACTION_NONE,
        policy_id: 0,
    };

    /// Keeps the stronger of `self` and `other` (the first one on a tie).
    #[inline(always)]
    pub fn merge(&mut self, other: &Verdict) {
        if other.action > self.action {
            *self = *other;
        }
    }
}

/// Value of the `RULES` map (and of each pattern rule): one verdict per access slot.
/// Processes, sockets, capabilities and setid calls use [`SLOT_READ`] only; files
/// decide reads and writes separately (`readOnly`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleValue {
    pub slots: [Verdict; 2],
}

pub const SLOT_READ: usize = 0;
pub const SLOT_WRITE: usize = 1;

impl RuleValue {
    pub const NONE: Self = Self {
        slots: [Verdict::NONE; 2],
    };

    #[inline(always)]
    pub fn merge(&mut self, other: &RuleValue) {
        self.slots[0].merge(&other.slots[0]);
        self.slots[1].merge(&other.slots[1]);
    }
}

/// Key of the `PREFIXES` index: which directory prefixes have rules.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PrefixKey {
    pub prefix: u64,
    pub class: u32,
    pub generation: u32,
}

/// `PREFIXES` value bits.
pub const PREFIX_DIRECTORY: u32 = 1;
pub const PREFIX_RECURSIVE: u32 = 2;
pub const PREFIX_PATTERN: u32 = 4;

/// Tokens of a pattern, after its literal directory prefix.
pub const GLOB_CAP: usize = 64;
/// Patterns per (directory prefix, source) key.
pub const GLOBS_PER_KEY: usize = 8;

/// `GlobRule::kinds[i]`.
pub const GLOB_LITERAL: u8 = 0;
/// `?`: one byte other than `/`.
pub const GLOB_ANY_BYTE: u8 = 1;
/// `*`: any run of bytes without `/`.
pub const GLOB_STAR: u8 = 2;

/// A `matchPatterns` rule, matched against what follows its literal directory
/// prefix (the `RuleKey::target` it is filed under, with `kind` [`MATCH_DIRECTORY`]).
/// 8-byte aligned so the probes copy it word by word.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlobRule {
    pub bytes: [u8; GLOB_CAP],
    pub kinds: [u8; GLOB_CAP],
    pub len: u32,
    pub _pad: u32,
    pub value: RuleValue,
}

/// Value of the `GLOBS` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlobList {
    pub count: u32,
    pub _pad: u32,
    pub rules: [GlobRule; GLOBS_PER_KEY],
}

impl GlobRule {
    pub const EMPTY: Self = Self {
        bytes: [0; GLOB_CAP],
        kinds: [0; GLOB_CAP],
        len: 0,
        _pad: 0,
        value: RuleValue::NONE,
    };

    /// The reference matcher (the probes run the same steps): `text` against the
    /// pattern, `*` never crossing `/`. Classic one-backtrack-point wildcard matching,
    /// which is exact here because a `*` cannot cross the `/` that separates two
    /// components; `max_steps` bounds the work (no match when exceeded).
    pub fn matches(&self, text: &[u8], max_steps: u32) -> bool {
        let mut m = GlobMatch::new(text.len() as u32, self.len);
        let mut steps = 0;
        while steps < max_steps {
            let c = text.get(m.t as usize).copied().unwrap_or(0);
            let c_mark = text.get(m.mark as usize).copied().unwrap_or(0);
            match m.step(self, c, c_mark) {
                GLOB_STEP_MATCH => return true,
                GLOB_STEP_FAIL => return false,
                _ => {}
            }
            steps += 1;
        }
        false
    }
}

pub const GLOB_STEP_CONTINUE: u32 = 0;
pub const GLOB_STEP_MATCH: u32 = 1;
pub const GLOB_STEP_FAIL: u32 = 2;

/// The state of one pattern match, advanced one step at a time (in the kernel, by a
/// `bpf_loop` callback).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GlobMatch {
    /// Next text byte.
    pub t: u32,
    /// Next pattern token.
    pub p: u32,
    /// Index of the token after the last `*`: never 0, so 0 means no star yet.
    pub star: u32,
    /// Text position the last `*` resumes from.
    pub mark: u32,
    pub text_len: u32,
    pub pat_len: u32,
}

impl GlobMatch {
    #[inline(always)]
    pub fn new(text_len: u32, pat_len: u32) -> Self {
        Self {
            t: 0,
            p: 0,
            star: 0,
            mark: 0,
            text_len,
            pat_len,
        }
    }

    /// One step. `c` is text byte `t` and `c_mark` text byte `mark` (0 past the end).
    #[inline(always)]
    pub fn step(&mut self, rule: &GlobRule, c: u8, c_mark: u8) -> u32 {
        let p = (self.p as usize) & (GLOB_CAP - 1);
        let in_pat = self.p < self.pat_len && (self.p as usize) < GLOB_CAP;
        if self.t >= self.text_len {
            // Text consumed: only trailing stars may remain.
            if in_pat && rule.kinds[p] == GLOB_STAR {
                self.p += 1;
                return GLOB_STEP_CONTINUE;
            }
            return if self.p >= self.pat_len {
                GLOB_STEP_MATCH
            } else {
                GLOB_STEP_FAIL
            };
        }
        if in_pat {
            let kind = rule.kinds[p];
            if kind == GLOB_STAR {
                self.star = self.p + 1;
                self.mark = self.t;
                self.p += 1;
                return GLOB_STEP_CONTINUE;
            }
            let ok = if kind == GLOB_ANY_BYTE {
                c != b'/'
            } else {
                rule.bytes[p] == c
            };
            if ok {
                self.p += 1;
                self.t += 1;
                return GLOB_STEP_CONTINUE;
            }
        }
        // Mismatch: the last star swallows one more byte, which must not be a `/`.
        // (A `/` pins every earlier star too, so no other alignment can match.)
        if self.star != 0 && c_mark != b'/' && self.mark < self.text_len {
            self.mark += 1;
            self.t = self.mark;
            self.p = self.star;
            return GLOB_STEP_CONTINUE;
        }
        GLOB_STEP_FAIL
    }
}

/// Value of the one-entry `ACTIVE` array: the generation every hook enforces, and
/// which classes have any rule in it (hooks of other classes return at once).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ActivePolicy {
    pub generation: u32,
    pub class_mask: u32,
}

// ------------------------------------------------------------------ items

/// `MATCH_ITEM` targets of the network class: KubeArmor's protocol names.
pub const ITEM_TCP: u64 = 1;
pub const ITEM_UDP: u64 = 2;
pub const ITEM_ICMP: u64 = 3;
pub const ITEM_RAW: u64 = 4;
pub const ITEM_SCTP: u64 = 5;
/// An `AF_INET`/`AF_INET6` socket no protocol name covers (DCCP, L2TP/IP, a
/// protocol added after this table): every Block or Audit network rule also holds
/// it, so what the table does not know is denied where a rule covers the family
/// (fail closed), and an allow-list never allows it.
pub const ITEM_INET_UNCLASSIFIED: u64 = 6;

pub const AF_INET: u32 = 2;
pub const AF_INET6: u32 = 10;
pub const AF_PACKET: u32 = 17;
pub const SOCK_STREAM: u32 = 1;
pub const SOCK_DGRAM: u32 = 2;
pub const SOCK_RAW: u32 = 3;
pub const SOCK_SEQPACKET: u32 = 5;
/// The kernel's `SOCK_TYPE_MASK`: the type without `SOCK_NONBLOCK` / `SOCK_CLOEXEC`.
pub const SOCK_TYPE_MASK: u32 = 0xf;

pub const IPPROTO_ICMP: u32 = 1;
pub const IPPROTO_TCP: u32 = 6;
pub const IPPROTO_UDP: u32 = 17;
pub const IPPROTO_ICMPV6: u32 = 58;
pub const IPPROTO_SCTP: u32 = 132;
pub const IPPROTO_UDPLITE: u32 = 136;
/// SMC-R over a TCP handshake, falling back to plain TCP (`AF_INET`, Linux 6.11+).
pub const IPPROTO_SMC: u32 = 256;
/// Multipath TCP: ordinary TCP on the wire.
pub const IPPROTO_MPTCP: u32 = 262;

/// The protocol names a `socket(family, type, protocol)` call is covered by: at
/// most two (an ICMP raw socket is both `icmp` and `raw`); 0 = none.
///
/// Decided by what the kernel creates for the call (`inet_create`'s table):
/// protocol 0 is the type's default (TCP for streams, UDP for datagrams, SCTP for
/// seqpackets); MPTCP and SMC are `tcp`, UDP-Lite is `udp`, ICMP/ICMPv6 datagram
/// ("ping") sockets are `icmp`, every `SOCK_RAW` and every `AF_PACKET` socket
/// (any type; `(AF_INET, SOCK_PACKET)` reaches the hook as `AF_PACKET`) is `raw`.
/// Any other Internet socket is [`ITEM_INET_UNCLASSIFIED`]; other families are not
/// network rules' business (`AF_UNIX`, `AF_NETLINK`, ...).
#[inline(always)]
pub fn socket_items(family: u32, sock_type: u32, protocol: u32) -> [u64; 2] {
    let sock_type = sock_type & SOCK_TYPE_MASK;
    if family == AF_PACKET {
        return [ITEM_RAW, 0];
    }
    if family != AF_INET && family != AF_INET6 {
        return [0, 0];
    }
    let icmp = protocol == IPPROTO_ICMP || protocol == IPPROTO_ICMPV6;
    let item = match (sock_type, protocol) {
        (SOCK_RAW, _) if icmp => return [ITEM_RAW, ITEM_ICMP],
        (SOCK_RAW, _) => ITEM_RAW,
        (SOCK_STREAM, 0 | IPPROTO_TCP | IPPROTO_MPTCP | IPPROTO_SMC) => ITEM_TCP,
        (SOCK_STREAM | SOCK_SEQPACKET, IPPROTO_SCTP) | (SOCK_SEQPACKET, 0) => ITEM_SCTP,
        (SOCK_DGRAM, 0 | IPPROTO_UDP | IPPROTO_UDPLITE) => ITEM_UDP,
        (SOCK_DGRAM, _) if icmp => ITEM_ICMP,
        _ => ITEM_INET_UNCLASSIFIED,
    };
    [item, 0]
}

/// `MATCH_ITEM` target of a capability rule (targets are never 0).
#[inline(always)]
pub const fn item_capability(cap: u32) -> u64 {
    cap as u64 + 1
}

/// `MATCH_ITEM` target of a setid rule.
#[inline(always)]
pub const fn item_setid(bit: u32) -> u64 {
    bit as u64 + 1
}

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

/// Setid kinds (`DecisionEvent::detail[0]`).
pub const SETID_KIND_UID: u32 = 1;
pub const SETID_KIND_GID: u32 = 2;

/// The kernel's `LSM_SETID_*` values telling which syscall family called.
pub const LSM_SETID_ID: u32 = 1;
pub const LSM_SETID_RE: u32 = 2;
pub const LSM_SETID_RES: u32 = 4;
pub const LSM_SETID_FS: u32 = 8;

/// File access bits (`DecisionEvent::detail[0]` of file events).
pub const ACCESS_READ: u32 = 1;
pub const ACCESS_WRITE: u32 = 2;
pub const ACCESS_UNLINK: u32 = 4;

/// `DecisionEvent::detail[1]` of file events: the hook that decided, as KubeArmor
/// names it in `Data` (`lsm=SECURITY_PATH_RENAME`). The agent maps these to the wire's
/// `LsmHook`; the table is [`FILE_HOOKS`].
pub const FILE_HOOK_OPEN: u32 = 0;
pub const FILE_HOOK_UNLINK: u32 = 1;
pub const FILE_HOOK_RMDIR: u32 = 2;
pub const FILE_HOOK_MKDIR: u32 = 3;
/// `path_mknod`: also every `open(O_CREAT)` of a name that does not exist yet.
pub const FILE_HOOK_MKNOD: u32 = 4;
pub const FILE_HOOK_SYMLINK: u32 = 5;
/// `path_link`: the existing file and the new name.
pub const FILE_HOOK_LINK: u32 = 6;
/// `path_rename`: the source and the target name.
pub const FILE_HOOK_RENAME: u32 = 7;
pub const FILE_HOOK_TRUNCATE: u32 = 8;
/// `file_truncate` (`ftruncate` on kernels that have the hook; before, `ftruncate`
/// goes through `path_truncate`).
pub const FILE_HOOK_FILE_TRUNCATE: u32 = 9;
pub const FILE_HOOK_CHMOD: u32 = 10;
pub const FILE_HOOK_CHOWN: u32 = 11;
/// `file_permission`: a read or write through a descriptor (one opened before the
/// policy, or before a reload tightened it).
pub const FILE_HOOK_PERMISSION: u32 = 12;
/// `mmap_file`: a shared writable mapping.
pub const FILE_HOOK_MMAP: u32 = 13;
/// `file_mprotect`: a shared file mapping made writable.
pub const FILE_HOOK_MPROTECT: u32 = 14;
/// Every file hook id and KubeArmor's name for it.
pub const FILE_HOOKS: [(u32, &str); 15] = [
    (FILE_HOOK_OPEN, "SECURITY_FILE_OPEN"),
    (FILE_HOOK_UNLINK, "SECURITY_PATH_UNLINK"),
    (FILE_HOOK_RMDIR, "SECURITY_PATH_RMDIR"),
    (FILE_HOOK_MKDIR, "SECURITY_PATH_MKDIR"),
    (FILE_HOOK_MKNOD, "SECURITY_PATH_MKNOD"),
    (FILE_HOOK_SYMLINK, "SECURITY_PATH_SYMLINK"),
    (FILE_HOOK_LINK, "SECURITY_PATH_LINK"),
    (FILE_HOOK_RENAME, "SECURITY_PATH_RENAME"),
    (FILE_HOOK_TRUNCATE, "SECURITY_PATH_TRUNCATE"),
    (FILE_HOOK_FILE_TRUNCATE, "SECURITY_FILE_TRUNCATE"),
    (FILE_HOOK_CHMOD, "SECURITY_PATH_CHMOD"),
    (FILE_HOOK_CHOWN, "SECURITY_PATH_CHOWN"),
    (FILE_HOOK_PERMISSION, "SECURITY_FILE_PERMISSION"),
    (FILE_HOOK_MMAP, "SECURITY_MMAP_FILE"),
    (FILE_HOOK_MPROTECT, "SECURITY_FILE_MPROTECT"),
];

// ------------------------------------------------------------------ file aliases

/// Canonical names of protected inodes: a protected file or directory reached by
/// another name (a hard link, a bind mount, a renamed ancestor, another mount
/// namespace or root) is decided as if it were reached by its protected name. The
/// agent writes one entry per inode that a file rule names (and per other-linked
/// file under a protected directory) for each generation; the path walk looks up the
/// target and each ancestor directory.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AliasKey {
    /// `inode->i_ino`.
    pub ino: u64,
    /// `inode->i_sb->s_dev`, the kernel's encoding (`major << 20 | minor`: what
    /// `/proc/self/mountinfo` prints as `major:minor`).
    pub dev: u32,
    pub generation: u32,
}

/// Capacity of a canonical name, NUL included; a directory's ends with `/`. As long
/// as the longest path the kernel resolves, so every protected path has its entry
/// (entries are allocated one by one: a set pays for the names it has).
pub const ALIAS_PATH_CAP: usize = LINUX_PATH_MAX;
const _: () = assert!(ALIAS_PATH_CAP > MAX_KERNEL_PATH_BYTES);

/// The canonical name of an [`AliasKey`]'s inode.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct AliasValue {
    /// Bytes of `path` in use (no NUL).
    pub len: u32,
    pub _pad: u32,
    pub path: [u8; ALIAS_PATH_CAP],
}

/// Capacity of `FILE_ALIASES`; like the rule maps it holds two generations during a
/// switch, so one policy set may use half ([`ALIASES_PER_SET`]). As many as `RULES`:
/// each fixed path of a file rule takes a `RULES` entry, so every set within
/// [`RULES_PER_SET`] has an alias entry for each (the rest of the room is for files
/// found under protected directories). Entries are allocated when written.
pub const ALIASES_CAPACITY: u32 = RULES_CAPACITY;
pub const ALIASES_PER_SET: usize = ALIASES_CAPACITY as usize / 2;
const _: () = assert!(ALIASES_PER_SET >= RULES_PER_SET);

// ------------------------------------------------------------------ exec identity

/// File identity of executables: a process rule names a path, and the kernel decides
/// on the file that path names. `EXEC_ALIASES` (keyed like `FILE_ALIASES`, by
/// `{i_ino, s_dev, generation}`) holds the canonical name of every inode a process
/// rule names (and of the other-linked files under its directories); `check_exec`
/// decides an exec of such an inode as its canonical name whatever name, mount,
/// namespace or root reached it (an overlayfs file by the real file under it), and
/// the [`EXEC_IDENTITY_PROGRAMS`] carry the same decision to a `PROT_EXEC` mapping of
/// the file (`ld.so PROGRAM`), to a file renamed over a protected one (a package
/// upgrade), and forget an inode the kernel frees with no name left.
pub mod exec_identity {
    /// The map of canonical names of protected executables ([`super::AliasKey`] ->
    /// [`super::AliasValue`]), pinned with [`super::names::PERSISTENT`].
    pub const EXEC_ALIASES: &str = "EXEC_ALIASES";
    /// The load-time global holding [`ExecOffsets`].
    pub const EXEC_OFFSETS: &str = "EXEC_OFFSETS";
    /// Maps pinned besides [`super::names::PERSISTENT`].
    pub const PERSISTENT: [&str; 1] = [EXEC_ALIASES];
    /// `(program, hook)` of the enforcing programs of exec identity, attached with
    /// [`super::programs::LSM`].
    pub const PROGRAMS: [(&str, &str); 4] = [
        ("check_exec_map", "mmap_file"),
        ("check_exec_mprotect", "file_mprotect"),
        ("follow_rename", "inode_rename"),
        ("forget_freed", "inode_free_security"),
    ];
    /// Capacity of `EXEC_ALIASES` (two generations during a switch, like the rules).
    pub const EXEC_ALIASES_CAPACITY: u32 = super::ALIASES_CAPACITY;
    pub const EXEC_ALIASES_PER_SET: usize = EXEC_ALIASES_CAPACITY as usize / 2;

    /// `DecisionEvent::detail[0]` of a process event decided on a `PROT_EXEC`
    /// mapping of a protected executable (a loader running it: only the loader went
    /// through exec); `detail[1]` is the hook, [`super::FILE_HOOK_MMAP`] or
    /// [`super::FILE_HOOK_MPROTECT`].
    pub const EXEC_BY_MAPPING: u32 = 2;
    const _: () = assert!(EXEC_BY_MAPPING != super::EXEC_BY_ARGUMENTS);

    /// `super_block.s_magic` of overlayfs: its files are decided by the real file
    /// under them (the overlay file's `private_data`, on the kernels tested).
    pub const OVERLAYFS_SUPER_MAGIC: u64 = 0x794c_7630;
    /// Overlays stacked on overlays the probes follow down (the kernel's
    /// `FILESYSTEM_MAX_STACK_DEPTH` is 2); a deeper one is undecided.
    pub const OVERLAY_MAX_DEPTH: u32 = 2;

    /// Byte offsets of the members exec identity reads, from the kernel's BTF.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct ExecOffsets {
        /// `file.f_inode`, `file.private_data`.
        pub file_inode: u32,
        pub file_private_data: u32,
        /// `super_block.s_magic` (an `unsigned long`).
        pub sb_magic: u32,
        /// `inode.i_nlink` (a `const unsigned int` in a union).
        pub inode_nlink: u32,
    }

    impl ExecOffsets {
        pub const ZERO: Self = Self {
            file_inode: 0,
            file_private_data: 0,
            sb_magic: 0,
            inode_nlink: 0,
        };
    }

    const _: () = assert!(core::mem::size_of::<ExecOffsets>() == 16);

    #[cfg(feature = "user")]
    // SAFETY: #[repr(C)] plain u32 fields, no padding: every bit pattern is valid.
    unsafe impl aya::Pod for ExecOffsets {}
}

// ------------------------------------------------------------------ events

/// `DecisionEvent::verdict`.
pub const VERDICT_DENIED: u32 = 1;
pub const VERDICT_AUDITED: u32 = 2;

/// `DecisionEvent::detail[3]` of exec and file events: why the hook could not decide
/// (0: it did). With [`UNDECIDED_UNRESOLVED`], `detail[2]` is the errno the path
/// resolution failed with (`bpf_d_path` for exec; the file hooks' dentry walk:
/// `ENAMETOOLONG`, `EFAULT` for an unreadable kernel structure, `ELOOP` for more
/// steps than its bound).
pub const UNDECIDED_UNRESOLVED: u32 = 1;
pub const UNDECIDED_NO_SCRATCH: u32 = 2;
pub const UNDECIDED_MATCH_STEPS: u32 = 3;
/// More prefixes with patterns than [`MAX_PATTERN_PREFIXES`] (the agent refuses such
/// policy sets, so only a table written by something else gets here).
pub const UNDECIDED_PATTERN_PREFIXES: u32 = 4;

/// One enforcement decision, written to the `EVENTS` ring buffer.
///
/// `detail` by class: process: `[_, _, errno, undecided]`; file: `[access bits, _,
/// errno, undecided]` (see [`UNDECIDED_UNRESOLVED`]); network: family, type,
/// protocol; capability: capability number; setid: kind, `LSM_SETID_*` flags,
/// requested id.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DecisionEvent {
    /// `CLOCK_BOOTTIME` nanoseconds.
    pub boot_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub class: u32,
    pub verdict: u32,
    pub policy_id: u32,
    /// For a default-posture decision: `ACTION_AUDIT` or `ACTION_BLOCK`.
    pub posture: u32,
    pub detail: [u32; 4],
    /// The acting process's executable (for exec: the one calling execve).
    pub exe: ExePath,
    pub parent_exe: ExePath,
    /// The file or executable acted on (process and file classes).
    pub target: ExePath,
    /// For an exec of a multi-call binary (`MATCH_MULTI_CALL`): the name execve was
    /// given (`bprm->filename`, as given: it may be relative); else empty.
    pub invoked: ExePath,
}

impl DecisionEvent {
    pub const SIZE: usize = core::mem::size_of::<Self>();
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

const _: () = assert!(core::mem::size_of::<ExePath>() == 8 + PATH_CAP);
const _: () = assert!(core::mem::size_of::<DecisionEvent>() == 56 + 4 * (8 + PATH_CAP));
const _: () = assert!(core::mem::size_of::<RuleKey>() == 32);
const _: () = assert!(core::mem::size_of::<RuleValue>() == 16);
const _: () = assert!(core::mem::size_of::<PrefixKey>() == 16);
const _: () = assert!(core::mem::size_of::<GlobRule>() == 2 * GLOB_CAP + 8 + 16);
const _: () = assert!(core::mem::size_of::<GlobRule>().is_multiple_of(8));
const _: () = assert!(core::mem::size_of::<GlobList>() == 8 + GLOBS_PER_KEY * (2 * GLOB_CAP + 24));
const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 144);
const _: () = assert!(core::mem::size_of::<ExecEvent>() == 24 + 8 + PATH_CAP);

// ------------------------------------------------------------------ path hashing

/// Keyed SipHash-1-3, fed one byte at a time, so that one pass over a path yields the
/// hash of every prefix ([`SipState::finish`] does not consume the state). The key is
/// random per agent start: nobody can craft a path that collides with a rule's.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SipState {
    pub v: [u64; 4],
    /// Bytes of the current, incomplete 8-byte word.
    pub tail: u64,
    pub len: u64,
}

impl SipState {
    #[inline(always)]
    pub fn new(key: &[u64; 2]) -> Self {
        Self {
            v: [
                key[0] ^ 0x736f_6d65_7073_6575,
                key[1] ^ 0x646f_7261_6e64_6f6d,
                key[0] ^ 0x6c79_6765_6e65_7261,
                key[1] ^ 0x7465_6462_7974_6573,
            ],
            tail: 0,
            len: 0,
        }
    }

    #[inline(always)]
    pub fn push(&mut self, byte: u8) {
        self.push_at(byte, self.len);
        self.len += 1;
    }

    /// [`Self::push`] of byte number `index` without touching `len`: the probes
    /// walk a path with the loop index, so the verifier sees no counter that
    /// changes from one iteration to the next.
    #[inline(always)]
    pub fn push_at(&mut self, byte: u8, index: u64) {
        self.tail |= u64::from(byte) << ((index & 7) * 8);
        if index & 7 == 7 {
            let m = self.tail;
            self.v[3] ^= m;
            sip_round(&mut self.v);
            self.v[0] ^= m;
            self.tail = 0;
        }
    }

    /// The hash of the bytes pushed so far, never 0 (unknown) or [`ANY_SOURCE`].
    #[inline(always)]
    pub fn finish(&self) -> u64 {
        self.finish_len(self.len)
    }

    /// The hash of the first `len` bytes, when they were pushed with [`Self::push_at`].
    #[inline(always)]
    pub fn finish_len(&self, len: u64) -> u64 {
        let mut v = self.v;
        let b = ((len & 0xff) << 56) | self.tail;
        v[3] ^= b;
        sip_round(&mut v);
        v[0] ^= b;
        v[2] ^= 0xff;
        sip_round(&mut v);
        sip_round(&mut v);
        sip_round(&mut v);
        let h = v[0] ^ v[1] ^ v[2] ^ v[3];
        if h == 0 || h == ANY_SOURCE { 1 } else { h }
    }
}

#[inline(always)]
fn sip_round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13);
    v[1] ^= v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16);
    v[3] ^= v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21);
    v[3] ^= v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17);
    v[1] ^= v[2];
    v[2] = v[2].rotate_left(32);
}

/// The path hash of `bytes` (a whole path, or a directory prefix ending with `/`).
pub fn path_hash(key: &[u64; 2], bytes: &[u8]) -> u64 {
    let mut state = SipState::new(key);
    bytes.iter().for_each(|b| state.push(*b));
    state.finish()
}

// ------------------------------------------------------------------ user-side limits
//
// Named here, next to the layout they follow from, for user space only (the probes
// use none of them). Added at the end of the file so that nothing the probes compile
// moves: line numbers end up in the BPF object's BTF line info.

/// [`LINUX_PATH_MAX`] less the NUL: no longer path can name a file.
pub const MAX_KERNEL_PATH_BYTES: usize = LINUX_PATH_MAX - 1;
/// The longest path, in bytes without the NUL, the probes resolve and hash: every
/// path the kernel resolves. A rule path longer than this, after symlink resolution,
/// can never match (such a file is decided by [`MATCH_UNDECIDABLE`]).
pub const MAX_HASHED_PATH_BYTES: usize = MAX_KERNEL_PATH_BYTES;
/// The longest executable path an event or `EXE_PATHS` carries whole.
pub const MAX_REPORTED_PATH_BYTES: usize = PATH_CAP - 1;

const _: () = assert!(SCRATCH_PATH_CAP.is_power_of_two());
const _: () = assert!(SCRATCH_PATH_CAP >= 2 * LINUX_PATH_MAX);
const _: () = assert!(MAX_PATTERN_PREFIXES.is_power_of_two());
const _: () = assert!(SCRATCH_SLOTS.is_power_of_two());

#[cfg(feature = "user")]
mod user {
    // SAFETY (all impls below): each type is #[repr(C)], made only of integers (and
    // arrays and structs of them) with explicit padding fields, so every bit pattern
    // is a valid value.
    // SAFETY: see above.
    unsafe impl aya::Pod for super::KernelOffsets {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::ExePath {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::RuleKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::RuleValue {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::PrefixKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::GlobList {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::ActivePolicy {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::AliasKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::AliasValue {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::AgentState {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::LockState {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::ProtectedKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::DecisionEvent {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::ExecEvent {}
}

#[cfg(test)]
mod tests {
    #[test]
    fn multi_call_words_hold_the_names() {
        for ((word, len), name) in MULTI_CALL_WORDS.iter().zip(MULTI_CALL_PROGRAMS) {
            assert_eq!(*len as usize, name.len());
            assert_eq!(&word.to_le_bytes()[..name.len()], name.as_bytes());
        }
    }

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
    fn setid_bits_are_distinct_per_kind_and_family() {
        let mut seen = 0u32;
        for kind in [SETID_KIND_UID, SETID_KIND_GID] {
            for flags in [LSM_SETID_ID, LSM_SETID_RE, LSM_SETID_RES, LSM_SETID_FS] {
                let bit = setid_bit(kind, flags).expect("known flags");
                assert_eq!(seen & (1 << bit), 0);
                seen |= 1 << bit;
            }
        }
        assert_eq!(seen, 0xff);
        assert_eq!(setid_bit(SETID_KIND_UID, 3), None);
    }

    #[test]
    fn prefix_hashes_come_from_one_pass() {
        let key = [7, 9];
        let path = b"/usr/bin/apt-get";
        let mut state = SipState::new(&key);
        let mut prefixes = [0u64; 3];
        let mut n = 0;
        for b in path {
            state.push(*b);
            if *b == b'/' {
                prefixes[n] = state.finish();
                n += 1;
            }
        }
        assert_eq!(state.finish(), path_hash(&key, path));
        assert_eq!(prefixes[0], path_hash(&key, b"/"));
        assert_eq!(prefixes[1], path_hash(&key, b"/usr/"));
        assert_eq!(prefixes[2], path_hash(&key, b"/usr/bin/"));
        assert_ne!(path_hash(&key, b"/usr/bin/"), path_hash(&key, b"/usr/bin"));
        assert_ne!(path_hash(&key, path), path_hash(&[7, 10], path));
    }

    #[test]
    fn sip_state_matches_reference_siphash_1_3_vector() {
        // SipHash-1-3 of the empty string with key 00..0f (little-endian words), the
        // reference implementation's first vector.
        let key = [0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908];
        assert_eq!(path_hash(&key, b""), 0xabac_0158_050f_c4dc);
    }

    fn glob(pattern: &str) -> GlobRule {
        let mut rule = GlobRule::EMPTY;
        for (i, c) in pattern.bytes().enumerate() {
            match c {
                b'*' => rule.kinds[i] = GLOB_STAR,
                b'?' => rule.kinds[i] = GLOB_ANY_BYTE,
                c => rule.bytes[i] = c,
            }
        }
        rule.len = pattern.len() as u32;
        rule
    }

    #[test]
    fn glob_steps_match_like_a_component_wildcard() {
        let cases: &[(&str, &str, bool)] = &[
            ("apt*", "apt", true),
            ("apt*", "apt-get", true),
            ("apt*", "ap", false),
            ("apt*", "apt/x", false),
            ("*.sh", "run.sh", true),
            ("*.sh", "run.shx", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("a?c", "abc", true),
            ("a?c", "a/c", false),
            ("*/bin", "x/bin", true),
            ("*/bin", "x/y/bin", false),
            ("*", "", true),
            ("", "", true),
            ("", "x", false),
            ("*a", "bbbba", true),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(
                glob(pattern).matches(text.as_bytes(), 10_000),
                *want,
                "{pattern} vs {text}"
            );
        }
    }

    #[test]
    fn socket_items_cover_kubearmor_protocol_names() {
        assert_eq!(socket_items(AF_INET, SOCK_STREAM, 0), [ITEM_TCP, 0]);
        assert_eq!(
            socket_items(AF_INET6, SOCK_DGRAM | 0x80000, 17),
            [ITEM_UDP, 0]
        );
        assert_eq!(socket_items(AF_INET, SOCK_DGRAM, 1), [ITEM_ICMP, 0]);
        assert_eq!(socket_items(AF_INET6, SOCK_DGRAM, 58), [ITEM_ICMP, 0]);
        assert_eq!(socket_items(AF_INET, SOCK_RAW, 1), [ITEM_RAW, ITEM_ICMP]);
        assert_eq!(socket_items(AF_INET6, SOCK_RAW, 58), [ITEM_RAW, ITEM_ICMP]);
        assert_eq!(socket_items(AF_INET, SOCK_RAW, 255), [ITEM_RAW, 0]);
        assert_eq!(socket_items(AF_INET, SOCK_RAW, 0), [ITEM_RAW, 0]);
        assert_eq!(socket_items(1, SOCK_STREAM, 0), [0, 0]);
        assert_eq!(socket_items(16, SOCK_RAW, 0), [0, 0]);
    }

    #[test]
    fn tcp_and_udp_variants_are_tcp_and_udp() {
        for family in [AF_INET, AF_INET6] {
            for protocol in [0, IPPROTO_TCP, IPPROTO_MPTCP, IPPROTO_SMC] {
                assert_eq!(
                    socket_items(family, SOCK_STREAM, protocol),
                    [ITEM_TCP, 0],
                    "{family} stream {protocol}"
                );
            }
            for protocol in [0, IPPROTO_UDP, IPPROTO_UDPLITE] {
                assert_eq!(
                    socket_items(family, SOCK_DGRAM | 0o2000000, protocol),
                    [ITEM_UDP, 0],
                    "{family} dgram {protocol}"
                );
            }
        }
    }

    #[test]
    fn sctp_is_sctp_in_both_styles_and_the_seqpacket_default() {
        assert_eq!(socket_items(AF_INET, SOCK_STREAM, 132), [ITEM_SCTP, 0]);
        assert_eq!(socket_items(AF_INET6, SOCK_SEQPACKET, 132), [ITEM_SCTP, 0]);
        assert_eq!(socket_items(AF_INET, SOCK_SEQPACKET, 0), [ITEM_SCTP, 0]);
    }

    #[test]
    fn packet_sockets_are_raw_whatever_their_type() {
        for sock_type in [SOCK_RAW, SOCK_DGRAM, 10] {
            assert_eq!(socket_items(AF_PACKET, sock_type, 0x0300), [ITEM_RAW, 0]);
        }
    }

    #[test]
    fn internet_sockets_outside_the_table_are_unclassified_never_uncovered() {
        let unknown = [
            (SOCK_STREAM, 17), // UDP as a stream: refused by the kernel anyway
            (SOCK_DGRAM, IPPROTO_TCP),
            (SOCK_DGRAM, 115),       // L2TP over IP
            (6, 33),                 // DCCP
            (4, 0),                  // SOCK_RDM
            (SOCK_STREAM, 263),      // a protocol after this table
            (SOCK_STREAM, u32::MAX), // a negative protocol
            (SOCK_SEQPACKET, IPPROTO_TCP),
        ];
        for family in [AF_INET, AF_INET6] {
            for (sock_type, protocol) in unknown {
                assert_eq!(
                    socket_items(family, sock_type, protocol),
                    [ITEM_INET_UNCLASSIFIED, 0],
                    "{family} {sock_type} {protocol}"
                );
            }
        }
    }
}
