//! The fleet's signing side: `edgearmor keygen`, `edgearmor bundle create|verify` and
//! `edgearmor unlock-token create`.
//! These run off the gateways (the secret key never goes there); the agent's side of
//! bundles is [`crate::control::fleet`].

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use edgearmor_bundle::limits::{MAX_BUNDLE_BYTES, MAX_BUNDLE_FILE_BYTES};
use edgearmor_bundle::{BundleBody, BundleFile, Scope};

use crate::events::pipeline::unix_micros;

/// `keygen --out PREFIX`: PREFIX.key (mode 0600, never overwritten) and PREFIX.pub.
pub fn keygen(prefix: &Path) -> ExitCode {
    let fail = |msg: String| super::fail(1, format_args!("keygen: {msg}"));
    let (secret, public) = match edgearmor_bundle::generate_keypair() {
        Ok(pair) => pair,
        Err(e) => return fail(e.to_string()),
    };
    let secret_path = prefix.with_extension("key");
    let public_path = prefix.with_extension("pub");
    let write_secret = || -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&secret_path)?;
        writeln!(f, "{}", secret.as_str())
    };
    if let Err(e) = write_secret() {
        return fail(format!("{}: {e}", secret_path.display()));
    }
    if let Err(e) = std::fs::write(&public_path, format!("{}\n", public.as_str())) {
        return fail(format!("{}: {e}", public_path.display()));
    }
    println!(
        "secret key {} (keep it off the gateways), public key {}",
        secret_path.display(),
        public_path.display()
    );
    ExitCode::SUCCESS
}

/// `bundle create`: signs the policy files (each must pass `policy check`, as agents
/// refuse a bundle with a bad file) into one bundle of `scope`, which is signed with
/// them (agents apply it only from that scope's topic).
pub fn create(
    key: &Path,
    version: u64,
    scope: Scope,
    targets: &[String],
    out: &Path,
    policies: &[PathBuf],
) -> ExitCode {
    let fail = |msg: String| super::fail(1, format_args!("bundle create: {msg}"));
    let key = match read_secret_key(key) {
        Ok(k) => k,
        Err(e) => return fail(e),
    };
    // A label target with bad syntax would name no node: refuse it here, named.
    for target in targets {
        if let Some(Err(e)) = edgearmor_policy::node_labels::parse_label_target(target) {
            return fail(e);
        }
    }
    let diagnostics = edgearmor_policy::check_policy_paths(policies);
    if !diagnostics.is_empty() {
        for d in &diagnostics {
            println!("{d}");
        }
        return fail(format!("{} problem(s) in the policies", diagnostics.len()));
    }
    let files = match read_policy_files(policies) {
        Ok(files) => files,
        Err(e) => return fail(e),
    };
    let file_count = files.len();
    let body = BundleBody {
        version,
        created_unix: unix_micros() / 1_000_000,
        targets: targets.to_vec(),
        files,
        scope,
    };
    let bytes = match edgearmor_bundle::create(&key, &body) {
        Ok(bytes) => bytes,
        Err(e) => return fail(e.to_string()),
    };
    if let Err(e) = std::fs::write(out, &bytes) {
        return fail(format!("{}: {e}", out.display()));
    }
    println!(
        "bundle {} version {version}, scope {scope}, {file_count} file(s), {} bytes",
        out.display(),
        bytes.len()
    );
    ExitCode::SUCCESS
}

/// The signing key in the secret key file `path`.
fn read_secret_key(path: &Path) -> Result<edgearmor_bundle::SigningKey, String> {
    std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|t| edgearmor_bundle::parse_secret_key(&t).map_err(|e| e.to_string()))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// `unlock-token create`: a token letting `unload` remove enforcement from `node`
/// once, within `valid_for_secs` from now (this machine's clock). Written with mode
/// 0600, never over an existing file: whoever holds it can unlock the node.
pub fn unlock_token_create(key: &Path, node: &str, valid_for_secs: u64, out: &Path) -> ExitCode {
    let fail = |msg: String| super::fail(1, format_args!("unlock-token create: {msg}"));
    let key = match read_secret_key(key) {
        Ok(k) => k,
        Err(e) => return fail(e),
    };
    let issued = unix_micros() / 1_000_000;
    let token = edgearmor_bundle::unlock::new_unlock_claims(node, issued, valid_for_secs).and_then(
        |claims| edgearmor_bundle::unlock::create_unlock_token(&key, &claims).map(|t| (claims, t)),
    );
    let (claims, bytes) = match token {
        Ok(t) => t,
        Err(e) => return fail(e.to_string()),
    };
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(out)?
            .write_all(&bytes)
    };
    if let Err(e) = write() {
        return fail(format!("{}: {e}", out.display()));
    }
    println!(
        "unlock token {} for node {node}: valid from {issued} to {} (Unix seconds), once; nonce {}",
        out.display(),
        claims.not_after_unix,
        edgearmor_bundle::unlock::nonce_hex(&claims.nonce)
    );
    ExitCode::SUCCESS
}

/// Each file's name (as it will be unpacked on the gateway) and contents, read up
/// to one byte past what a bundle file may hold (`create` refuses more).
fn read_policy_files(policies: &[PathBuf]) -> Result<Vec<BundleFile>, String> {
    let mut files = Vec::new();
    for path in policies {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        edgearmor_bundle::check_file_name(&name).map_err(|e| format!("{}: {e}", path.display()))?;
        let contents = read_capped(path, MAX_BUNDLE_FILE_BYTES)?;
        files.push(BundleFile { name, contents });
    }
    Ok(files)
}

/// At most `limit + 1` bytes of `path`: enough to tell a file over the limit.
fn read_capped(path: &Path, limit: usize) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(limit as u64 + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(bytes)
}

/// `bundle verify`: checks the signature against the given public keys and lists
/// what the bundle holds.
pub fn verify(public_keys: &[PathBuf], max_bytes: usize, bundle: &Path) -> ExitCode {
    let fail = |msg: String| super::fail(1, format_args!("bundle verify: {msg}"));
    let mut keys = Vec::new();
    for path in public_keys {
        match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| edgearmor_bundle::parse_public_key(&t).map_err(|e| e.to_string()))
        {
            Ok(k) => keys.push(k),
            Err(e) => return fail(format!("{}: {e}", path.display())),
        }
    }
    let limit = max_bytes.min(MAX_BUNDLE_BYTES);
    let bytes = match read_capped(bundle, limit) {
        Ok(b) if b.len() > limit => {
            return fail(format!(
                "{}: larger than the limit of {limit} bytes (--max-bytes, at most \
                 MAX_BUNDLE_BYTES = {MAX_BUNDLE_BYTES})",
                bundle.display()
            ));
        }
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    match edgearmor_bundle::verify(&bytes, &keys, max_bytes) {
        Ok(b) => {
            println!(
                "ok: format {} version {} scope {} targets [{}] sha256 {}",
                b.format().number(),
                b.version(),
                b.scope(),
                b.targets().join(","),
                b.sha256_hex()
            );
            for f in b.files() {
                println!("  {} ({} bytes)", f.name, f.contents.len());
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("{}: {e}", bundle.display())),
    }
}
