//! The ring buffers the BPF object creates, checked against the running kernel's page
//! size before anything is loaded: the kernel creates a ring buffer only when its size is
//! a power of two and a whole number of pages, and otherwise refuses the whole object with
//! a bare EINVAL. Checked here so the operator reads which map, how big, and why.

use edgearmor_probe_abi::{RING_BUFFERS, ring_buffer_fits};

use crate::host::HostKernel;
use crate::kernel::readiness::EnforcementUnavailable;

/// Whether every ring buffer of the embedded object can be created on `host`; returns the
/// page size they were checked against.
pub fn check_ring_buffers(host: &dyn HostKernel) -> Result<u64, EnforcementUnavailable> {
    let page_size = host
        .page_size()
        .map_err(|source| EnforcementUnavailable::PageSizeUnknown { source })?;
    check_sizes(&RING_BUFFERS, page_size).map(|()| page_size)
}

/// The first of `rings` (name, bytes) the kernel could not create on `page_size`-byte pages.
fn check_sizes(rings: &[(&str, u32)], page_size: u64) -> Result<(), EnforcementUnavailable> {
    for &(map, bytes) in rings {
        // A page size beyond u32 is larger than any ring buffer, so none fits.
        let fits = u32::try_from(page_size).is_ok_and(|page| ring_buffer_fits(bytes, page));
        if !fits {
            return Err(EnforcementUnavailable::RingBufferSize {
                map: map.to_owned(),
                bytes,
                page_size,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgearmor_probe_abi::{EVENTS_RING_BYTES, EXEC_EVENTS_RING_BYTES};
    use std::io;
    use std::path::{Path, PathBuf};

    /// A host that only knows its page size.
    struct Pages(io::Result<u64>);

    impl HostKernel for Pages {
        fn read(&self, _path: &Path) -> io::Result<Vec<u8>> {
            Err(io::ErrorKind::NotFound.into())
        }
        fn mount_securityfs(&self) -> io::Result<()> {
            Ok(())
        }
        fn release(&self) -> String {
            "test".into()
        }
        fn node_name(&self) -> String {
            "node".into()
        }
        fn process_executable(&self, _tgid: u32) -> Option<PathBuf> {
            None
        }
        fn real_path(&self, _path: &Path) -> Option<PathBuf> {
            None
        }
        fn random_key(&self) -> io::Result<[u64; 2]> {
            Ok([1, 2])
        }
        fn is_bpffs(&self, _path: &Path) -> bool {
            false
        }
        fn page_size(&self) -> io::Result<u64> {
            match &self.0 {
                Ok(size) => Ok(*size),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            }
        }
    }

    #[test]
    fn the_object_fits_4k_16k_and_64k_pages() {
        for page in [4096, 16 * 1024, 64 * 1024] {
            let checked = check_ring_buffers(&Pages(Ok(page)));
            assert_eq!(checked.ok(), Some(page));
        }
    }

    #[test]
    fn a_ring_smaller_than_a_page_is_named_with_both_sizes() {
        // Pages as large as EVENTS (256 KiB: some PowerPC and Hexagon kernels): EVENTS
        // still fits, the smaller EXEC_EVENTS does not.
        const { assert!(EXEC_EVENTS_RING_BYTES < EVENTS_RING_BYTES) };
        let page = u64::from(EVENTS_RING_BYTES);
        let err = check_ring_buffers(&Pages(Ok(page)))
            .expect_err("a ring smaller than a page")
            .to_string();
        assert!(
            err.contains(&format!(
                "ring buffer EXEC_EVENTS is {EXEC_EVENTS_RING_BYTES} bytes"
            )) && err.contains(&format!("pages are {page} bytes")),
            "{err}"
        );
    }

    #[test]
    fn sizes_that_are_not_a_power_of_two_or_not_whole_pages_fail() {
        for (bytes, page) in [(3 * 16 * 1024, 16 * 1024), (8192, 16384), (4096, 0)] {
            let err = check_sizes(&[("EVENTS", bytes)], page).expect_err("refused");
            match &err {
                EnforcementUnavailable::RingBufferSize {
                    map,
                    bytes: b,
                    page_size,
                } => assert_eq!((map.as_str(), *b, *page_size), ("EVENTS", bytes, page)),
                other => panic!("{other:?}"),
            }
            assert!(
                err.to_string()
                    .contains("power of two and a whole number of pages"),
                "{err}"
            );
        }
        assert!(check_sizes(&[("EVENTS", 1 << 20)], 1 << 33).is_err());
        assert!(check_sizes(&[("EVENTS", 16384)], 16384).is_ok());
    }

    #[test]
    fn an_unknown_page_size_is_an_error() {
        let err = check_ring_buffers(&Pages(Err(io::ErrorKind::InvalidInput.into())))
            .expect_err("unknown page size");
        assert!(
            matches!(err, EnforcementUnavailable::PageSizeUnknown { .. }),
            "{err:?}"
        );
    }
}
