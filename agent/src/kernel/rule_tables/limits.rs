//! The kernel limits a rule set must stay within to be enforced whole, checked on the
//! resolved tables: more than this and the agent refuses the set (naming the limit,
//! the rule and its policy) instead of enforcing part of it. The same limits on the
//! literal paths are checked offline by `edgearmor_policy::kernel_limits`
//! (`policy check`); symlink resolution can only merge directories here.

use edgearmor_probe_abi::{
    ALIAS_PATH_CAP, GLOBS_PER_SET, MAX_PATTERN_PREFIXES, PREFIXES_PER_SET, RULES_PER_SET,
};

use super::{KernelRuleSet, SkippedRule};

/// Directory entries the agent looks at per policy set when it searches protected
/// directories for other-linked files (`aliases`): a start or reload takes at most
/// about this many `readdir` entries and `lstat`s. What is left is reported.
pub const ALIAS_SCAN_ENTRIES: usize = 100_000;

/// Why `name` cannot be a canonical name in `FILE_ALIASES`, if it cannot.
pub(super) fn alias_name_too_long(name: &str) -> Option<String> {
    (name.len() > ALIAS_PATH_CAP - 1).then(|| {
        format!(
            "{name} is {} bytes, longer than ALIAS_PATH_CAP - 1 = {} bytes, the longest name the kernel's alias table holds",
            name.len(),
            ALIAS_PATH_CAP - 1
        )
    })
}

/// Every limit `set` exceeds.
pub(super) fn exceeded(set: &KernelRuleSet) -> Vec<SkippedRule> {
    let mut out = pattern_prefix_chains(set);
    let (rules, prefixes, globs) = set.sizes();
    for (what, used, limit) in [
        ("RULES_PER_SET", rules, RULES_PER_SET),
        ("PREFIXES_PER_SET", prefixes, PREFIXES_PER_SET),
        ("GLOBS_PER_SET", globs, GLOBS_PER_SET),
    ] {
        if used > limit {
            out.push(SkippedRule {
                policy: "(the whole set)".to_owned(),
                rule: format!("{used} kernel entries"),
                reason: format!("more than {what} = {limit} entries"),
            });
        }
    }
    out
}

/// A path passes every pattern directory that is a prefix of it: per class, no
/// directory may have more than `MAX_PATTERN_PREFIXES` pattern directories at or
/// above it, or the probes would not try the patterns of the deepest ones.
fn pattern_prefix_chains(set: &KernelRuleSet) -> Vec<SkippedRule> {
    let mut out = Vec::new();
    for ((class, dir), (policy, rule)) in &set.pattern_dirs {
        let above: Vec<&str> = set
            .pattern_dirs
            .keys()
            .filter(|(c, d)| c == class && dir.starts_with(d.as_str()))
            .map(|(_, d)| d.as_str())
            .collect();
        if above.len() > MAX_PATTERN_PREFIXES {
            out.push(SkippedRule {
                policy: policy.clone(),
                rule: rule.clone(),
                reason: format!(
                    "a path under {dir} passes {} directories with patterns ({}), more than MAX_PATTERN_PREFIXES = {MAX_PATTERN_PREFIXES}",
                    above.len(),
                    above.join(" ")
                ),
            });
        }
    }
    out
}
