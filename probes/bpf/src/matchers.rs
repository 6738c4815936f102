//! Which rules match, and which verdict wins.
//!
//! - Paths (`match_path`): after the walk, the exact path and the last directory are
//!   looked up; then one `bpf_loop` tries every pattern filed under the walk's
//!   pattern prefixes (for the source and for anyone), loading one at a time into
//!   the slot's `GlobQueue`.
//! - Items (`decide_items`): one or two `MATCH_ITEM` lookups (socket, capability,
//!   setid).
//! - Settling (`settle`, `settle_path`): a rule naming the source beats rules for
//!   anyone; then the allow-list default posture. `enforce` turns the verdict into
//!   the hook's return value and reports it; `undecidable` is the verdict of a path
//!   hook that cannot decide (`MATCH_UNDECIDABLE`).

use aya_ebpf::{cty::c_void, helpers::bpf_loop};
use edgearmor_probe_abi::{
    ACTION_AUDIT, ACTION_BLOCK, ACTION_NONE, ANY_SOURCE, GLOB_CAP, GLOB_STEP_CONTINUE,
    GLOB_STEP_MATCH, GLOBS_PER_KEY, GlobMatch, GlobRule, MATCH_ALLOW_LIST, MATCH_DIRECTORY,
    MATCH_EXACT, MATCH_ITEM, MATCH_UNDECIDABLE, MAX_PATTERN_PREFIXES, PREFIX_DIRECTORY, RuleValue,
    SCRATCH_PATH_CAP, SLOT_READ, UNDECIDED_MATCH_STEPS, VERDICT_AUDITED, VERDICT_DENIED, Verdict,
};

use crate::{
    maps::{GLOB_QUEUES, GLOBS, PATH_SCRATCH, RULES, WALKS, lookup_both, rule_key},
    path::{LoopSlot, PathWalk, walk_path},
    report::report,
};

/// What a denial returns: `-EPERM` for privileges (capabilities, setid), `-EACCES`
/// for access (exec, files, sockets), as the kernel's own checks do.
pub(crate) const EPERM: i32 = 1;
pub(crate) const EACCES: i32 = 13;
/// Upper bound of one pattern match, in steps (see `GlobMatch`); a pattern that
/// needs more leaves the path undecided (`UNDECIDED_MATCH_STEPS`), never unmatched.
const GLOB_MAX_STEPS: u32 = 4096;

/// Patterns that may apply to one path: per pattern prefix, for the source and for
/// anyone. Candidate `c` is pattern `c % GLOBS_PER_KEY` of prefix
/// `c / (2 * GLOBS_PER_KEY)`, for the source when `(c / GLOBS_PER_KEY)` is even.
const MAX_GLOB_CANDIDATES: u32 = (MAX_PATTERN_PREFIXES * 2 * GLOBS_PER_KEY) as u32;

/// The pattern being tried against the path, and how far the match got.
#[repr(C)]
pub(crate) struct GlobQueue {
    /// The candidate number being tried (or to load next).
    current: u32,
    /// 1 while `rule` holds candidate `current`.
    loaded: u32,
    /// Steps spent on the current pattern.
    steps: u32,
    len: u32,
    /// Offset of the text (after the pattern's directory prefix) in the path.
    base: u32,
    /// 1: the rule names the source; 0: it is for anyone.
    sourced: u32,
    m: GlobMatch,
    rule: GlobRule,
}

/// Loads candidate `queue.current` (or skips to the next key when there is none);
/// returns 1 when every candidate has been tried.
#[inline(always)]
fn load_candidate(queue: &mut GlobQueue, walk: &PathWalk) -> i64 {
    let c = queue.current;
    let k = c / (2 * GLOBS_PER_KEY as u32);
    if k >= walk.patterns || c >= MAX_GLOB_CANDIDATES {
        return 1;
    }
    let for_source = (c / GLOBS_PER_KEY as u32).is_multiple_of(2);
    let i = (c % GLOBS_PER_KEY as u32) as usize;
    let next_key = (c / GLOBS_PER_KEY as u32 + 1) * GLOBS_PER_KEY as u32;
    if for_source && walk.source == 0 {
        queue.current = next_key;
        return 0;
    }
    let k = k as usize & (MAX_PATTERN_PREFIXES - 1);
    let key_source = if for_source { walk.source } else { ANY_SOURCE };
    let key = rule_key(
        key_source,
        walk.pattern_prefix[k],
        walk.class,
        MATCH_DIRECTORY,
        walk.generation,
    );
    // SAFETY: map value pointer returned by the kernel for this key.
    let Some(list) = (unsafe { GLOBS.get(key) }) else {
        queue.current = next_key;
        return 0;
    };
    if i as u32 >= list.count {
        queue.current = next_key;
        return 0;
    }
    copy_glob(&mut queue.rule, &list.rules[i & (GLOBS_PER_KEY - 1)]);
    queue.base = walk.pattern_slash[k] + 1;
    queue.sourced = u32::from(for_source);
    queue.steps = 0;
    queue.m = GlobMatch::new(
        queue.len.saturating_sub(queue.base),
        queue.rule.len.min(GLOB_CAP as u32),
    );
    queue.loaded = 1;
    0
}

extern "C" fn glob_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `LoopSlot` on the caller's stack that `try_patterns` passed.
    let slot = unsafe { (*(ctx as *const LoopSlot)).slot };
    let (Some(buf), Some(queue), Some(walk)) = (
        PATH_SCRATCH.get_ptr(slot),
        GLOB_QUEUES.get_ptr_mut(slot),
        WALKS.get_ptr_mut(slot),
    ) else {
        return 1;
    };
    // SAFETY: this CPU's map values of the slot the run claimed.
    let (buf, queue, walk) = unsafe { (&*buf, &mut *queue, &mut *walk) };
    if queue.loaded == 0 {
        return load_candidate(queue, walk);
    }
    let base = queue.base;
    let c = buf.byte_at((base + queue.m.t) as usize & (SCRATCH_PATH_CAP - 1));
    let c_mark = buf.byte_at((base + queue.m.mark) as usize & (SCRATCH_PATH_CAP - 1));
    let GlobQueue { m, rule, .. } = queue;
    match m.step(rule, c, c_mark) {
        GLOB_STEP_CONTINUE => {
            queue.steps += 1;
            if queue.steps < GLOB_MAX_STEPS {
                return 0;
            }
            walk.undecided = UNDECIDED_MATCH_STEPS;
        }
        GLOB_STEP_MATCH => {
            if queue.sourced != 0 {
                walk.sourced.merge(&queue.rule.value);
            } else {
                walk.anyone.merge(&queue.rule.value);
            }
        }
        _ => {}
    }
    queue.current += 1;
    queue.loaded = 0;
    0
}

/// Copies a pattern word by word: a plain assignment becomes a byte loop the
/// verifier would walk through once per byte.
#[inline(always)]
fn copy_glob(dst: &mut GlobRule, src: &GlobRule) {
    const WORDS: usize = core::mem::size_of::<GlobRule>() / 8;
    let d = dst as *mut GlobRule as *mut u64;
    let s = src as *const GlobRule as *const u64;
    let mut i = 0;
    while i < WORDS {
        // SAFETY: both are 8-byte aligned GlobRules (the ABI asserts the size is a
        // multiple of 8), so every word read and written is inside them.
        unsafe { core::ptr::write_volatile(d.add(i), core::ptr::read_volatile(s.add(i))) };
        i += 1;
    }
}

/// Tries every pattern of the walk's pattern prefixes; matches merge into the walk's
/// accumulators.
#[inline(always)]
fn try_patterns(queue: &mut GlobQueue, walk: &PathWalk, slot: u32, len: u32) {
    if walk.patterns == 0 {
        return;
    }
    queue.len = len;
    queue.current = 0;
    queue.loaded = 0;
    let mut ctx = LoopSlot { slot, _pad: 0 };
    // SAFETY: `glob_step` is a static callback; the context outlives the call.
    unsafe {
        bpf_loop(
            MAX_GLOB_CANDIDATES * (GLOB_MAX_STEPS + 1),
            glob_step as *mut c_void,
            &mut ctx as *mut LoopSlot as *mut c_void,
            0,
        );
    }
}

/// Stages of `match_step`: exact path, then directory.
const MATCH_STAGES: u32 = 2;

/// One stage of matching a walked path (the stage is the loop index, unknown to the
/// verifier, so it checks every stage once instead of once per path through them).
extern "C" fn match_step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `LoopSlot` on the caller's stack that `match_path` passed.
    let slot = unsafe { (*(ctx as *const LoopSlot)).slot };
    let Some(walk) = WALKS.get_ptr_mut(slot) else {
        return 1;
    };
    // SAFETY: this CPU's map value of the slot the run claimed.
    let walk = unsafe { &mut *walk };
    let (source, class, generation) = (walk.source, walk.class, walk.generation);
    let (target, kind) = if index == 0 {
        (walk.exact, MATCH_EXACT)
    } else if walk.last_flags & PREFIX_DIRECTORY != 0 {
        (walk.last_prefix, MATCH_DIRECTORY)
    } else {
        return 0;
    };
    lookup_both(
        source,
        target,
        class,
        kind,
        generation,
        &mut walk.sourced,
        &mut walk.anyone,
    );
    0
}

/// Collects every rule of `class` that matches the path in `slot`, for `source` and
/// for anyone, into the walk's accumulators (map memory, so the verifier does not
/// fork a state per merge).
#[inline(always)]
pub(crate) fn match_path(
    class: u32,
    generation: u32,
    source: u64,
    slot: u32,
    len: u32,
) -> Option<&'static mut PathWalk> {
    let walk = walk_path(slot, class, generation, source, len)?;
    walk.exact = walk.hash.finish_len(u64::from(len));
    let mut ctx = LoopSlot { slot, _pad: 0 };
    // SAFETY: `match_step` is a static callback; the context outlives the call.
    unsafe {
        bpf_loop(
            MATCH_STAGES,
            match_step as *mut c_void,
            &mut ctx as *mut LoopSlot as *mut c_void,
            0,
        );
    }
    let queue = GLOB_QUEUES.get_ptr_mut(slot)?;
    // SAFETY: this CPU's map value of the slot the run claimed.
    try_patterns(unsafe { &mut *queue }, walk, slot, len);
    Some(walk)
}

/// What a path hook of `class` does when it cannot decide: the agent's
/// `MATCH_UNDECIDABLE` verdict (Block where a Block rule or a block posture could
/// apply), or nothing when the class has no rule.
#[inline(always)]
pub(crate) fn undecidable(class: u32, generation: u32) -> Verdict {
    let key = rule_key(ANY_SOURCE, 0, class, MATCH_UNDECIDABLE, generation);
    // SAFETY: map value pointer returned by the kernel for this key.
    match unsafe { RULES.get(key) } {
        Some(v) => v.slots[SLOT_READ],
        None => Verdict::NONE,
    }
}

/// The verdict for one access slot: the source's rules first, then everyone's, then
/// the default posture if the class (for this source, or for all) is allow-listed.
#[inline(always)]
fn settle(
    class: u32,
    generation: u32,
    source: u64,
    slot: usize,
    sourced: &RuleValue,
    anyone: &RuleValue,
) -> Verdict {
    let slot = slot & 1;
    if sourced.slots[slot].action != ACTION_NONE {
        return sourced.slots[slot];
    }
    if anyone.slots[slot].action != ACTION_NONE {
        return anyone.slots[slot];
    }
    if source != 0 {
        let key = rule_key(source, 0, class, MATCH_ALLOW_LIST, generation);
        // SAFETY: map value pointer returned by the kernel for this key.
        if let Some(v) = unsafe { RULES.get(key) }
            && v.slots[slot].action != ACTION_NONE
        {
            return v.slots[slot];
        }
    }
    let key = rule_key(ANY_SOURCE, 0, class, MATCH_ALLOW_LIST, generation);
    // SAFETY: as above.
    match unsafe { RULES.get(key) } {
        Some(v) => v.slots[slot],
        None => Verdict::NONE,
    }
}

extern "C" fn settle_step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `LoopSlot` on the caller's stack that `settle_path` passed.
    let slot = unsafe { (*(ctx as *const LoopSlot)).slot };
    let Some(walk) = WALKS.get_ptr_mut(slot) else {
        return 1;
    };
    // SAFETY: this CPU's map value of the slot the run claimed.
    let walk = unsafe { &mut *walk };
    let i = index as usize & 1;
    walk.verdicts[i] = settle(
        walk.class,
        walk.generation,
        walk.source,
        i,
        &walk.sourced,
        &walk.anyone,
    );
    0
}

/// Settles both access slots of a matched path into `walk.verdicts` (in a callback,
/// so the main program sees one state whatever the outcome).
#[inline(always)]
pub(crate) fn settle_path(slot: u32) {
    let mut ctx = LoopSlot { slot, _pad: 0 };
    // SAFETY: `settle_step` is a static callback; the context outlives the call.
    unsafe {
        bpf_loop(
            2,
            settle_step as *mut c_void,
            &mut ctx as *mut LoopSlot as *mut c_void,
            0,
        );
    }
}

/// What a path hook returns when it could not decide (`detail[3]` says why): the
/// stronger of what it did settle and the class's `MATCH_UNDECIDABLE` verdict,
/// reported with the reason.
#[inline(always)]
pub(crate) fn decide_undecided(
    class: u32,
    generation: u32,
    source: u64,
    settled: Verdict,
    detail: [u32; 4],
    target_slot: u32,
) -> i32 {
    let verdict = stronger(settled, undecidable(class, generation));
    enforce(&verdict, EACCES, |outcome| {
        report(class, outcome, &verdict, source, detail, target_slot)
    })
}

/// The stronger of two verdicts (Block > Audit > Allow).
#[inline(always)]
pub(crate) fn stronger(a: Verdict, b: Verdict) -> Verdict {
    if b.action > a.action { b } else { a }
}

/// What a hook returns for `verdict`, after reporting it.
#[inline(always)]
pub(crate) fn enforce(verdict: &Verdict, errno: i32, report: impl FnOnce(u32)) -> i32 {
    match verdict.action {
        ACTION_BLOCK => {
            report(VERDICT_DENIED);
            -errno
        }
        ACTION_AUDIT => {
            report(VERDICT_AUDITED);
            0
        }
        _ => 0,
    }
}

/// The verdict of one item rule (`MATCH_ITEM`), or the default posture. Needs no
/// scratch slot: the accumulators live on this run's stack.
#[inline(always)]
pub(crate) fn decide_items(class: u32, generation: u32, source: u64, items: [u64; 2]) -> Verdict {
    let mut sourced = RuleValue::NONE;
    let mut anyone = RuleValue::NONE;
    if items[0] != 0 {
        lookup_both(
            source,
            items[0],
            class,
            MATCH_ITEM,
            generation,
            &mut sourced,
            &mut anyone,
        );
    }
    if items[1] != 0 {
        lookup_both(
            source,
            items[1],
            class,
            MATCH_ITEM,
            generation,
            &mut sourced,
            &mut anyone,
        );
    }
    settle(class, generation, source, SLOT_READ, &sourced, &anyone)
}
