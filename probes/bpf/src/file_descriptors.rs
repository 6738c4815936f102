//! Hooks on a whole path (truncate, chmod, chown: each changes the file) and on an
//! open file: `file_truncate`, `file_permission` (every read and write through a
//! descriptor, so one opened before the policy, or before a reload tightened it, is
//! still checked when used), `mmap_file` (a mapping reads the file without
//! `read`, a shared writable one writes it without `write`) and `file_mprotect`
//! (a mapping made readable or writable afterwards).

use aya_ebpf::{bindings::path, helpers::bpf_probe_read_kernel, macros::lsm, programs::LsmContext};
use edgearmor_probe_abi::{
    ACCESS_READ, ACCESS_WRITE, ACTION_BLOCK, CLASS_FILE, FILE_HOOK_CHMOD, FILE_HOOK_CHOWN,
    FILE_HOOK_FILE_TRUNCATE, FILE_HOOK_MMAP, FILE_HOOK_MPROTECT, FILE_HOOK_PERMISSION,
    FILE_HOOK_TRUNCATE,
};

use crate::{
    file::{S_IFREG, Target, decide_targets, file_hook_generation, file_type},
    maps::offsets,
    matchers::undecidable,
};

/// The kernel's `MAY_WRITE`, `MAY_READ`, `MAY_APPEND` (`file_permission`'s mask).
const MAY_WRITE: u32 = 2;
const MAY_READ: u32 = 4;
const MAY_APPEND: u32 = 8;
/// `mmap` flags and protection bits.
const MAP_TYPE: u64 = 0x0f;
const MAP_SHARED: u64 = 0x01;
const MAP_SHARED_VALIDATE: u64 = 0x03;
const PROT_READ: u64 = 0x1;
const PROT_WRITE: u64 = 0x2;
const PROT_EXEC: u64 = 0x4;
/// `vm_area_struct.vm_flags`: a shared mapping (writes reach the file).
const VM_SHARED: u64 = 0x8;

/// A `(const struct path *path, ...)` hook that writes the file.
#[inline(always)]
fn decide_path(ctx: &LsmContext, ret_arg: usize, hook: u32) -> i32 {
    let generation = match file_hook_generation(ctx, ret_arg) {
        Ok(generation) => generation,
        Err(rc) => return rc,
    };
    let p: *const path = ctx.arg(0);
    decide_targets(hook, generation, [Target::path(p, ACCESS_WRITE)], false)
}

/// `path_truncate(const struct path *path)`: `truncate(2)`, `open(O_TRUNC)`, and
/// `ftruncate(2)` on kernels without `file_truncate`.
#[lsm(hook = "path_truncate")]
pub fn check_truncate(ctx: LsmContext) -> i32 {
    decide_path(&ctx, 1, FILE_HOOK_TRUNCATE)
}

/// `path_chmod(const struct path *path, umode_t mode)`.
#[lsm(hook = "path_chmod")]
pub fn check_chmod(ctx: LsmContext) -> i32 {
    decide_path(&ctx, 2, FILE_HOOK_CHMOD)
}

/// `path_chown(const struct path *path, kuid_t uid, kgid_t gid)`.
#[lsm(hook = "path_chown")]
pub fn check_chown(ctx: LsmContext) -> i32 {
    decide_path(&ctx, 3, FILE_HOOK_CHOWN)
}

/// `file_truncate(struct file *file)`: `ftruncate(2)` (Linux 6.2+; attached only
/// where the kernel has the hook).
#[lsm(hook = "file_truncate")]
pub fn check_file_truncate(ctx: LsmContext) -> i32 {
    let generation = match file_hook_generation(&ctx, 1) {
        Ok(generation) => generation,
        Err(rc) => return rc,
    };
    let file: *const u8 = ctx.arg(0);
    let target = Target::file(file, ACCESS_WRITE);
    decide_targets(FILE_HOOK_FILE_TRUNCATE, generation, [target], false)
}

/// `file_permission(struct file *file, int mask)`: runs on every read and write, so
/// the exits come cheapest first (the class, the access, a Block being possible at
/// all, the file type). Only a Block acts and reports: an Audit was reported when
/// the file was opened, not once per read.
#[lsm(hook = "file_permission")]
pub fn check_permission(ctx: LsmContext) -> i32 {
    let generation = match file_hook_generation(&ctx, 2) {
        Ok(generation) => generation,
        Err(rc) => return rc,
    };
    let mask: u32 = ctx.arg(1);
    let access = (if mask & MAY_READ != 0 { ACCESS_READ } else { 0 })
        | (if mask & (MAY_WRITE | MAY_APPEND) != 0 {
            ACCESS_WRITE
        } else {
            0
        });
    if access == 0 {
        return 0;
    }
    // The undecidable verdict is the strongest any file rule or posture gives: no
    // Block there, no Block for this read or write either.
    if undecidable(CLASS_FILE, generation).action != ACTION_BLOCK {
        return 0;
    }
    let file: *const u8 = ctx.arg(0);
    if file_type(file) != S_IFREG {
        return 0;
    }
    let target = Target::file(file, access);
    decide_targets(FILE_HOOK_PERMISSION, generation, [target], true)
}

/// What a mapping with `prot` does to its file: reads it (readable or executable),
/// and writes it when it is shared and writable.
#[inline(always)]
fn mapping_access(prot: u64, shared: bool) -> u32 {
    (if prot & (PROT_READ | PROT_EXEC) != 0 {
        ACCESS_READ
    } else {
        0
    }) | (if shared && prot & PROT_WRITE != 0 {
        ACCESS_WRITE
    } else {
        0
    })
}

/// A mapping of `file` with `access`: decided like a read or write through a
/// descriptor (only a Block acts; the open reported an Audit), after the same cheap
/// exits as `file_permission` (ld.so maps and protects every library of every exec).
#[inline(always)]
fn decide_mapping(hook: u32, generation: u32, file: *const u8, access: u32) -> i32 {
    if access == 0 || file.is_null() {
        return 0;
    }
    if undecidable(CLASS_FILE, generation).action != ACTION_BLOCK {
        return 0;
    }
    if file_type(file) != S_IFREG {
        return 0;
    }
    decide_targets(hook, generation, [Target::file(file, access)], true)
}

/// `mmap_file(struct file *file, unsigned long reqprot, unsigned long prot,
/// unsigned long flags)`: a mapping reads its file without `read` (a descriptor
/// opened before the policy), a shared writable one writes it without `write`.
#[lsm(hook = "mmap_file")]
pub fn check_mmap(ctx: LsmContext) -> i32 {
    let generation = match file_hook_generation(&ctx, 4) {
        Ok(generation) => generation,
        Err(rc) => return rc,
    };
    let file: *const u8 = ctx.arg(0);
    let prot: u64 = ctx.arg(2);
    let flags: u64 = ctx.arg(3);
    let shared = matches!(flags & MAP_TYPE, MAP_SHARED | MAP_SHARED_VALIDATE);
    decide_mapping(
        FILE_HOOK_MMAP,
        generation,
        file,
        mapping_access(prot, shared),
    )
}

/// `file_mprotect(struct vm_area_struct *vma, unsigned long reqprot, unsigned long
/// prot)`: a mapping made readable, or (shared) writable, after `mmap` decided it.
#[lsm(hook = "file_mprotect")]
pub fn check_mprotect(ctx: LsmContext) -> i32 {
    let generation = match file_hook_generation(&ctx, 3) {
        Ok(generation) => generation,
        Err(rc) => return rc,
    };
    let prot: u64 = ctx.arg(2);
    let vma: *const u8 = ctx.arg(0);
    let off = offsets();
    // SAFETY: probe reads of `vma->vm_flags` and `vma->vm_file`, offsets from BTF.
    let flags = unsafe { bpf_probe_read_kernel(vma.add(off.vma_flags as usize) as *const u64) }
        .unwrap_or(0);
    let access = mapping_access(prot, flags & VM_SHARED != 0);
    if access == 0 {
        return 0;
    }
    // SAFETY: as above.
    let file = unsafe { bpf_probe_read_kernel(vma.add(off.vma_file as usize) as *const *const u8) }
        .unwrap_or(core::ptr::null());
    decide_mapping(FILE_HOOK_MPROTECT, generation, file, access)
}
