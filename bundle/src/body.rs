//! Reading a signed bundle body: postcard's encoding of [`BundleBody`], decoded by
//! hand so that every length is checked against the bytes that remain and against
//! its cap ([`crate::limits`]) before anything is allocated for it.
//!
//! postcard writes unsigned integers (and lengths) as LEB128 varints of at most 10
//! bytes, a string or byte vector as its length and its bytes, a sequence as its
//! length and its items, a unit enum variant as the varint of its index.

use crate::BundleError;
use crate::format::{BundleBody, BundleFile, FormatVersion, Scope};
use crate::limits::{
    MAX_BUNDLE_FILE_BYTES, MAX_BUNDLE_FILES, MAX_FILE_NAME_BYTES, MAX_TARGET_BYTES, MAX_TARGETS,
};

/// Decodes exactly one body of format `format` from `bytes` (nothing may follow).
pub(crate) fn decode_body(bytes: &[u8], format: FormatVersion) -> Result<BundleBody, BundleError> {
    let mut reader = Reader::new(bytes);
    let version = reader.varint("version")?;
    let created_unix = reader.varint("created_unix")?;
    let target_count = reader.length("targets", MAX_TARGETS, "MAX_TARGETS", 1)?;
    let mut targets = Vec::with_capacity(target_count);
    for _ in 0..target_count {
        targets.push(reader.string("a target", MAX_TARGET_BYTES, "MAX_TARGET_BYTES")?);
    }
    // A file is at least its two lengths.
    let file_count = reader.length("files", MAX_BUNDLE_FILES, "MAX_BUNDLE_FILES", 2)?;
    let mut files = Vec::with_capacity(file_count);
    for _ in 0..file_count {
        let name = reader.string("a file name", MAX_FILE_NAME_BYTES, "MAX_FILE_NAME_BYTES")?;
        let contents = reader
            .bytes("a file", MAX_BUNDLE_FILE_BYTES, "MAX_BUNDLE_FILE_BYTES")?
            .to_vec();
        files.push(BundleFile { name, contents });
    }
    let scope = match format {
        // Format 1 had no scope: such bundles are fleet-wide.
        FormatVersion::V1 => Scope::Fleet,
        FormatVersion::V2 => match reader.varint("scope")? {
            0 => Scope::Fleet,
            1 => Scope::Node,
            other => {
                return Err(BundleError::Malformed {
                    detail: format!("scope {other} is neither 0 (fleet) nor 1 (node)"),
                });
            }
        },
    };
    let rest = bytes.len() - reader.offset;
    if rest != 0 {
        return Err(BundleError::Malformed {
            detail: format!("{rest} bytes after the body"),
        });
    }
    Ok(BundleBody {
        version,
        created_unix,
        scope,
        targets,
        files,
    })
}

/// postcard's encoding read field by field, each length checked before use; also
/// the reader of unlock tokens ([`crate::unlock`]).
pub(crate) struct Reader<'b> {
    bytes: &'b [u8],
    offset: usize,
}

impl<'b> Reader<'b> {
    pub(crate) fn new(bytes: &'b [u8]) -> Self {
        Self { bytes, offset: 0 }
    }

    /// The bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.offset
    }

    /// `N` bytes as they are (postcard's encoding of a `[u8; N]`).
    pub(crate) fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], BundleError> {
        let Some(chunk) = self.bytes[self.offset..].first_chunk::<N>() else {
            return Err(self.malformed(format!(
                "{what}: {N} bytes but only {} remain",
                self.remaining()
            )));
        };
        self.offset += N;
        Ok(*chunk)
    }

    fn malformed(&self, detail: String) -> BundleError {
        BundleError::Malformed {
            detail: format!("at body byte {}: {detail}", self.offset),
        }
    }

    /// A LEB128 varint of at most 10 bytes that fits in a u64.
    pub(crate) fn varint(&mut self, what: &str) -> Result<u64, BundleError> {
        let mut value: u64 = 0;
        for index in 0..10 {
            let Some(&byte) = self.bytes.get(self.offset) else {
                return Err(self.malformed(format!("{what}: the body ends inside a number")));
            };
            self.offset += 1;
            let bits = u64::from(byte & 0x7f);
            // The tenth byte holds the top bit of a u64 only.
            if index == 9 && bits > 1 {
                return Err(self.malformed(format!("{what}: number larger than 64 bits")));
            }
            value |= bits << (7 * index);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.malformed(format!("{what}: number longer than 10 bytes")))
    }

    /// A length field: at most `limit` (named `limit_name`), and at most what the
    /// remaining bytes can hold at `min_item_bytes` per item.
    fn length(
        &mut self,
        what: &'static str,
        limit: usize,
        limit_name: &'static str,
        min_item_bytes: usize,
    ) -> Result<usize, BundleError> {
        let found = self.varint(what)?;
        if found > limit as u64 {
            return Err(BundleError::LimitExceeded {
                what,
                found,
                limit,
                limit_name,
            });
        }
        // Fits: at most `limit`, a usize.
        let length = found as usize;
        if length.saturating_mul(min_item_bytes) > self.remaining() {
            return Err(self.malformed(format!(
                "{what}: length {length} but only {} bytes remain",
                self.remaining()
            )));
        }
        Ok(length)
    }

    fn bytes(
        &mut self,
        what: &'static str,
        limit: usize,
        limit_name: &'static str,
    ) -> Result<&'b [u8], BundleError> {
        let length = self.length(what, limit, limit_name, 1)?;
        let slice = &self.bytes[self.offset..self.offset + length];
        self.offset += length;
        Ok(slice)
    }

    pub(crate) fn string(
        &mut self,
        what: &'static str,
        limit: usize,
        limit_name: &'static str,
    ) -> Result<String, BundleError> {
        let start = self.offset;
        let bytes = self.bytes(what, limit, limit_name)?;
        match std::str::from_utf8(bytes) {
            Ok(text) => Ok(text.to_owned()),
            Err(_) => Err(BundleError::Malformed {
                detail: format!("at body byte {start}: {what} is not UTF-8"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> BundleBody {
        BundleBody {
            version: u64::MAX,
            created_unix: 1_700_000_000,
            scope: Scope::Node,
            targets: vec!["gw-*".into(), "site/é".into()],
            files: vec![
                BundleFile {
                    name: "a.yaml".into(),
                    contents: vec![0, 1, 2, 255],
                },
                BundleFile {
                    name: "b.yml".into(),
                    contents: Vec::new(),
                },
            ],
        }
    }

    fn encode(body: &BundleBody) -> Vec<u8> {
        postcard::to_extend(body, Vec::new()).expect("encodes")
    }

    #[test]
    fn reads_what_postcard_writes() {
        let body = body();
        assert_eq!(
            decode_body(&encode(&body), FormatVersion::V2).expect("decodes"),
            body
        );
        let fleet = BundleBody {
            scope: Scope::Fleet,
            targets: Vec::new(),
            files: Vec::new(),
            ..body
        };
        assert_eq!(
            decode_body(&encode(&fleet), FormatVersion::V2).expect("decodes"),
            fleet
        );
    }

    #[test]
    fn format_1_has_no_scope_and_is_fleet_wide() {
        let mut bytes = encode(&body());
        bytes.pop(); // the scope, one byte
        let decoded = decode_body(&bytes, FormatVersion::V1).expect("decodes");
        assert_eq!(decoded.scope, Scope::Fleet);
        assert_eq!(decoded.files, body().files);
    }

    #[test]
    fn every_truncation_is_malformed() {
        let bytes = encode(&body());
        for cut in 0..bytes.len() {
            let err = decode_body(&bytes[..cut], FormatVersion::V2).expect_err("truncated");
            assert!(
                matches!(err, BundleError::Malformed { .. }),
                "{cut}: {err:?}"
            );
        }
    }

    #[test]
    fn lengths_beyond_the_remaining_bytes_are_refused_before_allocating() {
        // version 1, created 0, then 200 targets (within MAX_TARGETS) and no bytes.
        let err = decode_body(&[1, 0, 200, 1], FormatVersion::V2).expect_err("short");
        assert!(
            matches!(&err, BundleError::Malformed { detail } if detail.contains("only 0 bytes remain")),
            "{err:?}"
        );
        // A file claiming 1 MiB with 3 bytes left.
        let mut bytes = vec![1, 0, 0, 1, 1, b'a'];
        bytes.extend_from_slice(&[0x80, 0x80, 0x40]); // 1 << 20
        bytes.extend_from_slice(&[1, 2, 3]);
        let err = decode_body(&bytes, FormatVersion::V2).expect_err("short");
        assert!(
            matches!(&err, BundleError::Malformed { detail } if detail.contains("a file: length 1048576")),
            "{err:?}"
        );
    }

    #[test]
    fn caps_are_checked_and_named() {
        let cases: [(Vec<u8>, &str); 4] = [
            // 257 targets
            (vec![1, 0, 0x81, 0x02], "MAX_TARGETS"),
            // 300 files
            (vec![1, 0, 0, 0xac, 0x02], "MAX_BUNDLE_FILES"),
            // a 256-byte name
            (vec![1, 0, 0, 1, 0x80, 0x02], "MAX_FILE_NAME_BYTES"),
            // a file of 1 MiB + 1
            (
                vec![1, 0, 0, 1, 1, b'a', 0x81, 0x80, 0x40],
                "MAX_BUNDLE_FILE_BYTES",
            ),
        ];
        for (bytes, name) in cases {
            let err = decode_body(&bytes, FormatVersion::V2).expect_err(name);
            assert!(
                matches!(&err, BundleError::LimitExceeded { limit_name, .. } if *limit_name == name),
                "{name}: {err:?}"
            );
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn bad_numbers_and_scopes_are_malformed() {
        for (bytes, needle) in [
            (
                vec![
                    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x81, 0,
                ],
                "longer than 10 bytes",
            ),
            (
                vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
                "larger than 64 bits",
            ),
            (vec![1, 0, 0, 0, 2], "neither 0 (fleet) nor 1 (node)"),
            (vec![1, 0, 0, 0, 0, 0], "1 bytes after the body"),
            (vec![1, 0, 1, 1, 0xff, 0, 0], "a target is not UTF-8"),
        ] {
            let err = decode_body(&bytes, FormatVersion::V2).expect_err(needle);
            assert!(
                matches!(&err, BundleError::Malformed { detail } if detail.contains(needle)),
                "{needle}: {err:?}"
            );
        }
    }
}
