//! Translation of a policy set into the kernel's rule tables: `RULES` entries,
//! the `PREFIXES` index and `GLOBS` lists (layout in `edgearmor-probe-abi`).
//!
//! Paths in rules are turned into what the kernel sees: symlinks in the part of the
//! path that exists are resolved through the host seam (`/bin/ls` on a merged-/usr
//! system is `/usr/bin/ls` to the kernel), then hashed with the probes' keyed hash.
//! `fromSource` executables become source hashes the same way.
//!
//! Precedence is the kernel's (see the probes): per slot, Block > Audit > Allow among
//! rules at the same level, and a rule naming the source beats rules for anyone.
//! `Allow` puts a class into allow-list mode: for every process when the allow rule
//! has no `fromSource`, else only for the named sources (KubeArmor's semantics); in
//! allow-list mode what no rule covers gets the class's default posture.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use edgearmor_policy::{
    Action, CompiledPolicySet, CompiledRule, DefaultPosture, FileMatcher, KernelGlobToken,
    NetworkProtocol, PathMatcher, PolicyId, RuleClass,
};
use edgearmor_probe_abi::{
    ACTION_ALLOW, ACTION_AUDIT, ACTION_BLOCK, ANY_SOURCE, CLASS_CAPABILITY, CLASS_FILE,
    CLASS_NETWORK, CLASS_PROCESS, CLASS_SETID, GLOB_ANY_BYTE, GLOB_CAP, GLOB_LITERAL, GLOB_STAR,
    GLOBS_PER_KEY, GlobRule, ITEM_ICMP, ITEM_INET_UNCLASSIFIED, ITEM_RAW, ITEM_SCTP, ITEM_TCP,
    ITEM_UDP, MATCH_ALLOW_LIST, MATCH_APPLET, MATCH_DIRECTORY, MATCH_EXACT, MATCH_ITEM,
    MATCH_MULTI_CALL, MATCH_RECURSIVE, MATCH_UNDECIDABLE, MAX_HASHED_PATH_BYTES,
    POLICY_DEFAULT_POSTURE, PREFIX_DIRECTORY, PREFIX_PATTERN, PREFIX_RECURSIVE, RuleValue,
    SLOT_READ, SLOT_WRITE, Verdict, class_bit, item_capability, item_setid, path_hash,
};
use edgearmor_wire::{PolicyMeta, SetIdSyscall};

use crate::control::policy_table::PolicyCatalog;
use crate::control::setid_rules::SetidRuleSet;
use crate::events::enrich::bounded;
use crate::kernel::multi_call::{self, ExecPath};

/// `RuleKey` without the generation: (source, target, class, kind).
pub type RuleSlot = (u64, u64, u32, u32);

/// A rule the kernel cannot hold, and why; the rest of the set still applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedRule {
    pub policy: String,
    pub rule: String,
    pub reason: String,
}

impl fmt::Display for SkippedRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "policy {}: {}: {}", self.policy, self.rule, self.reason)
    }
}

/// The kernel tables of one policy set, independent of the generation they are
/// written under.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelRuleSet {
    pub rules: BTreeMap<RuleSlot, RuleValue>,
    /// (prefix hash, class) -> `PREFIX_*` bits.
    pub prefixes: BTreeMap<(u64, u32), u32>,
    /// (source, prefix hash, class) -> patterns under that literal directory.
    pub globs: BTreeMap<(u64, u64, u32), Vec<GlobRule>>,
    /// Classes with any entry (`ActivePolicy::class_mask`).
    pub class_mask: u32,
    pub skipped: Vec<SkippedRule>,
    /// Rules that apply, but maybe not as their author meant (multi-call binaries).
    pub warnings: Vec<SkippedRule>,
    /// Kernel limits the set exceeds (see `limits`): the whole set is refused.
    pub refused: Vec<SkippedRule>,
    /// (class, resolved directory) of every pattern rule -> (policy, pattern) of the
    /// first rule there, for the pattern-prefix limit.
    pub pattern_dirs: BTreeMap<(u32, String), (String, String)>,
    pub aliases: AliasTable,
    /// The process rules' executables by inode (`EXEC_ALIASES`).
    pub exec_aliases: AliasTable,
}

/// How rule paths become kernel paths (the host seam's `real_path`, or identity).
pub trait PathResolver {
    /// The path with symlinks resolved; `None` when it does not exist.
    fn real_path(&self, path: &str) -> Option<String>;
    /// The path as the kernel reports it, symlinks resolved where it exists.
    fn kernel_path(&self, path: &str) -> String {
        self.real_path(path).unwrap_or_else(|| path.to_owned())
    }
    /// The host's multi-call binaries (resolved), see [`multi_call::installed`].
    fn multi_call_binaries(&self) -> BTreeSet<String> {
        BTreeSet::new()
    }
    /// The host whose inodes the rules protect (`None` offline: no alias entries).
    fn host(&self) -> Option<&dyn crate::host::HostKernel> {
        None
    }
}

/// A function from rule path to kernel path (every path exists; no multi-call
/// binaries besides rule targets).
impl<F: Fn(&str) -> String> PathResolver for F {
    fn real_path(&self, path: &str) -> Option<String> {
        Some(self(path))
    }
}

struct Builder<'a> {
    set: KernelRuleSet,
    /// Multi-call binaries that rule paths link to.
    multi_call: BTreeSet<String>,
    key: [u64; 2],
    resolver: &'a dyn PathResolver,
    policies: &'a CompiledPolicySet,
}

impl KernelRuleSet {
    /// Builds the tables for the setid rules (TOML and flags) and the compiled
    /// policies; metadata is interned into `catalog`, whose ids the kernel echoes.
    pub fn build(
        setid: &SetidRuleSet,
        policies: &CompiledPolicySet,
        catalog: &mut PolicyCatalog,
        key: [u64; 2],
        resolver: &dyn PathResolver,
    ) -> KernelRuleSet {
        let mut b = Builder {
            set: KernelRuleSet::default(),
            multi_call: BTreeSet::new(),
            key,
            resolver,
            policies,
        };
        b.setid_rules(setid, catalog);
        let meta = |catalog: &mut PolicyCatalog, id: PolicyId| {
            policies.metadata(id).map(|m| {
                catalog.intern(PolicyMeta {
                    name: bounded(&m.policy_name),
                    severity: m.severity.get(),
                    tags: bounded(&m.joined_tags()),
                    message: bounded(&m.message),
                })
            })
        };
        b.path_classes(catalog, &meta);
        b.item_classes(catalog, &meta);
        b.policy_setid(catalog, &meta);
        b.mark_multi_call();
        b.undecidable_entries();
        b.aliases();
        b.exec_aliases();
        b.set.refused.extend(limits::exceeded(&b.set));
        b.set
    }

    /// Kernel map entries this set needs: (rules, prefixes, globs).
    pub fn sizes(&self) -> (usize, usize, usize) {
        (self.rules.len(), self.prefixes.len(), self.globs.len())
    }
}

/// A verdict for processes, sockets, capabilities and setid calls (one slot).
fn read_only_value(v: Verdict) -> RuleValue {
    let mut value = RuleValue::NONE;
    value.slots[SLOT_READ] = v;
    value
}

/// File verdicts per slot: `readOnly` Block/Audit concern writes only; a `readOnly`
/// Allow allows reads only.
fn file_value(m: &FileMatcher, v: Verdict) -> RuleValue {
    let mut value = RuleValue::NONE;
    match (m.read_only, v.action) {
        (false, _) => value.slots = [v; 2],
        (true, ACTION_ALLOW) => value.slots[SLOT_READ] = v,
        (true, _) => value.slots[SLOT_WRITE] = v,
    }
    value
}

/// The socket classes a network rule holds (see `socket_items`). Every protocol name
/// covers Internet sockets, so a Block or Audit rule also holds the sockets no name
/// covers: an unknown protocol is denied where a rule covers its family. An Allow
/// never does (what no rule allows gets the default posture).
fn network_items(protocol: NetworkProtocol, action: u32) -> impl Iterator<Item = u64> {
    let named = match protocol {
        NetworkProtocol::Tcp => ITEM_TCP,
        NetworkProtocol::Udp => ITEM_UDP,
        NetworkProtocol::Icmp => ITEM_ICMP,
        NetworkProtocol::Raw => ITEM_RAW,
        NetworkProtocol::Sctp => ITEM_SCTP,
    };
    let unclassified = (action != ACTION_ALLOW).then_some(ITEM_INET_UNCLASSIFIED);
    std::iter::once(named).chain(unclassified)
}

fn posture_action(p: DefaultPosture) -> u32 {
    match p {
        DefaultPosture::Audit => ACTION_AUDIT,
        DefaultPosture::Block => ACTION_BLOCK,
    }
}

/// Interns a compiled policy's metadata; `None` for an id the set does not know.
type MetaFn<'m> = dyn Fn(&mut PolicyCatalog, PolicyId) -> Option<u32> + 'm;

impl Builder<'_> {
    /// The setid rules of TOML files and `--deny-*` flags.
    fn setid_rules(&mut self, setid: &SetidRuleSet, catalog: &mut PolicyCatalog) {
        for rule in &setid.rules {
            let id = catalog.intern(rule.policy_meta());
            let Some(source) = self.source_hash(rule.executable.as_deref(), &rule.policy) else {
                continue;
            };
            for bit in SetIdSyscall::ALL
                .into_iter()
                .filter_map(SetIdSyscall::kernel_bit)
            {
                let mask = 1 << bit;
                let action = if rule.deny_mask & mask != 0 {
                    ACTION_BLOCK
                } else if rule.audit_mask & mask != 0 {
                    ACTION_AUDIT
                } else {
                    continue;
                };
                self.add(
                    (source, item_setid(bit), CLASS_SETID, MATCH_ITEM),
                    read_only_value(Verdict {
                        action,
                        policy_id: id,
                    }),
                );
            }
        }
    }

    /// `process` and `file` sections: path rules.
    fn path_classes(&mut self, catalog: &mut PolicyCatalog, meta: &MetaFn<'_>) {
        let policies = self.policies;
        self.class(
            &policies.process,
            CLASS_PROCESS,
            catalog,
            meta,
            |b, rule, v, src| {
                b.path_rule(CLASS_PROCESS, &rule.matcher, read_only_value(v), src, rule)
            },
        );
        self.class(
            &policies.file,
            CLASS_FILE,
            catalog,
            meta,
            |b, rule, v, src| {
                b.path_rule(
                    CLASS_FILE,
                    &rule.matcher.target,
                    file_value(&rule.matcher, v),
                    src,
                    rule,
                )
            },
        );
    }

    /// `network` and `capabilities` sections: one item per protocol or capability.
    fn item_classes(&mut self, catalog: &mut PolicyCatalog, meta: &MetaFn<'_>) {
        let policies = self.policies;
        self.class(
            &policies.network,
            CLASS_NETWORK,
            catalog,
            meta,
            |b, rule, v, src| {
                for item in network_items(rule.matcher, v.action) {
                    b.add((src, item, CLASS_NETWORK, MATCH_ITEM), read_only_value(v));
                }
            },
        );
        self.class(
            &policies.capabilities,
            CLASS_CAPABILITY,
            catalog,
            meta,
            |b, rule, v, src| {
                let item = item_capability(u32::from(rule.matcher.number()));
                b.add(
                    (src, item, CLASS_CAPABILITY, MATCH_ITEM),
                    read_only_value(v),
                );
            },
        );
    }

    /// The `syscalls` section's setid family.
    fn policy_setid(&mut self, catalog: &mut PolicyCatalog, meta: &MetaFn<'_>) {
        let policies = self.policies;
        for rule in &policies.setid {
            let Some(id) = meta(catalog, rule.policy_id) else {
                continue;
            };
            let Some(bit) = rule.matcher.kernel_bit() else {
                continue;
            };
            // Allow is refused for syscalls by the policy checker.
            let action = match rule.action {
                Action::Block => ACTION_BLOCK,
                Action::Audit | Action::Allow => ACTION_AUDIT,
            };
            for src in self.sources(&rule.from_source, rule.policy_id) {
                self.add(
                    (src, item_setid(bit), CLASS_SETID, MATCH_ITEM),
                    read_only_value(Verdict {
                        action,
                        policy_id: id,
                    }),
                );
            }
        }
    }
}

impl Builder<'_> {
    /// `MATCH_UNDECIDABLE` per path class with rules: the strongest verdict any of
    /// its rules or postures could give (Block when one blocks), which a hook that
    /// cannot resolve or match a path applies (fail closed) and reports.
    fn undecidable_entries(&mut self) {
        for class in [CLASS_PROCESS, CLASS_FILE] {
            if self.set.class_mask & class_bit(class) == 0 {
                continue;
            }
            let mut strongest = Verdict::NONE;
            let values = self
                .set
                .rules
                .iter()
                .filter(|((_, _, c, _), _)| *c == class)
                .map(|(_, v)| *v)
                .chain(
                    self.set
                        .globs
                        .iter()
                        .filter(|((_, _, c), _)| *c == class)
                        .flat_map(|(_, rules)| rules.iter().map(|r| r.value)),
                );
            for value in values {
                value.slots.iter().for_each(|v| strongest.merge(v));
            }
            if strongest.action == ACTION_ALLOW {
                strongest.action = ACTION_AUDIT;
            }
            self.set.rules.insert(
                (ANY_SOURCE, 0, class, MATCH_UNDECIDABLE),
                RuleValue {
                    slots: [strongest; 2],
                },
            );
        }
    }

    fn add(&mut self, slot: RuleSlot, value: RuleValue) {
        self.set
            .rules
            .entry(slot)
            .and_modify(|v| v.merge(&value))
            .or_insert(value);
        self.set.class_mask |= class_bit(slot.2);
    }

    /// The kernel's hash of an absolute path after resolution; `None` (and a skip
    /// note) when it is too long to ever match.
    fn kernel_hash(&mut self, path: &str, policy: &str, what: &str) -> Option<u64> {
        let real = self.resolver.kernel_path(path);
        if real.len() > MAX_HASHED_PATH_BYTES {
            self.set.skipped.push(SkippedRule {
                policy: policy.to_owned(),
                rule: what.to_owned(),
                reason: format!(
                    "{real} is longer than {MAX_HASHED_PATH_BYTES} bytes, which the kernel never matches"
                ),
            });
            return None;
        }
        if real != path {
            log::info!("policy {policy}: {path} is {real} to the kernel");
        }
        Some(path_hash(&self.key, real.as_bytes()))
    }

    /// A directory (ending with `/`) resolved, still ending with `/`.
    fn real_dir(&self, dir: &str) -> String {
        let trimmed = dir.trim_end_matches('/');
        if trimmed.is_empty() {
            String::from("/")
        } else {
            let r = self.resolver.kernel_path(trimmed);
            if r.ends_with('/') { r } else { format!("{r}/") }
        }
    }

    fn kernel_dir_hash(&mut self, dir: &str, policy: &str) -> Option<u64> {
        let real = self.real_dir(dir);
        if real.len() > MAX_HASHED_PATH_BYTES {
            self.set.skipped.push(SkippedRule {
                policy: policy.to_owned(),
                rule: dir.to_owned(),
                reason: format!("{real} is longer than {MAX_HASHED_PATH_BYTES} bytes"),
            });
            return None;
        }
        Some(path_hash(&self.key, real.as_bytes()))
    }

    fn source_hash(&mut self, executable: Option<&str>, policy: &str) -> Option<u64> {
        let Some(exe) = executable else {
            return Some(ANY_SOURCE);
        };
        let real = self.resolver.real_path(exe);
        if let ExecPath::Applet { binary: b, .. } | ExecPath::MultiCall(b) =
            multi_call::classify(exe, real)
        {
            self.warn(
                policy,
                &format!("fromSource {exe}"),
                format!("{exe} runs the multi-call binary {b}: the rule applies to every process running {b}, whichever applet"),
            );
        }
        self.kernel_hash(exe, policy, &format!("fromSource {exe}"))
    }

    fn warn(&mut self, policy: &str, rule: &str, reason: String) {
        self.set.warnings.push(SkippedRule {
            policy: policy.to_owned(),
            rule: rule.to_owned(),
            reason,
        });
    }

    fn policy_name(&self, id: PolicyId) -> String {
        self.policies
            .metadata(id)
            .map(|m| m.policy_name.clone())
            .unwrap_or_default()
    }

    fn sources(&mut self, from_source: &[String], id: PolicyId) -> Vec<u64> {
        let policy = self.policy_name(id);
        if from_source.is_empty() {
            return vec![ANY_SOURCE];
        }
        from_source
            .iter()
            .filter_map(|s| self.source_hash(Some(s), &policy))
            .collect()
    }

    /// Adds every rule of a class, and its allow-list entries.
    fn class<M>(
        &mut self,
        class: &RuleClass<M>,
        class_id: u32,
        catalog: &mut PolicyCatalog,
        meta: &MetaFn<'_>,
        mut add: impl FnMut(&mut Self, &CompiledRule<M>, Verdict, u64),
    ) {
        for rule in &class.rules {
            let Some(policy_id) = meta(catalog, rule.policy_id) else {
                continue;
            };
            let action = match rule.action {
                Action::Allow => ACTION_ALLOW,
                Action::Audit => ACTION_AUDIT,
                Action::Block => ACTION_BLOCK,
            };
            let verdict = Verdict { action, policy_id };
            for src in self.sources(&rule.from_source, rule.policy_id) {
                add(self, rule, verdict, src);
                if rule.action == Action::Allow {
                    let posture = Verdict {
                        action: posture_action(class.default_posture),
                        policy_id: POLICY_DEFAULT_POSTURE,
                    };
                    self.add(
                        (src, 0, class_id, MATCH_ALLOW_LIST),
                        RuleValue {
                            slots: [posture; 2],
                        },
                    );
                }
            }
        }
    }

    fn path_rule<M>(
        &mut self,
        class: u32,
        matcher: &PathMatcher,
        value: RuleValue,
        source: u64,
        rule: &CompiledRule<M>,
    ) {
        let policy = self.policy_name(rule.policy_id);
        match matcher {
            PathMatcher::Exact(path) if class == CLASS_PROCESS => {
                self.process_path(path, value, source, &policy);
            }
            PathMatcher::Exact(path) => {
                if let Some(h) = self.kernel_hash(path, &policy, path) {
                    self.add((source, h, class, MATCH_EXACT), value);
                }
            }
            PathMatcher::Directory { dir, recursive } => {
                if let Some(h) = self.kernel_dir_hash(dir, &policy) {
                    let (kind, bit) = if *recursive {
                        (MATCH_RECURSIVE, PREFIX_RECURSIVE)
                    } else {
                        (MATCH_DIRECTORY, PREFIX_DIRECTORY)
                    };
                    self.add((source, h, class, kind), value);
                    *self.set.prefixes.entry((h, class)).or_insert(0) |= bit;
                }
            }
            PathMatcher::Pattern(glob) => self.pattern_rule(class, glob, value, source, policy),
        }
    }

    /// A `matchPatterns` rule: filed under its literal directory, for one source.
    fn pattern_rule(
        &mut self,
        class: u32,
        glob: &edgearmor_policy::Glob,
        value: RuleValue,
        source: u64,
        policy: String,
    ) {
        let form = match glob.kernel_form() {
            Ok(form) => form,
            Err(reason) => {
                self.set.skipped.push(SkippedRule {
                    policy,
                    rule: glob.as_str().to_owned(),
                    reason: reason.to_owned(),
                });
                return;
            }
        };
        let Some(h) = self.kernel_dir_hash(&form.directory, &policy) else {
            return;
        };
        let mut g = GlobRule::EMPTY;
        for (i, token) in form.tokens.iter().take(GLOB_CAP).enumerate() {
            let (kind, byte) = match token {
                KernelGlobToken::Byte(b) => (GLOB_LITERAL, *b),
                KernelGlobToken::AnyByte => (GLOB_ANY_BYTE, 0),
                KernelGlobToken::Star => (GLOB_STAR, 0),
            };
            g.kinds[i] = kind;
            g.bytes[i] = byte;
        }
        g.len = form.tokens.len().min(GLOB_CAP) as u32;
        g.value = value;
        let list = self.set.globs.entry((source, h, class)).or_default();
        if let Some(same) = list
            .iter_mut()
            .find(|r| r.bytes == g.bytes && r.kinds == g.kinds && r.len == g.len)
        {
            same.value.merge(&value);
        } else if list.len() < GLOBS_PER_KEY {
            list.push(g);
        } else {
            self.set.refused.push(SkippedRule {
                policy: policy.clone(),
                rule: glob.as_str().to_owned(),
                reason: format!(
                    "more than GLOBS_PER_KEY = {GLOBS_PER_KEY} patterns under {} for one source",
                    form.directory
                ),
            });
            return;
        }
        let dir = self.real_dir(&form.directory);
        self.set
            .pattern_dirs
            .entry((class, dir))
            .or_insert_with(|| (policy, glob.as_str().to_owned()));
        *self.set.prefixes.entry((h, class)).or_insert(0) |= PREFIX_PATTERN;
        self.set.class_mask |= class_bit(class);
    }
}

pub use aliases::AliasTable;

mod aliases;
mod applets;
mod entries;
mod limits;
#[cfg(test)]
mod shipped_policies;
#[cfg(test)]
mod tests;
