//! [`Arch`]: the guest architectures the harness can boot, and the names each one goes by in
//! Debian, Rust and QEMU.

use std::fmt;

/// A guest CPU architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// 64-bit x86 (`amd64`), booted with `qemu-system-x86_64` on the default `pc` machine.
    X86_64,
    /// 64-bit Arm (`arm64`), booted with `qemu-system-aarch64 -M virt -cpu max,pauth-impdef=on`.
    Aarch64,
}

impl Arch {
    /// Both architectures, x86_64 first.
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// Debian's architecture name: `amd64` or `arm64` (package suffixes, `:arch` qualifiers).
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// The Rust target triple for static guest binaries: `x86_64-unknown-linux-musl` or
    /// `aarch64-unknown-linux-musl`.
    pub fn musl_target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-musl",
            Arch::Aarch64 => "aarch64-unknown-linux-musl",
        }
    }

    /// The QEMU system emulator binary: `qemu-system-x86_64` or `qemu-system-aarch64`.
    pub fn qemu_binary(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86_64",
            Arch::Aarch64 => "qemu-system-aarch64",
        }
    }

    /// The guest's serial console device, for `console=`: `ttyS0` (8250 UART) or `ttyAMA0`
    /// (PL011 UART on the `virt` machine).
    pub fn console(self) -> &'static str {
        match self {
            Arch::X86_64 => "ttyS0",
            Arch::Aarch64 => "ttyAMA0",
        }
    }

    /// The machine-specific QEMU arguments placed before `-m`: none on x86_64, `-M virt -cpu
    /// max,pauth-impdef=on` on aarch64. `max` has every granule (4, 16 and 64 KiB pages, so
    /// the `-16k` kernel boots) and pointer authentication; Debian's kernels sign every
    /// return address, and the architected QARMA5 signature is so slow to emulate that the
    /// implementation-defined one makes arm64 guests about 6x faster (policy_enforcement:
    /// 88 s -> 13 s).
    pub fn qemu_machine_args(self) -> &'static [&'static str] {
        match self {
            Arch::X86_64 => &[],
            Arch::Aarch64 => &["-M", "virt", "-cpu", "max,pauth-impdef=on"],
        }
    }

    /// The guest memory used when a [`BootConfig`](crate::BootConfig) does not say otherwise:
    /// 512 MiB on x86_64, 1024 MiB on aarch64.
    pub fn default_memory_mb(self) -> u32 {
        match self {
            Arch::X86_64 => 512,
            Arch::Aarch64 => 1024,
        }
    }

    /// The Rust/`uname -m` name: `x86_64` or `aarch64`.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }
}

impl fmt::Display for Arch {
    /// Formats as the `uname -m` name (`x86_64`, `aarch64`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
