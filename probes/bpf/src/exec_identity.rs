//! Exec identity: an executable is decided by the file, not by the name that
//! reached it (layout and agent side in the ABI's `exec_identity`).
//!
//! - `EXEC_ALIASES` maps a protected executable's inode (`{i_ino, s_dev,
//!   generation}`) to its canonical name. [`exec_alias`] finds the entry of the file
//!   an exec or a mapping runs: itself, or under overlayfs the real file below it
//!   ([`real_file`]: the overlay file's `private_data` on the kernels tested, 6.1 and
//!   6.12). A hard link, a rename, a bind mount, another mount namespace or root
//!   all reach the same inode, so `check_exec` (`exec.rs`) decides them as the
//!   canonical name, with one lookup and no path resolution.
//! - [`check_exec_map`] / [`check_exec_mprotect`]: a `PROT_EXEC` mapping of a
//!   protected executable is decided like an exec of it (a loader running it, `ld.so
//!   PROGRAM`: only the loader went through exec). A mapping of any other file costs
//!   the lookup only (no path walk), and the kernel's own mapping of the program an
//!   exec runs is skipped (`check_exec` decided it).
//! - [`follow_rename`]: a file renamed over a protected one (a package upgrade writes
//!   `apt.new` and renames it over `apt`) takes over its entry in the same hook, so no
//!   name of the new file is free of the rule at any moment.
//! - [`forget_freed`]: an inode freed with no name left loses its entry, so a number
//!   the filesystem reuses for an unrelated file does not inherit the rule.

use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_get_current_task, bpf_probe_read_kernel, generated},
    macros::{lsm, map},
    maps::HashMap,
    programs::LsmContext,
};
use edgearmor_probe_abi::{
    ALIAS_PATH_CAP, AliasKey, AliasValue, CLASS_PROCESS, EXE_FLAG_ALIASED, FILE_HOOK_MMAP,
    FILE_HOOK_MPROTECT, SLOT_READ, UNDECIDED_NO_SCRATCH, UNDECIDED_UNRESOLVED, Verdict,
    exec_identity::{
        EXEC_ALIASES_CAPACITY, EXEC_BY_MAPPING, ExecOffsets, OVERLAY_MAX_DEPTH,
        OVERLAYFS_SUPER_MAGIC,
    },
};

use crate::{
    identity::current_identity,
    maps::{active_generation, offsets, with_slot},
    matchers::{EACCES, decide_undecided, enforce, match_path, settle_path},
    path::scratch,
    report::report,
};

const EFAULT: u32 = 14;
const ENAMETOOLONG: u32 = 36;
const ELOOP: u32 = 40;
const PROT_EXEC: u64 = 0x4;
/// `bpf_map_update_elem` flag: only when the key has no entry yet.
const BPF_NOEXIST: u64 = 1;
/// As the rule tables: entries are allocated when written.
const BPF_F_NO_PREALLOC: u32 = 1;

/// Canonical names of protected executables, per generation (the agent writes them;
/// `follow_rename` adds, `forget_freed` removes).
#[map]
pub(crate) static EXEC_ALIASES: HashMap<AliasKey, AliasValue> =
    HashMap::with_max_entries(EXEC_ALIASES_CAPACITY, BPF_F_NO_PREALLOC);

#[unsafe(no_mangle)]
static EXEC_OFFSETS: ExecOffsets = ExecOffsets::ZERO;

/// The offsets only exec identity reads (`EXEC_OFFSETS`), as `maps::offsets` reads
/// `KERNEL_OFFSETS`.
#[inline(always)]
fn exec_offsets() -> &'static ExecOffsets {
    let global: *const ExecOffsets = &raw const EXEC_OFFSETS;
    // SAFETY: a volatile read of a local, so the compiler cannot fold in the
    // build-time zeros of the global the agent overrides before loading.
    unsafe { &*core::ptr::read_volatile(&global) }
}

/// Reads a `T` at `base + offset` in kernel memory.
#[inline(always)]
fn read<T>(base: u64, offset: u32) -> Result<T, u32> {
    // SAFETY: a checked probe read of kernel memory; a fault is an error, not a crash.
    unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const T) }.map_err(|_| EFAULT)
}

/// The file whose contents run when `file` is exec'd or mapped: `file` itself, or,
/// for an overlayfs file, the real file it was opened on (followed through
/// stacked overlays).
#[inline(always)]
fn real_file(file: u64) -> Result<u64, u32> {
    let (off, eo) = (offsets(), exec_offsets());
    let mut f = file;
    for _ in 0..=OVERLAY_MAX_DEPTH {
        let inode: u64 = read(f, eo.file_inode)?;
        let sb: u64 = read(inode, off.inode_sb)?;
        let magic: u64 = read(sb, eo.sb_magic)?;
        if magic != OVERLAYFS_SUPER_MAGIC {
            return Ok(f);
        }
        let real: u64 = read(f, eo.file_private_data)?;
        if real == 0 {
            return Err(EFAULT);
        }
        f = real;
    }
    Err(ELOOP)
}

/// The inode whose contents run when `file` is exec'd or mapped.
#[inline(always)]
fn real_inode(file: u64) -> Result<u64, u32> {
    read(real_file(file)?, exec_offsets().file_inode)
}

/// `EXEC_ALIASES`'s key of `inode` in `generation`.
#[inline(always)]
fn inode_key(inode: u64, generation: u32) -> Result<AliasKey, u32> {
    let off = offsets();
    let ino: u64 = read(inode, off.inode_ino)?;
    let sb: u64 = read(inode, off.inode_sb)?;
    let dev: u32 = read(sb, off.sb_dev)?;
    Ok(AliasKey {
        ino,
        dev,
        generation,
    })
}

/// The canonical name the file an exec or mapping of `file` runs is protected
/// under, if it is.
#[inline(always)]
pub(crate) fn exec_alias(
    file: *const u8,
    generation: u32,
) -> Result<Option<&'static AliasValue>, u32> {
    let key = inode_key(real_inode(file as u64)?, generation)?;
    // SAFETY: map value pointer returned by the kernel for this key.
    Ok(unsafe { EXEC_ALIASES.get(key) })
}

/// Puts the canonical name into the slot's path buffer, flagged
/// `EXE_FLAG_ALIASED`; returns its length.
#[inline(always)]
pub(crate) fn load_alias(slot: u32, alias: &AliasValue) -> Result<u32, u32> {
    let buf = scratch(slot).ok_or(0u32)?;
    buf.len = 0;
    let len = alias.len;
    if len == 0 || len as usize >= ALIAS_PATH_CAP {
        return Err(ENAMETOOLONG);
    }
    // SAFETY: a volatile read of a local: it keeps the mask below in the program
    // (a no-op after the check, which the compiler would drop, and which the
    // verifier needs on the register it passes as the size).
    let len = unsafe { core::ptr::read_volatile(&len) } & (ALIAS_PATH_CAP as u32 - 1);
    if len == 0 {
        return Err(ENAMETOOLONG);
    }
    // SAFETY: `len` < ALIAS_PATH_CAP <= SCRATCH_PATH_CAP bytes from the map value to
    // the start of the slot's buffer (a checked probe read: a value removed since is
    // an error).
    let rc = unsafe {
        generated::bpf_probe_read_kernel(
            buf.words.as_mut_ptr() as *mut c_void,
            len,
            alias.path.as_ptr() as *const c_void,
        )
    };
    if rc < 0 {
        return Err(EFAULT);
    }
    buf.len = len;
    buf.flags = EXE_FLAG_ALIASED;
    Ok(len)
}

/// Whether `file` runs the current process's own executable (`mm->exe_file`): the
/// kernel mapping the program an exec just started, which `check_exec` decided.
#[inline(always)]
fn is_own_executable(file: u64) -> bool {
    let off = offsets();
    // SAFETY: reads the current task pointer (no dereference here).
    let task = unsafe { bpf_get_current_task() };
    let mm: u64 = read(task, off.task_mm).unwrap_or(0);
    if mm == 0 {
        return false;
    }
    let exe: u64 = read(mm, off.mm_exe_file).unwrap_or(0);
    if exe == 0 {
        return false;
    }
    exe == file || matches!((real_inode(exe), real_inode(file)), (Ok(a), Ok(b)) if a == b)
}

/// A `PROT_EXEC` mapping of `file`: decided like an exec of it when it is a
/// protected executable (reported as a process event `EXEC_BY_MAPPING`).
#[inline(always)]
fn decide_mapping(file: *const u8, hook: u32) -> i32 {
    if file.is_null() {
        return 0;
    }
    let Some(generation) = active_generation(CLASS_PROCESS) else {
        return 0;
    };
    let source = current_identity();
    let undecided = |detail: [u32; 2], settled, slot| {
        let detail = [EXEC_BY_MAPPING, hook, detail[0], detail[1]];
        decide_undecided(CLASS_PROCESS, generation, source, settled, detail, slot)
    };
    let alias = match exec_alias(file, generation) {
        Ok(Some(alias)) => alias,
        Ok(None) => return 0,
        Err(errno) => return undecided([errno, UNDECIDED_UNRESOLVED], Verdict::NONE, u32::MAX),
    };
    if is_own_executable(file as u64) {
        return 0;
    }
    with_slot(|slot| {
        let len = match load_alias(slot, alias) {
            Ok(len) => len,
            Err(errno) => {
                return undecided([errno, UNDECIDED_UNRESOLVED], Verdict::NONE, u32::MAX);
            }
        };
        let Some(walk) = match_path(CLASS_PROCESS, generation, source, slot, len) else {
            return undecided([0, UNDECIDED_NO_SCRATCH], Verdict::NONE, u32::MAX);
        };
        settle_path(slot);
        let verdict = walk.verdicts[SLOT_READ];
        if walk.undecided != 0 {
            return undecided([0, walk.undecided], verdict, slot);
        }
        enforce(&verdict, EACCES, |outcome| {
            let detail = [EXEC_BY_MAPPING, hook, 0, 0];
            report(CLASS_PROCESS, outcome, &verdict, source, detail, slot)
        })
    })
    .unwrap_or_else(|| undecided([0, UNDECIDED_NO_SCRATCH], Verdict::NONE, u32::MAX))
}

/// `mmap_file(struct file *file, unsigned long reqprot, unsigned long prot,
/// unsigned long flags)`: a file mapped executable.
#[lsm(hook = "mmap_file")]
pub fn check_exec_map(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(4);
    if previous != 0 {
        return previous;
    }
    let prot: u64 = ctx.arg(2);
    if prot & PROT_EXEC == 0 {
        return 0;
    }
    decide_mapping(ctx.arg(0), FILE_HOOK_MMAP)
}

/// `file_mprotect(struct vm_area_struct *vma, unsigned long reqprot, unsigned long
/// prot)`: a file mapping made executable afterwards.
#[lsm(hook = "file_mprotect")]
pub fn check_exec_mprotect(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    let prot: u64 = ctx.arg(2);
    if prot & PROT_EXEC == 0 {
        return 0;
    }
    let vma: u64 = ctx.arg(0);
    let file: u64 = read(vma, offsets().vma_file).unwrap_or(0);
    decide_mapping(file as *const u8, FILE_HOOK_MPROTECT)
}

/// Gives the inode at `to_dentry` the entry of the one at `from_dentry`, if that has
/// one and it has none. `Err(errno)` when the entry could not be written.
#[inline(always)]
fn carry(from_dentry: u64, to_dentry: u64, generation: u32) -> Result<(), u32> {
    let off = offsets();
    let from: u64 = read(from_dentry, off.dentry_inode)?;
    let to: u64 = read(to_dentry, off.dentry_inode)?;
    if from == 0 || to == 0 || from == to {
        return Ok(());
    }
    let from_key = inode_key(from, generation)?;
    // SAFETY: map value pointer returned by the kernel for this key.
    let Some(alias) = (unsafe { EXEC_ALIASES.get(from_key) }) else {
        return Ok(());
    };
    let to_key = inode_key(to, generation)?;
    match EXEC_ALIASES.insert(to_key, alias, BPF_NOEXIST) {
        Ok(()) => Ok(()),
        // EEXIST: already protected (under its own name).
        Err(-17) => Ok(()),
        Err(rc) => Err((-rc) as u32),
    }
}

/// `inode_rename(struct inode *old_dir, struct dentry *old_dentry, struct inode
/// *new_dir, struct dentry *new_dentry)`: the file about to replace a protected one
/// takes over its entry (the kernel calls it once more, swapped, for
/// `RENAME_EXCHANGE`). Where the entry cannot be written the rename is decided as
/// undecidable (denied under Block), never left unfollowed.
#[lsm(hook = "inode_rename")]
pub fn follow_rename(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(4);
    if previous != 0 {
        return previous;
    }
    let Some(generation) = active_generation(CLASS_PROCESS) else {
        return 0;
    };
    let old_dentry: u64 = ctx.arg(1);
    let new_dentry: u64 = ctx.arg(3);
    match carry(new_dentry, old_dentry, generation) {
        Ok(()) => 0,
        Err(errno) => decide_undecided(
            CLASS_PROCESS,
            generation,
            current_identity(),
            Verdict::NONE,
            [0, 0, errno, UNDECIDED_UNRESOLVED],
            u32::MAX,
        ),
    }
}

/// `inode_free_security(struct inode *inode)`: an inode freed with no name left
/// (`i_nlink` 0) loses its entry; one evicted from the cache with names left keeps
/// it (it comes back with the same number).
#[lsm(hook = "inode_free_security")]
pub fn forget_freed(ctx: LsmContext) -> i32 {
    let Some(generation) = active_generation(CLASS_PROCESS) else {
        return 0;
    };
    let inode: u64 = ctx.arg(0);
    if read::<u32>(inode, exec_offsets().inode_nlink) != Ok(0) {
        return 0;
    }
    if let Ok(key) = inode_key(inode, generation) {
        // Absent is fine: most freed inodes were never protected.
        let _ = EXEC_ALIASES.remove(key);
    }
    0
}
