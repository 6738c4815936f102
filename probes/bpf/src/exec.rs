//! Process execution (`bprm_check_security`): the executable about to run is
//! matched as a path of class `CLASS_PROCESS`; an exec of a multi-call binary also
//! by the applet name it was invoked as (`merge_applet`).

use aya_ebpf::{
    bindings::path,
    cty::c_void,
    helpers::{bpf_loop, bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes},
    macros::lsm,
    programs::LsmContext,
};
use edgearmor_probe_abi::{
    ACTION_BLOCK, ANY_SOURCE, CLASS_PROCESS, EXE_FLAG_TOO_LONG, MATCH_APPLET, MATCH_MULTI_CALL,
    PATH_CAP, POLICY_DEFAULT_POSTURE, RuleValue, SLOT_READ, SipState, Verdict,
};

use crate::{
    identity::current_identity,
    maps::{
        PATH_SCRATCH, RULES, SLOT_CHECK_APPLET, SLOT_CHECK_EXEC, WALKS, active_generation,
        hash_key, lookup_both, offsets, rule_key,
    },
    matchers::{EACCES, enforce, match_path, settle_path},
    path::{PathWalk, resolve, scratch},
    report::report_paths,
};

/// `bprm_check_security(struct linux_binprm *bprm)`: `fromSource` is the process
/// calling execve, whose identity is still its old executable here.
#[lsm(hook = "bprm_check_security")]
pub fn check_exec(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    let Some(generation) = active_generation(CLASS_PROCESS) else {
        return 0;
    };
    let off = offsets();
    let bprm: *const u8 = ctx.arg(0);
    // SAFETY: as in `record_exec`: a typed load of `bprm->file`.
    let file: *const u8 =
        unsafe { core::ptr::read(bprm.add(off.binprm_file as usize) as *const *const u8) };
    if file.is_null() {
        return 0;
    }
    // SAFETY: `&file->f_path`, offset from BTF.
    let f_path = unsafe { file.add(off.file_f_path as usize) } as *const path;
    let Some(buf) = resolve(f_path, SLOT_CHECK_EXEC) else {
        return 0;
    };
    let len = buf.len;
    let source = current_identity();
    let Some(walk) = match_path(CLASS_PROCESS, generation, source, SLOT_CHECK_EXEC, len) else {
        return 0;
    };
    let invoked = if merge_applet(bprm, walk, generation, source) {
        SLOT_CHECK_APPLET
    } else {
        u32::MAX
    };
    settle_path(SLOT_CHECK_EXEC);
    let verdict = walk.verdicts[SLOT_READ];
    enforce(&verdict, EACCES, |outcome| {
        report_paths(
            CLASS_PROCESS,
            outcome,
            &verdict,
            source,
            [0; 4],
            [SLOT_CHECK_EXEC, invoked],
        )
    })
}

/// When the executable `walk` matched is a multi-call binary (`MATCH_MULTI_CALL`),
/// merges the rules on the applet it was invoked as: the last component of
/// `bprm->filename`, the name busybox picks its applet by when run through a link.
/// The last component needs no working directory, and `..` or symlinked directories
/// before it change nothing. A name that cannot be read whole is denied (only
/// binaries with applet rules are marked, so a rule could apply). Returns whether
/// the invoked name is in `SLOT_CHECK_APPLET` for the report.
#[inline(always)]
fn merge_applet(bprm: *const u8, walk: &mut PathWalk, generation: u32, source: u64) -> bool {
    let marker = rule_key(
        ANY_SOURCE,
        walk.exact,
        CLASS_PROCESS,
        MATCH_MULTI_CALL,
        generation,
    );
    // SAFETY: map value pointer returned by the kernel for this key.
    if unsafe { RULES.get(marker) }.is_none() {
        return false;
    }
    let Some(buf) = scratch(SLOT_CHECK_APPLET) else {
        deny_unreadable(walk);
        return false;
    };
    let off = offsets();
    // SAFETY: probe reads: the `bprm->filename` pointer (offset from BTF), then the
    // string with the checked helper into the slot's PATH_CAP bytes of map memory.
    let len = unsafe {
        let name =
            bpf_probe_read_kernel(bprm.add(off.binprm_filename as usize) as *const *const u8)
                .unwrap_or(core::ptr::null());
        let dst = core::slice::from_raw_parts_mut(buf.words.as_mut_ptr() as *mut u8, PATH_CAP);
        match bpf_probe_read_kernel_str_bytes(name, dst) {
            Ok(bytes) => bytes.len(),
            Err(_) => PATH_CAP,
        }
    };
    // PATH_CAP - 1 bytes may be a longer name cut short.
    if len >= PATH_CAP - 1 {
        buf.len = 0;
        buf.flags = EXE_FLAG_TOO_LONG;
        deny_unreadable(walk);
        return true;
    }
    buf.len = len as u32;
    buf.flags = 0;
    let Some(applet) = applet_hash(len as u32) else {
        deny_unreadable(walk);
        return true;
    };
    lookup_both(
        source,
        applet,
        CLASS_PROCESS,
        MATCH_APPLET,
        generation,
        &mut walk.sourced,
        &mut walk.anyone,
    );
    true
}

/// Fail closed: a Block (reported as the default posture) that no Allow outranks.
#[inline(always)]
fn deny_unreadable(walk: &mut PathWalk) {
    let mut block = RuleValue::NONE;
    block.slots[SLOT_READ] = Verdict {
        action: ACTION_BLOCK,
        policy_id: POLICY_DEFAULT_POSTURE,
    };
    walk.sourced.merge(&block);
    walk.anyone.merge(&block);
}

/// The keyed hash of the last component of the name in `SLOT_CHECK_APPLET`.
#[inline(always)]
fn applet_hash(len: u32) -> Option<u64> {
    let walk = WALKS.get_ptr_mut(SLOT_CHECK_APPLET)?;
    // SAFETY: per-CPU map value of this slot.
    let walk = unsafe { &mut *walk };
    walk.hash = SipState::new(&hash_key());
    walk.last_slash = 0;
    // SAFETY: `applet_step` is a static callback that takes no context.
    unsafe {
        bpf_loop(
            len & (PATH_CAP as u32 - 1),
            applet_step as *mut c_void,
            core::ptr::null_mut(),
            0,
        );
    }
    Some(
        walk.hash
            .finish_len(u64::from(len - walk.last_slash.min(len))),
    )
}

/// One byte of the invoked name: a `/` starts the hash of the next component over.
extern "C" fn applet_step(index: u64, _ctx: *mut c_void) -> i64 {
    let (Some(buf), Some(walk)) = (
        PATH_SCRATCH.get_ptr(SLOT_CHECK_APPLET),
        WALKS.get_ptr_mut(SLOT_CHECK_APPLET),
    ) else {
        return 1;
    };
    // SAFETY: per-CPU map values of this slot.
    let (buf, walk) = unsafe { (&*buf, &mut *walk) };
    let byte = buf.byte_at(index as usize & (PATH_CAP - 1));
    if byte == b'/' {
        walk.hash = SipState::new(&hash_key());
        walk.last_slash = index as u32 + 1;
    } else {
        walk.hash
            .push_at(byte, index.saturating_sub(u64::from(walk.last_slash)));
    }
    0
}
