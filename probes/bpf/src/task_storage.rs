//! A BTF-defined `BPF_MAP_TYPE_TASK_STORAGE` map (aya-ebpf 0.2 has inode and socket
//! storage but no task storage, and its map-definition macro is crate-private; this
//! is the same layout): one value per `task_struct`, created on demand, freed by the
//! kernel with the task. Nothing can evict a value, and a new task (whatever PID it
//! gets) starts without one. Every call asks the kernel to create the value (as 0,
//! "none") so that a refusal cannot be mistaken for absence, and a refusal is retried
//! (see [`TaskStorage::value`]).

use core::ptr;

use aya_ebpf::{
    bindings::{
        BPF_F_NO_PREALLOC, BPF_LOCAL_STORAGE_GET_F_CREATE, bpf_map_type::BPF_MAP_TYPE_TASK_STORAGE,
        task_struct,
    },
    cty::c_void,
    helpers::{bpf_loop, generated::bpf_task_storage_get},
};
use core::intrinsics::{AtomicOrdering, atomic_cxchg};

/// The BTF map definition: libbpf-style pointer-to-array fields the loader reads
/// through BTF (`max_entries` must be 0, `BPF_F_NO_PREALLOC` is required).
#[repr(C)]
pub(crate) struct TaskStorage<T> {
    r#type: *const [i32; BPF_MAP_TYPE_TASK_STORAGE as usize],
    key: *const i32,
    value: *const T,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; BPF_F_NO_PREALLOC as usize],
}

// SAFETY: the fields are placeholders the loader reads through BTF; they are never
// dereferenced, so the definition has no shared state (a `static` map needs `Sync`).
unsafe impl<T> Sync for TaskStorage<T> {}

impl<T> TaskStorage<T> {
    pub(crate) const fn new() -> Self {
        Self {
            r#type: ptr::null(),
            key: ptr::null(),
            value: ptr::null(),
            max_entries: ptr::null(),
            map_flags: ptr::null(),
        }
    }

    #[inline(always)]
    fn as_ptr(&self) -> *mut c_void {
        ptr::from_ref(self).cast_mut().cast()
    }
}

/// Spins that separate the attempts of [`TaskStorage::value`]: each is long enough
/// (several scheduler ticks on hardware, longer under emulation) for the scheduler
/// to run the task that holds this CPU's task-storage lock.
const BUSY_SPINS: [u32; 2] = [1 << 20, 1 << 22];

extern "C" fn spin_step(_index: u64, _ctx: *mut c_void) -> i64 {
    0
}

/// `T::default()` (0) means "none yet": [`TaskStorage::value`] creates a task's value
/// as that, and the accessors below read it as absent.
impl<T: Copy + Default + PartialEq> TaskStorage<T> {
    /// A pointer to `task`'s value, created as `T::default()` when it has none; `None` when the
    /// kernel would not store one.
    ///
    /// Always asked with `F_CREATE`, so a NULL answer is a refusal, never "no value".
    /// Before Linux 6.2 `bpf_task_storage_get` refuses (NULL) whenever another
    /// task-storage call on this CPU is under way: a task preempted inside one
    /// (`preempt=full`), or the kernel freeing an exiting task's storage. Read as
    /// "no identity" that would let a fork fail or a task act as unknown for one
    /// call. The holder is on this CPU (migration is disabled there) and runs again
    /// once this program is preempted, so the call is repeated after spins that
    /// outlast a scheduler slice; only an allocation failure survives them.
    ///
    /// # Safety
    /// `task` must be a `task_struct` pointer the verifier has typed (from BTF).
    #[inline(always)]
    unsafe fn value(&self, task: *mut task_struct) -> Option<*mut T> {
        let mut attempt = 0;
        loop {
            let mut init = T::default();
            // SAFETY: per the contract; `init` is a live stack value the helper copies.
            let stored = unsafe {
                bpf_task_storage_get(
                    self.as_ptr(),
                    task,
                    &mut init as *mut T as *mut c_void,
                    BPF_LOCAL_STORAGE_GET_F_CREATE.into(),
                )
            };
            if !stored.is_null() {
                return Some(stored as *mut T);
            }
            let spins = *BUSY_SPINS.get(attempt)?;
            // SAFETY: `spin_step` is a static callback that touches nothing.
            unsafe { bpf_loop(spins, spin_step as *mut c_void, ptr::null_mut(), 0) };
            attempt += 1;
        }
    }

    /// `task`'s value, if it has one (not 0).
    ///
    /// # Safety
    /// As for [`Self::value`].
    #[inline(always)]
    pub(crate) unsafe fn get(&self, task: *mut task_struct) -> Option<T> {
        // SAFETY: per the contract; non-NULL is the task's `T` of map memory.
        let value = unsafe { ptr::read_volatile(self.value(task)?) };
        (value != T::default()).then_some(value)
    }

    /// Sets `task`'s value; `false` when the kernel could not store it.
    ///
    /// # Safety
    /// As for [`Self::value`].
    #[inline(always)]
    pub(crate) unsafe fn set(&self, task: *mut task_struct, value: T) -> bool {
        // SAFETY: per the contract.
        let Some(stored) = (unsafe { self.value(task) }) else {
            return false;
        };
        // SAFETY: the task's value; an existing one is overwritten.
        unsafe { ptr::write_volatile(stored, value) };
        true
    }
}

impl TaskStorage<u64> {
    /// Sets `task`'s value to `value` unless it has one (not 0) already; returns the
    /// value now stored, `None` when the kernel could not store it.
    ///
    /// # Safety
    /// As for [`Self::value`].
    #[inline(always)]
    pub(crate) unsafe fn get_or_insert(&self, task: *mut task_struct, value: u64) -> Option<u64> {
        // SAFETY: per the contract.
        let stored = unsafe { self.value(task)? };
        // SAFETY: the task's value; the swap is atomic, so a racing exec's fresher
        // identity is kept rather than overwritten.
        let (previous, _) = unsafe {
            atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
                stored, 0, value,
            )
        };
        Some(if previous == 0 { value } else { previous })
    }
}
