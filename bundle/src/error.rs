//! [`BundleError`]: every way a bundle, a key file, the applied state or an unpack
//! can fail, each carrying the offending value.

use std::io;
use std::path::PathBuf;

use crate::files::FileError;

/// Every failure of this crate. Each variant carries what was offending, so the
/// message alone says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The bundle is larger than the caller's limit; nothing of it was parsed.
    #[error("bundle of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The bundle's size in bytes.
        size: usize,
        /// The caller's limit in bytes.
        limit: usize,
    },
    /// The bytes do not start with `EABNDL<digit>\n` (see [`MAGIC`](crate::MAGIC)).
    #[error(
        "not an edgearmor bundle: starts with \"{}\", expected \"EABNDL2\\n\"",
        prefix.escape_ascii()
    )]
    NotABundle {
        /// The first (up to 8) bytes found instead.
        prefix: Vec<u8>,
    },
    /// A bundle of a format this edgearmor cannot read (a newer one, or garbage
    /// with a bundle's magic); nothing after the magic was read.
    #[error(
        "bundle format version {found} unsupported (this edgearmor writes version {supported} and reads 1 and {supported}): re-sign it with this edgearmor's `bundle create`"
    )]
    UnsupportedFormat {
        /// The format version in the magic.
        found: u8,
        /// The format [`create`](crate::create) writes.
        supported: u8,
    },
    /// A length or count in the body is above its cap in [`crate::limits`].
    #[error("bundle {what}: {found} exceeds the limit of {limit} ({limit_name})")]
    LimitExceeded {
        /// What was counted, e.g. `"files"` or `"a file name"`.
        what: &'static str,
        /// The length or count found.
        found: u64,
        /// The cap.
        limit: usize,
        /// The cap's name in [`crate::limits`].
        limit_name: &'static str,
    },
    /// A node-scoped bundle for every node (no targets, or `*`).
    #[error(
        "a node-scoped bundle must name the nodes it is for; targets {targets:?} select every node (use --scope fleet for that)"
    )]
    NodeScopeWithoutTargets {
        /// The targets found.
        targets: Vec<String>,
    },
    /// [`verify`](crate::verify) was given no key to check the signature against.
    #[error("no trusted public key to verify the bundle with")]
    NoTrustedKeys,
    /// The signature is not a valid signature of the bundle by any of the keys.
    #[error("bundle signature is not valid for any of the {keys_tried} trusted key(s)")]
    BadSignature {
        /// How many keys were tried.
        keys_tried: usize,
    },
    /// The bundle cannot be decoded: too short for a signature, or a body that is not
    /// a postcard-encoded [`BundleBody`](crate::BundleBody) (checked after the signature).
    #[error("malformed bundle: {detail}")]
    Malformed {
        /// What is wrong, in words.
        detail: String,
    },
    /// A file name of the bundle is not a plain, unique `*.yaml` / `*.yml` name.
    #[error("bundle file name {name:?}: {reason}")]
    BadFileName {
        /// The file name as found in the bundle.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The offered bundle is not newer than the one applied.
    #[error("bundle version {offered} is not newer than the applied version {applied}")]
    Rollback {
        /// The offered bundle's version.
        offered: u64,
        /// The applied bundle's version.
        applied: u64,
    },
    /// A key text does not start with the expected prefix.
    #[error("key text starts with {found:?}, expected {expected:?}")]
    WrongKeyPrefix {
        /// The prefix a key of this kind starts with.
        expected: &'static str,
        /// The first word found instead (at most 64 characters of it).
        found: String,
    },
    /// A key text has a character that is not a hex digit.
    #[error("key text: character {column} ({found:?}) is not a hex digit")]
    BadKeyHex {
        /// The 1-based character position in the key's line.
        column: usize,
        /// The character found there.
        found: char,
    },
    /// A key text has the wrong number of hex digits.
    #[error("key text has {found_hex_digits} hex digits, expected {expected_hex_digits}")]
    WrongKeyLength {
        /// The number of hex digits of a key (64, for 32 bytes).
        expected_hex_digits: usize,
        /// The number found.
        found_hex_digits: usize,
    },
    /// A public key's 32 bytes are not a usable Ed25519 point.
    #[error("public key {hex} is unusable: {reason}")]
    InvalidPublicKey {
        /// The key's bytes, in hex.
        hex: String,
        /// Why it is unusable.
        reason: &'static str,
    },
    /// The applied-state file (or a state about to be stored) is not valid.
    #[error("{}:{line}: {detail}", path.display())]
    CorruptState {
        /// The state file.
        path: PathBuf,
        /// The 1-based line with the problem (one past the last line for a missing key).
        line: usize,
        /// What is wrong, in words.
        detail: String,
    },
    /// The applied-state file is damaged or missing and so is its last good copy:
    /// nothing says which version is applied, so no bundle may be accepted.
    #[error(
        "{}: {primary}; its last good copy {}: {previous}; remove both to accept bundles again",
        path.display(),
        previous_path.display()
    )]
    StateLost {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        primary: String,
        /// The last good copy's path.
        previous_path: PathBuf,
        /// What is wrong with that.
        previous: String,
    },
    /// A file or directory could not be used safely (a symbolic link, a world-writable
    /// directory, ...) or an operation on it failed.
    #[error(transparent)]
    File(#[from] FileError),
    /// A file system operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. `"rename"`.
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The operating system's random source failed.
    #[error("OS random source failed: {detail}")]
    Random {
        /// getrandom's description of the failure.
        detail: String,
    },
}

impl BundleError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
