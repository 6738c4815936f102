//! What a path, directory or pattern in a policy must look like. Rules match the
//! resolved absolute paths the kernel sees, so anything that could never equal
//! such a path (relative, `..`, `//`, too long) is an error rather than a rule
//! that silently never fires.

use crate::diagnostic::PolicyError;
use crate::glob::Glob;

/// The longest path accepted: Linux's `PATH_MAX` (4096) less the terminating NUL,
/// the longest path the kernel resolves at all.
///
/// Also the probes' limit ([`MAX_HASHED_PATH_BYTES`]): they resolve and hash every
/// path the kernel resolves; a file whose path the kernel cannot resolve is decided
/// by its class's undecidable verdict (denied under a Block rule or block posture).
/// Both limits come from `edgearmor-probe-abi`.
pub const MAX_PATH_BYTES: usize = edgearmor_probe_abi::MAX_KERNEL_PATH_BYTES;
pub use edgearmor_probe_abi::MAX_HASHED_PATH_BYTES;

/// An executable or file path (`matchPaths[].path`, `fromSource[].path`).
pub(crate) fn check_exact_path(path: &str) -> Result<(), PolicyError> {
    check_common(path)?;
    if path.ends_with('/') {
        return Err(PolicyError::PathHasTrailingSlash {
            path: path.to_string(),
        });
    }
    check_normalized(path, path)
}

/// A directory (`matchDirectories[].dir`): absolute and ending with `/`.
pub(crate) fn check_directory(dir: &str) -> Result<(), PolicyError> {
    check_common(dir)?;
    let Some(without_slash) = dir.strip_suffix('/') else {
        return Err(PolicyError::DirectoryWithoutTrailingSlash {
            dir: dir.to_string(),
        });
    };
    if without_slash.is_empty() {
        return Ok(()); // "/": the whole file system
    }
    check_normalized(without_slash, dir)
}

/// A glob (`matchPatterns[].pattern`): absolute, and valid glob syntax.
pub(crate) fn parse_pattern(pattern: &str) -> Result<Glob, PolicyError> {
    // A path glob starts with '/'; one starting with '^' was written as a regex.
    if pattern.starts_with('^') {
        return Err(PolicyError::RegexPattern {
            pattern: pattern.to_string(),
        });
    }
    check_common(pattern)?;
    let glob = Glob::new(pattern).map_err(PolicyError::InvalidPattern)?;
    glob.kernel_form()
        .map_err(|reason| PolicyError::PatternNotEnforceable {
            pattern: pattern.to_string(),
            reason,
        })?;
    Ok(glob)
}

fn check_common(path: &str) -> Result<(), PolicyError> {
    if !path.starts_with('/') {
        return Err(PolicyError::NotAbsolute {
            path: path.to_string(),
        });
    }
    if path.contains('\0') {
        return Err(PolicyError::NulInPath {
            path: path.to_string(),
        });
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(PolicyError::PathTooLong {
            path: path.to_string(),
            limit: MAX_PATH_BYTES,
        });
    }
    Ok(())
}

/// `body` is `original` without a directory's trailing slash.
fn check_normalized(body: &str, original: &str) -> Result<(), PolicyError> {
    let bad_component = body
        .split('/')
        .skip(1) // before the leading '/'
        .any(|component| matches!(component, "" | "." | ".."));
    if bad_component {
        return Err(PolicyError::NotNormalized {
            path: original.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_paths() {
        assert_eq!(check_exact_path("/usr/sbin/sshd"), Ok(()));
        assert!(matches!(
            check_exact_path("sbin/sshd"),
            Err(PolicyError::NotAbsolute { .. })
        ));
        assert!(matches!(
            check_exact_path("/etc/"),
            Err(PolicyError::PathHasTrailingSlash { .. })
        ));
        assert!(matches!(
            check_exact_path("/"),
            Err(PolicyError::PathHasTrailingSlash { .. })
        ));
        for bad in ["/usr/../bin/ls", "/usr/./ls", "//usr/bin/ls", "/usr//ls"] {
            assert!(
                matches!(
                    check_exact_path(bad),
                    Err(PolicyError::NotNormalized { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            check_exact_path("/a\0b"),
            Err(PolicyError::NulInPath { .. })
        ));
        let long = format!("/{}", "a".repeat(MAX_PATH_BYTES));
        assert!(matches!(
            check_exact_path(&long),
            Err(PolicyError::PathTooLong { .. })
        ));
    }

    #[test]
    fn directories() {
        assert_eq!(check_directory("/"), Ok(()));
        assert_eq!(check_directory("/etc/"), Ok(()));
        assert_eq!(check_directory("/usr/local/bin/"), Ok(()));
        assert!(matches!(
            check_directory("/etc"),
            Err(PolicyError::DirectoryWithoutTrailingSlash { .. })
        ));
        assert!(matches!(
            check_directory("etc/"),
            Err(PolicyError::NotAbsolute { .. })
        ));
        assert!(matches!(
            check_directory("/etc//"),
            Err(PolicyError::NotNormalized { .. })
        ));
        assert!(matches!(
            check_directory("/etc/../"),
            Err(PolicyError::NotNormalized { .. })
        ));
    }

    #[test]
    fn patterns() {
        assert!(parse_pattern("/usr/bin/apt*").is_ok());
        assert!(matches!(
            parse_pattern("apt*"),
            Err(PolicyError::NotAbsolute { .. })
        ));
        assert!(matches!(
            parse_pattern("^/proc/[0-9]+/maps$"),
            Err(PolicyError::RegexPattern { .. })
        ));
        assert!(matches!(
            parse_pattern("/usr/bin/[a"),
            Err(PolicyError::InvalidPattern(_))
        ));
    }
}
