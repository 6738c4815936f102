//! Test-only crash points. In debug builds, `EDGEARMOR_FAULT=<point>` makes the process
//! abort (no destructors, no flushing: as if killed) when it reaches that point, so a
//! test can show that the next start recovers from a crash at every step of a policy
//! delivery. Release builds compile [`point`] to nothing and never read the variable.
//!
//! [`POINTS`] lists every point, in the order a delivery passes them.

/// The environment variable naming the point to stop at.
pub const ENV: &str = "EDGEARMOR_FAULT";

/// Every fault point, in delivery order: unpacking a bundle into the policy directory,
/// then recording it (the bundle's bytes, then the applied state with its previous
/// copy).
pub const POINTS: &[&str] = &[
    "unpack:files-written",
    "unpack:after-first-rename",
    "unpack:after-second-rename",
    "fleet:unpacked",
    "fleet:reloaded",
    "commit:bundle-stored",
    "state:previous-copied",
    "state:before-rename",
    "commit:state-stored",
];

/// Aborts the process when `EDGEARMOR_FAULT` names `name` (debug builds only).
#[cfg(debug_assertions)]
pub fn point(name: &'static str) {
    debug_assert!(POINTS.contains(&name), "unlisted fault point {name}");
    if std::env::var_os(ENV).is_some_and(|v| v == name) {
        eprintln!("edgearmor: fault point {name} reached ({ENV}, debug builds only): aborting");
        std::process::abort();
    }
}

/// Release builds: nothing.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn point(_name: &'static str) {}
