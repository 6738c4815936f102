//! Every map and global the object defines, and their typed accessors.
//!
//! The names, types and sizes here are the contract with the agent (which creates,
//! pins and fills them): policy tables (`RULES`, `PREFIXES`, `GLOBS`, `ACTIVE`),
//! process identity (`TASK_IDENTITY`, task-local storage; `EXE_PATHS`), per-CPU scratch (`PATH_SCRATCH`,
//! `WALKS`, `DENTRY_WALKS`, `GLOB_QUEUES`, claimed per run through `SLOT_OWNERS`: see [`with_slot`]),
//! the ring buffers (`EVENTS`, `EXEC_EVENTS`) and the drop counter, plus the
//! load-time globals (`KERNEL_OFFSETS`, `PATH_HASH_KEY`).
//!
//! ## Why two runs never share scratch state
//!
//! LSM programs run with migration disabled but may be preempted (`preempt=full`,
//! PREEMPT_RT; sleepable ones may also sleep), so a second run, of the same program
//! or another, can start on the same CPU while the first is half-way through its
//! buffers. A fixed slot per program is therefore not exclusive. Instead every run
//! that needs scratch memory claims a slot of its CPU's pool:
//!
//! - A slot `i` of CPU `c` is owned while `SLOT_OWNERS[c].owner[i] != 0`. A run
//!   claims it with one compare-and-swap 0 -> 1 (`BPF_CMPXCHG`, atomic against
//!   preemption and interrupts on that CPU), so of any number of runs racing for a
//!   slot exactly one sees the swap succeed; the others try the next slot.
//! - The run stays on CPU `c` until it returns (migration is disabled), so the
//!   per-CPU values it indexes with `i` are CPU `c`'s all along, and nobody else
//!   indexes them: only the claimer knows it owns `i`.
//! - [`with_slot`] releases the slot (an atomic exchange back to 0) after its
//!   closure returns, on every path out of it; BPF programs cannot unwind or be
//!   aborted half-way, so no claimed slot leaks. The callbacks of `bpf_loop` get the
//!   slot number through their context and run inside the claim.
//! - Runs on other CPUs use other per-CPU copies and need no coordination.
//!
//! When every slot of the CPU is held (more than [`SCRATCH_SLOTS`] runs preempted
//! inside the programs on one CPU), the run cannot decide and fails closed
//! (`MATCH_UNDECIDABLE`, reported with `UNDECIDED_NO_SCRATCH`).

use aya_ebpf::{
    macros::{btf_map, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use core::intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xchg};

use edgearmor_probe_abi::{
    ALIASES_CAPACITY, ANY_SOURCE, ActivePolicy, AgentState, AliasKey, AliasValue,
    EVENTS_RING_BYTES, EXEC_EVENTS_RING_BYTES, ExePath, GLOBS_CAPACITY, GlobList, KernelOffsets,
    LockState, PREFIXES_CAPACITY, PROTECTED_CAPACITY, PrefixKey, ProtectedKey, RULES_CAPACITY,
    RuleKey, RuleValue, SCRATCH_SLOTS, class_bit,
};

use aya_ebpf::{cty::c_void, helpers::bpf_loop};

use crate::{
    dentry_path::DentryWalk,
    matchers::GlobQueue,
    path::{LoopSlot, PathBuf, PathWalk},
    task_storage::TaskStorage,
};

const SLOTS: u32 = SCRATCH_SLOTS as u32;

/// Who holds each scratch slot of this CPU (0: free).
#[repr(C)]
pub(crate) struct SlotOwners {
    owner: [u64; SCRATCH_SLOTS],
}

#[map]
static SLOT_OWNERS: PerCpuArray<SlotOwners> = PerCpuArray::with_max_entries(1, 0);

/// Tries to claim slot `index` for the run whose `LoopSlot` is `ctx`; stops the loop
/// at the first slot won.
extern "C" fn claim_step(index: u64, ctx: *mut c_void) -> i64 {
    let Some(owners) = SLOT_OWNERS.get_ptr_mut(0) else {
        return 1;
    };
    let i = index as usize & (SCRATCH_SLOTS - 1);
    // SAFETY: `owners` is this CPU's map value, `i` is in bounds; the swap is atomic,
    // so of any number of runs racing for slot `i` exactly one sees 0 -> 1 succeed.
    let (_, won) = unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
            &raw mut (*owners).owner[i],
            0,
            1,
        )
    };
    if !won {
        return 0;
    }
    // SAFETY: `ctx` is the `LoopSlot` on the stack of `with_slot`, which outlives the loop.
    unsafe { (*(ctx as *mut LoopSlot)).slot = i as u32 };
    1
}

/// Runs `f` with a scratch slot of this CPU claimed for this run alone (see the
/// module comment), releasing it when `f` returns; `None` when every slot is held.
/// The claim runs as a `bpf_loop` callback, so the verifier checks `f` once for
/// "some slot" rather than once per slot number.
#[inline(always)]
pub(crate) fn with_slot<R>(f: impl FnOnce(u32) -> R) -> Option<R> {
    let owners = SLOT_OWNERS.get_ptr_mut(0)?;
    let mut ctx = LoopSlot {
        slot: u32::MAX,
        _pad: 0,
    };
    // SAFETY: `claim_step` is a static callback; the context outlives the call.
    unsafe {
        bpf_loop(
            SLOTS,
            claim_step as *mut c_void,
            &mut ctx as *mut LoopSlot as *mut c_void,
            0,
        );
    }
    let slot = ctx.slot;
    if slot >= SLOTS {
        return None;
    }
    let result = f(slot);
    // Read back volatile and masked: the compiler knows `slot < SLOTS` and would drop
    // the mask, and after `f` the verifier (6.1) may no longer know it.
    // SAFETY: a read of `ctx`, alive on this stack.
    let owned = unsafe { core::ptr::read_volatile(&ctx.slot) } as usize & (SCRATCH_SLOTS - 1);
    // SAFETY: this CPU's map value; this run owns slot `owned` and gives it back
    // (an atomic exchange, ordered after every use of the slot's buffers).
    unsafe { atomic_xchg::<u64, { AtomicOrdering::SeqCst }>(&raw mut (*owners).owner[owned], 0) };
    Some(result)
}

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

/// Canonical names of protected inodes, per generation (written by the agent; the
/// path walk looks each inode it passes up here).
#[map]
pub(crate) static FILE_ALIASES: HashMap<AliasKey, AliasValue> =
    HashMap::with_max_entries(ALIASES_CAPACITY, BPF_F_NO_PREALLOC);

#[map]
static ACTIVE: Array<ActivePolicy> = Array::with_max_entries(1, 0);

/// Written and read by agents only (the key and drop baseline an adopting agent
/// continues with).
#[map]
static AGENT_STATE: Array<AgentState> = Array::with_max_entries(1, 0);

/// Locked mode: who the agent is, and whether tampering is denied (written by the
/// agent, read by the self-protection hooks).
#[map]
pub(crate) static LOCK_STATE: Array<LockState> = Array::with_max_entries(1, 0);

/// Locked mode: which tasks are the agent (see `lock`), in task-local storage like
/// the identities.
#[btf_map]
pub(crate) static AGENT_MARK: TaskStorage<u32> = TaskStorage::new();

/// Locked mode: the maps, programs, links and pins no other process may obtain.
#[map]
pub(crate) static PROTECTED: HashMap<ProtectedKey, u32> =
    HashMap::with_max_entries(PROTECTED_CAPACITY, 0);

/// Each task's identity (its executable's path hash; 0: unknown), in task-local
/// storage: it lives exactly as long as the task, so nothing evicts it and no later
/// task with the same PID can find it. A task without a value is "unknown" too.
#[btf_map]
pub(crate) static TASK_IDENTITY: TaskStorage<u64> = TaskStorage::new();

#[map]
pub(crate) static EXE_PATHS: LruHashMap<u64, ExePath> = LruHashMap::with_max_entries(1024, 0);

/// Path buffers: too large for the 512-byte BPF stack.
#[map]
pub(crate) static PATH_SCRATCH: PerCpuArray<PathBuf> = PerCpuArray::with_max_entries(SLOTS, 0);

#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

#[map]
pub(crate) static EVENT_DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Monitor-only mode's exec reports (only loaded when BPF-LSM cannot attach).
#[map]
pub(crate) static EXEC_EVENTS: RingBuf = RingBuf::with_byte_size(EXEC_EVENTS_RING_BYTES, 0);

/// Per claimed slot: the walk in progress.
#[map]
pub(crate) static WALKS: PerCpuArray<PathWalk> = PerCpuArray::with_max_entries(SLOTS, 0);

/// Per claimed slot: the pattern being tried, and the match in progress.
/// Per claimed slot: the dentry walk in progress.
#[map]
pub(crate) static DENTRY_WALKS: PerCpuArray<DentryWalk> = PerCpuArray::with_max_entries(SLOTS, 0);

#[map]
pub(crate) static GLOB_QUEUES: PerCpuArray<GlobQueue> = PerCpuArray::with_max_entries(SLOTS, 0);

/// The kernel's struct offsets (`KERNEL_OFFSETS`), each read where it is used.
#[inline(always)]
pub(crate) fn offsets() -> &'static KernelOffsets {
    let global: *const KernelOffsets = &raw const KERNEL_OFFSETS;
    // SAFETY: a volatile read of a local, so the compiler cannot see which global the
    // pointer names and fold in its build-time zeros (the agent writes the real
    // values before loading); the fields are then plain loads from the frozen
    // read-only map, not a copy of the whole struct per use.
    unsafe { &*core::ptr::read_volatile(&global) }
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
