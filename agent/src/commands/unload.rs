//! `edgearmor unload`: detaches what `run` pinned and removes the pins, so nothing is
//! enforced until the next `run`.

use std::path::Path;
use std::process::ExitCode;

pub fn unload(pin_dir: &Path) -> ExitCode {
    match crate::kernel::pins::unload(pin_dir) {
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
