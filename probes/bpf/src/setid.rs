//! Identity changes (`task_fix_setuid`, `task_fix_setgid`): the kind of change
//! (`setid_bit`) as an item of class `CLASS_SETID`; the requested id goes into the
//! report.

use aya_ebpf::{helpers::bpf_probe_read_kernel, macros::lsm, programs::LsmContext};
use edgearmor_probe_abi::{
    ACTION_NONE, CLASS_SETID, LSM_SETID_FS, LSM_SETID_ID, SETID_KIND_GID, SETID_KIND_UID,
    item_setid, setid_bit,
};

use crate::{
    identity::current_identity,
    maps::{active_generation, offsets},
    matchers::{EPERM, decide_items, enforce},
    report::report,
};

#[lsm(hook = "task_fix_setuid")]
pub fn deny_setuid(ctx: LsmContext) -> i32 {
    check_setid(&ctx, SETID_KIND_UID)
}

#[lsm(hook = "task_fix_setgid")]
pub fn deny_setgid(ctx: LsmContext) -> i32 {
    check_setid(&ctx, SETID_KIND_GID)
}

/// `task_fix_set{u,g}id(struct cred *new, const struct cred *old, int flags)`, plus
/// the previous LSM program's return value as the last argument.
#[inline(always)]
fn check_setid(ctx: &LsmContext, kind: u32) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    let Some(generation) = active_generation(CLASS_SETID) else {
        return 0;
    };
    let flags: u32 = ctx.arg(2);
    let Some(bit) = setid_bit(kind, flags) else {
        return 0;
    };
    let source = current_identity();
    let verdict = decide_items(CLASS_SETID, generation, source, [item_setid(bit), 0]);
    if verdict.action == ACTION_NONE {
        return 0;
    }
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
    let new_cred: *const u8 = ctx.arg(0);
    // SAFETY: probe read of `new->*id`, offset from BTF.
    let requested_id =
        unsafe { bpf_probe_read_kernel(new_cred.add(id_off as usize) as *const u32) }
            .unwrap_or(u32::MAX);
    enforce(&verdict, EPERM, |outcome| {
        report(
            CLASS_SETID,
            outcome,
            &verdict,
            source,
            [kind, flags, requested_id, 0],
            u32::MAX,
        )
    })
}
