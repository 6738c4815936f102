//! Signed policy bundles: how a fleet's policy files travel to agents over MQTT.
//!
//! A bundle is one byte string:
//!
//! ```text
//! ┌──────────────┬──────────────────────────────────────────────┬──────────────────┐
//! │ "EABNDL2\n"  │ postcard BundleBody                          │ Ed25519 signature│
//! │ 8 bytes      │ version: u64, created_unix: u64,             │ 64 bytes, over   │
//! │ (MAGIC)      │ targets: Vec<String>,                        │ magic + body     │
//! │              │ files: Vec<{ name: String, contents: bytes }>│                  │
//! │              │ scope: Fleet (0) | Node (1)                  │                  │
//! └──────────────┴──────────────────────────────────────────────┴──────────────────┘
//! ```
//!
//! postcard writes integers and lengths as varints and strings and byte vectors as a
//! length followed by the bytes; see [`BundleBody`]. The signature is RFC 8032 Ed25519
//! (pure, no prehash) by the fleet's signing key; agents hold one or more public keys
//! (several during a key rotation).
//!
//! Format 1 (`"EABNDL1\n"`) is the same without `scope`: whether a bundle was
//! fleet-wide or for a node came from the topic it arrived on, so a fleet bundle
//! replayed on a node's topic became node-specific. Format 2 signs the scope. Format 1
//! bundles are still read, as fleet-scoped ([`Scope::Fleet`]); any other format is
//! refused ([`BundleError::UnsupportedFormat`]).
//!
//! An agent handles a bundle in this order, stopping at the first failure:
//!
//! 1. [`verify`]: size at most the caller's limit and [`limits::MAX_BUNDLE_BYTES`],
//!    before anything is parsed ([`BundleError::TooLarge`]); the magic
//!    ([`BundleError::NotABundle`], [`BundleError::UnsupportedFormat`]); the
//!    signature, strictly, against each trusted key ([`BundleError::BadSignature`]);
//!    only then the body, which must decode exactly ([`BundleError::Malformed`]),
//!    every length checked against the bytes that remain and its cap in [`limits`]
//!    before anything is allocated ([`BundleError::LimitExceeded`]); the file names:
//!    plain, unique `*.yaml`/`*.yml` names ([`BundleError::BadFileName`],
//!    [`check_file_name`]); and a node-scoped bundle must name its targets
//!    ([`BundleError::NodeScopeWithoutTargets`]). Nothing unsigned is ever decoded.
//! 2. The caller: the signed [`VerifiedBundle::scope`] must be that of the topic the
//!    bundle arrived on.
//! 3. [`VerifiedBundle::targets_node`]: whether the bundle is for this node.
//! 4. [`check_rollback`] against the [`AppliedState`] loaded from disk: only a version
//!    above the applied one is applied ([`BundleError::Rollback`]).
//! 5. [`unpack`] into the policy directory, replacing it whole, then
//!    [`AppliedState::store`] (crash-safe, with a previous good copy) to record the new
//!    version and hash. At start, [`AppliedState::load_or_recover`] falls back to that
//!    copy when the file is damaged, and [`differences`] tells whether the policy
//!    directory still holds exactly the applied bundle's files (a crash in the middle
//!    of an unpack leaves none).
//!
//! Every file this crate writes goes through [`files`]: `O_NOFOLLOW` (a planted
//! symbolic link is refused, never followed), `O_EXCL` for new files, mode 0600 for
//! files and 0700 for directories whatever the umask. [`fault`] holds the test-only
//! crash points (debug builds).
//!
//! The same keys sign unlock tokens, which let `edgearmor unload` remove enforcement
//! from one node in locked mode: [`unlock`].
//!
//! Keys live in one-line text files (see [`parse_secret_key`], [`parse_public_key`],
//! [`generate_keypair`]):
//!
//! ```text
//! edgearmor-ed25519-secret <64 hex digits>
//! edgearmor-ed25519-public <64 hex digits>
//! ```
//!
//! ```
//! use edgearmor_bundle::{
//!     BundleBody, BundleFile, Scope, create, generate_keypair, parse_public_key,
//!     parse_secret_key, verify,
//! };
//!
//! let (secret, public) = generate_keypair()?;
//! let key = parse_secret_key(secret.as_str())?;
//! let trusted = [parse_public_key(public.as_str())?];
//!
//! let body = BundleBody {
//!     version: 7,
//!     created_unix: 1_700_000_000,
//!     targets: vec!["gw-*".to_owned()],
//!     files: vec![BundleFile {
//!         name: "block-apt.yaml".to_owned(),
//!         contents: b"kind: KubeArmorHostPolicy\n".to_vec(),
//!     }],
//!     scope: Scope::Fleet,
//! };
//! let bytes = create(&key, &body)?;
//!
//! let bundle = verify(&bytes, &trusted, 1 << 20)?;
//! assert_eq!(bundle.version(), 7);
//! assert_eq!(bundle.scope(), Scope::Fleet);
//! assert!(bundle.targets_node("site-a", "gw-12"));
//! assert!(!bundle.targets_node("site-a", "core-1"));
//! # Ok::<(), edgearmor_bundle::BundleError>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod body;
mod error;
pub mod fault;
pub mod files;
mod format;
pub mod fuzzing;
mod keys;
pub mod limits;
mod state;
#[cfg(test)]
mod test_dir;
pub mod unlock;
mod unpack;
mod util;

pub use error::BundleError;
pub use format::{
    BundleBody, BundleFile, FormatVersion, MAGIC, MAGIC_V1, SIGNATURE_LEN, Scope, VerifiedBundle,
    check_file_name, create, verify,
};
pub use keys::{
    PUBLIC_KEY_PREFIX, PublicKeyText, SECRET_KEY_PREFIX, SecretKeyText, SigningKey, VerifyingKey,
    generate_keypair, parse_public_key, parse_secret_key,
};
pub use state::{AppliedState, RecoveredState, check_rollback, previous_copy_path};
pub use unpack::{differences, unpack};
