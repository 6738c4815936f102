//! One module per `edgearmor` subcommand. Each prints what the operator needs and
//! returns the exit status: 0 done, 1 usage, configuration or input errors, 2 this
//! kernel cannot enforce, 3 refused by locked mode (`unload` without a valid unlock
//! token).

pub mod bundle;
pub mod check;
pub mod policy;
pub mod run;
pub mod session;
pub mod test_alerts;
pub mod unload;

use std::process::ExitCode;

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
