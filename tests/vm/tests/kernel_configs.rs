//! `edgearmor check --kernel-config` against Debian's real kernel configs (the same
//! packages the VM suite boots): it must agree with what the kernels do under QEMU, and
//! name `CONFIG_BPF_LSM` when that option is taken out. Runs the static x86_64 agent
//! built by `cross/build.sh` on the host.

use std::path::{Path, PathBuf};
use std::process::Command;

use edgearmor_vm::{Arch, cache_dir, fetch_kernel, guest_binaries, workspace_root};

fn check(config: &Path) -> (i32, String) {
    let agent = guest_binaries(Arch::X86_64).expect("static agent").agent;
    let out = Command::new(agent)
        .args(["check", "--kernel-config"])
        .arg(config)
        .output()
        .expect("edgearmor runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn debian_config(arch: Arch, name: &str) -> PathBuf {
    let kernel = fetch_kernel(&cache_dir(), arch, name).expect("kernel package");
    kernel.config
}

#[test]
fn debian_configs_agree_with_the_vm_suite() {
    for (arch, series, enforces) in [
        (Arch::X86_64, "6.1", true),
        (Arch::X86_64, "6.12", true),
        (Arch::Aarch64, "6.12", true),
        (Arch::Aarch64, "6.12-rt", true),
        (Arch::Aarch64, "6.12-16k", true),
        (Arch::Aarch64, "6.1", false),
    ] {
        let (code, table) = check(&debian_config(arch, series));
        assert_eq!(code == 0, enforces, "{} {series}:\n{table}", arch.name());
        if !enforces {
            assert!(
                table.contains("FAIL  CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS")
                    && table.contains("fix: CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS=y"),
                "arm64 6.1 lacks direct calls (its attach fails with errno 524):\n{table}"
            );
        }
    }
}

#[test]
fn a_config_without_bpf_lsm_fails_naming_it() {
    let original = std::fs::read_to_string(debian_config(Arch::Aarch64, "6.12")).expect("config");
    let stripped = original.replace("CONFIG_BPF_LSM=y", "# CONFIG_BPF_LSM is not set");
    let path = workspace_root().join("target/vm-runs/config-without-bpf-lsm");
    std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
    std::fs::write(&path, stripped).expect("write");
    let (code, table) = check(&path);
    assert_eq!(code, 2, "{table}");
    let failing: Vec<&str> = table.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(
        failing.len(),
        1,
        "exactly the removed option fails:\n{table}"
    );
    assert!(failing[0].contains("CONFIG_BPF_LSM"), "{table}");
    assert!(table.contains("fix: CONFIG_BPF_LSM=y"), "{table}");
}
