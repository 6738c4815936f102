//! File access: `file_open` (read and write decided separately, `readOnly`) and
//! `path_unlink` (removing a file is a write to it), both matched as paths of
//! class `CLASS_FILE`.

use aya_ebpf::{
    bindings::path,
    helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes},
    macros::lsm,
    programs::LsmContext,
};
use edgearmor_probe_abi::{
    ACCESS_READ, ACCESS_UNLINK, ACCESS_WRITE, CLASS_FILE, PATH_CAP, SLOT_READ, SLOT_WRITE, Verdict,
};

use crate::{
    identity::current_identity,
    maps::{SLOT_CHECK_OPEN, SLOT_CHECK_UNLINK, active_generation, offsets},
    matchers::{EACCES, enforce, match_path, settle_path, stronger},
    path::resolve,
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
    // SAFETY: `&file->f_path` of the hook's typed `struct file *`.
    let f_path = unsafe { file.add(off.file_f_path as usize) } as *const path;
    let Some(buf) = resolve(f_path, SLOT_CHECK_OPEN) else {
        return 0;
    };
    let len = buf.len;
    decide_file(generation, access, SLOT_CHECK_OPEN, len)
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
    let Some(buf) = resolve(dir, SLOT_CHECK_UNLINK) else {
        return 0;
    };
    let mut len = buf.len;
    // "/dir" + "/" + name; the name read must stay inside the buffer, so only
    // directories up to half the capacity long are supported (longer: no match).
    if len >= (PATH_CAP / 2) as u32 {
        return 0;
    }
    if len > 1 {
        let at = len as usize & (PATH_CAP / 2 - 1);
        buf.words[at / 8] |= u64::from(b'/') << ((at % 8) * 8);
        len += 1;
    }
    let off = offsets();
    // SAFETY: probe read of `dentry->d_name.name`, offset from BTF.
    let name =
        unsafe { bpf_probe_read_kernel(dentry.add(off.dentry_name as usize) as *const *const u8) }
            .unwrap_or(core::ptr::null());
    let at = len as usize & (PATH_CAP / 2 - 1);
    // SAFETY: `at < PATH_CAP / 2`, so `at .. at + PATH_CAP / 2` is inside the words.
    let dst = unsafe {
        core::slice::from_raw_parts_mut((buf.words.as_mut_ptr() as *mut u8).add(at), PATH_CAP / 2)
    };
    // SAFETY: checked kernel string read into map memory.
    let Ok(name) = (unsafe { bpf_probe_read_kernel_str_bytes(name, dst) }) else {
        return 0;
    };
    let name_len = name.len() as u32;
    if name_len == 0 || name_len >= (PATH_CAP / 2 - 1) as u32 {
        return 0;
    }
    len += name_len;
    buf.len = len;
    decide_file(
        generation,
        ACCESS_WRITE | ACCESS_UNLINK,
        SLOT_CHECK_UNLINK,
        len,
    )
}

#[inline(always)]
fn decide_file(generation: u32, access: u32, slot: u32, len: u32) -> i32 {
    let source = current_identity();
    let Some(walk) = match_path(CLASS_FILE, generation, source, slot, len) else {
        return 0;
    };
    settle_path(slot);
    let mut verdict = Verdict::NONE;
    if access & ACCESS_READ != 0 {
        verdict = walk.verdicts[SLOT_READ];
    }
    if access & ACCESS_WRITE != 0 {
        verdict = stronger(verdict, walk.verdicts[SLOT_WRITE]);
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
