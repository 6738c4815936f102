//! Which rules match, and which verdict wins.
//!
//! - Paths (`match_path`): after the walk, the exact path and the last directory are
//!   looked up, and the patterns filed under the walk's pattern prefixes are queued
//!   (`GlobQueue`) and tried one after the other by a single `bpf_loop`.
//! - Items (`decide_items`): one or two `MATCH_ITEM` lookups (socket, capability,
//!   setid).
//! - Settling (`settle`, `settle_path`): a rule naming the source beats rules for
//!   anyone; then the allow-list default posture. `enforce` turns the verdict into
//!   the hook's return value and reports it.

use aya_ebpf::{cty::c_void, helpers::bpf_loop};
use edgearmor_probe_abi::{
    ACTION_AUDIT, ACTION_BLOCK, ACTION_NONE, ANY_SOURCE, GLOB_CAP, GLOB_STEP_CONTINUE,
    GLOB_STEP_MATCH, GLOBS_PER_KEY, GlobMatch, GlobRule, MATCH_ALLOW_LIST, MATCH_DIRECTORY,
    MATCH_EXACT, MATCH_ITEM, PATH_CAP, PREFIX_DIRECTORY, RuleKey, RuleValue, SLOT_READ,
    VERDICT_AUDITED, VERDICT_DENIED, Verdict,
};

use crate::{
    maps::{GLOB_QUEUES, GLOBS, PATH_SCRATCH, RULES, WALKS, lookup_both, rule_key},
    path::{LoopSlot, MAX_PATTERN_PREFIXES, PathWalk, walk_path},
};

/// What a denial returns: `-EPERM` for privileges (capabilities, setid), `-EACCES`
/// for access (exec, files, sockets), as the kernel's own checks do.
pub(crate) const EPERM: i32 = 1;
pub(crate) const EACCES: i32 = 13;
/// Upper bound of one pattern match, in steps (see `GlobMatch`); a pattern that
/// needs more does not match.
const GLOB_MAX_STEPS: u32 = 1024;

/// A pattern to try against the path, and whose verdicts a match adds to.
#[repr(C)]
#[derive(Clone, Copy)]
struct GlobCandidate {
    rule: GlobRule,
    /// Offset of the text (after the pattern's directory prefix) in the path.
    base: u32,
    /// 1: the rule names the source; 0: it is for anyone.
    sourced: u32,
}

/// Every pattern that may match one path, tried one after the other by a single
/// `bpf_loop` (one call site, so the verifier checks the step once).
#[repr(C)]
pub(crate) struct GlobQueue {
    count: u32,
    current: u32,
    /// Steps spent on the current pattern.
    steps: u32,
    len: u32,
    m: GlobMatch,
    candidates: [GlobCandidate; MAX_GLOB_CANDIDATES],
}

/// Patterns tried per path: two prefixes, for the source and for anyone.
const MAX_GLOB_CANDIDATES: usize = 4 * GLOBS_PER_KEY;

impl GlobQueue {
    /// Moves to the next candidate (or past the end).
    #[inline(always)]
    fn advance(&mut self) {
        self.current += 1;
        self.steps = 0;
        let next = &self.candidates[self.current as usize & (MAX_GLOB_CANDIDATES - 1)];
        self.m = GlobMatch::new(
            self.len.saturating_sub(next.base),
            next.rule.len.min(GLOB_CAP as u32),
        );
    }
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
    // SAFETY: per-CPU map values of this program's slot.
    let (buf, queue, walk) = unsafe { (&*buf, &mut *queue, &mut *walk) };
    if queue.current >= queue.count || queue.current as usize >= MAX_GLOB_CANDIDATES {
        return 1;
    }
    let candidate = &queue.candidates[queue.current as usize & (MAX_GLOB_CANDIDATES - 1)];
    let base = candidate.base;
    let c = buf.byte_at((base + queue.m.t) as usize & (PATH_CAP - 1));
    let c_mark = buf.byte_at((base + queue.m.mark) as usize & (PATH_CAP - 1));
    let GlobQueue {
        m,
        candidates,
        current,
        ..
    } = queue;
    let candidate = &candidates[*current as usize & (MAX_GLOB_CANDIDATES - 1)];
    match m.step(&candidate.rule, c, c_mark) {
        GLOB_STEP_CONTINUE => {
            queue.steps += 1;
            if queue.steps >= GLOB_MAX_STEPS {
                queue.advance();
            }
        }
        GLOB_STEP_MATCH => {
            if candidate.sourced != 0 {
                walk.sourced.merge(&candidate.rule.value);
            } else {
                walk.anyone.merge(&candidate.rule.value);
            }
            queue.advance();
        }
        _ => queue.advance(),
    }
    0
}

/// Queues the patterns filed under `key` (text from byte `base`).
#[inline(always)]
fn queue_patterns(queue: &mut GlobQueue, key: &RuleKey, base: u32, sourced: u32) {
    // SAFETY: map value pointer returned by the kernel for this key.
    let Some(list) = (unsafe { GLOBS.get(key) }) else {
        return;
    };
    let mut i = 0;
    while i < GLOBS_PER_KEY {
        if (i as u32) < list.count && (queue.count as usize) < MAX_GLOB_CANDIDATES {
            let at = queue.count as usize & (MAX_GLOB_CANDIDATES - 1);
            copy_glob(&mut queue.candidates[at].rule, &list.rules[i]);
            queue.candidates[at].base = base;
            queue.candidates[at].sourced = sourced;
            queue.count += 1;
        }
        i += 1;
    }
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

/// Tries every queued pattern; matches merge into the walk's accumulators.
#[inline(always)]
fn try_patterns(queue: &mut GlobQueue, slot: u32, len: u32) {
    if queue.count == 0 {
        return;
    }
    queue.len = len;
    queue.current = u32::MAX;
    queue.advance(); // to candidate 0
    let mut ctx = LoopSlot { slot, _pad: 0 };
    // SAFETY: `glob_step` is a static callback; the context outlives the call.
    unsafe {
        bpf_loop(
            MAX_GLOB_CANDIDATES as u32 * GLOB_MAX_STEPS,
            glob_step as *mut c_void,
            &mut ctx as *mut LoopSlot as *mut c_void,
            0,
        );
    }
}

/// Stages of `match_step`: exact path, directory, then patterns for (prefix 0 and 1)
/// x (source, anyone).
const MATCH_STAGES: u32 = 2 + 2 * MAX_PATTERN_PREFIXES as u32;

/// One stage of matching a walked path (the stage is the loop index, unknown to the
/// verifier, so it checks every stage once instead of once per path through them).
extern "C" fn match_step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `LoopSlot` on the caller's stack that `match_path` passed.
    let slot = unsafe { (*(ctx as *const LoopSlot)).slot };
    let (Some(walk), Some(queue)) = (WALKS.get_ptr_mut(slot), GLOB_QUEUES.get_ptr_mut(slot)) else {
        return 1;
    };
    // SAFETY: per-CPU map values of this program's slot.
    let (walk, queue) = unsafe { (&mut *walk, &mut *queue) };
    let (source, class, generation) = (walk.source, walk.class, walk.generation);
    match index {
        0 => {
            queue.count = 0;
            let exact = walk.exact;
            lookup_both(
                source,
                exact,
                class,
                MATCH_EXACT,
                generation,
                &mut walk.sourced,
                &mut walk.anyone,
            );
        }
        1 => {
            if walk.last_flags & PREFIX_DIRECTORY != 0 {
                let prefix = walk.last_prefix;
                lookup_both(
                    source,
                    prefix,
                    class,
                    MATCH_DIRECTORY,
                    generation,
                    &mut walk.sourced,
                    &mut walk.anyone,
                );
            }
        }
        _ => {
            let stage = (index - 2) as usize;
            let k = (stage / 2) & (MAX_PATTERN_PREFIXES - 1);
            let for_source = stage.is_multiple_of(2);
            if (stage / 2) as u32 >= walk.patterns || (for_source && source == 0) {
                return 0;
            }
            let prefix = walk.pattern_prefix[k];
            let base = walk.pattern_slash[k] + 1;
            let (key_source, sourced) = if for_source {
                (source, 1)
            } else {
                (ANY_SOURCE, 0)
            };
            let key = rule_key(key_source, prefix, class, MATCH_DIRECTORY, generation);
            queue_patterns(queue, &key, base, sourced);
        }
    }
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
    // SAFETY: per-CPU map value of this program's slot.
    try_patterns(unsafe { &mut *queue }, slot, len);
    Some(walk)
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
    // SAFETY: per-CPU map value of this program's slot.
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

/// The verdict of one item rule (`MATCH_ITEM`), or the default posture.
#[inline(always)]
pub(crate) fn decide_items(
    class: u32,
    generation: u32,
    source: u64,
    items: [u64; 2],
    slot: u32,
) -> Verdict {
    let Some(walk) = WALKS.get_ptr_mut(slot) else {
        return Verdict::NONE;
    };
    // SAFETY: per-CPU map value of this program's slot.
    let walk = unsafe { &mut *walk };
    walk.sourced = RuleValue::NONE;
    walk.anyone = RuleValue::NONE;
    if items[0] != 0 {
        lookup_both(
            source,
            items[0],
            class,
            MATCH_ITEM,
            generation,
            &mut walk.sourced,
            &mut walk.anyone,
        );
    }
    if items[1] != 0 {
        lookup_both(
            source,
            items[1],
            class,
            MATCH_ITEM,
            generation,
            &mut walk.sourced,
            &mut walk.anyone,
        );
    }
    settle(
        class,
        generation,
        source,
        SLOT_READ,
        &walk.sourced,
        &walk.anyone,
    )
}
