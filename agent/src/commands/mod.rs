//! One module per `edgearmor` subcommand. Each prints what the operator needs and
//! returns the exit status: 0 done, 1 usage, configuration or input errors, 2 this
//! kernel cannot enforce, 3 refused by locked mode (`unload` without a valid unlock
//! token).

pub mod bundle;
pub mod check;
pub mod policy;
pub mod run;
pub mod service;
pub mod session;
pub mod status;
pub mod test_alerts;
pub mod unload;

use std::process::ExitCode;

use crate::cli::ConfigOrigin;
use crate::config::AgentConfig;
use crate::control::self_protection::{kernel_id, refusal};
use crate::host::HostKernel;
use crate::kernel::pins;
use edgearmor_probe_abi::{LOCKED, LockState};

/// Every locked-mode state the kernel holds: the marker pin, `pin_dir`'s pin, and
/// every loaded `LOCK_STATE` map (pinned in sight or not).
fn lock_states(pin_dir: &std::path::Path) -> Result<Vec<LockState>, String> {
    let unreadable = |e: pins::PinError| format!("cannot tell whether the kernel is locked: {e}");
    let mut states: Vec<LockState> = pins::kernel_lock()
        .map_err(unreadable)?
        .into_iter()
        .collect();
    if !pin_dir.as_os_str().is_empty() {
        states.extend(pins::lock_state(pin_dir).map_err(unreadable)?);
    }
    states.extend(pins::loaded_lock_states());
    Ok(states)
}

/// For the commands that act as the agent (`run`, `send-test-alerts`): this binary
/// is exempt from a locked kernel's self-protection, so it runs only with the
/// locked configuration and no flags over it (`self_protection::refusal`).
pub fn locked_gate(
    host: &dyn HostKernel,
    config: &AgentConfig,
    origin: &ConfigOrigin,
) -> Result<(), String> {
    let file = kernel_id(host, &origin.file).ok();
    for state in &lock_states(&config.pin_dir)? {
        if let Some(why) = refusal(Some(state), &origin.file, file, &origin.overrides) {
            return Err(why);
        }
    }
    Ok(())
}

/// For the commands that write files where they are told (`keygen`, `bundle
/// create`): workstation tools, refused on a locked gateway, where this binary may
/// write what no other process may (a fleet key, the policy directory).
pub fn refuse_when_locked(command: &str) -> Option<ExitCode> {
    let locked = lock_states(std::path::Path::new(""))
        .map(|states| states.iter().any(|s| s.locked == LOCKED))
        .unwrap_or(true);
    locked.then(|| {
        fail(
            1,
            format_args!(
                "{command}: the kernel is locked (tamper protection): this binary may write what no other process may, so {command} runs on a workstation, not here"
            ),
        )
    })
}

/// Prints `edgearmor: {message}` on stderr and returns exit status `code`.
pub fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("edgearmor: {message}");
    ExitCode::from(code)
}

/// `edgearmor version`.
pub fn version() -> ExitCode {
    println!(
        "edgearmor {} probes-sha256 {}",
        env!("CARGO_PKG_VERSION"),
        crate::kernel::loader::probes_sha256()
    );
    ExitCode::SUCCESS
}
