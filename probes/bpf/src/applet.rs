//! Multi-call binaries (busybox, toybox): one executable that runs the applet its
//! name (or, run as itself, its next argument) says. On executables the agent marks
//! (`MATCH_MULTI_CALL`), exec rules on applets (`MATCH_APPLET`) apply twice:
//!
//! - `merge_applet` (in `check_exec`, `bprm_check_security`): the last component of
//!   `bprm->filename`, the name a shell execs a link by (`/usr/bin/wget`, `./wget`).
//!   Denied there with `EACCES`. The last component needs no working directory, and
//!   `..` or symlinked directories before it change nothing.
//! - `check_exec_args` (sleepable `bprm_committed_creds`): the applet the arguments
//!   name, as the binary itself reads them (`argv[0]`, without a login shell's `-`;
//!   after the binary's own name, the next argument: `busybox wget`, `exec -a wget`,
//!   busybox's shell running `/proc/self/exe` as `wget`). By then the new image owns
//!   a fresh address space (no other thread can rewrite the strings), but the exec
//!   can no longer fail: under Block the process is killed before its first
//!   instruction.
//!
//! Names that cannot be read whole are denied: only marked binaries are checked, and
//! they are marked only while applet rules exist.

use aya_ebpf::{
    bindings::path,
    cty::c_void,
    helpers::{
        bpf_get_current_task, bpf_loop, bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes,
        bpf_probe_read_user_str_bytes, bpf_send_signal,
    },
    macros::{lsm, map},
    maps::HashMap,
    programs::LsmContext,
};
use edgearmor_probe_abi::{
    ACTION_BLOCK, ANY_SOURCE, CLASS_PROCESS, EXE_FLAG_TOO_LONG, EXEC_BY_ARGUMENTS, LINUX_PATH_MAX,
    MATCH_APPLET, MATCH_MULTI_CALL, MULTI_CALL_DISPATCH_DEPTH, MULTI_CALL_WORDS,
    POLICY_DEFAULT_POSTURE, RuleValue, SLOT_READ, SipState, UNDECIDED_NO_SCRATCH, VERDICT_DENIED,
    Verdict,
};

use crate::{
    identity::parent_identity,
    maps::{PATH_SCRATCH, RULES, WALKS, hash_key, lookup_both, offsets, rule_key, with_slot},
    matchers::{EACCES, enforce, settle_path},
    path::{PathBuf, PathWalk, resolve, scratch},
    report::report_paths,
};

const SIGKILL: u32 = 9;
/// Execs between their check and their commit at once, system-wide.
const PENDING_CAPACITY: u32 = 4096;
const BPF_F_NO_PREALLOC: u32 = 1;

/// What `check_exec` hands to `check_exec_args` for one exec of a marked binary.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct PendingApplet {
    /// The `linux_binprm` of the exec (an entry left by an exec that failed later
    /// is not taken for the next one).
    bprm: u64,
    source: u64,
    /// The parent's identity, for the report: `check_exec_args` is sleepable, where
    /// `current->real_parent` is not a pointer task storage accepts.
    parent: u64,
    /// Hash of the applet the invoked name named (decided already).
    invoked: u64,
    generation: u32,
    _pad: u32,
    /// The executable's own rules, before any applet rule.
    sourced: RuleValue,
    anyone: RuleValue,
}

/// The current task's address: a key that stays the same across its exec.
#[inline(always)]
fn current_task() -> u64 {
    // SAFETY: the helper only returns the current task pointer, used as a number.
    unsafe { bpf_get_current_task() }
}

/// Keyed by the task (its PID changes when a thread other than the leader execs).
#[map]
static PENDING_APPLETS: HashMap<u64, PendingApplet> =
    HashMap::with_max_entries(PENDING_CAPACITY, BPF_F_NO_PREALLOC);

/// The applet an exec of a marked binary was invoked as.
pub(crate) struct Invoked {
    /// The executable is a marked multi-call binary.
    pub(crate) marked: bool,
    /// Hash of the applet name (0: unreadable, denied).
    pub(crate) applet: u64,
}

/// For `check_exec`: when the executable `walk` matched is marked, merges the rules
/// on the applet of the invoked name into `walk`; the name is left in the claimed
/// scratch `slot`.
#[inline(always)]
pub(crate) fn merge_applet(
    bprm: *const u8,
    walk: &mut PathWalk,
    generation: u32,
    source: u64,
    slot: u32,
) -> Invoked {
    let marker = rule_key(
        ANY_SOURCE,
        walk.exact,
        CLASS_PROCESS,
        MATCH_MULTI_CALL,
        generation,
    );
    // SAFETY: map value pointer returned by the kernel for this key.
    if unsafe { RULES.get(marker) }.is_none() {
        return Invoked {
            marked: false,
            applet: 0,
        };
    }
    let applet = invoked_applet(bprm, slot).unwrap_or(0);
    if applet == 0 {
        deny_unreadable(walk);
    } else {
        lookup_both(
            source,
            applet,
            CLASS_PROCESS,
            MATCH_APPLET,
            generation,
            &mut walk.sourced,
            &mut walk.anyone,
        );
    }
    Invoked {
        marked: true,
        applet,
    }
}

/// Reads `bprm->filename` into scratch `slot`; the hash of its last component.
#[inline(always)]
fn invoked_applet(bprm: *const u8, slot: u32) -> Option<u64> {
    let buf = scratch(slot)?;
    let off = offsets();
    // SAFETY: probe reads: the `bprm->filename` pointer (offset from BTF), then the
    // string with the checked helper into LINUX_PATH_MAX bytes of the slot's buffer.
    let read = unsafe {
        let name =
            bpf_probe_read_kernel(bprm.add(off.binprm_filename as usize) as *const *const u8)
                .unwrap_or(core::ptr::null());
        let dst =
            core::slice::from_raw_parts_mut(buf.words.as_mut_ptr() as *mut u8, LINUX_PATH_MAX);
        bpf_probe_read_kernel_str_bytes(name, dst).map(|b| b.len())
    };
    fit(buf, read)?;
    Some(component(slot, buf.len, false).0)
}

/// Records the string length read into `buf`; `None` when it may not be whole
/// (LINUX_PATH_MAX - 1 bytes may be a longer string cut short).
#[inline(always)]
fn fit(buf: &mut PathBuf, read: Result<usize, i32>) -> Option<()> {
    match read {
        Ok(len) if len < LINUX_PATH_MAX - 1 => {
            buf.len = len as u32;
            buf.flags = 0;
            Some(())
        }
        _ => {
            buf.len = 0;
            buf.flags = EXE_FLAG_TOO_LONG;
            None
        }
    }
}

/// For `check_exec`, once the exec is allowed: hands a marked exec to
/// `check_exec_args`. `false` when that cannot be done (the exec must be denied).
#[inline(always)]
pub(crate) fn hand_over(
    bprm: *const u8,
    invoked: u64,
    generation: u32,
    source: u64,
    own_rules: (RuleValue, RuleValue),
) -> bool {
    let pending = PendingApplet {
        bprm: bprm as u64,
        source,
        parent: parent_identity(offsets()),
        invoked,
        generation,
        _pad: 0,
        sourced: own_rules.0,
        anyone: own_rules.1,
    };
    let task = current_task();
    PENDING_APPLETS.insert(task, pending, 0).is_ok()
}

/// Fail closed: a Block (reported as the default posture) that no Allow outranks.
#[inline(always)]
pub(crate) fn deny_unreadable(walk: &mut PathWalk) {
    let mut block = RuleValue::NONE;
    block.slots[SLOT_READ] = Verdict {
        action: ACTION_BLOCK,
        policy_id: POLICY_DEFAULT_POSTURE,
    };
    walk.sourced.merge(&block);
    walk.anyone.merge(&block);
}

/// `bprm_committed_creds(const struct linux_binprm *bprm)`: see the module comment.
#[lsm(hook = "bprm_committed_creds", sleepable)]
pub fn check_exec_args(ctx: LsmContext) -> i32 {
    let bprm: *const u8 = ctx.arg(0);
    let task = current_task();
    // SAFETY: map value pointer returned by the kernel for this key; copied out
    // before the entry is removed.
    let Some(pending) = (unsafe { PENDING_APPLETS.get(task) }).copied() else {
        return 0;
    };
    let _ = PENDING_APPLETS.remove(task);
    if pending.bprm != bprm as u64 {
        return 0;
    }
    let denied = with_slot(|slot| decide_arguments(bprm, &pending, slot)).unwrap_or_else(|| {
        // No free scratch slot: the applet cannot be told, so the exec is denied.
        let verdict = Verdict {
            action: ACTION_BLOCK,
            policy_id: POLICY_DEFAULT_POSTURE,
        };
        report_paths(
            CLASS_PROCESS,
            VERDICT_DENIED,
            &verdict,
            [pending.source, pending.parent],
            [EXEC_BY_ARGUMENTS, 0, 0, UNDECIDED_NO_SCRATCH],
            [u32::MAX, u32::MAX],
        );
        true
    });
    if denied {
        // SAFETY: a signal to the current task, which is past the point of no return
        // of its exec and dies before running the new image.
        unsafe { bpf_send_signal(SIGKILL) };
    }
    0
}

/// Decides (and reports) the applet the arguments of `bprm` name, in the claimed
/// scratch `slot`; `true` when the exec is denied.
#[inline(always)]
fn decide_arguments(bprm: *const u8, pending: &PendingApplet, slot: u32) -> bool {
    let Some(walk) = WALKS.get_ptr_mut(slot) else {
        return true;
    };
    // SAFETY: this CPU's map value of the slot this run claimed.
    let walk = unsafe { &mut *walk };
    walk.class = CLASS_PROCESS;
    walk.generation = pending.generation;
    walk.source = pending.source;
    walk.sourced = pending.sourced;
    walk.anyone = pending.anyone;
    match argument_applet(bprm, slot) {
        Dispatch::Applet(applet) if applet == pending.invoked => return false,
        Dispatch::Applet(applet) => lookup_both(
            pending.source,
            applet,
            CLASS_PROCESS,
            MATCH_APPLET,
            pending.generation,
            &mut walk.sourced,
            &mut walk.anyone,
        ),
        Dispatch::None => return false,
        Dispatch::Unreadable => deny_unreadable(walk),
    }
    settle_path(slot);
    let verdict = walk.verdicts[SLOT_READ];
    enforce(&verdict, EACCES, |outcome| {
        // Only for the report: the executable's path, in a second slot if one is free.
        let report = |exe_slot| {
            report_paths(
                CLASS_PROCESS,
                outcome,
                &verdict,
                [pending.source, pending.parent],
                [EXEC_BY_ARGUMENTS, 0, 0, 0],
                [exe_slot, slot],
            )
        };
        if with_slot(|exe_slot| {
            report(if resolve_exe(bprm, exe_slot) {
                exe_slot
            } else {
                u32::MAX
            })
        })
        .is_none()
        {
            report(u32::MAX);
        }
    }) != 0
}

/// Resolves the executable of `bprm` into scratch `slot`.
#[inline(always)]
fn resolve_exe(bprm: *const u8, slot: u32) -> bool {
    let off = offsets();
    // SAFETY: as in `check_exec`: a typed load of `bprm->file`, then `&file->f_path`.
    let file: *const u8 =
        unsafe { core::ptr::read(bprm.add(off.binprm_file as usize) as *const *const u8) };
    if file.is_null() {
        return false;
    }
    // SAFETY: `&file->f_path`, offset from BTF.
    let f_path = unsafe { file.add(off.file_f_path as usize) } as *const path;
    resolve(f_path, slot).is_ok()
}

/// What the arguments of an exec of a multi-call binary make it run.
enum Dispatch {
    Applet(u64),
    /// The binary's own name and nothing after it: no applet runs.
    None,
    Unreadable,
}

/// Follows the arguments as the binary does: the last component of `argv[0]`
/// (without a leading `-`), and while that is a multi-call program's own name, the
/// next argument. The argument decided on is left in scratch `slot`.
#[inline(always)]
fn argument_applet(bprm: *const u8, slot: u32) -> Dispatch {
    let off = offsets();
    // SAFETY: probe reads of `bprm->p` and `bprm->argc` (offsets from BTF).
    let (mut at, argc) = unsafe {
        (
            bpf_probe_read_kernel(bprm.add(off.binprm_p as usize) as *const u64).unwrap_or(0),
            bpf_probe_read_kernel(bprm.add(off.binprm_argc as usize) as *const i32).unwrap_or(0),
        )
    };
    let Some(buf) = scratch(slot) else {
        return Dispatch::Unreadable;
    };
    let mut step = 0;
    while step < MULTI_CALL_DISPATCH_DEPTH {
        if step as i32 >= argc {
            return Dispatch::None;
        }
        // SAFETY: a user string of the new image's stack (this task's memory now),
        // read with the checked helper into LINUX_PATH_MAX bytes of the slot's buffer.
        let read = unsafe {
            let dst =
                core::slice::from_raw_parts_mut(buf.words.as_mut_ptr() as *mut u8, LINUX_PATH_MAX);
            bpf_probe_read_user_str_bytes(at as *const u8, dst).map(|b| b.len())
        };
        if fit(buf, read).is_none() {
            return Dispatch::Unreadable;
        }
        let (hash, multi_call) = component(slot, buf.len, step == 0);
        if !multi_call {
            return Dispatch::Applet(hash);
        }
        at += u64::from(buf.len) + 1;
        step += 1;
    }
    Dispatch::Unreadable
}

/// One pass over a string (`bpf_loop` context, on the caller's stack: nothing
/// shared with another run on this CPU): the keyed hash of its last component,
/// where that starts, and which multi-call names it does not begin with.
#[repr(C)]
struct Component {
    hash: SipState,
    /// The `PATH_SCRATCH` slot holding the string.
    slot: u32,
    start: u32,
    /// Bit `i`: the component differs from `MULTI_CALL_WORDS[i]` in its first bytes.
    mismatch: u32,
    /// Skip a `-` first byte (a login shell's `argv[0]`).
    strip_dash: u32,
}

/// The last component of the `len`-byte string in `slot`: its keyed hash, and
/// whether it is a multi-call program's name (by prefix).
#[inline(always)]
fn component(slot: u32, len: u32, strip_dash: bool) -> (u64, bool) {
    let mut c = Component {
        hash: SipState::new(&hash_key()),
        slot,
        start: 0,
        mismatch: 0,
        strip_dash: u32::from(strip_dash),
    };
    // SAFETY: `component_step` is a static callback; the context outlives the call.
    unsafe {
        bpf_loop(
            len & (LINUX_PATH_MAX as u32 - 1),
            component_step as *mut c_void,
            &mut c as *mut Component as *mut c_void,
            0,
        );
    }
    let rest = len - c.start.min(len);
    let mut multi_call = false;
    let mut bit = 1;
    for (_, name_len) in MULTI_CALL_WORDS {
        multi_call |= c.mismatch & bit == 0 && rest >= name_len;
        bit <<= 1;
    }
    (c.hash.finish_len(u64::from(rest)), multi_call)
}

/// One byte: a `/` starts the next component over.
extern "C" fn component_step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Component` on the caller's stack.
    let c = unsafe { &mut *(ctx as *mut Component) };
    let Some(buf) = PATH_SCRATCH.get_ptr(c.slot) else {
        return 1;
    };
    // SAFETY: per-CPU map value of the caller's slot.
    let byte = unsafe { &*buf }.byte_at(index as usize);
    if byte == b'/' || (index == 0 && c.strip_dash != 0 && byte == b'-') {
        c.hash = SipState::new(&hash_key());
        c.start = index as u32 + 1;
        c.mismatch = 0;
        return 0;
    }
    let pos = index.saturating_sub(u64::from(c.start));
    c.hash.push_at(byte, pos);
    let mut bit = 1;
    for (word, name_len) in MULTI_CALL_WORDS {
        if pos < u64::from(name_len) && byte != (word >> ((pos & 7) * 8)) as u8 {
            c.mismatch |= bit;
        }
        bit <<= 1;
    }
    0
}
