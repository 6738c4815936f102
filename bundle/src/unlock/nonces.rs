//! The unlock tokens a node has used: their nonces and expiries, in one small text
//! file in `state_dir`, replaced atomically, bounded by [`MAX_USED_NONCES`].
//!
//! ```text
//! floor=<Unix seconds>
//! <32 hex digits: nonce> <Unix seconds: the token's expiry>
//! ```
//!
//! When the file is full, the entry expiring first is dropped and `floor` raised to
//! its expiry: a token expiring no later than `floor` is refused whatever the clock
//! says, so a forgotten token cannot be replayed even by setting the clock back.

use std::path::Path;

use super::{NONCE_LEN, UnlockError, VerifiedUnlock};
use crate::files::{self, replace_atomically};
use crate::limits::MAX_USED_NONCES;
use crate::util::{hex_encode, hex_nibble};

/// The used-nonce file's name in `state_dir`.
pub const USED_NONCES_FILE: &str = "unlock-nonces";

/// Bytes of the longest valid file: the floor line and a full set of entries
/// (`floor=` 6, a u64 20, two spaces or newlines, 32 hex digits): read no further.
const MAX_FILE_BYTES: usize = (MAX_USED_NONCES + 1) * (2 * NONCE_LEN + 22 + 6);

/// The used tokens of one node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UsedNonces {
    /// Tokens expiring no later than this are refused (some were forgotten).
    floor_unix: u64,
    /// Nonce and expiry of each remembered token, oldest first.
    used: Vec<([u8; NONCE_LEN], u64)>,
}

impl UsedNonces {
    /// Refuses `token` if this node used it (or might have: it expires no later than
    /// a forgotten one), else records it in `path` before returning, so a crash
    /// during the unload that follows cannot make the token usable again.
    pub fn consume(path: &Path, token: &VerifiedUnlock) -> Result<(), UnlockError> {
        let mut used = Self::load(path)?;
        used.check(path, token)?;
        used.record(token);
        replace_atomically(path, used.to_text().as_bytes(), || {})?;
        Ok(())
    }

    /// The file at `path` (nothing used yet when there is none).
    pub fn load(path: &Path) -> Result<Self, UnlockError> {
        let Some(bytes) = files::read(path)? else {
            return Ok(Self::default());
        };
        let corrupt = |line: usize, detail: String| UnlockError::CorruptNonces {
            path: path.to_owned(),
            line,
            detail,
        };
        if bytes.len() > MAX_FILE_BYTES {
            return Err(corrupt(
                1,
                format!(
                    "{} bytes, more than {MAX_FILE_BYTES} ({MAX_USED_NONCES} used tokens, MAX_USED_NONCES)",
                    bytes.len()
                ),
            ));
        }
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            let line = 1 + bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            corrupt(line, "not UTF-8".into())
        })?;
        Self::parse(text).map_err(|(line, detail)| corrupt(line, detail))
    }

    /// The file's text, or the 1-based line that is wrong and why.
    fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
        let floor_unix = match lines.next() {
            Some((_, line)) => match line.strip_prefix("floor=").map(str::parse::<u64>) {
                Some(Ok(floor)) => floor,
                _ => return Err((1, format!("{line:?} is not floor=<Unix seconds>"))),
            },
            None => return Err((1, "empty: no floor= line".into())),
        };
        let mut used = Vec::new();
        for (number, line) in lines {
            if used.len() == MAX_USED_NONCES {
                return Err((
                    number,
                    format!("more than {MAX_USED_NONCES} used tokens (MAX_USED_NONCES)"),
                ));
            }
            let entry = line.split_once(' ').and_then(|(nonce, expiry)| {
                Some((parse_nonce(nonce)?, expiry.parse::<u64>().ok()?))
            });
            match entry {
                Some(entry) => used.push(entry),
                None => {
                    return Err((
                        number,
                        format!("{line:?} is not <32 hex digits> <Unix seconds>"),
                    ));
                }
            }
        }
        Ok(Self { floor_unix, used })
    }

    fn check(&self, path: &Path, token: &VerifiedUnlock) -> Result<(), UnlockError> {
        let claims = token.claims();
        if self.used.iter().any(|(nonce, _)| *nonce == claims.nonce) {
            return Err(UnlockError::Replayed {
                nonce_hex: token.nonce_hex(),
                path: path.to_owned(),
            });
        }
        if claims.not_after_unix <= self.floor_unix {
            return Err(UnlockError::Forgotten {
                not_after_unix: claims.not_after_unix,
                floor_unix: self.floor_unix,
                path: path.to_owned(),
            });
        }
        Ok(())
    }

    /// Adds `token`, forgetting the entry expiring first when full (raising the floor).
    pub(super) fn record(&mut self, token: &VerifiedUnlock) {
        let claims = token.claims();
        self.used.push((claims.nonce, claims.not_after_unix));
        while self.used.len() > MAX_USED_NONCES {
            let Some(first) = (0..self.used.len()).min_by_key(|&i| self.used[i].1) else {
                break;
            };
            let (_, expiry) = self.used.remove(first);
            self.floor_unix = self.floor_unix.max(expiry);
        }
    }

    /// How many used tokens are remembered.
    pub fn len(&self) -> usize {
        self.used.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.used.is_empty()
    }

    /// Tokens expiring no later than this are refused.
    pub fn floor_unix(&self) -> u64 {
        self.floor_unix
    }

    pub(super) fn to_text(&self) -> String {
        let mut text = format!("floor={}\n", self.floor_unix);
        for (nonce, expiry) in &self.used {
            text.push_str(&format!("{} {expiry}\n", hex_encode(nonce)));
        }
        text
    }
}

fn parse_nonce(hex: &str) -> Option<[u8; NONCE_LEN]> {
    if hex.len() != 2 * NONCE_LEN {
        return None;
    }
    let mut nonce = [0u8; NONCE_LEN];
    for (i, c) in hex.chars().enumerate() {
        nonce[i / 2] |= hex_nibble(c)? << if i % 2 == 0 { 4 } else { 0 };
    }
    Some(nonce)
}
