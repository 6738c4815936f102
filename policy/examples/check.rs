//! `cargo run -p edgearmor-policy --example check -- FILE_OR_DIR...`: what
//! `edgearmor policy check` prints, without the agent.
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let paths: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let diagnostics = edgearmor_policy::check_policy_paths(&paths);
    for diagnostic in &diagnostics {
        println!("{diagnostic}");
    }
    if diagnostics.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
