//! Where the agent's KubeArmorHostPolicy set comes from, and when it changed.
//!
//! [`PolicySource::load`] reads the configured files and directories. A file with
//! any problem is rejected whole, and what that file contributed the last time it
//! was good stays in the set: a typo saved into a policy file on a running gateway
//! never turns its protection off. [`PolicySource::changed`] compares a cheap
//! fingerprint (names, sizes, modification times) of the policy files, so a poll
//! costs a few `stat`s.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::SystemTime;

use edgearmor_alert::expand::SELF_PROTECTION;

use edgearmor_policy::{
    CompiledPolicySet, DefaultPostures, HostPolicy, NodeIdentity, compile, load_policy_directory,
    load_policy_files, policy_files_in,
};

/// One load's result: the compiled set and what the operator should hear about.
pub struct LoadedPolicies {
    pub compiled: CompiledPolicySet,
    /// Policies in force (including kept ones of rejected files).
    pub policy_count: usize,
    /// Diagnostics, rejected files and kept policies, one line each.
    pub problems: Vec<String>,
    /// Policies for other hosts, one line each.
    pub skipped: Vec<String>,
    /// What the loaded policies say that is ignored (`metadata.namespace`).
    pub warnings: Vec<String>,
    /// Kernel limits the set exceeds (limit, value, rule, policy, file), one line
    /// each: the set is refused whole.
    pub over_limits: Vec<String>,
}

pub struct PolicySource {
    paths: Vec<PathBuf>,
    /// The host name and configured labels node selectors are matched against.
    node: NodeIdentity,
    postures: DefaultPostures,
    /// Per file, its policies from its last good read.
    last_good: BTreeMap<PathBuf, Vec<HostPolicy>>,
    fingerprint: Vec<(PathBuf, u64, Option<SystemTime>)>,
    /// Compiled with every load: locked mode's self-protection policy.
    extra: Vec<HostPolicy>,
}

impl PolicySource {
    pub fn new(paths: Vec<PathBuf>, node: NodeIdentity, postures: DefaultPostures) -> Self {
        let mut source = Self {
            paths,
            node,
            postures,
            last_good: BTreeMap::new(),
            fingerprint: Vec::new(),
            extra: Vec::new(),
        };
        source.fingerprint = source.current_fingerprint();
        source
    }

    /// Policies compiled with the files' at every load (locked mode's own).
    pub fn set_extra(&mut self, extra: Vec<HostPolicy>) {
        self.extra = extra;
    }

    /// True when any policy file appeared, disappeared or was modified since the
    /// last call (or since `new`).
    pub fn changed(&mut self) -> bool {
        let now = self.current_fingerprint();
        if now == self.fingerprint {
            return false;
        }
        self.fingerprint = now;
        true
    }

    fn current_fingerprint(&self) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
        let mut files = Vec::new();
        for path in &self.paths {
            if path.is_dir() {
                files.extend(policy_files_in(path).unwrap_or_default());
            } else {
                files.push(path.clone());
            }
        }
        files
            .into_iter()
            .map(|f| {
                let meta = std::fs::metadata(&f).ok();
                let len = meta.as_ref().map_or(u64::MAX, |m| m.len());
                let modified = meta.and_then(|m| m.modified().ok());
                (f, len, modified)
            })
            .collect()
    }

    /// Reads and compiles the whole set. Errors only when a configured directory
    /// cannot be listed at all (then nothing changes).
    pub fn load(&mut self) -> Result<LoadedPolicies, String> {
        let mut policies = Vec::new();
        let mut problems = Vec::new();
        let mut skipped = Vec::new();
        let mut warnings = Vec::new();
        let mut good = BTreeMap::new();
        for path in &self.paths {
            let load = if path.is_dir() {
                load_policy_directory(path, &self.node)
                    .map_err(|e| format!("policies {}: {e}", path.display()))?
            } else {
                load_policy_files(std::slice::from_ref(path), &self.node)
            };
            problems.extend(load.diagnostics().map(|d| d.to_string()));
            for rejected in &load.rejected {
                match self.last_good.get(&rejected.file) {
                    Some(kept) => {
                        problems.push(format!(
                            "{}: rejected; its {} previously applied policies stay in force",
                            rejected.file.display(),
                            kept.len()
                        ));
                        policies.extend(kept.iter().cloned());
                        good.insert(rejected.file.clone(), kept.clone());
                    }
                    None => problems.push(format!(
                        "{}: rejected, none of its policies apply",
                        rejected.file.display()
                    )),
                }
            }
            skipped.extend(load.skipped.iter().map(|s| s.to_string()));
            for policy in load.policies {
                if policy.name == SELF_PROTECTION {
                    problems.push(format!(
                        "{}: policy {SELF_PROTECTION}: the name is reserved for locked mode's self-protection; the policy does not apply",
                        policy.source_file.display()
                    ));
                    continue;
                }
                warnings.extend(policy.warnings.iter().map(|w| format!("warning: {w}")));
                good.entry(policy.source_file.clone())
                    .or_insert_with(Vec::new)
                    .push(policy.clone());
                policies.push(policy);
            }
        }
        // Files that are good now but had no policy for this host still count.
        self.last_good = good;
        policies.extend(self.extra.iter().cloned());
        let compiled = compile(&policies, self.postures);
        let over_limits =
            edgearmor_policy::kernel_limits::kernel_limit_problems(&policies, &compiled)
                .iter()
                .map(ToString::to_string)
                .collect();
        Ok(LoadedPolicies {
            compiled,
            over_limits,
            policy_count: policies.len(),
            problems,
            skipped,
            warnings,
        })
    }

    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgearmor_policy::DefaultPosture;

    const BLOCK_LS: &str = "apiVersion: security.kubearmor.com/v1
kind: KubeArmorHostPolicy
metadata:
  name: block-ls
spec:
  nodeSelector:
    matchLabels:
      kubearmor.io/hostname: \"*\"
  process:
    matchPaths:
      - path: /usr/bin/ls
  action: Block
";

    #[test]
    fn a_broken_file_keeps_its_last_good_policies() {
        let dir = std::env::temp_dir().join(format!("edgearmor-src-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("ls.yaml");
        std::fs::write(&file, BLOCK_LS).expect("write");
        let mut source = PolicySource::new(
            vec![dir.clone()],
            "gw".into(),
            DefaultPostures::uniform(DefaultPosture::Audit),
        );
        let first = source.load().expect("loads");
        assert_eq!(first.compiled.process.rules.len(), 1);
        assert!(!source.changed());

        std::fs::write(&file, BLOCK_LS.replace("action: Block", "action: Blok")).expect("write");
        assert!(source.changed());
        let second = source.load().expect("loads");
        assert_eq!(
            second.compiled.process.rules.len(),
            1,
            "kept from the last good read"
        );
        assert!(
            second.problems.iter().any(|p| p.contains("stay in force")),
            "{:?}",
            second.problems
        );

        std::fs::remove_file(&file).expect("remove");
        assert!(source.changed());
        let third = source.load().expect("loads");
        assert_eq!(
            third.compiled.process.rules.len(),
            0,
            "a deleted file is gone"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_set_past_a_kernel_limit_is_reported_for_refusal_with_its_file() {
        let dir = std::env::temp_dir().join(format!("edgearmor-lim-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut patterns = String::new();
        for i in 0..=edgearmor_probe_abi::GLOBS_PER_KEY {
            patterns.push_str(&format!("      - pattern: /usr/bin/p{i}*\n"));
        }
        let many = BLOCK_LS
            .replace("name: block-ls", "name: many-patterns")
            .replace(
                "matchPaths:\n      - path: /usr/bin/ls\n",
                &format!("matchPatterns:\n{patterns}"),
            );
        std::fs::write(dir.join("many.yaml"), many).expect("write");
        let mut source = PolicySource::new(
            vec![dir.clone()],
            "gw".into(),
            DefaultPostures::uniform(DefaultPosture::Audit),
        );
        let loaded = source.load().expect("loads");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(loaded.over_limits.len(), 1, "{:?}", loaded.over_limits);
        let line = &loaded.over_limits[0];
        assert!(
            line.contains("GLOBS_PER_KEY = 8")
                && line.contains("many.yaml")
                && line.contains("many-patterns"),
            "{line}"
        );
    }

    #[test]
    fn a_policy_file_cannot_take_the_self_protection_name() {
        let dir = std::env::temp_dir().join(format!("edgearmor-reserved-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let text = BLOCK_LS.replace("name: block-ls", &format!("name: {SELF_PROTECTION}"));
        std::fs::write(dir.join("fake.yaml"), text).expect("write");
        std::fs::write(dir.join("ls.yaml"), BLOCK_LS).expect("write");
        let mut source = PolicySource::new(
            vec![dir.clone()],
            "gw".into(),
            DefaultPostures::uniform(DefaultPosture::Audit),
        );
        let loaded = source.load().expect("loads");
        assert_eq!(loaded.compiled.policy_names, vec!["block-ls".to_owned()]);
        assert!(
            loaded
                .problems
                .iter()
                .any(|p| p.contains("fake.yaml") && p.contains("reserved")),
            "{:?}",
            loaded.problems
        );
        // The agent's own, added in locked mode, is compiled with the files'.
        let own = edgearmor_policy::parse_policy_text(
            std::path::Path::new("own"),
            &BLOCK_LS.replace("name: block-ls", "name: own"),
        )
        .expect("parses");
        source.set_extra(own);
        let loaded = source.load().expect("loads");
        assert_eq!(
            loaded.compiled.policy_names,
            vec!["block-ls".to_owned(), "own".to_owned()]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
