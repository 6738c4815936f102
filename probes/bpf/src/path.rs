//! Target paths: resolving a `struct path` into the run's scratch buffer
//! (`bpf_d_path`, up to `PATH_MAX`), and walking it byte by byte.
//!
//! One walk hashes the path with the keyed hash and, at every `/`, looks the prefix
//! up in `PREFIXES`: recursive-directory rules are merged on the way, the last
//! directory and the [`MAX_PATTERN_PREFIXES`] pattern prefixes are kept for the
//! matchers (the agent refuses a policy set in which a path could meet more).
//!
//! Loops run as `bpf_loop` callbacks whose state lives in per-CPU map memory, not on
//! the stack: the verifier does not track map contents, so it checks each callback
//! once instead of following every counter value through every iteration. (Callbacks
//! must stay static, hence mangled; probes/build.sh renames them to path-independent
//! symbols.) All of it is indexed by the slot the run claimed (`maps::with_slot`).

use aya_ebpf::{
    bindings::path,
    cty::{c_char, c_void},
    helpers::{bpf_d_path, bpf_loop},
};
use edgearmor_probe_abi::{
    LINUX_PATH_MAX, MATCH_RECURSIVE, MAX_PATTERN_PREFIXES, PREFIX_PATTERN, PREFIX_RECURSIVE,
    PrefixKey, RuleValue, SCRATCH_PATH_CAP, SipState, UNDECIDED_PATTERN_PREFIXES, Verdict,
};

use crate::maps::{PATH_SCRATCH, PREFIXES, WALKS, hash_key, lookup_both};

/// [`SCRATCH_PATH_CAP`] in 64-bit words.
pub(crate) const SCRATCH_WORDS: usize = SCRATCH_PATH_CAP / 8;

/// A resolved path of up to [`SCRATCH_PATH_CAP`] bytes. Its first fields are laid out
/// as `ExePath`'s (len, flags, words), which `report` relies on.
#[repr(C)]
pub(crate) struct PathBuf {
    /// Length in bytes without the NUL.
    pub(crate) len: u32,
    /// `EXE_FLAG_*` bits, set where the buffer is handed on as an `ExePath`.
    pub(crate) flags: u32,
    pub(crate) words: [u64; SCRATCH_WORDS],
    /// Never part of a path: room for the dentry walk's copies of up to `NAME_MAX`
    /// bytes at any masked index of `words`, which the verifier bounds by the
    /// largest index plus the largest size.
    pub(crate) _slack: [u64; 32],
}

impl PathBuf {
    #[inline(always)]
    pub(crate) fn byte_at(&self, i: usize) -> u8 {
        (self.words[(i / 8) & (SCRATCH_WORDS - 1)] >> ((i % 8) * 8)) as u8
    }
}

#[inline(always)]
pub(crate) fn scratch(slot: u32) -> Option<&'static mut PathBuf> {
    let ptr = PATH_SCRATCH.get_ptr_mut(slot)?;
    // SAFETY: this CPU's map value of a slot the caller claimed (`with_slot`): no
    // other run uses it until the claim ends.
    Some(unsafe { &mut *ptr })
}

/// Resolves `path` into the slot's buffer with `bpf_d_path`; `Err(errno)` when the
/// kernel cannot (`ENAMETOOLONG` beyond `PATH_MAX`, or no slot buffer: 0).
#[inline(always)]
pub(crate) fn resolve(p: *const path, slot: u32) -> Result<&'static mut PathBuf, u32> {
    let buf = scratch(slot).ok_or(0u32)?;
    // SAFETY: `p` is a `struct path *` the verifier has typed from the hook's
    // arguments; the buffer is SCRATCH_PATH_CAP >= LINUX_PATH_MAX bytes of map memory.
    let written = unsafe {
        bpf_d_path(
            p as *mut path,
            buf.words.as_mut_ptr() as *mut c_char,
            LINUX_PATH_MAX as u32,
        )
    };
    if written < 0 {
        buf.len = 0;
        return Err((-written) as u32);
    }
    if written == 0 || written > LINUX_PATH_MAX as i64 {
        buf.len = 0;
        return Err(0);
    }
    buf.len = (written - 1) as u32;
    buf.flags = 0;
    Ok(buf)
}

/// State of one walk over a resolved path.
#[repr(C)]
pub(crate) struct PathWalk {
    pub(crate) hash: SipState,
    pub(crate) source: u64,
    /// 0: only hash (record_exec); else the class whose prefixes are looked up.
    pub(crate) class: u32,
    pub(crate) generation: u32,
    /// Byte index of the last `/` seen.
    pub(crate) last_slash: u32,
    /// `PREFIXES` bits at the last `/`, and its prefix hash.
    pub(crate) last_flags: u32,
    pub(crate) last_prefix: u64,
    /// The whole path's hash.
    pub(crate) exact: u64,
    /// Prefixes with pattern rules, and where their `/` is.
    pub(crate) pattern_prefix: [u64; MAX_PATTERN_PREFIXES],
    pub(crate) pattern_slash: [u32; MAX_PATTERN_PREFIXES],
    pub(crate) patterns: u32,
    /// Non-zero when the path could not be decided (`UNDECIDED_*`): more pattern
    /// prefixes than the probes keep, or a pattern over its step bound.
    pub(crate) undecided: u32,
    /// Recursive-directory verdicts met on the way: for the source, for anyone.
    pub(crate) sourced: RuleValue,
    pub(crate) anyone: RuleValue,
    /// The decision per access slot (`settle_path`).
    pub(crate) verdicts: [Verdict; 2],
}

/// The loop context: which slot's state to work on.
#[repr(C)]
pub(crate) struct LoopSlot {
    pub(crate) slot: u32,
    pub(crate) _pad: u32,
}

/// One byte of the walk: hash it; at a `/`, consult the prefix index.
extern "C" fn walk_step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `LoopSlot` on the caller's stack that `walk_path` passed.
    let slot = unsafe { (*(ctx as *const LoopSlot)).slot };
    let (Some(buf), Some(walk)) = (PATH_SCRATCH.get_ptr(slot), WALKS.get_ptr_mut(slot)) else {
        return 1;
    };
    // SAFETY: this CPU's map values of the slot the run claimed.
    let (buf, walk) = unsafe { (&*buf, &mut *walk) };
    let byte = buf.byte_at(index as usize & (SCRATCH_PATH_CAP - 1));
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
    let Some(flags) = (unsafe { PREFIXES.get(key) }).copied() else {
        return 0;
    };
    walk.last_flags = flags;
    if flags & PREFIX_PATTERN != 0 {
        if (walk.patterns as usize) < MAX_PATTERN_PREFIXES {
            let k = walk.patterns as usize & (MAX_PATTERN_PREFIXES - 1);
            walk.pattern_prefix[k] = prefix;
            walk.pattern_slash[k] = index as u32;
            walk.patterns += 1;
        } else {
            // The agent refuses such policy sets; should one get here, say so.
            walk.undecided = UNDECIDED_PATTERN_PREFIXES;
        }
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
/// in `WALKS[slot]`.
#[inline(always)]
pub(crate) fn walk_path(
    slot: u32,
    class: u32,
    generation: u32,
    source: u64,
    len: u32,
) -> Option<&'static mut PathWalk> {
    let walk = WALKS.get_ptr_mut(slot)?;
    // SAFETY: this CPU's map value of the slot the run claimed.
    let walk = unsafe { &mut *walk };
    walk.hash = SipState::new(&hash_key());
    walk.source = source;
    walk.class = class;
    walk.generation = generation;
    walk.last_slash = 0;
    walk.last_flags = 0;
    walk.last_prefix = 0;
    walk.patterns = 0;
    walk.undecided = 0;
    walk.sourced = RuleValue::NONE;
    walk.anyone = RuleValue::NONE;
    let mut ctx = LoopSlot { slot, _pad: 0 };
    // SAFETY: `walk_step` is a static callback; the context is a live stack value
    // that outlives the call.
    unsafe {
        bpf_loop(
            len & (SCRATCH_PATH_CAP as u32 - 1),
            walk_step as *mut c_void,
            &mut ctx as *mut LoopSlot as *mut c_void,
            0,
        );
    }
    Some(walk)
}
