//! End-to-end smoke tests: boot real Debian kernels under QEMU with a busybox initramfs and
//! check what the guest reports on its console.
//!
//! The first run downloads the kernels and busybox into the cache (see
//! `edgearmor_vm::cache_dir`); later runs reuse it without apt. Console logs are kept under
//! Cargo's `CARGO_TARGET_TMPDIR`, in `vm-smoke/<test>/console.log`.

use std::path::PathBuf;
use std::time::Duration;

use edgearmor_vm::{
    Arch, BootConfig, BootLog, Flavour, INIT_PRELUDE, Initramfs, VmError, boot, cache_dir,
    fetch_busybox, fetch_kernel,
};

/// A per-test scratch directory for the initramfs and the console log.
fn work_dir(test: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("vm-smoke")
        .join(test)
}

/// The `/init` used by the smoke tests: mount the pseudo-filesystems, report the LSM list,
/// kernel release and machine, print the done marker, power off.
fn smoke_init() -> String {
    format!(
        "#!/bin/busybox sh\n\
         {INIT_PRELUDE}\
         echo \"EA-LSM $(cat /sys/kernel/security/lsm)\"\n\
         echo \"EA-KERNEL $(uname -r)\"\n\
         echo \"EA-ARCH $(uname -m)\"\n\
         echo \"EA-BPFFS $(grep -c ' /sys/fs/bpf bpf ' /proc/mounts)\"\n\
         echo \"EA-PAGESIZE $(grep -m1 KernelPageSize /proc/self/smaps | tr -s ' ' | cut -d' ' -f2-)\"\n\
         echo \"EA-VERSION $(uname -v)\"\n\
         echo EA-DONE\n\
         poweroff -f\n"
    )
}

/// Boots `series` on `arch` with the smoke `/init` and checks the guest's report.
fn smoke(arch: Arch, name: &str, test: &str) -> Result<BootLog, VmError> {
    let cache = cache_dir();
    let kernel = fetch_kernel(&cache, arch, name)?;
    let busybox = fetch_busybox(&cache, arch)?;
    assert!(kernel.package.contains(&kernel.release), "{kernel:?}");
    assert!(kernel.modules_dir.is_dir(), "{kernel:?}");

    let dir = work_dir(test);
    let initrd = dir.join("initrd.cpio");
    let mut initramfs = Initramfs::busybox_base(&busybox);
    initramfs.file_bytes("/init", smoke_init(), 0o755);
    initramfs.write(&initrd)?;

    let cfg = BootConfig::new(kernel.clone(), &initrd, dir.join("console.log"));
    let log = boot(&cfg)?;
    eprintln!(
        "{test}: {} booted to the marker in {:.1}s; log {}",
        kernel.package,
        log.elapsed.as_secs_f64(),
        log.log_path.display()
    );

    assert!(log.marker_seen);
    let lsm = log
        .first_with_prefix("EA-LSM ")
        .unwrap_or_else(|| panic!("no EA-LSM line; log {}", log.log_path.display()));
    eprintln!("{test}: /sys/kernel/security/lsm = {lsm}");
    assert!(
        lsm.split(',').any(|m| m == "bpf"),
        "bpf is not an active LSM: {lsm}"
    );
    assert_eq!(
        log.first_with_prefix("EA-KERNEL "),
        Some(kernel.release.as_str())
    );
    assert_eq!(log.first_with_prefix("EA-ARCH "), Some(arch.name()));
    assert_eq!(
        log.first_with_prefix("EA-BPFFS "),
        Some("1"),
        "bpffs not mounted"
    );
    let page = match kernel.flavour {
        Flavour::Pages16k => "16 kB",
        Flavour::Standard | Flavour::Rt => "4 kB",
    };
    assert_eq!(log.first_with_prefix("EA-PAGESIZE "), Some(page), "{test}");
    let version = log.first_with_prefix("EA-VERSION ").unwrap_or_default();
    assert_eq!(
        version.contains(" PREEMPT_RT "),
        kernel.flavour == Flavour::Rt,
        "{test}: uname -v is {version:?}"
    );
    Ok(log)
}

#[test]
fn x86_64_6_12_boots_with_bpf_lsm() -> Result<(), VmError> {
    smoke(Arch::X86_64, "6.12", "x86_64-6.12").map(drop)
}

#[test]
fn x86_64_6_1_boots_with_bpf_lsm() -> Result<(), VmError> {
    smoke(Arch::X86_64, "6.1", "x86_64-6.1").map(drop)
}

#[test]
fn aarch64_6_12_boots_with_bpf_lsm() -> Result<(), VmError> {
    smoke(Arch::Aarch64, "6.12", "aarch64-6.12").map(drop)
}

#[test]
fn aarch64_6_12_rt_boots_with_bpf_lsm() -> Result<(), VmError> {
    smoke(Arch::Aarch64, "6.12-rt", "aarch64-6.12-rt").map(drop)
}

#[test]
fn aarch64_6_12_16k_boots_with_bpf_lsm() -> Result<(), VmError> {
    smoke(Arch::Aarch64, "6.12-16k", "aarch64-6.12-16k").map(drop)
}

/// A guest that never prints the marker ends in a `Timeout` carrying the log, promptly.
#[test]
fn missing_marker_is_a_timeout() -> Result<(), VmError> {
    let cache = cache_dir();
    let kernel = fetch_kernel(&cache, Arch::X86_64, "6.12")?;
    let busybox = fetch_busybox(&cache, Arch::X86_64)?;
    let dir = work_dir("timeout");
    let initrd = dir.join("initrd.cpio");
    let mut initramfs = Initramfs::busybox_base(&busybox);
    let init = format!("#!/bin/busybox sh\n{INIT_PRELUDE}echo EA-WAITING\nexec sleep 1000\n");
    initramfs.file_bytes("/init", init, 0o755);
    initramfs.write(&initrd)?;

    let mut cfg = BootConfig::new(kernel, &initrd, dir.join("console.log"));
    cfg.timeout = Duration::from_secs(8);
    let started = std::time::Instant::now();
    match boot(&cfg) {
        Err(VmError::Timeout {
            timeout,
            log_path,
            last_lines,
        }) => {
            let took = started.elapsed();
            assert_eq!(timeout, cfg.timeout);
            assert_eq!(log_path, cfg.log_path);
            assert!(!last_lines.is_empty(), "the kernel printed nothing in 8 s");
            assert!(
                took < cfg.timeout + Duration::from_secs(5),
                "boot took {took:?} to give up"
            );
        }
        other => panic!("expected a Timeout, got {other:?}"),
    }
    Ok(())
}
