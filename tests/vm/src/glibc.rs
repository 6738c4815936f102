//! Real glibc dynamic binaries for a guest: Debian's dynamic loader and `libc.so.6` (from
//! `libc6`) and a few coreutils programs that need nothing else (from `coreutils`), fetched for
//! an [`Arch`] once into the cache like kernels and busybox, and placed into an [`Initramfs`] at
//! their real paths, so a guest can run (and attack through) what a gateway runs: an ELF with
//! a `PT_INTERP`, a loader that maps it, a shared library mapped `PROT_EXEC`.
//!
//! Cache layout: `<cache>/glibc/<debian-arch>/` holds the kept files in the packages' layout
//! (`lib/<triplet>/libc.so.6`, `bin/echo`, ...) and `glibc.txt`, written last, naming the
//! packages. Guest layout: the loader and libc where Debian puts them (the loader's real file
//! in `/lib/<triplet>/`, its `PT_INTERP` name a symlink to it), the programs in
//! [`GUEST_BIN_DIR`] (not `/bin`, which holds busybox's applets).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::fetch::{FETCH_LOCK, Staging, apt_download, run};
use crate::{Arch, Initramfs, VmError};

/// Where [`Glibc::install`] puts the programs in the guest: `/opt/glibc/bin/echo`, ...
pub const GUEST_BIN_DIR: &str = "/opt/glibc/bin";

/// The coreutils programs kept: each needs only `libc.so.6` (and, on arm64, the loader).
pub const PROGRAMS: [&str; 4] = ["true", "echo", "cat", "sleep"];

/// The manifest written last into the cache entry.
const MANIFEST: &str = "glibc.txt";

/// The glibc files for one architecture, cached on the host.
#[derive(Debug, Clone)]
pub struct Glibc {
    /// The architecture they run on.
    pub arch: Arch,
    /// The cache entry holding them in the packages' layout.
    pub root: PathBuf,
}

/// Debian's names for one architecture's glibc: the multiarch triplet, the loader's file name
/// and the loader's `PT_INTERP` path (a symlink in `libc6`).
struct Layout {
    triplet: &'static str,
    loader: &'static str,
    interp: &'static str,
}

fn layout(arch: Arch) -> Layout {
    match arch {
        Arch::X86_64 => Layout {
            triplet: "x86_64-linux-gnu",
            loader: "ld-linux-x86-64.so.2",
            interp: "lib64/ld-linux-x86-64.so.2",
        },
        Arch::Aarch64 => Layout {
            triplet: "aarch64-linux-gnu",
            loader: "ld-linux-aarch64.so.1",
            interp: "lib/ld-linux-aarch64.so.1",
        },
    }
}

impl Glibc {
    /// The loader's real file in the guest: `/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2`.
    pub fn loader(&self) -> String {
        let l = layout(self.arch);
        format!("/lib/{}/{}", l.triplet, l.loader)
    }

    /// The loader's `PT_INTERP` path in the guest (a symlink to [`Glibc::loader`]):
    /// `/lib64/ld-linux-x86-64.so.2`, `/lib/ld-linux-aarch64.so.1`.
    pub fn interp(&self) -> String {
        format!("/{}", layout(self.arch).interp)
    }

    /// `libc.so.6`'s path in the guest: `/lib/<triplet>/libc.so.6`.
    pub fn libc(&self) -> String {
        format!("/lib/{}/libc.so.6", layout(self.arch).triplet)
    }

    /// Every kept file as (path relative to the cache entry, path in the guest).
    fn files(&self) -> Vec<(String, String)> {
        let l = layout(self.arch);
        let mut out = vec![
            (format!("lib/{}/{}", l.triplet, l.loader), self.loader()),
            (format!("lib/{}/libc.so.6", l.triplet), self.libc()),
            (l.interp.to_owned(), self.interp()),
        ];
        for program in PROGRAMS {
            out.push((
                format!("bin/{program}"),
                format!("{GUEST_BIN_DIR}/{program}"),
            ));
        }
        out
    }

    /// Adds the loader, its `PT_INTERP` symlink, libc and the [`PROGRAMS`] (mode 0755).
    pub fn install(&self, initramfs: &mut Initramfs) -> Result<(), VmError> {
        for (rel, guest) in self.files() {
            let host = self.root.join(&rel);
            match fs::read_link(&host) {
                Ok(target) => {
                    initramfs.symlink(&guest, &target.to_string_lossy());
                }
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                    initramfs.file_from_host(&guest, &host, 0o755);
                }
                Err(e) => return Err(VmError::io("reading", &host, e)),
            }
        }
        Ok(())
    }

    /// Whether every kept file is in the entry and the manifest was written.
    fn complete(&self) -> bool {
        self.root.join(MANIFEST).is_file()
            && self
                .files()
                .iter()
                .all(|(rel, _)| fs::symlink_metadata(self.root.join(rel)).is_ok())
    }
}

/// Returns the glibc files for `arch` (`libc6` and `coreutils` of Debian's `arm64` or `amd64`
/// build), downloading them into `cache/glibc/<debian-arch>/` on first use and reusing them,
/// without apt, afterwards. Needs what [`fetch_busybox`](crate::fetch_busybox) needs.
pub fn fetch_glibc(cache: &Path, arch: Arch) -> Result<Glibc, VmError> {
    let parent = cache.join("glibc");
    let glibc = Glibc {
        arch,
        root: parent.join(arch.debian()),
    };
    let _guard = FETCH_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if glibc.complete() {
        return Ok(glibc);
    }
    let staging = Staging::create(&parent, arch.debian())?;
    let unpacked = staging.path().join("unpacked");
    let mut manifest = String::new();
    for package in ["libc6", "coreutils"] {
        let spec = format!("{package}:{}", arch.debian());
        let deb = apt_download(staging.path(), &spec)?;
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
        let name = deb.file_name().map(|n| n.to_string_lossy().into_owned());
        manifest.push_str(&format!("{package}={}\n", name.unwrap_or_default()));
        fs::remove_file(&deb).map_err(|e| VmError::io("removing", &deb, e))?;
    }
    let staged = Glibc {
        arch,
        root: staging.path().to_owned(),
    };
    for (rel, _) in staged.files() {
        let from = unpacked.join(&rel);
        if fs::symlink_metadata(&from).is_err() {
            return Err(VmError::BadPackage {
                package: format!("libc6:{0} or coreutils:{0}", arch.debian()),
                reason: format!("neither has {rel}"),
            });
        }
        let to = staging.path().join(&rel);
        if let Some(dir) = to.parent() {
            fs::create_dir_all(dir).map_err(|e| VmError::io("creating directory", dir, e))?;
        }
        fs::rename(&from, &to).map_err(|e| VmError::io("moving", &from, e))?;
    }
    fs::remove_dir_all(&unpacked).map_err(|e| VmError::io("removing", &unpacked, e))?;
    let manifest_path = staging.path().join(MANIFEST);
    fs::write(&manifest_path, manifest).map_err(|e| VmError::io("writing", &manifest_path, e))?;
    staging.install(&glibc.root)?;
    if glibc.complete() {
        Ok(glibc)
    } else {
        Err(VmError::BadPackage {
            package: format!("libc6:{}", arch.debian()),
            reason: format!("{} is incomplete after install", glibc.root.display()),
        })
    }
}
