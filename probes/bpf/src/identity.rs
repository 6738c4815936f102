//! Process identity: which executable a process runs, captured once per exec.
//!
//! - `record_exec` (sleepable `bprm_committed_creds`, where `bpf_d_path` may run):
//!   resolves the new executable's path, interns it in `EXE_PATHS` under its keyed
//!   hash and records `tgid -> hash` in `PROC_IDENTITY`.
//! - `inherit_identity` (`sched_process_fork`): a forked child starts with its
//!   parent's identity.
//! - `watch_exec` (`sched_process_exec`): monitor-only mode's exec reports.
//!
//! The hot hooks then resolve "which executable is this" (`fromSource`) with one
//! hash-map lookup (`current_identity`) instead of rebuilding a path.

use aya_ebpf::{
    bindings::path,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_current_uid_gid,
        bpf_ktime_get_boot_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes,
    },
    macros::{btf_tracepoint, lsm},
    programs::{BtfTracePointContext, LsmContext},
};
use edgearmor_probe_abi::{
    EXE_FLAG_TRUNCATED, ExePath, ExecEvent, KernelOffsets, MAX_REPORTED_PATH_BYTES, PATH_CAP,
};

use crate::{
    maps::{EXE_PATHS, EXEC_EVENTS, PROC_IDENTITY, offsets, with_slot},
    path::{PathBuf, resolve, scratch, walk_path},
    report::count_drop,
};

#[inline(always)]
pub(crate) fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// The identity (executable path hash) of the current process; 0 when unknown.
#[inline(always)]
pub(crate) fn current_identity() -> u64 {
    // SAFETY: map value pointer returned by the kernel for this key.
    unsafe { PROC_IDENTITY.get(current_tgid()) }
        .copied()
        .unwrap_or(0)
}

#[lsm(hook = "bprm_committed_creds", sleepable)]
pub fn record_exec(ctx: LsmContext) -> i32 {
    let _ = try_record_exec(&ctx);
    0
}

fn try_record_exec(ctx: &LsmContext) -> Option<()> {
    let off = offsets();
    let bprm: *const u8 = ctx.arg(0);
    // SAFETY: `bprm` is the hook's `struct linux_binprm *`; a direct load (not
    // bpf_probe_read) lets the verifier type the result as `struct file *`, which
    // bpf_d_path requires. The verifier checks the offset against the kernel's BTF.
    let file: *const u8 =
        unsafe { core::ptr::read(bprm.add(off.binprm_file as usize) as *const *const u8) };
    if file.is_null() {
        return None;
    }
    // SAFETY: `file + f_path` is `&file->f_path` (offset from BTF).
    let f_path = unsafe { file.add(off.file_f_path as usize) } as *const path;
    // No slot, too long or unresolvable: "unknown", so the identity of the previous
    // executable does not linger; hash 0 names no rule.
    let hash = with_slot(|slot| exe_hash(f_path, slot)).unwrap_or(0);
    let _ = PROC_IDENTITY.insert(current_tgid(), hash, 0);
    Some(())
}

/// Resolves and hashes the executable in the claimed `slot`, and interns its path
/// (longer than an `ExePath` holds: its first bytes, flagged truncated); 0 when it
/// cannot be resolved.
#[inline(always)]
fn exe_hash(f_path: *const path, slot: u32) -> u64 {
    let Ok(buf) = resolve(f_path, slot) else {
        return 0;
    };
    let len = buf.len;
    let Some(walk) = walk_path(slot, 0, 0, 0, len) else {
        return 0;
    };
    let hash = walk.hash.finish_len(u64::from(len));
    let Some(buf) = scratch(slot) else {
        return 0;
    };
    if len as usize > MAX_REPORTED_PATH_BYTES {
        buf.flags = EXE_FLAG_TRUNCATED;
    }
    // SAFETY: `PathBuf` starts with `ExePath`'s fields (len, flags, words) in the same
    // #[repr(C)] layout and is larger, so its first bytes are a valid `ExePath`.
    let exe = unsafe { &*(buf as *const PathBuf as *const ExePath) };
    let _ = EXE_PATHS.insert(hash, exe, 0);
    hash
}

#[btf_tracepoint(function = "sched_process_fork")]
pub fn inherit_identity(ctx: BtfTracePointContext) -> i32 {
    let child: *const u8 = ctx.arg(1);
    let parent_tgid = current_tgid();
    // SAFETY: reads the child's tgid through the checked probe-read helper.
    let child_tgid = match unsafe {
        bpf_probe_read_kernel(child.add(offsets().task_tgid as usize) as *const u32)
    } {
        Ok(tgid) => tgid,
        Err(_) => return 0,
    };
    if child_tgid == parent_tgid {
        return 0; // a new thread shares the process identity already
    }
    // SAFETY: map value pointer returned by the kernel for this key.
    if let Some(hash) = unsafe { PROC_IDENTITY.get(parent_tgid) } {
        let hash = *hash;
        let _ = PROC_IDENTITY.insert(child_tgid, hash, 0);
    }
    0
}

/// Monitor-only mode: `sched_process_exec(struct task_struct *p, pid_t old_pid,
/// struct linux_binprm *bprm)` reports every exec with the path it was given. Raw
/// tracepoints need no BPF trampoline, so this works where the LSM programs cannot.
#[btf_tracepoint(function = "sched_process_exec")]
pub fn watch_exec(ctx: BtfTracePointContext) -> i32 {
    let bprm: *const u8 = ctx.arg(2);
    let off = offsets();
    let Some(mut entry) = EXEC_EVENTS.reserve::<ExecEvent>(0) else {
        count_drop();
        return 0;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` is ring-buffer memory reserved for one ExecEvent; every field that
    // user space reads is written before submit. The filename is copied with the
    // checked string helper from `bprm->filename` (offset from BTF).
    unsafe {
        (*ev).boot_ns = bpf_ktime_get_boot_ns();
        (*ev).tgid = current_tgid();
        (*ev).ppid = parent_tgid(&off);
        (*ev).uid = bpf_get_current_uid_gid() as u32;
        (*ev)._pad = 0;
        (*ev).filename.flags = 0;
        let name =
            bpf_probe_read_kernel(bprm.add(off.binprm_filename as usize) as *const *const u8)
                .unwrap_or(core::ptr::null());
        let dst =
            core::slice::from_raw_parts_mut((*ev).filename.words.as_mut_ptr() as *mut u8, PATH_CAP);
        (*ev).filename.len = match bpf_probe_read_kernel_str_bytes(name, dst) {
            Ok(bytes) => bytes.len() as u32,
            Err(_) => 0,
        };
    }
    entry.submit(0);
    0
}

#[inline(always)]
pub(crate) fn parent_tgid(off: &KernelOffsets) -> u32 {
    // SAFETY: probe reads of `current->real_parent->tgid`, offsets from BTF.
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        let parent =
            bpf_probe_read_kernel(task.add(off.task_real_parent as usize) as *const *const u8)
                .unwrap_or(core::ptr::null());
        if parent.is_null() {
            return 0;
        }
        bpf_probe_read_kernel(parent.add(off.task_tgid as usize) as *const u32).unwrap_or(0)
    }
}
