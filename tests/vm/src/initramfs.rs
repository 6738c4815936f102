//! [`Initramfs`]: a builder for the guest's root filesystem, written as an uncompressed `newc`
//! cpio archive (the format the kernel unpacks into its initial rootfs).
//!
//! The `newc` format is a sequence of entries, each a 110-byte ASCII header (`070701` followed
//! by thirteen 8-digit hex fields), the NUL-terminated name padded to a multiple of 4 bytes, and
//! the data padded likewise; the archive ends with an entry named `TRAILER!!!`. Every entry here
//! is owned by root with mtime 0, so the same inputs always give the same bytes.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::VmError;

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;
const PERM_MASK: u32 = 0o7777;

/// Shell lines that an `/init` script (run by busybox `sh`) can start with: install the
/// busybox applets as symlinks in `/bin`, mount proc, sysfs, devtmpfs, securityfs and bpffs,
/// and point the shell's output at the console.
pub const INIT_PRELUDE: &str = "\
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t securityfs none /sys/kernel/security
mount -t bpf none /sys/fs/bpf
exec </dev/console >/dev/console 2>&1
";

#[derive(Debug, Clone)]
enum Content {
    Dir,
    Bytes(Vec<u8>),
    HostFile(PathBuf),
    Symlink(String),
    CharDevice { major: u32, minor: u32 },
}

#[derive(Debug, Clone)]
struct Entry {
    /// Normalised path: no leading `/`, components separated by single `/`.
    path: String,
    /// Permission bits only (`0o7777`).
    perm: u32,
    content: Content,
}

/// Builder for an initramfs image (uncompressed `newc` cpio).
///
/// Guest paths may be given with or without a leading `/`. Parent directories are created
/// implicitly (mode `0755`), and every directory appears exactly once in the archive, before
/// anything inside it. Adding a path that already holds a file, symlink or device replaces it
/// in place; calling [`dir`](Self::dir) on an existing directory just sets its mode.
///
/// The builder methods never fail: a bad guest path (empty, containing `..` or NUL, or placing
/// something under a non-directory) is remembered and reported by [`write`](Self::write).
/// Host files are read when the archive is written.
///
/// ```no_run
/// # use edgearmor_vm::Initramfs;
/// # use std::path::Path;
/// let mut initramfs = Initramfs::new();
/// initramfs
///     .file_from_host("/bin/busybox", Path::new("/bin/busybox"), 0o755)
///     .file_bytes("/init", b"#!/bin/busybox sh\necho hello\n", 0o755)
///     .symlink("/bin/sh", "busybox")
///     .char_device("/dev/console", 0o600, 5, 1);
/// initramfs.write(Path::new("/tmp/initrd.cpio"))?;
/// # Ok::<(), edgearmor_vm::VmError>(())
/// ```
#[derive(Debug, Default)]
pub struct Initramfs {
    entries: Vec<Entry>,
    index: HashMap<String, usize>,
    /// The first bad guest path and why, reported by `write`.
    error: Option<(String, &'static str)>,
}

impl Initramfs {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// The usual base for a busybox guest: `/bin/busybox` from `busybox` (mode 0755), the
    /// mount points `/proc`, `/sys`, `/dev`, `/tmp` (1777), `/run`, `/root`, `/etc`, `/sbin`,
    /// `/usr/bin`, `/usr/sbin`, and the character device `/dev/console` (5:1), which the kernel
    /// opens for `/init`'s stdio before any devtmpfs is mounted.
    pub fn busybox_base(busybox: &Path) -> Self {
        let mut initramfs = Self::new();
        initramfs
            .file_from_host("/bin/busybox", busybox, 0o755)
            .dir("/sbin", 0o755)
            .dir("/usr/bin", 0o755)
            .dir("/usr/sbin", 0o755)
            .dir("/etc", 0o755)
            .dir("/root", 0o700)
            .dir("/proc", 0o555)
            .dir("/sys", 0o555)
            .dir("/run", 0o755)
            .dir("/tmp", 0o1777)
            .char_device("/dev/console", 0o600, 5, 1);
        initramfs
    }

    /// Adds the directory `guest_path` with permission bits `mode` (and its parents).
    pub fn dir(&mut self, guest_path: &str, mode: u32) -> &mut Self {
        self.add(guest_path, mode, Content::Dir)
    }

    /// Adds a regular file whose contents are read from `host_path` when the archive is
    /// written.
    pub fn file_from_host(&mut self, guest_path: &str, host_path: &Path, mode: u32) -> &mut Self {
        self.add(guest_path, mode, Content::HostFile(host_path.to_owned()))
    }

    /// Adds a regular file with the given contents.
    pub fn file_bytes(
        &mut self,
        guest_path: &str,
        bytes: impl Into<Vec<u8>>,
        mode: u32,
    ) -> &mut Self {
        self.add(guest_path, mode, Content::Bytes(bytes.into()))
    }

    /// Adds a symbolic link at `guest_path` pointing to `target` (absolute or relative).
    pub fn symlink(&mut self, guest_path: &str, target: &str) -> &mut Self {
        self.add(guest_path, 0o777, Content::Symlink(target.to_owned()))
    }

    /// Adds a character device node (e.g. `/dev/console`, 5:1). No privileges are needed: the
    /// kernel creates the node when it unpacks the archive.
    pub fn char_device(
        &mut self,
        guest_path: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> &mut Self {
        self.add(guest_path, mode, Content::CharDevice { major, minor })
    }

    /// Whether the archive already holds `guest_path` (of any kind).
    pub fn contains(&self, guest_path: &str) -> bool {
        normalise(guest_path).is_ok_and(|p| self.index.contains_key(&p))
    }

    /// Writes the archive to `path` (creating or truncating it).
    pub fn write(&self, path: &Path) -> Result<(), VmError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|e| VmError::io("creating directory", parent, e))?;
        }
        let file = fs::File::create(path).map_err(|e| VmError::io("creating", path, e))?;
        let mut out = io::BufWriter::new(file);
        self.emit(&mut out, path)?;
        out.flush().map_err(|e| VmError::io("writing", path, e))
    }

    /// The archive as bytes (for tests, or to embed elsewhere).
    pub fn to_bytes(&self) -> Result<Vec<u8>, VmError> {
        let mut out = Vec::new();
        self.emit(&mut out, Path::new("<memory>"))?;
        Ok(out)
    }

    fn emit(&self, out: &mut impl Write, dest: &Path) -> Result<(), VmError> {
        if let Some((path, reason)) = &self.error {
            return Err(VmError::InvalidGuestPath {
                path: path.clone(),
                reason,
            });
        }
        let werr = |e| VmError::io("writing", dest, e);
        for (i, entry) in self.entries.iter().enumerate() {
            let ino = u32::try_from(i + 1).unwrap_or(u32::MAX);
            let (kind, nlink, rdev, data): (u32, u32, (u32, u32), Vec<u8>) = match &entry.content {
                Content::Dir => (S_IFDIR, 2, (0, 0), Vec::new()),
                Content::Bytes(bytes) => (S_IFREG, 1, (0, 0), bytes.clone()),
                Content::HostFile(host) => {
                    let bytes = fs::read(host).map_err(|e| VmError::io("reading", host, e))?;
                    (S_IFREG, 1, (0, 0), bytes)
                }
                Content::Symlink(target) => (S_IFLNK, 1, (0, 0), target.as_bytes().to_vec()),
                Content::CharDevice { major, minor } => (S_IFCHR, 1, (*major, *minor), Vec::new()),
            };
            let size = u32::try_from(data.len()).map_err(|_| VmError::InvalidGuestPath {
                path: entry.path.clone(),
                reason: "file is larger than 4 GiB, which newc cannot hold",
            })?;
            let header = Header {
                ino,
                mode: kind | entry.perm,
                nlink,
                filesize: size,
                rdev,
            };
            write_entry(out, &header, &entry.path, &data).map_err(werr)?;
        }
        let trailer = Header {
            ino: 0,
            mode: 0,
            nlink: 1,
            filesize: 0,
            rdev: (0, 0),
        };
        write_entry(out, &trailer, "TRAILER!!!", &[]).map_err(werr)
    }

    fn add(&mut self, guest_path: &str, mode: u32, content: Content) -> &mut Self {
        if self.error.is_some() {
            return self;
        }
        if let Err(reason) = self.try_add(guest_path, mode & PERM_MASK, content) {
            self.error = Some((guest_path.to_owned(), reason));
        }
        self
    }

    fn try_add(
        &mut self,
        guest_path: &str,
        perm: u32,
        content: Content,
    ) -> Result<(), &'static str> {
        let path = normalise(guest_path)?;
        // Implicit parents, outermost first.
        for (i, _) in path.match_indices('/') {
            let parent = &path[..i];
            match self.index.get(parent) {
                Some(&at) if matches!(self.entries[at].content, Content::Dir) => {}
                Some(_) => return Err("a parent already exists and is not a directory"),
                None => self.push(parent.to_owned(), 0o755, Content::Dir),
            }
        }
        match self.index.get(&path) {
            None => self.push(path, perm, content),
            Some(&at) => {
                let existing = &mut self.entries[at];
                match (&existing.content, &content) {
                    (Content::Dir, Content::Dir) => existing.perm = perm,
                    (Content::Dir, _) => return Err("already added as a directory"),
                    _ => {
                        existing.perm = perm;
                        existing.content = content;
                    }
                }
            }
        }
        Ok(())
    }

    fn push(&mut self, path: String, perm: u32, content: Content) {
        self.index.insert(path.clone(), self.entries.len());
        self.entries.push(Entry {
            path,
            perm,
            content,
        });
    }
}

/// Turns `/a//b/./c/` into `a/b/c`, rejecting empty paths, `..`, and NUL bytes.
fn normalise(guest_path: &str) -> Result<String, &'static str> {
    if guest_path.contains('\0') {
        return Err("contains a NUL byte");
    }
    let mut parts = Vec::new();
    for part in guest_path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("contains `..`"),
            _ => parts.push(part),
        }
    }
    if parts.is_empty() {
        return Err("names the root directory, which always exists");
    }
    Ok(parts.join("/"))
}

struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    filesize: u32,
    rdev: (u32, u32),
}

/// Writes one `newc` entry: header, padded name, padded data.
fn write_entry(out: &mut impl Write, h: &Header, name: &str, data: &[u8]) -> io::Result<()> {
    let namesize = name.len() + 1;
    let fields = [
        h.ino,
        h.mode,
        0, // uid
        0, // gid
        h.nlink,
        0, // mtime
        h.filesize,
        0, // devmajor
        0, // devminor
        h.rdev.0,
        h.rdev.1,
        u32::try_from(namesize).unwrap_or(u32::MAX),
        0, // check (only used by the "070702" crc format)
    ];
    let mut header = String::with_capacity(110);
    header.push_str("070701");
    for field in fields {
        header.push_str(&format!("{field:08x}"));
    }
    out.write_all(header.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    out.write_all(&[0; 3][..pad4(110 + namesize)])?;
    out.write_all(data)?;
    out.write_all(&[0; 3][..pad4(data.len())])
}

/// Bytes needed to round `len` up to a multiple of 4.
fn pad4(len: usize) -> usize {
    (4 - len % 4) % 4
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    /// One parsed entry: (name, mode, rdev, data).
    type Parsed = (String, u32, (u32, u32), Vec<u8>);

    /// A strict `newc` reader for checking what the writer produced.
    fn parse(mut bytes: &[u8]) -> Vec<Parsed> {
        let mut out = Vec::new();
        let total = bytes.len();
        loop {
            assert!(bytes.len() >= 110, "truncated header");
            assert_eq!(
                &bytes[..6],
                b"070701",
                "bad magic at {}",
                total - bytes.len()
            );
            let field = |i: usize| {
                let s = std::str::from_utf8(&bytes[6 + 8 * i..14 + 8 * i]).expect("ascii");
                u32::from_str_radix(s, 16).expect("hex")
            };
            let mode = field(1);
            let filesize = field(6) as usize;
            let rdev = (field(9), field(10));
            let namesize = field(11) as usize;
            let name_end = 110 + namesize;
            assert_eq!(bytes[name_end - 1], 0, "name not NUL-terminated");
            let name = std::str::from_utf8(&bytes[110..name_end - 1])
                .expect("utf8 name")
                .to_owned();
            let data_start = name_end + pad4(name_end);
            assert_eq!((total - bytes.len() + data_start) % 4, 0, "data misaligned");
            let data = bytes[data_start..data_start + filesize].to_vec();
            let next = data_start + filesize + pad4(filesize);
            if name == "TRAILER!!!" {
                assert_eq!(next, bytes.len(), "bytes after the trailer");
                return out;
            }
            out.push((name, mode, rdev, data));
            bytes = &bytes[next..];
        }
    }

    fn sample() -> Initramfs {
        let mut i = Initramfs::new();
        i.file_bytes("/bin/busybox", b"ELF....".to_vec(), 0o755)
            .file_bytes("/init", "#!/bin/busybox sh\necho hi\n", 0o755)
            .symlink("/bin/sh", "busybox")
            .dir("/usr/sbin", 0o750)
            .file_bytes("etc/policies/a.yaml", "x", 0o644)
            .char_device("/dev/console", 0o600, 5, 1)
            .dir("/bin", 0o700)
            .file_bytes("/empty", Vec::new(), 0o600);
        i
    }

    #[test]
    fn round_trip() {
        let entries = parse(&sample().to_bytes().expect("archive"));
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/busybox",
                "init",
                "bin/sh",
                "usr",
                "usr/sbin",
                "etc",
                "etc/policies",
                "etc/policies/a.yaml",
                "dev",
                "dev/console",
                "empty"
            ]
        );
        let get = |n: &str| entries.iter().find(|e| e.0 == n).expect(n);
        assert_eq!(get("bin").1, S_IFDIR | 0o700, "explicit dir() updates mode");
        assert_eq!(get("usr").1, S_IFDIR | 0o755);
        assert_eq!(get("usr/sbin").1, S_IFDIR | 0o750);
        assert_eq!(get("bin/busybox").1, S_IFREG | 0o755);
        assert_eq!(get("bin/busybox").3, b"ELF....");
        assert_eq!(get("bin/sh").1, S_IFLNK | 0o777);
        assert_eq!(get("bin/sh").3, b"busybox");
        assert_eq!(get("dev/console").1, S_IFCHR | 0o600);
        assert_eq!(get("dev/console").2, (5, 1));
        assert_eq!(get("empty").3, b"");
    }

    #[test]
    fn replace_and_errors() {
        let mut i = Initramfs::new();
        i.file_bytes("/a", "one", 0o644)
            .file_bytes("/a", "two", 0o600);
        let entries = parse(&i.to_bytes().expect("archive"));
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].3, b"two");
        assert_eq!(entries[0].1, S_IFREG | 0o600);
        assert!(i.contains("a") && i.contains("/a") && !i.contains("/b"));

        for bad in ["", "/", "/a/../b", "a\0b"] {
            let mut i = Initramfs::new();
            i.file_bytes(bad, "x", 0o644);
            match i.to_bytes() {
                Err(VmError::InvalidGuestPath { path, .. }) => assert_eq!(path, bad),
                other => panic!("{bad:?}: expected InvalidGuestPath, got {other:?}"),
            }
        }
        let mut i = Initramfs::new();
        i.file_bytes("/f", "x", 0o644)
            .file_bytes("/f/g", "y", 0o644);
        assert!(matches!(
            i.to_bytes(),
            Err(VmError::InvalidGuestPath { .. })
        ));
        let mut i = Initramfs::new();
        i.dir("/d", 0o755).file_bytes("/d", "y", 0o644);
        assert!(matches!(
            i.to_bytes(),
            Err(VmError::InvalidGuestPath { .. })
        ));
    }

    #[test]
    fn host_files_are_read_at_write_time() {
        let dir = std::env::temp_dir().join(format!("edgearmor-vm-cpio-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let host = dir.join("payload");
        let mut i = Initramfs::new();
        i.file_from_host("/p", &host, 0o644);
        match i.to_bytes() {
            Err(VmError::Io { path, .. }) => assert_eq!(path, host),
            other => panic!("expected Io for the missing host file, got {other:?}"),
        }
        fs::write(&host, b"0123456789").expect("payload");
        let entries = parse(&i.to_bytes().expect("archive"));
        assert_eq!(entries[0].3, b"0123456789");
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    /// GNU cpio agrees with our reading of the format (skipped when `cpio` is not installed).
    #[test]
    fn gnu_cpio_reads_it() {
        let dir = std::env::temp_dir().join(format!("edgearmor-vm-gnu-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let archive = dir.join("initrd.cpio");
        let mut initramfs = sample();
        // No device node: extracting one needs CAP_MKNOD, which a developer may not have.
        initramfs.file_bytes("/dev/console", "not a device here", 0o600);
        initramfs.write(&archive).expect("write archive");

        let list = match Command::new("cpio")
            .args(["-t", "--quiet", "-F"])
            .arg(&archive)
            .stderr(Stdio::inherit())
            .output()
        {
            Ok(out) => out,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                eprintln!("cpio not installed: skipping the GNU cpio cross-check");
                return;
            }
            Err(e) => panic!("running cpio: {e}"),
        };
        assert!(list.status.success(), "cpio -t failed");
        let listed = String::from_utf8(list.stdout).expect("utf8");
        assert_eq!(listed.lines().count(), 12, "{listed}");
        assert!(
            listed.lines().any(|l| l == "etc/policies/a.yaml"),
            "{listed}"
        );

        let root = dir.join("root");
        fs::create_dir_all(&root).expect("extract dir");
        let status = Command::new("cpio")
            .args(["-i", "--quiet", "-d", "-F"])
            .arg(&archive)
            .current_dir(&root)
            .status()
            .expect("cpio -i");
        assert!(status.success(), "cpio -i failed");
        assert_eq!(
            fs::read(root.join("init")).expect("init"),
            b"#!/bin/busybox sh\necho hi\n"
        );
        assert_eq!(
            fs::read_link(root.join("bin/sh")).expect("symlink"),
            Path::new("busybox")
        );
        assert_eq!(
            fs::read(root.join("etc/policies/a.yaml")).expect("policy"),
            b"x"
        );
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
