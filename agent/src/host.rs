//! The one seam between agent logic and the host: files under /sys and /proc, mounts,
//! clocks and identity of the machine. Logic that decides things from these (can this
//! kernel enforce? which processes run which executable?) takes a `&dyn HostKernel`,
//! so it is unit-tested with a fake and no root.

use std::ffi::CStr;
use std::io;
use std::path::{Path, PathBuf};

pub const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";
pub const ACTIVE_LSMS: &str = "/sys/kernel/security/lsm";
pub const SECURITYFS: &str = "/sys/kernel/security";

pub trait HostKernel {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Mounts securityfs at [`SECURITYFS`] (it holds the active LSM list).
    fn mount_securityfs(&self) -> io::Result<()>;
    /// `uname -r`.
    fn release(&self) -> String;
    /// `uname -n`.
    fn node_name(&self) -> String;
    /// `(tgid, resolved executable path)` of every process whose executable is readable.
    fn process_executables(&self) -> Vec<(u32, PathBuf)>;
    /// The resolved executable of one process, if it still exists.
    fn process_executable(&self, tgid: u32) -> Option<PathBuf>;
    /// `path` with symlinks resolved, if it exists.
    fn real_path(&self, path: &Path) -> Option<PathBuf>;
    /// Nanoseconds to add to a `CLOCK_BOOTTIME` stamp to get Unix time.
    fn boottime_to_unix_offset_ns(&self) -> i128;
    /// 16 bytes from the kernel's CSPRNG.
    fn random_key(&self) -> io::Result<[u64; 2]>;
    /// Whether `path` is on a mounted BPF filesystem (pins only work there).
    fn is_bpffs(&self, path: &Path) -> bool;
}

/// The machine the agent runs on.
pub struct LiveKernel;

fn uname_field(pick: fn(&libc::utsname) -> &[libc::c_char; 65]) -> String {
    // SAFETY: utsname is plain old data; all-zero is a valid value for uname to fill.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return String::new();
    }
    let field = pick(&uts);
    // SAFETY: uname NUL-terminates every field within its 65 bytes.
    unsafe { CStr::from_ptr(field.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    // SAFETY: timespec is plain old data.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is a valid, writable timespec; both clocks exist on every Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

impl HostKernel for LiveKernel {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn mount_securityfs(&self) -> io::Result<()> {
        let status = std::process::Command::new("mount")
            .args(["-t", "securityfs", "securityfs", SECURITYFS])
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "mount -t securityfs exited with {status}"
            )))
        }
    }

    fn release(&self) -> String {
        uname_field(|u| &u.release)
    }

    fn node_name(&self) -> String {
        uname_field(|u| &u.nodename)
    }

    fn process_executables(&self) -> Vec<(u32, PathBuf)> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let tgid: u32 = e.file_name().to_str()?.parse().ok()?;
                // Kernel threads have no executable; exited processes vanish: both skipped.
                let exe = std::fs::read_link(e.path().join("exe")).ok()?;
                Some((tgid, exe))
            })
            .collect()
    }

    fn process_executable(&self, tgid: u32) -> Option<PathBuf> {
        std::fs::read_link(format!("/proc/{tgid}/exe")).ok()
    }

    fn real_path(&self, path: &Path) -> Option<PathBuf> {
        std::fs::canonicalize(path).ok()
    }

    fn boottime_to_unix_offset_ns(&self) -> i128 {
        clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_BOOTTIME)
    }

    fn is_bpffs(&self, path: &Path) -> bool {
        const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
        let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
            return false;
        };
        // SAFETY: statfs fills the zeroed struct we own; the path is a valid C string.
        unsafe {
            let mut info: libc::statfs = std::mem::zeroed();
            libc::statfs(c_path.as_ptr(), &mut info) == 0 && info.f_type as i64 == BPF_FS_MAGIC
        }
    }

    fn random_key(&self) -> io::Result<[u64; 2]> {
        let mut bytes = [0u8; 16];
        io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
        let (a, b) = bytes.split_at(8);
        Ok([
            u64::from_le_bytes(a.try_into().map_err(io::Error::other)?),
            u64::from_le_bytes(b.try_into().map_err(io::Error::other)?),
        ])
    }
}
