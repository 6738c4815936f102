//! Anti-rollback: the applied bundle's version and hash (and the scope it came from),
//! kept in a small text file with a previous good copy beside it.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use crate::files::{self, replace_atomically};
use crate::{BundleError, VerifiedBundle, fault};

/// The bundle an agent applied last: what [`check_rollback`] compares offers with.
///
/// Its file is two or three lines, `version=N`, `sha256=<64 lowercase hex digits>` and
/// optionally `scope=<word>` (where the bundle came from, e.g. `fleet` or `node`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedState {
    /// The applied bundle's version.
    pub version: u64,
    /// The applied bundle's [`VerifiedBundle::sha256_hex`].
    pub sha256_hex: String,
    /// Where the bundle came from (1 to 32 lowercase ASCII letters), if recorded.
    pub scope: Option<String>,
}

/// What [`AppliedState::load_or_recover`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredState {
    /// The state in force (`None`: nothing applied yet).
    pub state: Option<AppliedState>,
    /// When the state file was damaged and replaced by its last good copy: what was
    /// wrong and what was done, in words.
    pub repaired: Option<String>,
}

/// `<path>.prev`: where [`AppliedState::store`] keeps the state it replaces.
pub fn previous_copy_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(OsString::from(".prev"));
    PathBuf::from(name)
}

impl AppliedState {
    /// The state recording `bundle` as applied (scope not recorded).
    pub fn from_bundle(bundle: &VerifiedBundle) -> Self {
        Self {
            version: bundle.version(),
            sha256_hex: bundle.sha256_hex().to_owned(),
            scope: None,
        }
    }

    /// Reads the state file at `path` (never through a symbolic link): `None` when
    /// there is none (nothing applied yet); [`BundleError::CorruptState`] naming the
    /// line when it is not valid.
    pub fn load(path: &Path) -> Result<Option<Self>, BundleError> {
        let Some(bytes) = files::read(path)? else {
            return Ok(None);
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

    /// [`load`](Self::load), falling back to the last good copy
    /// ([`previous_copy_path`]) when the file is damaged (corrupt, unreadable, a
    /// symbolic link, or missing while its copy exists): the copy then replaces it,
    /// atomically, and [`RecoveredState::repaired`] says so. When the copy is no good
    /// either, [`BundleError::StateLost`] names both problems.
    pub fn load_or_recover(path: &Path) -> Result<RecoveredState, BundleError> {
        let previous_path = previous_copy_path(path);
        let primary = match Self::load(path) {
            Ok(Some(state)) => {
                return Ok(RecoveredState {
                    state: Some(state),
                    repaired: None,
                });
            }
            Ok(None) if fs::symlink_metadata(&previous_path).is_err() => {
                return Ok(RecoveredState {
                    state: None,
                    repaired: None,
                });
            }
            // The file is gone but its copy is not: it did not vanish by itself.
            Ok(None) => format!("{}: missing", path.display()),
            Err(e) => e.to_string(),
        };
        let lost = |previous: String| BundleError::StateLost {
            path: path.to_owned(),
            primary: primary.clone(),
            previous_path: previous_path.clone(),
            previous,
        };
        let good = match Self::load(&previous_path) {
            Ok(Some(good)) => good,
            Ok(None) => return Err(lost("missing".into())),
            Err(e) => return Err(lost(e.to_string())),
        };
        // A link or a directory in the file's place goes first (never followed).
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
            Ok(_) => fs::remove_file(path),
            Err(_) => Ok(()),
        }
        .map_err(|e| BundleError::io("remove", path, e))?;
        replace_atomically(path, good.to_text().as_bytes(), || {})?;
        Ok(RecoveredState {
            repaired: Some(format!(
                "{primary}; replaced by its last good copy {} (version {})",
                previous_path.display(),
                good.version
            )),
            state: Some(good),
        })
    }

    fn parse(path: &Path, text: &str) -> Result<Self, BundleError> {
        let corrupt = |line: usize, detail: String| BundleError::CorruptState {
            path: path.to_owned(),
            line,
            detail,
        };
        let mut version = None;
        let mut sha256_hex = None;
        let mut scope = None;
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
                "scope" => {
                    if scope.is_some() {
                        return Err(corrupt(number, "a second scope= line".to_owned()));
                    }
                    if !is_scope(value) {
                        return Err(corrupt(
                            number,
                            format!("scope {value:?} is not 1 to 32 lowercase letters"),
                        ));
                    }
                    scope = Some(value.to_owned());
                }
                _ => return Err(corrupt(number, format!("unknown key {key:?}"))),
            }
        }
        match (version, sha256_hex) {
            (Some(version), Some(sha256_hex)) => Ok(Self {
                version,
                sha256_hex,
                scope,
            }),
            (None, _) => Err(corrupt(lines + 1, "no version= line".to_owned())),
            (_, None) => Err(corrupt(lines + 1, "no sha256= line".to_owned())),
        }
    }

    /// The file's text.
    fn to_text(&self) -> String {
        let mut text = format!("version={}\nsha256={}\n", self.version, self.sha256_hex);
        if let Some(scope) = &self.scope {
            text.push_str(&format!("scope={scope}\n"));
        }
        text
    }

    /// Writes the state to `path` so that a crash leaves either the old file or the
    /// new one (see [`replace_atomically`]), after keeping the state it replaces, when
    /// that is valid, as the last good copy ([`previous_copy_path`], written the same
    /// way). Refuses a `sha256_hex` or `scope` that [`load`](Self::load) would refuse,
    /// and a symbolic link at either path.
    pub fn store(&self, path: &Path) -> Result<(), BundleError> {
        let refuse = |line: usize, detail: String| {
            Err(BundleError::CorruptState {
                path: path.to_owned(),
                line,
                detail,
            })
        };
        if !is_sha256_hex(&self.sha256_hex) {
            return refuse(
                2,
                format!(
                    "refusing to store sha256 {:?}: not 64 lowercase hex digits",
                    self.sha256_hex
                ),
            );
        }
        if let Some(scope) = self.scope.as_deref().filter(|s| !is_scope(s)) {
            return refuse(
                3,
                format!("refusing to store scope {scope:?}: not 1 to 32 lowercase letters"),
            );
        }
        // A damaged current file is not a good copy: the previous one stays.
        if let Ok(Some(current)) = Self::load(path)
            && current != *self
        {
            replace_atomically(
                &previous_copy_path(path),
                current.to_text().as_bytes(),
                || {},
            )?;
            fault::point("state:previous-copied");
        }
        replace_atomically(path, self.to_text().as_bytes(), || {
            fault::point("state:before-rename")
        })?;
        Ok(())
    }
}

fn is_scope(text: &str) -> bool {
    (1..=32).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_lowercase())
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
    use crate::files::FileError;
    use crate::test_dir::TestDir;

    fn state(version: u64) -> AppliedState {
        AppliedState {
            version,
            sha256_hex: "ab".repeat(32),
            scope: None,
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
        let mut entries: Vec<_> = fs::read_dir(dir.path())
            .expect("lists")
            .map(|e| e.expect("entry").file_name())
            .collect();
        entries.sort();
        assert_eq!(entries, ["applied", "applied.prev"]);
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
            scope: None,
        };
        let err = bad.store(&path).expect_err("refused");
        assert!(matches!(err, BundleError::CorruptState { .. }), "{err:?}");
        assert!(!path.exists());
    }

    #[test]
    fn a_directory_in_place_of_the_state_is_refused() {
        let dir = TestDir::new("unreadable");
        let err = AppliedState::load(dir.path()).expect_err("a directory");
        assert!(
            matches!(err, BundleError::File(FileError::Unsafe { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn store_keeps_the_replaced_state_as_the_last_good_copy() {
        let dir = TestDir::new("previous");
        let path = dir.path().join("applied");
        let previous = previous_copy_path(&path);
        assert_eq!(previous, dir.path().join("applied.prev"));
        state(1).store(&path).expect("stores");
        assert!(!previous.exists(), "nothing to keep the first time");
        let mut two = state(2);
        two.scope = Some("node".into());
        two.store(&path).expect("stores");
        assert_eq!(
            AppliedState::load(&previous).expect("loads"),
            Some(state(1))
        );
        assert_eq!(AppliedState::load(&path).expect("loads"), Some(two.clone()));
        assert!(
            fs::read_to_string(&path)
                .expect("reads")
                .ends_with("scope=node\n")
        );
        // Storing the same state again keeps the older copy.
        two.store(&path).expect("stores");
        assert_eq!(
            AppliedState::load(&previous).expect("loads"),
            Some(state(1))
        );
        // A damaged file is not kept as a good copy.
        fs::write(&path, "garbage").expect("writes");
        state(3).store(&path).expect("stores");
        assert_eq!(
            AppliedState::load(&previous).expect("loads"),
            Some(state(1))
        );
        let mut bad = state(4);
        bad.scope = Some("No de".into());
        assert!(matches!(
            bad.store(&path),
            Err(BundleError::CorruptState { line: 3, .. })
        ));
    }

    #[test]
    fn a_damaged_state_is_replaced_by_its_last_good_copy() {
        let dir = TestDir::new("recover");
        let path = dir.path().join("applied");
        let nothing = AppliedState::load_or_recover(&path).expect("nothing applied");
        assert_eq!((nothing.state, nothing.repaired), (None, None));
        state(1).store(&path).expect("stores");
        state(2).store(&path).expect("stores");

        for damage in ["truncated", "symlink", "deleted"] {
            match damage {
                "truncated" => fs::write(&path, "version=2\nsha2").expect("writes"),
                "symlink" => {
                    fs::remove_file(&path).expect("removes");
                    std::os::unix::fs::symlink("/etc/passwd", &path).expect("links");
                }
                _ => fs::remove_file(&path).expect("removes"),
            }
            let recovered = AppliedState::load_or_recover(&path).expect(damage);
            assert_eq!(recovered.state, Some(state(1)), "{damage}");
            let repaired = recovered.repaired.expect("reported");
            assert!(
                repaired.contains(&path.display().to_string())
                    && repaired.contains("applied.prev")
                    && repaired.contains("version 1"),
                "{damage}: {repaired}"
            );
            if damage == "symlink" {
                assert!(repaired.contains("symbolic link"), "{repaired}");
            }
            // Replaced on disk: a regular file again, loading cleanly.
            assert!(fs::symlink_metadata(&path).expect("there").is_file());
            assert_eq!(AppliedState::load(&path).expect("loads"), Some(state(1)));
            state(2).store(&path).expect("stores");
        }

        fs::write(&path, "garbage").expect("writes");
        fs::write(previous_copy_path(&path), "version=x").expect("writes");
        let err = AppliedState::load_or_recover(&path).expect_err("both damaged");
        assert!(matches!(err, BundleError::StateLost { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains("is not key=value")
                && message.contains("not an unsigned integer")
                && message.contains("remove both"),
            "{message}"
        );
    }

    #[test]
    fn a_symlink_at_the_state_file_is_refused_and_not_followed() {
        let dir = TestDir::new("state-link");
        let target = dir.path().join("elsewhere");
        fs::write(&target, "precious").expect("writes");
        let path = dir.path().join("applied");
        std::os::unix::fs::symlink(&target, &path).expect("links");
        let err = state(1).store(&path).expect_err("a link");
        assert!(
            matches!(err, BundleError::File(FileError::Symlink { .. })),
            "{err:?}"
        );
        assert!(err.to_string().contains("symbolic link"), "{err}");
        let err = AppliedState::load(&path).expect_err("a link");
        assert!(
            err.to_string().contains(&target.display().to_string()),
            "{err}"
        );
        // The copy kept beside it is refused the same way.
        fs::remove_file(&path).expect("removes");
        state(1).store(&path).expect("stores");
        std::os::unix::fs::symlink(&target, previous_copy_path(&path)).expect("links");
        let err = state(2).store(&path).expect_err("a link at the copy");
        assert!(err.to_string().contains("applied.prev"), "{err}");
        assert_eq!(fs::read_to_string(&target).expect("reads"), "precious");
    }
}
