//! A BTF-defined `BPF_MAP_TYPE_TASK_STORAGE` map (aya-ebpf 0.2 has inode and socket
//! storage but no task storage, and its map-definition macro is crate-private; this
//! is the same layout): one value per `task_struct`, created on demand, freed by the
//! kernel with the task. Nothing can evict a value, and a new task (whatever PID it
//! gets) starts without one.

use core::ptr;

use aya_ebpf::{
    bindings::{
        BPF_F_NO_PREALLOC, BPF_LOCAL_STORAGE_GET_F_CREATE, bpf_map_type::BPF_MAP_TYPE_TASK_STORAGE,
        task_struct,
    },
    cty::c_void,
    helpers::generated::bpf_task_storage_get,
};

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

impl<T: Copy> TaskStorage<T> {
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

    /// The value stored for `task`, if it has one.
    ///
    /// # Safety
    /// `task` must be a `task_struct` pointer the verifier has typed (from BTF).
    #[inline(always)]
    pub(crate) unsafe fn get(&self, task: *mut task_struct) -> Option<T> {
        // SAFETY: per the contract; the helper returns NULL or the task's value.
        let value = unsafe { bpf_task_storage_get(self.as_ptr(), task, ptr::null_mut(), 0) };
        if value.is_null() {
            return None;
        }
        // SAFETY: non-NULL: the task's value, `T`-sized map memory.
        Some(unsafe { *(value as *const T) })
    }

    /// Creates `task`'s value as `value` when it has none; returns the value now
    /// stored (the existing one when there was one), `None` when the kernel could not
    /// allocate it.
    ///
    /// # Safety
    /// As for [`Self::get`].
    #[inline(always)]
    pub(crate) unsafe fn get_or_insert(&self, task: *mut task_struct, value: T) -> Option<T> {
        let mut init = value;
        // SAFETY: per the contract; `init` is a live stack value the helper copies.
        let stored = unsafe {
            bpf_task_storage_get(
                self.as_ptr(),
                task,
                &mut init as *mut T as *mut c_void,
                BPF_LOCAL_STORAGE_GET_F_CREATE.into(),
            )
        };
        if stored.is_null() {
            return None;
        }
        // SAFETY: as in `get`.
        Some(unsafe { *(stored as *const T) })
    }

    /// Sets `task`'s value (creating it); `false` when the kernel could not allocate it.
    ///
    /// # Safety
    /// As for [`Self::get`].
    #[inline(always)]
    pub(crate) unsafe fn set(&self, task: *mut task_struct, value: T) -> bool {
        let mut init = value;
        // SAFETY: as in `get_or_insert`.
        let stored = unsafe {
            bpf_task_storage_get(
                self.as_ptr(),
                task,
                &mut init as *mut T as *mut c_void,
                BPF_LOCAL_STORAGE_GET_F_CREATE.into(),
            )
        };
        if stored.is_null() {
            return false;
        }
        // SAFETY: non-NULL: the task's value; an existing one is overwritten.
        unsafe { *(stored as *mut T) = value };
        true
    }
}
