//! A validated KubeArmorHostPolicy, as written: every rule keeps its own
//! severity/tags/message/action overrides and its source location. Resolving
//! "innermost wins" and flattening into per-class tables is [`crate::compile()`]'s job.

use std::fmt;
use std::path::PathBuf;

use crate::diagnostic::Diagnostic;
use crate::glob::Glob;
use crate::node_labels::{
    HOSTNAME_LABEL, NodeIdentity, NodeLabels, is_hostname_label, labels_select,
};
use crate::vocabulary::{Action, Capability, NetworkProtocol, SetIdSyscall, Severity};
use crate::yaml_tree::Position;

/// The `severity`, `tags`, `message` and `action` one level of a policy sets.
/// `None` means "inherit from the enclosing level". As in KubeArmor (Go's
/// `omitempty`), an empty message or tag list counts as unset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetadataOverrides {
    pub severity: Option<Severity>,
    pub tags: Option<Vec<String>>,
    pub message: Option<String>,
    pub action: Option<Action>,
}

/// What a process or file rule matches, as the kernel sees paths: resolved,
/// absolute, normalized.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PathMatcher {
    /// `matchPaths[].path`: this path only.
    Exact(String),
    /// `matchDirectories[].dir` (always ends with `/`): the entries directly in
    /// it, or with `recursive` everything below it.
    Directory { dir: String, recursive: bool },
    /// `matchPatterns[].pattern`.
    Pattern(Glob),
}

impl PathMatcher {
    /// The reference semantics the kernel side must reproduce.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatcher::Exact(exact) => path == exact,
            PathMatcher::Directory { dir, recursive } => match path.strip_prefix(dir.as_str()) {
                Some(rest) => !rest.is_empty() && (*recursive || !rest.contains('/')),
                None => false,
            },
            PathMatcher::Pattern(glob) => glob.matches(path),
        }
    }

    /// The path, directory or pattern as written.
    pub fn as_str(&self) -> &str {
        match self {
            PathMatcher::Exact(path) => path,
            PathMatcher::Directory { dir, .. } => dir,
            PathMatcher::Pattern(glob) => glob.as_str(),
        }
    }
}

/// A `file` rule's target: a path matcher and whether only reads are permitted.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FileMatcher {
    pub target: PathMatcher,
    /// `readOnly: true`: with `Block`, reads pass and writes are denied; with
    /// `Allow`, only reads are allowed.
    pub read_only: bool,
}

/// One rule of a section. Lists in the YAML (`syscall: [setuid, setgid]`,
/// `protocol: tcp,udp`) become one rule per element, all at the same position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyRule<M> {
    pub matcher: M,
    /// Executables (absolute paths) the rule is limited to; empty = any.
    pub from_source: Vec<String>,
    pub overrides: MetadataOverrides,
    pub position: Position,
    /// e.g. `spec.process.matchPaths[1]`.
    pub yaml_path: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicySection<M> {
    pub overrides: MetadataOverrides,
    pub rules: Vec<PolicyRule<M>>,
}

/// `spec.nodeSelector.matchLabels`: the labels a node must all have (see
/// [`crate::node_labels`]; the host-name labels compare with the host name, `"*"`
/// there is every host).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct HostSelector {
    pub match_labels: NodeLabels,
}

impl HostSelector {
    /// Every host (`kubearmor.io/hostname: "*"`).
    pub fn any_host() -> Self {
        Self::default()
    }

    /// The host named `name`.
    pub fn hostname(name: &str) -> Self {
        Self {
            match_labels: NodeLabels::from([(HOSTNAME_LABEL.to_owned(), name.to_owned())]),
        }
    }

    pub fn selects(&self, node: &NodeIdentity) -> bool {
        labels_select(&self.match_labels, node)
    }

    /// The host names the selector requires one of (lower case; none for every
    /// host, or hosts selected by a pattern or other labels alone).
    pub fn required_hostnames(&self) -> Vec<String> {
        self.match_labels
            .iter()
            .find(|(k, v)| is_hostname_label(k) && !v.split(',').any(|name| name == "*"))
            .map(|(_, v)| v.split(',').map(str::to_ascii_lowercase).collect())
            .unwrap_or_default()
    }
}

impl fmt::Display for HostSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let required: Vec<String> = self
            .match_labels
            .iter()
            .filter(|(k, v)| !(is_hostname_label(k) && v.as_str() == "*"))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if required.is_empty() {
            write!(f, "every host")
        } else {
            write!(f, "nodes with {}", required.join(","))
        }
    }
}

/// One validated `KubeArmorHostPolicy` document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPolicy {
    /// `metadata.name`: `PolicyName` in alerts.
    pub name: String,
    pub source_file: PathBuf,
    /// Where the document starts.
    pub position: Position,
    /// Where `metadata.name`'s value is.
    pub name_position: Position,
    pub host_selector: HostSelector,
    /// The `spec`-level severity/tags/message/action.
    pub overrides: MetadataOverrides,
    pub process: Option<PolicySection<PathMatcher>>,
    pub file: Option<PolicySection<FileMatcher>>,
    pub network: Option<PolicySection<NetworkProtocol>>,
    pub capabilities: Option<PolicySection<Capability>>,
    /// `syscalls.matchSyscalls`, one rule per setid syscall.
    pub syscalls: Option<PolicySection<SetIdSyscall>>,
    /// What is accepted but ignored (`metadata.namespace`): `policy check` prints
    /// these, `run` logs them.
    pub warnings: Vec<Diagnostic>,
}

impl HostPolicy {
    /// Number of rules across all sections.
    pub fn rule_count(&self) -> usize {
        self.process.as_ref().map_or(0, |s| s.rules.len())
            + self.file.as_ref().map_or(0, |s| s.rules.len())
            + self.network.as_ref().map_or(0, |s| s.rules.len())
            + self.capabilities.as_ref().map_or(0, |s| s.rules.len())
            + self.syscalls.as_ref().map_or(0, |s| s.rules.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_matching() {
        let flat = PathMatcher::Directory {
            dir: "/usr/bin/".into(),
            recursive: false,
        };
        assert!(flat.matches("/usr/bin/ls"));
        assert!(!flat.matches("/usr/bin/"));
        assert!(!flat.matches("/usr/bin/x/y"));
        assert!(!flat.matches("/usr/binx"));
        let deep = PathMatcher::Directory {
            dir: "/usr/bin/".into(),
            recursive: true,
        };
        assert!(deep.matches("/usr/bin/x/y"));
        assert!(!deep.matches("/usr/sbin/x"));
        let root = PathMatcher::Directory {
            dir: "/".into(),
            recursive: true,
        };
        assert!(root.matches("/anything/at/all"));
    }

    #[test]
    fn host_selection() {
        let gw1 = NodeIdentity::named("gw-1");
        assert!(HostSelector::any_host().selects(&gw1));
        assert!(HostSelector::hostname("GW-1").selects(&gw1));
        assert!(!HostSelector::hostname("gw-2").selects(&gw1));
        assert_eq!(HostSelector::any_host().to_string(), "every host");
        assert_eq!(
            HostSelector::hostname("gw-2").to_string(),
            "nodes with kubearmor.io/hostname=gw-2"
        );
    }
}
