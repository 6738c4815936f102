//! Small helpers: hex digits, OS randomness, parent directories.

use std::path::Path;

use crate::BundleError;

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex of `bytes`.
pub(crate) fn hex_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    hex_encode_into(bytes, &mut out);
    out
}

/// Appends the lowercase hex of `bytes` to `out`.
pub(crate) fn hex_encode_into(bytes: &[u8], out: &mut String) {
    for &byte in bytes {
        out.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(HEX_DIGITS[usize::from(byte & 0x0f)]));
    }
}

/// The value of one hex digit (either case).
pub(crate) fn hex_nibble(c: char) -> Option<u8> {
    match c {
        '0'..='9' => Some(c as u8 - b'0'),
        'a'..='f' => Some(c as u8 - b'a' + 10),
        'A'..='F' => Some(c as u8 - b'A' + 10),
        _ => None,
    }
}

/// Fills `buf` from the operating system's random source.
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<(), BundleError> {
    getrandom::getrandom(buf).map_err(|e| BundleError::Random {
        detail: e.to_string(),
    })
}

/// 16 random hex digits, for names of temporary files and directories.
pub(crate) fn random_suffix() -> Result<String, BundleError> {
    let mut bytes = [0u8; 8];
    fill_random(&mut bytes)?;
    Ok(hex_encode(&bytes))
}

/// The directory a path's last component lives in (`.` for a bare name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let bytes: Vec<u8> = (0..=255).collect();
        let hex = hex_encode(&bytes);
        assert_eq!(&hex[..6], "000102");
        assert_eq!(&hex[hex.len() - 4..], "feff");
        let chars: Vec<char> = hex.chars().collect();
        let decoded: Vec<u8> = chars
            .chunks(2)
            .map(|p| {
                hex_nibble(p[0]).expect("hex digit") << 4 | hex_nibble(p[1]).expect("hex digit")
            })
            .collect();
        assert_eq!(decoded, bytes);
        assert_eq!(hex_nibble('F'), Some(15));
        assert_eq!(hex_nibble('g'), None);
    }

    #[test]
    fn parent_of_bare_name_is_current_dir() {
        assert_eq!(parent_dir(Path::new("state")), Path::new("."));
        assert_eq!(parent_dir(Path::new("/var/lib/x")), Path::new("/var/lib"));
    }
}
