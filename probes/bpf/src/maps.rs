//! Every map and global the object defines, and their typed accessors.
//!
//! The names, types and sizes here are the contract with the agent (which creates,
//! pins and fills them): policy tables (`RULES`, `PREFIXES`, `GLOBS`, `ACTIVE`),
//! process identity (`TASK_IDENTITY`, task-local storage; `EXE_PATHS`), per-CPU scratch (`PATH_SCRATCH`,
//! `WALKS`, `GLOB_QUEUES`, one slot per program), the ring buffers (`EVENTS`,
//! `EXEC_EVENTS`) and the drop counter, plus the load-time globals
//! (`KERNEL_OFFSETS`, `PATH_HASH_KEY`).

use aya_ebpf::{
    macros::{btf_map, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use edgearmor_probe_abi::{
    ANY_SOURCE, ActivePolicy, AgentState, EVENTS_RING_BYTES, EXEC_EVENTS_RING_BYTES, ExePath,
    GLOBS_CAPACITY, GlobList, KernelOffsets, PREFIXES_CAPACITY, PrefixKey, RULES_CAPACITY, RuleKey,
    RuleValue, class_bit,
};

use crate::{matchers::GlobQueue, path::PathWalk, task_storage::TaskStorage};

/// Per-CPU scratch slots, one per program (a sleepable program may be preempted by
/// another on the same CPU): path buffers, walks and item decisions.
pub(crate) const SLOT_RECORD_EXEC: u32 = 0;
pub(crate) const SLOT_CHECK_EXEC: u32 = 1;
pub(crate) const SLOT_CHECK_OPEN: u32 = 2;
pub(crate) const SLOT_CHECK_UNLINK: u32 = 3;
pub(crate) const SLOT_CHECK_SOCKET: u32 = 4;
pub(crate) const SLOT_CHECK_CAPABLE: u32 = 5;
pub(crate) const SLOT_CHECK_SETID: u32 = 6;
/// Multi-call binaries (`applet`): the name an exec was invoked by; the argument
/// naming the applet, and the executable, after commit.
pub(crate) const SLOT_CHECK_APPLET: u32 = 7;
pub(crate) const SLOT_ARGS_APPLET: u32 = 8;
pub(crate) const SLOT_ARGS_EXE: u32 = 9;
pub(crate) const SLOT_INHERIT: u32 = 10;
pub(crate) const SLOT_IDENTIFY: u32 = 11;
const SLOTS: u32 = 12;

#[unsafe(no_mangle)]
static KERNEL_OFFSETS: KernelOffsets = KernelOffsets::ZERO;

#[unsafe(no_mangle)]
static PATH_HASH_KEY: [u64; 2] = [0; 2];

/// Rule tables are allocated per entry (`BPF_F_NO_PREALLOC`): a gateway with a few
/// dozen rules pays for a few dozen entries, not for the capacity.
const BPF_F_NO_PREALLOC: u32 = 1;

#[map]
pub(crate) static RULES: HashMap<RuleKey, RuleValue> =
    HashMap::with_max_entries(RULES_CAPACITY, BPF_F_NO_PREALLOC);

#[map]
pub(crate) static PREFIXES: HashMap<PrefixKey, u32> =
    HashMap::with_max_entries(PREFIXES_CAPACITY, BPF_F_NO_PREALLOC);

#[map]
pub(crate) static GLOBS: HashMap<RuleKey, GlobList> =
    HashMap::with_max_entries(GLOBS_CAPACITY, BPF_F_NO_PREALLOC);

#[map]
static ACTIVE: Array<ActivePolicy> = Array::with_max_entries(1, 0);

/// Written and read by agents only (the key and drop baseline an adopting agent
/// continues with).
#[map]
static AGENT_STATE: Array<AgentState> = Array::with_max_entries(1, 0);

/// Each task's identity (its executable's path hash; 0: unknown), in task-local
/// storage: it lives exactly as long as the task, so nothing evicts it and no later
/// task with the same PID can find it. A task without a value is "unknown" too.
#[btf_map]
pub(crate) static TASK_IDENTITY: TaskStorage<u64> = TaskStorage::new();

#[map]
pub(crate) static EXE_PATHS: LruHashMap<u64, ExePath> = LruHashMap::with_max_entries(1024, 0);

/// Path buffers: too large for the 512-byte BPF stack.
#[map]
pub(crate) static PATH_SCRATCH: PerCpuArray<ExePath> = PerCpuArray::with_max_entries(SLOTS, 0);

#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

#[map]
pub(crate) static EVENT_DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Monitor-only mode's exec reports (only loaded when BPF-LSM cannot attach).
#[map]
pub(crate) static EXEC_EVENTS: RingBuf = RingBuf::with_byte_size(EXEC_EVENTS_RING_BYTES, 0);

/// Per program slot: the walk in progress.
#[map]
pub(crate) static WALKS: PerCpuArray<PathWalk> = PerCpuArray::with_max_entries(SLOTS, 0);

/// Per path-resolving program slot: the patterns to try, and the match in progress.
#[map]
pub(crate) static GLOB_QUEUES: PerCpuArray<GlobQueue> = PerCpuArray::with_max_entries(4, 0);

#[inline(always)]
pub(crate) fn offsets() -> KernelOffsets {
    // SAFETY: a plain read of a global; volatile so the compiler does not fold the
    // build-time zero in, the agent writes the real values before loading.
    unsafe { core::ptr::read_volatile(&KERNEL_OFFSETS) }
}

#[inline(always)]
pub(crate) fn hash_key() -> [u64; 2] {
    // SAFETY: as for `offsets`.
    unsafe { core::ptr::read_volatile(&PATH_HASH_KEY) }
}

/// The policy generation in force, when `class` has any rule in it.
#[inline(always)]
pub(crate) fn active_generation(class: u32) -> Option<u32> {
    let active = ACTIVE.get(0)?;
    if active.class_mask & class_bit(class) == 0 {
        return None;
    }
    Some(active.generation)
}

#[inline(always)]
pub(crate) fn rule_key(
    source: u64,
    target: u64,
    class: u32,
    kind: u32,
    generation: u32,
) -> RuleKey {
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
pub(crate) fn lookup_both(
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
        if let Some(v) = unsafe { RULES.get(rule_key(source, target, class, kind, generation)) } {
            sourced.merge(v);
        }
    }
    // SAFETY: as above.
    if let Some(v) = unsafe { RULES.get(rule_key(ANY_SOURCE, target, class, kind, generation)) } {
        anyone.merge(v);
    }
}
