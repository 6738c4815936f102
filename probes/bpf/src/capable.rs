//! Capabilities (`capable`): the capability as an item of class `CLASS_CAPABILITY`;
//! `CAP_OPT_NOAUDIT` probes are enforced but not reported.

use aya_ebpf::{macros::lsm, programs::LsmContext};
use edgearmor_probe_abi::{CLASS_CAPABILITY, item_capability};

use crate::{
    identity::current_identity,
    maps::active_generation,
    matchers::{EPERM, decide_items, enforce},
    report::report,
};

/// `capable()` checks made with `CAP_OPT_NOAUDIT` are probes ("may I?"): enforced,
/// but not reported, or every `ls` of a root-only directory would raise an alert.
const CAP_OPT_NOAUDIT: u32 = 2;

/// `capable(const struct cred *cred, struct user_namespace *ns, int cap, unsigned int opts)`.
#[lsm(hook = "capable")]
pub fn check_capable(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(4);
    if previous != 0 {
        return previous;
    }
    let Some(generation) = active_generation(CLASS_CAPABILITY) else {
        return 0;
    };
    let cap: u32 = ctx.arg(2);
    let opts: u32 = ctx.arg(3);
    let source = current_identity();
    let verdict = decide_items(
        CLASS_CAPABILITY,
        generation,
        source,
        [item_capability(cap), 0],
    );
    enforce(&verdict, EPERM, |outcome| {
        if opts & CAP_OPT_NOAUDIT == 0 {
            report(
                CLASS_CAPABILITY,
                outcome,
                &verdict,
                source,
                [cap, opts, 0, 0],
                u32::MAX,
            )
        }
    })
}
