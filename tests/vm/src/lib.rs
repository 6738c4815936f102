//! The edgearmor VM harness: boot real Debian kernels under QEMU with a custom initramfs and
//! read what the guest prints on its serial console.
//!
//! The pieces, in the order a test uses them:
//!
//! 1. [`cache_dir`], [`fetch_kernel`] and [`fetch_busybox`] download a Debian kernel package
//!    and `busybox-static` for an [`Arch`] once, unpack them into a cache, and reuse the cache
//!    on every later call without touching apt.
//! 2. [`Initramfs`] builds the guest's root filesystem as an uncompressed `newc` cpio archive
//!    (busybox, an `/init` script, agent and helper binaries, policies).
//! 3. [`guest_binaries`] builds the static agent and helpers with `cross/build.sh`.
//! 4. [`boot`] runs QEMU (software emulation, no network unless asked for) with a
//!    [`BootConfig`], streams the console into a log file and memory, and returns a [`BootLog`]
//!    once the guest prints its done marker; tests then parse the lines the guest printed.
//!
//! ```no_run
//! use edgearmor_vm::{Arch, BootConfig, Initramfs, INIT_PRELUDE, boot, cache_dir, fetch_busybox, fetch_kernel};
//!
//! let cache = cache_dir();
//! let kernel = fetch_kernel(&cache, Arch::X86_64, "6.12")?;
//! let busybox = fetch_busybox(&cache, Arch::X86_64)?;
//! let mut initramfs = Initramfs::busybox_base(&busybox);
//! let init = format!("#!/bin/busybox sh\n{INIT_PRELUDE}echo EA-KERNEL $(uname -r)\necho EA-DONE\npoweroff -f\n");
//! initramfs.file_bytes("/init", init, 0o755);
//! initramfs.write(&cache.join("run/initrd.cpio"))?;
//!
//! let cfg = BootConfig::new(kernel, cache.join("run/initrd.cpio"), cache.join("run/console.log"));
//! let log = boot(&cfg)?;
//! assert_eq!(log.first_with_prefix("EA-KERNEL "), Some(cfg.kernel.release.as_str()));
//! # Ok::<(), edgearmor_vm::VmError>(())
//! ```
//!
//! 5. [`fetch_glibc`] adds real glibc dynamic binaries (loader, `libc.so.6`, a few coreutils
//!    programs) to a busybox guest, at their real paths.
//! 6. [`debian`] builds and caches a Debian 12 gateway root filesystem (systemd, sshd, apt)
//!    and writes per-run ext4 disks of it, booted with [`debian::gateway_initramfs`].
//!
//! Host requirements: `qemu-system-x86`/`qemu-system-arm`, and for the first fetch `apt-get`,
//! `apt-cache` and `dpkg-deb` with current apt lists (arm64 guests also need
//! `dpkg --add-architecture arm64`).

#![warn(missing_docs)]

mod arch;
mod artifacts;
pub mod broker;
pub mod debian;
mod error;
mod fetch;
mod glibc;
mod initramfs;
pub mod network;
pub mod process;
mod qemu;

pub use arch::Arch;
pub use artifacts::{GuestBinaries, guest_binaries, workspace_root};
pub use error::VmError;
pub use fetch::{Flavour, GuestKernel, KernelName, cache_dir, fetch_busybox, fetch_kernel};
pub use glibc::{GUEST_BIN_DIR, Glibc, PROGRAMS, fetch_glibc};
pub use initramfs::{INIT_PRELUDE, Initramfs};
pub use qemu::{BootConfig, BootLog, DEFAULT_DONE_MARKER, boot};

pub mod scenarios;
