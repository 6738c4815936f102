//! The sections of a policy (`process`, `file`, `network`, `capabilities`,
//! `syscalls`) and their rules: matchers, `fromSource`, and the
//! severity/tags/message/action every level may set.

use crate::diagnostic::{ExpectedType, PolicyError, UnsupportedConstruct};
use crate::glob::Glob;
use crate::model::{FileMatcher, MetadataOverrides, PathMatcher, PolicyRule, PolicySection};
use crate::path_rules::{check_directory, check_exact_path, parse_pattern};
use crate::vocabulary::{Action, Capability, NetworkProtocol, SetIdSyscall, Severity};
use crate::yaml_tree::{Node, NodeValue};

use super::yaml_reader::{Fields, SchemaChecker, YamlPath};
use super::{MAX_JOINED_TAGS_BYTES, MAX_MESSAGE_BYTES};

pub(super) const PATH_SECTION_MATCHERS: &[&str] =
    &["matchPaths", "matchDirectories", "matchPatterns"];
pub(super) const PATH_SECTION_KEYS: &[&str] = &[
    "matchPaths",
    "matchDirectories",
    "matchPatterns",
    "severity",
    "tags",
    "message",
    "action",
];
pub(super) const PROCESS_PATH_KEYS: &[&str] = &[
    "path",
    "ownerOnly",
    "fromSource",
    "severity",
    "tags",
    "message",
    "action",
];
pub(super) const PROCESS_DIRECTORY_KEYS: &[&str] = &[
    "dir",
    "recursive",
    "ownerOnly",
    "fromSource",
    "severity",
    "tags",
    "message",
    "action",
];
pub(super) const PROCESS_PATTERN_KEYS: &[&str] = &[
    "pattern",
    "ownerOnly",
    "fromSource",
    "severity",
    "tags",
    "message",
    "action",
];
pub(super) const FILE_PATH_KEYS: &[&str] = &[
    "path",
    "readOnly",
    "ownerOnly",
    "fromSource",
    "severity",
    "tags",
    "message",
    "action",
];
pub(super) const FILE_DIRECTORY_KEYS: &[&str] = &[
    "dir",
    "recursive",
    "readOnly",
    "ownerOnly",
    "fromSource",
    "severity",
    "tags",
    "message",
    "action",
];
pub(super) const FILE_PATTERN_KEYS: &[&str] = &[
    "pattern",
    "readOnly",
    "ownerOnly",
    "fromSource",
    "severity",
    "tags",
    "message",
    "action",
];
pub(super) const FROM_SOURCE_KEYS: &[&str] = &["path"];
pub(super) const SYSCALL_FROM_SOURCE_KEYS: &[&str] = &["path", "dir", "recursive"];
pub(super) const NETWORK_SECTION_KEYS: &[&str] =
    &["matchProtocols", "severity", "tags", "message", "action"];
pub(super) const PROTOCOL_RULE_KEYS: &[&str] = &[
    "protocol",
    "fromSource",
    "severity",
    "tags",
    "message",
    "action",
];
pub(super) const CAPABILITIES_SECTION_KEYS: &[&str] =
    &["matchCapabilities", "severity", "tags", "message", "action"];
pub(super) const CAPABILITY_RULE_KEYS: &[&str] = &[
    "capability",
    "fromSource",
    "severity",
    "tags",
    "message",
    "action",
];
pub(super) const SYSCALLS_SECTION_KEYS: &[&str] = &[
    "matchSyscalls",
    "matchPaths",
    "severity",
    "tags",
    "message",
    "action",
];
pub(super) const SYSCALL_RULE_KEYS: &[&str] = &[
    "syscall",
    "fromSource",
    "severity",
    "tags",
    "message",
    "action",
];

/// The three matcher lists of `process` and `file`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PathMatcherKey {
    Paths,
    Directories,
    Patterns,
}

impl PathMatcherKey {
    fn key(self) -> &'static str {
        match self {
            PathMatcherKey::Paths => "matchPaths",
            PathMatcherKey::Directories => "matchDirectories",
            PathMatcherKey::Patterns => "matchPatterns",
        }
    }

    /// The keys one rule of this list may have.
    fn rule_keys(self, section: PathSection) -> &'static [&'static str] {
        match (section, self) {
            (PathSection::Process, PathMatcherKey::Paths) => PROCESS_PATH_KEYS,
            (PathSection::Process, PathMatcherKey::Directories) => PROCESS_DIRECTORY_KEYS,
            (PathSection::Process, PathMatcherKey::Patterns) => PROCESS_PATTERN_KEYS,
            (PathSection::File, PathMatcherKey::Paths) => FILE_PATH_KEYS,
            (PathSection::File, PathMatcherKey::Directories) => FILE_DIRECTORY_KEYS,
            (PathSection::File, PathMatcherKey::Patterns) => FILE_PATTERN_KEYS,
        }
    }
}

/// Which of the two path-matching sections a rule is in.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum PathSection {
    Process,
    File,
}

impl PathSection {
    fn name(self) -> &'static str {
        match self {
            PathSection::Process => "process",
            PathSection::File => "file",
        }
    }
}

impl SchemaChecker<'_> {
    /// `severity`, `tags`, `message` and `action` of one level.
    pub(super) fn overrides(&mut self, fields: &Fields<'_>, path: &YamlPath) -> MetadataOverrides {
        let mut overrides = MetadataOverrides::default();
        if let Some(node) = fields.get("severity") {
            let severity_path = path.key("severity");
            if self.untagged(node, &severity_path) {
                match node.value {
                    NodeValue::Int(value) => match Severity::new(value) {
                        Some(severity) => overrides.severity = Some(severity),
                        None => self.report(
                            node.position,
                            &severity_path,
                            PolicyError::SeverityOutOfRange { found: value },
                        ),
                    },
                    _ => self.wrong_type(node, &severity_path, ExpectedType::Integer),
                }
            }
        }
        if let Some(node) = fields.get("tags") {
            let tags_path = path.key("tags");
            if let Some(tags) = self.string_list(node, &tags_path) {
                overrides.tags = self.checked_tags(tags, node, &tags_path);
            }
        }
        if let Some(node) = fields.get("message") {
            let message_path = path.key("message");
            if let Some(message) = self.string(node, &message_path) {
                if message.len() > MAX_MESSAGE_BYTES {
                    self.report(
                        node.position,
                        &message_path,
                        PolicyError::TextTooLong {
                            what: "the message",
                            length: message.len(),
                            limit: MAX_MESSAGE_BYTES,
                        },
                    );
                } else if !message.is_empty() {
                    overrides.message = Some(message);
                }
            }
        }
        if let Some(node) = fields.get("action") {
            let action_path = path.key("action");
            if let Some(word) = self.string(node, &action_path) {
                match Action::from_yaml(&word) {
                    Some(action) => overrides.action = Some(action),
                    None => self.report(
                        node.position,
                        &action_path,
                        PolicyError::InvalidAction { found: word },
                    ),
                }
            }
        }
        overrides
    }

    fn checked_tags(
        &mut self,
        tags: Vec<String>,
        node: &Node,
        path: &YamlPath,
    ) -> Option<Vec<String>> {
        let items = match &node.value {
            NodeValue::Sequence(items) => items.as_slice(),
            _ => &[],
        };
        for (i, tag) in tags.iter().enumerate() {
            if tag.is_empty() || tag.contains(',') {
                let position = items.get(i).map_or(node.position, |n| n.position);
                self.report(
                    position,
                    &path.index(i),
                    PolicyError::InvalidTag { tag: tag.clone() },
                );
                return None;
            }
        }
        let joined = tags.iter().map(String::len).sum::<usize>() + tags.len().saturating_sub(1);
        if joined > MAX_JOINED_TAGS_BYTES {
            self.report(
                node.position,
                path,
                PolicyError::TextTooLong {
                    what: "the tags joined with commas",
                    length: joined,
                    limit: MAX_JOINED_TAGS_BYTES,
                },
            );
            return None;
        }
        (!tags.is_empty()).then_some(tags)
    }

    /// `fromSource: [{path: ...}]`; for `syscalls`, KubeArmor also allows `dir`,
    /// which edgearmor refuses.
    fn source_executables(
        &mut self,
        fields: &Fields<'_>,
        path: &YamlPath,
        in_syscalls: bool,
    ) -> Option<Vec<String>> {
        let Some(node) = fields.get("fromSource") else {
            return Some(Vec::new());
        };
        let list_path = path.key("fromSource");
        let items = self.non_empty_sequence(node, &list_path, "fromSource")?;
        let allowed = if in_syscalls {
            SYSCALL_FROM_SOURCE_KEYS
        } else {
            FROM_SOURCE_KEYS
        };
        let mut sources = Vec::with_capacity(items.len());
        let mut all_valid = true;
        for (i, item) in items.iter().enumerate() {
            let item_path = list_path.index(i);
            let Some(source) = self.mapping(item, &item_path, allowed) else {
                all_valid = false;
                continue;
            };
            // Only syscalls' sources may have these keys; one report is enough.
            if let Some((key, value)) = ["dir", "recursive"]
                .into_iter()
                .find_map(|key| source.get(key).map(|value| (key, value)))
            {
                self.report(
                    value.position,
                    &item_path.key(key),
                    PolicyError::Unsupported(UnsupportedConstruct::SyscallSourceDirectory),
                );
                all_valid = false;
                continue;
            }
            match self.checked_exact_path(&source, "path", &item_path) {
                Some(exe) => {
                    if !sources.contains(&exe) {
                        sources.push(exe);
                    }
                }
                None => all_valid = false,
            }
        }
        all_valid.then_some(sources)
    }

    fn checked_exact_path(
        &mut self,
        fields: &Fields<'_>,
        key: &'static str,
        path: &YamlPath,
    ) -> Option<String> {
        let node = self.required(fields, key, path)?;
        let value_path = path.key(key);
        let value = self.string(node, &value_path)?;
        match check_exact_path(&value) {
            Ok(()) => Some(value),
            Err(error) => {
                self.report(node.position, &value_path, error);
                None
            }
        }
    }

    /// `ownerOnly: false` is a no-op; `true` is refused.
    fn refuse_owner_only(&mut self, fields: &Fields<'_>, path: &YamlPath) {
        let Some(node) = fields.get("ownerOnly") else {
            return;
        };
        let owner_path = path.key("ownerOnly");
        if self.boolean(node, &owner_path) == Some(true) {
            self.report(
                node.position,
                &owner_path,
                PolicyError::Unsupported(UnsupportedConstruct::OwnerOnly),
            );
        }
    }

    fn optional_flag(
        &mut self,
        fields: &Fields<'_>,
        key: &'static str,
        path: &YamlPath,
    ) -> Option<bool> {
        match fields.get(key) {
            None => Some(false),
            Some(node) => self.boolean(node, &path.key(key)),
        }
    }

    // ---------------------------------------------------------------- sections

    /// Reports a section without matchers (`process:` with nothing after it,
    /// `process: {}`); true when the section has some. `fields` is `None` for a
    /// null section.
    fn has_matchers(
        &mut self,
        node: &Node,
        path: &YamlPath,
        fields: Option<&Fields<'_>>,
        section: &'static str,
        matchers: &'static [&'static str],
    ) -> bool {
        if let Some(fields) = fields {
            if matchers.iter().any(|k| fields.get(k).is_some()) {
                return true;
            }
            if fields.has_unknown_keys {
                return false;
            }
        }
        self.report(
            node.position,
            path,
            PolicyError::EmptySection { section, matchers },
        );
        false
    }

    pub(super) fn path_section(
        &mut self,
        node: &Node,
        path: &YamlPath,
        kind: PathSection,
    ) -> Option<PolicySection<FileMatcher>> {
        if node.value == NodeValue::Null {
            self.has_matchers(node, path, None, kind.name(), PATH_SECTION_MATCHERS);
            return None;
        }
        let fields = self.mapping(node, path, PATH_SECTION_KEYS)?;
        if !self.has_matchers(
            node,
            path,
            Some(&fields),
            kind.name(),
            PATH_SECTION_MATCHERS,
        ) {
            return None;
        }
        let overrides = self.overrides(&fields, path);
        let mut rules = Vec::new();
        let mut all_valid = true;
        for matcher in [
            PathMatcherKey::Paths,
            PathMatcherKey::Directories,
            PathMatcherKey::Patterns,
        ] {
            let key = matcher.key();
            let Some(list) = fields.get(key) else {
                continue;
            };
            let list_path = path.key(key);
            let Some(items) = self.non_empty_sequence(list, &list_path, key) else {
                all_valid = false;
                continue;
            };
            for (i, item) in items.iter().enumerate() {
                let rule_path = list_path.index(i);
                match self.path_rule(item, &rule_path, matcher, kind) {
                    Some(rule) => rules.push(rule),
                    None => all_valid = false,
                }
            }
        }
        all_valid.then_some(PolicySection { overrides, rules })
    }

    fn path_rule(
        &mut self,
        node: &Node,
        path: &YamlPath,
        matcher: PathMatcherKey,
        kind: PathSection,
    ) -> Option<PolicyRule<FileMatcher>> {
        let fields = self.mapping(node, path, matcher.rule_keys(kind))?;
        let errors_before = self.diagnostics.len();
        let target = match matcher {
            PathMatcherKey::Paths => self
                .checked_exact_path(&fields, "path", path)
                .map(PathMatcher::Exact),
            PathMatcherKey::Directories => {
                let dir = self.checked_directory(&fields, path);
                let recursive = self.optional_flag(&fields, "recursive", path);
                match (dir, recursive) {
                    (Some(dir), Some(recursive)) => Some(PathMatcher::Directory { dir, recursive }),
                    _ => None,
                }
            }
            PathMatcherKey::Patterns => self
                .checked_pattern(&fields, path)
                .map(PathMatcher::Pattern),
        };
        let read_only = match kind {
            PathSection::File => self.optional_flag(&fields, "readOnly", path),
            PathSection::Process => Some(false),
        };
        self.refuse_owner_only(&fields, path);
        let from_source = self.source_executables(&fields, path, false);
        let overrides = self.overrides(&fields, path);
        if self.diagnostics.len() > errors_before {
            return None;
        }
        Some(PolicyRule {
            matcher: FileMatcher {
                target: target?,
                read_only: read_only?,
            },
            from_source: from_source?,
            overrides,
            position: node.position,
            yaml_path: path.0.clone(),
        })
    }

    fn checked_directory(&mut self, fields: &Fields<'_>, path: &YamlPath) -> Option<String> {
        let node = self.required(fields, "dir", path)?;
        let dir_path = path.key("dir");
        let dir = self.string(node, &dir_path)?;
        match check_directory(&dir) {
            Ok(()) => Some(dir),
            Err(error) => {
                self.report(node.position, &dir_path, error);
                None
            }
        }
    }

    fn checked_pattern(&mut self, fields: &Fields<'_>, path: &YamlPath) -> Option<Glob> {
        let node = self.required(fields, "pattern", path)?;
        let pattern_path = path.key("pattern");
        let pattern = self.string(node, &pattern_path)?;
        match parse_pattern(&pattern) {
            Ok(glob) => Some(glob),
            Err(error) => {
                self.report(node.position, &pattern_path, error);
                None
            }
        }
    }

    pub(super) fn network_section(
        &mut self,
        node: &Node,
        path: &YamlPath,
    ) -> Option<PolicySection<NetworkProtocol>> {
        self.word_list_section(
            node,
            path,
            WordSection {
                name: "network",
                section_keys: NETWORK_SECTION_KEYS,
                matcher_key: "matchProtocols",
                matchers: &["matchProtocols"],
                rule_keys: PROTOCOL_RULE_KEYS,
                word_key: "protocol",
            },
            |word| {
                NetworkProtocol::from_yaml(word).ok_or_else(|| {
                    let found = word.to_string();
                    match NetworkProtocol::is_kubearmor_only(word) {
                        true => PolicyError::UnsupportedProtocol { found },
                        false => PolicyError::UnknownProtocol { found },
                    }
                })
            },
        )
    }

    pub(super) fn capabilities_section(
        &mut self,
        node: &Node,
        path: &YamlPath,
    ) -> Option<PolicySection<Capability>> {
        self.word_list_section(
            node,
            path,
            WordSection {
                name: "capabilities",
                section_keys: CAPABILITIES_SECTION_KEYS,
                matcher_key: "matchCapabilities",
                matchers: &["matchCapabilities"],
                rule_keys: CAPABILITY_RULE_KEYS,
                word_key: "capability",
            },
            |word| {
                Capability::from_yaml(word).ok_or_else(|| PolicyError::UnknownCapability {
                    found: word.to_string(),
                    suggestion: Capability::suggestion_for(word),
                })
            },
        )
    }

    /// `network` and `capabilities`: one list of rules, each naming one word (or
    /// several, comma-separated, as KubeArmor's documentation allows).
    fn word_list_section<W: Copy + PartialEq>(
        &mut self,
        node: &Node,
        path: &YamlPath,
        section: WordSection,
        parse_word: impl Fn(&str) -> Result<W, PolicyError>,
    ) -> Option<PolicySection<W>> {
        if node.value == NodeValue::Null {
            self.has_matchers(node, path, None, section.name, section.matchers);
            return None;
        }
        let fields = self.mapping(node, path, section.section_keys)?;
        if !self.has_matchers(node, path, Some(&fields), section.name, section.matchers) {
            return None;
        }
        let overrides = self.overrides(&fields, path);
        let list_path = path.key(section.matcher_key);
        let list = fields.get(section.matcher_key)?;
        let items = self.non_empty_sequence(list, &list_path, section.matcher_key)?;
        let mut rules = Vec::new();
        let mut all_valid = true;
        for (i, item) in items.iter().enumerate() {
            let rule_path = list_path.index(i);
            let Some(rule_fields) = self.mapping(item, &rule_path, section.rule_keys) else {
                all_valid = false;
                continue;
            };
            let errors_before = self.diagnostics.len();
            let words =
                self.comma_separated_words(&rule_fields, section.word_key, &rule_path, &parse_word);
            let from_source = self.source_executables(&rule_fields, &rule_path, false);
            let rule_overrides = self.overrides(&rule_fields, &rule_path);
            if self.diagnostics.len() > errors_before {
                all_valid = false;
                continue;
            }
            let (Some(words), Some(from_source)) = (words, from_source) else {
                all_valid = false;
                continue;
            };
            for word in words {
                rules.push(PolicyRule {
                    matcher: word,
                    from_source: from_source.clone(),
                    overrides: rule_overrides.clone(),
                    position: item.position,
                    yaml_path: rule_path.0.clone(),
                });
            }
        }
        all_valid.then_some(PolicySection { overrides, rules })
    }

    fn comma_separated_words<W: PartialEq>(
        &mut self,
        fields: &Fields<'_>,
        key: &'static str,
        path: &YamlPath,
        parse_word: &impl Fn(&str) -> Result<W, PolicyError>,
    ) -> Option<Vec<W>> {
        let node = self.required(fields, key, path)?;
        let word_path = path.key(key);
        let text = self.string(node, &word_path)?;
        let mut words = Vec::new();
        for piece in text.split(',').map(str::trim) {
            match parse_word(piece) {
                Ok(word) => {
                    if !words.contains(&word) {
                        words.push(word);
                    }
                }
                Err(error) => {
                    self.report(node.position, &word_path, error);
                    return None;
                }
            }
        }
        Some(words)
    }

    pub(super) fn syscalls_section(
        &mut self,
        node: &Node,
        path: &YamlPath,
    ) -> Option<PolicySection<SetIdSyscall>> {
        const MATCHERS: &[&str] = &["matchSyscalls"];
        if node.value == NodeValue::Null {
            self.has_matchers(node, path, None, "syscalls", MATCHERS);
            return None;
        }
        let fields = self.mapping(node, path, SYSCALLS_SECTION_KEYS)?;
        if let Some(match_paths) = fields.get("matchPaths") {
            self.report(
                match_paths.position,
                &path.key("matchPaths"),
                PolicyError::Unsupported(UnsupportedConstruct::SyscallMatchPaths),
            );
            return None;
        }
        if !self.has_matchers(node, path, Some(&fields), "syscalls", MATCHERS) {
            return None;
        }
        let overrides = self.overrides(&fields, path);
        let list_path = path.key("matchSyscalls");
        let list = fields.get("matchSyscalls")?;
        let items = self.non_empty_sequence(list, &list_path, "matchSyscalls")?;
        let mut rules = Vec::new();
        let mut all_valid = true;
        for (i, item) in items.iter().enumerate() {
            let rule_path = list_path.index(i);
            let Some(rule_fields) = self.mapping(item, &rule_path, SYSCALL_RULE_KEYS) else {
                all_valid = false;
                continue;
            };
            let errors_before = self.diagnostics.len();
            let syscalls = self.setid_syscalls(&rule_fields, &rule_path);
            let from_source = self.source_executables(&rule_fields, &rule_path, true);
            let rule_overrides = self.overrides(&rule_fields, &rule_path);
            if self.diagnostics.len() > errors_before {
                all_valid = false;
                continue;
            }
            let (Some(syscalls), Some(from_source)) = (syscalls, from_source) else {
                all_valid = false;
                continue;
            };
            for syscall in syscalls {
                rules.push(PolicyRule {
                    matcher: syscall,
                    from_source: from_source.clone(),
                    overrides: rule_overrides.clone(),
                    position: item.position,
                    yaml_path: rule_path.0.clone(),
                });
            }
        }
        all_valid.then_some(PolicySection { overrides, rules })
    }

    fn setid_syscalls(
        &mut self,
        fields: &Fields<'_>,
        path: &YamlPath,
    ) -> Option<Vec<SetIdSyscall>> {
        let node = self.required(fields, "syscall", path)?;
        let list_path = path.key("syscall");
        let items = self.non_empty_sequence(node, &list_path, "syscall")?;
        let mut syscalls = Vec::new();
        let mut all_valid = true;
        for (i, item) in items.iter().enumerate() {
            let item_path = list_path.index(i);
            let Some(name) = self.string(item, &item_path) else {
                all_valid = false;
                continue;
            };
            match SetIdSyscall::from_name(&name) {
                Some(syscall) => {
                    if !syscalls.contains(&syscall) {
                        syscalls.push(syscall);
                    }
                }
                None => {
                    self.report(
                        item.position,
                        &item_path,
                        PolicyError::UnsupportedSyscall { found: name },
                    );
                    all_valid = false;
                }
            }
        }
        all_valid.then_some(syscalls)
    }
}

/// The shape of a `network` or `capabilities` section.
struct WordSection {
    name: &'static str,
    section_keys: &'static [&'static str],
    matcher_key: &'static str,
    /// `[matcher_key]`, for the empty-section message.
    matchers: &'static [&'static str],
    rule_keys: &'static [&'static str],
    word_key: &'static str,
}
