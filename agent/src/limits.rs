//! Bounds on the agent's own input files, defined once. Policy files have theirs in
//! `edgearmor_policy::limits`, bundles in `edgearmor_bundle::limits`.
//!
//! Each file is refused by its size on disk before it is read, and never read more
//! than one byte past its limit (a file that is not regular, or grows meanwhile), so
//! a huge or endless file costs nothing but the refusal.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// `agent.toml`: every key with a comment is about 5 KB.
pub const MAX_CONFIG_FILE_BYTES: u64 = 256 * 1024;

/// A `[[setid]]` rules file: 50 to 200 bytes a rule, so thousands of rules (the TOML
/// parser's document costs ~60 bytes of memory per byte of text).
pub const MAX_RULES_FILE_BYTES: u64 = 256 * 1024;

/// A fleet public key file (`edgearmor keygen`'s `.pub`: one line of 70 bytes).
pub const MAX_PUBLIC_KEY_FILE_BYTES: u64 = 4 * 1024;

/// Why a capped read gave no text.
#[derive(Debug, thiserror::Error)]
pub enum CappedReadError {
    #[error("{0}")]
    Io(#[from] io::Error),
    /// `bytes`: the size on disk, `None` when only reading found it too large.
    #[error(
        "the file is {}; at most {limit} bytes are read ({limit_name})",
        match bytes { Some(b) => format!("{b} bytes"), None => format!("larger than {limit} bytes") }
    )]
    TooLarge {
        bytes: Option<u64>,
        limit: u64,
        limit_name: &'static str,
    },
}

/// The UTF-8 text of `path`, if it is at most `limit` bytes (`limit_name` names the
/// constant in the error).
pub fn read_text_capped(
    path: &Path,
    limit: u64,
    limit_name: &'static str,
) -> Result<String, CappedReadError> {
    let too_large = |bytes| CappedReadError::TooLarge {
        bytes,
        limit,
        limit_name,
    };
    let file = File::open(path)?;
    let metadata = file.metadata()?;
    if metadata.is_file() && metadata.len() > limit {
        return Err(too_large(Some(metadata.len())));
    }
    let mut text = String::with_capacity(usize::try_from(metadata.len().min(limit)).unwrap_or(0));
    // One byte past the limit tells "too large" from "exactly at the limit".
    file.take(limit.saturating_add(1))
        .read_to_string(&mut text)?;
    if u64::try_from(text.len()).unwrap_or(u64::MAX) > limit {
        return Err(too_large(None));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("edgearmor-limits-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn at_the_limit_is_read_past_it_is_refused_unread() {
        let dir = scratch("cap");
        let path = dir.join("a.toml");
        std::fs::write(&path, "x".repeat(10)).expect("write");
        assert_eq!(read_text_capped(&path, 10, "TEN").expect("fits").len(), 10);
        let err = read_text_capped(&path, 9, "NINE").expect_err("too large");
        assert!(
            matches!(
                err,
                CappedReadError::TooLarge {
                    bytes: Some(10),
                    limit: 9,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "the file is 10 bytes; at most 9 bytes are read (NINE)"
        );
        // Sparse 100 MB: refused by its size, nothing read.
        let huge = dir.join("huge.toml");
        File::create(&huge)
            .and_then(|f| f.set_len(100 << 20))
            .expect("sparse file");
        assert!(matches!(
            read_text_capped(&huge, MAX_CONFIG_FILE_BYTES, "MAX_CONFIG_FILE_BYTES"),
            Err(CappedReadError::TooLarge { bytes: Some(b), .. }) if b == 100 << 20
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_endless_file_is_read_one_byte_past_the_limit() {
        let err = read_text_capped(Path::new("/dev/zero"), 4096, "LIMIT").expect_err("endless");
        assert!(
            matches!(
                err,
                CappedReadError::TooLarge {
                    bytes: None,
                    limit: 4096,
                    ..
                }
            ),
            "{err:?}"
        );
    }
}
