//! Bounds on the files this crate reads (password, PEM certificates and keys), defined
//! once: each is refused past its limit, never read more than one byte beyond it.

use std::io::{self, Read};
use std::path::Path;

/// A password file: its first line is the password.
pub const MAX_PASSWORD_FILE_BYTES: u64 = 4 * 1024;

/// A PEM file of certificates (a CA bundle) or a private key.
pub const MAX_PEM_FILE_BYTES: u64 = 1024 * 1024;

/// The bytes of `path` if it holds at most `limit` bytes; past that an
/// `InvalidData` error naming the limit (`limit_name`).
pub fn read_capped(path: &Path, limit: u64, limit_name: &str) -> io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    // One byte past the limit tells "too large" from "exactly at the limit".
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes ({limit_name})"),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_past_its_limit_is_refused_naming_it() {
        let dir =
            std::env::temp_dir().join(format!("edgearmor-mqtt-limits-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("f");
        std::fs::write(&path, [b'x'; 11]).expect("write");
        assert_eq!(read_capped(&path, 11, "L").expect("at the limit").len(), 11);
        let err = read_capped(&path, 10, "L").expect_err("past the limit");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(
            err.to_string().contains("larger than 10 bytes (L)"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
