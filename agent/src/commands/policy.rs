//! `edgearmor policy check [--host] FILE_OR_DIR...`: validates KubeArmorHostPolicy
//! files offline, one line per problem, exit status 1 if there is any.
//!
//! Beyond the files themselves (which include the kernel limits of each host's set,
//! `edgearmor_policy::kernel_limits`), the valid policies are turned into the kernel
//! tables for every host they select, as `run` would: a rule the table builder
//! cannot hold is a problem too. What `check` accepts, the kernel enforces whole.
//!
//! With `--host`, also translates the policies for this host (its node name, its
//! files: symlinks, multi-call binaries) as `run` would, and prints what `run` would
//! warn about. With `--host=NAME`, `--label K=V` or `--config agent.toml`, prints
//! which policies select that node (its host name and labels) and which not.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use edgearmor_policy::loader::{load_policy_directory, named_hosts};
use edgearmor_policy::{
    DefaultPosture, DefaultPostures, HostPolicy, NodeIdentity, compile, load_policy_files,
    policy_files_in,
};

use crate::cli::NodeQuery;
use crate::config::{AgentConfig, DEFAULT_CONFIG_PATH};
use crate::control::policy_table::PolicyCatalog;
use crate::control::setid_rules::SetidRuleSet;
use crate::host::{HostKernel, LiveKernel};
use crate::kernel::loader::HostPaths;
use crate::kernel::rule_tables::KernelRuleSet;

pub fn policy_check(paths: &[PathBuf], on_host: bool, node: Option<&NodeQuery>) -> ExitCode {
    let mut problems: Vec<String> = edgearmor_policy::check_policy_paths(paths)
        .iter()
        .map(ToString::to_string)
        .collect();
    let files = policy_files(paths);
    let (kernel, warnings) = kernel_problems(&files);
    problems.extend(kernel);
    for p in &problems {
        println!("{p}");
    }
    for w in &warnings {
        println!("{w}");
    }
    let identity = match node.map(|query| resolve_node(query, &LiveKernel)) {
        Some(Ok(identity)) => {
            for line in node_selection(&identity, &files) {
                println!("{line}");
            }
            Some(identity)
        }
        Some(Err(e)) => {
            println!("{e}");
            problems.push(e);
            None
        }
        None => None,
    };
    let mut refused_here = 0;
    if on_host {
        // As `run` would be: the default agent.toml's node and labels, if there is one.
        let identity = match identity {
            Some(identity) => Ok(identity),
            None => this_node(&LiveKernel),
        };
        let identity = match identity {
            Ok(identity) => identity,
            Err(e) => {
                println!("{e}");
                problems.push(e);
                NodeIdentity::named(LiveKernel.node_name())
            }
        };
        for line in host_warnings(&LiveKernel, &identity, paths) {
            refused_here += usize::from(line.starts_with(REFUSED_HERE));
            println!("{line}");
        }
    }
    if problems.is_empty() && refused_here == 0 {
        eprintln!("edgearmor: policies OK");
        ExitCode::SUCCESS
    } else {
        eprintln!("edgearmor: {} problem(s)", problems.len() + refused_here);
        ExitCode::from(1)
    }
}

/// The node a [`NodeQuery`] stands for: host name from `--host=NAME`, else the
/// config's `node`, else `host`'s `uname -n`; labels the config's `[labels]` with
/// `--label` over them.
pub fn resolve_node(query: &NodeQuery, host: &dyn HostKernel) -> Result<NodeIdentity, String> {
    let config = match &query.config {
        Some(path) => AgentConfig::load(path, true).map_err(|e| e.to_string())?,
        None => AgentConfig::default(),
    };
    let hostname = match (&query.host_name, config.node.is_empty()) {
        (Some(name), _) => name.clone(),
        (None, false) => config.node.clone(),
        (None, true) => host.node_name(),
    };
    let mut labels = config.labels;
    for (key, value) in &query.labels {
        labels.insert(key.clone(), value.clone());
    }
    Ok(NodeIdentity::new(hostname, labels))
}

/// This machine as `run` with the default configuration sees it (a missing default
/// `agent.toml` is all defaults: `uname -n`, no labels).
fn this_node(host: &dyn HostKernel) -> Result<NodeIdentity, String> {
    let config =
        AgentConfig::load(Path::new(DEFAULT_CONFIG_PATH), false).map_err(|e| e.to_string())?;
    let hostname = match config.node.is_empty() {
        true => host.node_name(),
        false => config.node.clone(),
    };
    Ok(config.node_identity(&hostname))
}

/// Which valid policies select `node`, one line each, then those skipped.
pub fn node_selection(node: &NodeIdentity, files: &[PathBuf]) -> Vec<String> {
    let load = load_policy_files(files, node);
    let mut lines: Vec<String> = load
        .policies
        .iter()
        .map(|p| {
            format!(
                "{}:{}: policy {:?} selects {node}",
                p.source_file.display(),
                p.position.line,
                p.name
            )
        })
        .collect();
    lines.extend(load.skipped.iter().map(ToString::to_string));
    lines
}

/// The policy files among `paths` (a directory stands for its policy files).
fn policy_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    // Unlistable directories are already reported by the file check.
    paths
        .iter()
        .flat_map(|p| match p.is_dir() {
            true => policy_files_in(p).unwrap_or_default(),
            false => vec![p.clone()],
        })
        .collect()
}

/// What the kernel could not hold of the valid policies, for every set a node can
/// get (every-host policies with those naming one host, whatever its labels: the
/// label-selected policies count for every host), and the policies' warnings.
/// Paths are taken as written: offline, no symlink of this machine says what the
/// gateway resolves.
fn kernel_problems(files: &[PathBuf]) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut problems = BTreeSet::new();
    let mut warnings = BTreeSet::new();
    for host in std::iter::once(String::new()).chain(named_hosts(files)) {
        let load = load_policy_files(files, NodeIdentity::with_any_labels(host));
        set_problems(&load.policies, &mut problems);
        for policy in &load.policies {
            warnings.extend(policy.warnings.iter().map(|w| format!("warning: {w}")));
        }
    }
    (problems, warnings)
}

/// The kernel tables of `policies` as `run` builds them; what they cannot hold.
fn set_problems(policies: &[HostPolicy], problems: &mut BTreeSet<String>) {
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
}

/// How a `--host` line starts when `run` would refuse the set here (a problem).
const REFUSED_HERE: &str = "refused on this host: ";

/// What `run` would log about the valid policies among `paths` on `host`: limits the
/// set exceeds here (symlinks resolved), rules it skips, rules that apply but maybe
/// not as meant (multi-call binaries, files it cannot follow to other names), and
/// the alias table it would write (the last line).
pub fn host_warnings(host: &dyn HostKernel, node: &NodeIdentity, paths: &[PathBuf]) -> Vec<String> {
    let mut policies = Vec::new();
    for path in paths {
        let load = if path.is_dir() {
            match load_policy_directory(path, node) {
                Ok(load) => load,
                // Already reported as a problem by the offline check.
                Err(_) => continue,
            }
        } else {
            load_policy_files(std::slice::from_ref(path), node)
        };
        policies.extend(load.policies);
    }
    let compiled = compile(&policies, DefaultPostures::uniform(DefaultPosture::Audit));
    let set = KernelRuleSet::build(
        &SetidRuleSet::default(),
        &compiled,
        &mut PolicyCatalog::default(),
        [0; 2],
        &HostPaths(host),
    );
    set.refused
        .iter()
        .map(|r| format!("{REFUSED_HERE}{r}"))
        .chain(
            set.skipped
                .iter()
                .map(|s| format!("not enforceable, skipped: {s}")),
        )
        .chain(set.warnings.iter().map(|w| format!("warning: {w}")))
        .chain([
            format!("aliases: {}", set.aliases.report()),
            set.exec_aliases.report_executables(),
        ])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::path::Path;

    /// A Yocto busybox host: `/bin/sh` and `/usr/bin/wget` link to busybox.
    struct BusyboxHost;

    impl HostKernel for BusyboxHost {
        fn read(&self, _path: &Path) -> io::Result<Vec<u8>> {
            Err(io::ErrorKind::NotFound.into())
        }
        fn mount_securityfs(&self) -> io::Result<()> {
            Err(io::ErrorKind::Unsupported.into())
        }
        fn release(&self) -> String {
            "test".into()
        }
        fn node_name(&self) -> String {
            "gw-1".into()
        }
        fn process_executable(&self, _tgid: u32) -> Option<PathBuf> {
            None
        }
        fn real_path(&self, path: &Path) -> Option<PathBuf> {
            match path.to_str()? {
                "/bin/busybox" | "/bin/sh" | "/usr/bin/wget" => Some("/bin/busybox".into()),
                _ => None,
            }
        }
        fn random_key(&self) -> io::Result<[u64; 2]> {
            Ok([1, 2])
        }
        fn is_bpffs(&self, _path: &Path) -> bool {
            false
        }
    }

    #[test]
    fn host_check_warns_about_rules_naming_busybox() {
        let dir =
            std::env::temp_dir().join(format!("edgearmor-policy-host-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let policy = dir.join("p.yaml");
        std::fs::write(
            &policy,
            "apiVersion: security.kubearmor.com/v1
kind: KubeArmorHostPolicy
metadata:
  name: hsp-bb
spec:
  nodeSelector:
    matchLabels:
      kubearmor.io/hostname: \"*\"
  process:
    matchPaths:
      - path: /bin/busybox
      - path: /usr/bin/wget
        fromSource:
          - path: /bin/sh
  action: Block
",
        )
        .expect("written");
        let node = NodeIdentity::named(BusyboxHost.node_name());
        let lines = host_warnings(&BusyboxHost, &node, std::slice::from_ref(&policy));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(lines.len(), 5, "{lines:?}");
        assert!(
            lines[2].contains("cannot read the mount table"),
            "{lines:?}"
        );
        assert!(
            lines[3].starts_with("aliases: 0 protected inode(s) with an alias entry"),
            "{lines:?}"
        );
        assert!(
            lines[4].starts_with("exec identity: 0 executable(s) followed by inode"),
            "{lines:?}"
        );
        assert!(
            lines[0].starts_with(
                "warning: policy hsp-bb: /bin/busybox: /bin/busybox is a multi-call binary"
            ),
            "{lines:?}"
        );
        assert!(
            lines[1].starts_with("warning: policy hsp-bb: fromSource /bin/sh: /bin/sh runs the multi-call binary /bin/busybox"),
            "{lines:?}"
        );
    }

    /// `--host` on this machine, through the real seam: a hard-linked protected file
    /// and a missing one, as `run` would report them.
    #[test]
    fn host_check_reports_the_alias_table_and_missing_paths() {
        let dir =
            std::env::temp_dir().join(format!("edgearmor-policy-alias-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let dir = std::fs::canonicalize(&dir).expect("real dir");
        let secret = dir.join("secret");
        std::fs::write(&secret, b"x").expect("written");
        std::fs::hard_link(&secret, dir.join("link")).expect("linked");
        let policy = dir.join("p.yaml");
        let (secret, missing) = (secret.display(), dir.join("missing"));
        let missing = missing.display();
        std::fs::write(
            &policy,
            format!("apiVersion: security.kubearmor.com/v1\nkind: KubeArmorHostPolicy\nmetadata:\n  name: hsp-f\nspec:\n  nodeSelector:\n    matchLabels:\n      kubearmor.io/hostname: \"*\"\n  file:\n    matchPaths:\n      - path: {secret}\n      - path: {missing}\n  action: Block\n"),
        )
        .expect("written");
        let node = NodeIdentity::named(LiveKernel.node_name());
        let lines = host_warnings(&LiveKernel, &node, std::slice::from_ref(&policy));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            lines,
            [
                format!(
                    "warning: policy hsp-f: {missing}: {missing} does not exist now: no alias entry, the rule matches it by this name only"
                ),
                format!(
                    "aliases: 1 protected inode(s) with an alias entry (1 entries with subdirectories and other-linked files), 1 protected file(s) with other hard links: {secret} (2 links)"
                ),
                "exec identity: 0 executable(s) followed by inode (0 entries with other-linked files)".to_owned(),
            ]
        );
    }
}
