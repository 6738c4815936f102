//! Target paths: resolving a `struct path` into a per-CPU scratch buffer
//! (`bpf_d_path`), and walking it byte by byte.
//!
//! One walk hashes the path with the keyed hash and, at every `/`, looks the prefix
//! up in `PREFIXES`: recursive-directory rules are merged on the way, the last
//! directory and the first [`MAX_PATTERN_PREFIXES`] pattern prefixes are kept for
//! the matchers.
//!
//! Loops run as `bpf_loop` callbacks whose state lives in per-CPU map memory, not on
//! the stack: the verifier does not track map contents, so it checks each callback
//! once instead of following every counter value through every iteration. (Callbacks
//! must stay static, hence mangled; probes/build.sh renames them to path-independent
//! symbols.)

use aya_ebpf::{
    bindings::path,
    cty::{c_char, c_void},
    helpers::{bpf_d_path, bpf_loop},
};
use edgearmor_probe_abi::{
    EXE_FLAG_TOO_LONG, ExePath, MATCH_RECURSIVE, PATH_CAP, PREFIX_PATTERN, PREFIX_RECURSIVE,
    PrefixKey, RuleValue, SipState, Verdict,
};

use crate::maps::{PATH_SCRATCH, PREFIXES, WALKS, hash_key, lookup_both};

/// Directory prefixes of one path whose pattern rules are tried.
pub(crate) const MAX_PATTERN_PREFIXES: usize = 2;

#[inline(always)]
pub(crate) fn scratch(slot: u32) -> Option<&'static mut ExePath> {
    let ptr = PATH_SCRATCH.get_ptr_mut(slot)?;
    // SAFETY: per-CPU map value; each program uses its own slot, and a program does
    // not run twice at once on one CPU.
    Some(unsafe { &mut *ptr })
}

/// Resolves `path` into the scratch slot with `bpf_d_path`; `None` when it cannot
/// be resolved or does not fit.
#[inline(always)]
pub(crate) fn resolve(p: *const path, slot: u32) -> Option<&'static mut ExePath> {
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
    /// Prefixes with pattern rules (the first [`MAX_PATTERN_PREFIXES`]), and where
    /// their `/` is.
    pub(crate) pattern_prefix: [u64; MAX_PATTERN_PREFIXES],
    pub(crate) pattern_slash: [u32; MAX_PATTERN_PREFIXES],
    pub(crate) patterns: u32,
    pub(crate) _pad: u32,
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
    let Some(flags) = (unsafe { PREFIXES.get(key) }).copied() else {
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
pub(crate) fn walk_path(
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
