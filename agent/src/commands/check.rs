//! `edgearmor check [--kernel-config FILE]`: can this kernel (or a kernel built from
//! that `.config`) enforce? Exit 0 if it can, 2 if it cannot.

use std::path::Path;
use std::process::ExitCode;

use crate::host::LiveKernel;
use crate::kernel::check::{check_config, check_live, enforcement_possible, render};

pub fn kernel_check(config: Option<&Path>) -> ExitCode {
    let lines = match config {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => check_config(&text),
            Err(e) => {
                return super::fail(
                    1,
                    format_args!("cannot read kernel config {}: {e}", path.display()),
                );
            }
        },
        None => check_live(&LiveKernel),
    };
    print!("{}", render(&lines));
    if enforcement_possible(&lines) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}
