//! Target paths by a bounded dentry walk: the absolute path of a dentry under a
//! mount, built from the kernel's own structures, for the file hooks.
//!
//! `bpf_d_path` may only be called from the hooks in the kernel's sleepable set on
//! some kernels (6.1 refuses it in every `path_*` hook), so the file hooks resolve
//! their targets here, on every kernel: one code path, tested everywhere.
//!
//! The walk does what the kernel's `prepend_path` (d_path) does: leaf to root via
//! `d_parent`; at a mount's root (`dentry == vfsmount.mnt_root`) it crosses to the
//! mountpoint in the parent mount (`struct mount` embeds the vfsmount at `mnt`); it
//! stops at the namespace root (a mount that is its own parent), at the task's root
//! (`current->fs->root`, so a chroot sees what d_path gave it), or at a dentry that is
//! its own parent (a pseudo file: its name alone, as d_path's `d_dname` would name it).
//! Unlike d_path it adds no " (deleted)": an unlinked file keeps its last name.
//!
//! At every step, the leaf first, the walk looks the inode up in `FILE_ALIASES`
//! (`{i_ino, i_sb->s_dev, generation}`); on a hit it stops and prepends the
//! canonical name stored there, and flags the buffer `EXE_FLAG_ALIASED`: a protected
//! file or directory reached by another name (hard link, bind mount, renamed
//! ancestor, chroot, another mount namespace) is decided by its protected name.
//!
//! The path is built backwards at the end of the slot's `PathBuf`, then moved to index
//! 0 with one copy (the two ranges never overlap: at most `LINUX_PATH_MAX - 1` bytes
//! each in an 8 KiB buffer). Longer, unreadable, or more steps than the bound:
//! `Err(errno)`, and the hook takes its undecided path (fails closed under Block).
//! The walk is not serialised against renames (d_path retries under `rename_lock`; a
//! BPF program cannot take it): a rename racing the hook yields the old or the new
//! name of a component, each of which the rename hook itself decided.

use aya_ebpf::{
    bindings::path,
    cty::c_void,
    helpers::{bpf_get_current_task, bpf_loop, bpf_probe_read_kernel, generated},
};
use edgearmor_probe_abi::{
    ALIAS_PATH_CAP, AliasKey, AliasValue, EXE_FLAG_ALIASED, LINUX_PATH_MAX, SCRATCH_PATH_CAP,
};

use crate::{
    maps::{DENTRY_WALKS, FILE_ALIASES, PATH_SCRATCH, offsets},
    path::{LoopSlot, PathBuf, scratch},
};

const EFAULT: u32 = 14;
const ENAMETOOLONG: u32 = 36;
const ELOOP: u32 = 40;

/// The longest path the walk builds, without the NUL (d_path's bound).
const MAX_LEN: u32 = LINUX_PATH_MAX as u32 - 1;
/// Where the backwards-built path ends (exclusive): the end of the buffer.
const END: u32 = SCRATCH_PATH_CAP as u32;
/// Masks a byte index into the buffer (a no-op for every index the walk uses; it
/// tells the verifier so).
const MASK: u32 = SCRATCH_PATH_CAP as u32 - 1;
/// `NAME_MAX`: the longest component a dentry can carry.
const NAME_MAX: u32 = 255;
/// Walk steps: one per component (each adds at least "/x", so a path within
/// `MAX_LEN` has fewer) plus one per mount crossed on the way.
const MAX_STEPS: u32 = LINUX_PATH_MAX as u32;

/// State of one dentry walk, per claimed slot (`DENTRY_WALKS`).
#[repr(C)]
pub(crate) struct DentryWalk {
    /// The `struct vfsmount *` the current dentry is under, and the dentry.
    mnt: u64,
    dentry: u64,
    /// The task's root (`fs->root`): the walk stops there.
    root_mnt: u64,
    root_dentry: u64,
    /// The path built so far is bytes `start..END` of the slot's buffer.
    start: u32,
    generation: u32,
    /// 0 while walking or when done; else the errno the walk failed with.
    error: u32,
    /// Non-zero once the walk reached a root or an alias.
    done: u32,
    /// `EXE_FLAG_*` bits for the resolved path.
    flags: u32,
    /// With `EXE_FLAG_ALIASED`: the canonical name that comes before bytes
    /// `start..END` (its `FILE_ALIASES` value's bytes, and how many of them).
    alias_len: u32,
    alias_addr: u64,
}

/// Reads a `T` at `base + offset` in kernel memory.
#[inline(always)]
fn read<T>(base: u64, offset: u32) -> Result<T, u32> {
    // SAFETY: a checked probe read of kernel memory; a fault is an error, not a crash.
    unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const T) }.map_err(|_| EFAULT)
}

/// Copies `len` (<= NAME_MAX) bytes of kernel or map memory at `src` to byte `at` of
/// `buf`.
#[inline(always)]
fn copy_in(buf: &mut PathBuf, at: u32, src: *const u8, len: u32) -> Result<(), u32> {
    // SAFETY: a volatile read of a local. It keeps the bound check below in the
    // program: the compiler would drop it as implied by the callers' checks, which
    // older verifiers (6.1) cannot follow through `len - 1`.
    let len = unsafe { core::ptr::read_volatile(&len) };
    if len > NAME_MAX {
        return Err(ENAMETOOLONG);
    }
    // SAFETY: `at & MASK` < SCRATCH_PATH_CAP and `len` <= NAME_MAX, and `PathBuf` has
    // NAME_MAX + 1 bytes of slack behind `words`, so the write stays in the map value.
    let dst = unsafe { (buf.words.as_mut_ptr() as *mut u8).add((at & MASK) as usize) };
    // SAFETY: a checked probe read into map memory of the claimed slot.
    let rc =
        unsafe { generated::bpf_probe_read_kernel(dst as *mut c_void, len, src as *const c_void) };
    if rc < 0 {
        return Err(EFAULT);
    }
    Ok(())
}

#[inline(always)]
fn put_byte(buf: &mut PathBuf, at: u32, byte: u8) {
    // SAFETY: `at & MASK` is inside `words`.
    unsafe { *(buf.words.as_mut_ptr() as *mut u8).add((at & MASK) as usize) = byte };
}

/// The new start of the path after prepending `len` bytes, or `ENAMETOOLONG`.
#[inline(always)]
fn grow(walk: &DentryWalk, len: u32) -> Result<u32, u32> {
    let built = END - walk.start;
    if built + len > MAX_LEN {
        return Err(ENAMETOOLONG);
    }
    Ok(walk.start - len)
}

/// Prepends "/" and the dentry's name.
#[inline(always)]
fn prepend_name(buf: &mut PathBuf, walk: &mut DentryWalk, dentry: u64) -> Result<(), u32> {
    let off = offsets();
    let len: u32 = read(dentry, off.dentry_name_len)?;
    let name: u64 = read(dentry, off.dentry_name)?;
    if len > NAME_MAX {
        return Err(ENAMETOOLONG);
    }
    let start = grow(walk, len + 1)?;
    put_byte(buf, start, b'/');
    copy_in(buf, start + 1, name as *const u8, len)?;
    walk.start = start;
    Ok(())
}

/// The canonical name of `dentry`'s inode in this generation, if it is protected.
#[inline(always)]
fn alias_of(dentry: u64, generation: u32) -> Result<Option<&'static AliasValue>, u32> {
    let off = offsets();
    let inode: u64 = read(dentry, off.dentry_inode)?;
    if inode == 0 {
        // A negative dentry: the name being created has no inode yet.
        return Ok(None);
    }
    let ino: u64 = read(inode, off.inode_ino)?;
    let sb: u64 = read(inode, off.inode_sb)?;
    let dev: u32 = read(sb, off.sb_dev)?;
    let key = AliasKey {
        ino,
        dev,
        generation,
    };
    // SAFETY: map value pointer returned by the kernel for this key.
    Ok(unsafe { FILE_ALIASES.get(key) })
}

/// Notes the canonical name that goes before the path built so far, without its
/// trailing `/` (what follows starts with one; a directory reached itself is named
/// without it, as d_path names it). It is copied into place when the walk is done,
/// outside the loop, where one copy of up to `PATH_MAX` bytes has a bound the
/// verifier can check.
#[inline(always)]
fn note_alias(walk: &mut DentryWalk, alias: &AliasValue) -> Result<(), u32> {
    let mut len = alias.len;
    if len as usize >= ALIAS_PATH_CAP {
        return Err(ENAMETOOLONG);
    }
    // `path[len - 1]`, addressed from the struct's start (`path` is at 8) so the
    // verifier sees one bounded addition, not a subtraction it cannot bound.
    const _: () = assert!(core::mem::offset_of!(AliasValue, path) == 8);
    // SAFETY: `7 + len` <= 7 + ALIAS_PATH_CAP - 1 is inside the map value.
    let last = unsafe { *(alias as *const AliasValue as *const u8).add(7 + len as usize) };
    if len > 0 && last == b'/' {
        len -= 1;
    }
    grow(walk, len)?;
    walk.alias_len = len;
    walk.alias_addr = alias.path.as_ptr() as u64;
    walk.flags |= EXE_FLAG_ALIASED;
    Ok(())
}

/// One step up. `Ok(true)`: go on; `Ok(false)`: the path is complete.
#[inline(always)]
fn step(buf: &mut PathBuf, walk: &mut DentryWalk) -> Result<bool, u32> {
    let off = offsets();
    let dentry = walk.dentry;
    if let Some(alias) = alias_of(dentry, walk.generation)? {
        note_alias(walk, alias)?;
        return Ok(false);
    }
    if dentry == walk.root_dentry && walk.mnt == walk.root_mnt {
        return Ok(false);
    }
    let mnt_root: u64 = read(walk.mnt, off.vfsmount_root)?;
    if dentry == mnt_root {
        let mount = walk.mnt - u64::from(off.mount_mnt);
        let parent: u64 = read(mount, off.mount_parent)?;
        if parent == mount || parent == 0 {
            // The namespace's root (or a mount not attached anywhere).
            return Ok(false);
        }
        walk.dentry = read(mount, off.mount_mountpoint)?;
        walk.mnt = parent + u64::from(off.mount_mnt);
        return Ok(true);
    }
    let parent: u64 = read(dentry, off.dentry_parent)?;
    prepend_name(buf, walk, dentry)?;
    if parent == dentry || parent == 0 {
        return Ok(false);
    }
    walk.dentry = parent;
    Ok(true)
}

extern "C" fn dentry_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `LoopSlot` on the caller's stack that `resolve_dentry` passed.
    let slot = unsafe { (*(ctx as *const LoopSlot)).slot };
    let (Some(buf), Some(walk)) = (
        PATH_SCRATCH.get_ptr_mut(slot),
        DENTRY_WALKS.get_ptr_mut(slot),
    ) else {
        return 1;
    };
    // SAFETY: this CPU's map values of the slot the run claimed.
    let (buf, walk) = unsafe { (&mut *buf, &mut *walk) };
    match step(buf, walk) {
        Ok(true) => 0,
        Ok(false) => {
            walk.done = 1;
            1
        }
        Err(errno) => {
            walk.error = errno;
            1
        }
    }
}

/// Builds the absolute path of `dentry` under `mnt` (a `struct vfsmount *`) in the
/// slot's buffer: `len` bytes (no NUL) from index 0, `flags` `EXE_FLAG_ALIASED` when
/// an inode on the way is protected under another name. For the `(dir, dentry)`
/// hooks, `resolve_dentry(dir->mnt, dentry)` is "dir/name", negative dentries too.
#[inline(always)]
pub(crate) fn resolve_dentry(
    mnt: *const u8,
    dentry: *const u8,
    generation: u32,
    slot: u32,
) -> Result<&'static mut PathBuf, u32> {
    let walk = DENTRY_WALKS.get_ptr_mut(slot).ok_or(0u32)?;
    // SAFETY: this CPU's map value of the slot the run claimed.
    let walk = unsafe { &mut *walk };
    let off = offsets();
    // SAFETY: reads the current task pointer (no dereference here).
    let task = unsafe { bpf_get_current_task() };
    let fs: u64 = read(task, off.task_fs).unwrap_or(0);
    let (root_mnt, root_dentry) = if fs == 0 {
        (0, 0)
    } else {
        let root = fs + u64::from(off.fs_root);
        (
            read(root, off.path_mnt).unwrap_or(0),
            read(root, off.path_dentry).unwrap_or(0),
        )
    };
    walk.mnt = mnt as u64;
    walk.dentry = dentry as u64;
    walk.root_mnt = root_mnt;
    walk.root_dentry = root_dentry;
    walk.start = END;
    walk.generation = generation;
    walk.error = 0;
    walk.done = 0;
    walk.flags = 0;
    walk.alias_len = 0;
    walk.alias_addr = 0;
    let mut ctx = LoopSlot { slot, _pad: 0 };
    // SAFETY: `dentry_step` is a static callback; the context is a live stack value
    // that outlives the call.
    unsafe {
        bpf_loop(
            MAX_STEPS,
            dentry_step as *mut c_void,
            &mut ctx as *mut LoopSlot as *mut c_void,
            0,
        );
    }
    let buf = scratch(slot).ok_or(0u32)?;
    buf.len = 0;
    if walk.error != 0 {
        return Err(walk.error);
    }
    if walk.done == 0 {
        return Err(ELOOP);
    }
    // The canonical name (if any) goes to index 0, the rest built in the upper half
    // right behind it: `alias + rest <= MAX_LEN` (checked on the way), so both copies
    // stay in the buffer's first `2 * PATH_MAX` bytes and never overlap their source.
    let alias = walk.alias_len & (LINUX_PATH_MAX as u32 - 1);
    let rest = (END - walk.start) & (LINUX_PATH_MAX as u32 - 1);
    if alias + rest > MAX_LEN {
        return Err(ENAMETOOLONG);
    }
    if alias + rest == 0 {
        put_byte(buf, 0, b'/');
        buf.len = 1;
        buf.flags = walk.flags;
        return Ok(buf);
    }
    // Only with a name to copy: x86 refuses a probe read from a user-space address (the
    // 0 of no alias) even for zero bytes.
    if alias != 0 {
        // SAFETY: `alias` < PATH_MAX bytes to the buffer's start, from the map value
        // the walk found (a checked probe read: a value removed since is an error).
        let rc = unsafe {
            generated::bpf_probe_read_kernel(
                buf.words.as_mut_ptr() as *mut c_void,
                alias,
                walk.alias_addr as *const c_void,
            )
        };
        if rc < 0 {
            return Err(EFAULT);
        }
    }
    let src = (buf.words.as_ptr() as *const u8).wrapping_add((walk.start & MASK) as usize);
    // SAFETY: `rest` < PATH_MAX bytes to byte `alias` < PATH_MAX, from the upper half
    // (start > END - PATH_MAX): both ranges are in the map value, apart.
    let rc = unsafe {
        generated::bpf_probe_read_kernel(
            (buf.words.as_mut_ptr() as *mut u8).add(alias as usize) as *mut c_void,
            rest,
            src as *const c_void,
        )
    };
    if rc < 0 {
        return Err(EFAULT);
    }
    buf.len = alias + rest;
    buf.flags = walk.flags;
    Ok(buf)
}

/// [`resolve_dentry`] of a `struct path *`.
#[inline(always)]
pub(crate) fn resolve_path(
    p: *const path,
    generation: u32,
    slot: u32,
) -> Result<&'static mut PathBuf, u32> {
    let off = offsets();
    let mnt: u64 = read(p as u64, off.path_mnt)?;
    let dentry: u64 = read(p as u64, off.path_dentry)?;
    resolve_dentry(mnt as *const u8, dentry as *const u8, generation, slot)
}

/// [`resolve_dentry`] of a file's `f_path`.
#[inline(always)]
pub(crate) fn resolve_file(
    file: *const u8,
    generation: u32,
    slot: u32,
) -> Result<&'static mut PathBuf, u32> {
    let f_path = (file as u64 + u64::from(offsets().file_f_path)) as *const path;
    resolve_path(f_path, generation, slot)
}
