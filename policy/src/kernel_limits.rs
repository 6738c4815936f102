//! The probes' limits, checked on a whole policy set (they are limits of the kernel
//! tables, which every policy of a host shares): a set that exceeds one is refused,
//! by `policy check` here and by the agent on the resolved tables, naming the limit,
//! its value, the rule, its policy and file. Nothing the kernel would not enforce
//! whole is accepted. Limits per rule (path length, pattern length) are checked
//! with the rule itself (`path_rules`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use edgearmor_probe_abi::{
    GLOBS_PER_KEY, GLOBS_PER_SET, MAX_PATTERN_PREFIXES, PREFIXES_PER_SET, RULES_PER_SET,
};

use crate::compile::{CompiledPolicySet, CompiledRule, PolicyId, RuleClass};
use crate::diagnostic::{Diagnostic, PolicyError};
use crate::model::{FileMatcher, HostPolicy, PathMatcher};

/// Where a rule comes from, for the diagnostic.
struct Origin {
    policy: String,
    file: PathBuf,
}

/// Every kernel limit `set` (compiled from `policies`) exceeds, as diagnostics on
/// the file of the rule that exceeds it.
pub fn kernel_limit_problems(policies: &[HostPolicy], set: &CompiledPolicySet) -> Vec<Diagnostic> {
    let files: HashMap<&str, &PathBuf> = policies
        .iter()
        .map(|p| (p.name.as_str(), &p.source_file))
        .collect();
    let origin = |id: PolicyId| {
        let policy = set
            .metadata(id)
            .map(|m| m.policy_name.clone())
            .unwrap_or_default();
        let file = files
            .get(policy.as_str())
            .map(|f| (*f).clone())
            .unwrap_or_default();
        Origin { policy, file }
    };
    let mut tables = Tables::default();
    let mut out = Vec::new();
    let process = path_rules(&set.process, |m| m);
    let file = path_rules(&set.file, |m: &FileMatcher| &m.target);
    for (class, rules) in [("process", process), ("file", file)] {
        for (sources, id, matcher) in rules {
            tables.path_rule(class, sources, id, matcher, &origin, &mut out);
        }
    }
    tables.allow_lists(set);
    tables.items(set);
    tables.pattern_chains(&origin, &mut out);
    tables.capacities(&origin, &mut out);
    out
}

/// (sources, policy, path matcher) of each rule of a path class.
fn path_rules<'a, M>(
    class: &'a RuleClass<M>,
    target: impl Fn(&'a M) -> &'a PathMatcher,
) -> Vec<(Vec<String>, PolicyId, &'a PathMatcher)> {
    class
        .rules
        .iter()
        .map(|r| (Tables::sources(r), r.policy_id, target(&r.matcher)))
        .collect()
}

fn limit(
    origin: &Origin,
    limit: &'static str,
    value: usize,
    rule: &str,
    what: String,
) -> Diagnostic {
    Diagnostic::whole_file(
        origin.file.clone(),
        PolicyError::KernelLimit {
            limit,
            value,
            policy: origin.policy.clone(),
            rule: rule.to_owned(),
            what,
        },
    )
}

/// The entries the set needs, counted as the agent lays them out (literal paths).
#[derive(Default)]
struct Tables {
    /// (source, target, class, kind)
    rules: BTreeSet<(String, String, &'static str, u8)>,
    /// (prefix, class)
    prefixes: BTreeSet<(String, &'static str)>,
    /// (source, directory, class) -> distinct patterns
    globs: BTreeMap<(String, String, &'static str), BTreeSet<String>>,
    /// (class, pattern directory) -> the first rule there
    pattern_dirs: BTreeMap<(&'static str, String), (PolicyId, String)>,
    /// The rule that made each table grow, in order, for naming the one past a limit.
    growth: Vec<(&'static str, PolicyId, String)>,
}

impl Tables {
    fn sources<M>(rule: &CompiledRule<M>) -> Vec<String> {
        if rule.from_source.is_empty() {
            vec![String::new()]
        } else {
            rule.from_source.clone()
        }
    }

    fn path_rule(
        &mut self,
        class: &'static str,
        sources: Vec<String>,
        id: PolicyId,
        matcher: &PathMatcher,
        origin: &dyn Fn(PolicyId) -> Origin,
        out: &mut Vec<Diagnostic>,
    ) {
        let text = matcher.as_str().to_owned();
        for source in sources {
            let (target, kind, dir) = match matcher {
                PathMatcher::Exact(p) => (p.clone(), 0, None),
                PathMatcher::Directory { dir, recursive } => {
                    (dir.clone(), 1 + u8::from(*recursive), Some(dir.clone()))
                }
                PathMatcher::Pattern(glob) => {
                    let Ok(form) = glob.kernel_form() else {
                        continue; // refused with the rule itself
                    };
                    let key = (source.clone(), form.directory.clone(), class);
                    if !self.globs.contains_key(&key) {
                        self.growth.push(("GLOBS_PER_SET", id, text.clone()));
                    }
                    let patterns = self.globs.entry(key).or_default();
                    if patterns.insert(text.clone()) && patterns.len() == GLOBS_PER_KEY + 1 {
                        out.push(limit(
                            &origin(id),
                            "GLOBS_PER_KEY",
                            GLOBS_PER_KEY,
                            &text,
                            format!("patterns under {} for one source", form.directory),
                        ));
                    }
                    self.pattern_dirs
                        .entry((class, form.directory.clone()))
                        .or_insert((id, text.clone()));
                    self.add_prefix(form.directory, class, id, &text);
                    continue;
                }
            };
            if let Some(dir) = dir {
                self.add_prefix(dir, class, id, &text);
            }
            if self.rules.insert((source, target, class, kind)) {
                self.growth.push(("RULES_PER_SET", id, text.clone()));
            }
        }
    }

    fn add_prefix(&mut self, dir: String, class: &'static str, id: PolicyId, rule: &str) {
        if self.prefixes.insert((dir, class)) {
            self.growth.push(("PREFIXES_PER_SET", id, rule.to_owned()));
        }
    }

    /// Allow-list entries: one per (source, class) with an Allow rule, plus the
    /// undecidable verdict of each path class.
    fn allow_lists(&mut self, set: &CompiledPolicySet) {
        let mut add = |source: String, class: &'static str, id: PolicyId| {
            if self.rules.insert((source, String::new(), class, 5)) {
                self.growth
                    .push(("RULES_PER_SET", id, format!("{class} allow list")));
            }
        };
        let allow = |a: crate::vocabulary::Action| a == crate::vocabulary::Action::Allow;
        for r in set.process.rules.iter().filter(|r| allow(r.action)) {
            Self::sources(r)
                .into_iter()
                .for_each(|s| add(s, "process", r.policy_id));
        }
        for r in set.file.rules.iter().filter(|r| allow(r.action)) {
            Self::sources(r)
                .into_iter()
                .for_each(|s| add(s, "file", r.policy_id));
        }
        for r in set.network.rules.iter().filter(|r| allow(r.action)) {
            Self::sources(r)
                .into_iter()
                .for_each(|s| add(s, "network", r.policy_id));
        }
        for r in set.capabilities.rules.iter().filter(|r| allow(r.action)) {
            Self::sources(r)
                .into_iter()
                .for_each(|s| add(s, "capabilities", r.policy_id));
        }
        let firsts = [
            ("process", set.process.rules.first().map(|r| r.policy_id)),
            ("file", set.file.rules.first().map(|r| r.policy_id)),
        ];
        for (class, first) in firsts {
            if let Some(id) = first {
                add("undecidable".to_owned(), class, id);
            }
        }
    }

    /// Item rules (network, capabilities, setid): one entry per rule and source.
    fn items(&mut self, set: &CompiledPolicySet) {
        let mut add = |r_source: Vec<String>, what: String, id: PolicyId| {
            for source in r_source {
                if self.rules.insert((source, what.clone(), "item", 4)) {
                    self.growth.push(("RULES_PER_SET", id, what.clone()));
                }
            }
        };
        for r in &set.network.rules {
            add(
                Self::sources(r),
                format!("network {:?}", r.matcher),
                r.policy_id,
            );
        }
        for r in &set.capabilities.rules {
            add(
                Self::sources(r),
                format!("capability {:?}", r.matcher),
                r.policy_id,
            );
        }
        for r in &set.setid {
            add(
                Self::sources(r),
                format!("syscall {:?}", r.matcher),
                r.policy_id,
            );
        }
    }

    /// A path passes every pattern directory that is a prefix of it.
    fn pattern_chains(&self, origin: &dyn Fn(PolicyId) -> Origin, out: &mut Vec<Diagnostic>) {
        for ((class, dir), (id, rule)) in &self.pattern_dirs {
            let above: Vec<&str> = self
                .pattern_dirs
                .keys()
                .filter(|(c, d)| c == class && dir.starts_with(d.as_str()))
                .map(|(_, d)| d.as_str())
                .collect();
            if above.len() > MAX_PATTERN_PREFIXES {
                out.push(limit(
                    &origin(*id),
                    "MAX_PATTERN_PREFIXES",
                    MAX_PATTERN_PREFIXES,
                    rule,
                    format!(
                        "{class} directories with patterns that one path under {dir} passes ({})",
                        above.join(" ")
                    ),
                ));
            }
        }
    }

    /// The rule that takes each table past its share of the kernel map.
    fn capacities(&self, origin: &dyn Fn(PolicyId) -> Origin, out: &mut Vec<Diagnostic>) {
        for (table, cap, used) in [
            ("RULES_PER_SET", RULES_PER_SET, self.rules.len()),
            ("PREFIXES_PER_SET", PREFIXES_PER_SET, self.prefixes.len()),
            ("GLOBS_PER_SET", GLOBS_PER_SET, self.globs.len()),
        ] {
            if used <= cap {
                continue;
            }
            let past = self.growth.iter().filter(|(t, _, _)| *t == table).nth(cap);
            if let Some((_, id, rule)) = past {
                out.push(limit(
                    &origin(*id),
                    table,
                    cap,
                    rule,
                    format!("kernel table entries ({used} needed)"),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::compile::{DefaultPostures, compile};
    use crate::loader::parse_policy_text;

    /// A Block policy `name` with `lines` under `file:` (each a YAML list item).
    fn policy(name: &str, section: &str, items: &[String]) -> String {
        let mut y = format!(
            "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorHostPolicy\nmetadata:\n  name: {name}\nspec:\n  nodeSelector:\n    matchLabels:\n      kubearmor.io/hostname: \"*\"\n  file:\n    {section}:\n"
        );
        for item in items {
            y.push_str(&format!("      - {item}\n"));
        }
        y.push_str("  action: Block\n");
        y
    }

    /// `policy(..)` with its rules in the process section (whose paths take no alias
    /// entries: they may be as long as the kernel matches).
    fn in_process(yaml: String) -> String {
        yaml.replace("  file:\n", "  process:\n")
    }

    fn problems(files: &[(&str, String)]) -> Vec<Diagnostic> {
        let mut policies = Vec::new();
        for (file, text) in files {
            match parse_policy_text(Path::new(file), text) {
                Ok(p) => policies.extend(p),
                Err(d) => panic!("{file} is valid: {d:?}"),
            }
        }
        let set = compile(&policies, DefaultPostures::default());
        kernel_limit_problems(&policies, &set)
    }

    fn patterns(dirs: impl Iterator<Item = String>) -> Vec<String> {
        dirs.map(|d| format!("pattern: {d}*.bak")).collect()
    }

    /// The one problem, as (limit, value, policy, rule, file).
    fn only(p: &[Diagnostic]) -> (&'static str, usize, String, String, String) {
        assert_eq!(p.len(), 1, "{p:?}");
        let PolicyError::KernelLimit {
            limit,
            value,
            policy,
            rule,
            ..
        } = &p[0].error
        else {
            panic!("{p:?}")
        };
        let file = p[0].file.display().to_string();
        assert!(p[0].to_string().contains(limit), "{}", p[0]);
        (limit, *value, policy.clone(), rule.clone(), file)
    }

    #[test]
    fn nested_pattern_prefixes_up_to_the_limit_are_accepted() {
        let mut dirs = vec!["/".to_owned()];
        for i in 1..MAX_PATTERN_PREFIXES {
            dirs.push(format!("{}d{i}/", dirs[i - 1]));
        }
        // Unrelated prefixes do not count against a path's chain.
        let others = (0..20).map(|i| format!("/other{i}/"));
        let items = patterns(dirs.into_iter().chain(others));
        assert!(problems(&[("a.yaml", policy("p", "matchPatterns", &items))]).is_empty());
    }

    #[test]
    fn more_nested_pattern_prefixes_than_the_probes_keep_are_refused() {
        let mut dirs = vec!["/".to_owned()];
        for i in 1..=MAX_PATTERN_PREFIXES {
            dirs.push(format!("{}d{i}/", dirs[i - 1]));
        }
        let deepest = format!("{}*.bak", dirs[MAX_PATTERN_PREFIXES]);
        let p = problems(&[(
            "deep.yaml",
            policy("deep", "matchPatterns", &patterns(dirs.into_iter())),
        )]);
        assert_eq!(
            only(&p),
            (
                "MAX_PATTERN_PREFIXES",
                MAX_PATTERN_PREFIXES,
                "deep".to_owned(),
                deepest,
                "deep.yaml".to_owned()
            )
        );
    }

    #[test]
    fn patterns_per_directory_count_across_policies() {
        let items: Vec<String> = (0..GLOBS_PER_KEY)
            .map(|i| format!("pattern: /etc/x{i}*"))
            .collect();
        let full = policy("full", "matchPatterns", &items);
        assert!(problems(&[("full.yaml", full.clone())]).is_empty());
        let more = policy("more", "matchPatterns", &["pattern: /etc/y*".to_owned()]);
        let p = problems(&[("full.yaml", full), ("more.yaml", more)]);
        assert_eq!(
            only(&p),
            (
                "GLOBS_PER_KEY",
                GLOBS_PER_KEY,
                "more".to_owned(),
                "/etc/y*".to_owned(),
                "more.yaml".to_owned()
            )
        );
    }

    #[test]
    fn rule_table_capacity_is_a_refusal_naming_the_rule_past_it() {
        let items: Vec<String> = (0..RULES_PER_SET - 2)
            .map(|i| format!("path: /etc/f{i}"))
            .collect();
        // One undecidable entry for the file class: RULES_PER_SET - 1 entries.
        assert!(problems(&[("big.yaml", policy("big", "matchPaths", &items))]).is_empty());
        let items: Vec<String> = (0..RULES_PER_SET)
            .map(|i| format!("path: /etc/f{i}"))
            .collect();
        let p = problems(&[("big.yaml", policy("big", "matchPaths", &items))]);
        let (limit, value, policy_name, _, file) = only(&p);
        assert_eq!(
            (limit, value, policy_name.as_str(), file.as_str()),
            ("RULES_PER_SET", RULES_PER_SET, "big", "big.yaml")
        );
    }

    #[test]
    fn prefix_and_pattern_list_capacities_are_refusals() {
        let dirs: Vec<String> = (0..=PREFIXES_PER_SET)
            .map(|i| format!("dir: /srv/d{i}/"))
            .collect();
        let p = problems(&[("dirs.yaml", policy("dirs", "matchDirectories", &dirs))]);
        assert_eq!(only(&p).0, "PREFIXES_PER_SET");
        let lists = patterns((0..=GLOBS_PER_SET).map(|i| format!("/srv/p{i}/")));
        let p = problems(&[("globs.yaml", policy("globs", "matchPatterns", &lists))]);
        assert_eq!(only(&p).0, "GLOBS_PER_SET");
        let lists = patterns((0..GLOBS_PER_SET).map(|i| format!("/srv/p{i}/")));
        assert!(problems(&[("globs.yaml", policy("globs", "matchPatterns", &lists))]).is_empty());
    }

    #[test]
    fn paths_up_to_path_max_are_within_what_the_kernel_matches() {
        let long = format!("/{}", vec!["d".repeat(200); 20].join("/"));
        assert!(long.len() > 4000 && long.len() <= edgearmor_probe_abi::MAX_HASHED_PATH_BYTES);
        let items = [format!("path: {long}")];
        let process = in_process(policy("long", "matchPaths", &items));
        assert!(problems(&[("long.yaml", process)]).is_empty());
    }
}
