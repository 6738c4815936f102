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
