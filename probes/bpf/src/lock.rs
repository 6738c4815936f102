//! Locked mode (tamper protection): while `LOCK_STATE` says locked, the kernel denies
//! every process but the agent what would switch enforcement off or change it.
//!
//! Who the agent is: a task marked in `AGENT_MARK` (task-local storage), which only
//! `record_exec` sets, when the task execs the binary `LOCK_STATE` names (by inode,
//! as the kernel sees it) while nobody traces it; forks and threads inherit the mark
//! like an identity, and any other exec clears it. Tasks already running when the
//! agent locks (the agent itself) are marked by the `identify_running` iterator,
//! which does so only while the kernel is not locked yet. Not a name, not a PID: a
//! copy of the binary is another inode, and a task traced at exec (or whose exe was
//! swapped with `PR_SET_MM_EXE_FILE` later) never gets the mark.
//!
//! What is denied here (the files are denied by the self-protection policy's file
//! rules, see [`exempt`]), each with one `CLASS_TAMPER` event:
//! - `bpf()`: obtaining a writable fd of a protected map, or any fd of a protected
//!   program or link, by id (`*_GET_FD_BY_ID`). Without an fd there is no detach,
//!   update, replace (also `freplace`, which needs the program's fd) or delete.
//!   Read-only map fds stay allowed (`BPF_F_RDONLY`: the kernel refuses writes and
//!   writable mappings through them).
//! - `inode_permission`: opening a protected pin (`BPF_OBJ_GET`, any mode).
//! - `sb_umount`, `sb_mount`, `move_mount`: unmounting the bpffs the pins are on or
//!   a mount above it, mounting on or inside it or on a protected file or directory
//!   (or one above them: `PROTECTED_MOUNTPOINT`), moving it.
//! - `ptrace_access_check`: ptrace, `/proc/PID/mem`, `process_vm_writev`,
//!   `pidfd_getfd` and the `/proc/PID/fd` links of the agent (checks flagged
//!   `PTRACE_MODE_NOAUDIT`, such as `ps` reading `/proc/PID/stat`, are denied without
//!   an event).
//! - `task_kill`, `file_send_sigiotask`: signals to the agent, except from PID 1
//!   (so the service manager stops and restarts it; enforcement stays pinned).

use aya_ebpf::{
    bindings::task_struct, helpers::bpf_probe_read_kernel, macros::lsm, programs::LsmContext,
};
use edgearmor_probe_abi::{
    ACTION_BLOCK, AGENT_MARKED, CLASS_TAMPER, LOCKED, LockState, PROTECTED_LINK, PROTECTED_MAP,
    PROTECTED_MOUNTPOINT, PROTECTED_PIN, PROTECTED_PROG, ProtectedKey, TAMPER_BPF, TAMPER_MOUNT,
    TAMPER_MOVE_MOUNT, TAMPER_PIN, TAMPER_PTRACE, TAMPER_SIGIO, TAMPER_SIGNAL, TAMPER_UMOUNT,
    VERDICT_DENIED, Verdict,
};

use crate::{
    identity::{current_identity, current_task, current_tgid},
    maps::{AGENT_MARK, LOCK_STATE, PROTECTED, offsets},
    report::report,
};

const EPERM: i32 = -1;

/// `bpf()` commands that hand out an fd for an id (`union bpf_attr`'s first `u32` is
/// the id, `open_flags` follows at byte 8).
const BPF_PROG_GET_FD_BY_ID: u32 = 13;
const BPF_MAP_GET_FD_BY_ID: u32 = 14;
const BPF_LINK_GET_FD_BY_ID: u32 = 30;
const BPF_F_RDONLY: u32 = 1 << 3;
const BPF_F_WRONLY: u32 = 1 << 4;
/// `inode_permission` masks that open an inode (not `MAY_EXEC`, the path walk's).
const MAY_WRITE: i32 = 2;
const MAY_READ: i32 = 4;
const MAY_APPEND: i32 = 8;
const PTRACE_MODE_NOAUDIT: u32 = 4;

/// `LOCK_STATE[0]`, locked or not.
#[inline(always)]
pub(crate) fn lock_state() -> Option<&'static LockState> {
    LOCK_STATE.get(0)
}

/// `LOCK_STATE[0]` while the kernel is locked.
#[inline(always)]
fn locked() -> Option<&'static LockState> {
    lock_state().filter(|s| s.locked == LOCKED)
}

/// Whether `task` (BTF-typed) carries the agent mark.
#[inline(always)]
fn is_agent(task: *mut task_struct) -> bool {
    // SAFETY: a BTF-typed task pointer.
    let mark = unsafe { AGENT_MARK.get(task) };
    mark == Some(AGENT_MARKED)
}

/// Reads a `T` at `base + offset` of kernel memory.
#[inline(always)]
fn read<T>(base: *const u8, offset: u32) -> Option<T> {
    if base.is_null() {
        return None;
    }
    // SAFETY: a checked probe read; a fault is `None`.
    unsafe { bpf_probe_read_kernel(base.add(offset as usize) as *const T) }.ok()
}

/// `s_dev` of an inode's superblock.
#[inline(always)]
fn inode_dev(inode: *const u8) -> Option<u32> {
    let sb: *const u8 = read(inode, offsets().inode_sb)?;
    read(sb, offsets().sb_dev)
}

/// Whether `file` (`struct file *`) is the agent binary `state` names.
#[inline(always)]
fn is_agent_binary(state: &LockState, file: *const u8) -> bool {
    if state.agent_ino == 0 {
        return false; // not locked, nor locking: every exec ends here
    }
    let off = offsets();
    let Some(dentry) = read::<*const u8>(file, off.file_f_path + off.path_dentry) else {
        return false;
    };
    let Some(inode) = read::<*const u8>(dentry, off.dentry_inode) else {
        return false;
    };
    read::<u64>(inode, off.inode_ino) == Some(state.agent_ino)
        && inode_dev(inode) == Some(state.agent_dev)
}

/// Whether `task` is being traced (unreadable: as if it were).
#[inline(always)]
fn traced(task: *mut task_struct) -> bool {
    read::<u32>(task as *const u8, offsets().task_ptrace).is_none_or(|p| p != 0)
}

/// `record_exec`: the current task, having exec'd `file`, is the agent when `file` is
/// the agent binary and nobody traces it; any other exec clears the mark. A task
/// that never had a mark gets no storage for "not the agent".
#[inline(always)]
pub(crate) fn mark_exec(file: *const u8) {
    let task = current_task();
    let agent =
        !file.is_null() && lock_state().is_some_and(|s| is_agent_binary(s, file)) && !traced(task);
    // SAFETY: the BTF-typed current task.
    unsafe {
        if agent {
            let _ = AGENT_MARK.set(task, AGENT_MARKED);
        } else if AGENT_MARK.get(task).is_some() {
            let _ = AGENT_MARK.set(task, 0);
        }
    }
}

/// Forks and threads of the agent are the agent (`task_alloc`, `sched_process_fork`).
#[inline(always)]
pub(crate) fn inherit_mark(parent: *mut task_struct, child: *mut task_struct) {
    if is_agent(parent) {
        // SAFETY: BTF-typed task pointers. Without room for the value the child is
        // not the agent: fail closed.
        let _ = unsafe { AGENT_MARK.set(child, AGENT_MARKED) };
    }
}

/// `identify_running`: before the agent locks, marks the running tasks of the agent
/// binary that nobody traces (the locking agent itself; they exec'd before
/// `LOCK_STATE` named the binary). Once locked, only an exec marks.
#[inline(always)]
pub(crate) fn mark_running(task: *mut task_struct) {
    let Some(state) = lock_state() else {
        return;
    };
    if state.locked == LOCKED || state.agent_ino == 0 {
        return;
    }
    let off = offsets();
    let Some(mm) = read::<*const u8>(task as *const u8, off.task_mm) else {
        return;
    };
    let Some(file) = read::<*const u8>(mm, off.mm_exe_file) else {
        return;
    };
    if is_agent_binary(state, file) && !traced(task) {
        // SAFETY: the iterator's BTF-typed task.
        let _ = unsafe { AGENT_MARK.set(task, AGENT_MARKED) };
    }
}

/// File hooks: a Block of the self-protection policy (`LockState::policy_id`) does
/// not apply to the agent. Also while the agent is still locking (its rules are in
/// force from the first file hook on, the agent marked before that by the iterator):
/// it pins its links after the file hooks attach.
#[inline(always)]
pub(crate) fn exempt(verdict: &Verdict) -> bool {
    verdict.action == ACTION_BLOCK
        && lock_state().is_some_and(|s| s.agent_ino != 0 && s.policy_id == verdict.policy_id)
        && is_agent(current_task())
}

/// Denies, reporting `detail` (`[TAMPER_*, ...]`) unless `quiet`.
#[inline(always)]
fn deny(state: &LockState, detail: [u32; 4], quiet: bool) -> i32 {
    if !quiet {
        let verdict = Verdict {
            action: ACTION_BLOCK,
            policy_id: state.policy_id,
        };
        report(
            CLASS_TAMPER,
            VERDICT_DENIED,
            &verdict,
            current_identity(),
            detail,
            u32::MAX,
        );
    }
    EPERM
}

#[inline(always)]
fn protected(kind: u32, id: u64) -> bool {
    protected_on(kind, 0, id)
}

#[inline(always)]
fn protected_on(kind: u32, dev: u32, id: u64) -> bool {
    let key = ProtectedKey { kind, dev, id };
    // SAFETY: map value pointer returned by the kernel for this key.
    unsafe { PROTECTED.get(key) }.is_some()
}

/// `bpf(int cmd, union bpf_attr *attr, unsigned int size)` (`attr` is the kernel's
/// copy): an fd for a protected object's id.
#[lsm(hook = "bpf")]
pub fn lock_bpf(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    let cmd: u32 = ctx.arg(0);
    let kind = match cmd {
        BPF_PROG_GET_FD_BY_ID => PROTECTED_PROG,
        BPF_MAP_GET_FD_BY_ID => PROTECTED_MAP,
        BPF_LINK_GET_FD_BY_ID => PROTECTED_LINK,
        _ => return 0,
    };
    let Some(state) = locked() else {
        return 0;
    };
    let attr: *const u8 = ctx.arg(1);
    // Unreadable: as if it named a protected object (fail closed).
    let id = read::<u32>(attr, 0).unwrap_or(u32::MAX);
    let flags = read::<u32>(attr, 8).unwrap_or(0);
    if kind == PROTECTED_MAP && flags & BPF_F_RDONLY != 0 && flags & BPF_F_WRONLY == 0 {
        return 0;
    }
    if (id != u32::MAX && !protected(kind, u64::from(id))) || is_agent(current_task()) {
        return 0;
    }
    deny(state, [TAMPER_BPF, cmd, id, 0], false)
}

/// `inode_permission(struct inode *inode, int mask)`: opening a protected pin
/// (`BPF_OBJ_GET` checks the pin's permission; a link fd, even read-only, detaches).
#[lsm(hook = "inode_permission")]
pub fn lock_pins(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    let mask: i32 = ctx.arg(1);
    if mask & (MAY_READ | MAY_WRITE | MAY_APPEND) == 0 {
        return 0;
    }
    let Some(state) = locked() else {
        return 0;
    };
    let inode: *const u8 = ctx.arg(0);
    if inode_dev(inode).is_some_and(|dev| dev != state.pin_dev) {
        return 0;
    }
    let ino = read::<u64>(inode, offsets().inode_ino).unwrap_or(0);
    if (ino != 0 && !protected(PROTECTED_PIN, ino)) || is_agent(current_task()) {
        return 0;
    }
    deny(state, [TAMPER_PIN, mask as u32, ino as u32, 0], false)
}

/// Whether `mnt` (`struct vfsmount *`) is a mount of the pins' bpffs (unreadable: yes).
#[inline(always)]
fn on_pins(state: &LockState, mnt: *const u8) -> bool {
    let sb: Option<*const u8> = read(mnt, offsets().vfsmount_sb);
    sb.and_then(|sb| read::<u32>(sb, offsets().sb_dev))
        .is_none_or(|dev| dev == state.pin_dev)
}

/// Whether `path` (`struct path *`) is on the pins' bpffs, or names a protected
/// mountpoint (unreadable: yes).
#[inline(always)]
fn path_on_pins(state: &LockState, path: *const u8) -> bool {
    let mnt: Option<*const u8> = read(path, offsets().path_mnt);
    if mnt.is_none_or(|mnt| on_pins(state, mnt)) {
        return true;
    }
    let dentry: Option<*const u8> = read(path, offsets().path_dentry);
    dentry.is_none_or(protected_dentry)
}

/// Whether `dentry`'s inode is a protected mountpoint (unreadable: yes).
#[inline(always)]
fn protected_dentry(dentry: *const u8) -> bool {
    let off = offsets();
    let Some(inode) = read::<*const u8>(dentry, off.dentry_inode) else {
        return true;
    };
    if inode.is_null() {
        return false;
    }
    match (read::<u64>(inode, off.inode_ino), inode_dev(inode)) {
        (Some(ino), Some(dev)) => protected_on(PROTECTED_MOUNTPOINT, dev, ino),
        _ => true,
    }
}

/// `sb_umount(struct vfsmount *mnt, int flags)`.
#[lsm(hook = "sb_umount")]
pub fn lock_umount(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    let Some(state) = locked() else {
        return 0;
    };
    let mnt: *const u8 = ctx.arg(0);
    // The pins' bpffs, or a mount above it (its root is a protected directory): a
    // lazy unmount of that detaches the bpffs with it.
    let root: Option<*const u8> = read(mnt, offsets().vfsmount_root);
    let guarded = on_pins(state, mnt) || root.is_none_or(protected_dentry);
    if !guarded || is_agent(current_task()) {
        return 0;
    }
    let flags: i32 = ctx.arg(1);
    deny(state, [TAMPER_UMOUNT, flags as u32, 0, 0], false)
}

/// `sb_mount(const char *dev_name, const struct path *path, const char *type,
/// unsigned long flags, void *data)`: a mount on or inside the pins' bpffs (also a
/// remount of it) hides or changes the pins.
#[lsm(hook = "sb_mount")]
pub fn lock_mount(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(5);
    if previous != 0 {
        return previous;
    }
    let Some(state) = locked() else {
        return 0;
    };
    let path: *const u8 = ctx.arg(1);
    if !path_on_pins(state, path) || is_agent(current_task()) {
        return 0;
    }
    let flags: u64 = ctx.arg(3);
    deny(state, [TAMPER_MOUNT, flags as u32, 0, 0], false)
}

/// `move_mount(const struct path *from_path, const struct path *to_path)`.
#[lsm(hook = "move_mount")]
pub fn lock_move_mount(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    let Some(state) = locked() else {
        return 0;
    };
    let from: *const u8 = ctx.arg(0);
    let to: *const u8 = ctx.arg(1);
    if !(path_on_pins(state, from) || path_on_pins(state, to)) || is_agent(current_task()) {
        return 0;
    }
    deny(state, [TAMPER_MOVE_MOUNT, 0, 0, 0], false)
}

/// The tgid of `task` (BTF-typed).
#[inline(always)]
fn tgid_of(task: *mut task_struct) -> u32 {
    read::<u32>(task as *const u8, offsets().task_tgid).unwrap_or(0)
}

/// `ptrace_access_check(struct task_struct *child, unsigned int mode)`.
#[lsm(hook = "ptrace_access_check")]
pub fn lock_ptrace(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    let Some(state) = locked() else {
        return 0;
    };
    let child: *mut task_struct = ctx.arg(0);
    if !is_agent(child) || is_agent(current_task()) {
        return 0;
    }
    let mode: u32 = ctx.arg(1);
    let detail = [TAMPER_PTRACE, mode, tgid_of(child), 0];
    deny(state, detail, mode & PTRACE_MODE_NOAUDIT != 0)
}

/// `task_kill(struct task_struct *p, struct kernel_siginfo *info, int sig, const
/// struct cred *cred)`: signals sent by a process (the kernel's own, such as SIGCHLD,
/// do not come here). Signal 0 only asks whether the agent exists.
#[lsm(hook = "task_kill")]
pub fn lock_kill(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(4);
    if previous != 0 {
        return previous;
    }
    let sig: i32 = ctx.arg(2);
    if sig == 0 {
        return 0;
    }
    let Some(state) = locked() else {
        return 0;
    };
    let target: *mut task_struct = ctx.arg(0);
    if !is_agent(target) || current_tgid() == 1 || is_agent(current_task()) {
        return 0;
    }
    deny(
        state,
        [TAMPER_SIGNAL, sig as u32, tgid_of(target), 0],
        false,
    )
}

/// `file_send_sigiotask(struct task_struct *tsk, struct fown_struct *fown, int sig)`:
/// `F_SETOWN` on someone's file aims SIGIO (or `F_SETSIG`'s signal) at the agent,
/// which never asks for one.
#[lsm(hook = "file_send_sigiotask")]
pub fn lock_sigio(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    let Some(state) = locked() else {
        return 0;
    };
    let target: *mut task_struct = ctx.arg(0);
    if !is_agent(target) {
        return 0;
    }
    let sig: i32 = ctx.arg(2);
    deny(state, [TAMPER_SIGIO, sig as u32, tgid_of(target), 0], false)
}
