//! Compilation of validated policies into the flat, per-class rule tables the
//! agent turns into BPF maps ([`CompiledPolicySet`]).
//!
//! - Metadata is resolved "innermost wins": a rule's own severity, tags, message
//!   and action, else its section's, else the policy's, else the defaults
//!   (severity 1, no tags, no message, action `Block` — KubeArmor's).
//! - Each distinct resolved (policy name, severity, tags, message) gets one entry
//!   in [`CompiledPolicySet::policy_table`]; rules refer to it by [`PolicyId`], the
//!   id the kernel echoes in events and the wire format's `PolicyTable` carries.
//! - Policies are compiled in name order, so the result (and its hash) does not
//!   depend on how policies are spread over files.
//! - A class is in allow-list mode when any of its rules is `Allow`; everything
//!   its allow rules do not cover then gets the class's default posture.
//!
//! The compiled set knows nothing about conflicts between rules (a `Block` and an
//! `Allow` for the same path): precedence is decided where decisions are made, in
//! the kernel, and documented with it.

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::model::{FileMatcher, HostPolicy, MetadataOverrides, PathMatcher, PolicySection};
use crate::vocabulary::{
    Action, Capability, DefaultPosture, NetworkProtocol, SetIdSyscall, Severity,
};

/// The operator's default posture per class that has an allow-list mode
/// (KubeArmor's `default*Posture`), `audit` unless set. The agent's `[posture]`
/// table deserializes straight into it: keys `process`, `file`, `network`,
/// `capabilities`, nothing else.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
// Named in serde's messages as the agent's config has always printed it
// (`expected struct PostureConfig`).
#[serde(
    rename = "PostureConfig",
    expecting = "struct PostureConfig",
    deny_unknown_fields,
    default
)]
pub struct DefaultPostures {
    pub process: DefaultPosture,
    pub file: DefaultPosture,
    pub network: DefaultPosture,
    pub capabilities: DefaultPosture,
}

impl DefaultPostures {
    /// The same posture for every class.
    pub fn uniform(posture: DefaultPosture) -> Self {
        DefaultPostures {
            process: posture,
            file: posture,
            network: posture,
            capabilities: posture,
        }
    }
}

/// An index into [`CompiledPolicySet::policy_table`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyId(pub u32);

impl PolicyId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// What alerts of a rule carry: `PolicyName`, `Severity`, `Tags`, `Message`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PolicyMetadata {
    pub policy_name: String,
    pub severity: Severity,
    pub tags: Vec<String>,
    pub message: String,
}

impl PolicyMetadata {
    /// KubeArmor's `Tags` field: the tags joined with commas.
    pub fn joined_tags(&self) -> String {
        self.tags.join(",")
    }
}

/// One rule, ready for a map: what it matches, whom it applies to, what it does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledRule<M> {
    pub matcher: M,
    /// Absolute executable paths of the acting process (for exec: the parent's)
    /// the rule is limited to; empty = any process.
    pub from_source: Vec<String>,
    pub action: Action,
    pub policy_id: PolicyId,
}

/// The rules of one class (process, file, network, capabilities).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleClass<M> {
    pub rules: Vec<CompiledRule<M>>,
    /// Any rule is `Allow`: what no allow rule covers gets `default_posture`.
    pub allow_list: bool,
    pub default_posture: DefaultPosture,
}

impl<M> RuleClass<M> {
    fn from_rules(rules: Vec<CompiledRule<M>>, default_posture: DefaultPosture) -> Self {
        let allow_list = rules.iter().any(|r| r.action == Action::Allow);
        RuleClass {
            rules,
            allow_list,
            default_posture,
        }
    }
}

/// SHA-256 of the canonical form of a compiled set: equal sets, equal hashes,
/// on every run and every machine.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    /// The first 8 bytes as a number, e.g. for the wire format's `policy_set` id.
    pub fn short_id(&self) -> u64 {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        u64::from_be_bytes(first)
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({self})")
    }
}

/// Everything the agent needs to program the kernel for one policy set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledPolicySet {
    /// `process` → `bprm_check_security`.
    pub process: RuleClass<PathMatcher>,
    /// `file` → `file_open` / `file_permission`.
    pub file: RuleClass<FileMatcher>,
    /// `network` → `socket_create`.
    pub network: RuleClass<NetworkProtocol>,
    /// `capabilities` → `capable`.
    pub capabilities: RuleClass<Capability>,
    /// `syscalls` → `task_fix_setuid` / `task_fix_setgid`. Never in allow-list
    /// mode (`Allow` is refused there), so no posture.
    pub setid: Vec<CompiledRule<SetIdSyscall>>,
    /// Indexed by [`PolicyId`].
    pub policy_table: Vec<PolicyMetadata>,
    /// Names of the compiled policies, sorted.
    pub policy_names: Vec<String>,
    pub content_hash: ContentHash,
}

impl CompiledPolicySet {
    pub fn metadata(&self, id: PolicyId) -> Option<&PolicyMetadata> {
        self.policy_table.get(id.index())
    }

    /// Rules across all classes.
    pub fn rule_count(&self) -> usize {
        self.process.rules.len()
            + self.file.rules.len()
            + self.network.rules.len()
            + self.capabilities.rules.len()
            + self.setid.len()
    }
}

/// Compiles policies (already selected for this host) with the operator's postures.
pub fn compile(policies: &[HostPolicy], postures: DefaultPostures) -> CompiledPolicySet {
    let mut ordered: Vec<&HostPolicy> = policies.iter().collect();
    ordered.sort_by(|a, b| a.name.cmp(&b.name));

    let mut table = MetadataTable::default();
    let mut process = Vec::new();
    let mut file = Vec::new();
    let mut network = Vec::new();
    let mut capabilities = Vec::new();
    let mut setid = Vec::new();
    for policy in &ordered {
        let mut resolver = Resolver {
            policy,
            table: &mut table,
        };
        resolver.section(&policy.process, &mut process);
        resolver.section(&policy.file, &mut file);
        resolver.section(&policy.network, &mut network);
        resolver.section(&policy.capabilities, &mut capabilities);
        resolver.section(&policy.syscalls, &mut setid);
    }

    let mut set = CompiledPolicySet {
        process: RuleClass::from_rules(process, postures.process),
        file: RuleClass::from_rules(file, postures.file),
        network: RuleClass::from_rules(network, postures.network),
        capabilities: RuleClass::from_rules(capabilities, postures.capabilities),
        setid,
        policy_table: table.entries,
        policy_names: ordered.iter().map(|p| p.name.clone()).collect(),
        content_hash: ContentHash([0; 32]),
    };
    set.content_hash = canonical_hash(&set);
    set
}

/// Interns resolved metadata: equal metadata, one id, in first-use order.
#[derive(Default)]
struct MetadataTable {
    entries: Vec<PolicyMetadata>,
    ids: HashMap<PolicyMetadata, PolicyId>,
}

impl MetadataTable {
    fn intern(&mut self, metadata: PolicyMetadata) -> PolicyId {
        if let Some(&id) = self.ids.get(&metadata) {
            return id;
        }
        // More than 2^32 distinct metadata would need more rules than memory holds.
        let id = PolicyId(u32::try_from(self.entries.len()).unwrap_or(u32::MAX));
        self.entries.push(metadata.clone());
        self.ids.insert(metadata, id);
        id
    }
}

struct Resolver<'a> {
    policy: &'a HostPolicy,
    table: &'a mut MetadataTable,
}

impl Resolver<'_> {
    fn section<M: Clone>(
        &mut self,
        section: &Option<PolicySection<M>>,
        out: &mut Vec<CompiledRule<M>>,
    ) {
        let Some(section) = section else {
            return;
        };
        for rule in &section.rules {
            let levels = [&rule.overrides, &section.overrides, &self.policy.overrides];
            let action = innermost(&levels, |o| o.action).unwrap_or(Action::DEFAULT);
            let metadata = PolicyMetadata {
                policy_name: self.policy.name.clone(),
                severity: innermost(&levels, |o| o.severity).unwrap_or(Severity::DEFAULT),
                tags: innermost(&levels, |o| o.tags.clone()).unwrap_or_default(),
                message: innermost(&levels, |o| o.message.clone()).unwrap_or_default(),
            };
            out.push(CompiledRule {
                matcher: rule.matcher.clone(),
                from_source: rule.from_source.clone(),
                action,
                policy_id: self.table.intern(metadata),
            });
        }
    }
}

/// The first level (rule, section, policy) that sets the field.
fn innermost<T>(
    levels: &[&MetadataOverrides; 3],
    field: impl Fn(&MetadataOverrides) -> Option<T>,
) -> Option<T> {
    levels.iter().find_map(|level| field(level))
}

// ------------------------------------------------------------------ canonical hash

/// Feeds a hasher an unambiguous encoding: every string length-prefixed, every
/// variable-length list count-prefixed, every enum a fixed tag byte.
struct CanonicalEncoder(Sha256);

impl CanonicalEncoder {
    fn byte(&mut self, b: u8) {
        self.0.update([b]);
    }

    fn number(&mut self, n: usize) {
        self.0.update((n as u64).to_le_bytes());
    }

    fn text(&mut self, s: &str) {
        self.number(s.len());
        self.0.update(s.as_bytes());
    }

    fn texts(&mut self, list: &[String]) {
        self.number(list.len());
        list.iter().for_each(|s| self.text(s));
    }

    fn action(&mut self, action: Action) {
        self.byte(match action {
            Action::Allow => 0,
            Action::Audit => 1,
            Action::Block => 2,
        });
    }

    fn posture(&mut self, posture: DefaultPosture) {
        self.byte(match posture {
            DefaultPosture::Audit => 0,
            DefaultPosture::Block => 1,
        });
    }

    fn path_matcher(&mut self, matcher: &PathMatcher) {
        match matcher {
            PathMatcher::Exact(path) => {
                self.byte(0);
                self.text(path);
            }
            PathMatcher::Directory { dir, recursive } => {
                self.byte(1);
                self.text(dir);
                self.byte(u8::from(*recursive));
            }
            PathMatcher::Pattern(glob) => {
                self.byte(2);
                self.text(glob.as_str());
            }
        }
    }

    fn rules<M>(&mut self, rules: &[CompiledRule<M>], mut matcher: impl FnMut(&mut Self, &M)) {
        self.number(rules.len());
        for rule in rules {
            matcher(self, &rule.matcher);
            self.texts(&rule.from_source);
            self.action(rule.action);
            self.number(rule.policy_id.index());
        }
    }

    fn class<M>(&mut self, class: &RuleClass<M>, matcher: impl FnMut(&mut Self, &M)) {
        self.posture(class.default_posture);
        self.byte(u8::from(class.allow_list));
        self.rules(&class.rules, matcher);
    }
}

fn canonical_hash(set: &CompiledPolicySet) -> ContentHash {
    let mut encoder = CanonicalEncoder(Sha256::new());
    // Bump the version whenever the encoding changes, so old and new never collide.
    encoder.text("edgearmor compiled policy set v1");
    encoder.number(set.policy_table.len());
    for metadata in &set.policy_table {
        encoder.text(&metadata.policy_name);
        encoder.byte(metadata.severity.get());
        encoder.texts(&metadata.tags);
        encoder.text(&metadata.message);
    }
    encoder.texts(&set.policy_names);
    encoder.class(&set.process, |e, m| e.path_matcher(m));
    encoder.class(&set.file, |e, m| {
        e.path_matcher(&m.target);
        e.byte(u8::from(m.read_only));
    });
    encoder.class(&set.network, |e, m| e.text(m.as_str()));
    encoder.class(&set.capabilities, |e, m| e.byte(m.number()));
    encoder.rules(&set.setid, |e, m| e.text(m.name()));
    ContentHash(encoder.0.finalize().into())
}
