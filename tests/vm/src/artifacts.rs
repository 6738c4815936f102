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
    let output = Command::new(&script)
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
