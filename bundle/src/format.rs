//! The bundle format: [`create`] and [`verify`], and what a verified bundle offers.

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::body::decode_body;
use crate::limits::{
    MAX_BUNDLE_BYTES, MAX_BUNDLE_FILE_BYTES, MAX_BUNDLE_FILES, MAX_FILE_NAME_BYTES,
    MAX_TARGET_BYTES, MAX_TARGETS,
};
use crate::util::hex_encode;
use crate::{BundleError, SigningKey, VerifyingKey};

/// The first 8 bytes of every bundle [`create`] makes: format version 2.
pub const MAGIC: &[u8; 8] = b"EABNDL2\n";

/// The first 8 bytes of a format 1 bundle (no scope; read as [`Scope::Fleet`]).
pub const MAGIC_V1: &[u8; 8] = b"EABNDL1\n";

/// What every magic starts with; the digit after it is the format version.
const MAGIC_STEM: &[u8; 6] = b"EABNDL";

/// Bytes of the Ed25519 signature that ends every bundle.
pub const SIGNATURE_LEN: usize = 64;

/// The body layouts [`verify`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatVersion {
    /// `EABNDL1\n`: no scope field. Still accepted, as fleet-wide bundles only.
    V1,
    /// `EABNDL2\n`: the scope is signed with the rest.
    V2,
}

impl FormatVersion {
    /// The version number, as in the magic.
    pub fn number(self) -> u8 {
        match self {
            FormatVersion::V1 => 1,
            FormatVersion::V2 => 2,
        }
    }
}

/// Whom a bundle is for, as signed: the agent applies a bundle only from the topic
/// of its scope, so a fleet-wide bundle replayed on a node's topic (or the other way
/// round) is refused instead of changing which bundles win.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// Every node (of its targets), from `<prefix>/<cluster>/policy`.
    Fleet,
    /// The nodes it names, from `<prefix>/<cluster>/<node>/policy`; wins over
    /// fleet-wide bundles. Must name its targets (not none, not `*`).
    Node,
}

impl Scope {
    /// `"fleet"` or `"node"`, as reports and the command line spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Fleet => "fleet",
            Scope::Node => "node",
        }
    }

    /// The inverse of [`Scope::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "fleet" => Some(Scope::Fleet),
            "node" => Some(Scope::Node),
            _ => None,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a bundle carries, postcard-encoded between [`MAGIC`] and the signature, in
/// this field order. Append-only: a new field goes at the end, with a new magic
/// when old agents must refuse it (format 2 appended `scope` to format 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleBody {
    /// Monotonic bundle version; an agent applies only versions above the applied one.
    pub version: u64,
    /// When the bundle was made, in seconds since the Unix epoch (informational).
    pub created_unix: u64,
    /// The nodes the bundle is for (see [`VerifiedBundle::targets_node`]); empty = all.
    pub targets: Vec<String>,
    /// The policy files.
    pub files: Vec<BundleFile>,
    /// Fleet-wide or node-specific (format 2 on).
    pub scope: Scope,
}

/// One policy file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleFile {
    /// A plain file name ending in `.yaml` or `.yml` (checked by [`verify`]).
    pub name: String,
    /// The file's bytes.
    pub contents: Vec<u8>,
}

/// A bundle whose signature, encoding, limits, scope and file names [`verify`] has
/// checked. Only [`verify`] makes one, so holding one means those checks passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedBundle {
    format: FormatVersion,
    version: u64,
    created_unix: u64,
    scope: Scope,
    targets: Vec<String>,
    files: Vec<BundleFile>,
    sha256_hex: String,
}

impl VerifiedBundle {
    /// The bundle's version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The format it was written in.
    pub fn format(&self) -> FormatVersion {
        self.format
    }

    /// When the bundle was made, in seconds since the Unix epoch.
    pub fn created_unix(&self) -> u64 {
        self.created_unix
    }

    /// Fleet-wide or node-specific, as signed ([`Scope::Fleet`] for format 1).
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// The bundle's targets, as signed.
    pub fn targets(&self) -> &[String] {
        &self.targets
    }

    /// The policy files, in the bundle's order.
    pub fn files(&self) -> &[BundleFile] {
        &self.files
    }

    /// Lowercase hex SHA-256 of the whole bundle (magic, body and signature).
    pub fn sha256_hex(&self) -> &str {
        &self.sha256_hex
    }

    /// Whether the bundle is for node `node` of cluster `cluster`, label targets
    /// never matching (a node without labels): [`Self::targets_node_with`].
    pub fn targets_node(&self, cluster: &str, node: &str) -> bool {
        self.targets_node_with(cluster, node, &|_| false)
    }

    /// Whether the bundle is for node `node` of cluster `cluster`. A bundle with no
    /// targets is for every node. Otherwise one target must match:
    ///
    /// - `*` matches every node;
    /// - a target with `=` names node labels (`site=plant-7,role=edge`): whether
    ///   it matches is `label_target`'s to say (the agent knows its labels and the
    ///   label syntax). Agents from before label targets compare such a target with
    ///   their node name, which never holds `=` in practice: they refuse the bundle
    ///   as not for them, so the format needs no new version;
    /// - a target without `/` is compared with `node`, one with `/` with
    ///   `cluster/node`;
    /// - a target ending in `*` matches when what it is compared with starts with the
    ///   part before the `*` (`gw-*`, `site-a/*`, `site-a/gw-*`); a `*` anywhere else
    ///   is an ordinary character;
    /// - any other target must be equal.
    pub fn targets_node_with(
        &self,
        cluster: &str,
        node: &str,
        label_target: &dyn Fn(&str) -> bool,
    ) -> bool {
        if self.targets.is_empty() {
            return true;
        }
        let qualified = format!("{cluster}/{node}");
        self.targets.iter().any(|target| {
            if target.contains('=') {
                return label_target(target);
            }
            let subject = if target.contains('/') {
                qualified.as_str()
            } else {
                node
            };
            match target.strip_suffix('*') {
                Some(prefix) => subject.starts_with(prefix),
                None => subject == target,
            }
        })
    }
}

/// `body`, signed with `key`: a format 2 bundle.
///
/// Refuses (with the error [`verify`] would give an agent) a body that no agent
/// accepts: a bad or repeated file name, more files, targets or bytes than
/// [`crate::limits`] allows, or a node-scoped body without targets. The policies
/// themselves are not checked here (`edgearmor bundle create` does that).
pub fn create(key: &SigningKey, body: &BundleBody) -> Result<Vec<u8>, BundleError> {
    check_body(body)?;
    let encoded = encode(body);
    if encoded.len() + SIGNATURE_LEN > MAX_BUNDLE_BYTES {
        return Err(BundleError::TooLarge {
            size: encoded.len() + SIGNATURE_LEN,
            limit: MAX_BUNDLE_BYTES,
        });
    }
    Ok(sign_bundle(key, encoded))
}

/// [`MAGIC`] and the postcard encoding of `body`, unchecked.
pub(crate) fn encode(body: &BundleBody) -> Vec<u8> {
    postcard::to_extend(body, MAGIC.to_vec())
        // postcard's Vec flavor cannot fail to grow, and BundleBody has only integers,
        // strings, sequences of known length and a unit enum, so encoding cannot fail.
        .expect("postcard encodes a BundleBody into a Vec infallibly")
}

/// Appends `key`'s signature of `signed` (magic and body) to it.
pub(crate) fn sign_bundle(key: &SigningKey, mut signed: Vec<u8>) -> Vec<u8> {
    let signature = key.sign(&signed);
    signed.extend_from_slice(&signature);
    signed
}

/// Checks a bundle and returns what it carries. In order, without looking further
/// after the first failure:
///
/// 1. size: at most `max_bytes` and [`MAX_BUNDLE_BYTES`], else
///    [`BundleError::TooLarge`] (nothing parsed);
/// 2. magic: `EABNDL<digit>\n`, else [`BundleError::NotABundle`]; format 2 ([`MAGIC`])
///    or 1 ([`MAGIC_V1`]), else [`BundleError::UnsupportedFormat`]; at least a
///    signature follows, else [`BundleError::Malformed`];
/// 3. signature: valid (RFC 8032 strict: canonical, no small-order parts) for one of
///    `keys`, else [`BundleError::BadSignature`] ([`BundleError::NoTrustedKeys`] for
///    none);
/// 4. body: exactly one [`BundleBody`] of its format, every length within the
///    remaining bytes ([`BundleError::Malformed`]) and its cap in [`crate::limits`]
///    ([`BundleError::LimitExceeded`]), checked before anything is allocated;
/// 5. file names: see [`check_file_name`], and unique, else
///    [`BundleError::BadFileName`]; a node-scoped bundle names its targets, else
///    [`BundleError::NodeScopeWithoutTargets`].
///
/// Whether the version is newer than the applied one is the caller's check
/// ([`check_rollback`](crate::check_rollback)), and so are
/// [`VerifiedBundle::targets_node`] and whether the scope fits where the bundle came
/// from.
pub fn verify(
    bytes: &[u8],
    keys: &[VerifyingKey],
    max_bytes: usize,
) -> Result<VerifiedBundle, BundleError> {
    let limit = max_bytes.min(MAX_BUNDLE_BYTES);
    if bytes.len() > limit {
        return Err(BundleError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    let format = format_of(bytes)?;
    let after_magic = &bytes[MAGIC.len()..];
    let Some((_, signature)) = after_magic.split_last_chunk::<SIGNATURE_LEN>() else {
        return Err(BundleError::Malformed {
            detail: format!(
                "{} bytes after the magic, too few for the {SIGNATURE_LEN}-byte signature",
                after_magic.len()
            ),
        });
    };
    let signed = &bytes[..bytes.len() - SIGNATURE_LEN];
    if keys.is_empty() {
        return Err(BundleError::NoTrustedKeys);
    }
    let signature = ed25519_dalek::Signature::from_bytes(signature);
    if !keys
        .iter()
        .any(|key| key.0.verify_strict(signed, &signature).is_ok())
    {
        return Err(BundleError::BadSignature {
            keys_tried: keys.len(),
        });
    }
    let body = decode_body(&signed[MAGIC.len()..], format)?;
    check_file_names(&body.files)?;
    check_scope(&body)?;
    Ok(VerifiedBundle {
        format,
        version: body.version,
        created_unix: body.created_unix,
        scope: body.scope,
        targets: body.targets,
        files: body.files,
        sha256_hex: hex_encode(&Sha256::digest(bytes)),
    })
}

/// The format named by the magic at the start of `bytes`.
fn format_of(bytes: &[u8]) -> Result<FormatVersion, BundleError> {
    let not_a_bundle = || BundleError::NotABundle {
        prefix: bytes.iter().take(MAGIC.len()).copied().collect(),
    };
    let Some(magic) = bytes.first_chunk::<8>() else {
        return Err(not_a_bundle());
    };
    if !magic.starts_with(MAGIC_STEM) || magic[7] != b'\n' || !magic[6].is_ascii_digit() {
        return Err(not_a_bundle());
    }
    match magic {
        m if m == MAGIC => Ok(FormatVersion::V2),
        m if m == MAGIC_V1 => Ok(FormatVersion::V1),
        m => Err(BundleError::UnsupportedFormat {
            found: m[6] - b'0',
            supported: FormatVersion::V2.number(),
        }),
    }
}

/// What [`verify`] checks of a decoded body, for [`create`] to check first.
fn check_body(body: &BundleBody) -> Result<(), BundleError> {
    let exceeds = |what, found: usize, limit, limit_name| BundleError::LimitExceeded {
        what,
        found: found as u64,
        limit,
        limit_name,
    };
    if body.targets.len() > MAX_TARGETS {
        return Err(exceeds(
            "targets",
            body.targets.len(),
            MAX_TARGETS,
            "MAX_TARGETS",
        ));
    }
    if let Some(t) = body.targets.iter().find(|t| t.len() > MAX_TARGET_BYTES) {
        return Err(exceeds(
            "a target",
            t.len(),
            MAX_TARGET_BYTES,
            "MAX_TARGET_BYTES",
        ));
    }
    if body.files.len() > MAX_BUNDLE_FILES {
        return Err(exceeds(
            "files",
            body.files.len(),
            MAX_BUNDLE_FILES,
            "MAX_BUNDLE_FILES",
        ));
    }
    for file in &body.files {
        if file.name.len() > MAX_FILE_NAME_BYTES {
            return Err(exceeds(
                "a file name",
                file.name.len(),
                MAX_FILE_NAME_BYTES,
                "MAX_FILE_NAME_BYTES",
            ));
        }
        if file.contents.len() > MAX_BUNDLE_FILE_BYTES {
            return Err(exceeds(
                "a file",
                file.contents.len(),
                MAX_BUNDLE_FILE_BYTES,
                "MAX_BUNDLE_FILE_BYTES",
            ));
        }
    }
    check_file_names(&body.files)?;
    check_scope(body)
}

/// A node-scoped bundle names the nodes it is for: with no targets, or `*`, it would
/// be a fleet-wide bundle that wins over the fleet's.
fn check_scope(body: &BundleBody) -> Result<(), BundleError> {
    let for_every_node = body.targets.is_empty() || body.targets.iter().any(|t| t == "*");
    if body.scope == Scope::Node && for_every_node {
        return Err(BundleError::NodeScopeWithoutTargets {
            targets: body.targets.clone(),
        });
    }
    Ok(())
}

/// Checks that `name` can be written as a file of a policy directory: not empty, no
/// `/`, `\`, NUL or other control character, no `..`, not hidden (leading `.`), and
/// ending in `.yaml` or `.yml`.
pub fn check_file_name(name: &str) -> Result<(), BundleError> {
    let reason = if name.is_empty() {
        Some("is empty")
    } else if name.contains('/') {
        Some("contains '/'")
    } else if name.contains('\\') {
        Some("contains '\\'")
    } else if name.contains("..") {
        Some("contains \"..\"")
    } else if name.chars().any(char::is_control) {
        Some("contains a control character")
    } else if name.starts_with('.') {
        Some("starts with '.'")
    } else if !(name.ends_with(".yaml") || name.ends_with(".yml")) {
        Some("does not end in .yaml or .yml")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(BundleError::BadFileName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// [`check_file_name`] for each file, and no name twice.
pub(crate) fn check_file_names(files: &[BundleFile]) -> Result<(), BundleError> {
    let mut seen = HashSet::with_capacity(files.len());
    for file in files {
        check_file_name(&file.name)?;
        if !seen.insert(file.name.as_str()) {
            return Err(BundleError::BadFileName {
                name: file.name.clone(),
                reason: "appears twice",
            });
        }
    }
    Ok(())
}

/// A bundle of `files` signed without [`create`]'s checks, for tests that need
/// bundles agents refuse.
#[cfg(test)]
pub(crate) fn sign_unchecked(
    key: &SigningKey,
    version: u64,
    scope: Scope,
    targets: &[String],
    files: &[(String, Vec<u8>)],
    created_unix: u64,
) -> Vec<u8> {
    let body = BundleBody {
        version,
        created_unix,
        targets: targets.to_vec(),
        files: files
            .iter()
            .map(|(name, contents)| BundleFile {
                name: name.clone(),
                contents: contents.clone(),
            })
            .collect(),
        scope,
    };
    sign_bundle(key, encode(&body))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 1 << 20;

    /// A fleet-scoped bundle, unchecked.
    fn signed(
        key: &SigningKey,
        version: u64,
        targets: &[String],
        files: &[(String, Vec<u8>)],
        created_unix: u64,
    ) -> Vec<u8> {
        sign_unchecked(key, version, Scope::Fleet, targets, files, created_unix)
    }

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_seed(&[seed; 32])
    }

    fn files() -> Vec<(String, Vec<u8>)> {
        vec![
            (
                "block-apt.yaml".to_owned(),
                b"kind: KubeArmorHostPolicy\n".to_vec(),
            ),
            ("audit.yml".to_owned(), Vec::new()),
        ]
    }

    fn bundle_with_targets(targets: &[&str]) -> VerifiedBundle {
        let targets: Vec<String> = targets.iter().map(|t| (*t).to_owned()).collect();
        let bytes = signed(&key(1), 1, &targets, &files(), 0);
        verify(&bytes, &[key(1).verifying_key()], LIMIT).expect("verifies")
    }

    #[test]
    fn round_trip() {
        let targets = vec!["gw-*".to_owned(), "site-a/edge-7".to_owned()];
        let bytes = signed(&key(1), 42, &targets, &files(), 1_700_000_000);
        assert_eq!(&bytes[..8], b"EABNDL2\n");
        let bundle = verify(&bytes, &[key(1).verifying_key()], LIMIT).expect("verifies");
        assert_eq!(bundle.version(), 42);
        assert_eq!(bundle.created_unix(), 1_700_000_000);
        assert_eq!(bundle.targets(), targets.as_slice());
        let names: Vec<&str> = bundle.files().iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["block-apt.yaml", "audit.yml"]);
        assert_eq!(bundle.files()[0].contents, b"kind: KubeArmorHostPolicy\n");
        assert_eq!(bundle.sha256_hex(), hex_encode(&Sha256::digest(&bytes)));
        assert_eq!(bundle.sha256_hex().len(), 64);
    }

    #[test]
    fn any_trusted_key_verifies() {
        let bytes = signed(&key(2), 1, &[], &files(), 0);
        let keys = [key(1).verifying_key(), key(2).verifying_key()];
        verify(&bytes, &keys, LIMIT).expect("second key verifies");
    }

    #[test]
    fn exact_limit_is_accepted() {
        let bytes = signed(&key(1), 1, &[], &files(), 0);
        verify(&bytes, &[key(1).verifying_key()], bytes.len()).expect("at the limit");
    }

    #[test]
    fn tampered_byte_is_a_bad_signature() {
        let bytes = signed(&key(1), 7, &[], &files(), 0);
        let keys = [key(1).verifying_key()];
        // Every byte of the body and of the signature matters.
        for i in MAGIC.len()..bytes.len() {
            let mut tampered = bytes.clone();
            tampered[i] ^= 0x01;
            let err = verify(&tampered, &keys, LIMIT).expect_err("tampered");
            assert!(
                matches!(err, BundleError::BadSignature { keys_tried: 1 }),
                "byte {i}: {err:?}"
            );
        }
    }

    #[test]
    fn signature_by_another_key_is_bad() {
        let bytes = signed(&key(2), 1, &[], &files(), 0);
        let err = verify(&bytes, &[key(1).verifying_key()], LIMIT).expect_err("other key");
        assert!(
            matches!(err, BundleError::BadSignature { keys_tried: 1 }),
            "{err:?}"
        );
        let err = verify(&bytes, &[], LIMIT).expect_err("no keys");
        assert!(matches!(err, BundleError::NoTrustedKeys), "{err:?}");
    }

    #[test]
    fn oversize_is_refused_before_parsing() {
        // Not even a bundle: the size check comes first, so the magic is never read.
        let garbage = vec![0xffu8; 101];
        let err = verify(&garbage, &[key(1).verifying_key()], 100).expect_err("too large");
        assert!(
            matches!(
                err,
                BundleError::TooLarge {
                    size: 101,
                    limit: 100
                }
            ),
            "{err:?}"
        );
        let bytes = signed(&key(1), 1, &[], &files(), 0);
        let err = verify(&bytes, &[key(1).verifying_key()], bytes.len() - 1).expect_err("big");
        assert!(matches!(err, BundleError::TooLarge { .. }), "{err:?}");
    }

    #[test]
    fn wrong_magic_is_not_a_bundle() {
        let mut bytes = signed(&key(1), 1, &[], &files(), 0);
        bytes[6] = b'X';
        let err = verify(&bytes, &[key(1).verifying_key()], LIMIT).expect_err("magic");
        match &err {
            BundleError::NotABundle { prefix } => assert_eq!(prefix, b"EABNDLX\n"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("EABNDLX\\n"), "{err}");
        assert!(err.to_string().contains("expected \"EABNDL2\\n\""), "{err}");
        let err = verify(b"EAB", &[key(1).verifying_key()], LIMIT).expect_err("short");
        assert!(matches!(err, BundleError::NotABundle { .. }), "{err:?}");
    }

    #[test]
    fn unknown_formats_are_refused_naming_the_version_before_the_signature() {
        // Signed by nobody: the format is refused before the signature is looked at.
        let mut bytes = signed(&key(1), 1, &[], &files(), 0);
        bytes[6] = b'9';
        let err = verify(&bytes, &[key(2).verifying_key()], LIMIT).expect_err("format 9");
        assert!(
            matches!(
                err,
                BundleError::UnsupportedFormat {
                    found: 9,
                    supported: 2
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "bundle format version 9 unsupported (this edgearmor writes version 2 and reads 1 \
             and 2): re-sign it with this edgearmor's `bundle create`"
        );
    }

    /// A format 1 bundle as edgearmor before format 2 wrote it: the same body
    /// without the scope, after "EABNDL1\n".
    fn format_1_bundle(key: &SigningKey, version: u64, targets: &[String]) -> Vec<u8> {
        let mut body = postcard::to_extend(&(version, 0u64, targets), MAGIC_V1.to_vec())
            .expect("encodes the fields");
        body = postcard::to_extend(
            &vec![BundleFile {
                name: "old.yaml".into(),
                contents: b"x".to_vec(),
            }],
            body,
        )
        .expect("encodes the files");
        sign_bundle(key, body)
    }

    #[test]
    fn format_1_bundles_are_read_as_fleet_scoped() {
        let bytes = format_1_bundle(&key(1), 5, &["gw-1".to_owned()]);
        let bundle = verify(&bytes, &[key(1).verifying_key()], LIMIT).expect("format 1 reads");
        assert_eq!(bundle.format(), FormatVersion::V1);
        assert_eq!(bundle.scope(), Scope::Fleet);
        assert_eq!(
            (bundle.version(), bundle.targets()),
            (5, &["gw-1".to_owned()][..])
        );
        assert_eq!(bundle.files()[0].name, "old.yaml");
        // The signature still covers the magic: relabelled as format 2, it is refused.
        let mut relabelled = bytes.clone();
        relabelled[6] = b'2';
        assert!(matches!(
            verify(&relabelled, &[key(1).verifying_key()], LIMIT),
            Err(BundleError::BadSignature { .. })
        ));
    }

    #[test]
    fn the_scope_is_signed_and_a_node_scope_names_its_targets() {
        let keys = [key(1).verifying_key()];
        let gw = vec!["gw-1".to_owned()];
        let node = sign_unchecked(&key(1), 3, Scope::Node, &gw, &files(), 0);
        let bundle = verify(&node, &keys, LIMIT).expect("node bundle");
        assert_eq!(
            (bundle.scope(), bundle.format()),
            (Scope::Node, FormatVersion::V2)
        );
        // The scope is the body's last byte: flipping it breaks the signature.
        let mut flipped = node.clone();
        let scope_at = flipped.len() - SIGNATURE_LEN - 1;
        assert_eq!(flipped[scope_at], 1);
        flipped[scope_at] = 0;
        assert!(matches!(
            verify(&flipped, &keys, LIMIT),
            Err(BundleError::BadSignature { .. })
        ));
        for targets in [vec![], vec!["gw-1".to_owned(), "*".to_owned()]] {
            let every = sign_unchecked(&key(1), 3, Scope::Node, &targets, &files(), 0);
            let err = verify(&every, &keys, LIMIT).expect_err("node scope for every node");
            assert!(
                matches!(&err, BundleError::NodeScopeWithoutTargets { targets: t } if *t == targets),
                "{err:?}"
            );
            let body = BundleBody {
                version: 3,
                created_unix: 0,
                targets,
                files: Vec::new(),
                scope: Scope::Node,
            };
            assert!(matches!(
                create(&key(1), &body),
                Err(BundleError::NodeScopeWithoutTargets { .. })
            ));
        }
    }

    #[test]
    fn create_refuses_what_agents_refuse() {
        let body = |files: Vec<BundleFile>| BundleBody {
            version: 1,
            created_unix: 0,
            targets: Vec::new(),
            files,
            scope: Scope::Fleet,
        };
        let file = |name: String, size: usize| BundleFile {
            name,
            contents: vec![b'#'; size],
        };
        let too_many: Vec<BundleFile> = (0..=MAX_BUNDLE_FILES)
            .map(|i| file(format!("{i}.yaml"), 0))
            .collect();
        let too_big = vec![file("a.yaml".into(), MAX_BUNDLE_FILE_BYTES + 1)];
        let long_name = vec![file(format!("{}.yaml", "n".repeat(MAX_FILE_NAME_BYTES)), 0)];
        let bad_name = vec![file("../a.yaml".into(), 0)];
        for (files, limit) in [
            (too_many, Some("MAX_BUNDLE_FILES")),
            (too_big, Some("MAX_BUNDLE_FILE_BYTES")),
            (long_name, Some("MAX_FILE_NAME_BYTES")),
            (bad_name, None),
        ] {
            let err = create(&key(1), &body(files)).expect_err("refused");
            match limit {
                Some(name) => assert!(
                    matches!(&err, BundleError::LimitExceeded { limit_name, .. } if *limit_name == name),
                    "{name}: {err:?}"
                ),
                None => assert!(matches!(err, BundleError::BadFileName { .. }), "{err:?}"),
            }
        }
        // At the limits, created and verified.
        let at_limits: Vec<BundleFile> = (0..MAX_BUNDLE_FILES)
            .map(|i| file(format!("{i:0>250}.yaml"), 16))
            .collect();
        let bytes = create(&key(1), &body(at_limits)).expect("at the limits");
        verify(&bytes, &[key(1).verifying_key()], MAX_BUNDLE_BYTES).expect("verifies");
    }

    #[test]
    fn too_short_for_a_signature_is_malformed() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&[0; 63]);
        let err = verify(&bytes, &[key(1).verifying_key()], LIMIT).expect_err("short");
        assert!(matches!(err, BundleError::Malformed { .. }), "{err:?}");
    }

    #[test]
    fn signed_garbage_is_malformed() {
        let keys = [key(1).verifying_key()];
        // A body claiming a target (256 bytes, within MAX_TARGET_BYTES) longer than
        // the bundle.
        let mut signed = MAGIC.to_vec();
        signed.extend_from_slice(&[1, 0, 1, 0x80, 0x02]);
        let err = verify(&sign_bundle(&key(1), signed), &keys, LIMIT).expect_err("garbage");
        assert!(matches!(err, BundleError::Malformed { .. }), "{err:?}");
        // A valid body followed by extra bytes, all signed.
        let body = BundleBody {
            version: 1,
            created_unix: 0,
            targets: Vec::new(),
            files: Vec::new(),
            scope: Scope::Fleet,
        };
        let mut signed = postcard::to_extend(&body, MAGIC.to_vec()).expect("encodes");
        signed.push(0);
        let err = verify(&sign_bundle(&key(1), signed), &keys, LIMIT).expect_err("trailing");
        assert!(
            matches!(&err, BundleError::Malformed { detail } if detail.contains("1 bytes after")),
            "{err:?}"
        );
    }

    #[test]
    fn bad_file_names_are_refused() {
        let keys = [key(1).verifying_key()];
        for (name, reason) in [
            ("", "is empty"),
            ("etc/passwd.yaml", "contains '/'"),
            ("/abs.yaml", "contains '/'"),
            ("..yaml", "contains \"..\""),
            ("a..b.yaml", "contains \"..\""),
            ("back\\slash.yaml", "contains '\\'"),
            ("nul\0.yaml", "contains a control character"),
            ("new\nline.yaml", "contains a control character"),
            (".hidden.yaml", "starts with '.'"),
            ("policy.json", "does not end in .yaml or .yml"),
            ("policy.yaml.bak", "does not end in .yaml or .yml"),
            ("yaml", "does not end in .yaml or .yml"),
        ] {
            let bytes = signed(&key(1), 1, &[], &[(name.to_owned(), Vec::new())], 0);
            let err = verify(&bytes, &keys, LIMIT).expect_err(name);
            match err {
                BundleError::BadFileName {
                    name: found,
                    reason: why,
                } => {
                    assert_eq!((found.as_str(), why), (name, reason));
                }
                other => panic!("{name:?}: unexpected {other:?}"),
            }
        }
        let twice = vec![
            ("a.yaml".to_owned(), Vec::new()),
            ("b.yml".to_owned(), Vec::new()),
            ("a.yaml".to_owned(), b"x".to_vec()),
        ];
        let err = verify(&signed(&key(1), 1, &[], &twice, 0), &keys, LIMIT).expect_err("dup");
        assert!(
            matches!(&err, BundleError::BadFileName { name, reason: "appears twice" } if name == "a.yaml"),
            "{err:?}"
        );
        // Case differs, so these are two files on Linux.
        let cases = vec![
            ("A.yaml".to_owned(), Vec::new()),
            ("a.yaml".to_owned(), Vec::new()),
        ];
        verify(&signed(&key(1), 1, &[], &cases, 0), &keys, LIMIT).expect("distinct");
    }

    #[test]
    fn no_targets_means_every_node() {
        let bundle = bundle_with_targets(&[]);
        assert!(bundle.targets_node("site-a", "gw-1"));
        assert!(bundle.targets_node("", ""));
    }

    #[test]
    fn targets_match_node_cluster_and_prefix() {
        let bundle = bundle_with_targets(&["edge-7", "site-a/core-1", "gw-*", "site-b/*"]);
        assert!(bundle.targets_node("anywhere", "edge-7"));
        assert!(bundle.targets_node("site-a", "core-1"));
        assert!(!bundle.targets_node("site-c", "core-1"));
        assert!(bundle.targets_node("x", "gw-"));
        assert!(bundle.targets_node("x", "gw-42"));
        assert!(!bundle.targets_node("x", "gw"));
        assert!(bundle.targets_node("site-b", "anything"));
        assert!(!bundle.targets_node("site-bb", "anything"));
        assert!(!bundle.targets_node("x", "edge-70"));
        // A node-name pattern is not matched against the cluster.
        assert!(!bundle.targets_node("gw-cluster", "node"));

        let star = bundle_with_targets(&["*"]);
        assert!(star.targets_node("any", "node"));
        let qualified_prefix = bundle_with_targets(&["site-a/gw-*"]);
        assert!(qualified_prefix.targets_node("site-a", "gw-3"));
        assert!(!qualified_prefix.targets_node("site-b", "gw-3"));
        assert!(!qualified_prefix.targets_node("site-a", "core-1"));
        // Only a trailing '*' is special.
        let inner = bundle_with_targets(&["g*-1"]);
        assert!(!inner.targets_node("x", "gw-1"));
        assert!(inner.targets_node("x", "g*-1"));
        // Label targets are the caller's to decide, and only they.
        let labelled = bundle_with_targets(&["site=plant-7", "gw-9"]);
        assert!(!labelled.targets_node("x", "site=plant-7"));
        assert!(labelled.targets_node_with("x", "gw-1", &|t| t == "site=plant-7"));
        assert!(!labelled.targets_node_with("x", "gw-1", &|_| false));
        assert!(labelled.targets_node_with("x", "gw-9", &|_| false));
    }
}
