//! Process identity: which executable a task runs, kept in task-local storage
//! (`TASK_IDENTITY`), so it lives exactly as long as the task and no other task can
//! ever see it.
//!
//! - `record_exec` (sleepable `bprm_committed_creds`, where `bpf_d_path` may run):
//!   resolves the new executable's path, interns it in `EXE_PATHS` under its keyed
//!   hash and replaces the task's identity with that hash.
//! - `inherit_identity` (`task_alloc`, for every new process and thread): the new
//!   task starts with the identity of the task creating it. A creator that has none
//!   yet (it ran before the probes) is identified from its executable on the spot,
//!   so no task created after this hook attached goes without one.
//! - `inherit_in_flight` (`sched_process_fork`, when a new task is complete but has
//!   not run yet): a task whose `task_alloc` ran just before `inherit_identity` was
//!   attached gets its creator's identity here.
//! - `identify_running` (a task iterator the agent runs twice once both are
//!   attached): gives every task still without an identity (started before the
//!   probes) the one of its executable.
//!
//! Why no fork escapes: a task created after `inherit_identity` attached inherits. One
//! whose `task_alloc` came before either reaches `sched_process_fork` after
//! `inherit_in_flight` attached (and inherits there, if its creator has an identity
//! by then), or was complete, so visible by PID, before the iterator started, and is
//! visited. A creator without an identity at that point had not been visited yet;
//! the new task is then visited by the first pass unless PIDs wrapped past the
//! iterator, and by the second in any case (it was visible before the first ended).
//! - `watch_exec` (`sched_process_exec`): monitor-only mode's exec reports.
//!
//! The hot hooks then resolve "which executable is this" (`fromSource`) with one
//! task-storage lookup (`current_identity`) instead of rebuilding a path.

use aya_ebpf::{
    bindings::{path, task_struct},
    cty::c_void,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_current_uid_gid,
        bpf_ktime_get_boot_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes,
        generated::{bpf_get_current_task_btf, bpf_seq_write},
    },
    macros::{btf_tracepoint, lsm},
    programs::{BtfTracePointContext, LsmContext},
};
use edgearmor_probe_abi::{
    EXE_FLAG_TRUNCATED, ExePath, ExecEvent, KernelOffsets, MAX_REPORTED_PATH_BYTES, PATH_CAP,
    programs::{IDENTIFIED, NOT_STORED},
};

use crate::{
    lock::{inherit_mark, mark_exec, mark_running},
    maps::{EXE_PATHS, EXEC_EVENTS, TASK_IDENTITY, offsets, with_slot},
    path::{PathBuf, resolve, scratch, walk_path},
    report::count_drop,
};

/// `task_alloc`'s answer when the new task's identity cannot be stored.
const ENOMEM: i32 = -12;

#[inline(always)]
pub(crate) fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// The current task, typed from BTF (what task storage wants).
#[inline(always)]
pub(crate) fn current_task() -> *mut task_struct {
    // SAFETY: no arguments; returns the running task.
    unsafe { bpf_get_current_task_btf() }
}

/// The identity (executable path hash) of the current task; 0 when unknown. A
/// task-storage call the kernel refuses while another is under way on this CPU
/// (before Linux 6.2) is repeated, not read as unknown (`TaskStorage::value`).
#[inline(always)]
pub(crate) fn current_identity() -> u64 {
    // SAFETY: the BTF-typed current task.
    unsafe { TASK_IDENTITY.get(current_task()) }.unwrap_or(0)
}

/// The identity of the current task's parent; 0 when unknown.
#[inline(always)]
pub(crate) fn parent_identity(off: &KernelOffsets) -> u64 {
    let task = current_task() as *const u8;
    // SAFETY: a typed load of `current->real_parent` (offset from BTF; the verifier
    // checks it against the kernel's BTF and types the result as a task).
    let parent: *mut task_struct = unsafe {
        core::ptr::read(task.add(off.task_real_parent as usize) as *const *mut task_struct)
    };
    if parent.is_null() {
        return 0;
    }
    // SAFETY: a BTF-typed task pointer.
    unsafe { TASK_IDENTITY.get(parent) }.unwrap_or(0)
}

/// Resolves and hashes the executable in the claimed `slot`, and interns its path
/// (longer than an `ExePath` holds: its first bytes, flagged truncated); 0 when it
/// cannot be resolved.
#[inline(always)]
fn path_identity(f_path: *const path, slot: u32) -> u64 {
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

/// The identity of the executable `task` runs (`task->mm->exe_file`); `None` for a
/// task without one (a kernel thread, a task past `exit_mm`).
#[inline(always)]
fn exe_identity(task: *mut task_struct, slot: u32) -> Option<u64> {
    let off = offsets();
    let task = task as *const u8;
    // SAFETY: typed loads of `task->mm` and `mm->exe_file` (offsets from BTF, checked
    // by the verifier against the kernel's BTF; a NULL base reads as NULL).
    let file: *const u8 = unsafe {
        let mm: *const u8 = core::ptr::read(task.add(off.task_mm as usize) as *const *const u8);
        if mm.is_null() {
            return None;
        }
        core::ptr::read(mm.add(off.mm_exe_file as usize) as *const *const u8)
    };
    if file.is_null() {
        return None;
    }
    // SAFETY: `&file->f_path` (offset from BTF).
    let f_path = unsafe { file.add(off.file_f_path as usize) } as *const path;
    Some(path_identity(f_path, slot))
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
    // No file: "unknown" rather than the previous executable's identity.
    let hash = if file.is_null() {
        0
    } else {
        // SAFETY: `file + f_path` is `&file->f_path` (offset from BTF).
        let f_path = unsafe { file.add(off.file_f_path as usize) } as *const path;
        // No free scratch slot: "unknown" as for an unresolvable path.
        with_slot(|slot| path_identity(f_path, slot)).unwrap_or(0)
    };
    // SAFETY: the BTF-typed current task. Should the kernel fail to allocate the
    // value, the task has none, which reads as "unknown" (0), never as the old one.
    let _ = unsafe { TASK_IDENTITY.set(current_task(), hash) };
    mark_exec(file);
    Some(())
}

/// `task_alloc(struct task_struct *task, unsigned long clone_flags)`: runs in the
/// creating task for every new process and thread. Not sleepable, so the walk from
/// `current` to its executable stays in an RCU section the verifier accepts, and
/// `bpf_d_path` is allowed because the hook is in the kernel's sleepable set.
#[lsm(hook = "task_alloc")]
pub fn inherit_identity(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    let child: *mut task_struct = ctx.arg(0);
    let parent = current_task();
    // SAFETY: BTF-typed task pointers (the hook's argument, the current task).
    let hash = match unsafe { TASK_IDENTITY.get(parent) } {
        Some(hash) => hash,
        None => {
            // A creator that ran before the probes: identify it now, once.
            // No free scratch slot: the creator's identity cannot be worked out, so
            // the child could escape its fromSource rules; refuse the fork.
            let Some(found) = with_slot(|slot| exe_identity(parent, slot)) else {
                return ENOMEM;
            };
            let Some(hash) = found else {
                return 0; // a kernel thread: its children are "unknown" until they exec
            };
            // SAFETY: as above. Unless an exec got there first.
            unsafe { TASK_IDENTITY.get_or_insert(parent, hash) }.unwrap_or(hash)
        }
    };
    // SAFETY: as above. Without room for the value the child would act as "unknown"
    // and escape the creator's fromSource rules: refuse the fork instead, as the
    // kernel itself does when it runs out of memory.
    if !unsafe { TASK_IDENTITY.set(child, hash) } && hash != 0 {
        return ENOMEM;
    }
    inherit_mark(parent, child);
    0
}

/// `sched_process_fork(struct task_struct *parent, struct task_struct *child)`: the
/// child of a fork that passed `task_alloc` before `inherit_identity` was attached
/// has no identity; it gets its creator's (one lookup for every other fork).
#[btf_tracepoint(function = "sched_process_fork")]
pub fn inherit_in_flight(ctx: BtfTracePointContext) -> i32 {
    let child: *mut task_struct = ctx.arg(1);
    // SAFETY: BTF-typed task pointers (the tracepoint's argument, the current task).
    unsafe {
        if TASK_IDENTITY.get(child).is_some() {
            return 0;
        }
        if let Some(hash) = TASK_IDENTITY.get(current_task()) {
            let _ = TASK_IDENTITY.get_or_insert(child, hash);
        }
    }
    inherit_mark(current_task(), child);
    0
}

/// `iter/task` (`struct bpf_iter__task { struct bpf_iter_meta *meta; struct
/// task_struct *task; }`): each task without an identity gets its executable's. One
/// byte per such task goes to the iterator's output, so the agent can say how many
/// there were and fail when one could not be stored.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task")]
pub fn identify_running(ctx: *mut c_void) -> i32 {
    let ctx = ctx as *const *mut u8;
    // SAFETY: context loads of `meta` and `task` (the verifier checks the context).
    let (meta, task) = unsafe { (*ctx, *ctx.add(1) as *mut task_struct) };
    if task.is_null() {
        return 0; // the end-of-iteration call
    }
    mark_running(task);
    // SAFETY: `task` is the iterator's BTF-typed task.
    if unsafe { TASK_IDENTITY.get(task) }.is_some() {
        return 0;
    }
    let Some(found) = with_slot(|slot| exe_identity(task, slot)) else {
        // No free scratch slot: reported as not stored, so the agent refuses to start.
        return write_out(meta, NOT_STORED);
    };
    let Some(hash) = found else {
        return 0;
    };
    // SAFETY: as above. An exec or fork racing with the iterator has already stored
    // the fresher identity; `get_or_insert` keeps it.
    let out = match unsafe { TASK_IDENTITY.get_or_insert(task, hash) } {
        Some(_) => IDENTIFIED,
        None => NOT_STORED,
    };
    write_out(meta, out)
}

/// Writes one result byte to the iterator's output.
#[inline(always)]
fn write_out(meta: *mut u8, out: u8) -> i32 {
    // SAFETY: `meta->seq` is the iterator's `struct seq_file *` (the first member of
    // `struct bpf_iter_meta`); one byte of stack is written to it.
    unsafe {
        let seq = *(meta as *const *mut aya_ebpf::bindings::seq_file);
        bpf_seq_write(seq, &out as *const u8 as *const c_void, 1);
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
        (*ev).ppid = parent_tgid(off);
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
