//! `edgearmor policy check FILE_OR_DIR...`: validates KubeArmorHostPolicy files
//! offline, one line per problem, exit status 1 if there is any.
//!
//! Beyond the files themselves, the valid policies are turned into the kernel tables
//! for every host they select, as `run` would: a rule the kernel cannot hold, and a
//! set larger than a table can hold during a reload, are problems too, each naming
//! the limit. What `check` accepts, the kernel enforces whole.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use edgearmor_policy::{
    DefaultPosture, DefaultPostures, HostPolicy, HostSelector, compile, load_policy_files,
    policy_files_in,
};

use crate::control::policy_table::PolicyCatalog;
use crate::control::setid_rules::SetidRuleSet;
use crate::kernel::rule_tables::KernelRuleSet;

pub fn policy_check(paths: &[PathBuf]) -> ExitCode {
    let mut problems: Vec<String> = edgearmor_policy::check_policy_paths(paths)
        .iter()
        .map(ToString::to_string)
        .collect();
    problems.extend(kernel_problems(paths));
    for p in &problems {
        println!("{p}");
    }
    if problems.is_empty() {
        eprintln!("edgearmor: policies OK");
        ExitCode::SUCCESS
    } else {
        eprintln!("edgearmor: {} problem(s)", problems.len());
        ExitCode::from(1)
    }
}

/// What the kernel could not hold of the valid policies, for every host they select
/// (every-host policies count for each named host too). Paths are taken as written:
/// offline, no symlink of this machine says what the gateway resolves.
fn kernel_problems(paths: &[PathBuf]) -> BTreeSet<String> {
    // Unlistable directories are already reported by the file check.
    let files: Vec<PathBuf> = paths
        .iter()
        .flat_map(|p| match p.is_dir() {
            true => policy_files_in(p).unwrap_or_default(),
            false => vec![p.clone()],
        })
        .collect();
    let any_host = load_policy_files(&files, "");
    let hosts: BTreeSet<String> = any_host
        .skipped
        .iter()
        .filter_map(|s| match &s.selector {
            HostSelector::Hostname(h) => Some(h.clone()),
            HostSelector::AnyHost => None,
        })
        .collect();
    let mut problems = BTreeSet::new();
    set_problems("every host", &any_host.policies, &mut problems);
    for host in hosts {
        let load = load_policy_files(&files, &host);
        set_problems(&format!("host {host}"), &load.policies, &mut problems);
    }
    problems
}

/// The kernel tables of `policies` as `run` builds them; what they cannot hold.
fn set_problems(label: &str, policies: &[HostPolicy], problems: &mut BTreeSet<String>) {
    let compiled = compile(policies, DefaultPostures::uniform(DefaultPosture::Audit));
    let identity = |p: &str| p.to_owned();
    let set = KernelRuleSet::build(
        &SetidRuleSet::default(),
        &compiled,
        &mut PolicyCatalog::default(),
        [0, 0],
        &identity,
    );
    for skipped in &set.skipped {
        problems.insert(format!("{skipped}: the kernel cannot enforce this rule"));
    }
    for over in set.over_limits() {
        problems.insert(format!("{label}: {over}"));
    }
}
