//! Ed25519 keys and their one-line text files.
//!
//! ```text
//! edgearmor-ed25519-secret <64 hex digits: the 32-byte seed>
//! edgearmor-ed25519-public <64 hex digits: the 32-byte compressed point>
//! ```
//!
//! Parsing accepts a trailing line ending (and other trailing whitespace), either case
//! of hex digit, and nothing else: errors name the wrong prefix, the column of the
//! first non-hex character, or the wrong digit count. No error ever echoes a secret
//! key's digits.

use std::fmt;

use zeroize::Zeroize;

use crate::BundleError;
use crate::util::{fill_random, hex_encode, hex_encode_into, hex_nibble};

/// The first word of a secret key file.
pub const SECRET_KEY_PREFIX: &str = "edgearmor-ed25519-secret";
/// The first word of a public key file.
pub const PUBLIC_KEY_PREFIX: &str = "edgearmor-ed25519-public";

/// Bytes of a seed or of a public key.
const KEY_LEN: usize = 32;

/// A secret Ed25519 key, which signs bundles. Wiped from memory on drop; its
/// `Debug` shows the public half only.
pub struct SigningKey(ed25519_dalek::SigningKey);

/// A public Ed25519 key, which verifies bundles.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct VerifyingKey(pub(crate) ed25519_dalek::VerifyingKey);

/// The text of a secret key file (one line, ending in `\n`). Wiped from memory on drop.
pub struct SecretKeyText(String);

/// The text of a public key file (one line, ending in `\n`).
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKeyText(String);

impl SigningKey {
    /// A new key from 32 bytes of the operating system's randomness.
    pub fn generate() -> Result<Self, BundleError> {
        let mut seed = [0u8; KEY_LEN];
        let filled = fill_random(&mut seed);
        let key = filled.map(|()| Self::from_seed(&seed));
        seed.zeroize();
        key
    }

    /// The key whose seed (RFC 8032's 32-byte secret key) is `seed`.
    pub fn from_seed(seed: &[u8; KEY_LEN]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(seed))
    }

    /// The public half.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey(self.0.verifying_key())
    }

    /// The secret key file's text: `edgearmor-ed25519-secret <hex>\n`.
    pub fn to_text(&self) -> SecretKeyText {
        let mut seed = self.0.to_bytes();
        // Sized exactly, so the string never reallocates and leaves no copy behind.
        let mut text = String::with_capacity(SECRET_KEY_PREFIX.len() + 2 + 2 * KEY_LEN);
        text.push_str(SECRET_KEY_PREFIX);
        text.push(' ');
        hex_encode_into(&seed, &mut text);
        text.push('\n');
        seed.zeroize();
        SecretKeyText(text)
    }

    /// The 64-byte Ed25519 signature of `message` (a bundle is its magic and body
    /// followed by this signature of them; tests use it to make bundles of other
    /// formats).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer;
        self.0.sign(message).to_bytes()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.verifying_key())
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// The key whose compressed point is `bytes`. Refuses bytes that are not a point
    /// of the curve and the small-order ("weak") points, for which signatures
    /// prove nothing.
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Result<Self, BundleError> {
        let key = ed25519_dalek::VerifyingKey::from_bytes(bytes).map_err(|_| {
            BundleError::InvalidPublicKey {
                hex: hex_encode(bytes),
                reason: "not a point of the Ed25519 curve",
            }
        })?;
        if key.is_weak() {
            return Err(BundleError::InvalidPublicKey {
                hex: hex_encode(bytes),
                reason: "a small-order point, which any signature matches",
            });
        }
        Ok(Self(key))
    }

    /// The 32-byte compressed point.
    pub fn to_bytes(&self) -> [u8; KEY_LEN] {
        self.0.to_bytes()
    }

    /// The compressed point in lowercase hex.
    pub fn to_hex(&self) -> String {
        hex_encode(self.0.as_bytes())
    }

    /// The public key file's text: `edgearmor-ed25519-public <hex>\n`.
    pub fn to_text(&self) -> PublicKeyText {
        PublicKeyText(format!("{PUBLIC_KEY_PREFIX} {}\n", self.to_hex()))
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey({})", self.to_hex())
    }
}

impl fmt::Display for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl SecretKeyText {
    /// The file's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Drop for SecretKeyText {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SecretKeyText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKeyText(<redacted>)")
    }
}

impl PublicKeyText {
    /// The file's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PublicKeyText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKeyText({:?})", self.0)
    }
}

impl fmt::Display for PublicKeyText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A new key pair as the texts of its two files.
pub fn generate_keypair() -> Result<(SecretKeyText, PublicKeyText), BundleError> {
    let key = SigningKey::generate()?;
    Ok((key.to_text(), key.verifying_key().to_text()))
}

/// The signing key of a secret key file's text.
pub fn parse_secret_key(text: &str) -> Result<SigningKey, BundleError> {
    let mut seed = parse_key_line(text, SECRET_KEY_PREFIX)?;
    let key = SigningKey::from_seed(&seed);
    seed.zeroize();
    Ok(key)
}

/// The verifying key of a public key file's text.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, BundleError> {
    VerifyingKey::from_bytes(&parse_key_line(text, PUBLIC_KEY_PREFIX)?)
}

/// The 32 bytes of `<prefix> <64 hex digits>`, with trailing whitespace allowed.
fn parse_key_line(text: &str, prefix: &'static str) -> Result<[u8; KEY_LEN], BundleError> {
    let line = text.trim_end();
    // A prefix alone (its digits missing) is a key of length 0, not a wrong prefix.
    let (word, hex) = line.split_once(' ').unwrap_or((line, ""));
    if word != prefix {
        return Err(BundleError::WrongKeyPrefix {
            expected: prefix,
            found: word.chars().take(64).collect(),
        });
    }
    // Character columns of the line are 1-based; the digits start after "<prefix> ".
    let first_column = prefix.chars().count() + 2;
    let mut bytes = [0u8; KEY_LEN];
    let mut digits = 0usize;
    for (i, c) in hex.chars().enumerate() {
        let Some(nibble) = hex_nibble(c) else {
            bytes.zeroize();
            return Err(BundleError::BadKeyHex {
                column: first_column + i,
                found: c,
            });
        };
        if let Some(byte) = bytes.get_mut(i / 2) {
            *byte |= if i % 2 == 0 { nibble << 4 } else { nibble };
        }
        digits += 1;
    }
    if digits != 2 * KEY_LEN {
        bytes.zeroize();
        return Err(BundleError::WrongKeyLength {
            expected_hex_digits: 2 * KEY_LEN,
            found_hex_digits: digits,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: [u8; 32] = [7; 32];

    #[test]
    fn generated_texts_parse_back() {
        let (secret, public) = generate_keypair().expect("keypair");
        assert!(secret.as_str().starts_with("edgearmor-ed25519-secret "));
        assert!(secret.as_str().ends_with('\n'));
        assert_eq!(secret.as_str().len(), SECRET_KEY_PREFIX.len() + 1 + 64 + 1);
        assert!(public.as_str().starts_with("edgearmor-ed25519-public "));
        let signing = parse_secret_key(secret.as_str()).expect("secret parses");
        let verifying = parse_public_key(public.as_str()).expect("public parses");
        assert_eq!(signing.verifying_key(), verifying);
        assert_eq!(verifying.to_text(), public);
        assert_eq!(format!("{secret:?}"), "SecretKeyText(<redacted>)");
        assert!(!format!("{signing:?}").contains(&secret.as_str()[25..89]));
    }

    #[test]
    fn generated_keys_differ() {
        let a = SigningKey::generate().expect("key");
        let b = SigningKey::generate().expect("key");
        assert_ne!(a.verifying_key(), b.verifying_key());
    }

    #[test]
    fn parse_accepts_uppercase_and_crlf() {
        let key = SigningKey::from_seed(&SEED);
        let text = key.verifying_key().to_text().as_str().to_uppercase();
        let text = text.replace("EDGEARMOR-ED25519-PUBLIC", PUBLIC_KEY_PREFIX);
        let text = text.replace('\n', "\r\n");
        assert_eq!(
            parse_public_key(&text).expect("parses"),
            key.verifying_key()
        );
    }

    #[test]
    fn wrong_prefix_is_named() {
        let key = SigningKey::from_seed(&SEED);
        // A public key file given where the secret one belongs.
        let err = parse_secret_key(key.verifying_key().to_text().as_str())
            .expect_err("wrong kind of key");
        match err {
            BundleError::WrongKeyPrefix { expected, found } => {
                assert_eq!(expected, SECRET_KEY_PREFIX);
                assert_eq!(found, PUBLIC_KEY_PREFIX);
            }
            other => panic!("unexpected {other:?}"),
        }
        // A bare hex string, without any prefix.
        let err = parse_public_key(&key.verifying_key().to_hex()).expect_err("no prefix");
        assert!(matches!(err, BundleError::WrongKeyPrefix { .. }), "{err:?}");
        let err = parse_public_key("").expect_err("empty");
        assert!(
            matches!(&err, BundleError::WrongKeyPrefix { found, .. } if found.is_empty()),
            "{err:?}"
        );
    }

    #[test]
    fn bad_hex_names_its_column() {
        let mut text = SigningKey::from_seed(&SEED).to_text().as_str().to_owned();
        // Column 26 is the first digit: "edgearmor-ed25519-secret" is 24 characters.
        text.replace_range(29..30, "x");
        let err = parse_secret_key(&text).expect_err("bad digit");
        match err {
            BundleError::BadKeyHex { column, found } => {
                assert_eq!((column, found), (30, 'x'));
                assert!(err.to_string().contains("character 30 ('x')"), "{err}");
            }
            other => panic!("unexpected {other:?}"),
        }
        // A second line is not part of the key.
        let key = SigningKey::from_seed(&SEED).verifying_key();
        let two_lines = format!("{PUBLIC_KEY_PREFIX} {}\nmore\n", key.to_hex());
        let err = parse_public_key(&two_lines).expect_err("second line");
        assert!(
            matches!(
                err,
                BundleError::BadKeyHex {
                    column: 90,
                    found: '\n'
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn wrong_length_is_counted() {
        let hex = SigningKey::from_seed(&SEED).verifying_key().to_hex();
        for digits in [0, 2, 63, 65, 128] {
            let body: String = hex.chars().cycle().take(digits).collect();
            let err = parse_public_key(&format!("{PUBLIC_KEY_PREFIX} {body}")).expect_err("length");
            assert!(
                matches!(
                    err,
                    BundleError::WrongKeyLength { expected_hex_digits: 64, found_hex_digits }
                        if found_hex_digits == digits
                ),
                "{digits}: {err:?}"
            );
        }
    }

    #[test]
    fn unusable_public_keys_are_refused() {
        // The identity point (small order) and a y coordinate with no curve point.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let err = VerifyingKey::from_bytes(&identity).expect_err("weak");
        assert!(
            matches!(err, BundleError::InvalidPublicKey { .. }),
            "{err:?}"
        );
        let mut not_on_curve = [0u8; 32];
        not_on_curve[0] = 2;
        let text = format!("{PUBLIC_KEY_PREFIX} {}", hex_encode(&not_on_curve));
        let err = parse_public_key(&text).expect_err("not a point");
        assert!(
            matches!(err, BundleError::InvalidPublicKey { .. }),
            "{err:?}"
        );
    }
}
