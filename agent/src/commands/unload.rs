//! `edgearmor unload`: detaches what `run` pinned and removes the pins, so nothing is
//! enforced until the next `run`.
//!
//! When the kernel says locked (`LOCK_STATE` pinned with `locked = 1`), only with an
//! unlock token for this node ([`edgearmor_bundle::unlock`]): checked against the
//! fleet keys, this node's name and wall clock, and the used tokens in `state_dir`
//! (the token's nonce is recorded before anything is removed), with the configuration
//! the kernel was locked with. Every refusal exits with status [`EXIT_REFUSED`] and
//! is kept as a tamper report ([`crate::control::tamper`]) the running agent, or the
//! next one, delivers as an alert. Unlocked, `unload` is what it always was.

use std::io;
use std::path::Path;
use std::process::ExitCode;

use edgearmor_bundle::limits::MAX_UNLOCK_TOKEN_BYTES;
use edgearmor_bundle::unlock::{USED_NONCES_FILE, UsedNonces, verify_unlock_token};
use edgearmor_probe_abi::{LOCKED, LockState};

use crate::config::AgentConfig;
use crate::control::fleet::FleetSettings;
use crate::control::self_protection::{kernel_id, refusal};
use crate::control::tamper::{self, Recorded, TamperReport};
use crate::host::{HostKernel, LiveKernel};

/// Exit status of an unload locked mode refused.
pub const EXIT_REFUSED: u8 = 3;

/// What `unload` needs of the kernel: the lock and the pins themselves.
pub trait Pins {
    /// Every `LOCK_STATE` in sight (none when nothing is pinned or loaded), or why
    /// that cannot be told.
    fn lock_states(&self, pin_dir: &Path) -> Result<Vec<LockState>, String>;
    /// Detaches and removes every pin; how many were removed.
    fn unload(&self, pin_dir: &Path) -> io::Result<usize>;
}

/// The machine's pins.
pub struct LivePins;

impl Pins for LivePins {
    /// As `run` reads the lock ([`super::lock_states`]): the marker, `pin_dir`'s pin
    /// and every loaded `LOCK_STATE` map.
    fn lock_states(&self, pin_dir: &Path) -> Result<Vec<LockState>, String> {
        super::lock_states(pin_dir)
    }

    fn unload(&self, pin_dir: &Path) -> io::Result<usize> {
        crate::kernel::pins::unload(pin_dir)
    }
}

/// `edgearmor unload [--config FILE] [--token FILE]` on this machine.
pub fn unload(config: &AgentConfig, config_path: &Path, token: Option<&Path>) -> ExitCode {
    unload_with(&LiveKernel, &LivePins, config, config_path, token)
}

/// [`unload`] against `host` and `pins`.
pub fn unload_with(
    host: &dyn HostKernel,
    pins: &dyn Pins,
    config: &AgentConfig,
    config_path: &Path,
    token: Option<&Path>,
) -> ExitCode {
    let pin_dir = &config.pin_dir;
    let states = match pins.lock_states(pin_dir) {
        Ok(states) => states,
        // Unknown is not unlocked: nothing is removed.
        Err(e) => {
            return super::fail(1, format_args!("unload: {e}; nothing removed"));
        }
    };
    let locked: Vec<LockState> = states.into_iter().filter(|s| s.locked == LOCKED).collect();
    if !locked.is_empty() {
        match authorize(host, config, config_path, &locked, token) {
            Ok(accepted) => println!("edgearmor: {accepted}"),
            Err(refusal) => return refuse(host, config, &refusal),
        }
    }
    match pins.unload(pin_dir) {
        Ok(n) => {
            println!(
                "edgearmor: removed {n} pin(s) from {}: nothing is enforced until the next run",
                pin_dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => super::fail(1, format_args!("unload {}: {e}", pin_dir.display())),
    }
}

/// Why a locked unload was refused: a few words for the alert, the whole story for
/// the operator.
#[derive(Debug)]
struct Refusal {
    why: &'static str,
    detail: String,
}

impl Refusal {
    fn new(why: &'static str, detail: impl Into<String>) -> Self {
        Self {
            why,
            detail: detail.into(),
        }
    }
}

/// Whether this unload may go ahead on a locked kernel; what was accepted, in words.
fn authorize(
    host: &dyn HostKernel,
    config: &AgentConfig,
    config_path: &Path,
    locked: &[LockState],
    token: Option<&Path>,
) -> Result<String, Refusal> {
    let Some(token_path) = token else {
        return Err(Refusal::new(
            "no unlock token",
            "the kernel is locked (tamper protection): unload needs --token FILE, an unlock \
             token for this node (`edgearmor unlock-token create`, with a fleet key)",
        ));
    };
    // Every lock in sight must name this configuration: a map of the attacker's
    // naming theirs must not choose the keys and `pin_dir` this unload uses.
    for state in locked {
        is_locked_config(host, state, config_path)?;
    }
    let keys = FleetSettings::load(
        &config.fleet.public_keys,
        config.fleet.bundle_max_bytes,
        config.fleet.state_dir.clone(),
    )
    .map_err(|e| {
        Refusal::new(
            "no fleet key",
            format!("unlock tokens are checked with the fleet keys: {e}"),
        )
    })?
    .public_keys;
    let bytes = read_token(token_path)?;
    let node = super::session::node_name(config, host)
        .map_err(|e| Refusal::new("no node name", e.to_string()))?;
    let now_unix =
        i64::try_from(host.wall_clock_ns().div_euclid(1_000_000_000)).unwrap_or(i64::MIN);
    let verified = verify_unlock_token(&bytes, &keys, &node, now_unix)
        .map_err(|e| Refusal::new(e.kind(), format!("{}: {e}", token_path.display())))?;
    let nonces = config.fleet.state_dir.join(USED_NONCES_FILE);
    edgearmor_bundle::files::create_private_dir_all(&config.fleet.state_dir)
        .map_err(|e| Refusal::new("state_dir unusable", e.to_string()))?;
    UsedNonces::consume(&nonces, &verified)
        .map_err(|e| Refusal::new(e.kind(), format!("{}: {e}", token_path.display())))?;
    Ok(format!(
        "unlock token {} accepted for node {node} (valid until {}, now used): unloading",
        verified.nonce_hex(),
        verified.claims().not_after_unix
    ))
}

/// At most [`MAX_UNLOCK_TOKEN_BYTES`] + 1 bytes of the token file (enough to refuse a
/// larger one as such).
fn read_token(path: &Path) -> Result<Vec<u8>, Refusal> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| {
            f.take(MAX_UNLOCK_TOKEN_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
        })
        .map_err(|e| Refusal::new("unreadable token", format!("{}: {e}", path.display())))?;
    Ok(bytes)
}

/// The configuration read must be the one the kernel was locked with (as `run`
/// checks it): another one could name other fleet keys or another `state_dir`
/// (where no nonce was used).
fn is_locked_config(
    host: &dyn HostKernel,
    state: &LockState,
    config_path: &Path,
) -> Result<(), Refusal> {
    let found = kernel_id(host, config_path).ok();
    match refusal(Some(state), config_path, found, &[]) {
        Some(why) => Err(Refusal::new("not the locked configuration", why)),
        None => Ok(()),
    }
}

/// Prints the refusal, keeps it as a tamper report, exits [`EXIT_REFUSED`].
fn refuse(host: &dyn HostKernel, config: &AgentConfig, refusal: &Refusal) -> ExitCode {
    // SAFETY: getppid and getuid take nothing and cannot fail.
    let (ppid, uid) = unsafe { (libc::getppid() as u32, libc::getuid()) };
    let exe = |pid: u32| {
        host.process_executable(pid)
            .map_or_else(String::new, |p| p.to_string_lossy().into_owned())
    };
    let report = TamperReport {
        time_us: u64::try_from(host.wall_clock_ns() / 1_000).unwrap_or(0),
        pid: std::process::id(),
        ppid,
        uid,
        process: exe(std::process::id()),
        parent_process: exe(ppid),
        resource: format!(
            "edgearmor unload {}: {}",
            config.pin_dir.display(),
            refusal.why
        ),
    };
    let reported = match tamper::record(&config.fleet.state_dir, &report) {
        Ok(Recorded::Stored(path)) => format!("reported ({})", path.display()),
        Ok(Recorded::Counted(n)) => format!(
            "counted: {n} refusal(s) past the {} waiting reports (MAX_TAMPER_REPORTS)",
            tamper::MAX_TAMPER_REPORTS
        ),
        Err(e) => format!("and could not be reported: {e}"),
    };
    super::fail(
        EXIT_REFUSED,
        format_args!(
            "unload refused ({}): {}; nothing removed; {reported}",
            refusal.why, refusal.detail
        ),
    )
}

#[cfg(test)]
mod tests;
