//! The KubeArmorHostPolicy schema: turns one YAML document into a [`HostPolicy`],
//! or into diagnostics that name the line and YAML path of every problem.
//!
//! Field names and casing follow KubeArmor's CRD (`pkg/KubeArmorController/api/
//! security.kubearmor.com/v1`). Every key a level does not define is an error
//! (with a "did you mean" when one is close), and so is every construct edgearmor
//! does not enforce. Where edgearmor accepts more than KubeArmor's CRD, it is
//! because the kernel side can enforce it:
//! - `fromSource` on `matchPatterns`, and optional (not required) on host
//!   `network` / `capabilities` rules;
//! - `action` and metadata on the `syscalls` section and its rules (KubeArmor can
//!   only audit syscalls; edgearmor can block setid calls);
//! - Linux capabilities newer than KubeArmor's list (`bpf`, `perfmon`, ...);
//! - `Allow` without `fromSource` (KubeArmor ignores it; here it means allow-list mode).
//!
//! Diagnostics are collected for the whole document (one problem does not hide
//! the next), but a failed check of a value does not cascade into others.
//!
//! The work is split three ways: `yaml_reader` reads nodes as typed values and
//! reports what does not fit, `rules` knows the sections and their rules, and this
//! module the document around them (apiVersion, kind, metadata, node selector).

mod rules;
mod yaml_reader;

use std::path::Path;

use crate::diagnostic::{Diagnostic, PolicyError, UnsupportedConstruct};
use crate::model::{
    FileMatcher, HostPolicy, HostSelector, MetadataOverrides, PathMatcher, PolicyRule,
    PolicySection,
};
use crate::node_labels::{
    check_label_key, check_label_value, is_hostname_label, is_hostname_pattern_label,
};
use crate::vocabulary::{Action, Capability, NetworkProtocol, SetIdSyscall};
use crate::yaml_tree::{Node, Position};

use rules::PathSection;
use yaml_reader::{SchemaChecker, YamlPath};

pub const API_VERSION: &str = "security.kubearmor.com/v1";
pub const KIND: &str = "KubeArmorHostPolicy";
pub use crate::node_labels::{HOSTNAME_LABEL, KUBERNETES_HOSTNAME_LABEL};
/// Bounds of what alerts carry (the wire format's `PolicyMeta` fields).
pub use edgearmor_wire::{MAX_MESSAGE_BYTES, MAX_POLICY_NAME_BYTES};
/// Of the tags joined with commas, as KubeArmor's `Tags` field shows them.
pub const MAX_JOINED_TAGS_BYTES: usize = edgearmor_wire::MAX_TAGS_BYTES;

const DOCUMENT_KEYS: &[&str] = &["apiVersion", "kind", "metadata", "spec"];
/// `namespace` is accepted and ignored, as KubeArmor does: host policies are
/// cluster-scoped objects.
const METADATA_KEYS: &[&str] = &["name", "namespace", "labels", "annotations"];
const SPEC_KEYS: &[&str] = &[
    "nodeSelector",
    "process",
    "file",
    "network",
    "capabilities",
    "syscalls",
    "apparmor",
    "severity",
    "tags",
    "message",
    "action",
];
/// `matchExpressions` is known only to refuse it precisely: KubeArmor's host policy
/// CRD (`NodeSelectorType`) has `matchLabels` alone.
const NODE_SELECTOR_KEYS: &[&str] = &["matchLabels", "matchExpressions"];

/// Checks one document. Returns the policy only when the document has no problem.
pub(crate) fn parse_policy_document(
    file: &Path,
    document: &Node,
) -> (Option<HostPolicy>, Vec<Diagnostic>) {
    let mut checker = SchemaChecker {
        file,
        diagnostics: Vec::new(),
        warnings: Vec::new(),
    };
    let policy = checker.document(document);
    let diagnostics = checker.diagnostics;
    if diagnostics.is_empty() {
        let policy = policy.map(|policy| HostPolicy {
            warnings: checker.warnings,
            ..policy
        });
        (policy, diagnostics)
    } else {
        (None, diagnostics)
    }
}

impl SchemaChecker<'_> {
    fn document(&mut self, root: &Node) -> Option<HostPolicy> {
        let top = YamlPath::default();
        let fields = self.mapping(root, &top, DOCUMENT_KEYS)?;

        // apiVersion and kind first: with either wrong, the rest is a different
        // schema and checking it would only produce noise.
        let api_version_node = self.required(&fields, "apiVersion", &top)?;
        let api_path = top.key("apiVersion");
        let api_version = self.string(api_version_node, &api_path)?;
        if api_version != API_VERSION {
            self.report(
                api_version_node.position,
                &api_path,
                PolicyError::UnsupportedApiVersion { found: api_version },
            );
            return None;
        }
        let kind_node = self.required(&fields, "kind", &top)?;
        let kind_path = top.key("kind");
        let kind = self.string(kind_node, &kind_path)?;
        if kind != KIND {
            self.report(
                kind_node.position,
                &kind_path,
                PolicyError::UnsupportedKind { found: kind },
            );
            return None;
        }

        let name = match self.required(&fields, "metadata", &top) {
            Some(metadata) => self.metadata(metadata, &top.key("metadata")),
            None => None,
        };
        let spec = match self.required(&fields, "spec", &top) {
            Some(spec) => self.spec(spec, &top.key("spec")),
            None => None,
        };
        let (host_selector, overrides, sections) = spec?;
        let (name, name_position) = name?;
        Some(HostPolicy {
            name,
            source_file: self.file.to_path_buf(),
            position: root.position,
            name_position,
            host_selector,
            overrides,
            process: sections.process,
            file: sections.file,
            network: sections.network,
            capabilities: sections.capabilities,
            syscalls: sections.syscalls,
            warnings: Vec::new(),
        })
    }

    fn metadata(&mut self, node: &Node, path: &YamlPath) -> Option<(String, Position)> {
        let fields = self.mapping(node, path, METADATA_KEYS)?;
        if let Some(namespace) = fields.get("namespace") {
            let namespace_path = path.key("namespace");
            if let Some(value) = self.string(namespace, &namespace_path) {
                self.warnings.push(Diagnostic::at(
                    self.file,
                    namespace.position,
                    namespace_path.0,
                    PolicyError::IgnoredNamespace { namespace: value },
                ));
            }
        }
        for key in ["labels", "annotations"] {
            if let Some(map) = fields.get(key) {
                // Accepted for kubectl compatibility, unused; still well-formed strings.
                let map_path = path.key(key);
                if let Some(entries) = self.entries(map, &map_path) {
                    for entry in entries {
                        self.string(entry.value, &map_path.key(entry.key));
                    }
                }
            }
        }
        let name_node = self.required(&fields, "name", path)?;
        let name_path = path.key("name");
        let name = self.string(name_node, &name_path)?;
        if name.len() > MAX_POLICY_NAME_BYTES {
            self.report(
                name_node.position,
                &name_path,
                PolicyError::TextTooLong {
                    what: "the policy name",
                    length: name.len(),
                    limit: MAX_POLICY_NAME_BYTES,
                },
            );
            return None;
        }
        if !is_kubernetes_object_name(&name) {
            self.report(
                name_node.position,
                &name_path,
                PolicyError::InvalidPolicyName { name },
            );
            return None;
        }
        Some((name, name_node.position))
    }

    fn spec(
        &mut self,
        node: &Node,
        path: &YamlPath,
    ) -> Option<(HostSelector, MetadataOverrides, Sections)> {
        let errors_before = self.diagnostics.len();
        let fields = self.mapping(node, path, SPEC_KEYS)?;
        let host_selector = match self.required(&fields, "nodeSelector", path) {
            Some(selector) => self.node_selector(selector, &path.key("nodeSelector")),
            None => None,
        };
        let overrides = self.overrides(&fields, path);

        if let Some(apparmor) = fields.get("apparmor") {
            self.report(
                apparmor.position,
                &path.key("apparmor"),
                PolicyError::Unsupported(UnsupportedConstruct::AppArmorProfile),
            );
        }

        let mut sections = Sections::default();
        let mut any_section = false;
        if let Some(node) = fields.get("process") {
            any_section = true;
            // Process rules read like file rules without `readOnly` (which the
            // process keys do not allow, so it is always false here).
            sections.process = self
                .path_section(node, &path.key("process"), PathSection::Process)
                .map(|section| PolicySection {
                    overrides: section.overrides,
                    rules: section
                        .rules
                        .into_iter()
                        .map(|rule| PolicyRule {
                            matcher: rule.matcher.target,
                            from_source: rule.from_source,
                            overrides: rule.overrides,
                            position: rule.position,
                            yaml_path: rule.yaml_path,
                        })
                        .collect(),
                });
        }
        if let Some(node) = fields.get("file") {
            any_section = true;
            sections.file = self.path_section(node, &path.key("file"), PathSection::File);
        }
        if let Some(node) = fields.get("network") {
            any_section = true;
            sections.network = self.network_section(node, &path.key("network"));
        }
        if let Some(node) = fields.get("capabilities") {
            any_section = true;
            sections.capabilities = self.capabilities_section(node, &path.key("capabilities"));
        }
        if let Some(node) = fields.get("syscalls") {
            any_section = true;
            let syscalls_path = path.key("syscalls");
            sections.syscalls = self.syscalls_section(node, &syscalls_path);
            if let Some(syscalls) = &sections.syscalls {
                self.check_no_allow_for_syscalls(syscalls, &overrides, path, &syscalls_path);
            }
        }
        // An apparmor profile alone is refused as that, not as a policy without rules.
        if !any_section && !fields.has_unknown_keys && fields.get("apparmor").is_none() {
            self.report(fields.position, path, PolicyError::NoRules);
        }
        if self.diagnostics.len() > errors_before {
            return None;
        }
        Some((host_selector?, overrides, sections))
    }

    /// Setid rules cannot allow (there is no setid allow-list), whichever level said so.
    fn check_no_allow_for_syscalls(
        &mut self,
        syscalls: &PolicySection<SetIdSyscall>,
        policy_overrides: &MetadataOverrides,
        spec_path: &YamlPath,
        syscalls_path: &YamlPath,
    ) {
        let mut reported_rules: Vec<&str> = Vec::new();
        for rule in &syscalls.rules {
            let (action, set_at) = if rule.overrides.action.is_some() {
                (rule.overrides.action, format!("{}.action", rule.yaml_path))
            } else if syscalls.overrides.action.is_some() {
                (syscalls.overrides.action, syscalls_path.key("action").0)
            } else {
                (policy_overrides.action, spec_path.key("action").0)
            };
            // One rule may stand for several syscalls; report it once.
            if action == Some(Action::Allow) && !reported_rules.contains(&rule.yaml_path.as_str()) {
                reported_rules.push(&rule.yaml_path);
                self.diagnostics.push(Diagnostic::at(
                    self.file,
                    rule.position,
                    rule.yaml_path.clone(),
                    PolicyError::AllowInSyscalls { set_at },
                ));
            }
        }
    }

    fn node_selector(&mut self, node: &Node, path: &YamlPath) -> Option<HostSelector> {
        let fields = self.mapping(node, path, NODE_SELECTOR_KEYS)?;
        if let Some(expressions) = fields.get("matchExpressions") {
            self.report(
                expressions.position,
                &path.key("matchExpressions"),
                PolicyError::Unsupported(UnsupportedConstruct::NodeMatchExpressions),
            );
        }
        let labels_path = path.key("matchLabels");
        let labels_node = self.required(&fields, "matchLabels", path)?;
        let entries = self.entries(labels_node, &labels_path)?;
        let mut selector = HostSelector::default();
        let mut valid = fields.get("matchExpressions").is_none();
        let mut hostname: Option<String> = None;
        for entry in entries {
            let label_path = labels_path.key(entry.key);
            let Some(value) = self.string(entry.value, &label_path) else {
                valid = false;
                continue;
            };
            match self.node_label(&entry, value, &label_path, &mut hostname) {
                Some(value) => {
                    selector.match_labels.insert(entry.key.to_owned(), value);
                }
                None => valid = false,
            }
        }
        if valid && selector.match_labels.is_empty() {
            self.report(
                labels_node.position,
                &labels_path,
                PolicyError::MissingHostnameLabel,
            );
            return None;
        }
        // `"*"` is neutral: every host has it.
        selector
            .match_labels
            .retain(|key, value| !(is_hostname_label(key) && value == "*"));
        valid.then_some(selector)
    }

    /// One `matchLabels` entry checked: Kubernetes label syntax; for the host-name
    /// labels `"*"` or host names separated by commas (as KubeArmor takes them), at
    /// least one of them in both when both are given (labels combine with AND; `"*"`
    /// is neutral); for the host-name pattern labels a host name with `*` in it.
    fn node_label(
        &mut self,
        entry: &yaml_reader::Entry<'_>,
        value: String,
        label_path: &YamlPath,
        hostname: &mut Option<String>,
    ) -> Option<String> {
        if is_hostname_pattern_label(entry.key) {
            if !is_host_name(&value.replace('*', "x")) {
                let error = PolicyError::InvalidHostnamePattern { found: value };
                self.report(entry.value.position, label_path, error);
                return None;
            }
            return Some(value);
        }
        if !is_hostname_label(entry.key) {
            let problem = check_label_key(entry.key)
                .map_err(|reason| (entry.key_position, "key", entry.key.to_owned(), reason))
                .and_then(|()| {
                    check_label_value(&value)
                        .map_err(|reason| (entry.value.position, "value", value.clone(), reason))
                });
            if let Err((position, part, found, reason)) = problem {
                let error = PolicyError::InvalidNodeLabel {
                    part,
                    found,
                    reason,
                };
                self.report(position, label_path, error);
                return None;
            }
            return Some(value);
        }
        let names: Vec<&str> = value.split(',').collect();
        if let Some(bad) = names.iter().find(|n| **n != "*" && !is_host_name(n)) {
            let error = PolicyError::InvalidHostname {
                found: (*bad).to_owned(),
            };
            self.report(entry.value.position, label_path, error);
            return None;
        }
        if names.contains(&"*") {
            return Some(value);
        }
        match hostname {
            Some(first)
                if !first
                    .split(',')
                    .any(|a| names.iter().any(|b| a.eq_ignore_ascii_case(b))) =>
            {
                let error = PolicyError::ConflictingHostnames {
                    first: first.clone(),
                    second: value,
                };
                self.report(entry.value.position, label_path, error);
                None
            }
            _ => {
                *hostname = Some(value.clone());
                Some(value)
            }
        }
    }
}

/// The sections of one policy, each present only when written.
#[derive(Default)]
pub(super) struct Sections {
    process: Option<PolicySection<PathMatcher>>,
    file: Option<PolicySection<FileMatcher>>,
    network: Option<PolicySection<NetworkProtocol>>,
    capabilities: Option<PolicySection<Capability>>,
    syscalls: Option<PolicySection<SetIdSyscall>>,
}

/// A Kubernetes object name (RFC 1123 subdomain): what `kubectl apply` accepts.
fn is_kubernetes_object_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let edge_ok = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    edge_ok(bytes.first())
        && edge_ok(bytes.last())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'.')
}

/// A host name as `uname -n` reports it (letters, digits, '-', '.', '_').
fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_kubernetes_object_name("hsp-block-pkg-mgmt"));
        assert!(is_kubernetes_object_name("a.b-1"));
        assert!(!is_kubernetes_object_name("Block_Apt"));
        assert!(!is_kubernetes_object_name("-x"));
        assert!(!is_kubernetes_object_name(""));
        assert!(is_host_name("gw-01.example"));
        assert!(!is_host_name("gw 01"));
    }
}
