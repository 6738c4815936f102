use std::fs;

use super::*;
use crate::limits::MAX_USED_NONCES;
use crate::test_dir::TestDir;

const NOW: u64 = 1_800_000_000;

fn key(n: u8) -> SigningKey {
    SigningKey::from_seed(&[n; 32])
}

fn claims(node: &str, issued: u64, valid_for: u64) -> UnlockClaims {
    new_unlock_claims(node, issued, valid_for).expect("claims")
}

fn token(claims: &UnlockClaims) -> Vec<u8> {
    create_unlock_token(&key(1), claims).expect("signs")
}

fn verify(bytes: &[u8], node: &str, now: u64) -> Result<VerifiedUnlock, UnlockError> {
    verify_unlock_token(bytes, &[key(1).verifying_key()], node, now as i64)
}

/// `claims` signed without the checks `create_unlock_token` makes.
fn sign_unchecked(claims: &UnlockClaims) -> Vec<u8> {
    let signed = postcard::to_extend(claims, UNLOCK_MAGIC.to_vec()).expect("encodes");
    sign_raw(signed)
}

fn sign_raw(mut signed: Vec<u8>) -> Vec<u8> {
    let signature = key(1).sign(&signed);
    signed.extend_from_slice(&signature);
    signed
}

#[test]
fn round_trip_and_layout() {
    let c = claims("gw-7", NOW, 3600);
    let bytes = token(&c);
    assert_eq!(&bytes[..8], b"EAUNLK1\n");
    // Magic, node length and name, two 5-byte varints, the nonce, the signature.
    assert_eq!(bytes.len(), 8 + 1 + 4 + 5 + 5 + NONCE_LEN + SIGNATURE_LEN);
    let verified = verify(&bytes, "gw-7", NOW + 10).expect("verifies");
    assert_eq!(verified.claims(), &c);
    assert_eq!(verified.nonce_hex(), hex_encode(&c.nonce));
    assert_eq!(c.not_after_unix, NOW + 3600);
    // Two tokens never share a nonce.
    assert_ne!(claims("gw-7", NOW, 60).nonce, c.nonce);
    // Any trusted key will do.
    let keys = [key(2).verifying_key(), key(1).verifying_key()];
    verify_unlock_token(&bytes, &keys, "gw-7", NOW as i64).expect("second key");
}

#[test]
fn the_clock_decides_within_the_bounds() {
    let bytes = token(&claims("gw-7", NOW, 3600));
    // The last second counts; the one after it does not.
    verify(&bytes, "gw-7", NOW + 3600).expect("last second");
    let err = verify(&bytes, "gw-7", NOW + 3601).expect_err("expired");
    assert!(
        matches!(err, UnlockError::Expired { not_after_unix, now_unix }
            if not_after_unix == NOW + 3600 && now_unix == (NOW + 3601) as i64),
        "{err:?}"
    );
    assert!(err.to_string().contains("expired at 1800003600"), "{err}");
    // A node clock a little behind the signer's is fine, far behind is not.
    verify(&bytes, "gw-7", NOW - UNLOCK_CLOCK_SKEW_SECS).expect("within skew");
    let err = verify(&bytes, "gw-7", NOW - UNLOCK_CLOCK_SKEW_SECS - 1).expect_err("early");
    assert!(matches!(err, UnlockError::NotYetValid { .. }), "{err:?}");
    assert!(err.to_string().contains("set the clock"), "{err}");
    // A gateway booted in 1970 (no real-time clock), or a clock before the epoch.
    for now in [0i64, -5] {
        let err =
            verify_unlock_token(&bytes, &[key(1).verifying_key()], "gw-7", now).expect_err("1970");
        assert!(matches!(err, UnlockError::NotYetValid { .. }), "{err:?}");
    }
}

#[test]
fn validity_over_the_limit_is_refused_naming_it() {
    let at_limit = claims("gw-7", NOW, MAX_UNLOCK_VALIDITY_SECS);
    verify(&token(&at_limit), "gw-7", NOW).expect("24 h is the limit");
    let err = new_unlock_claims("gw-7", NOW, MAX_UNLOCK_VALIDITY_SECS + 1).expect_err("long");
    assert!(
        err.to_string().contains("valid for 86401 s, too long")
            && err
                .to_string()
                .contains("limit is 86400 s (MAX_UNLOCK_VALIDITY_SECS)"),
        "{err}"
    );
    // Signed anyway (by a tool that does not check): agents refuse it.
    let mut long = at_limit.clone();
    long.not_after_unix += 1;
    assert!(matches!(
        create_unlock_token(&key(1), &long),
        Err(UnlockError::BadValidity { .. })
    ));
    let err = verify(&sign_unchecked(&long), "gw-7", NOW).expect_err("long");
    assert!(matches!(err, UnlockError::BadValidity { .. }), "{err:?}");
    // A future issue time cannot stretch the window: the start is checked too.
    let mut backwards = at_limit;
    backwards.not_after_unix = NOW - 1;
    let err = verify(&sign_unchecked(&backwards), "gw-7", NOW).expect_err("backwards");
    assert!(
        err.to_string().contains("expires before it is issued"),
        "{err}"
    );
}

#[test]
fn a_token_is_for_one_node_exactly() {
    let bytes = token(&claims("gw-7", NOW, 60));
    for other in ["gw-70", "gw-", "GW-7", "site/gw-7", ""] {
        let err = verify(&bytes, other, NOW).expect_err(other);
        assert!(
            matches!(&err, UnlockError::ForeignNode { token_node, this_node }
                if token_node == "gw-7" && this_node == other),
            "{other}: {err:?}"
        );
    }
    for (node, needle) in [
        ("", "is empty"),
        ("gw-*", "exactly"),
        ("site/gw", "exactly"),
        ("gw 7", "printable"),
        ("gw\n7", "printable"),
    ] {
        let err = new_unlock_claims(node, NOW, 60).expect_err(node);
        assert!(
            matches!(&err, UnlockError::BadNode { reason, .. } if reason.contains(needle)),
            "{node:?}: {err:?}"
        );
    }
    let long = "n".repeat(MAX_UNLOCK_NODE_BYTES + 1);
    assert!(matches!(
        new_unlock_claims(&long, NOW, 60),
        Err(UnlockError::BadNode { .. })
    ));
    new_unlock_claims(&long[1..], NOW, 60).expect("64 bytes");
}

#[test]
fn signatures_are_checked_before_anything_is_decoded() {
    let bytes = token(&claims("gw-7", NOW, 60));
    for i in UNLOCK_MAGIC.len()..bytes.len() {
        let mut tampered = bytes.clone();
        tampered[i] ^= 0x01;
        let err = verify(&tampered, "gw-7", NOW).expect_err("tampered");
        assert!(
            matches!(err, UnlockError::BadSignature { keys_tried: 1 }),
            "byte {i}: {err:?}"
        );
    }
    let err = verify_unlock_token(&bytes, &[key(2).verifying_key()], "gw-7", NOW as i64)
        .expect_err("other key");
    assert!(matches!(err, UnlockError::BadSignature { .. }), "{err:?}");
    let err = verify_unlock_token(&bytes, &[], "gw-7", NOW as i64).expect_err("no keys");
    assert!(matches!(err, UnlockError::NoTrustedKeys), "{err:?}");
    // A bundle signed with the same key is not a token.
    let err = verify(b"EABNDL2\nanything", "gw-7", NOW).expect_err("a bundle");
    assert!(
        matches!(&err, UnlockError::NotAToken { prefix } if prefix == b"EABNDL2\n"),
        "{err:?}"
    );
    assert!(err.to_string().contains("EABNDL2\\n"), "{err}");
    let err = verify(&[0; MAX_UNLOCK_TOKEN_BYTES + 1], "gw-7", NOW).expect_err("big");
    assert!(
        matches!(
            err,
            UnlockError::TooLarge {
                size: 513,
                limit: 512
            }
        ),
        "{err:?}"
    );
    let mut short = UNLOCK_MAGIC.to_vec();
    short.extend_from_slice(&[0; SIGNATURE_LEN - 1]);
    let err = verify(&short, "gw-7", NOW).expect_err("short");
    assert!(err.to_string().contains("too few for the 64-byte"), "{err}");
}

#[test]
fn signed_garbage_is_malformed_naming_the_field_and_byte() {
    let c = claims("gw-7", NOW, 60);
    let good = postcard::to_extend(&c, UNLOCK_MAGIC.to_vec()).expect("encodes");
    let mut trailing = good.clone();
    trailing.push(0);
    let err = verify(&sign_raw(trailing), "gw-7", NOW).expect_err("trailing");
    assert!(
        err.to_string().contains("1 bytes after the claims"),
        "{err}"
    );
    let mut cut = good.clone();
    cut.pop();
    let err = verify(&sign_raw(cut), "gw-7", NOW).expect_err("cut");
    assert!(
        err.to_string()
            .contains("the nonce: 16 bytes but only 15 remain"),
        "{err}"
    );
    // A node name claimed longer than the limit: refused before reading it.
    let mut long = UNLOCK_MAGIC.to_vec();
    long.extend_from_slice(&[65, b'x']);
    let err = verify(&sign_raw(long), "gw-7", NOW).expect_err("long name");
    assert!(
        err.to_string()
            .contains("the node name: 65 exceeds the limit of 64 (MAX_UNLOCK_NODE_BYTES)"),
        "{err}"
    );
    let mut not_utf8 = UNLOCK_MAGIC.to_vec();
    not_utf8.extend_from_slice(&[1, 0xff]);
    let err = verify(&sign_raw(not_utf8), "gw-7", NOW).expect_err("utf-8");
    assert!(
        err.to_string()
            .contains("at body byte 0: the node name is not UTF-8"),
        "{err}"
    );
}

fn nonces_path(dir: &TestDir) -> std::path::PathBuf {
    dir.path().join(USED_NONCES_FILE)
}

#[test]
fn a_token_is_single_use() {
    let dir = TestDir::new("nonces");
    let path = nonces_path(&dir);
    let bytes = token(&claims("gw-7", NOW, 60));
    let first = verify(&bytes, "gw-7", NOW).expect("verifies");
    UsedNonces::consume(&path, &first).expect("first use");
    let again = verify(&bytes, "gw-7", NOW + 1).expect("still verifies");
    let err = UsedNonces::consume(&path, &again).expect_err("replayed");
    assert!(
        matches!(&err, UnlockError::Replayed { nonce_hex, path: p }
            if *nonce_hex == first.nonce_hex() && *p == path),
        "{err:?}"
    );
    assert!(err.to_string().contains("single use"), "{err}");
    // Another token goes through, and both are remembered on disk.
    let other = verify(&token(&claims("gw-7", NOW, 60)), "gw-7", NOW).expect("verifies");
    UsedNonces::consume(&path, &other).expect("another token");
    let used = UsedNonces::load(&path).expect("loads");
    assert_eq!((used.len(), used.floor_unix()), (2, 0));
    let text = fs::read_to_string(&path).expect("reads");
    assert_eq!(
        text,
        format!(
            "floor=0\n{} {}\n{} {}\n",
            first.nonce_hex(),
            NOW + 60,
            other.nonce_hex(),
            NOW + 60
        )
    );
}

#[test]
fn a_full_memory_forgets_the_oldest_and_refuses_anything_as_old() {
    let dir = TestDir::new("nonces-full");
    let path = nonces_path(&dir);
    // Expiries NOW+1 .. NOW+MAX remembered (written once), then one more consumed:
    // the first is forgotten.
    let mut first = None;
    let mut used = UsedNonces::default();
    for i in 0..=MAX_USED_NONCES as u64 {
        // Made directly (signing 513 tokens is slow in debug builds): the nonce file
        // only reads the claims.
        let verified = VerifiedUnlock {
            claims: claims("gw-7", NOW, 1 + i),
        };
        if i == MAX_USED_NONCES as u64 {
            fs::write(&path, used.to_text()).expect("writes");
            UsedNonces::consume(&path, &verified).expect("consumes");
        } else {
            used.record(&verified);
        }
        first.get_or_insert(verified);
    }
    assert_eq!(used.len(), MAX_USED_NONCES);
    let used = UsedNonces::load(&path).expect("loads");
    assert_eq!((used.len(), used.floor_unix()), (MAX_USED_NONCES, NOW + 1));
    // The forgotten token is refused still, and so is any other as old.
    let Some(first) = first else { unreachable!() };
    let err = UsedNonces::consume(&path, &first).expect_err("forgotten");
    assert!(
        matches!(err, UnlockError::Forgotten { floor_unix, .. } if floor_unix == NOW + 1),
        "{err:?}"
    );
    let as_old = verify(&token(&claims("gw-7", NOW - 9, 10)), "gw-7", NOW).expect("verifies");
    assert!(matches!(
        UsedNonces::consume(&path, &as_old),
        Err(UnlockError::Forgotten { .. })
    ));
    let newer = verify(&token(&claims("gw-7", NOW, 2)), "gw-7", NOW).expect("verifies");
    UsedNonces::consume(&path, &newer).expect("newer than the floor");
}

#[test]
fn a_damaged_nonce_file_refuses_every_token_naming_the_line() {
    let dir = TestDir::new("nonces-bad");
    let path = nonces_path(&dir);
    let verified = verify(&token(&claims("gw-7", NOW, 60)), "gw-7", NOW).expect("verifies");
    let nonce = "ab".repeat(NONCE_LEN);
    for (text, line, needle) in [
        (String::new(), 1, "no floor= line"),
        ("floor=x\n".to_owned(), 1, "is not floor="),
        (
            format!("floor=0\n{nonce} 5\n{nonce}\n"),
            3,
            "is not <32 hex",
        ),
        (format!("floor=0\n{} 5\n", &nonce[1..]), 2, "is not <32 hex"),
        (format!("floor=0\n{nonce} -5\n"), 2, "is not <32 hex"),
    ] {
        fs::write(&path, &text).expect("writes");
        let err = UsedNonces::consume(&path, &verified).expect_err(&text);
        match &err {
            UnlockError::CorruptNonces {
                line: l, detail, ..
            } => {
                assert_eq!(*l, line, "{text:?}");
                assert!(detail.contains(needle), "{text:?}: {detail}");
            }
            other => panic!("{text:?}: {other:?}"),
        }
        assert!(
            err.to_string()
                .starts_with(&format!("{}:{line}: ", path.display())),
            "{err}"
        );
    }
    let too_many = format!(
        "floor=0\n{}",
        format!("{nonce} 1\n").repeat(MAX_USED_NONCES + 1)
    );
    fs::write(&path, &too_many).expect("writes");
    let err = UsedNonces::consume(&path, &verified).expect_err("too many");
    assert!(err.to_string().contains("MAX_USED_NONCES"), "{err}");
    // A planted symbolic link is refused, not followed.
    fs::remove_file(&path).expect("removes");
    let target = dir.path().join("elsewhere");
    fs::write(&target, "floor=0\n").expect("writes");
    std::os::unix::fs::symlink(&target, &path).expect("links");
    let err = UsedNonces::consume(&path, &verified).expect_err("a link");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert_eq!(fs::read_to_string(&target).expect("reads"), "floor=0\n");
}

#[test]
fn the_fuzz_harness_reaches_an_accepted_token() {
    let key = SigningKey::from_seed(&crate::fuzzing::FUZZ_SEED);
    let claims = UnlockClaims {
        node: "gw-7".into(),
        issued_unix: NOW - 10,
        not_after_unix: NOW + 50,
        nonce: [7; NONCE_LEN],
    };
    let bytes = create_unlock_token(&key, &claims).expect("signs");
    verify_unlock_token(&bytes, &[key.verifying_key()], "gw-7", NOW as i64).expect("accepted");
    // The checked-in seed is this token: the harness verifies it and signs it again.
    let seed = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds/bundle_verify/unlock-token");
    assert_eq!(fs::read(&seed).expect("seed"), bytes, "{}", seed.display());
    crate::fuzzing::run_input(&bytes);
    crate::fuzzing::run_input(&bytes[UNLOCK_MAGIC.len()..bytes.len() - SIGNATURE_LEN]);
}
