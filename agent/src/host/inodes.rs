//! Inodes as the kernel's hooks see them: `inode->i_ino` and `inode->i_sb->s_dev`.
//! `stat`'s `st_dev` is not the superblock's on overlayfs and btrfs, so the device
//! comes from the mount the path was reached through: `statx`'s `stx_mnt_id`, mapped
//! through the mount table (`/proc/self/mountinfo` prints each mount's `s_dev` as
//! `major:minor`). The number is `stx_ino` (`i_ino`; the tests hold both to what the
//! kernel says of an open descriptor in `/proc/self/fdinfo`).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The mount table of the agent's mount namespace.
pub const MOUNTINFO: &str = "/proc/self/mountinfo";

/// What a path names, as far as aliases care.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum InodeKind {
    Directory,
    Regular,
    Symlink,
    Other,
}

impl InodeKind {
    fn of(t: std::fs::FileType) -> Self {
        if t.is_dir() {
            Self::Directory
        } else if t.is_file() {
            Self::Regular
        } else if t.is_symlink() {
            Self::Symlink
        } else {
            Self::Other
        }
    }
}

/// One inode: the number the kernel knows it by, the mount it was reached through
/// (map it to the superblock's device with [`mount_devices`]), its kind and link count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelInode {
    pub ino: u64,
    pub mnt_id: u64,
    pub kind: InodeKind,
    pub links: u64,
}

/// One entry of a directory, not followed (a symlink is a symlink).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub name: OsString,
    pub kind: InodeKind,
    /// Hard links of a regular file (0 for other kinds: not asked).
    pub links: u64,
}

/// The kernel's encoding of a device number (`MINORBITS` = 20), as `s_dev` holds it.
pub fn kernel_dev(major: u32, minor: u32) -> Option<u32> {
    (major < 1 << 12 && minor < 1 << 20).then_some(major << 20 | minor)
}

/// Mount id -> `s_dev` of every mount in `mountinfo`'s text (`ID PARENT MAJ:MIN ...`).
pub fn mount_devices(mountinfo: &str) -> io::Result<BTreeMap<u64, u32>> {
    let bad = |line: &str| io::Error::other(format!("unexpected mountinfo line `{line}`"));
    let mut out = BTreeMap::new();
    for line in mountinfo.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.split_ascii_whitespace();
        let id = fields.next().and_then(|f| f.parse::<u64>().ok());
        let dev = fields.nth(1).and_then(|f| {
            let (major, minor) = f.split_once(':')?;
            kernel_dev(major.parse().ok()?, minor.parse().ok()?)
        });
        match (id, dev) {
            (Some(id), Some(dev)) => out.insert(id, dev),
            _ => return Err(bad(line)),
        };
    }
    Ok(out)
}

/// `ino:` and `mnt_id:` of an fdinfo file's text (the kernel's own account of an
/// open file, which the tests hold `statx`'s numbers to).
#[cfg(test)]
fn fdinfo_inode(fdinfo: &str) -> io::Result<(u64, u64)> {
    let field = |name: &str| {
        fdinfo
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
            .ok_or_else(|| io::Error::other(format!("fdinfo has no `{name}` line")))
    };
    Ok((field("ino:")?, field("mnt_id:")?))
}

/// The fields of the kernel's `struct statx` (uapi, 256 bytes) the agent reads.
#[repr(C)]
struct Statx {
    mask: u32,
    _blksize: u32,
    _attributes: u64,
    nlink: u32,
    _uid: u32,
    _gid: u32,
    mode: u16,
    _spare0: u16,
    ino: u64,
    _size_to_mtime: [u64; 11],
    _rdev_and_dev: [u32; 4],
    mnt_id: u64,
    _spare: [u64; 13],
}

const _: () = assert!(std::mem::size_of::<Statx>() == 256);
const _: () = assert!(std::mem::offset_of!(Statx, ino) == 32);
const _: () = assert!(std::mem::offset_of!(Statx, mnt_id) == 144);

/// [`super::HostKernel::kernel_inode`] on this machine, by `statx`: the inode's
/// `i_ino` and the mount it was reached through, without opening it. (An open, even
/// `O_PATH`, passes the `file_open` hook, which a pinned policy already enforces
/// against this agent too; `/proc/self/fdinfo` would say the same numbers.)
pub fn live_kernel_inode(path: &Path, follow: bool) -> io::Result<KernelInode> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut flags = libc::AT_STATX_SYNC_AS_STAT | libc::AT_NO_AUTOMOUNT;
    if !follow {
        flags |= libc::AT_SYMLINK_NOFOLLOW;
    }
    let wanted = libc::STATX_TYPE | libc::STATX_MODE | libc::STATX_NLINK | libc::STATX_INO;
    // SAFETY: Statx is plain integers; all-zero is a valid value for statx to fill.
    let mut stx: Statx = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a writable 256-byte statx buffer we own.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_statx,
            libc::AT_FDCWD,
            c_path.as_ptr(),
            flags,
            wanted | libc::STATX_MNT_ID,
            &mut stx as *mut Statx,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if stx.mask & (wanted | libc::STATX_MNT_ID) != wanted | libc::STATX_MNT_ID {
        return Err(io::Error::other(format!(
            "statx did not report the inode and mount id (mask {:#x})",
            stx.mask
        )));
    }
    let kind = match u32::from(stx.mode) & libc::S_IFMT {
        libc::S_IFDIR => InodeKind::Directory,
        libc::S_IFREG => InodeKind::Regular,
        libc::S_IFLNK => InodeKind::Symlink,
        _ => InodeKind::Other,
    };
    Ok(KernelInode {
        ino: stx.ino,
        mnt_id: stx.mnt_id,
        kind,
        links: u64::from(stx.nlink),
    })
}

/// [`super::HostKernel::dir_entries`] on this machine: at most `max` entries, and
/// whether that was all of them.
pub fn live_dir_entries(dir: &Path, max: usize) -> io::Result<(Vec<DirEntry>, bool)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        if out.len() == max {
            return Ok((out, false));
        }
        let entry = entry?;
        let kind = InodeKind::of(entry.file_type()?);
        // Only a regular file's link count matters: one lstat per file, not per entry.
        let links = match kind {
            InodeKind::Regular => entry.metadata()?.nlink(),
            _ => 0,
        };
        out.push(DirEntry {
            name: entry.file_name(),
            kind,
            links,
        });
    }
    Ok((out, true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn mountinfo_lines_give_the_kernel_device_encoding() {
        let text = "22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw\n\
                    36 22 0:31 / /sys/fs/bpf rw - bpf bpf rw\n";
        let devs = mount_devices(text).expect("parses");
        assert_eq!(devs.get(&22), Some(&(259 << 20 | 2)));
        assert_eq!(devs.get(&36), Some(&31));
        assert!(mount_devices("22 1 x:2 / /").is_err());
        assert!(
            mount_devices("22 1 4096:0 / /").is_err(),
            "major past 12 bits"
        );
        assert_eq!(
            fdinfo_inode("pos:\t0\nflags:\t010000000\nmnt_id:\t22\nino:\t1234\n").ok(),
            Some((1234, 22))
        );
        assert!(fdinfo_inode("pos:\t0\nmnt_id:\t22\n").is_err());
    }

    fn tempdir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("edgearmor-inodes-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    /// The real seam on this machine: statx's numbers are the ones the kernel gives
    /// for an open descriptor (fdinfo), the device is the one `stat` reports for a
    /// plain filesystem, hard links share both.
    #[test]
    fn live_inodes_match_fdinfo_and_stat_and_hard_links_share_them() {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = tempdir("live");
        let file = dir.join("f");
        std::fs::write(&file, b"x").expect("written");
        std::fs::hard_link(&file, dir.join("link")).expect("linked");
        std::os::unix::fs::symlink(&file, dir.join("sym")).expect("symlinked");
        let meta = std::fs::metadata(&file).expect("stat");
        let inode = live_kernel_inode(&file, true).expect("identified");
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open(&file)
            .expect("O_PATH");
        let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", opened.as_raw_fd()))
            .expect("fdinfo");
        assert_eq!(
            fdinfo_inode(&fdinfo).ok(),
            Some((inode.ino, inode.mnt_id)),
            "{fdinfo}"
        );
        let mounts = std::fs::read_to_string(MOUNTINFO).expect("mountinfo");
        let dev = mount_devices(&mounts).expect("parses")[&inode.mnt_id];
        let by_link = live_kernel_inode(&dir.join("link"), true).expect("identified");
        let followed = live_kernel_inode(&dir.join("sym"), true).expect("identified");
        let not_followed = live_kernel_inode(&dir.join("sym"), false).expect("identified");
        let dir_inode = live_kernel_inode(&dir, false).expect("identified");
        let missing = live_kernel_inode(&dir.join("missing"), true).map(|_| ());
        let (entries, complete) = live_dir_entries(&dir, 10).expect("listed");
        let (first, partial) = live_dir_entries(&dir, 1).expect("listed");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(inode.ino, meta.ino());
        assert_eq!((inode.kind, inode.links), (InodeKind::Regular, 2));
        // On a plain filesystem st_dev is s_dev (in userspace's encoding); overlayfs
        // and btrfs report another, which is why the seam asks the mount table.
        let fs_type = mounts
            .lines()
            .find(|l| l.split_ascii_whitespace().next() == Some(&inode.mnt_id.to_string()))
            .and_then(|l| l.split(" - ").nth(1)?.split_ascii_whitespace().next())
            .unwrap_or_default()
            .to_owned();
        if !matches!(fs_type.as_str(), "overlay" | "btrfs") {
            let (major, minor) = (libc::major(meta.dev()), libc::minor(meta.dev()));
            assert_eq!(
                Some(dev),
                kernel_dev(major, minor),
                "{fs_type} st_dev {:#x}",
                meta.dev()
            );
        }
        assert_eq!((by_link.ino, by_link.mnt_id), (inode.ino, inode.mnt_id));
        assert_eq!(followed.ino, inode.ino);
        assert_eq!(not_followed.kind, InodeKind::Symlink);
        assert_ne!(not_followed.ino, inode.ino);
        assert_eq!(dir_inode.kind, InodeKind::Directory);
        assert_eq!(missing.map_err(|e| e.kind()), Err(io::ErrorKind::NotFound));
        let mut seen: Vec<(String, InodeKind, u64)> = entries
            .iter()
            .map(|e| (e.name.to_string_lossy().into_owned(), e.kind, e.links))
            .collect();
        seen.sort();
        assert!(complete);
        assert_eq!(
            seen,
            [
                ("f".into(), InodeKind::Regular, 2),
                ("link".into(), InodeKind::Regular, 2),
                ("sym".into(), InodeKind::Symlink, 0)
            ]
        );
        assert_eq!((first.len(), partial), (1, false));
    }
}
