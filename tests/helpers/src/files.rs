//! Path and descriptor syscalls for the `files` part of the fail-closed guest
//! (every way into a protected file, issue 14). Each makes exactly one attempt and
//! prints `EA-OP op=OP target=T rc=RC errno=E` (rc 0 on success, -1 and the errno
//! on failure), so the alerts of one process are the alerts of one attempt:
//!
//! - `link OLD NEW`, `rename OLD NEW`, `exchange A B` (`renameat2(RENAME_EXCHANGE)`);
//! - `truncate PATH LEN`, `chmod PATH OCTAL`, `chown PATH UID GID`;
//! - `mknod PATH` (a FIFO), `mkdir PATH`, `rmdir PATH`, `symlink TARGET PATH`;
//! - `create PATH` (`O_WRONLY|O_CREAT`), `create-excl PATH` (`O_WRONLY|O_CREAT|O_EXCL`),
//!   `append PATH` (`O_WRONLY|O_APPEND|O_CREAT`, then writes a line);
//! - on an inherited descriptor (opened by the shell before the agent started):
//!   `read-fd FD` (`pread` at 0), `write-fd FD` (`pwrite` at 0), `ftruncate FD LEN`,
//!   `mmap-write FD` (`MAP_SHARED`, `PROT_WRITE`, `M` stored at 0 and `msync`ed),
//!   `mmap-private FD` (`MAP_PRIVATE`, `PROT_WRITE`: never reaches the file),
//!   `mmap-read FD` (`MAP_PRIVATE`, `PROT_READ`, the first byte loaded);
//! - `fstate [-s] PATH...`: one line per path (directories recursively, sorted,
//!   symlinks not followed) with inode, device, mode, owner, link count, size, mtime
//!   and ctime in nanoseconds, and a hash of a regular file's content unless the path
//!   follows `-s` (stat only: reading it would itself be an attempt). Comparing two
//!   outputs shows whether anything about a file changed.

use std::ffi::CString;
use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// `renameat2` flag (`linux/fs.h`).
const RENAME_EXCHANGE: libc::c_uint = 1 << 1;
/// What `write-fd` and `append` store: visible in any content hash.
const MARK: &[u8] = b"EA-WRITTEN\n";
/// What `mmap-write` stores at offset 0 (not MARK's first byte: after a `write-fd`
/// that got through, the same byte would change nothing).
const MMAP_MARK: u8 = b'M';

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// `(0, 0)` when a libc call returned >= 0, else `(-1, errno)`.
fn result(rc: i64) -> (i64, i32) {
    if rc < 0 { (-1, errno()) } else { (0, 0) }
}

fn cstr(s: &str) -> Option<CString> {
    CString::new(s).ok()
}

/// Runs one of the file operations; `None` when `op` is not one.
pub fn run(op: &str, args: &[String]) -> Option<()> {
    if op == "fstate" {
        fstate(args);
        return Some(());
    }
    let outcome = attempt(op, args)?;
    let target = args.first().map(String::as_str).unwrap_or("");
    let (rc, errno) = outcome.unwrap_or((-1, libc::EINVAL));
    println!("EA-OP op={op} target={target} rc={rc} errno={errno}");
    Some(())
}

/// `None`: not a file operation; `Some(None)`: malformed arguments.
fn attempt(op: &str, args: &[String]) -> Option<Option<(i64, i32)>> {
    let arg = |i: usize| args.get(i).and_then(|s| cstr(s));
    let num = |i: usize, radix: u32| args.get(i).and_then(|s| i64::from_str_radix(s, radix).ok());
    let fd = || args.first().and_then(|s| s.parse::<libc::c_int>().ok());
    // Paths are NUL-terminated strings that live for the call; descriptors are the
    // caller's (inherited), passed as numbers: nothing else is dereferenced.
    Some(match op {
        "link" => arg(0).zip(arg(1)).map(|(a, b)| {
            // SAFETY: two live C strings.
            result(unsafe { libc::link(a.as_ptr(), b.as_ptr()) }.into())
        }),
        "rename" => arg(0).zip(arg(1)).map(|(a, b)| {
            // SAFETY: two live C strings.
            result(unsafe { libc::rename(a.as_ptr(), b.as_ptr()) }.into())
        }),
        "exchange" => arg(0).zip(arg(1)).map(|(a, b)| {
            // SAFETY: renameat2(AT_FDCWD, a, AT_FDCWD, b, flags) on two live C strings.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_renameat2,
                    libc::AT_FDCWD,
                    a.as_ptr(),
                    libc::AT_FDCWD,
                    b.as_ptr(),
                    RENAME_EXCHANGE,
                )
            };
            result(rc)
        }),
        "truncate" => arg(0).zip(num(1, 10)).map(|(p, len)| {
            // SAFETY: a live C string.
            result(unsafe { libc::truncate(p.as_ptr(), len) }.into())
        }),
        "chmod" => arg(0).zip(num(1, 8)).map(|(p, mode)| {
            // SAFETY: a live C string.
            result(unsafe { libc::chmod(p.as_ptr(), mode as libc::mode_t) }.into())
        }),
        "chown" => arg(0).zip(num(1, 10)).zip(num(2, 10)).map(|((p, u), g)| {
            // SAFETY: a live C string.
            result(unsafe { libc::chown(p.as_ptr(), u as libc::uid_t, g as libc::gid_t) }.into())
        }),
        "mknod" => arg(0).map(|p| {
            // SAFETY: a live C string.
            result(unsafe { libc::mknod(p.as_ptr(), libc::S_IFIFO | 0o600, 0) }.into())
        }),
        "mkdir" => arg(0).map(|p| {
            // SAFETY: a live C string.
            result(unsafe { libc::mkdir(p.as_ptr(), 0o755) }.into())
        }),
        "rmdir" => arg(0).map(|p| {
            // SAFETY: a live C string.
            result(unsafe { libc::rmdir(p.as_ptr()) }.into())
        }),
        "symlink" => arg(0).zip(arg(1)).map(|(t, p)| {
            // SAFETY: two live C strings.
            result(unsafe { libc::symlink(t.as_ptr(), p.as_ptr()) }.into())
        }),
        "create" => arg(0).map(|p| open_close(&p, libc::O_WRONLY | libc::O_CREAT, false)),
        "create-excl" => {
            arg(0).map(|p| open_close(&p, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, false))
        }
        "append" => {
            arg(0).map(|p| open_close(&p, libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT, true))
        }
        "read-fd" => fd().map(|fd| {
            let mut buf = [0u8; 4096];
            // SAFETY: reads at most buf.len() bytes into buf.
            result(unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), 0) } as i64)
        }),
        "write-fd" => fd().map(|fd| {
            // SAFETY: writes MARK's bytes, which live for the call.
            result(unsafe { libc::pwrite(fd, MARK.as_ptr().cast(), MARK.len(), 0) } as i64)
        }),
        "ftruncate" => fd().zip(num(1, 10)).map(|(fd, len)| {
            // SAFETY: plain syscall on a descriptor number.
            result(unsafe { libc::ftruncate(fd, len) }.into())
        }),
        "mmap-write" => fd().map(|fd| mmap_store(fd, libc::MAP_SHARED)),
        "mmap-private" => fd().map(|fd| mmap_store(fd, libc::MAP_PRIVATE)),
        "mmap-read" => fd().map(mmap_load),
        _ => return None,
    })
}

/// Opens `path` with `flags` (mode 0644 when created), writes MARK when `write`, closes.
fn open_close(path: &CString, flags: libc::c_int, write: bool) -> (i64, i32) {
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let fd = unsafe { libc::open(path.as_ptr(), flags, 0o644 as libc::c_uint) };
    if fd < 0 {
        return (-1, errno());
    }
    let mut out = (0, 0);
    // SAFETY: writes MARK's bytes to the descriptor we just opened.
    if write && unsafe { libc::write(fd, MARK.as_ptr().cast(), MARK.len()) } < 0 {
        out = (-1, errno());
    }
    // SAFETY: closes the descriptor we own.
    unsafe { libc::close(fd) };
    out
}

/// Maps the first page of `fd` writable with `kind`, stores MMAP_MARK at
/// offset 0 and syncs it; the mapping is removed before returning.
fn mmap_store(fd: libc::c_int, kind: libc::c_int) -> (i64, i32) {
    let len = 4096;
    // SAFETY: a fresh mapping chosen by the kernel; checked for MAP_FAILED.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            kind,
            fd,
            0,
        )
    };
    if map == libc::MAP_FAILED {
        return (-1, errno());
    }
    // SAFETY: `map` is a writable mapping of `len` bytes; the files mapped here are
    // not empty, so offset 0 is backed.
    unsafe { map.cast::<u8>().write_volatile(MMAP_MARK) };
    // SAFETY: syncs and removes the mapping made above.
    let synced = unsafe { libc::msync(map, len, libc::MS_SYNC) };
    let out = result(synced.into());
    // SAFETY: unmaps the mapping made above.
    unsafe { libc::munmap(map, len) };
    out
}

/// Maps the first page of `fd` read-only and private, loads its first byte (a read
/// of the file that no `read(2)` makes); the mapping is removed before returning.
fn mmap_load(fd: libc::c_int) -> (i64, i32) {
    let len = 4096;
    // SAFETY: a fresh mapping chosen by the kernel; checked for MAP_FAILED.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            fd,
            0,
        )
    };
    if map == libc::MAP_FAILED {
        return (-1, errno());
    }
    // SAFETY: `map` is a readable mapping of `len` bytes of a non-empty file.
    let first = unsafe { map.cast::<u8>().read_volatile() };
    std::hint::black_box(first);
    // SAFETY: unmaps the mapping made above.
    unsafe { libc::munmap(map, len) };
    (0, 0)
}

fn fstate(args: &[String]) {
    let mut stat_only = false;
    let mut out = String::new();
    for arg in args {
        if arg == "-s" {
            stat_only = true;
            continue;
        }
        describe(Path::new(arg), !stat_only, &mut out);
        stat_only = false;
    }
    print!("{out}");
}

/// Appends `path`'s line (and, for a directory, its entries' lines) to `out`.
fn describe(path: &Path, content: bool, out: &mut String) {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) => {
            let _ = writeln!(
                out,
                "{} missing errno={}",
                path.display(),
                e.raw_os_error().unwrap_or(0)
            );
            return;
        }
    };
    let _ = write!(out, "{} {}", path.display(), stat_line(&meta));
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path).map(|t| t.display().to_string());
        let _ = write!(
            out,
            " link={}",
            target.unwrap_or_else(|e| format!("errno{:?}", e.raw_os_error()))
        );
    } else if meta.is_file() && content {
        let hash = std::fs::read(path).map(|b| format!("{:016x}", fnv1a(&b)));
        let _ = write!(
            out,
            " fnv={}",
            hash.unwrap_or_else(|e| format!("errno{:?}", e.raw_os_error()))
        );
    }
    out.push('\n');
    if meta.is_dir() {
        let mut names: Vec<_> = match std::fs::read_dir(path) {
            Ok(rd) => rd.filter_map(Result::ok).map(|e| e.path()).collect(),
            Err(e) => {
                let _ = writeln!(
                    out,
                    "{}/ unreadable errno={}",
                    path.display(),
                    e.raw_os_error().unwrap_or(0)
                );
                return;
            }
        };
        names.sort();
        for name in names {
            describe(&name, content, out);
        }
    }
}

/// Everything about an inode a change could touch, in one line.
fn stat_line(m: &std::fs::Metadata) -> String {
    format!(
        "ino={} dev={} mode={:o} uid={} gid={} nlink={} size={} mtime={}.{:09} ctime={}.{:09}",
        m.ino(),
        m.dev(),
        m.mode(),
        m.uid(),
        m.gid(),
        m.nlink(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    )
}

/// 64-bit FNV-1a: enough to see that content changed (not a defence).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ea-files-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    fn go(op: &str, list: &[&str]) -> (i64, i32) {
        attempt(op, &args(list))
            .expect("a file op")
            .expect("well-formed")
    }

    #[test]
    fn path_operations_do_what_they_say() {
        let d = scratch("paths");
        let p = |n: &str| d.join(n).display().to_string();
        std::fs::write(p("a"), "a").expect("a");
        std::fs::write(p("b"), "bb").expect("b");
        assert_eq!(go("link", &[&p("a"), &p("a2")]), (0, 0));
        assert_eq!(std::fs::metadata(p("a")).expect("a").nlink(), 2);
        assert_eq!(go("exchange", &[&p("a"), &p("b")]), (0, 0));
        assert_eq!(std::fs::read(p("a")).expect("a"), b"bb");
        assert_eq!(go("rename", &[&p("b"), &p("c")]), (0, 0));
        assert_eq!(go("truncate", &[&p("c"), "0"]), (0, 0));
        assert_eq!(std::fs::metadata(p("c")).expect("c").len(), 0);
        assert_eq!(go("chmod", &[&p("c"), "600"]), (0, 0));
        assert_eq!(std::fs::metadata(p("c")).expect("c").mode() & 0o777, 0o600);
        assert_eq!(go("mknod", &[&p("fifo")]), (0, 0));
        assert_eq!(go("mkdir", &[&p("dir")]), (0, 0));
        assert_eq!(go("rmdir", &[&p("dir")]), (0, 0));
        assert_eq!(go("symlink", &[&p("c"), &p("sym")]), (0, 0));
        assert_eq!(go("create-excl", &[&p("new")]), (0, 0));
        assert_eq!(go("create-excl", &[&p("new")]), (-1, libc::EEXIST));
        assert_eq!(go("append", &[&p("new")]), (0, 0));
        assert_eq!(std::fs::read(p("new")).expect("new"), MARK);
        assert_eq!(go("rmdir", &[&p("missing")]), (-1, libc::ENOENT));
        assert_eq!(attempt("link", &args(&[&p("a")])), Some(None));
        assert_eq!(attempt("nope", &[]), None);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn descriptor_operations_reach_the_file_unless_private() {
        let d = scratch("fds");
        let path = d.join("f");
        std::fs::write(&path, "0123456789").expect("f");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file).to_string();
        assert_eq!(go("read-fd", &[&fd]), (0, 0));
        assert_eq!(go("mmap-private", &[&fd]), (0, 0));
        assert_eq!(go("mmap-read", &[&fd]), (0, 0));
        assert_eq!(std::fs::read(&path).expect("f"), b"0123456789");
        assert_eq!(go("mmap-write", &[&fd]), (0, 0));
        assert_eq!(std::fs::read(&path).expect("f"), b"M123456789");
        assert_eq!(go("write-fd", &[&fd]), (0, 0));
        assert!(std::fs::read(&path).expect("f").starts_with(MARK));
        assert_eq!(go("ftruncate", &[&fd, "3"]), (0, 0));
        assert_eq!(std::fs::metadata(&path).expect("f").len(), 3);
        assert_eq!(go("read-fd", &["987654"]), (-1, libc::EBADF));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn state_lines_change_with_content_and_metadata_only() {
        let d = scratch("state");
        std::fs::create_dir_all(d.join("sub")).expect("sub");
        std::fs::write(d.join("sub/f"), "x").expect("f");
        let describe_all = |stat_only: bool| {
            let mut out = String::new();
            describe(&d, !stat_only, &mut out);
            out
        };
        let before = describe_all(false);
        assert_eq!(before.lines().count(), 3, "{before}");
        assert!(before.contains("fnv="), "{before}");
        assert!(!describe_all(true).contains("fnv="));
        assert_eq!(describe_all(false), before);
        std::fs::write(d.join("sub/f"), "y").expect("f");
        assert_ne!(describe_all(false), before);
        let mut missing = String::new();
        describe(&d.join("none"), true, &mut missing);
        assert!(missing.ends_with("missing errno=2\n"), "{missing}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
