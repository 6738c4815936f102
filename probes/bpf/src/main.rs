//! edgearmor's BPF-LSM programs.
//!
//! Process identity is captured once per exec (sleepable `bprm_committed_creds`, where
//! `bpf_d_path` may run), hashed, kept in the task's own task-local storage and
//! inherited by every new task, so the hot hooks resolve "which executable is this"
//! (`fromSource`) with one lookup instead of rebuilding a path.
//!
//! - [`identity`]: `record_exec`, `inherit_identity` (`task_alloc`),
//!   `inherit_in_flight` (`sched_process_fork`), the `identify_running` task iterator
//!   for tasks older than the probes, and monitor-only `watch_exec`;
//!   [`task_storage`]: the task-storage map type.
//! - [`applet`]: exec rules on the applets of multi-call binaries (busybox), by the
//!   invoked name in `check_exec` and by the arguments in `check_exec_args`.
//! - [`exec`] (`check_exec`, `bprm_check_security`), [`file`] (`check_open`,
//!   `file_open`), [`file_names`] (unlink, rmdir, mkdir, mknod, symlink, link,
//!   rename) and [`file_descriptors`] (truncate, chmod, chown, `file_truncate`,
//!   `file_permission`, `mmap_file`, `file_mprotect`): resolve each target path once
//!   (exec: `bpf_d_path`; files: [`dentry_path`], a bounded dentry walk that also
//!   maps protected inodes reached by other names to their protected names), walk
//!   it byte by byte ([`path`]: one keyed hash pass yields the path's and every
//!   directory prefix's hash) and look the hashes up in `RULES` ([`matchers`]; see the
//!   ABI crate for the layout).
//! - [`exec_identity`]: executables decided by the file: the canonical names of
//!   protected inodes (`EXEC_ALIASES`) that `check_exec` looks up first, a
//!   `PROT_EXEC` mapping of a protected executable decided like its exec
//!   (`check_exec_map`, `check_exec_mprotect`), the entry carried to a file renamed
//!   over a protected one (`follow_rename`) and dropped with a freed inode
//!   (`forget_freed`).
//! - [`lock`]: locked mode (tamper protection): the agent mark, and the hooks that
//!   deny everyone else detaching or changing edgearmor, unmounting its pins,
//!   ptracing or signalling the agent.
//! - [`socket`] (`check_socket`), [`capable`] (`check_capable`), [`setid`]
//!   (`deny_setuid` / `deny_setgid`): one or two item lookups.
//!
//! Precedence, everywhere: a rule naming the acting executable (`fromSource`) beats
//! rules for every executable; among rules at the same level Block > Audit > Allow.
//! With no rule, a class (or a source) in allow-list mode gets its default posture.
//! Every decision other than a plain allow is reported in `EVENTS` ([`report`]); a
//! full ring buffer never weakens enforcement, the event is counted in `EVENT_DROPS`.
//!
//! Kernel struct offsets come from the agent (`KERNEL_OFFSETS`, [`maps`]), read from
//! the running kernel's BTF; nothing here depends on one kernel's layout.
#![no_std]
#![no_main]
// `atomic_cxchg`: the target has no compare-and-swap atomics types, BPF (cpu v3) has
// the instruction (scratch slots, `maps::with_slot`).
#![allow(internal_features)]
#![feature(core_intrinsics)]
// `#[inline(always)]` on a closure (`file::decide_targets`): the verifier bounds the
// stack of a call chain, and an outlined closure is one more frame in it.
#![feature(stmt_expr_attributes)]

mod applet;
mod capable;
mod dentry_path;
mod exec;
mod exec_identity;
mod file;
mod file_descriptors;
mod file_names;
mod identity;
mod lock;
mod maps;
mod matchers;
mod path;
mod report;
mod setid;
mod socket;
mod task_storage;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
