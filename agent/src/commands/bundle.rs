//! The fleet's signing side: `edgearmor keygen` and `edgearmor bundle create|verify`.
//! These run off the gateways (the secret key never goes there); the agent's side of
//! bundles is [`crate::control::fleet`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
/// refuse a bundle with a bad file) into one bundle.
pub fn create(
    key: &Path,
    version: u64,
    targets: &[String],
    out: &Path,
    policies: &[PathBuf],
) -> ExitCode {
    let fail = |msg: String| super::fail(1, format_args!("bundle create: {msg}"));
    let key = match std::fs::read_to_string(key)
        .map_err(|e| format!("{}: {e}", key.display()))
        .and_then(|t| {
            edgearmor_bundle::parse_secret_key(&t).map_err(|e| format!("{}: {e}", key.display()))
        }) {
        Ok(k) => k,
        Err(e) => return fail(e),
    };
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
    let bytes = edgearmor_bundle::create(&key, version, targets, &files, unix_micros() / 1_000_000);
    if let Err(e) = std::fs::write(out, &bytes) {
        return fail(format!("{}: {e}", out.display()));
    }
    println!(
        "bundle {} version {version}, {} file(s), {} bytes",
        out.display(),
        files.len(),
        bytes.len()
    );
    ExitCode::SUCCESS
}

/// Each file's name (as it will be unpacked on the gateway) and contents.
fn read_policy_files(policies: &[PathBuf]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut files = Vec::new();
    for path in policies {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        edgearmor_bundle::check_file_name(&name).map_err(|e| format!("{}: {e}", path.display()))?;
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        files.push((name, bytes));
    }
    Ok(files)
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
    let bytes = match std::fs::read(bundle) {
        Ok(b) => b,
        Err(e) => return fail(format!("{}: {e}", bundle.display())),
    };
    match edgearmor_bundle::verify(&bytes, &keys, max_bytes) {
        Ok(b) => {
            println!(
                "ok: version {} targets [{}] sha256 {}",
                b.version(),
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
