//! The guest binaries: static musl builds of the agent, the decoder and the test helpers, made by
//! `cross/build.sh` (the same command an operator uses), once per target per process.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use crate::{Arch, VmError};

/// Paths of the static binaries for one architecture.
#[derive(Clone, Debug)]
pub struct GuestBinaries {
    /// The `edgearmor` agent.
    pub agent: PathBuf,
    /// The `setid-probe` helper.
    pub setid_probe: PathBuf,
    /// The gateway-side decoder, `edgearmor-decode`.
    pub decoder: PathBuf,
}

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds (or reuses, within this process) the static binaries for `arch`.
pub fn guest_binaries(arch: Arch) -> Result<GuestBinaries, VmError> {
    static BUILT: OnceLock<Mutex<HashMap<&'static str, GuestBinaries>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let target = arch.musl_target();
    if let Some(found) = built.get(target) {
        return Ok(found.clone());
    }
    let root = workspace_root();
    let script = root.join("cross/build.sh");
    let mut command = Command::new(&script);
    // Under `cargo test` this process carries the variables cargo sets for a test
    // (CARGO_MANIFEST_DIR, CARGO_PKG_*, ...). Build scripts watch some of them (ring
    // reruns when CARGO_MANIFEST_DIR changes), so passing them on would make the build
    // differ from an operator's `cross/build.sh` and rebuild everything, every time.
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(is_set_by_cargo_for_tests) {
            command.env_remove(name);
        }
    }
    let output = command
        .arg(target)
        .current_dir(&root)
        .output()
        .map_err(|source| VmError::Spawn {
            cmd: script.display().to_string(),
            source,
        })?;
    if !output.status.success() {
        return Err(VmError::Command {
            cmd: format!("{} {target}", script.display()),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    let out = root.join("target/cross").join(target).join("release");
    let binaries = GuestBinaries {
        agent: out.join("edgearmor"),
        setid_probe: out.join("setid-probe"),
        decoder: out.join("edgearmor-decode"),
    };
    built.insert(target, binaries.clone());
    Ok(binaries)
}

/// Whether `name` is one of the variables cargo sets for the crate it compiles or the
/// test it runs (not configuration such as `CARGO_HOME` or `CARGO_TARGET_DIR`).
fn is_set_by_cargo_for_tests(name: &str) -> bool {
    matches!(
        name,
        "CARGO_MANIFEST_DIR"
            | "CARGO_MANIFEST_PATH"
            | "CARGO_CRATE_NAME"
            | "CARGO_BIN_NAME"
            | "CARGO_PRIMARY_PACKAGE"
            | "CARGO_TARGET_TMPDIR"
            | "CARGO_RUSTC_CURRENT_DIR"
            | "OUT_DIR"
    ) || name.starts_with("CARGO_PKG_")
        || name.starts_with("CARGO_BIN_EXE_")
}

#[cfg(test)]
mod tests {
    use super::is_set_by_cargo_for_tests;

    #[test]
    fn only_the_variables_cargo_sets_for_a_test_are_dropped() {
        for name in [
            "CARGO_MANIFEST_DIR",
            "CARGO_PKG_NAME",
            "CARGO_BIN_EXE_edgearmor",
            "OUT_DIR",
        ] {
            assert!(is_set_by_cargo_for_tests(name), "{name}");
        }
        for name in [
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO",
            "RUSTFLAGS",
            "PATH",
        ] {
            assert!(!is_set_by_cargo_for_tests(name), "{name}");
        }
    }
}
