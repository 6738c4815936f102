//! File access, matched as paths of class `CLASS_FILE`: `file_open` here (read and
//! write decided separately, `readOnly`), the directory-entry hooks in
//! [`crate::file_names`], the hooks on an open file or a whole path in
//! [`crate::file_descriptors`].
//!
//! Every hook names one or more [`Target`]s (a hook that composes decisions, such as
//! `path_rename`, names several) and hands them to [`decide_targets`], which decides
//! them in order, stops at the first Block, and reports exactly one event: the
//! strongest verdict (Block > Audit, the first on a tie), with the path that drew it
//! and `detail[1]` = the hook's `FILE_HOOK_*`.

use aya_ebpf::{bindings::path, helpers::bpf_probe_read_kernel, macros::lsm, programs::LsmContext};
use edgearmor_probe_abi::{
    ACCESS_READ, ACCESS_WRITE, ACTION_AUDIT, ACTION_BLOCK, CLASS_FILE, FILE_HOOK_OPEN,
    LINUX_PATH_MAX, SLOT_READ, SLOT_WRITE, UNDECIDED_NO_SCRATCH, UNDECIDED_UNRESOLVED, Verdict,
};

use crate::{
    dentry_path::{resolve_dentry, resolve_file, resolve_path},
    identity::current_identity,
    lock::exempt,
    maps::{active_generation, offsets, with_slot},
    matchers::{EACCES, enforce, match_path, settle_path, stronger, undecidable},
    path::{PathBuf, SCRATCH_WORDS},
    report::report,
};

const FMODE_READ: u32 = 1;
const FMODE_WRITE: u32 = 2;
/// `S_IFMT` and the types the hooks tell apart.
pub(crate) const S_IFMT: u16 = 0o170_000;
pub(crate) const S_IFREG: u16 = 0o100_000;
const S_IFDIR: u16 = 0o040_000;

/// What a file hook decides about: an open file, a whole path, or the entry
/// `dentry` of a directory ("dir/name", also for a name that does not exist yet);
/// as a directory ([`Target::as_directory`]), that path followed by `/`,
/// so a directory is also decided as the directory itself (as `matchDirectories`
/// names it).
#[derive(Clone, Copy)]
pub(crate) struct Target {
    /// The `struct file *` ([`TARGET_FILE`]), else the `struct path *` (`dir`).
    ptr: *const u8,
    dentry: *const u8,
    /// `ACCESS_*` bits this operation needs on the target (0: no target).
    pub(crate) access: u32,
    /// `TARGET_*` bits.
    flags: u32,
}

/// `Target::flags`: `ptr` is a file; the path is followed by `/`.
const TARGET_FILE: u32 = 1;
const TARGET_AS_DIR: u32 = 2;

impl Target {
    #[inline(always)]
    pub(crate) fn file(file: *const u8, access: u32) -> Self {
        Self {
            ptr: file,
            dentry: core::ptr::null(),
            access,
            flags: TARGET_FILE,
        }
    }

    #[inline(always)]
    pub(crate) fn path(p: *const path, access: u32) -> Self {
        Self {
            ptr: p as *const u8,
            dentry: core::ptr::null(),
            access,
            flags: 0,
        }
    }

    #[inline(always)]
    pub(crate) fn entry(dir: *const path, dentry: *const u8, access: u32) -> Self {
        Self {
            ptr: dir as *const u8,
            dentry,
            access,
            flags: 0,
        }
    }

    /// No target: [`decide_targets`] skips it. (Not an `Option`: the kernel refuses
    /// the BTF rustc gives `Option<Target>`, a union member at a non-zero offset.)
    pub(crate) const NONE: Self = Self {
        ptr: core::ptr::null(),
        dentry: core::ptr::null(),
        access: 0,
        flags: 0,
    };

    /// The same entry as the directory itself ("dir/name/").
    #[inline(always)]
    pub(crate) fn as_directory(self) -> Self {
        Self {
            flags: self.flags | TARGET_AS_DIR,
            ..self
        }
    }
}

/// One target's outcome, before anything is enforced or reported.
#[derive(Clone, Copy)]
struct Decision {
    verdict: Verdict,
    access: u32,
    /// errno of a failed resolution (`UNDECIDED_UNRESOLVED`), else 0.
    errno: u32,
    /// `UNDECIDED_*`, or 0 when the path was decided.
    undecided: u32,
    /// The slot's buffer holds this target's path.
    resolved: bool,
}

/// Decides `targets` ([`Target::NONE`]s are skipped) in order, stopping at the
/// first Block, and reports the strongest verdict once, with the path that drew it.
/// With `block_only`, only a Block acts and reports (`file_permission`: the open
/// already reported an Audit).
#[inline(always)]
pub(crate) fn decide_targets<const N: usize>(
    hook: u32,
    generation: u32,
    targets: [Target; N],
    block_only: bool,
) -> i32 {
    let source = current_identity();
    let first_access = targets[0].access;
    // Inlined: as a function of its own, this closure's frame adds to the hook's
    // and the walk callbacks' in the verifier's 512-byte combined stack bound.
    with_slot(
        #[inline(always)]
        |slot| {
            let mut best = Decision {
                verdict: Verdict::NONE,
                access: first_access,
                errno: 0,
                undecided: 0,
                resolved: false,
            };
            let (mut best_at, mut last_at) = (N, N);
            let mut i = 0;
            while i < N {
                if targets[i].access != 0 {
                    let d = decide(targets[i], generation, source, slot);
                    last_at = i;
                    if d.verdict.action > best.verdict.action {
                        best = d;
                        best_at = i;
                    }
                    if best.verdict.action == ACTION_BLOCK {
                        break;
                    }
                }
                i += 1;
            }
            if block_only && best.verdict.action != ACTION_BLOCK {
                return 0;
            }
            // A later target's path replaced the reported one's: resolve it again (only
            // when an Audit is reported, every Block stopped the loop above).
            if best.verdict.action >= ACTION_AUDIT && best.resolved && best_at != last_at {
                let mut i = 0;
                while i < N {
                    if i == best_at {
                        // Decided again rather than only resolved: one copy of the
                        // resolution per program (the verifier's stack bound).
                        let again = decide(targets[i], generation, source, slot);
                        best.resolved = again.resolved;
                    }
                    i += 1;
                }
            }
            conclude(&best, hook, source, slot)
        },
    )
    .unwrap_or_else(|| {
        // Every scratch slot of this CPU is held: undecidable.
        let d = Decision {
            verdict: undecidable(CLASS_FILE, generation),
            access: first_access,
            errno: 0,
            undecided: UNDECIDED_NO_SCRATCH,
            resolved: false,
        };
        if block_only && d.verdict.action != ACTION_BLOCK {
            return 0;
        }
        conclude(&d, hook, source, u32::MAX)
    })
}

/// Enforces and reports one decision.
#[inline(always)]
fn conclude(d: &Decision, hook: u32, source: u64, slot: u32) -> i32 {
    if exempt(&d.verdict) {
        return 0;
    }
    let target_slot = if d.resolved { slot } else { u32::MAX };
    let detail = [d.access, hook, d.errno, d.undecided];
    enforce(&d.verdict, EACCES, |outcome| {
        report(CLASS_FILE, outcome, &d.verdict, source, detail, target_slot)
    })
}

/// Resolves and matches one target in `slot`. A function of its own (a BPF
/// subprogram): inlined, each hook carried a copy per target (the object was
/// 570 KB instead of 340 KB).
#[inline(never)]
fn decide(t: Target, generation: u32, source: u64, slot: u32) -> Decision {
    let mut d = Decision {
        verdict: Verdict::NONE,
        access: t.access,
        errno: 0,
        undecided: 0,
        resolved: false,
    };
    let len = match resolve_target(&t, generation, slot) {
        Ok(len) => len,
        Err(errno) => {
            d.verdict = undecidable(CLASS_FILE, generation);
            d.errno = errno;
            d.undecided = UNDECIDED_UNRESOLVED;
            return d;
        }
    };
    d.resolved = true;
    let Some(walk) = match_path(CLASS_FILE, generation, source, slot, len) else {
        d.verdict = undecidable(CLASS_FILE, generation);
        d.undecided = UNDECIDED_NO_SCRATCH;
        return d;
    };
    settle_path(slot);
    if t.access & ACCESS_READ != 0 {
        d.verdict = walk.verdicts[SLOT_READ];
    }
    if t.access & ACCESS_WRITE != 0 {
        d.verdict = stronger(d.verdict, walk.verdicts[SLOT_WRITE]);
    }
    if walk.undecided != 0 {
        d.verdict = stronger(d.verdict, undecidable(CLASS_FILE, generation));
        d.undecided = walk.undecided;
    }
    d
}

/// Builds the target's path in the slot's buffer (the dentry walk: the same on
/// every kernel, and a protected inode reached by another name gets its protected
/// name); its length, or the errno.
#[inline(always)]
fn resolve_target(t: &Target, generation: u32, slot: u32) -> Result<u32, u32> {
    let buf = if t.flags & TARGET_FILE != 0 {
        resolve_file(t.ptr, generation, slot)?
    } else if t.dentry.is_null() {
        resolve_path(t.ptr as *const path, generation, slot)?
    } else {
        // SAFETY: probe read of `dir->mnt`, offset from BTF.
        let mnt = unsafe {
            bpf_probe_read_kernel(t.ptr.add(offsets().path_mnt as usize) as *const *const u8)
        }
        .map_err(|_| EFAULT)?;
        // The entry's `d_parent` is `dir`: this is "dir/name", for a name being
        // created too (a negative dentry).
        resolve_dentry(mnt, t.dentry, generation, slot)?
    };
    let len = buf.len & (LINUX_PATH_MAX as u32 - 1);
    if t.flags & TARGET_AS_DIR == 0 {
        return Ok(len);
    }
    // The index of the last byte, masked where the verifier sees it: read back
    // volatile, so the compiler cannot drop the mask (6.1's verifier does not carry
    // `len != 0` into `len - 1`).
    // SAFETY: a read of the slot's own map value.
    let last =
        unsafe { core::ptr::read_volatile(&buf.len) }.wrapping_sub(1) & (LINUX_PATH_MAX as u32 - 1);
    // A protected directory reached by another name already ends with its `/`.
    if len == 0 || buf.byte_at(last as usize) != b'/' {
        return Ok(append_byte(buf, len, b'/'));
    }
    Ok(len)
}

/// Writes `byte` at `len` (a resolved path is under PATH_MAX bytes, inside
/// SCRATCH_PATH_CAP); the new length.
#[inline(always)]
fn append_byte(buf: &mut PathBuf, len: u32, byte: u8) -> u32 {
    let at = len as usize;
    let word = &mut buf.words[(at / 8) & (SCRATCH_WORDS - 1)];
    *word = (*word & !(0xff << ((at % 8) * 8))) | (u64::from(byte) << ((at % 8) * 8));
    buf.len = len + 1;
    len + 1
}

/// `EFAULT`: a kernel pointer the hook was given could not be read.
const EFAULT: u32 = 14;

/// `S_IFMT` bits of `inode` (0 when unreadable or null).
#[inline(always)]
pub(crate) fn inode_type(inode: *const u8) -> u16 {
    if inode.is_null() {
        return 0;
    }
    let off = offsets();
    // SAFETY: probe read of `inode->i_mode`, offset from BTF.
    unsafe { bpf_probe_read_kernel(inode.add(off.inode_mode as usize) as *const u16) }.unwrap_or(0)
        & S_IFMT
}

/// `S_IFMT` bits of `dentry`'s inode (0 for a negative dentry).
#[inline(always)]
fn dentry_type(dentry: *const u8) -> u16 {
    if dentry.is_null() {
        return 0;
    }
    // SAFETY: probe read of `dentry->d_inode`, offset from BTF.
    let inode = unsafe {
        bpf_probe_read_kernel(dentry.add(offsets().dentry_inode as usize) as *const *const u8)
    }
    .unwrap_or(core::ptr::null());
    inode_type(inode)
}

/// Whether `dentry` is a directory (false for a negative dentry).
#[inline(always)]
pub(crate) fn is_directory(dentry: *const u8) -> bool {
    dentry_type(dentry) == S_IFDIR
}

/// The `S_IFMT` bits of the file (`f_path.dentry`'s inode).
#[inline(always)]
pub(crate) fn file_type(file: *const u8) -> u16 {
    let off = offsets();
    // SAFETY: probe read of `file->f_path.dentry`, offsets from BTF.
    let dentry = unsafe {
        bpf_probe_read_kernel(
            file.add((off.file_f_path + off.path_dentry) as usize) as *const *const u8
        )
    }
    .unwrap_or(core::ptr::null());
    dentry_type(dentry)
}

/// The generation a file hook decides in, or what it returns at once: the verdict of
/// the LSM before it (the hook's argument `ret_arg`, when non-zero), or 0 when no file
/// rule is active.
#[inline(always)]
pub(crate) fn file_hook_generation(ctx: &LsmContext, ret_arg: usize) -> Result<u32, i32> {
    let previous: i32 = ctx.arg(ret_arg);
    if previous != 0 {
        return Err(previous);
    }
    active_generation(CLASS_FILE).ok_or(0)
}

/// `file_open(struct file *file)`: reads and writes are decided separately
/// (`readOnly`); an open for both gets the stronger verdict.
#[lsm(hook = "file_open")]
pub fn check_open(ctx: LsmContext) -> i32 {
    let generation = match file_hook_generation(&ctx, 1) {
        Ok(generation) => generation,
        Err(rc) => return rc,
    };
    let file: *const u8 = ctx.arg(0);
    // SAFETY: probe read of `file->f_mode`, offset from BTF.
    let mode =
        unsafe { bpf_probe_read_kernel(file.add(offsets().file_f_mode as usize) as *const u32) }
            .unwrap_or(0);
    let access = (if mode & FMODE_READ != 0 {
        ACCESS_READ
    } else {
        0
    }) | (if mode & FMODE_WRITE != 0 {
        ACCESS_WRITE
    } else {
        0
    });
    if access == 0 {
        return 0;
    }
    let target = Target::file(file, access);
    decide_targets(FILE_HOOK_OPEN, generation, [target], false)
}
