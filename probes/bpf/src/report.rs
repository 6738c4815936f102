//! Reporting: every decision other than a plain allow becomes one `DecisionEvent`
//! in the `EVENTS` ring buffer, with the acting and parent executables' interned
//! paths and the target path. A full ring buffer never weakens enforcement: the
//! event is counted in `EVENT_DROPS`.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_ktime_get_boot_ns};
use edgearmor_probe_abi::{
    ACTION_AUDIT, ACTION_BLOCK, DecisionEvent, EXE_FLAG_ALIASED, EXE_FLAG_TRUNCATED, ExePath,
    MAX_REPORTED_PATH_BYTES, PATH_WORDS, POLICY_DEFAULT_POSTURE, Verdict,
};

use crate::{
    identity::{current_tgid, parent_identity, parent_tgid},
    maps::{EVENT_DROPS, EVENTS, EXE_PATHS, offsets},
    path::{PathBuf, scratch},
};

/// Writes one decision to `EVENTS`; `target_slot` names the (claimed) slot whose
/// path buffer holds the target (`u32::MAX`: none). A target longer than an event
/// carries is reported by its first bytes, flagged `EXE_FLAG_TRUNCATED`.
#[inline(always)]
pub(crate) fn report(
    class: u32,
    outcome: u32,
    verdict: &Verdict,
    source: u64,
    detail: [u32; 4],
    target_slot: u32,
) {
    report_paths(
        class,
        outcome,
        verdict,
        [source, parent_identity(offsets())],
        detail,
        [target_slot, u32::MAX],
    );
}

/// [`report`] with the acting and parent identities given (sleepable programs cannot
/// look the parent up) and the target's and the invoked name's path buffers
/// (`u32::MAX`: none).
#[inline(always)]
pub(crate) fn report_paths(
    class: u32,
    outcome: u32,
    verdict: &Verdict,
    [source, parent]: [u64; 2],
    detail: [u32; 4],
    [target_slot, invoked_slot]: [u32; 2],
) {
    let Some(mut entry) = EVENTS.reserve::<DecisionEvent>(0) else {
        count_drop();
        return;
    };
    let off = offsets();
    let ppid = parent_tgid(off);
    let posture = if verdict.policy_id == POLICY_DEFAULT_POSTURE {
        verdict.action
    } else {
        0
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at ring-buffer memory reserved for exactly one
    // DecisionEvent; every field is written before submit.
    unsafe {
        (*ev).boot_ns = bpf_ktime_get_boot_ns();
        (*ev).tgid = current_tgid();
        (*ev).tid = bpf_get_current_pid_tgid() as u32;
        (*ev).ppid = ppid;
        (*ev).uid = bpf_get_current_uid_gid() as u32;
        (*ev).class = class;
        (*ev).verdict = outcome;
        (*ev).policy_id = verdict.policy_id;
        (*ev).posture = if posture == ACTION_AUDIT || posture == ACTION_BLOCK {
            posture
        } else {
            0
        };
        (*ev).detail = detail;
        copy_interned(&mut (*ev).exe, source);
        copy_interned(&mut (*ev).parent_exe, parent);
        match scratch(target_slot) {
            Some(src) if target_slot != u32::MAX => copy_target(&mut (*ev).target, src),
            _ => clear_path(&mut (*ev).target),
        }
        match scratch(invoked_slot) {
            Some(src) if invoked_slot != u32::MAX => copy_target(&mut (*ev).invoked, src),
            _ => clear_path(&mut (*ev).invoked),
        }
    }
    entry.submit(0);
}

/// Copies the interned path for `hash` (or an empty path) into event memory.
#[inline(always)]
fn copy_interned(dst: &mut ExePath, hash: u64) {
    // SAFETY: map value pointer returned by the kernel for this key.
    match unsafe { EXE_PATHS.get(hash) } {
        Some(src) if hash != 0 => copy_path(dst, src),
        _ => clear_path(dst),
    }
}

#[inline(always)]
fn copy_path(dst: &mut ExePath, src: &ExePath) {
    dst.len = src.len;
    dst.flags = src.flags;
    let mut i = 0;
    while i < PATH_WORDS {
        dst.words[i] = src.words[i];
        i += 1;
    }
}

#[inline(always)]
fn copy_target(dst: &mut ExePath, src: &PathBuf) {
    dst.len = src.len;
    dst.flags = (src.flags & EXE_FLAG_ALIASED)
        | if src.len as usize > MAX_REPORTED_PATH_BYTES {
            EXE_FLAG_TRUNCATED
        } else {
            0
        };
    let mut i = 0;
    while i < PATH_WORDS {
        dst.words[i] = src.words[i];
        i += 1;
    }
}

#[inline(always)]
fn clear_path(dst: &mut ExePath) {
    dst.len = 0;
    dst.flags = 0;
    let mut i = 0;
    while i < PATH_WORDS {
        dst.words[i] = 0;
        i += 1;
    }
}

#[inline(always)]
pub(crate) fn count_drop() {
    if let Some(counter) = EVENT_DROPS.get_ptr_mut(0) {
        // SAFETY: this CPU's counter; an atomic add, since a preempted run on the same
        // CPU may be adding too.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(counter, 1) };
    }
}
