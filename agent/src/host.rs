//! The one seam between agent logic and the host: files under /sys and /proc, mounts,
//! clocks and identity of the machine. Logic that decides things from these (can this
//! kernel enforce? which processes run which executable?) takes a `&dyn HostKernel`,
//! so it is unit-tested with a fake and no root.

use std::ffi::CStr;
use std::io;
use std::path::{Path, PathBuf};

mod inodes;
pub mod notify;
pub use inodes::{DirEntry, InodeKind, KernelInode, MOUNTINFO, mount_devices};

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
    /// The resolved executable of one process, if it still exists.
    fn process_executable(&self, tgid: u32) -> Option<PathBuf>;
    /// `path` with symlinks resolved, if it exists.
    fn real_path(&self, path: &Path) -> Option<PathBuf>;
    /// The working directory of thread `tid`, if it still exists.
    fn process_cwd(&self, _tid: u32) -> Option<PathBuf> {
        None
    }
    /// The inode `path` names as the kernel's hooks see it (symlinks followed if
    /// `follow`). A host that cannot tell (a test double) says `Unsupported`.
    fn kernel_inode(&self, _path: &Path, _follow: bool) -> io::Result<KernelInode> {
        Err(io::ErrorKind::Unsupported.into())
    }
    /// At most `max` entries of directory `dir`, and whether that was all of them.
    fn dir_entries(&self, _dir: &Path, _max: usize) -> io::Result<(Vec<DirEntry>, bool)> {
        Err(io::ErrorKind::Unsupported.into())
    }
    /// The wall clock (`CLOCK_REALTIME`) in nanoseconds since the Unix epoch: what the
    /// kernel's clock says now. It steps when the clock is set (NTP, an operator, a
    /// gateway without a real-time clock booting in 1970), so it stamps events and
    /// never times anything: timers, throttling and backoff use the monotonic clock
    /// (`std::time::Instant`, async-io and tokio timers).
    fn wall_clock_ns(&self) -> i128 {
        wall_clock_ns()
    }
    /// `CLOCK_BOOTTIME` in nanoseconds: the clock the kernel stamps events with.
    fn boottime_ns(&self) -> i128 {
        clock_ns(libc::CLOCK_BOOTTIME)
    }
    /// Nanoseconds to add to a `CLOCK_BOOTTIME` stamp to get Unix time, now.
    fn boottime_to_unix_offset_ns(&self) -> i128 {
        self.wall_clock_ns() - self.boottime_ns()
    }
    /// Wakes its holder whenever the wall clock is set (stepped).
    fn clock_steps(&self) -> io::Result<ClockSteps> {
        ClockSteps::watch()
    }
    /// 16 bytes from the kernel's CSPRNG.
    fn random_key(&self) -> io::Result<[u64; 2]>;
    /// Whether `path` is on a mounted BPF filesystem (pins only work there).
    fn is_bpffs(&self, path: &Path) -> bool;
    /// The kernel's page size in bytes: 4 KiB on most machines, 16 KiB on a Raspberry Pi 5,
    /// 64 KiB on some arm64 servers. Ring buffers must be whole pages.
    fn page_size(&self) -> io::Result<u64> {
        // SAFETY: sysconf takes no pointers and only reads system configuration.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        u64::try_from(size)
            .ok()
            .filter(|&s| s > 0)
            .ok_or_else(io::Error::last_os_error)
    }
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

/// Test-only (debug builds): a file holding a signed number of seconds added to the
/// wall clock, read at every use, so a test steps the agent's wall clock at will
/// without touching the machine's. Release builds never read it.
pub const FAKE_WALL_CLOCK_ENV: &str = "EDGEARMOR_FAKE_WALL_CLOCK_FILE";

/// The wall clock as the agent sees it ([`HostKernel::wall_clock_ns`]); the one place
/// the agent reads it.
pub fn wall_clock_ns() -> i128 {
    clock_ns(libc::CLOCK_REALTIME) + fake_wall_clock_shift_ns()
}

#[cfg(debug_assertions)]
fn fake_wall_clock_shift_ns() -> i128 {
    let Some(path) = std::env::var_os(FAKE_WALL_CLOCK_ENV) else {
        return 0;
    };
    // A file being rewritten may be read empty: no shift for that one reading.
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.trim().parse::<i64>().ok())
        .map_or(0, |secs| i128::from(secs) * 1_000_000_000)
}

#[cfg(not(debug_assertions))]
#[inline(always)]
fn fake_wall_clock_shift_ns() -> i128 {
    0
}

/// Notices wall-clock steps the moment they happen: a `CLOCK_REALTIME` timerfd armed
/// far in the future with `TFD_TIMER_CANCEL_ON_SET`, which the kernel cancels (and
/// makes readable) whenever the clock is set.
pub struct ClockSteps {
    fd: Option<async_io::Async<std::os::fd::OwnedFd>>,
}

impl ClockSteps {
    /// The timerfd, armed.
    pub fn watch() -> io::Result<Self> {
        use std::os::fd::FromRawFd;
        // SAFETY: timerfd_create takes no pointers; a non-negative result is a new fd
        // that nothing else owns.
        let raw = unsafe {
            libc::timerfd_create(libc::CLOCK_REALTIME, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC)
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh, valid fd owned by nothing else.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        arm(&fd)?;
        Ok(Self {
            fd: Some(async_io::Async::new(fd)?),
        })
    }

    /// One that never fires (a host without timerfd; tests).
    pub fn none() -> Self {
        Self { fd: None }
    }

    /// Resolves the next time the wall clock is set (never, for [`Self::none`], or
    /// if the timerfd fails: then the error is logged once and steps are noticed at
    /// the next kernel event only).
    pub async fn next(&mut self) {
        loop {
            let Some(fd) = self.fd.as_ref() else {
                return std::future::pending().await;
            };
            if let Err(e) = fd.readable().await {
                log::warn!(
                    "wall-clock steps: cannot wait on the timerfd: {e}; steps are noticed at the next event only"
                );
                self.fd = None;
                continue;
            }
            let mut expirations = [0u8; 8];
            use std::os::fd::AsRawFd;
            // SAFETY: reads at most 8 bytes into the 8-byte buffer we own.
            let read = unsafe {
                libc::read(
                    fd.get_ref().as_raw_fd(),
                    expirations.as_mut_ptr().cast(),
                    expirations.len(),
                )
            };
            let error = (read < 0).then(io::Error::last_os_error);
            match error.as_ref().and_then(io::Error::raw_os_error) {
                Some(libc::EAGAIN) => continue, // spurious wake-up
                Some(libc::ECANCELED) | None => {
                    // Set (or, far in the future, expired): re-arm for the next step.
                    if let Err(e) = arm(fd.get_ref()) {
                        log::warn!(
                            "wall-clock steps: cannot re-arm the timerfd: {e}; steps are noticed at the next event only"
                        );
                        self.fd = None;
                    }
                    return;
                }
                Some(_) => {
                    log::warn!(
                        "wall-clock steps: timerfd read failed: {}; steps are noticed at the next event only",
                        error.map_or_else(String::new, |e| e.to_string())
                    );
                    self.fd = None;
                }
            }
        }
    }
}

/// Arms `fd` to expire in about 30,000 years and to be cancelled when the clock is set.
fn arm(fd: &std::os::fd::OwnedFd) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let far = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: 1 << 40,
            tv_nsec: 0,
        },
    };
    // SAFETY: `far` is a valid itimerspec; the old value is not asked for.
    let rc = unsafe {
        libc::timerfd_settime(
            fd.as_raw_fd(),
            libc::TFD_TIMER_ABSTIME | libc::TFD_TIMER_CANCEL_ON_SET,
            &far,
            std::ptr::null_mut(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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

    fn process_executable(&self, tgid: u32) -> Option<PathBuf> {
        std::fs::read_link(format!("/proc/{tgid}/exe")).ok()
    }

    fn real_path(&self, path: &Path) -> Option<PathBuf> {
        std::fs::canonicalize(path).ok()
    }

    fn process_cwd(&self, tid: u32) -> Option<PathBuf> {
        std::fs::read_link(format!("/proc/{tid}/cwd")).ok()
    }

    fn kernel_inode(&self, path: &Path, follow: bool) -> io::Result<KernelInode> {
        inodes::live_kernel_inode(path, follow)
    }

    fn dir_entries(&self, dir: &Path, max: usize) -> io::Result<(Vec<DirEntry>, bool)> {
        inodes::live_dir_entries(dir, max)
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
