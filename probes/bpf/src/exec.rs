//! Process execution (`bprm_check_security`): the executable about to run is
//! matched as a path of class `CLASS_PROCESS`; an exec of a multi-call binary also
//! by the applet it runs ([`crate::applet`]).

use aya_ebpf::{bindings::path, macros::lsm, programs::LsmContext};
use edgearmor_probe_abi::{ACTION_BLOCK, CLASS_PROCESS, SLOT_READ};

use crate::{
    applet::{deny_unreadable, hand_over, merge_applet},
    identity::{current_identity, parent_identity},
    maps::{SLOT_CHECK_APPLET, SLOT_CHECK_EXEC, active_generation, offsets},
    matchers::{EACCES, enforce, match_path, settle_path},
    path::resolve,
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
    let own_rules = (walk.sourced, walk.anyone);
    let invoked = merge_applet(bprm, walk, generation, source);
    settle_path(SLOT_CHECK_EXEC);
    if invoked.marked
        && walk.verdicts[SLOT_READ].action != ACTION_BLOCK
        && !hand_over(bprm, invoked.applet, generation, source, own_rules)
    {
        deny_unreadable(walk);
        settle_path(SLOT_CHECK_EXEC);
    }
    let verdict = walk.verdicts[SLOT_READ];
    let invoked_slot = if invoked.marked {
        SLOT_CHECK_APPLET
    } else {
        u32::MAX
    };
    enforce(&verdict, EACCES, |outcome| {
        report_paths(
            CLASS_PROCESS,
            outcome,
            &verdict,
            [source, parent_identity(&offsets())],
            [0; 4],
            [SLOT_CHECK_EXEC, invoked_slot],
        )
    })
}
