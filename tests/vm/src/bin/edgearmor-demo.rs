//! `edgearmor-demo`: boots an arm64 Debian 6.12 "gateway" under QEMU, runs the agent
//! with a rule that forbids `/usr/sbin/sshd` to change its uid/gid, lets a program
//! installed as `/usr/sbin/sshd` call `setgid(0)`, and prints the KubeArmor JSON alert.
//! Run it with `scripts/demo.sh`, which installs what it needs first.

use std::process::ExitCode;
use std::time::Duration;

use edgearmor_vm::{
    Arch, BootConfig, Initramfs, boot, cache_dir, fetch_busybox, fetch_kernel, guest_binaries,
    workspace_root,
};

fn main() -> ExitCode {
    match demo() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("edgearmor-demo: {e}");
            ExitCode::from(2)
        }
    }
}

fn demo() -> Result<bool, Box<dyn std::error::Error>> {
    let arch = Arch::Aarch64;
    let cache = cache_dir();
    println!("== fetching Debian's arm64 6.12 kernel and busybox (cached after the first run)");
    let kernel = fetch_kernel(&cache, arch, "6.12")?;
    let busybox = fetch_busybox(&cache, arch)?;
    println!("== building the static aarch64 agent (cross/build.sh)");
    let bins = guest_binaries(arch)?;
    let guest = workspace_root().join("tests/vm/guest");
    let mut initramfs = Initramfs::busybox_base(&busybox);
    initramfs
        .file_from_host("/init", &guest.join("demo-init.sh"), 0o755)
        .file_from_host("/usr/local/bin/edgearmor", &bins.agent, 0o755)
        .file_from_host("/usr/local/bin/setid-probe", &bins.setid_probe, 0o755)
        .file_from_host(
            "/etc/edgearmor/rules.toml",
            &guest.join("setid-rules.toml"),
            0o644,
        );
    let work = workspace_root().join("target/vm-runs/demo");
    std::fs::create_dir_all(&work)?;
    initramfs.write(&work.join("initramfs.cpio"))?;
    let mut cfg = BootConfig::new(
        kernel,
        work.join("initramfs.cpio"),
        work.join("console.log"),
    );
    cfg.extra_append = "quiet loglevel=1".into();
    cfg.timeout = Duration::from_secs(600);
    println!(
        "== booting {} ({}) under qemu-system-aarch64, software emulation",
        cfg.kernel.release, cfg.kernel.package
    );
    let log = boot(&cfg)?;

    let show = |prefix: &str, label: &str| {
        if let Some(v) = log.first_with_prefix(prefix) {
            println!("{label}{v}");
        }
    };
    show("EA-KERNEL ", "guest kernel:   ");
    show("EA-LSM ", "active LSMs:    ");
    show("EA-AGENT ", "agent:          ");
    let blocked = log.first_with_prefix("EA-BLOCKED ").unwrap_or_default();
    let allowed = log.first_with_prefix("EA-ALLOWED ").unwrap_or_default();
    let verdict = |line: &str| {
        if line.contains("errno=1") {
            "EPERM (blocked)"
        } else if line.contains("rc=0") {
            "succeeded"
        } else {
            "no result"
        }
    };
    println!(
        "/usr/sbin/sshd      setgid(0): {}   [{blocked}]",
        verdict(blocked)
    );
    println!(
        "/usr/bin/sshd-other setgid(0): {}   [{allowed}]",
        verdict(allowed)
    );
    let alerts: Vec<&str> = log.lines_with_prefix("EA-ALERT ").collect();
    println!(
        "== {} alert(s), KubeArmor JSON as `karmor logs --json` prints them:",
        alerts.len()
    );
    for a in &alerts {
        println!("{a}");
    }
    println!("== full console log: {}", cfg.log_path.display());
    Ok(blocked.contains("errno=1") && allowed.contains("rc=0") && alerts.len() == 1)
}
