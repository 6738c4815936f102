//! How full a BPF ring buffer is (`ringbuf_used_bytes`): the kernel keeps the consumer
//! position in the ring's first page and the producer position in its second; both are
//! mapped here read-only (the kernel allows any read-only mapping of a ring buffer, and a
//! writable one only of the consumer page), separately from the reader's own mapping, so
//! the status task reads them while the reader task owns the ring.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};

/// The two position pages of one ring buffer.
pub struct RingUsage {
    base: *mut libc::c_void,
    page: usize,
}

impl RingUsage {
    /// Maps the position pages of the ring buffer `fd` (pages of `page_size` bytes).
    pub fn new(fd: BorrowedFd<'_>, page_size: usize) -> io::Result<Self> {
        // SAFETY: a fresh read-only shared mapping of two pages of a ring buffer map; the
        // kernel checks the fd and the range, and the mapping is unmapped on drop.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                2 * page_size,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            base,
            page: page_size,
        })
    }

    /// Bytes written and not consumed yet (records and their headers), as of now.
    pub fn used(&self) -> u64 {
        // SAFETY: both pages are mapped for the life of `self`; each position is an
        // 8-byte aligned `unsigned long` at the start of its page, which the kernel and
        // the reader update atomically, so an atomic load reads a whole value.
        let (consumer, producer) = unsafe {
            let consumer = &*(self.base as *const AtomicU64);
            let producer = &*(self.base.cast::<u8>().add(self.page) as *const AtomicU64);
            (
                consumer.load(Ordering::Acquire),
                producer.load(Ordering::Acquire),
            )
        };
        producer.saturating_sub(consumer)
    }
}

impl std::fmt::Debug for RingUsage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RingUsage {{ used: {} }}", self.used())
    }
}

impl Drop for RingUsage {
    fn drop(&mut self) {
        // SAFETY: `base` is the mapping `new` made, of exactly this length.
        unsafe { libc::munmap(self.base, 2 * self.page) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};

    /// A ring buffer map of `bytes`, made with `bpf(BPF_MAP_CREATE)`; `None` where this
    /// process may not create maps.
    fn ring_map(bytes: u32) -> Option<OwnedFd> {
        #[repr(C)]
        struct MapCreate {
            map_type: u32,
            key_size: u32,
            value_size: u32,
            max_entries: u32,
            rest: [u8; 112],
        }
        const BPF_MAP_CREATE: libc::c_long = 0;
        const BPF_MAP_TYPE_RINGBUF: u32 = 27;
        let attr = MapCreate {
            map_type: BPF_MAP_TYPE_RINGBUF,
            key_size: 0,
            value_size: 0,
            max_entries: bytes,
            rest: [0; 112],
        };
        // SAFETY: `attr` is a zero-padded bpf_attr for BPF_MAP_CREATE of its own size.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_CREATE,
                &attr as *const MapCreate,
                std::mem::size_of::<MapCreate>() as u32,
            )
        };
        let fd = i32::try_from(fd).ok().filter(|&fd| fd >= 0)?;
        // SAFETY: the kernel just returned this new fd, owned by nobody else.
        Some(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    #[test]
    fn a_fresh_ring_is_empty_and_its_pages_map_read_only() {
        // SAFETY: sysconf takes no pointers.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let Some(fd) = ring_map(16 * page as u32) else {
            // Only a process that may not create maps skips, and says so.
            let err = io::Error::last_os_error();
            assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
            eprintln!("skipped: not permitted to create a ring buffer map");
            return;
        };
        let usage = RingUsage::new(fd.as_fd(), page).expect("position pages map read-only");
        assert_eq!(usage.used(), 0);
        drop(fd);
        // The mapping keeps the map: still readable after its fd is closed.
        assert_eq!(usage.used(), 0);
    }
}
