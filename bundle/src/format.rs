//! The bundle format: [`create`] and [`verify`], and what a verified bundle offers.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::util::hex_encode;
use crate::{BundleError, SigningKey, VerifyingKey};

/// The first 8 bytes of every bundle.
pub const MAGIC: &[u8; 8] = b"EABNDL1\n";

/// Bytes of the Ed25519 signature that ends every bundle.
pub const SIGNATURE_LEN: usize = 64;

/// What a bundle carries, postcard-encoded between [`MAGIC`] and the signature.
/// Append-only: a new field goes at the end, with a new magic if old agents must
/// refuse it.
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
}

/// One policy file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleFile {
    /// A plain file name ending in `.yaml` or `.yml` (checked by [`verify`]).
    pub name: String,
    /// The file's bytes.
    pub contents: Vec<u8>,
}

/// A bundle whose signature, encoding and file names [`verify`] has checked. Only
/// [`verify`] makes one, so holding one means those checks passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedBundle {
    version: u64,
    created_unix: u64,
    targets: Vec<String>,
    files: Vec<BundleFile>,
    sha256_hex: String,
}

impl VerifiedBundle {
    /// The bundle's version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// When the bundle was made, in seconds since the Unix epoch.
    pub fn created_unix(&self) -> u64 {
        self.created_unix
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

    /// Whether the bundle is for node `node` of cluster `cluster`. A bundle with no
    /// targets is for every node. Otherwise one target must match:
    ///
    /// - `*` matches every node;
    /// - a target without `/` is compared with `node`, one with `/` with
    ///   `cluster/node`;
    /// - a target ending in `*` matches when what it is compared with starts with the
    ///   part before the `*` (`gw-*`, `site-a/*`, `site-a/gw-*`); a `*` anywhere else
    ///   is an ordinary character;
    /// - any other target must be equal.
    pub fn targets_node(&self, cluster: &str, node: &str) -> bool {
        if self.targets.is_empty() {
            return true;
        }
        let qualified = format!("{cluster}/{node}");
        self.targets.iter().any(|target| {
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

/// A signed bundle of `files` for `targets` (see [`VerifiedBundle::targets_node`]),
/// made with `key`.
///
/// Nothing is checked here: a file name that [`check_file_name`] refuses makes a
/// bundle that every agent refuses, so callers check names first.
pub fn create(
    key: &SigningKey,
    version: u64,
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
    };
    let encoded = postcard::to_extend(&body, MAGIC.to_vec())
        // postcard's Vec flavor cannot fail to grow, and BundleBody has only integers,
        // strings and sequences of known length, so encoding cannot fail on any input.
        .expect("postcard encodes a BundleBody into a Vec infallibly");
    sign_bundle(key, encoded)
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
/// 1. size: at most `max_bytes`, else [`BundleError::TooLarge`] (nothing parsed);
/// 2. magic: starts with [`MAGIC`], else [`BundleError::NotABundle`]; at least a
///    signature follows, else [`BundleError::Malformed`];
/// 3. signature: valid (RFC 8032 strict: canonical, no small-order parts) for one of
///    `keys`, else [`BundleError::BadSignature`] ([`BundleError::NoTrustedKeys`] for
///    none);
/// 4. body: exactly one postcard [`BundleBody`], else [`BundleError::Malformed`];
/// 5. file names: see [`check_file_name`], and unique, else
///    [`BundleError::BadFileName`].
///
/// Whether the version is newer than the applied one is the caller's check
/// ([`check_rollback`](crate::check_rollback)), and so is [`VerifiedBundle::targets_node`].
pub fn verify(
    bytes: &[u8],
    keys: &[VerifyingKey],
    max_bytes: usize,
) -> Result<VerifiedBundle, BundleError> {
    if bytes.len() > max_bytes {
        return Err(BundleError::TooLarge {
            size: bytes.len(),
            limit: max_bytes,
        });
    }
    let Some(after_magic) = bytes.strip_prefix(MAGIC.as_slice()) else {
        return Err(BundleError::NotABundle {
            prefix: bytes.iter().take(MAGIC.len()).copied().collect(),
        });
    };
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
    let (body, rest) =
        postcard::take_from_bytes::<BundleBody>(&signed[MAGIC.len()..]).map_err(|e| {
            BundleError::Malformed {
                detail: format!("body does not decode: {e}"),
            }
        })?;
    if !rest.is_empty() {
        return Err(BundleError::Malformed {
            detail: format!("{} bytes after the body", rest.len()),
        });
    }
    check_file_names(&body.files)?;
    Ok(VerifiedBundle {
        version: body.version,
        created_unix: body.created_unix,
        targets: body.targets,
        files: body.files,
        sha256_hex: hex_encode(&Sha256::digest(bytes)),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 1 << 20;

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
        let bytes = create(&key(1), 1, &targets, &files(), 0);
        verify(&bytes, &[key(1).verifying_key()], LIMIT).expect("verifies")
    }

    #[test]
    fn round_trip() {
        let targets = vec!["gw-*".to_owned(), "site-a/edge-7".to_owned()];
        let bytes = create(&key(1), 42, &targets, &files(), 1_700_000_000);
        assert_eq!(&bytes[..8], b"EABNDL1\n");
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
        let bytes = create(&key(2), 1, &[], &files(), 0);
        let keys = [key(1).verifying_key(), key(2).verifying_key()];
        verify(&bytes, &keys, LIMIT).expect("second key verifies");
    }

    #[test]
    fn exact_limit_is_accepted() {
        let bytes = create(&key(1), 1, &[], &files(), 0);
        verify(&bytes, &[key(1).verifying_key()], bytes.len()).expect("at the limit");
    }

    #[test]
    fn tampered_byte_is_a_bad_signature() {
        let bytes = create(&key(1), 7, &[], &files(), 0);
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
        let bytes = create(&key(2), 1, &[], &files(), 0);
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
        let bytes = create(&key(1), 1, &[], &files(), 0);
        let err = verify(&bytes, &[key(1).verifying_key()], bytes.len() - 1).expect_err("big");
        assert!(matches!(err, BundleError::TooLarge { .. }), "{err:?}");
    }

    #[test]
    fn wrong_magic_is_not_a_bundle() {
        let mut bytes = create(&key(1), 1, &[], &files(), 0);
        bytes[6] = b'2';
        let err = verify(&bytes, &[key(1).verifying_key()], LIMIT).expect_err("magic");
        match &err {
            BundleError::NotABundle { prefix } => assert_eq!(prefix, b"EABNDL2\n"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("EABNDL2\\n"), "{err}");
        let err = verify(b"EAB", &[key(1).verifying_key()], LIMIT).expect_err("short");
        assert!(matches!(err, BundleError::NotABundle { .. }), "{err:?}");
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
        // A body claiming a string longer than the bundle.
        let mut signed = MAGIC.to_vec();
        signed.extend_from_slice(&[1, 0, 1, 0xff, 0x7f]);
        let err = verify(&sign_bundle(&key(1), signed), &keys, LIMIT).expect_err("garbage");
        assert!(matches!(err, BundleError::Malformed { .. }), "{err:?}");
        // A valid body followed by extra bytes, all signed.
        let body = BundleBody {
            version: 1,
            created_unix: 0,
            targets: Vec::new(),
            files: Vec::new(),
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
            let bytes = create(&key(1), 1, &[], &[(name.to_owned(), Vec::new())], 0);
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
        let err = verify(&create(&key(1), 1, &[], &twice, 0), &keys, LIMIT).expect_err("dup");
        assert!(
            matches!(&err, BundleError::BadFileName { name, reason: "appears twice" } if name == "a.yaml"),
            "{err:?}"
        );
        // Case differs, so these are two files on Linux.
        let cases = vec![
            ("A.yaml".to_owned(), Vec::new()),
            ("a.yaml".to_owned(), Vec::new()),
        ];
        verify(&create(&key(1), 1, &[], &cases, 0), &keys, LIMIT).expect("distinct");
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
    }
}
