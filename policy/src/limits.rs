//! Every bound on the work one policy file can cause, defined once.
//!
//! A policy file is input from whoever can write to the policy directory or sign a
//! bundle, so reading it must cost bounded time and memory whatever it holds. Each
//! limit below is far above what a real policy set needs (a gateway's set is a few
//! KiB, a thousand rules are about 6,000 YAML nodes) and far below what would strain
//! a gateway. Exceeding any of them rejects the file with a diagnostic that names the
//! limit and, where there is one, the line; the other files still load.
//!
//! Aliases are counted as what they stand for: `*a` costs as many nodes and bytes as
//! the node anchored `&a`, and the cost is checked before the copy is made, so an
//! "alias bomb" (anchors of anchors, each multiplying the size) is refused after at
//! most [`MAX_YAML_NODES`] nodes of work.

/// Larger files are refused before they are read (by their size on disk, then by
/// reading at most one byte more than this).
pub const MAX_POLICY_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Collections nested deeper than this are refused, aliases included (an alias
/// nests its anchor's whole depth where it is used). Nothing in a policy is deeper
/// than ~8 levels; the bound keeps hostile input from exhausting the stack when a
/// tree is dropped.
pub const MAX_NESTING_DEPTH: usize = 64;

/// Scalars and collections of one file, over all its documents, each alias counted
/// as a full copy of its anchor (and each anchored node once more, for the copy kept
/// to expand later aliases). About 72 bytes each, so the tree stays below ~8 MB.
pub const MAX_YAML_NODES: usize = 50_000;

/// Bytes of scalar text (and explicit tags) of one file, counted like
/// [`MAX_YAML_NODES`]: aliases expand to copies of their anchor's text.
pub const MAX_YAML_SCALAR_BYTES: usize = 4 * 1024 * 1024;

/// Bytes the YAML parser may read past the last node it produced. It reads ahead
/// to the end of every token (a scalar, a run of comments), and to the end of a flow
/// collection (`[...]`, `{...}`) that could still turn out to be a mapping key (one
/// that is the whole document, as JSON is, a list item `- [...]`, or a value on a
/// line of its own), queueing its tokens (up to ~90 bytes of memory per byte of
/// text) until it ends. `key: [...]` on one line is not limited; longer lists than
/// this elsewhere are written in block style (`- item` lines).
pub const MAX_YAML_LOOKAHEAD_BYTES: usize = 64 * 1024;

/// Keys of one mapping. Policy mappings have a dozen keys at most (`metadata.labels`
/// and `annotations` a few more); the bound also bounds duplicate-key detection.
pub const MAX_MAPPING_KEYS: usize = 1024;

/// Problems reported for one file; past this one last diagnostic says how many
/// more there were.
pub const MAX_DIAGNOSTICS_PER_FILE: usize = 100;
