//! Can this kernel enforce? Each way it cannot is a variant that names the missing
//! piece and the fix, so an operator never has to decode a raw errno.
//!
//! Features are probed, never inferred from version numbers: BTF by reading it,
//! BPF-LSM by looking for its hook functions in that BTF, the active LSM list from
//! securityfs, and trampoline support by the errno of a real attach.

use std::io;
use std::path::Path;

use crate::host::{ACTIVE_LSMS, HostKernel, KERNEL_BTF};
use crate::kernel::btf::{BtfError, KernelBtf};
use crate::kernel::permission::{ProcessFacts, Refusal};

/// The kernel's ENOTSUPP (not the libc ENOTSUP): returned when a BPF trampoline cannot
/// be built, e.g. on arm64 kernels whose JIT lacks trampoline support for LSM programs.
pub const ENOTSUPP: i32 = 524;

#[derive(Debug, thiserror::Error)]
pub enum EnforcementUnavailable {
    #[error(
        "the kernel exposes no BTF ({KERNEL_BTF}: {source}); rebuild it with CONFIG_DEBUG_INFO_BTF=y"
    )]
    NoBtf { source: io::Error },
    #[error("the kernel's BTF ({KERNEL_BTF}) is unusable: {0}")]
    BadBtf(#[source] BtfError),
    #[error(
        "BPF-LSM is not built into this kernel (its BTF has no bpf_lsm_* hooks); rebuild it with CONFIG_BPF_LSM=y"
    )]
    BpfLsmNotBuiltIn,
    #[error(
        "cannot read the active LSM list ({ACTIVE_LSMS}: {source}); mount securityfs on /sys/kernel/security"
    )]
    LsmListUnreadable { source: io::Error },
    #[error(
        "the bpf LSM is built in but not active (active LSMs: {active}); add it to the boot arguments: lsm={active},bpf"
    )]
    BpfLsmInactive { active: String },
    #[error(
        "this kernel cannot attach BPF-LSM programs: no BPF trampoline support \
         (attaching {program} to {hook} failed with ENOTSUPP, errno {ENOTSUPP}); \
         seen on arm64 kernels before trampolines supported LSM programs: use a newer kernel (Debian's 6.12 works)"
    )]
    NoTrampoline { program: String, hook: String },
    /// `EPERM`: what refused it, as far as the process can tell ([`Refusal`]).
    #[error("not permitted to {step}: {}", refusal.reason)]
    NotPermitted { step: String, refusal: Refusal },
    #[error("the kernel's verifier rejected {program}:\n{log_tail}")]
    Verifier { program: String, log_tail: String },
    #[error(
        "the BPF object's ring buffer {map} is {bytes} bytes, which this kernel cannot create: \
         a ring buffer must be a power of two and a whole number of pages, and this kernel's \
         pages are {page_size} bytes; rebuild the probes with a {map} size that is (probes/abi RING_BUFFERS)"
    )]
    RingBufferSize {
        map: String,
        bytes: u32,
        page_size: u64,
    },
    #[error("cannot read the kernel's page size: {source}")]
    PageSizeUnknown { source: io::Error },
    /// The rule tables could not be written (map, key and errno in the error).
    #[error("writing the rule tables failed: {0}")]
    RuleTables(#[source] crate::kernel::policy_maps::ApplyError),
    /// Anything else, with the errno when there is one.
    #[error("{step} failed{}: {detail}", errno_note(*errno))]
    Failed {
        step: String,
        errno: Option<i32>,
        detail: String,
    },
}

impl EnforcementUnavailable {
    /// `EPERM` on `step`, with this process's explanation of it.
    pub fn not_permitted(step: impl Into<String>) -> Self {
        Self::NotPermitted {
            step: step.into(),
            refusal: ProcessFacts::live().refusal(),
        }
    }

    /// Whether BPF-LSM cannot run here at all: the kernel lacks it (no BTF, BPF-LSM
    /// not built in or not active, no trampolines) or refuses it to this process
    /// (no CAP_BPF / CAP_MAC_ADMIN, lockdown, e.g. in a container). These are the
    /// only failures `enforcement = "auto"` answers with monitor-only mode. The rest
    /// (a verifier refusal, a map, pin or rule-table failure after the kernel said
    /// yes) is a broken load that must not pass for a kernel limitation.
    pub fn kernel_lacks_bpf_lsm(&self) -> bool {
        match self {
            Self::NoBtf { .. }
            | Self::BadBtf(_)
            | Self::BpfLsmNotBuiltIn
            | Self::LsmListUnreadable { .. }
            | Self::BpfLsmInactive { .. }
            | Self::NoTrampoline { .. }
            | Self::NotPermitted { .. } => true,
            Self::Verifier { .. }
            | Self::RuleTables(_)
            | Self::RingBufferSize { .. }
            | Self::PageSizeUnknown { .. }
            | Self::Failed { .. } => false,
        }
    }
}

/// ` (No such file or directory, errno 2)`, or nothing without an errno.
fn errno_note(errno: Option<i32>) -> String {
    errno
        .map(|e| format!(" ({}, errno {e})", io::Error::from_raw_os_error(e)))
        .unwrap_or_default()
}

/// Checks everything that can be checked before loading, and returns the kernel's
/// BTF for the load.
pub fn check_kernel(host: &dyn HostKernel) -> Result<KernelBtf, EnforcementUnavailable> {
    let blob = host
        .read(Path::new(KERNEL_BTF))
        .map_err(|source| EnforcementUnavailable::NoBtf { source })?;
    let btf = KernelBtf::parse(&blob).map_err(EnforcementUnavailable::BadBtf)?;
    if !btf.has_func("bpf_lsm_task_fix_setgid") {
        return Err(EnforcementUnavailable::BpfLsmNotBuiltIn);
    }
    let lsms = match host.read(Path::new(ACTIVE_LSMS)) {
        Ok(bytes) => bytes,
        Err(first) => {
            // securityfs is often mounted by init; a bare system may need us to do it.
            log::info!("{ACTIVE_LSMS} unreadable ({first}), mounting securityfs");
            host.mount_securityfs()
                .and_then(|()| host.read(Path::new(ACTIVE_LSMS)))
                .map_err(|source| EnforcementUnavailable::LsmListUnreadable { source })?
        }
    };
    let active = String::from_utf8_lossy(&lsms).trim().to_owned();
    if !active.split(',').any(|lsm| lsm == "bpf") {
        return Err(EnforcementUnavailable::BpfLsmInactive { active });
    }
    Ok(btf)
}

/// Names why attaching `program` to `hook` failed.
pub fn classify_attach_failure(
    program: &str,
    hook: &str,
    errno: Option<i32>,
    detail: String,
) -> EnforcementUnavailable {
    match errno {
        Some(ENOTSUPP) => EnforcementUnavailable::NoTrampoline {
            program: program.to_owned(),
            hook: hook.to_owned(),
        },
        Some(libc::EPERM) | Some(libc::EACCES) => {
            EnforcementUnavailable::not_permitted(format!("attach {program} to {hook}"))
        }
        errno => EnforcementUnavailable::Failed {
            step: format!("attaching {program} to {hook}"),
            errno,
            detail,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::collections::HashMap;
    use std::path::PathBuf;

    /// A host whose files are a map; `mount_securityfs` makes `after_mount` appear.
    struct FakeHost {
        files: HashMap<&'static str, Vec<u8>>,
        after_mount: Option<Vec<u8>>,
        mounted: Cell<bool>,
    }

    impl HostKernel for FakeHost {
        fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
            let key = path.to_str().unwrap_or_default();
            if let (true, Some(b)) = (key == ACTIVE_LSMS && self.mounted.get(), &self.after_mount) {
                return Ok(b.clone());
            }
            self.files
                .get(key)
                .cloned()
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        }
        fn mount_securityfs(&self) -> io::Result<()> {
            self.mounted.set(true);
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
        fn boottime_to_unix_offset_ns(&self) -> i128 {
            0
        }
        fn random_key(&self) -> io::Result<[u64; 2]> {
            Ok([1, 2])
        }
        fn is_bpffs(&self, _path: &std::path::Path) -> bool {
            false
        }
    }

    /// Minimal BTF with one function named `func`.
    fn btf_with_func(func: &str) -> Vec<u8> {
        let mut b = crate::kernel::btf::tests::BtfBlob::new(&[func]);
        // 1: func proto (void), 2: func `func` of type 1.
        b.push(&[0, 13 << 24, 0]);
        b.push(&[b.name(func), 12 << 24, 1]);
        b.build()
    }

    fn host(btf: Option<Vec<u8>>, lsm: Option<&str>) -> FakeHost {
        let mut files = HashMap::new();
        if let Some(b) = btf {
            files.insert(KERNEL_BTF, b);
        }
        if let Some(l) = lsm {
            files.insert(ACTIVE_LSMS, l.as_bytes().to_vec());
        }
        FakeHost {
            files,
            after_mount: None,
            mounted: Cell::new(false),
        }
    }

    #[test]
    fn each_missing_piece_is_named_with_its_fix() {
        let lsm_btf = || Some(btf_with_func("bpf_lsm_task_fix_setgid"));
        let cases: [(FakeHost, &str); 4] = [
            (host(None, Some("bpf")), "CONFIG_DEBUG_INFO_BTF=y"),
            (
                host(Some(btf_with_func("other")), Some("bpf")),
                "CONFIG_BPF_LSM=y",
            ),
            (
                host(lsm_btf(), Some("lockdown,capability,apparmor\n")),
                "lsm=lockdown,capability,apparmor,bpf",
            ),
            (host(lsm_btf(), None), "mount securityfs"),
        ];
        for (h, want) in cases {
            let err = check_kernel(&h)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(want), "got {err:?}, want {want:?}");
        }
        assert!(check_kernel(&host(lsm_btf(), Some("capability,bpf\n"))).is_ok());
    }

    #[test]
    fn securityfs_is_mounted_when_the_lsm_list_is_missing() {
        let mut h = host(Some(btf_with_func("bpf_lsm_task_fix_setgid")), None);
        h.after_mount = Some(b"lockdown,capability,bpf".to_vec());
        assert!(check_kernel(&h).is_ok());
        assert!(h.mounted.get());
    }

    #[test]
    fn errno_524_means_no_trampoline() {
        let e = classify_attach_failure(
            "deny_setgid",
            "task_fix_setgid",
            Some(ENOTSUPP),
            String::new(),
        );
        assert!(matches!(e, EnforcementUnavailable::NoTrampoline { .. }));
        let msg = e.to_string();
        assert!(
            msg.contains("no BPF trampoline support") && msg.contains("errno 524"),
            "{msg}"
        );
        let e = classify_attach_failure("p", "h", Some(libc::EPERM), String::new());
        let msg = e.to_string();
        assert!(
            msg.starts_with("not permitted to attach p to h: this process is"),
            "{msg}"
        );
        // SAFETY: geteuid cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        assert_eq!(msg.contains("run it as root"), !root, "{msg}");
        let e = classify_attach_failure("p", "h", Some(libc::EINVAL), "bad".into());
        assert!(e.to_string().contains("errno 22"), "{e}");
    }
}
