//! Reading policy files and directories: which files count, how a bad file is
//! rejected whole while the others still load, and which policies are skipped
//! because they select another host.
//!
//! A directory's policy files are its `*.yaml` and `*.yml` entries (not hidden,
//! not in subdirectories), read in byte order of their names so every agent of a
//! fleet loads the same set the same way.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::diagnostic::{Diagnostic, PolicyError};
use crate::limits::MAX_DIAGNOSTICS_PER_FILE;
pub use crate::limits::MAX_POLICY_FILE_BYTES;
use crate::model::{HostPolicy, HostSelector};
use crate::node_labels::NodeIdentity;
use crate::schema::parse_policy_document;
use crate::yaml_tree::{NodeValue, YamlTreeError, parse_documents};

/// The outcome of loading a set of policy files for one host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyLoad {
    /// Policies that apply to this host, in file order then document order.
    pub policies: Vec<HostPolicy>,
    /// Valid policies that select another host.
    pub skipped: Vec<SkippedPolicy>,
    /// Files with at least one problem; none of their policies were loaded.
    pub rejected: Vec<RejectedFile>,
}

impl PolicyLoad {
    /// Every problem of every rejected file, in file order.
    pub fn diagnostics(&self) -> impl Iterator<Item = &Diagnostic> {
        self.rejected.iter().flat_map(|r| r.diagnostics.iter())
    }
}

/// A valid policy for another host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedPolicy {
    pub name: String,
    pub file: PathBuf,
    pub line: usize,
    pub selector: HostSelector,
    /// The node the load was for.
    pub this_node: NodeIdentity,
}

impl fmt::Display for SkippedPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: policy {:?} selects {}, not {}: skipped",
            self.file.display(),
            self.line,
            self.name,
            self.selector,
            self.this_node
        )
    }
}

/// A file none of whose policies were loaded, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedFile {
    pub file: PathBuf,
    /// Sorted by line; never empty.
    pub diagnostics: Vec<Diagnostic>,
}

/// Checks the text of one policy file: all its policies, or its problems (at most
/// [`MAX_DIAGNOSTICS_PER_FILE`], then one saying how many more). Text longer than
/// [`MAX_POLICY_FILE_BYTES`] is refused unparsed, wherever it came from.
pub fn parse_policy_text(file: &Path, text: &str) -> Result<Vec<HostPolicy>, Vec<Diagnostic>> {
    let length = u64::try_from(text.len()).unwrap_or(u64::MAX);
    if length > MAX_POLICY_FILE_BYTES {
        return Err(vec![Diagnostic::whole_file(
            file,
            PolicyError::FileTooLarge {
                bytes: Some(length),
                limit: MAX_POLICY_FILE_BYTES,
            },
        )]);
    }
    let documents = parse_documents(text).map_err(|e| vec![tree_diagnostic(file, e)])?;
    let mut policies = Vec::new();
    let mut diagnostics = Vec::new();
    // Empty documents (a stray `---`, a file of comments) are not policies.
    for document in documents.iter().filter(|d| d.value != NodeValue::Null) {
        match parse_policy_document(file, document) {
            (Some(policy), _) => policies.push(policy),
            (None, problems) => diagnostics.extend(problems),
        }
    }
    if policies.is_empty() && diagnostics.is_empty() {
        diagnostics.push(Diagnostic::whole_file(file, PolicyError::NoPolicyDocument));
    }
    if let Err(duplicates) = check_unique_names(&policies, &HashMap::new()) {
        diagnostics.extend(duplicates);
    }
    if diagnostics.is_empty() {
        Ok(policies)
    } else {
        diagnostics.sort_by_key(|d| (d.line, d.column));
        if diagnostics.len() > MAX_DIAGNOSTICS_PER_FILE {
            let more = diagnostics.len() - MAX_DIAGNOSTICS_PER_FILE;
            diagnostics.truncate(MAX_DIAGNOSTICS_PER_FILE);
            diagnostics.push(Diagnostic::whole_file(
                file,
                PolicyError::MoreProblems {
                    more,
                    limit: MAX_DIAGNOSTICS_PER_FILE,
                },
            ));
        }
        Err(diagnostics)
    }
}

/// A YAML-level refusal as a diagnostic at its line.
fn tree_diagnostic(file: &Path, error: YamlTreeError) -> Diagnostic {
    let (position, error) = match error {
        YamlTreeError::Syntax { position, problem } => {
            (position, PolicyError::YamlSyntax { problem })
        }
        YamlTreeError::TooDeep { position, limit } => {
            (position, PolicyError::NestingTooDeep { limit })
        }
        YamlTreeError::TooManyNodes { position, limit } => {
            (position, PolicyError::TooManyNodes { limit })
        }
        YamlTreeError::TooMuchText { position, limit } => {
            (position, PolicyError::TooMuchText { limit })
        }
        YamlTreeError::TooManyKeys { position, limit } => {
            (position, PolicyError::TooManyKeys { limit })
        }
        YamlTreeError::LookaheadTooLong { position, limit } => {
            (position, PolicyError::LookaheadTooLong { limit })
        }
    };
    Diagnostic::at(file, position, "", error)
}

/// Reads and checks one policy file.
pub fn read_policy_file(file: &Path) -> Result<Vec<HostPolicy>, Vec<Diagnostic>> {
    let text =
        read_bounded_utf8(file).map_err(|error| vec![Diagnostic::whole_file(file, error)])?;
    parse_policy_text(file, &text)
}

/// The file's text, refused unread when its size on disk exceeds
/// [`MAX_POLICY_FILE_BYTES`], and never reading more than one byte past it (a file
/// that is not regular, or grows meanwhile).
fn read_bounded_utf8(file: &Path) -> Result<String, PolicyError> {
    let unreadable = |e: io::Error| PolicyError::Unreadable {
        reason: e.to_string(),
    };
    let opened = File::open(file).map_err(unreadable)?;
    let metadata = opened.metadata().map_err(unreadable)?;
    if metadata.is_file() && metadata.len() > MAX_POLICY_FILE_BYTES {
        return Err(PolicyError::FileTooLarge {
            bytes: Some(metadata.len()),
            limit: MAX_POLICY_FILE_BYTES,
        });
    }
    // Sized from the stat so reading does not grow (and double) the buffer.
    let expected = usize::try_from(metadata.len()).unwrap_or(0);
    let mut bytes = Vec::with_capacity(expected.saturating_add(1));
    opened
        // One byte past the limit tells "too large" from "exactly at the limit".
        .take(MAX_POLICY_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    let length = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if length > MAX_POLICY_FILE_BYTES {
        return Err(PolicyError::FileTooLarge {
            bytes: None,
            limit: MAX_POLICY_FILE_BYTES,
        });
    }
    String::from_utf8(bytes).map_err(|_| PolicyError::NotUtf8)
}

/// The policy files of a directory, sorted (see the module documentation).
pub fn policy_files_in(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue; // not UTF-8: cannot end in .yaml as far as we are concerned
        };
        let is_policy_name =
            !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"));
        // `metadata` follows symlinks: a symlinked policy file counts.
        if is_policy_name && std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file()) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Loads policy files for `node`: a file with any problem is rejected whole, the
/// others load; policies whose node selector does not select `node` are skipped.
/// A `&str` stands for the host of that name without labels.
pub fn load_policy_files(files: &[PathBuf], node: impl Into<NodeIdentity>) -> PolicyLoad {
    let node = node.into();
    let mut load = PolicyLoad::default();
    // Names are unique across the set, whichever host a policy selects
    // (Kubernetes object names are cluster-wide).
    let mut names: HashMap<String, (PathBuf, usize)> = HashMap::new();
    for file in files {
        let policies = match read_policy_file(file) {
            Ok(policies) => policies,
            Err(diagnostics) => {
                load.rejected.push(RejectedFile {
                    file: file.clone(),
                    diagnostics,
                });
                continue;
            }
        };
        if let Err(diagnostics) = check_unique_names(&policies, &names) {
            load.rejected.push(RejectedFile {
                file: file.clone(),
                diagnostics,
            });
            continue;
        }
        for policy in policies {
            names.insert(
                policy.name.clone(),
                (policy.source_file.clone(), policy.name_position.line),
            );
            if policy.host_selector.selects(&node) {
                load.policies.push(policy);
            } else {
                load.skipped.push(SkippedPolicy {
                    name: policy.name,
                    file: policy.source_file,
                    line: policy.position.line,
                    selector: policy.host_selector,
                    this_node: node.clone(),
                });
            }
        }
    }
    load
}

/// Loads a directory's policy files (see [`load_policy_files`]). Fails only when
/// the directory itself cannot be listed.
pub fn load_policy_directory(dir: &Path, node: impl Into<NodeIdentity>) -> io::Result<PolicyLoad> {
    Ok(load_policy_files(&policy_files_in(dir)?, node))
}

/// `edgearmor policy check PATH...`: every problem in the given files and
/// directories (a directory stands for its policy files), whatever host the
/// policies select. Empty means everything is valid.
pub fn check_policy_paths(paths: &[PathBuf]) -> Vec<Diagnostic> {
    let mut files = Vec::new();
    let mut diagnostics = Vec::new();
    for path in paths {
        if path.is_dir() {
            match policy_files_in(path) {
                Ok(found) => files.extend(found),
                Err(e) => diagnostics.push(Diagnostic::whole_file(
                    path,
                    PolicyError::Unreadable {
                        reason: e.to_string(),
                    },
                )),
            }
        } else {
            files.push(path.clone());
        }
    }
    // Host selection does not matter for validity; any node will do.
    let load = load_policy_files(&files, NodeIdentity::with_any_labels(""));
    diagnostics.extend(load.diagnostics().cloned());
    diagnostics.extend(set_limit_problems(&files));
    diagnostics
}

/// The kernel limits of the set each host would get: the policies for any host,
/// plus those naming it, plus (whatever labels a node turns out to have) every
/// policy selecting by other labels: a bound on what any node can be given.
fn set_limit_problems(files: &[PathBuf]) -> Vec<Diagnostic> {
    let mut out: Vec<Diagnostic> = Vec::new();
    for host in std::iter::once(String::new()).chain(named_hosts(files)) {
        let load = load_policy_files(files, NodeIdentity::with_any_labels(host));
        let set = crate::compile(&load.policies, crate::DefaultPostures::default());
        for d in crate::kernel_limits::kernel_limit_problems(&load.policies, &set) {
            if !out.iter().any(|o| o.error == d.error) {
                out.push(d);
            }
        }
    }
    out
}

/// The host names (lower case, sorted, once each) the valid policies of `files`
/// require: with the policies for every host, the sets `check` bounds.
pub fn named_hosts(files: &[PathBuf]) -> Vec<String> {
    let any = load_policy_files(files, NodeIdentity::with_any_labels(""));
    let mut hosts: Vec<String> = any
        .skipped
        .iter()
        .flat_map(|s| s.selector.required_hostnames())
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

/// Duplicate names among `policies`, or with `earlier` (name -> file, line).
fn check_unique_names(
    policies: &[HostPolicy],
    earlier: &HashMap<String, (PathBuf, usize)>,
) -> Result<(), Vec<Diagnostic>> {
    let mut seen: HashMap<&str, (PathBuf, usize)> = HashMap::new();
    let mut diagnostics = Vec::new();
    for policy in policies {
        let first = earlier
            .get(&policy.name)
            .cloned()
            .or_else(|| seen.get(policy.name.as_str()).cloned());
        match first {
            Some((first_file, first_line)) => {
                diagnostics.push(duplicate_name(policy, first_file, first_line))
            }
            None => {
                seen.insert(
                    &policy.name,
                    (policy.source_file.clone(), policy.name_position.line),
                );
            }
        }
    }
    if diagnostics.is_empty() {
        Ok(())
    } else {
        Err(diagnostics)
    }
}

fn duplicate_name(policy: &HostPolicy, first_file: PathBuf, first_line: usize) -> Diagnostic {
    Diagnostic::at(
        &policy.source_file,
        policy.name_position,
        "metadata.name",
        PolicyError::DuplicatePolicyName {
            name: policy.name.clone(),
            first_file,
            first_line,
        },
    )
}
