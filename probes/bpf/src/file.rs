//! File access: `file_open` (read and write decided separately, `readOnly`) and
//! `path_unlink` (removing a file is a write to it), both matched as paths of
//! class `CLASS_FILE`.

use aya_ebpf::{bindings::path, helpers::bpf_probe_read_kernel, macros::lsm, programs::LsmContext};
use edgearmor_probe_abi::{
    ACCESS_READ, ACCESS_UNLINK, ACCESS_WRITE, CLASS_FILE, SLOT_READ, SLOT_WRITE,
    UNDECIDED_NO_SCRATCH, UNDECIDED_UNRESOLVED, Verdict,
};

use crate::{
    dentry_path::{resolve_dentry, resolve_file},
    identity::current_identity,
    maps::{active_generation, offsets, with_slot},
    matchers::{EACCES, decide_undecided, enforce, match_path, settle_path, stronger},
    report::report,
};

const FMODE_READ: u32 = 1;
const FMODE_WRITE: u32 = 2;

/// `file_open(struct file *file)`: reads and writes are decided separately
/// (`readOnly`); an open for both gets the stronger verdict.
#[lsm(hook = "file_open")]
pub fn check_open(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    let Some(generation) = active_generation(CLASS_FILE) else {
        return 0;
    };
    let off = offsets();
    let file: *const u8 = ctx.arg(0);
    // SAFETY: probe read of `file->f_mode`, offset from BTF.
    let mode = unsafe { bpf_probe_read_kernel(file.add(off.file_f_mode as usize) as *const u32) }
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
    let source = current_identity();
    with_slot(|slot| match resolve_file(file, generation, slot) {
        Ok(buf) => {
            let len = buf.len;
            decide_file(generation, source, access, slot, len)
        }
        Err(errno) => {
            let detail = [access, 0, errno, UNDECIDED_UNRESOLVED];
            decide_undecided(
                CLASS_FILE,
                generation,
                source,
                Verdict::NONE,
                detail,
                u32::MAX,
            )
        }
    })
    .unwrap_or_else(|| no_slot(generation, source, access))
}

/// Every scratch slot of this CPU is held: undecidable.
#[inline(always)]
fn no_slot(generation: u32, source: u64, access: u32) -> i32 {
    let detail = [access, 0, 0, UNDECIDED_NO_SCRATCH];
    decide_undecided(
        CLASS_FILE,
        generation,
        source,
        Verdict::NONE,
        detail,
        u32::MAX,
    )
}

/// `path_unlink(const struct path *dir, struct dentry *dentry)`: removing a file is
/// a write to it.
#[lsm(hook = "path_unlink")]
pub fn check_unlink(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    let Some(generation) = active_generation(CLASS_FILE) else {
        return 0;
    };
    let dir: *const path = ctx.arg(0);
    let dentry: *const u8 = ctx.arg(1);
    let source = current_identity();
    let access = ACCESS_WRITE | ACCESS_UNLINK;
    with_slot(|slot| decide_unlink(dir, dentry, generation, source, slot))
        .unwrap_or_else(|| no_slot(generation, source, access))
}

/// Resolves "dir/name" (the dentry's parent is the directory) in the claimed `slot`
/// and decides it.
#[inline(always)]
fn decide_unlink(
    dir: *const path,
    dentry: *const u8,
    generation: u32,
    source: u64,
    slot: u32,
) -> i32 {
    let access = ACCESS_WRITE | ACCESS_UNLINK;
    // SAFETY: probe read of `dir->mnt`, offset from BTF.
    let mnt = unsafe {
        bpf_probe_read_kernel(
            (dir as *const u8).add(offsets().path_mnt as usize) as *const *const u8
        )
    }
    .unwrap_or(core::ptr::null());
    match resolve_dentry(mnt, dentry, generation, slot) {
        Ok(buf) => {
            let len = buf.len;
            decide_file(generation, source, access, slot, len)
        }
        Err(errno) => {
            let detail = [access, 0, errno, UNDECIDED_UNRESOLVED];
            decide_undecided(
                CLASS_FILE,
                generation,
                source,
                Verdict::NONE,
                detail,
                u32::MAX,
            )
        }
    }
}

#[inline(always)]
fn decide_file(generation: u32, source: u64, access: u32, slot: u32, len: u32) -> i32 {
    let Some(walk) = match_path(CLASS_FILE, generation, source, slot, len) else {
        return no_slot(generation, source, access);
    };
    settle_path(slot);
    let mut verdict = Verdict::NONE;
    if access & ACCESS_READ != 0 {
        verdict = walk.verdicts[SLOT_READ];
    }
    if access & ACCESS_WRITE != 0 {
        verdict = stronger(verdict, walk.verdicts[SLOT_WRITE]);
    }
    if walk.undecided != 0 {
        let detail = [access, 0, 0, walk.undecided];
        return decide_undecided(CLASS_FILE, generation, source, verdict, detail, slot);
    }
    enforce(&verdict, EACCES, |outcome| {
        report(
            CLASS_FILE,
            outcome,
            &verdict,
            source,
            [access, 0, 0, 0],
            slot,
        )
    })
}
