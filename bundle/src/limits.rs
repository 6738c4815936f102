//! Every bound on what one bundle may hold, defined once. [`verify`](crate::verify)
//! checks each length field of the body against the bytes that remain and against
//! these caps *before* allocating for it, and [`create`](crate::create) refuses to
//! sign a body an agent would refuse.

/// The largest bundle read at all, whatever `[fleet] bundle_max_bytes` says (the
/// agent refuses a configuration above it).
pub const MAX_BUNDLE_BYTES: usize = 16 * 1024 * 1024;

/// Policy files in one bundle.
pub const MAX_BUNDLE_FILES: usize = 256;

/// Bytes of one policy file in a bundle.
pub const MAX_BUNDLE_FILE_BYTES: usize = 1024 * 1024;

/// Bytes of one file name (Linux's `NAME_MAX`).
pub const MAX_FILE_NAME_BYTES: usize = 255;

/// Targets of one bundle.
pub const MAX_TARGETS: usize = 256;

/// Bytes of one target (`cluster/node` or a pattern of it).
pub const MAX_TARGET_BYTES: usize = 512;

/// The largest unlock token read at all ([`crate::unlock`]); a token is under 200.
pub const MAX_UNLOCK_TOKEN_BYTES: usize = 512;

/// Bytes of the node name an unlock token is for (Linux's `HOST_NAME_MAX`, and the
/// wire format's node name).
pub const MAX_UNLOCK_NODE_BYTES: usize = 64;

/// The longest an unlock token may be valid, from its issue time to its expiry:
/// 24 hours. A token is for one planned unload, not a standing key.
pub const MAX_UNLOCK_VALIDITY_SECS: u64 = 24 * 60 * 60;

/// How far a node's wall clock may be behind the signer's when a token is used
/// (the token is refused as not yet valid further behind).
pub const UNLOCK_CLOCK_SKEW_SECS: u64 = 5 * 60;

/// Used unlock tokens a node remembers (their nonces, in `state_dir`). When full,
/// the one expiring first is forgotten and every token expiring no later than it is
/// refused from then on, so a forgotten token still cannot be replayed.
pub const MAX_USED_NONCES: usize = 512;
