//! `edgearmor unlock-token create` and `edgearmor unload`'s refusals as an operator
//! runs them, without root: the token file (mode 0600, never over another file,
//! accepted by the verifier agents use), every refused option named, and an `unload`
//! that cannot read the lock state removing nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use edgearmor_bundle::unlock::verify_unlock_token;
use edgearmor_bundle::{parse_public_key, parse_secret_key};

fn edgearmor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgearmor"))
        .args(args)
        .output()
        .expect("edgearmor runs")
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("unlock-token-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn keygen(dir: &Path) -> (PathBuf, PathBuf) {
    let prefix = dir.join("fleet");
    let prefix = prefix.to_str().expect("UTF-8 path");
    assert!(edgearmor(&["keygen", "--out", prefix]).status.success());
    (dir.join("fleet.key"), dir.join("fleet.pub"))
}

#[test]
fn a_created_token_verifies_for_its_node_only_and_is_private() {
    let dir = scratch("create");
    let (key, public) = keygen(&dir);
    let out = dir.join("gw-7.tok");
    let args = |out: &Path, expires: &str| {
        vec![
            "unlock-token".to_owned(),
            "create".into(),
            "--key".into(),
            key.display().to_string(),
            "--node".into(),
            "gw-7".into(),
            "--expires-in".into(),
            expires.into(),
            "--out".into(),
            out.display().to_string(),
        ]
    };
    let run = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        edgearmor(&refs)
    };
    let made = run(args(&out, "30m"));
    assert!(made.status.success(), "{}", text(&made.stderr));
    let stdout = text(&made.stdout);
    assert!(
        stdout.contains("for node gw-7") && stdout.contains("once"),
        "{stdout}"
    );
    let mode = std::fs::metadata(&out)
        .expect("written")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    let bytes = std::fs::read(&out).expect("reads");
    let keys = [parse_public_key(&std::fs::read_to_string(&public).expect("pub")).expect("key")];
    // The clock `unlock-token create` read (no fake shift is set here).
    let now = (edgearmor::host::wall_clock_ns() / 1_000_000_000) as i64;
    let token = verify_unlock_token(&bytes, &keys, "gw-7", now).expect("verifies");
    let claims = token.claims();
    assert_eq!(claims.not_after_unix - claims.issued_unix, 1800);
    assert!(stdout.contains(&token.nonce_hex()), "{stdout}");
    assert!(verify_unlock_token(&bytes, &keys, "gw-8", now).is_err());
    assert!(verify_unlock_token(&bytes, &keys, "gw-7", now + 1801).is_err());
    // The secret key file's public half is what verifies.
    let secret = parse_secret_key(&std::fs::read_to_string(&key).expect("key")).expect("parses");
    assert_eq!(secret.verifying_key(), keys[0]);

    // Never over an existing file (a token already handed out stays what it was).
    let again = run(args(&out, "30m"));
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("File exists"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(std::fs::read(&out).expect("reads"), bytes);

    // Too long, named with its limit; nothing written.
    let long = dir.join("long.tok");
    let refused = run(args(&long, "25h"));
    assert_eq!(refused.status.code(), Some(1));
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains("--expires-in 25h: 90000 s") && stderr.contains("MAX_UNLOCK_VALIDITY_SECS"),
        "{stderr}"
    );
    assert!(!long.exists());
}

#[test]
fn bad_nodes_and_missing_options_are_named() {
    let dir = scratch("refusals");
    let (key, _) = keygen(&dir);
    let key = key.display().to_string();
    let out = dir.join("t.tok").display().to_string();
    for (node, needle) in [("gw-*", "exactly"), ("", "is empty"), ("gw 7", "printable")] {
        let refused = edgearmor(&[
            "unlock-token",
            "create",
            "--key",
            &key,
            "--node",
            node,
            "--expires-in",
            "1h",
            "--out",
            &out,
        ]);
        assert_eq!(refused.status.code(), Some(1), "{node:?}");
        assert!(
            text(&refused.stderr).contains(needle),
            "{node:?}: {}",
            text(&refused.stderr)
        );
    }
    let refused = edgearmor(&["unlock-token", "create", "--key", &key, "--out", &out]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("give --node NODE"),
        "{}",
        text(&refused.stderr)
    );
    // A public key where the secret one belongs.
    let public = dir.join("fleet.pub").display().to_string();
    let refused = edgearmor(&[
        "unlock-token",
        "create",
        "--key",
        &public,
        "--node",
        "gw-7",
        "--expires-in",
        "1h",
        "--out",
        &out,
    ]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("edgearmor-ed25519-secret"),
        "{}",
        text(&refused.stderr)
    );
    assert!(!Path::new(&out).exists());
}

#[test]
fn unload_that_cannot_read_the_lock_removes_nothing() {
    let dir = scratch("unreadable-lock");
    let pins = dir.join("pins");
    std::fs::create_dir_all(pins.join("links")).expect("pins");
    // Not a pinned map: the lock state cannot be read, which is not "unlocked".
    std::fs::write(pins.join("LOCK_STATE"), "not a map").expect("writes");
    std::fs::write(pins.join("RULES"), "x").expect("writes");
    let config = dir.join("agent.toml");
    std::fs::write(&config, format!("pin_dir = \"{}\"\n", pins.display())).expect("config");
    let config = config.display().to_string();
    let out = edgearmor(&["unload", "--config", &config, "--token", "/nonexistent"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("cannot tell whether the kernel is locked")
            && stderr.contains("nothing removed"),
        "{stderr}"
    );
    assert!(pins.join("RULES").exists() && pins.join("LOCK_STATE").exists());
    // Flags that could change what a token is checked against are not unload's.
    let out = edgearmor(&["unload", "--config", &config, "--host-name", "gw-8"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("unknown option --host-name"),
        "{}",
        text(&out.stderr)
    );
}
