//! Reading YAML nodes as the typed values a schema expects, reporting every node
//! that does not fit (wrong type, unknown or duplicate key, explicit tag) with its
//! position and YAML path.

use std::path::Path;

use crate::diagnostic::{Diagnostic, ExpectedType, PolicyError, UnsupportedConstruct};
use crate::yaml_tree::{Node, NodeValue, Position};

/// A location in a document, printed as `spec.process.matchPaths[1].path`.
#[derive(Clone, Debug, Default)]
pub(super) struct YamlPath(pub(super) String);

impl YamlPath {
    pub(super) fn key(&self, key: &str) -> YamlPath {
        let plain = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !plain {
            YamlPath(format!("{}[{key:?}]", self.0))
        } else if self.0.is_empty() {
            YamlPath(key.to_string())
        } else {
            YamlPath(format!("{}.{key}", self.0))
        }
    }

    pub(super) fn index(&self, index: usize) -> YamlPath {
        YamlPath(format!("{}[{index}]", self.0))
    }
}

/// The checked entries of a mapping whose keys belong to a fixed set.
pub(super) struct Fields<'n> {
    pub(super) position: Position,
    entries: Vec<(&'static str, &'n Node)>,
    /// Some key was reported unknown: "missing"/"empty" findings about this mapping
    /// would then most likely be that key misspelt, so they are not reported.
    pub(super) has_unknown_keys: bool,
}

impl<'n> Fields<'n> {
    pub(super) fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, node)| *node)
    }
}

/// A mapping entry with a string key.
pub(super) struct Entry<'n> {
    pub(super) key: &'n str,
    pub(super) key_position: Position,
    pub(super) value: &'n Node,
}

pub(super) struct SchemaChecker<'f> {
    pub(super) file: &'f Path,
    pub(super) diagnostics: Vec<Diagnostic>,
    /// What is accepted but ignored; they do not make the document invalid.
    pub(super) warnings: Vec<Diagnostic>,
}

impl SchemaChecker<'_> {
    pub(super) fn report(&mut self, position: Position, path: &YamlPath, error: PolicyError) {
        self.diagnostics
            .push(Diagnostic::at(self.file, position, path.0.clone(), error));
    }

    // ---------------------------------------------------------------- generic shapes

    /// Reports an explicit tag; true when the node may be used.
    pub(super) fn untagged(&mut self, node: &Node, path: &YamlPath) -> bool {
        match &node.tag {
            None => true,
            Some(tag) => {
                self.report(
                    node.position,
                    path,
                    PolicyError::Unsupported(UnsupportedConstruct::YamlTag { tag: tag.clone() }),
                );
                false
            }
        }
    }

    pub(super) fn wrong_type(&mut self, node: &Node, path: &YamlPath, expected: ExpectedType) {
        self.report(
            node.position,
            path,
            PolicyError::WrongType {
                expected,
                found: node.describe(),
            },
        );
    }

    /// A mapping's entries, with string keys and no duplicates (both reported).
    pub(super) fn entries<'n>(
        &mut self,
        node: &'n Node,
        path: &YamlPath,
    ) -> Option<Vec<Entry<'n>>> {
        if !self.untagged(node, path) {
            return None;
        }
        let NodeValue::Mapping(pairs) = &node.value else {
            self.wrong_type(node, path, ExpectedType::Mapping);
            return None;
        };
        let mut entries: Vec<Entry<'n>> = Vec::with_capacity(pairs.len());
        for (key_node, value) in pairs {
            let NodeValue::String(key) = &key_node.value else {
                self.report(
                    key_node.position,
                    path,
                    PolicyError::NonStringKey {
                        found: key_node.describe(),
                    },
                );
                continue;
            };
            if let Some(first) = entries.iter().find(|e| e.key == key.as_str()) {
                let first_line = first.key_position.line;
                self.report(
                    key_node.position,
                    &path.key(key),
                    PolicyError::DuplicateKey {
                        key: key.clone(),
                        first_line,
                    },
                );
                continue;
            }
            entries.push(Entry {
                key,
                key_position: key_node.position,
                value,
            });
        }
        Some(entries)
    }

    /// A mapping whose keys must come from `allowed`; other keys are reported.
    pub(super) fn mapping<'n>(
        &mut self,
        node: &'n Node,
        path: &YamlPath,
        allowed: &'static [&'static str],
    ) -> Option<Fields<'n>> {
        let entries = self.entries(node, path)?;
        let mut fields = Fields {
            position: node.position,
            entries: Vec::with_capacity(entries.len()),
            has_unknown_keys: false,
        };
        for entry in entries {
            match allowed.iter().find(|&&k| k == entry.key) {
                Some(&known) => fields.entries.push((known, entry.value)),
                None => match not_yet_supported(&path.0, entry.key) {
                    // A KubeArmor construct is refused as what it is, not as a typo.
                    Some(construct) => {
                        fields.has_unknown_keys = true;
                        self.report(
                            entry.key_position,
                            &path.key(entry.key),
                            PolicyError::Unsupported(construct),
                        );
                    }
                    None => {
                        fields.has_unknown_keys = true;
                        self.report(
                            entry.key_position,
                            &path.key(entry.key),
                            PolicyError::UnknownKey {
                                key: entry.key.to_string(),
                                expected: allowed,
                                suggestion: suggest_key(entry.key, allowed),
                            },
                        );
                    }
                },
            }
        }
        Some(fields)
    }

    pub(super) fn required<'n>(
        &mut self,
        fields: &Fields<'n>,
        key: &'static str,
        path: &YamlPath,
    ) -> Option<&'n Node> {
        let found = fields.get(key);
        if found.is_none() && !fields.has_unknown_keys {
            self.report(fields.position, path, PolicyError::MissingKey { key });
        }
        found
    }

    pub(super) fn string(&mut self, node: &Node, path: &YamlPath) -> Option<String> {
        if !self.untagged(node, path) {
            return None;
        }
        match &node.value {
            NodeValue::String(s) => Some(s.clone()),
            _ => {
                self.wrong_type(node, path, ExpectedType::String);
                None
            }
        }
    }

    pub(super) fn boolean(&mut self, node: &Node, path: &YamlPath) -> Option<bool> {
        if !self.untagged(node, path) {
            return None;
        }
        match node.value {
            NodeValue::Bool(b) => Some(b),
            _ => {
                self.wrong_type(node, path, ExpectedType::Boolean);
                None
            }
        }
    }

    pub(super) fn sequence<'n>(&mut self, node: &'n Node, path: &YamlPath) -> Option<&'n [Node]> {
        if !self.untagged(node, path) {
            return None;
        }
        match &node.value {
            NodeValue::Sequence(items) => Some(items),
            _ => {
                self.wrong_type(node, path, ExpectedType::List);
                None
            }
        }
    }

    /// A list that must not be empty (an empty one is reported against `key`).
    pub(super) fn non_empty_sequence<'n>(
        &mut self,
        node: &'n Node,
        path: &YamlPath,
        key: &'static str,
    ) -> Option<&'n [Node]> {
        let items = self.sequence(node, path)?;
        if items.is_empty() {
            self.report(node.position, path, PolicyError::EmptyList { key });
            return None;
        }
        Some(items)
    }

    pub(super) fn string_list(&mut self, node: &Node, path: &YamlPath) -> Option<Vec<String>> {
        let items = self.sequence(node, path)?;
        let mut strings = Vec::with_capacity(items.len());
        let mut all_valid = true;
        for (i, item) in items.iter().enumerate() {
            match self.string(item, &path.index(i)) {
                Some(s) => strings.push(s),
                None => all_valid = false,
            }
        }
        all_valid.then_some(strings)
    }
}

/// The allowed key an unknown key was most likely meant to be: same letters in
/// another case, or at most two edits away.
fn suggest_key(key: &str, allowed: &'static [&'static str]) -> Option<&'static str> {
    if let Some(same) = allowed.iter().find(|k| k.eq_ignore_ascii_case(key)) {
        return Some(same);
    }
    if key.chars().count() < 4 {
        return None;
    }
    allowed
        .iter()
        .map(|&k| {
            (
                edit_distance(&key.to_ascii_lowercase(), &k.to_ascii_lowercase()),
                k,
            )
        })
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        current[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// The keys of KubeArmor's KubeArmorHostPolicy CRD that edgearmor does not enforce
/// yet, by where they stand (`path`, the mapping's YAML path).
fn not_yet_supported(path: &str, key: &str) -> Option<UnsupportedConstruct> {
    // `spec.process.matchPaths[3]` -> ("spec.process.matchPaths", true)
    let (container, in_list) = match path.rsplit_once('[') {
        Some((container, _)) => (container, true),
        None => (path, false),
    };
    let rule_of = |sections: &[&str], lists: &[&str]| {
        in_list
            && sections.iter().any(|section| {
                lists
                    .iter()
                    .any(|list| container == format!("spec.{section}.{list}"))
            })
    };
    match key {
        "device" if path == "spec" => Some(UnsupportedConstruct::Device),
        "matchDNSQueries" if path == "spec.network" => Some(UnsupportedConstruct::DnsQueries),
        "execname" if rule_of(&["process"], &["matchPaths"]) => {
            Some(UnsupportedConstruct::ExecName)
        }
        "allowedArgs" if rule_of(&["process"], &["matchPaths"]) => {
            Some(UnsupportedConstruct::AllowedArgs)
        }
        "pts" if rule_of(&["process", "file"], &["matchPaths", "matchDirectories"]) => {
            Some(UnsupportedConstruct::Pts)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::rules::{FILE_PATH_KEYS, PATH_SECTION_KEYS, PROCESS_PATH_KEYS};

    #[test]
    fn yaml_paths_read_naturally() {
        let p = YamlPath::default()
            .key("spec")
            .key("process")
            .key("matchPaths")
            .index(1)
            .key("path");
        assert_eq!(p.0, "spec.process.matchPaths[1].path");
        let p = YamlPath::default()
            .key("spec")
            .key("nodeSelector")
            .key("matchLabels")
            .key("kubearmor.io/hostname");
        assert_eq!(
            p.0,
            "spec.nodeSelector.matchLabels[\"kubearmor.io/hostname\"]"
        );
    }

    #[test]
    fn key_suggestions() {
        assert_eq!(
            suggest_key("fromsource", PROCESS_PATH_KEYS),
            Some("fromSource")
        );
        assert_eq!(
            suggest_key("fromSources", PROCESS_PATH_KEYS),
            Some("fromSource")
        );
        assert_eq!(suggest_key("readonly", FILE_PATH_KEYS), Some("readOnly"));
        assert_eq!(
            suggest_key("matchPath", PATH_SECTION_KEYS),
            Some("matchPaths")
        );
        assert_eq!(suggest_key("zzzzzzzz", PATH_SECTION_KEYS), None);
        assert_eq!(suggest_key("dirs", PROCESS_PATH_KEYS), None);
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
