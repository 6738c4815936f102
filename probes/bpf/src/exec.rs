//! Process execution (`bprm_check_security`): the executable about to run is
//! matched as a path of class `CLASS_PROCESS`: by its canonical name when the file
//! is a protected executable whatever name reached it ([`crate::exec_identity`]),
//! else by the path `bpf_d_path` gives; an exec of a multi-call binary also by the
//! applet it runs ([`crate::applet`]).

use aya_ebpf::{bindings::path, macros::lsm, programs::LsmContext};
use edgearmor_probe_abi::{
    ACTION_BLOCK, CLASS_PROCESS, SLOT_READ, UNDECIDED_NO_SCRATCH, UNDECIDED_UNRESOLVED, Verdict,
};

use crate::{
    applet::{deny_unreadable, hand_over, merge_applet},
    exec_identity::{exec_alias, load_alias},
    identity::{current_identity, parent_identity},
    maps::{active_generation, offsets, with_slot},
    matchers::{EACCES, decide_undecided, enforce, match_path, settle_path},
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
    let source = current_identity();
    let exe = (file, f_path);
    with_slot(|slot| decide_exec(bprm, exe, generation, source, slot)).unwrap_or_else(|| {
        let detail = [0, 0, 0, UNDECIDED_NO_SCRATCH];
        decide_undecided(
            CLASS_PROCESS,
            generation,
            source,
            Verdict::NONE,
            detail,
            u32::MAX,
        )
    })
}

/// Resolves and matches the executable in the claimed `slot` (its canonical name
/// when the file is protected, else its path); the name it was invoked by goes to a
/// second slot (for multi-call binaries).
#[inline(always)]
fn decide_exec(
    bprm: *const u8,
    (file, f_path): (*const u8, *const path),
    generation: u32,
    source: u64,
    slot: u32,
) -> i32 {
    let undecided = |settled, detail, target| {
        decide_undecided(CLASS_PROCESS, generation, source, settled, detail, target)
    };
    let resolved = match exec_alias(file, generation) {
        Ok(Some(alias)) => load_alias(slot, alias),
        Ok(None) => resolve(f_path, slot).map(|buf| buf.len),
        Err(errno) => Err(errno),
    };
    let len = match resolved {
        Ok(len) => len,
        Err(errno) => {
            return undecided(Verdict::NONE, [0, 0, errno, UNDECIDED_UNRESOLVED], u32::MAX);
        }
    };
    let Some(walk) = match_path(CLASS_PROCESS, generation, source, slot, len) else {
        return undecided(Verdict::NONE, [0, 0, 0, UNDECIDED_NO_SCRATCH], u32::MAX);
    };
    let own_rules = (walk.sourced, walk.anyone);
    with_slot(|name_slot| {
        let (invoked_slot, verdict) = settle_exec(
            bprm,
            walk,
            own_rules,
            (generation, source),
            [slot, name_slot],
        );
        if walk.undecided != 0 {
            return undecided(verdict, [0, 0, 0, walk.undecided], slot);
        }
        enforce(&verdict, EACCES, |outcome| {
            report_paths(
                CLASS_PROCESS,
                outcome,
                &verdict,
                [source, parent_identity(offsets())],
                [0; 4],
                [slot, invoked_slot],
            )
        })
    })
    .unwrap_or_else(|| undecided(Verdict::NONE, [0, 0, 0, UNDECIDED_NO_SCRATCH], slot))
}

/// The verdict of the exec `walk` matched, with the rules on the applet it was
/// invoked as when it is a marked multi-call binary (the name read into
/// `name_slot`); and the slot holding the invoked name for the report (`u32::MAX`:
/// none).
#[inline(always)]
fn settle_exec(
    bprm: *const u8,
    walk: &mut crate::path::PathWalk,
    own_rules: (
        edgearmor_probe_abi::RuleValue,
        edgearmor_probe_abi::RuleValue,
    ),
    (generation, source): (u32, u64),
    [slot, name_slot]: [u32; 2],
) -> (u32, Verdict) {
    let invoked = merge_applet(bprm, walk, generation, source, name_slot);
    settle_path(slot);
    if invoked.marked
        && walk.verdicts[SLOT_READ].action != ACTION_BLOCK
        && !hand_over(bprm, invoked.applet, generation, source, own_rules)
    {
        deny_unreadable(walk);
        settle_path(slot);
    }
    let invoked_slot = if invoked.marked { name_slot } else { u32::MAX };
    (invoked_slot, walk.verdicts[SLOT_READ])
}
