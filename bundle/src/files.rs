//! Files and directories the agent writes (fleet state, unpacked policies, the event
//! spool), made so that neither a planted symbolic link nor the process's umask can
//! change where or how they are written:
//!
//! - every open is `O_NOFOLLOW`: a symbolic link where the agent reads or writes is
//!   refused with [`FileError::Symlink`], naming it and its target, never followed;
//! - new files are created with `O_CREAT | O_EXCL` (so nothing already there, link or
//!   not, is reused) and mode [`FILE_MODE`], set again with `fchmod` because the umask
//!   may have removed bits; directories the agent creates get [`DIR_MODE`] the same way;
//! - a replaced file ([`replace_atomically`]) goes through a temporary file in the same
//!   directory: written, fsynced, renamed over the old one, and the directory fsynced,
//!   so a crash leaves the old contents or the new, never a mix.
//!
//! Directories that already exist are used as they are (their mode is the operator's),
//! but one that is a symbolic link, or that group or others may write to (where anyone
//! could plant files), is refused.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::util::{parent_dir, random_suffix};

/// Mode of every directory the agent creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file the agent creates.
pub const FILE_MODE: u32 = 0o600;

/// Why a file or directory could not be used. Each variant names the path and the
/// operation.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// A symbolic link where the agent reads or writes: refused, not followed.
    #[error(
        "refusing to {action} {}: it is a symbolic link (to {}); the agent never follows links where it writes",
        path.display(),
        target.display()
    )]
    Symlink {
        /// What was being done, e.g. `"create"`.
        action: &'static str,
        /// The link.
        path: PathBuf,
        /// Where it points (as read with readlink; empty if unreadable).
        target: PathBuf,
    },
    /// Something other than the expected kind of file is there, or a directory that
    /// group or others may write to.
    #[error("refusing to {action} {}: {reason}", path.display())]
    Unsafe {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The operating system refused.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. `"rename"`.
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
}

impl FileError {
    /// An I/O error; `ELOOP` from an `O_NOFOLLOW` open becomes [`FileError::Symlink`].
    pub fn io(action: &'static str, path: &Path, source: io::Error) -> Self {
        if source.raw_os_error() == Some(libc::ELOOP) || is_symlink(path) {
            return Self::symlink(action, path);
        }
        Self::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }

    /// [`FileError::Symlink`] for the link at `path`.
    pub fn symlink(action: &'static str, path: &Path) -> Self {
        Self::Symlink {
            action,
            path: path.to_owned(),
            target: fs::read_link(path).unwrap_or_default(),
        }
    }

    /// The operating system's error, if that is what this is.
    pub fn os_error(&self) -> Option<&io::Error> {
        match self {
            FileError::Io { source, .. } => Some(source),
            _ => None,
        }
    }

    /// Whether this is "no such file or directory".
    pub fn is_not_found(&self) -> bool {
        self.os_error()
            .is_some_and(|e| e.kind() == io::ErrorKind::NotFound)
    }
}

fn is_symlink(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// Creates directory `path` and any missing parents, each new one with mode
/// [`DIR_MODE`] whatever the umask. An existing `path` must be a real directory (not a
/// symbolic link) that neither group nor others can write to.
pub fn create_private_dir_all(path: &Path) -> Result<(), FileError> {
    const ACTION: &str = "use directory";
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => return Err(FileError::symlink(ACTION, path)),
        Ok(meta) if !meta.is_dir() => {
            return Err(FileError::Unsafe {
                action: ACTION,
                path: path.to_owned(),
                reason: "it exists and is not a directory".into(),
            });
        }
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o022 != 0 {
                return Err(FileError::Unsafe {
                    action: ACTION,
                    path: path.to_owned(),
                    reason: format!(
                        "group or others may write to it (mode {mode:04o}), so anyone could plant files there; use a directory only its owner can write (chmod go-w, or a new one: the agent creates it with mode 0700)"
                    ),
                });
            }
            return Ok(());
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(FileError::io("inspect", path, e)),
    }
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
        && fs::symlink_metadata(parent).is_err()
    {
        create_private_dir_all(parent)?;
    }
    create_private_dir(path)
}

/// Creates directory `path` (which must not exist) with mode [`DIR_MODE`].
pub fn create_private_dir(path: &Path) -> Result<(), FileError> {
    fs::DirBuilder::new()
        .mode(DIR_MODE)
        .create(path)
        .map_err(|e| FileError::io("create directory", path, e))?;
    // The umask may have removed bits of DIR_MODE.
    fs::set_permissions(path, fs::Permissions::from_mode(DIR_MODE))
        .map_err(|e| FileError::io("chmod", path, e))
}

/// Opens `path` for reading without following a symbolic link; `None` when there is
/// nothing there.
pub fn open_read(path: &Path) -> Result<Option<File>, FileError> {
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FileError::io("open", path, e)),
    }
}

/// The contents of regular file `path` (never through a symbolic link); `None` when
/// there is nothing there.
pub fn read(path: &Path) -> Result<Option<Vec<u8>>, FileError> {
    let Some(mut file) = open_read(path)? else {
        return Ok(None);
    };
    let meta = file
        .metadata()
        .map_err(|e| FileError::io("inspect", path, e))?;
    if !meta.is_file() {
        return Err(FileError::Unsafe {
            action: "read",
            path: path.to_owned(),
            reason: "it is not a regular file".into(),
        });
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| FileError::io("read", path, e))?;
    Ok(Some(bytes))
}

/// Creates file `path`, which must not exist (`O_EXCL`; a symbolic link there is
/// refused, not followed), with mode [`FILE_MODE`], open for writing (appending when
/// `append`).
pub fn create_new(path: &Path, append: bool) -> Result<File, FileError> {
    let file = OpenOptions::new()
        .write(true)
        .append(append)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| FileError::io("create", path, e))?;
    // The umask may have removed bits of FILE_MODE.
    file.set_permissions(fs::Permissions::from_mode(FILE_MODE))
        .map_err(|e| FileError::io("chmod", path, e))?;
    Ok(file)
}

/// Creates `path` (see [`create_new`]), writes `contents` and fsyncs it.
pub fn write_new_synced(path: &Path, contents: &[u8]) -> Result<(), FileError> {
    let mut file = create_new(path, false)?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| FileError::io("write", path, e))
}

/// Replaces (or creates) file `path` with `contents` so that a crash leaves the old
/// contents or the new: a temporary `.<name>.tmp-<random>` beside it, written and
/// fsynced, renamed over `path`, the directory fsynced. A symbolic link or anything
/// but a regular file at `path` is refused. `before_rename` runs between the fsync of
/// the temporary file and the rename (fault points).
pub fn replace_atomically(
    path: &Path,
    contents: &[u8],
    before_rename: impl FnOnce(),
) -> Result<(), FileError> {
    const ACTION: &str = "replace";
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => return Err(FileError::symlink(ACTION, path)),
        Ok(meta) if !meta.is_file() => {
            return Err(FileError::Unsafe {
                action: ACTION,
                path: path.to_owned(),
                reason: "it is not a regular file".into(),
            });
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(FileError::io("inspect", path, e)),
    }
    let Some(name) = path.file_name() else {
        return Err(FileError::Io {
            action: ACTION,
            path: path.to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"),
        });
    };
    let mut temp_name = OsString::from(".");
    temp_name.push(name);
    temp_name.push(".tmp-");
    temp_name.push(random_suffix().map_err(|e| FileError::Io {
        action: "name a temporary file for",
        path: path.to_owned(),
        source: io::Error::other(e.to_string()),
    })?);
    let temp = parent_dir(path).join(temp_name);
    let written = write_new_synced(&temp, contents).and_then(|()| {
        before_rename();
        fs::rename(&temp, path).map_err(|e| FileError::io("rename", &temp, e))
    });
    if let Err(e) = written {
        // Best effort: the temporary file may not even exist.
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    sync_dir(parent_dir(path))
}

/// Makes the entries of directory `dir` (creations, renames) durable. A symbolic link
/// is refused.
pub fn sync_dir(dir: &Path) -> Result<(), FileError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| FileError::io("fsync directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;
    use std::os::unix::fs::symlink;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path)
            .expect("exists")
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn new_files_and_directories_are_private() {
        let root = TestDir::new("modes");
        let dir = root.path().join("a").join("b");
        create_private_dir_all(&dir).expect("creates");
        assert_eq!(mode(&dir), DIR_MODE);
        assert_eq!(mode(&root.path().join("a")), DIR_MODE);
        let file = dir.join("f");
        write_new_synced(&file, b"x").expect("writes");
        assert_eq!(mode(&file), FILE_MODE);
        replace_atomically(&file, b"y", || {}).expect("replaces");
        assert_eq!(mode(&file), FILE_MODE);
        assert_eq!(fs::read(&file).expect("reads"), b"y");
        // Existing and private: used as is.
        create_private_dir_all(&dir).expect("exists");
    }

    #[test]
    fn symbolic_links_are_refused_and_not_followed() {
        let root = TestDir::new("links");
        let target = root.path().join("target");
        fs::write(&target, b"precious").expect("writes");
        let link = root.path().join("link");
        symlink(&target, &link).expect("links");

        let err = create_new(&link, false).expect_err("a link");
        assert!(matches!(err, FileError::Symlink { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains(&link.display().to_string())
                && message.contains(&target.display().to_string())
                && message.contains("symbolic link"),
            "{message}"
        );
        let err = replace_atomically(&link, b"evil", || {}).expect_err("a link");
        assert!(matches!(err, FileError::Symlink { .. }), "{err:?}");
        let err = read(&link).expect_err("a link");
        assert!(matches!(err, FileError::Symlink { .. }), "{err:?}");
        assert_eq!(fs::read(&target).expect("reads"), b"precious");
        assert!(
            fs::symlink_metadata(&link)
                .expect("still there")
                .file_type()
                .is_symlink()
        );

        // A directory link too, and a directory anyone may write to.
        let dir_link = root.path().join("dir-link");
        symlink(root.path(), &dir_link).expect("links");
        let err = create_private_dir_all(&dir_link).expect_err("a link");
        assert!(matches!(err, FileError::Symlink { .. }), "{err:?}");
        let err = sync_dir(&dir_link).expect_err("a link");
        assert!(matches!(err, FileError::Symlink { .. }), "{err:?}");
        let open = root.path().join("open");
        fs::create_dir(&open).expect("creates");
        fs::set_permissions(&open, fs::Permissions::from_mode(0o1777)).expect("chmod");
        let err = create_private_dir_all(&open).expect_err("world-writable");
        assert!(err.to_string().contains("mode 1777"), "{err}");
    }
}
