//! Writing a verified bundle's files into a policy directory, replacing it whole, and
//! checking that a directory still holds exactly a bundle's files.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::path::Path;

use crate::files::{self, FileError};
use crate::format::check_file_names;
use crate::util::{parent_dir, random_suffix};
use crate::{BundleError, VerifiedBundle, fault};

/// Replaces directory `dir` with one holding exactly the bundle's files.
///
/// The files are written (and fsynced) into a new sibling `<dir>.tmp-<random>`; then
/// the old `dir`, if any, is renamed to `<dir>.trash-<random>`, the new directory is
/// renamed to `dir`, the parent directory is fsynced and the trash deleted. A reader
/// of `dir` never sees a partial set: it sees the old files, the new ones, or — for
/// the moment between the two renames — no directory (portable renames cannot swap two
/// directories). A crash in that moment leaves the old set in the trash directory and
/// none at `dir`: the caller restores `dir` from the bundle it recorded as applied
/// (see [`differences`]); the next unpack into `dir` removes leftover `<dir>.tmp-*`
/// and `<dir>.trash-*` siblings first. Calls for the same `dir` must not run
/// concurrently.
///
/// The new directory has mode 0700 and its files 0600, whatever the umask; missing
/// parents are created the same way. A symbolic link at `dir` is refused, never
/// followed. The file names are checked again (see
/// [`check_file_name`](crate::check_file_name)), so nothing is written outside the new
/// directory.
pub fn unpack(bundle: &VerifiedBundle, dir: &Path) -> Result<(), BundleError> {
    check_file_names(bundle.files())?;
    let Some(name) = dir.file_name() else {
        return Err(BundleError::io(
            "unpack into",
            dir,
            io::Error::new(io::ErrorKind::InvalidInput, "the path names no directory"),
        ));
    };
    match fs::symlink_metadata(dir) {
        Ok(meta) if meta.file_type().is_symlink() => {
            return Err(FileError::symlink("unpack into", dir).into());
        }
        Ok(meta) if !meta.is_dir() => {
            return Err(FileError::Unsafe {
                action: "unpack into",
                path: dir.to_owned(),
                reason: "it is not a directory".into(),
            }
            .into());
        }
        _ => {}
    }
    let parent = parent_dir(dir);
    files::create_private_dir_all(parent)?;
    remove_leftovers(parent, name)?;

    let suffix = random_suffix()?;
    let temp = parent.join(sibling_name(name, ".tmp-", &suffix));
    let trash = parent.join(sibling_name(name, ".trash-", &suffix));
    files::create_private_dir(&temp)?;
    if let Err(e) = fill_and_swap(bundle, dir, &temp, &trash) {
        // Best effort: the new set never became `dir`.
        let _ = fs::remove_dir_all(&temp);
        return Err(e);
    }
    // The new set is in place and durable; a trash that cannot be removed now is
    // removed by the next unpack.
    let _ = remove_any(&trash);
    Ok(())
}

/// Writes the files into `temp`, then moves `dir` to `trash` and `temp` to `dir`.
fn fill_and_swap(
    bundle: &VerifiedBundle,
    dir: &Path,
    temp: &Path,
    trash: &Path,
) -> Result<(), BundleError> {
    for file in bundle.files() {
        files::write_new_synced(&temp.join(&file.name), &file.contents)?;
    }
    files::sync_dir(temp)?;
    fault::point("unpack:files-written");
    let had_old = match fs::rename(dir, trash) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(BundleError::io("rename", dir, e)),
    };
    fault::point("unpack:after-first-rename");
    if let Err(e) = fs::rename(temp, dir) {
        if had_old {
            // Put the old set back rather than leave `dir` missing.
            let _ = fs::rename(trash, dir);
        }
        return Err(BundleError::io("rename", temp, e));
    }
    fault::point("unpack:after-second-rename");
    Ok(files::sync_dir(parent_dir(dir))?)
}

/// How directory `dir` differs from one holding exactly the bundle's files, in words
/// (`None`: it holds exactly them, byte for byte). Never follows a symbolic link.
pub fn differences(bundle: &VerifiedBundle, dir: &Path) -> Result<Option<String>, BundleError> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Some("missing".into())),
        Err(e) => return Err(BundleError::io("inspect", dir, e)),
        Ok(meta) if meta.file_type().is_symlink() => {
            let target = fs::read_link(dir).unwrap_or_default();
            return Ok(Some(format!(
                "a symbolic link (to {}), not a directory",
                target.display()
            )));
        }
        Ok(meta) if !meta.is_dir() => return Ok(Some("not a directory".into())),
        Ok(_) => {}
    }
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| BundleError::io("list", dir, e))? {
        let entry = entry.map_err(|e| BundleError::io("list", dir, e))?;
        found.push(entry.file_name());
    }
    let mut problems = Vec::new();
    for name in &found {
        if !bundle.files().iter().any(|f| OsStr::new(&f.name) == name) {
            problems.push(format!("{} is not in the bundle", name.to_string_lossy()));
        }
    }
    for file in bundle.files() {
        let path = dir.join(&file.name);
        match files::read(&path) {
            Ok(Some(contents)) if contents == file.contents => {}
            Ok(Some(_)) => problems.push(format!("{} differs", file.name)),
            Ok(None) => problems.push(format!("{} is missing", file.name)),
            Err(FileError::Symlink { .. }) => {
                problems.push(format!("{} is a symbolic link", file.name))
            }
            Err(e) => problems.push(format!("{} is unreadable ({e})", file.name)),
        }
    }
    Ok((!problems.is_empty()).then(|| problems.join(", ")))
}

/// `<name><kind><suffix>`, e.g. `policies.tmp-0123456789abcdef`.
fn sibling_name(name: &OsStr, kind: &str, suffix: &str) -> OsString {
    let mut sibling = name.to_os_string();
    sibling.push(kind);
    sibling.push(suffix);
    sibling
}

/// Removes `<name>.tmp-*` and `<name>.trash-*` in `parent`, left by an interrupted
/// unpack.
fn remove_leftovers(parent: &Path, name: &OsStr) -> Result<(), BundleError> {
    let prefixes = [
        sibling_name(name, ".tmp-", ""),
        sibling_name(name, ".trash-", ""),
    ];
    let entries = fs::read_dir(parent).map_err(|e| BundleError::io("list", parent, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| BundleError::io("list", parent, e))?;
        let entry_name = entry.file_name();
        let leftover = prefixes.iter().any(|prefix| {
            entry_name
                .as_encoded_bytes()
                .starts_with(prefix.as_encoded_bytes())
        });
        if leftover {
            let path = entry.path();
            remove_any(&path).map_err(|e| BundleError::io("remove", path, e))?;
        }
    }
    Ok(())
}

/// Removes a directory tree or a single file (or symlink) at `path`.
fn remove_any(path: &Path) -> io::Result<()> {
    if fs::symlink_metadata(path)?.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;
    use crate::{SigningKey, verify};

    /// Lists the names in `dir`, sorted (for tests and diagnostics).
    fn list(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("lists")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn bundle(files: &[(&str, &str)]) -> VerifiedBundle {
        let key = SigningKey::from_seed(&[3; 32]);
        let files: Vec<(String, Vec<u8>)> = files
            .iter()
            .map(|(n, c)| ((*n).to_owned(), c.as_bytes().to_vec()))
            .collect();
        let bytes = crate::format::sign_unchecked(&key, 1, crate::Scope::Fleet, &[], &files, 0);
        verify(&bytes, &[key.verifying_key()], 1 << 20).expect("verifies")
    }

    #[test]
    fn unpack_creates_the_directory() {
        let root = TestDir::new("unpack-new");
        let dir = root.path().join("sub").join("policies");
        unpack(&bundle(&[("a.yaml", "A"), ("b.yml", "B")]), &dir).expect("unpacks");
        assert_eq!(list(&dir), ["a.yaml", "b.yml"]);
        assert_eq!(fs::read_to_string(dir.join("a.yaml")).expect("read"), "A");
        assert_eq!(list(&root.path().join("sub")), ["policies"]);
    }

    #[test]
    fn unpack_replaces_the_directory_contents() {
        let root = TestDir::new("unpack-replace");
        let dir = root.path().join("policies");
        fs::create_dir(&dir).expect("creates");
        fs::write(dir.join("old.yaml"), "old").expect("writes");
        fs::write(dir.join("kept-name.yaml"), "old contents").expect("writes");
        unpack(
            &bundle(&[("new.yaml", "new"), ("kept-name.yaml", "new contents")]),
            &dir,
        )
        .expect("unpacks");
        assert_eq!(list(&dir), ["kept-name.yaml", "new.yaml"]);
        assert_eq!(
            fs::read_to_string(dir.join("kept-name.yaml")).expect("read"),
            "new contents"
        );
        // No temporary or trash directory is left beside it.
        assert_eq!(list(root.path()), ["policies"]);

        // An empty bundle leaves an empty directory.
        unpack(&bundle(&[]), &dir).expect("unpacks");
        assert!(list(&dir).is_empty());
        assert_eq!(list(root.path()), ["policies"]);
    }

    #[test]
    fn unpack_removes_leftovers_of_an_interrupted_run() {
        let root = TestDir::new("unpack-leftovers");
        let dir = root.path().join("policies");
        let stale_temp = root.path().join("policies.tmp-0000000000000000");
        fs::create_dir(&stale_temp).expect("creates");
        fs::write(stale_temp.join("half.yaml"), "x").expect("writes");
        fs::write(root.path().join("policies.trash-1111111111111111"), "x").expect("writes");
        fs::write(root.path().join("policies-other.yaml"), "x").expect("writes");
        unpack(&bundle(&[("a.yaml", "A")]), &dir).expect("unpacks");
        assert_eq!(list(root.path()), ["policies", "policies-other.yaml"]);
    }

    #[test]
    fn unpack_without_a_final_component_fails() {
        let err = unpack(&bundle(&[]), Path::new("/")).expect_err("no name");
        assert!(matches!(err, BundleError::Io { .. }), "{err:?}");
    }

    #[test]
    fn unpack_that_cannot_start_changes_nothing() {
        let root = TestDir::new("unpack-fail");
        let dir = root.path().join("policies");
        fs::create_dir(&dir).expect("creates");
        fs::write(dir.join("old.yaml"), "old").expect("writes");
        // The would-be parent is a file, so not even the temporary directory is made.
        let blocked = dir.join("old.yaml").join("nested");
        let err = unpack(&bundle(&[("a.yaml", "A")]), &blocked).expect_err("blocked");
        assert!(
            err.to_string()
                .contains("old.yaml: it exists and is not a directory"),
            "{err}"
        );
        assert_eq!(list(&dir), ["old.yaml"]);
    }

    #[test]
    fn differences_name_what_does_not_match_the_bundle() {
        let root = TestDir::new("differences");
        let dir = root.path().join("policies");
        let b = bundle(&[("a.yaml", "A"), ("b.yaml", "B")]);
        assert_eq!(
            differences(&b, &dir).expect("checks").as_deref(),
            Some("missing")
        );
        unpack(&b, &dir).expect("unpacks");
        assert_eq!(differences(&b, &dir).expect("checks"), None);
        fs::write(dir.join("a.yaml"), "changed").expect("writes");
        fs::write(dir.join("extra.yaml"), "x").expect("writes");
        fs::remove_file(dir.join("b.yaml")).expect("removes");
        let found = differences(&b, &dir).expect("checks").expect("differs");
        assert!(
            found.contains("a.yaml differs")
                && found.contains("b.yaml is missing")
                && found.contains("extra.yaml is not in the bundle"),
            "{found}"
        );
        fs::remove_dir_all(&dir).expect("removes");
        std::os::unix::fs::symlink(root.path(), &dir).expect("links");
        let found = differences(&b, &dir).expect("checks").expect("differs");
        assert!(found.contains("symbolic link"), "{found}");
        // Unpacking refuses the link rather than follow or silently replace it.
        let err = unpack(&b, &dir).expect_err("a link");
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }

    #[test]
    fn unpacked_directories_and_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let root = TestDir::new("unpack-modes");
        let dir = root.path().join("new-parent").join("policies");
        unpack(&bundle(&[("a.yaml", "A")]), &dir).expect("unpacks");
        let mode = |p: &Path| fs::metadata(p).expect("exists").permissions().mode() & 0o7777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&root.path().join("new-parent")), 0o700);
        assert_eq!(mode(&dir.join("a.yaml")), 0o600);
    }
}
