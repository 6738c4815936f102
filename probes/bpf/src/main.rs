//! edgearmor's BPF-LSM programs.
//!
//! Process identity is captured once per exec (sleepable `bprm_committed_creds`, where
//! `bpf_d_path` may run), hashed, and inherited across fork, so the hot hooks resolve
//! "which executable is this" (`fromSource`) with one hash-map lookup instead of
//! rebuilding a path.
//!
//! - `record_exec`: resolves the new executable's path, interns it in `EXE_PATHS`
//!   under its keyed hash and records `tgid -> hash` in `PROC_IDENTITY`.
//! - `inherit_identity`: a forked child starts with its parent's identity.
//! - `check_exec` (`bprm_check_security`), `check_open` (`file_open`), `check_unlink`
//!   (`path_unlink`): resolve the target path once, walk it byte by byte (one keyed
//!   hash pass yields the path's and every directory prefix's hash) and look the
//!   hashes up in `RULES` (see the ABI crate for the layout).
//! - `check_socket` (`socket_create`), `check_capable` (`capable`), `deny_setuid` /
//!   `deny_setgid` (`task_fix_set*id`): one or two item lookups.
//!
//! Precedence, everywhere: a rule naming the acting executable (`fromSource`) beats
//! rules for every executable; among rules at the same level Block > Audit > Allow.
//! With no rule, a class (or a source) in allow-list mode gets its default posture.
//! Every decision other than a plain allow is reported in `EVENTS`; a full ring buffer
//! never weakens enforcement, the event is counted in `EVENT_DROPS`.
//!
//! Kernel struct offsets come from the agent (`KERNEL_OFFSETS`), read from the running
//! kernel's BTF; nothing here depends on one kernel's layout.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::path,
    cty::{c_char, c_void},
    helpers::{
        bpf_d_path, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_current_uid_gid,
        bpf_ktime_get_boot_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes,
        bpf_loop,
    },
    macros::{btf_tracepoint, lsm, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, LsmContext},
};
use edgearmor_probe_abi::{
    ACCESS_READ, ACCESS_UNLINK, ACCESS_WRITE, ACTION_AUDIT, ACTION_BLOCK, ACTION_NONE,
    ANY_SOURCE, ActivePolicy, AgentState, CLASS_CAPABILITY, CLASS_FILE, CLASS_NETWORK, CLASS_PROCESS,
    CLASS_SETID, DecisionEvent, EXE_FLAG_TOO_LONG, ExePath, ExecEvent, GLOB_CAP,
    GLOB_STEP_CONTINUE, GLOB_STEP_MATCH, GLOBS_PER_KEY, GlobList, GlobMatch, GlobRule,
    KernelOffsets, LSM_SETID_FS, LSM_SETID_ID, MATCH_ALLOW_LIST, MATCH_DIRECTORY, MATCH_EXACT,
    MATCH_ITEM, MATCH_RECURSIVE, PATH_CAP, PATH_WORDS, POLICY_DEFAULT_POSTURE, PREFIX_DIRECTORY,
    PREFIX_PATTERN, PREFIX_RECURSIVE, PrefixKey, RULES_CAPACITY, PREFIXES_CAPACITY,
    GLOBS_CAPACITY, RuleKey, RuleValue, SETID_KIND_GID, SETID_KIND_UID, SLOT_READ, SLOT_WRITE,
    SipState, VERDICT_AUDITED, item_capability, item_setid, VERDICT_DENIED, Verdict, class_bit, setid_bit, socket_items,
};

const EPERM: i32 = 1;
const EACCES: i32 = 13;
const FMODE_READ: u32 = 1;
const FMODE_WRITE: u32 = 2;
/// `capable()` checks made with `CAP_OPT_NOAUDIT` are probes ("may I?"): enforced,
/// but not reported, or every `ls` of a root-only directory would raise an alert.
const CAP_OPT_NOAUDIT: u32 = 2;
/// Directory prefixes of one path whose pattern rules are tried.
const MAX_PATTERN_PREFIXES: usize = 2;
/// Upper bound of one pattern match, in steps (see `GlobMatch`); a pattern that
/// needs more does not match.
const GLOB_MAX_STEPS: u32 = 1024;

/// Per-CPU scratch slots, one per program (a sleepable program may be preempted by
/// another on the same CPU): path buffers, walks and item decisions.
const SLOT_RECORD_EXEC: u32 = 0;
const SLOT_CHECK_EXEC: u32 = 1;
const SLOT_CHECK_OPEN: u32 = 2;
const SLOT_CHECK_UNLINK: u32 = 3;
const SLOT_CHECK_SOCKET: u32 = 4;
const SLOT_CHECK_CAPABLE: u32 = 5;
const SLOT_CHECK_SETID: u32 = 6;
const SLOTS: u32 = 7;

#[unsafe(no_mangle)]
static KERNEL_OFFSETS: KernelOffsets = KernelOffsets::ZERO;

#[unsafe(no_mangle)]
static PATH_HASH_KEY: [u64; 2] = [0; 2];

/// Rule tables are allocated per entry (`BPF_F_NO_PREALLOC`): a gateway with a few
/// dozen rules pays for a few dozen entries, not for the capacity.
const BPF_F_NO_PREALLOC: u32 = 1;

#[map]
static RULES: HashMap<RuleKey, RuleValue> =
    HashMap::with_max_entries(RULES_CAPACITY, BPF_F_NO_PREALLOC);

#[map]
static PREFIXES: HashMap<PrefixKey, u32> =
    HashMap::with_max_entries(PREFIXES_CAPACITY, BPF_F_NO_PREALLOC);

#[map]
static GLOBS: HashMap<RuleKey, GlobList> =
    HashMap::with_max_entries(GLOBS_CAPACITY, BPF_F_NO_PREALLOC);

#[map]
static ACTIVE: Array<ActivePolicy> = Array::with_max_entries(1, 0);

/// Written and read by agents only (the key and drop baseline an adopting agent
/// continues with).
#[map]
static AGENT_STATE: Array<AgentState> = Array::with_max_entries(1, 0);

#[map]
static PROC_IDENTITY: LruHashMap<u32, u64> = LruHashMap::with_max_entries(8192, 0);

#[map]
static EXE_PATHS: LruHashMap<u64, ExePath> = LruHashMap::with_max_entries(1024, 0);

/// Path buffers: too large for the 512-byte BPF stack.
#[map]
static PATH_SCRATCH: PerCpuArray<ExePath> = PerCpuArray::with_max_entries(SLOTS, 0);

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

/// The identity (executable path hash) of the current process; 0 when unknown.
#[inline(always)]
fn current_identity() -> u64 {
    // SAFETY: map value pointer returned by the kernel for this key.
    unsafe { PROC_IDENTITY.get(&current_tgid()) }
        .copied()
        .unwrap_or(0)
}

/// The policy generation in force, when `class` has any rule in it.
#[inline(always)]
fn active_generation(class: u32) -> Option<u32> {
    let active = ACTIVE.get(0)?;
    if active.class_mask & class_bit(class) == 0 {
        return None;
    }
    Some(active.generation)
}

#[inline(always)]
fn scratch(slot: u32) -> Option<&'static mut ExePath> {
    let ptr = PATH_SCRATCH.get_ptr_mut(slot)?;
    // SAFETY: per-CPU map value; each program uses its own slot, and a program does
    // not run twice at once on one CPU.
    Some(unsafe { &mut *ptr })
}

/// Resolves `path` into the scratch slot with `bpf_d_path`; `None` when it cannot
/// be resolved or does not fit.
#[inline(always)]
fn resolve(p: *const path, slot: u32) -> Option<&'static mut ExePath> {
    let buf = scratch(slot)?;
    // SAFETY: `p` is a `struct path *` the verifier has typed from the hook's
    // arguments; the buffer is PATH_CAP bytes of map memory.
    let written = unsafe {
        bpf_d_path(
            p as *mut path,
            buf.words.as_mut_ptr() as *mut c_char,
            PATH_CAP as u32,
        )
    };
    if written <= 0 || written > PATH_CAP as i64 {
        buf.len = 0;
        buf.flags = EXE_FLAG_TOO_LONG;
        return None;
    }
    buf.len = (written - 1) as u32;
    buf.flags = 0;
    Some(buf)
}

// ------------------------------------------------------------------ path walk
//
// Loops run as `bpf_loop` callbacks whose state lives in per-CPU map memory, not on
// the stack: the verifier does not track map contents, so it checks each callback
// once instead of following every counter value through every iteration. (Callbacks
// must stay static, hence mangled; probes/build.sh renames them to path-independent
// symbols.)

/// State of one walk over a resolved path.
#[repr(C)]
struct PathWalk {
    hash: SipState,
    source: u64,
    /// 0: only hash (record_exec); else the class whose prefixes are looked up.
    class: u32,
    generation: u32,
    /// Byte index of the last `/` seen.
    last_slash: u32,
    /// `PREFIXES` bits at the last `/`, and its prefix hash.
    last_flags: u32,
    last_prefix: u64,
    /// The whole path's hash.
    exact: u64,
    /// Prefixes with pattern rules (the first [`MAX_PATTERN_PREFIXES`]), and where
    /// their `/` is.
    pattern_prefix: [u64; MAX_PATTERN_PREFIXES],
    pattern_slash: [u32; MAX_PATTERN_PREFIXES],
    patterns: u32,
    _pad: u32,
    /// Recursive-directory verdicts met on the way: for the source, for anyone.
    sourced: RuleValue,
    anyone: RuleValue,
    /// The decision per access slot (`settle_path`).
    verdicts: [Verdict; 2],
}

/// Per program slot: the walk in progress.
#[map]
static WALKS: PerCpuArray<PathWalk> = PerCpuArray::with_max_entries(SLOTS, 0);

/// Per path-resolving program slot: the patterns to try, and the match in progress.
#[map]
static GLOB_QUEUES: PerCpuArray<GlobQueue> = PerCpuArray::with_max_entries(4, 0);

#[inline(always)]
fn rule_key(source: u64, target: u64, class: u32, kind: u32, generation: u32) -> RuleKey {
    RuleKey {
        source,
        target,
        class,
        kind,
        generation,
        _pad: 0,
    }
}

/// Merges the `RULES` values of (`target`, `kind`) for the source and for anyone.
#[inline(always)]
fn lookup_both(
    source: u64,
    target: u64,
    class: u32,
    kind: u32,
    generation: u32,
    sourced: &mut RuleValue,
    anyone: &mut RuleValue,
) {
    if source != 0 {
        // SAFETY: map value pointer returned by the kernel for this key.
        if let Some(v) = unsafe { RULES.get(&rule_key(source, target, class, kind, generation)) } {
            sourced.merge(v);
        }
    }
    // SAFETY: as above.
    if let Some(v) = unsafe { RULES.get(&rule_key(ANY_SOURCE, target, class, kind, generation)) } {
        anyone.merge(v);
    }
}

/// The loop context: which slot's state to work on.
#[repr(C)]
struct LoopSlot {
    slot: u32,
    _pad: u32,
}

/// One byte of the walk: hash it; at a `/`, consult the prefix index.
extern "C" fn walk_step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `LoopSlot` on the caller's stack that `walk_path` passed.
    let slot = unsafe { (*(ctx as *const LoopSlot)).slot };
    let (Some(buf), Some(walk)) = (PATH_SCRATCH.get_ptr(slot), WALKS.get_ptr_mut(slot)) else {
        return 1;
    };
    // SAFETY: per-CPU map values of this program's slot.
    let (buf, walk) = unsafe { (&*buf, &mut *walk) };
    let byte = buf.byte_at(index as usize & (PATH_CAP - 1));
    walk.hash.push_at(byte, index);
    if byte != b'/' || walk.class == 0 {
        return 0;
    }
    let prefix = walk.hash.finish_len(index + 1);
    walk.last_slash = index as u32;
    walk.last_prefix = prefix;
    walk.last_flags = 0;
    let key = PrefixKey {
        prefix,
        class: walk.class,
        generation: walk.generation,
    };
    // SAFETY: map value pointer returned by the kernel for this key.
    let Some(flags) = (unsafe { PREFIXES.get(&key) }).copied() else {
        return 0;
    };
    walk.last_flags = flags;
    if flags & PREFIX_PATTERN != 0 && (walk.patterns as usize) < MAX_PATTERN_PREFIXES {
        let k = walk.patterns as usize & (MAX_PATTERN_PREFIXES - 1);
        walk.pattern_prefix[k] = prefix;
        walk.pattern_slash[k] = index as u32;
        walk.patterns += 1;
    }
    if flags & PREFIX_RECURSIVE != 0 {
        let (source, class, generation) = (walk.source, walk.class, walk.generation);
        lookup_both(
            source,
            prefix,
            class,
            MATCH_RECURSIVE,
            generation,
            &mut walk.sourced,
            &mut walk.anyone,
        );
    }
    0
}

/// Starts a walk of the path in `slot` (`len` bytes) and runs it; the result stays
/// in `WALKS[slot]`. Returns the whole path's hash.
#[inline(always)]
fn walk_path(
    slot: u32,
    class: u32,
    generation: u32,
    source: u64,
    len: u32,
) -> Option<&'static mut PathWalk> {
    let walk = WALKS.get_ptr_mut(slot)?;
    // SAFETY: per-CPU map value of this program's slot.
    let walk = unsafe { &mut *walk };
    walk.hash = SipState::new(&hash_key());
    walk.source = source;
    walk.class = class;
    walk.generation = generation;
    walk.last_slash = 0;
    walk.last_flags = 0;
    walk.last_prefix = 0;
    walk.patterns = 0;
    walk.sourced = RuleValue::NONE;
    walk.anyone = RuleValue::NONE;
    let mut ctx = LoopSlot { slot, _pad: 0 };
    // SAFETY: `walk_step` is a static callback; the context is a live stack value
    // that outlives the call.
    unsafe {
        bpf_loop(
            len & (PATH_CAP as u32 - 1),
            walk_step as *mut c_void,
            &mut ctx as *mut LoopSlot as *mut c_void,
            0,
        );
    }
    Some(walk)
}

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
struct GlobQueue {
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
        self.m = GlobMatch::new(self.len.saturating_sub(next.base), next.rule.len.min(GLOB_CAP as u32));
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
    let GlobQueue { m, candidates, current, .. } = queue;
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
            lookup_both(source, exact, class, MATCH_EXACT, generation, &mut walk.sourced, &mut walk.anyone);
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
            let for_source = stage % 2 == 0;
            if (stage / 2) as u32 >= walk.patterns || (for_source && source == 0) {
                return 0;
            }
            let prefix = walk.pattern_prefix[k];
            let base = walk.pattern_slash[k] + 1;
            let (key_source, sourced) = if for_source { (source, 1) } else { (ANY_SOURCE, 0) };
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
fn match_path(
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
        if let Some(v) = unsafe { RULES.get(&key) } {
            if v.slots[slot].action != ACTION_NONE {
                return v.slots[slot];
            }
        }
    }
    let key = rule_key(ANY_SOURCE, 0, class, MATCH_ALLOW_LIST, generation);
    // SAFETY: as above.
    match unsafe { RULES.get(&key) } {
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
    walk.verdicts[i] = settle(walk.class, walk.generation, walk.source, i, &walk.sourced, &walk.anyone);
    0
}

/// Settles both access slots of a matched path into `walk.verdicts` (in a callback,
/// so the main program sees one state whatever the outcome).
#[inline(always)]
fn settle_path(slot: u32) {
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
fn stronger(a: Verdict, b: Verdict) -> Verdict {
    if b.action > a.action { b } else { a }
}

/// What a hook returns for `verdict`, after reporting it.
#[inline(always)]
fn enforce(verdict: &Verdict, errno: i32, report: impl FnOnce(u32)) -> i32 {
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

// ------------------------------------------------------------------ identity

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
    // SAFETY: `file + f_path` is `&file->f_path` (offset from BTF).
    let f_path = unsafe { file.add(off.file_f_path as usize) } as *const path;
    let hash = match resolve(f_path, SLOT_RECORD_EXEC) {
        Some(buf) => {
            let len = buf.len;
            let hash = walk_path(SLOT_RECORD_EXEC, 0, 0, 0, len)?.hash.finish_len(u64::from(len));
            let buf = scratch(SLOT_RECORD_EXEC)?;
            let _ = EXE_PATHS.insert(&hash, buf, 0);
            hash
        }
        // Too long or unresolvable: "unknown", so the identity of the previous
        // executable does not linger; hash 0 names no rule.
        None => 0,
    };
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

// ------------------------------------------------------------------ process and file

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
    settle_path(SLOT_CHECK_EXEC);
    let verdict = walk.verdicts[SLOT_READ];
    enforce(&verdict, EACCES, |outcome| {
        report(CLASS_PROCESS, outcome, &verdict, source, [0; 4], SLOT_CHECK_EXEC)
    })
}

/// `file_open(struct file *file)`: reads and writes are decided separately
/// (`readOnly`); an open for both gets the stronger verdict.
#[lsm(hook = "file_open")]
pub fn check_open(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    let Some(generation) = active_generation(CLASS_FILE) else {
        return 0;
    };
    let off = offsets();
    let file: *const u8 = ctx.arg(0);
    // SAFETY: probe read of `file->f_mode`, offset from BTF.
    let mode = unsafe { bpf_probe_read_kernel(file.add(off.file_f_mode as usize) as *const u32) }
        .unwrap_or(0);
    let access = (if mode & FMODE_READ != 0 { ACCESS_READ } else { 0 })
        | (if mode & FMODE_WRITE != 0 { ACCESS_WRITE } else { 0 });
    if access == 0 {
        return 0;
    }
    // SAFETY: `&file->f_path` of the hook's typed `struct file *`.
    let f_path = unsafe { file.add(off.file_f_path as usize) } as *const path;
    let Some(buf) = resolve(f_path, SLOT_CHECK_OPEN) else {
        return 0;
    };
    let len = buf.len;
    decide_file(generation, access, SLOT_CHECK_OPEN, len)
}

/// `path_unlink(const struct path *dir, struct dentry *dentry)`: removing a file is
/// a write to it.
#[lsm(hook = "path_unlink")]
pub fn check_unlink(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    let Some(generation) = active_generation(CLASS_FILE) else {
        return 0;
    };
    let dir: *const path = ctx.arg(0);
    let dentry: *const u8 = ctx.arg(1);
    let Some(buf) = resolve(dir, SLOT_CHECK_UNLINK) else {
        return 0;
    };
    let mut len = buf.len;
    // "/dir" + "/" + name; the name read must stay inside the buffer, so only
    // directories up to half the capacity long are supported (longer: no match).
    if len >= (PATH_CAP / 2) as u32 {
        return 0;
    }
    if len > 1 {
        let at = len as usize & (PATH_CAP / 2 - 1);
        buf.words[at / 8] |= u64::from(b'/') << ((at % 8) * 8);
        len += 1;
    }
    let off = offsets();
    // SAFETY: probe read of `dentry->d_name.name`, offset from BTF.
    let name = unsafe { bpf_probe_read_kernel(dentry.add(off.dentry_name as usize) as *const *const u8) }
        .unwrap_or(core::ptr::null());
    let at = len as usize & (PATH_CAP / 2 - 1);
    // SAFETY: `at < PATH_CAP / 2`, so `at .. at + PATH_CAP / 2` is inside the words.
    let dst = unsafe {
        core::slice::from_raw_parts_mut((buf.words.as_mut_ptr() as *mut u8).add(at), PATH_CAP / 2)
    };
    // SAFETY: checked kernel string read into map memory.
    let Ok(name) = (unsafe { bpf_probe_read_kernel_str_bytes(name, dst) }) else {
        return 0;
    };
    let name_len = name.len() as u32;
    if name_len == 0 || name_len >= (PATH_CAP / 2 - 1) as u32 {
        return 0;
    }
    len += name_len;
    buf.len = len;
    decide_file(generation, ACCESS_WRITE | ACCESS_UNLINK, SLOT_CHECK_UNLINK, len)
}

#[inline(always)]
fn decide_file(generation: u32, access: u32, slot: u32, len: u32) -> i32 {
    let source = current_identity();
    let Some(walk) = match_path(CLASS_FILE, generation, source, slot, len) else {
        return 0;
    };
    settle_path(slot);
    let mut verdict = Verdict::NONE;
    if access & ACCESS_READ != 0 {
        verdict = walk.verdicts[SLOT_READ];
    }
    if access & ACCESS_WRITE != 0 {
        verdict = stronger(verdict, walk.verdicts[SLOT_WRITE]);
    }
    enforce(&verdict, EACCES, |outcome| {
        report(CLASS_FILE, outcome, &verdict, source, [access, 0, 0, 0], slot)
    })
}

// ------------------------------------------------------------------ items

/// The verdict of one item rule (`MATCH_ITEM`), or the default posture.
#[inline(always)]
fn decide_items(class: u32, generation: u32, source: u64, items: [u64; 2], slot: u32) -> Verdict {
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
    settle(class, generation, source, SLOT_READ, &walk.sourced, &walk.anyone)
}

/// `socket_create(int family, int type, int protocol, int kern)`.
#[lsm(hook = "socket_create")]
pub fn check_socket(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(4);
    if previous != 0 {
        return previous;
    }
    let kern: i32 = ctx.arg(3);
    if kern != 0 {
        return 0; // the kernel's own sockets
    }
    let Some(generation) = active_generation(CLASS_NETWORK) else {
        return 0;
    };
    let family: u32 = ctx.arg(0);
    let sock_type: u32 = ctx.arg(1);
    let protocol: u32 = ctx.arg(2);
    let source = current_identity();
    let verdict = decide_items(
        CLASS_NETWORK,
        generation,
        source,
        socket_items(family, sock_type, protocol),
        SLOT_CHECK_SOCKET,
    );
    enforce(&verdict, EACCES, |outcome| {
        report(CLASS_NETWORK, outcome, &verdict, source, [family, sock_type, protocol, 0], u32::MAX)
    })
}

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
        SLOT_CHECK_CAPABLE,
    );
    enforce(&verdict, EPERM, |outcome| {
        if opts & CAP_OPT_NOAUDIT == 0 {
            report(CLASS_CAPABILITY, outcome, &verdict, source, [cap, opts, 0, 0], u32::MAX)
        }
    })
}

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
    let verdict = decide_items(CLASS_SETID, generation, source, [item_setid(bit), 0], SLOT_CHECK_SETID);
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
        report(CLASS_SETID, outcome, &verdict, source, [kind, flags, requested_id, 0], u32::MAX)
    })
}

// ------------------------------------------------------------------ events

/// Writes one decision to `EVENTS`; `target_slot` names the path buffer holding the
/// target (`u32::MAX`: none).
#[inline(always)]
fn report(class: u32, outcome: u32, verdict: &Verdict, source: u64, detail: [u32; 4], target_slot: u32) {
    let Some(mut entry) = EVENTS.reserve::<DecisionEvent>(0) else {
        count_drop();
        return;
    };
    let off = offsets();
    let ppid = parent_tgid(&off);
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
        (*ev).posture = if posture == ACTION_AUDIT || posture == ACTION_BLOCK { posture } else { 0 };
        (*ev).detail = detail;
        copy_interned(&mut (*ev).exe, source);
        // SAFETY: map value pointer returned by the kernel for this key.
        let parent_hash = PROC_IDENTITY.get(&ppid).copied().unwrap_or(0);
        copy_interned(&mut (*ev).parent_exe, parent_hash);
        match scratch(target_slot) {
            Some(src) if target_slot != u32::MAX => copy_path(&mut (*ev).target, src),
            _ => clear_path(&mut (*ev).target),
        }
    }
    entry.submit(0);
}

/// Copies the interned path for `hash` (or an empty path) into event memory.
#[inline(always)]
fn copy_interned(dst: &mut ExePath, hash: u64) {
    // SAFETY: map value pointer returned by the kernel for this key.
    match unsafe { EXE_PATHS.get(&hash) } {
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
