//! The Debian 12 gateway image: a root filesystem built from Debian's packages by
//! `tests/vm/image/debian-gateway.sh` (mmdebstrap, no guest binary run), cached per
//! architecture and build script, then staged per test run with the packages under test,
//! written as an ext4 disk (`mke2fs -d`, no loop mount) and booted from virtio with
//! systemd as PID 1.
//!
//! Cache layout (next to the kernels, see [`cache_dir`](crate::cache_dir)):
//!
//! ```text
//! <cache>/debian/<debian-arch>-<key>/root/        the root filesystem
//! <cache>/debian/<debian-arch>-<key>/rootfs.txt   manifest: build time, written last
//! ```
//!
//! `<key>` is a hash of the build script, which holds the package list and every
//! configuration step: editing it builds a new image once per machine (older entries of the
//! same architecture are removed then).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::fetch::{FETCH_LOCK, Staging, run};
use crate::network::{find_module, module_bytes};
use crate::{Arch, GuestKernel, Initramfs, VmError, workspace_root};

/// The build script, relative to the workspace root.
pub const BUILD_SCRIPT: &str = "tests/vm/image/debian-gateway.sh";

/// Name of the manifest written last into a root filesystem's cache entry.
const MANIFEST: &str = "rootfs.txt";

/// A cached Debian root filesystem.
#[derive(Debug, Clone)]
pub struct DebianRootfs {
    /// Its architecture.
    pub arch: Arch,
    /// The root directory (owned by root: the tree keeps the packages' owners).
    pub root: PathBuf,
    /// How long building it took, when this call built it (`None`: it was cached).
    pub built_in: Option<Duration>,
}

/// FNV-1a, 64 bits: the cache key of the build script (not a security boundary).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Returns the gateway root filesystem for `arch`, building it into the cache on first use
/// (about 20 s with a warm apt cache; the script needs root, `mmdebstrap`, `dpkg-deb`,
/// `ssh-keygen`, `systemctl`, `systemd-sysusers` and `pam-auth-update` on the host).
pub fn fetch_debian_rootfs(cache: &Path, arch: Arch) -> Result<DebianRootfs, VmError> {
    let script = workspace_root().join(BUILD_SCRIPT);
    let text = fs::read(&script).map_err(|e| VmError::io("reading", &script, e))?;
    let parent = cache.join("debian");
    let entry = format!("{}-{:016x}", arch.debian(), fnv1a(&text));
    let dir = parent.join(&entry);
    let root = dir.join("root");

    let _guard = FETCH_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if dir.join(MANIFEST).is_file() {
        return Ok(DebianRootfs {
            arch,
            root,
            built_in: None,
        });
    }
    fs::create_dir_all(&parent).map_err(|e| VmError::io("creating directory", &parent, e))?;
    let start = Instant::now();
    let staging = Staging::create(&parent, &entry)?;
    run(Command::new(&script)
        .arg(arch.debian())
        .arg(staging.path().join("root")))?;
    let built_in = start.elapsed();
    let manifest = staging.path().join(MANIFEST);
    let text = format!("built_secs={:.1}\n", built_in.as_secs_f64());
    fs::write(&manifest, text).map_err(|e| VmError::io("writing", &manifest, e))?;
    staging.install(&dir)?;
    remove_stale_entries(&parent, arch, &entry);
    Ok(DebianRootfs {
        arch,
        root,
        built_in: Some(built_in),
    })
}

/// Removes the cache entries of `arch` other than `keep` (built by older scripts).
fn remove_stale_entries(parent: &Path, arch: Arch, keep: &str) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    let prefix = format!("{}-", arch.debian());
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name != keep {
            // Best effort: a leftover entry only wastes space.
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// A copy of a [`DebianRootfs`] for one run, to which a test adds what it tests, then
/// written as an ext4 disk image.
#[derive(Debug)]
pub struct GatewayImage {
    /// The staged root directory.
    pub root: PathBuf,
}

impl GatewayImage {
    /// Copies `base` to `<dir>/rootfs` (replacing an earlier run's copy).
    pub fn stage(base: &DebianRootfs, dir: &Path) -> Result<Self, VmError> {
        let root = dir.join("rootfs");
        if root.exists() {
            fs::remove_dir_all(&root).map_err(|e| VmError::io("removing", &root, e))?;
        }
        fs::create_dir_all(dir).map_err(|e| VmError::io("creating directory", dir, e))?;
        run(Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(&base.root)
            .arg(&root))?;
        Ok(GatewayImage { root })
    }

    /// The host path of `guest_path` in the staged tree.
    pub fn path(&self, guest_path: &str) -> PathBuf {
        self.root.join(guest_path.trim_start_matches('/'))
    }

    /// Installs Debian packages the way the image's own packages were: unpacked, and
    /// registered in dpkg's database as installed (the build script's `install` mode).
    pub fn install_debs(&self, debs: &[PathBuf]) -> Result<(), VmError> {
        let script = workspace_root().join(BUILD_SCRIPT);
        run(Command::new(script)
            .arg("install")
            .arg(&self.root)
            .args(debs))?;
        Ok(())
    }

    /// Writes a file (and its parent directories) into the tree.
    pub fn file(
        &self,
        guest_path: &str,
        bytes: impl AsRef<[u8]>,
        mode: u32,
    ) -> Result<(), VmError> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.path(guest_path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| VmError::io("creating directory", parent, e))?;
        }
        fs::write(&path, bytes).map_err(|e| VmError::io("writing", &path, e))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(|e| VmError::io("chmod", &path, e))
    }

    /// `systemctl --root enable UNIT`, as a package's postinst (or Yocto's rootfs step for
    /// `SYSTEMD_AUTO_ENABLE = "enable"`) does.
    pub fn enable_unit(&self, unit: &str) -> Result<(), VmError> {
        run(Command::new("systemctl")
            .env("SYSTEMCTL_SKIP_SYSV", "1")
            .arg(format!("--root={}", self.root.display()))
            .args(["--quiet", "enable", unit]))?;
        Ok(())
    }

    /// Writes the tree as an ext4 file system image of `size_mb` MiB at `image`.
    pub fn write_ext4(&self, image: &Path, size_mb: u32) -> Result<(), VmError> {
        if image.exists() {
            fs::remove_file(image).map_err(|e| VmError::io("removing", image, e))?;
        }
        run(Command::new("mke2fs")
            .args(["-q", "-t", "ext4", "-L", "gateway", "-d"])
            .arg(&self.root)
            .arg(image)
            .arg(format!("{size_mb}M")))?;
        Ok(())
    }
}

/// Builds a `.deb` with `dpkg-deb --root-owner-group` from `files` (guest path, contents,
/// mode), into `out_dir`. `conffiles` are listed as such. Returns the package's path.
pub fn build_deb(
    out_dir: &Path,
    control: &str,
    files: &[(&str, Vec<u8>, u32)],
    conffiles: &[&str],
) -> Result<PathBuf, VmError> {
    use std::os::unix::fs::PermissionsExt;
    let field = |name: &str| {
        control
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    let name = format!(
        "{}_{}_{}",
        field("Package"),
        field("Version"),
        field("Architecture")
    );
    let tree = out_dir.join(format!("{name}.tree"));
    if tree.exists() {
        fs::remove_dir_all(&tree).map_err(|e| VmError::io("removing", &tree, e))?;
    }
    let image = GatewayImage { root: tree.clone() };
    image.file("DEBIAN/control", control, 0o644)?;
    if !conffiles.is_empty() {
        let list: String = conffiles.iter().map(|c| format!("{c}\n")).collect();
        image.file("DEBIAN/conffiles", list, 0o644)?;
    }
    for (path, bytes, mode) in files {
        image.file(path, bytes, *mode)?;
    }
    // Directories as dpkg-deb wants them: 0755 (the umask may have made them tighter).
    for dir in walk_dirs(&tree) {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
            .map_err(|e| VmError::io("chmod", &dir, e))?;
    }
    let deb = out_dir.join(format!("{name}.deb"));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zgzip", "--build"])
        .arg(&tree)
        .arg(&deb))?;
    Ok(deb)
}

fn walk_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_owned()];
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.filter_map(Result::ok) {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(walk_dirs(&entry.path()));
            }
        }
    }
    out
}

/// Modules the gateway's initramfs loads (with the modules they depend on): the disk, its
/// file system, the network. ext4 asks the crypto API for crc32c, which it does not name
/// as a dependency.
const GATEWAY_MODULES: &[&str] = &["virtio_blk", "crc32c_generic", "ext4", "virtio_net"];

/// The initramfs that mounts the gateway disk (`/dev/vda`, ext4) and hands over to its
/// systemd: busybox, the kernel's modules for disk and network (loaded in dependency
/// order), `eth0` configured for QEMU's user network (10.0.2.15/24), then `switch_root`.
pub fn gateway_initramfs(busybox: &Path, kernel: &GuestKernel) -> Result<Initramfs, VmError> {
    let mut order: Vec<PathBuf> = Vec::new();
    for name in GATEWAY_MODULES {
        add_with_deps(&kernel.modules_dir, name, &mut order)?;
    }
    let mut initramfs = Initramfs::busybox_base(busybox);
    let mut load = String::new();
    for path in &order {
        let bytes = module_bytes(path)?;
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().trim_end_matches(".xz").to_owned())
            .unwrap_or_default();
        let guest = format!("/lib/modules/{file}");
        initramfs.file_bytes(&guest, bytes, 0o644);
        load.push_str(&format!("insmod {guest}\n"));
    }
    let init = format!(
        "#!/bin/busybox sh\n\
         /bin/busybox --install -s /bin\n\
         export PATH=/bin:/sbin\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n\
         exec </dev/console >/dev/console 2>&1\n\
         {load}\
         n=0\n\
         while [ ! -b /dev/vda ] && [ $n -lt 600 ]; do n=$((n + 1)); sleep 0.05; done\n\
         ip link set lo up\n\
         ip link set eth0 up\n\
         ip addr add 10.0.2.15/24 dev eth0\n\
         ip route add default via 10.0.2.2\n\
         mkdir -p /newroot\n\
         mount -t ext4 -o rw /dev/vda /newroot || {{ echo EA-INITRD-NO-ROOT; poweroff -f; }}\n\
         umount /proc /sys\n\
         mount --move /dev /newroot/dev\n\
         exec switch_root /newroot /sbin/init\n"
    );
    initramfs.file_bytes("/init", init, 0o755);
    Ok(initramfs)
}

/// Appends module `name` to `order` after the modules it depends on (the package has no
/// modules.dep: depmod runs at install). A module the package lacks is built in.
fn add_with_deps(modules: &Path, name: &str, order: &mut Vec<PathBuf>) -> Result<(), VmError> {
    let Some(path) = find_module(modules, name) else {
        return Ok(());
    };
    if order.contains(&path) {
        return Ok(());
    }
    for dep in depends(&module_bytes(&path)?) {
        add_with_deps(modules, &dep, order)?;
    }
    order.push(path);
    Ok(())
}

/// The `depends=` entry of a module's `.modinfo` section (NUL-separated `key=value`
/// strings, what `modinfo -F depends` prints), split at commas.
fn depends(module: &[u8]) -> Vec<String> {
    module
        .split(|b| *b == 0)
        .find_map(|entry| entry.strip_prefix(b"depends="))
        .map(|list| {
            String::from_utf8_lossy(list)
                .split(',')
                .filter(|d| !d.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_dependencies_from_modinfo() {
        let module = b"\x7fELF junk\0license=GPL\0depends=mbcache,jbd2,crc16\0intree=Y\0";
        assert_eq!(depends(module), ["mbcache", "jbd2", "crc16"]);
        assert!(depends(b"\0depends=\0name=crc16\0").is_empty());
        assert!(depends(b"no modinfo").is_empty());
    }

    #[test]
    fn the_key_follows_the_script() {
        assert_ne!(fnv1a(b"packages=a"), fnv1a(b"packages=b"));
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    }
}
