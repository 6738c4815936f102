//! edgearmor's BPF-LSM programs.
//!
//! Process identity is captured once per exec (sleepable `bprm_committed_creds`, where
//! `bpf_d_path` may run), hashed, and inherited across fork, so the hot hooks resolve
//! "which executable is this" with one hash-map lookup instead of rebuilding a path.
//!
//! - `record_exec`: resolves the new executable's absolute path, interns it in
//!   `EXE_PATHS` under its keyed hash and records `tgid -> hash` in `PROC_IDENTITY`.
//! - `inherit_identity`: a forked child starts with its parent's identity.
//! - `deny_setuid` / `deny_setgid`: deny with -EPERM (or only report, for audit rules)
//!   when `SETID_RULES` covers this syscall family for the caller's executable (or for
//!   every executable), and report it in `EVENTS`. A full ring buffer never weakens
//!   enforcement: the event is counted in `EVENT_DROPS`.
//!
//! Kernel struct offsets come from the agent (`KERNEL_OFFSETS`), read from the running
//! kernel's BTF; nothing here depends on one kernel's layout.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::path,
    cty::c_char,
    helpers::{
        bpf_d_path, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_current_uid_gid,
        bpf_ktime_get_boot_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes,
    },
    macros::{btf_tracepoint, lsm, map},
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, LsmContext},
};
use edgearmor_probe_abi::{
    EXE_FLAG_TOO_LONG, SETID_ANY_EXECUTABLE, VERDICT_AUDITED, setid_bit, ExecEvent, ExePath, KernelOffsets, LSM_SETID_FS,
    LSM_SETID_ID, PATH_CAP, PATH_WORDS, SETID_KIND_UID, SetidEvent, SetidRule, VERDICT_DENIED,
    path_hash,
};

const EPERM: i32 = 1;

#[unsafe(no_mangle)]
static KERNEL_OFFSETS: KernelOffsets = KernelOffsets::ZERO;

#[unsafe(no_mangle)]
static PATH_HASH_KEY: [u64; 2] = [0; 2];

#[map]
static SETID_RULES: HashMap<u64, SetidRule> = HashMap::with_max_entries(1024, 0);

#[map]
static PROC_IDENTITY: LruHashMap<u32, u64> = LruHashMap::with_max_entries(8192, 0);

#[map]
static EXE_PATHS: LruHashMap<u64, ExePath> = LruHashMap::with_max_entries(1024, 0);

/// One path buffer per CPU: too large for the 512-byte BPF stack.
#[map]
static PATH_SCRATCH: PerCpuArray<ExePath> = PerCpuArray::with_max_entries(1, 0);

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

#[map]
static EVENT_DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Monitor-only mode's exec reports (only loaded when BPF-LSM cannot attach).
#[map]
static EXEC_EVENTS: RingBuf = RingBuf::with_byte_size(64 * 1024, 0);

#[inline(always)]
fn offsets() -> KernelOffsets {
    // SAFETY: a plain read of a global; volatile so the compiler does not fold the
    // build-time zero in, the agent writes the real values before loading.
    unsafe { core::ptr::read_volatile(&KERNEL_OFFSETS) }
}

#[inline(always)]
fn hash_key() -> [u64; 2] {
    // SAFETY: as for `offsets`.
    unsafe { core::ptr::read_volatile(&PATH_HASH_KEY) }
}

#[inline(always)]
fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
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
    let scratch = PATH_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU map value, exclusively ours while this program runs on this CPU
    // (migration is disabled and nothing below sleeps).
    let scratch = unsafe { &mut *scratch };
    // SAFETY: `file + f_path` is `&file->f_path` (offset from BTF); the buffer is
    // PATH_CAP bytes of map memory.
    let written = unsafe {
        bpf_d_path(
            file.add(off.file_f_path as usize) as *mut path,
            scratch.words.as_mut_ptr() as *mut c_char,
            PATH_CAP as u32,
        )
    };
    let hash = if written > 0 && written <= PATH_CAP as i64 {
        scratch.zero_from(written as usize);
        scratch.len = (written - 1) as u32;
        scratch.flags = 0;
        path_hash(&hash_key(), &scratch.words)
    } else {
        // Too long (or unresolvable): record "unknown" so the inherited identity of
        // the previous executable does not linger; hash 0 never names a rule.
        scratch.len = 0;
        scratch.flags = EXE_FLAG_TOO_LONG;
        0
    };
    if hash != 0 {
        let _ = EXE_PATHS.insert(&hash, scratch, 0);
    }
    let _ = PROC_IDENTITY.insert(&current_tgid(), &hash, 0);
    Some(())
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
    if let Some(hash) = unsafe { PROC_IDENTITY.get(&parent_tgid) } {
        let hash = *hash;
        let _ = PROC_IDENTITY.insert(&child_tgid, &hash, 0);
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
        let name = bpf_probe_read_kernel(bprm.add(off.binprm_filename as usize) as *const *const u8)
            .unwrap_or(core::ptr::null());
        let dst = core::slice::from_raw_parts_mut((*ev).filename.words.as_mut_ptr() as *mut u8, PATH_CAP);
        (*ev).filename.len = match bpf_probe_read_kernel_str_bytes(name, dst) {
            Ok(bytes) => bytes.len() as u32,
            Err(_) => 0,
        };
    }
    entry.submit(0);
    0
}

#[inline(always)]
fn parent_tgid(off: &KernelOffsets) -> u32 {
    // SAFETY: probe reads of `current->real_parent->tgid`, offsets from BTF.
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        let parent = bpf_probe_read_kernel(task.add(off.task_real_parent as usize) as *const *const u8)
            .unwrap_or(core::ptr::null());
        if parent.is_null() {
            return 0;
        }
        bpf_probe_read_kernel(parent.add(off.task_tgid as usize) as *const u32).unwrap_or(0)
    }
}

#[lsm(hook = "task_fix_setuid")]
pub fn deny_setuid(ctx: LsmContext) -> i32 {
    check_setid(&ctx, SETID_KIND_UID)
}

#[lsm(hook = "task_fix_setgid")]
pub fn deny_setgid(ctx: LsmContext) -> i32 {
    check_setid(&ctx, edgearmor_probe_abi::SETID_KIND_GID)
}

/// `task_fix_set{u,g}id(struct cred *new, const struct cred *old, int flags)`, plus
/// the previous LSM program's return value as the last argument.
#[inline(always)]
fn check_setid(ctx: &LsmContext, kind: u32) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    let flags: u32 = ctx.arg(2);
    let Some(bit) = setid_bit(kind, flags) else {
        return 0;
    };
    let bit_mask = 1u32 << bit;
    let tgid = current_tgid();
    // SAFETY: map value pointer returned by the kernel for this key.
    let hash = unsafe { PROC_IDENTITY.get(&tgid) }.copied().unwrap_or(0);
    // A rule naming this executable first, then rules for every executable.
    // SAFETY: map value pointers returned by the kernel for these keys.
    let rule = match unsafe { SETID_RULES.get(&hash) } {
        Some(r) if hash != 0 && (r.deny_mask | r.audit_mask) & bit_mask != 0 => Some(r),
        _ => unsafe { SETID_RULES.get(&SETID_ANY_EXECUTABLE) }
            .filter(|r| (r.deny_mask | r.audit_mask) & bit_mask != 0),
    };
    let Some(rule) = rule else {
        return 0;
    };
    let denied = rule.deny_mask & bit_mask != 0;
    let rule_id = rule.rule_ids[(bit as usize) & 7];
    let new_cred: *const u8 = ctx.arg(0);
    let verdict = if denied { VERDICT_DENIED } else { VERDICT_AUDITED };
    report_setid(new_cred, flags, kind, tgid, hash, rule_id, verdict);
    if denied { -EPERM } else { 0 }
}

#[inline(always)]
fn report_setid(new_cred: *const u8, flags: u32, kind: u32, tgid: u32, hash: u64, rule_id: u32, verdict: u32) {
    let Some(mut entry) = EVENTS.reserve::<SetidEvent>(0) else {
        count_drop();
        return;
    };
    let off = offsets();
    // Which id the caller asked for: setuid/setgid set all of them, setre*/setres*
    // are about the effective id, setfs* about the filesystem id.
    let id_off = match (kind == SETID_KIND_UID, flags) {
        (true, LSM_SETID_ID) => off.cred_uid,
        (true, LSM_SETID_FS) => off.cred_fsuid,
        (true, _) => off.cred_euid,
        (false, LSM_SETID_ID) => off.cred_gid,
        (false, LSM_SETID_FS) => off.cred_fsgid,
        (false, _) => off.cred_egid,
    };
    // SAFETY: probe read of `new->*id`, offset from BTF.
    let requested_id =
        unsafe { bpf_probe_read_kernel(new_cred.add(id_off as usize) as *const u32) }
            .unwrap_or(u32::MAX);
    let ppid = parent_tgid(&off);

    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at ring-buffer memory reserved for exactly one SetidEvent;
    // every field is written before submit.
    unsafe {
        (*ev).boot_ns = bpf_ktime_get_boot_ns();
        (*ev).tgid = tgid;
        (*ev).tid = bpf_get_current_pid_tgid() as u32;
        (*ev).ppid = ppid;
        (*ev).uid = bpf_get_current_uid_gid() as u32;
        (*ev).requested_id = requested_id;
        (*ev).kind = kind;
        (*ev).flags = flags;
        (*ev).verdict = verdict;
        (*ev).rule_id = rule_id;
        (*ev)._pad = 0;
        copy_exe_path(&mut (*ev).exe, hash);
        // SAFETY: map value pointer returned by the kernel for this key.
        let parent_hash = PROC_IDENTITY.get(&ppid).copied().unwrap_or(0);
        copy_exe_path(&mut (*ev).parent_exe, parent_hash);
    }
    entry.submit(0);
}

/// Copies the interned path for `hash` (or an empty path) into event memory.
#[inline(always)]
fn copy_exe_path(dst: &mut ExePath, hash: u64) {
    // SAFETY: map value pointer returned by the kernel for this key.
    match unsafe { EXE_PATHS.get(&hash) } {
        Some(src) if hash != 0 => {
            dst.len = src.len;
            dst.flags = src.flags;
            let mut i = 0;
            while i < PATH_WORDS {
                dst.words[i] = src.words[i];
                i += 1;
            }
        }
        _ => {
            dst.len = 0;
            dst.flags = 0;
            let mut i = 0;
            while i < PATH_WORDS {
                dst.words[i] = 0;
                i += 1;
            }
        }
    }
}

#[inline(always)]
fn count_drop() {
    if let Some(counter) = EVENT_DROPS.get_ptr_mut(0) {
        // SAFETY: per-CPU slot; this program cannot be preempted by itself on this CPU.
        unsafe { *counter += 1 };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
