//! Anti-rollback: the applied bundle's version and hash, kept in a small text file.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use crate::util::{parent_dir, random_suffix, sync_dir};
use crate::{BundleError, VerifiedBundle};

/// The bundle an agent applied last: what [`check_rollback`] compares offers with.
///
/// Its file is two lines, `version=N` and `sha256=<64 lowercase hex digits>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedState {
    /// The applied bundle's version.
    pub version: u64,
    /// The applied bundle's [`VerifiedBundle::sha256_hex`].
    pub sha256_hex: String,
}

impl AppliedState {
    /// The state recording `bundle` as applied.
    pub fn from_bundle(bundle: &VerifiedBundle) -> Self {
        Self {
            version: bundle.version(),
            sha256_hex: bundle.sha256_hex().to_owned(),
        }
    }

    /// Reads the state file at `path`: `None` when there is none (nothing applied
    /// yet); [`BundleError::CorruptState`] naming the line when it is not valid.
    pub fn load(path: &Path) -> Result<Option<Self>, BundleError> {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(BundleError::io("read", path, e)),
        };
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            let valid = &bytes[..e.valid_up_to()];
            BundleError::CorruptState {
                path: path.to_owned(),
                line: 1 + valid.iter().filter(|&&b| b == b'\n').count(),
                detail: "not UTF-8".to_owned(),
            }
        })?;
        Self::parse(path, text).map(Some)
    }

    fn parse(path: &Path, text: &str) -> Result<Self, BundleError> {
        let corrupt = |line: usize, detail: String| BundleError::CorruptState {
            path: path.to_owned(),
            line,
            detail,
        };
        let mut version = None;
        let mut sha256_hex = None;
        let mut lines = 0;
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            lines = number;
            if line.trim().is_empty() {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(corrupt(number, format!("{line:?} is not key=value")));
            };
            match key {
                "version" => {
                    if version.is_some() {
                        return Err(corrupt(number, "a second version= line".to_owned()));
                    }
                    let parsed = value.parse::<u64>().map_err(|_| {
                        corrupt(
                            number,
                            format!("version {value:?} is not an unsigned integer"),
                        )
                    })?;
                    version = Some(parsed);
                }
                "sha256" => {
                    if sha256_hex.is_some() {
                        return Err(corrupt(number, "a second sha256= line".to_owned()));
                    }
                    if !is_sha256_hex(value) {
                        return Err(corrupt(
                            number,
                            format!("sha256 {value:?} is not 64 lowercase hex digits"),
                        ));
                    }
                    sha256_hex = Some(value.to_owned());
                }
                _ => return Err(corrupt(number, format!("unknown key {key:?}"))),
            }
        }
        match (version, sha256_hex) {
            (Some(version), Some(sha256_hex)) => Ok(Self {
                version,
                sha256_hex,
            }),
            (None, _) => Err(corrupt(lines + 1, "no version= line".to_owned())),
            (_, None) => Err(corrupt(lines + 1, "no sha256= line".to_owned())),
        }
    }

    /// The file's text.
    fn to_text(&self) -> String {
        format!("version={}\nsha256={}\n", self.version, self.sha256_hex)
    }

    /// Writes the state to `path` so that a crash leaves either the old file or the
    /// new one: a temporary file in the same directory, fsynced, renamed over `path`,
    /// and the directory fsynced. Refuses a `sha256_hex` that [`load`](Self::load)
    /// would refuse.
    pub fn store(&self, path: &Path) -> Result<(), BundleError> {
        if !is_sha256_hex(&self.sha256_hex) {
            return Err(BundleError::CorruptState {
                path: path.to_owned(),
                line: 2,
                detail: format!(
                    "refusing to store sha256 {:?}: not 64 lowercase hex digits",
                    self.sha256_hex
                ),
            });
        }
        let Some(name) = path.file_name() else {
            return Err(BundleError::io(
                "store state",
                path,
                io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"),
            ));
        };
        let dir = parent_dir(path);
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(".tmp-");
        temp_name.push(random_suffix()?);
        let temp = dir.join(temp_name);
        let written = write_synced(&temp, self.to_text().as_bytes()).and_then(|()| {
            fs::rename(&temp, path).map_err(|e| BundleError::io("rename", &temp, e))
        });
        if let Err(e) = written {
            // Best effort: the temporary file may not even exist.
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        sync_dir(dir)
    }
}

/// Creates `path` (which must not exist), writes `contents` and fsyncs it.
pub(crate) fn write_synced(path: &Path, contents: &[u8]) -> Result<(), BundleError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| BundleError::io("create", path, e))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| BundleError::io("write", path, e))
}

fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Refuses an offered bundle that is not newer than the applied one
/// ([`BundleError::Rollback`]); anything goes when nothing is applied yet.
///
/// The same bundle delivered again (MQTT redelivers retained messages on every
/// reconnect) is refused too: callers that want to ignore it quietly compare
/// [`VerifiedBundle::sha256_hex`] with [`AppliedState::sha256_hex`] first.
pub fn check_rollback(
    applied: Option<&AppliedState>,
    candidate_version: u64,
) -> Result<(), BundleError> {
    match applied {
        Some(applied) if candidate_version <= applied.version => Err(BundleError::Rollback {
            offered: candidate_version,
            applied: applied.version,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;

    fn state(version: u64) -> AppliedState {
        AppliedState {
            version,
            sha256_hex: "ab".repeat(32),
        }
    }

    #[test]
    fn rollback_check() {
        check_rollback(None, 0).expect("nothing applied");
        check_rollback(Some(&state(5)), 6).expect("newer");
        for offered in [0, 4, 5] {
            let err = check_rollback(Some(&state(5)), offered).expect_err("not newer");
            assert!(
                matches!(err, BundleError::Rollback { offered: o, applied: 5 } if o == offered),
                "{err:?}"
            );
        }
        assert_eq!(
            BundleError::Rollback {
                offered: 4,
                applied: 5
            }
            .to_string(),
            "bundle version 4 is not newer than the applied version 5"
        );
    }

    #[test]
    fn store_load_round_trip() {
        let dir = TestDir::new("state");
        let path = dir.path().join("applied");
        assert_eq!(AppliedState::load(&path).expect("missing is fine"), None);
        state(3).store(&path).expect("stores");
        let text = fs::read_to_string(&path).expect("readable");
        assert_eq!(text, format!("version=3\nsha256={}\n", "ab".repeat(32)));
        assert_eq!(AppliedState::load(&path).expect("loads"), Some(state(3)));
        // Overwriting replaces, and leaves no temporary file behind.
        state(u64::MAX).store(&path).expect("stores again");
        assert_eq!(
            AppliedState::load(&path).expect("loads"),
            Some(state(u64::MAX))
        );
        let entries: Vec<_> = fs::read_dir(dir.path())
            .expect("lists")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(entries, ["applied"]);
    }

    #[test]
    fn corrupt_files_name_path_and_line() {
        let dir = TestDir::new("corrupt");
        let path = dir.path().join("applied");
        let sha = "cd".repeat(32);
        for (text, line, needle) in [
            (
                format!("version=x\nsha256={sha}\n"),
                1,
                "not an unsigned integer",
            ),
            (
                format!("version=1\nsha256={}\n", "CD".repeat(32)),
                2,
                "64 lowercase hex",
            ),
            (format!("version=1\nsha256={sha}0\n"), 2, "64 lowercase hex"),
            (
                format!("version=1\n\ncolour=red\nsha256={sha}\n"),
                3,
                "unknown key",
            ),
            (
                format!("version=1\nversion=2\nsha256={sha}\n"),
                2,
                "a second version",
            ),
            ("version=1\n".to_owned(), 2, "no sha256= line"),
            (format!("sha256={sha}\n"), 2, "no version= line"),
            (String::new(), 1, "no version= line"),
            ("garbage\n".to_owned(), 1, "is not key=value"),
        ] {
            fs::write(&path, &text).expect("writes");
            let err = AppliedState::load(&path).expect_err(&text);
            match &err {
                BundleError::CorruptState {
                    path: p,
                    line: l,
                    detail,
                } => {
                    assert_eq!((p, *l), (&path, line), "{text:?}");
                    assert!(detail.contains(needle), "{text:?}: {detail}");
                }
                other => panic!("{text:?}: unexpected {other:?}"),
            }
            let message = err.to_string();
            assert!(
                message.starts_with(&format!("{}:{line}: ", path.display())),
                "{message}"
            );
        }
        fs::write(&path, b"version=1\n\xff\n").expect("writes");
        let err = AppliedState::load(&path).expect_err("not UTF-8");
        assert!(
            matches!(err, BundleError::CorruptState { line: 2, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn store_refuses_what_load_would() {
        let dir = TestDir::new("refuse");
        let path = dir.path().join("applied");
        let bad = AppliedState {
            version: 1,
            sha256_hex: "not hex\nversion=0".to_owned(),
        };
        let err = bad.store(&path).expect_err("refused");
        assert!(matches!(err, BundleError::CorruptState { .. }), "{err:?}");
        assert!(!path.exists());
    }

    #[test]
    fn unreadable_state_is_an_io_error() {
        let dir = TestDir::new("unreadable");
        // A directory where the file should be.
        let err = AppliedState::load(dir.path()).expect_err("a directory");
        assert!(
            matches!(err, BundleError::Io { action: "read", .. }),
            "{err:?}"
        );
    }
}
