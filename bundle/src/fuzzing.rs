//! The fuzz harness's entry point (`fuzz/fuzz_targets/bundle_verify.rs`), here so the
//! fuzz target, the regression test of checked-in inputs and anyone reproducing a
//! crash run exactly the same code.
//!
//! An input starting with `EABNDL` is a whole bundle, verified as an agent would
//! (signed by [`FUZZ_SEED`]'s key, or not). Any other input is a body: its first
//! byte picks format 2 (even) or 1 (odd), the rest is signed with that key after the
//! format's magic, so the fuzzer reaches the body reader past the signature. Every
//! invariant below panics when broken:
//!
//! - [`verify`] never panics; what it accepts is within every cap of
//!   [`crate::limits`], has valid unique file names, and a node scope with targets
//!   (format 1: fleet scope);
//! - what it accepts, [`create`] signs again, and that verifies to the same content;
//! - the body reader agrees with postcard: what it accepts postcard decodes to the
//!   same value, and what postcard decodes exactly it accepts, unless a cap refuses.
//!
//! Every input is also an unlock token's claims ([`crate::unlock`]), signed after
//! its magic (or, starting with `EAUNLK`, a whole token): [`verify_unlock_token`]
//! never panics, and what it accepts is for the node asked, within the node name's
//! cap and the validity limit, and signs again to a token with the same claims.

use std::collections::HashSet;

use crate::body::decode_body;
use crate::format::{FormatVersion, sign_bundle};
use crate::limits::{
    MAX_BUNDLE_BYTES, MAX_BUNDLE_FILE_BYTES, MAX_BUNDLE_FILES, MAX_FILE_NAME_BYTES,
    MAX_TARGET_BYTES, MAX_TARGETS,
};
use crate::{
    BundleBody, BundleError, MAGIC, MAGIC_V1, Scope, SigningKey, VerifiedBundle, check_file_name,
    create, verify,
};

/// The seed of the key fuzz inputs are signed with.
pub const FUZZ_SEED: [u8; 32] = [0x42; 32];

/// Runs one input; panics if an invariant breaks.
pub fn run_input(data: &[u8]) {
    check_unlock_token(data);
    let key = SigningKey::from_seed(&FUZZ_SEED);
    let keys = [key.verifying_key()];
    let bytes = match data.split_first() {
        Some(_) if data.starts_with(b"EABNDL") => data.to_vec(),
        None => data.to_vec(),
        Some((selector, body)) => {
            let format = if selector % 2 == 0 {
                FormatVersion::V2
            } else {
                FormatVersion::V1
            };
            check_body_reader(body, format);
            let magic = match format {
                FormatVersion::V2 => MAGIC,
                FormatVersion::V1 => MAGIC_V1,
            };
            let mut signed = magic.to_vec();
            signed.extend_from_slice(body);
            sign_bundle(&key, signed)
        }
    };
    if let Ok(bundle) = verify(&bytes, &keys, MAX_BUNDLE_BYTES) {
        check_verified(&bundle);
        let again = create(&key, &body_of(&bundle)).expect("what verifies can be signed again");
        let again = verify(&again, &keys, MAX_BUNDLE_BYTES).expect("and verifies again");
        assert_eq!(body_of(&again), body_of(&bundle), "the same content");
        assert_eq!(again.format(), FormatVersion::V2);
    }
}

fn body_of(bundle: &VerifiedBundle) -> BundleBody {
    BundleBody {
        version: bundle.version(),
        created_unix: bundle.created_unix(),
        targets: bundle.targets().to_vec(),
        files: bundle.files().to_vec(),
        scope: bundle.scope(),
    }
}

fn check_verified(bundle: &VerifiedBundle) {
    assert!(bundle.files().len() <= MAX_BUNDLE_FILES);
    assert!(bundle.targets().len() <= MAX_TARGETS);
    assert!(bundle.targets().iter().all(|t| t.len() <= MAX_TARGET_BYTES));
    let mut names = HashSet::new();
    for file in bundle.files() {
        assert!(file.name.len() <= MAX_FILE_NAME_BYTES);
        assert!(file.contents.len() <= MAX_BUNDLE_FILE_BYTES);
        assert!(check_file_name(&file.name).is_ok(), "{:?}", file.name);
        assert!(names.insert(file.name.as_str()), "{:?} twice", file.name);
    }
    match bundle.scope() {
        Scope::Node => {
            assert!(!bundle.targets().is_empty() && !bundle.targets().iter().any(|t| t == "*"));
            assert_eq!(bundle.format(), FormatVersion::V2);
        }
        Scope::Fleet => {}
    }
}

/// The hand-written body reader against postcard's derived one.
fn check_body_reader(body: &[u8], format: FormatVersion) {
    let ours = decode_body(body, format);
    match format {
        FormatVersion::V2 => {
            let theirs = postcard::take_from_bytes::<BundleBody>(body)
                .ok()
                .filter(|(_, rest)| rest.is_empty())
                .map(|(body, _)| body);
            match (&ours, theirs) {
                (Ok(ours), theirs) => assert_eq!(Some(ours), theirs.as_ref(), "postcard agrees"),
                (Err(BundleError::LimitExceeded { .. }), _) | (Err(_), None) => {}
                (Err(e), Some(theirs)) => panic!("refused ({e}) what postcard reads: {theirs:?}"),
            }
        }
        FormatVersion::V1 => {
            if let Ok(ours) = &ours {
                assert_eq!(ours.scope, Scope::Fleet, "format 1 is fleet-wide");
            }
        }
    }
}

/// The unlock token invariants (see the module's documentation).
fn check_unlock_token(data: &[u8]) {
    use crate::limits::{MAX_UNLOCK_NODE_BYTES, MAX_UNLOCK_VALIDITY_SECS};
    use crate::unlock::{UNLOCK_MAGIC, create_unlock_token, verify_unlock_token};
    let key = SigningKey::from_seed(&FUZZ_SEED);
    let keys = [key.verifying_key()];
    let bytes = if data.starts_with(b"EAUNLK") {
        data.to_vec()
    } else {
        let mut signed = UNLOCK_MAGIC.to_vec();
        signed.extend_from_slice(data);
        sign_bundle(&key, signed)
    };
    // The node and clock an accepted token names, so acceptance is reachable.
    let node = bytes
        .get(UNLOCK_MAGIC.len() + 1..)
        .and_then(|rest| rest.get(..usize::from(bytes[UNLOCK_MAGIC.len()].min(64))))
        .and_then(|n| std::str::from_utf8(n).ok())
        .unwrap_or("gw");
    for now in [0, 1_800_000_000, i64::MAX] {
        if let Ok(token) = verify_unlock_token(&bytes, &keys, node, now) {
            let claims = token.claims();
            assert_eq!(claims.node, node);
            assert!(claims.node.len() <= MAX_UNLOCK_NODE_BYTES);
            assert!(claims.not_after_unix - claims.issued_unix <= MAX_UNLOCK_VALIDITY_SECS);
            let again = create_unlock_token(&key, claims).expect("what verifies signs again");
            let again = verify_unlock_token(&again, &keys, node, now).expect("and verifies");
            assert_eq!(again.claims(), claims);
        }
    }
}
