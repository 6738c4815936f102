//! Unlock tokens: what lets `edgearmor unload` remove enforcement from a node in
//! locked mode. Signed with a fleet key (the bundles' keys), for one node, expiring,
//! single use. One byte string:
//!
//! ```text
//! ┌──────────────┬──────────────────────────────────────────┬──────────────────┐
//! │ "EAUNLK1\n"  │ postcard UnlockClaims                    │ Ed25519 signature│
//! │ 8 bytes      │ node: String, issued_unix: u64,          │ 64 bytes, over   │
//! │ (UNLOCK_MAGIC)│ not_after_unix: u64, nonce: [u8; 16]    │ magic + claims   │
//! └──────────────┴──────────────────────────────────────────┴──────────────────┘
//! ```
//!
//! [`verify_unlock_token`] checks, in order, stopping at the first failure: the size
//! ([`MAX_UNLOCK_TOKEN_BYTES`], nothing parsed above it), the magic, the signature
//! (strict, against each trusted key; nothing unsigned is decoded), the claims (every
//! field within the bytes, the node name within [`MAX_UNLOCK_NODE_BYTES`], nothing
//! after them), the validity period (at most [`MAX_UNLOCK_VALIDITY_SECS`]), the node
//! (exactly this node's name: no patterns), and the node's wall clock (not before the
//! issue time less [`UNLOCK_CLOCK_SKEW_SECS`], not after the expiry). Single use is
//! [`UsedNonces::consume`]'s: the nonce is recorded in `state_dir` before the unload
//! runs, and a recorded one is refused.

mod nonces;

use std::path::PathBuf;

use crate::body::Reader;
use crate::files::FileError;
use crate::limits::{
    MAX_UNLOCK_NODE_BYTES, MAX_UNLOCK_TOKEN_BYTES, MAX_UNLOCK_VALIDITY_SECS, UNLOCK_CLOCK_SKEW_SECS,
};
use crate::util::{fill_random, hex_encode};
use crate::{BundleError, SIGNATURE_LEN, SigningKey, VerifyingKey};

pub use nonces::{USED_NONCES_FILE, UsedNonces};

/// The first 8 bytes of every unlock token: format 1.
pub const UNLOCK_MAGIC: &[u8; 8] = b"EAUNLK1\n";

/// Bytes of a token's nonce.
pub const NONCE_LEN: usize = 16;

/// What an unlock token says, postcard-encoded between [`UNLOCK_MAGIC`] and the
/// signature, in this field order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnlockClaims {
    /// The one node the token unlocks: its agent's node name (`node` in `agent.toml`,
    /// else the host name), compared exactly.
    pub node: String,
    /// When the token was made, seconds since the Unix epoch (signer's clock).
    pub issued_unix: u64,
    /// The last second it may be used.
    pub not_after_unix: u64,
    /// Random: what makes the token single use.
    pub nonce: [u8; NONCE_LEN],
}

/// An unlock token [`verify_unlock_token`] accepted; only it makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedUnlock {
    claims: UnlockClaims,
}

impl VerifiedUnlock {
    /// What the token says.
    pub fn claims(&self) -> &UnlockClaims {
        &self.claims
    }

    /// The nonce in lowercase hex.
    pub fn nonce_hex(&self) -> String {
        nonce_hex(&self.claims.nonce)
    }
}

/// A nonce in lowercase hex, as the used-nonce file and reports spell it.
pub fn nonce_hex(nonce: &[u8; NONCE_LEN]) -> String {
    hex_encode(nonce)
}

/// Every way an unlock token can be refused, each naming the offending value.
#[derive(Debug, thiserror::Error)]
pub enum UnlockError {
    /// Larger than any token; nothing of it was parsed.
    #[error(
        "unlock token of {size} bytes exceeds the limit of {limit} bytes (MAX_UNLOCK_TOKEN_BYTES)"
    )]
    TooLarge {
        /// The size found.
        size: usize,
        /// [`MAX_UNLOCK_TOKEN_BYTES`].
        limit: usize,
    },
    /// The bytes do not start with [`UNLOCK_MAGIC`].
    #[error(
        "not an edgearmor unlock token: starts with \"{}\", expected \"EAUNLK1\\n\" (made by `edgearmor unlock-token create`)",
        prefix.escape_ascii()
    )]
    NotAToken {
        /// The first (up to 8) bytes found instead.
        prefix: Vec<u8>,
    },
    /// No public key to check the signature with.
    #[error("no trusted public key to verify the unlock token with ([fleet] public_keys is empty)")]
    NoTrustedKeys,
    /// Not signed by any trusted key (or changed after signing).
    #[error("unlock token signature is not valid for any of the {keys_tried} trusted key(s)")]
    BadSignature {
        /// How many keys were tried.
        keys_tried: usize,
    },
    /// Signed, but not a valid encoding of [`UnlockClaims`].
    #[error("malformed unlock token: {detail}")]
    Malformed {
        /// What is wrong and where.
        detail: String,
    },
    /// Valid for longer than [`MAX_UNLOCK_VALIDITY_SECS`] (or expiring before issue).
    #[error(
        "unlock token valid from {issued_unix} to {not_after_unix} (Unix seconds): {detail}; the limit is {limit_secs} s (MAX_UNLOCK_VALIDITY_SECS)"
    )]
    BadValidity {
        /// The issue time.
        issued_unix: u64,
        /// The expiry.
        not_after_unix: u64,
        /// What is wrong, in words.
        detail: String,
        /// [`MAX_UNLOCK_VALIDITY_SECS`].
        limit_secs: u64,
    },
    /// A node name a token cannot carry.
    #[error("unlock token node {node:?}: {reason}")]
    BadNode {
        /// The name.
        node: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// For another node.
    #[error("unlock token is for node {token_node:?}, this node is {this_node:?}")]
    ForeignNode {
        /// The token's node.
        token_node: String,
        /// This agent's node name.
        this_node: String,
    },
    /// This node's clock is before the token's issue time (less the allowed skew).
    #[error(
        "unlock token issued at {issued_unix} is not valid yet: this node's clock says {now_unix} (Unix seconds; {skew_secs} s of skew allowed, UNLOCK_CLOCK_SKEW_SECS); set the clock"
    )]
    NotYetValid {
        /// The issue time.
        issued_unix: u64,
        /// This node's wall clock.
        now_unix: i64,
        /// [`UNLOCK_CLOCK_SKEW_SECS`].
        skew_secs: u64,
    },
    /// Past its expiry by this node's clock.
    #[error(
        "unlock token expired at {not_after_unix}: this node's clock says {now_unix} (Unix seconds)"
    )]
    Expired {
        /// The expiry.
        not_after_unix: u64,
        /// This node's wall clock.
        now_unix: i64,
    },
    /// Used already on this node.
    #[error("unlock token {nonce_hex} was used already on this node (recorded in {}); tokens are single use", path.display())]
    Replayed {
        /// The nonce.
        nonce_hex: String,
        /// The used-nonce file.
        path: PathBuf,
    },
    /// Expires no later than a used token the node had to forget (see
    /// [`crate::limits::MAX_USED_NONCES`]): it might be one of them.
    #[error(
        "unlock token expiring at {not_after_unix} is older than the used tokens {} remembers (it forgot those expiring by {floor_unix}); make a new one",
        path.display()
    )]
    Forgotten {
        /// The token's expiry.
        not_after_unix: u64,
        /// The latest expiry forgotten.
        floor_unix: u64,
        /// The used-nonce file.
        path: PathBuf,
    },
    /// The used-nonce file is not valid: no token is accepted until it is.
    #[error("{}:{line}: {detail}", path.display())]
    CorruptNonces {
        /// The file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// What is wrong.
        detail: String,
    },
    /// The used-nonce file could not be read or written safely.
    #[error(transparent)]
    File(#[from] FileError),
    /// The OS random source failed (making a token).
    #[error("OS random source failed: {detail}")]
    Random {
        /// What failed.
        detail: String,
    },
}

impl UnlockError {
    /// A few words for what went wrong (the alert a refusal becomes says these).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "unlock token too large",
            Self::NotAToken { .. } => "not an unlock token",
            Self::NoTrustedKeys => "no fleet key",
            Self::BadSignature { .. } => "unlock token badly signed",
            Self::Malformed { .. } => "malformed unlock token",
            Self::BadValidity { .. } => "unlock token valid too long",
            Self::BadNode { .. } => "bad unlock token node",
            Self::ForeignNode { .. } => "unlock token for another node",
            Self::NotYetValid { .. } => "unlock token not valid yet",
            Self::Expired { .. } => "unlock token expired",
            Self::Replayed { .. } | Self::Forgotten { .. } => "unlock token replayed",
            Self::CorruptNonces { .. } | Self::File(_) => "used-token file unusable",
            Self::Random { .. } => "no randomness",
        }
    }

    /// The body reader's errors (it reads bundles too), as a token's.
    fn from_reader(e: BundleError) -> Self {
        match e {
            BundleError::Malformed { detail } => Self::Malformed { detail },
            BundleError::LimitExceeded {
                what,
                found,
                limit,
                limit_name,
            } => Self::Malformed {
                detail: format!("{what}: {found} exceeds the limit of {limit} ({limit_name})"),
            },
            other => Self::Malformed {
                detail: other.to_string(),
            },
        }
    }
}

/// Claims for `node`, issued at `issued_unix`, valid for `valid_for_secs`, with a
/// fresh random nonce. Refused as [`create_unlock_token`] would refuse them.
pub fn new_unlock_claims(
    node: &str,
    issued_unix: u64,
    valid_for_secs: u64,
) -> Result<UnlockClaims, UnlockError> {
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce).map_err(|e| UnlockError::Random {
        detail: e.to_string(),
    })?;
    let claims = UnlockClaims {
        node: node.to_owned(),
        issued_unix,
        not_after_unix: issued_unix.saturating_add(valid_for_secs),
        nonce,
    };
    check_claims(&claims)?;
    Ok(claims)
}

/// `claims`, signed with `key`: a token. Refuses what every agent would refuse (a bad
/// node name, a validity period over the limit).
pub fn create_unlock_token(
    key: &SigningKey,
    claims: &UnlockClaims,
) -> Result<Vec<u8>, UnlockError> {
    check_claims(claims)?;
    let mut bytes = postcard::to_extend(claims, UNLOCK_MAGIC.to_vec())
        // postcard's Vec flavor cannot fail to grow, and the claims are a string, two
        // integers and an array: encoding cannot fail.
        .expect("postcard encodes UnlockClaims into a Vec infallibly");
    let signature = key.sign(&bytes);
    bytes.extend_from_slice(&signature);
    Ok(bytes)
}

/// Checks an unlock token for node `this_node` at wall-clock time `now_unix`
/// (seconds), against the trusted `keys`; see the module's documentation for the
/// order. Whether it was used already is [`UsedNonces::consume`]'s check.
pub fn verify_unlock_token(
    bytes: &[u8],
    keys: &[VerifyingKey],
    this_node: &str,
    now_unix: i64,
) -> Result<VerifiedUnlock, UnlockError> {
    if bytes.len() > MAX_UNLOCK_TOKEN_BYTES {
        return Err(UnlockError::TooLarge {
            size: bytes.len(),
            limit: MAX_UNLOCK_TOKEN_BYTES,
        });
    }
    let Some(after_magic) = bytes.strip_prefix(UNLOCK_MAGIC) else {
        return Err(UnlockError::NotAToken {
            prefix: bytes.iter().take(UNLOCK_MAGIC.len()).copied().collect(),
        });
    };
    let Some((_, signature)) = after_magic.split_last_chunk::<SIGNATURE_LEN>() else {
        return Err(UnlockError::Malformed {
            detail: format!(
                "{} bytes after the magic, too few for the {SIGNATURE_LEN}-byte signature",
                after_magic.len()
            ),
        });
    };
    if keys.is_empty() {
        return Err(UnlockError::NoTrustedKeys);
    }
    let signed = &bytes[..bytes.len() - SIGNATURE_LEN];
    let signature = ed25519_dalek::Signature::from_bytes(signature);
    if !keys
        .iter()
        .any(|key| key.0.verify_strict(signed, &signature).is_ok())
    {
        return Err(UnlockError::BadSignature {
            keys_tried: keys.len(),
        });
    }
    let claims = decode_claims(&signed[UNLOCK_MAGIC.len()..])?;
    check_claims(&claims)?;
    if claims.node != this_node {
        return Err(UnlockError::ForeignNode {
            token_node: claims.node,
            this_node: this_node.to_owned(),
        });
    }
    check_clock(&claims, now_unix)?;
    Ok(VerifiedUnlock { claims })
}

/// Exactly one [`UnlockClaims`] (nothing may follow).
fn decode_claims(bytes: &[u8]) -> Result<UnlockClaims, UnlockError> {
    let mut reader = Reader::new(bytes);
    let claims = (|| {
        Ok::<_, BundleError>(UnlockClaims {
            node: reader.string(
                "the node name",
                MAX_UNLOCK_NODE_BYTES,
                "MAX_UNLOCK_NODE_BYTES",
            )?,
            issued_unix: reader.varint("issued_unix")?,
            not_after_unix: reader.varint("not_after_unix")?,
            nonce: reader.array::<NONCE_LEN>("the nonce")?,
        })
    })()
    .map_err(UnlockError::from_reader)?;
    match reader.remaining() {
        0 => Ok(claims),
        rest => Err(UnlockError::Malformed {
            detail: format!("{rest} bytes after the claims"),
        }),
    }
}

/// What [`create_unlock_token`] and [`verify_unlock_token`] both refuse: a node name
/// no agent has, a validity period over [`MAX_UNLOCK_VALIDITY_SECS`].
fn check_claims(claims: &UnlockClaims) -> Result<(), UnlockError> {
    let node = &claims.node;
    let reason = if node.is_empty() {
        Some("is empty")
    } else if node.len() > MAX_UNLOCK_NODE_BYTES {
        Some("is longer than 64 bytes (MAX_UNLOCK_NODE_BYTES)")
    } else if !node.bytes().all(|b| b.is_ascii_graphic()) {
        Some("has a character that is not printable ASCII (or a space)")
    } else if node.contains(['*', '/']) {
        Some("contains '*' or '/': a token names one node, exactly")
    } else {
        None
    };
    if let Some(reason) = reason {
        return Err(UnlockError::BadNode {
            node: node.clone(),
            reason,
        });
    }
    let bad = |detail: String| UnlockError::BadValidity {
        issued_unix: claims.issued_unix,
        not_after_unix: claims.not_after_unix,
        detail,
        limit_secs: MAX_UNLOCK_VALIDITY_SECS,
    };
    match claims.not_after_unix.checked_sub(claims.issued_unix) {
        None => Err(bad("it expires before it is issued".into())),
        Some(secs) if secs > MAX_UNLOCK_VALIDITY_SECS => {
            Err(bad(format!("valid for {secs} s, too long")))
        }
        Some(_) => Ok(()),
    }
}

/// This node's clock within the token's validity period (less the skew at its start).
fn check_clock(claims: &UnlockClaims, now_unix: i64) -> Result<(), UnlockError> {
    let now = i128::from(now_unix);
    if now + i128::from(UNLOCK_CLOCK_SKEW_SECS) < i128::from(claims.issued_unix) {
        return Err(UnlockError::NotYetValid {
            issued_unix: claims.issued_unix,
            now_unix,
            skew_secs: UNLOCK_CLOCK_SKEW_SECS,
        });
    }
    if now > i128::from(claims.not_after_unix) {
        return Err(UnlockError::Expired {
            not_after_unix: claims.not_after_unix,
            now_unix,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
