//! Guest networking for tests that reach a broker on the host: the guest kernel's own
//! virtio-net modules in the initramfs, and QEMU user networking restricted so that the
//! guest reaches exactly one address, forwarded to one host port.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{GuestKernel, Initramfs, VmError};

/// Where the guest finds the broker: QEMU forwards it to the host port.
pub const GUEST_BROKER: &str = "10.0.2.100:1883";

/// Modules virtio-net may need, in load order; those built into a kernel are absent
/// from its package and skipped.
const VIRTIO_NET_MODULES: &[&str] = &[
    "virtio",
    "virtio_ring",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
];

/// QEMU arguments: one virtio NIC whose only reachable address is [`GUEST_BROKER`],
/// forwarded to 127.0.0.1:`host_port`.
pub fn restricted_nic_args(host_port: u16) -> Vec<String> {
    vec![
        "-nic".into(),
        format!(
            "user,model=virtio-net-pci,restrict=on,guestfwd=tcp:10.0.2.100:1883-tcp:127.0.0.1:{host_port}"
        ),
    ]
}

pub(crate) fn find_module(dir: &Path, name: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_module(&path, name) {
                return Some(found);
            }
        } else if path
            .file_name()
            .and_then(|f| f.to_str())
            .is_some_and(|file| file == format!("{name}.ko") || file == format!("{name}.ko.xz"))
        {
            return Some(path);
        }
    }
    None
}

/// Adds the kernel's virtio-net modules (decompressed: busybox `insmod` reads plain
/// `.ko` files) under `/lib/modules/net/` and returns a shell snippet that loads them
/// and configures `eth0` for QEMU's user network.
pub fn add_virtio_net(initramfs: &mut Initramfs, kernel: &GuestKernel) -> Result<String, VmError> {
    let mut script = String::new();
    for name in VIRTIO_NET_MODULES {
        let Some(path) = find_module(&kernel.modules_dir, name) else {
            continue;
        };
        let bytes = module_bytes(&path)?;
        let guest = format!("/lib/modules/net/{name}.ko");
        initramfs.file_bytes(&guest, bytes, 0o644);
        script.push_str(&format!("insmod {guest}\n"));
    }
    script.push_str("ip link set lo up\nip link set eth0 up\nip addr add 10.0.2.15/24 dev eth0\n");
    Ok(script)
}

/// Adds the kernel module `name` (decompressed) at `/lib/modules/extra/NAME.ko`;
/// returns that guest path, or `None` when the kernel has no such module file (built
/// in, or not built).
pub fn add_kernel_module(
    initramfs: &mut Initramfs,
    kernel: &GuestKernel,
    name: &str,
) -> Result<Option<String>, VmError> {
    let Some(path) = find_module(&kernel.modules_dir, name) else {
        return Ok(None);
    };
    let guest = format!("/lib/modules/extra/{name}.ko");
    initramfs.file_bytes(&guest, module_bytes(&path)?, 0o644);
    Ok(Some(guest))
}

/// A kernel module's bytes, decompressed when it is a `.ko.xz` (busybox `insmod` reads
/// plain `.ko` files).
pub(crate) fn module_bytes(path: &Path) -> Result<Vec<u8>, VmError> {
    if path.extension().is_some_and(|e| e == "xz") {
        let out = Command::new("xz")
            .arg("-dc")
            .arg(path)
            .output()
            .map_err(|source| VmError::Spawn {
                cmd: format!("xz -dc {}", path.display()),
                source,
            })?;
        if !out.status.success() {
            return Err(VmError::Command {
                cmd: format!("xz -dc {}", path.display()),
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(out.stdout)
    } else {
        std::fs::read(path).map_err(|source| VmError::Io {
            action: "reading kernel module",
            path: path.to_owned(),
            source,
        })
    }
}
