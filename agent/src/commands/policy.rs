//! `edgearmor policy check FILE_OR_DIR...`: validates KubeArmorHostPolicy files
//! offline, one line per problem, exit status 1 if there is any.

use std::path::PathBuf;
use std::process::ExitCode;

pub fn policy_check(paths: &[PathBuf]) -> ExitCode {
    let diagnostics = edgearmor_policy::check_policy_paths(paths);
    for d in &diagnostics {
        println!("{d}");
    }
    if diagnostics.is_empty() {
        eprintln!("edgearmor: policies OK");
        ExitCode::SUCCESS
    } else {
        eprintln!("edgearmor: {} problem(s)", diagnostics.len());
        ExitCode::from(1)
    }
}
