//! The policy side of a running agent: where policies come from, the catalog of their
//! metadata, the setid rules from TOML and flags, and the path-hash key the kernel
//! tables are built with. [`PolicyState::build`] turns all of it into one kernel rule
//! set; nothing here touches the kernel.

use std::path::PathBuf;

use crate::config::AgentConfig;
use crate::control::policy_source::PolicySource;
use crate::control::policy_table::PolicyCatalog;
use crate::control::setid_rules::SetidRuleSet;
use crate::host::HostKernel;
use crate::kernel::loader;
use crate::kernel::rule_tables::KernelRuleSet;

pub struct PolicyState {
    pub source: Option<PolicySource>,
    pub setid: SetidRuleSet,
    pub catalog: PolicyCatalog,
    key: [u64; 2],
    postures: edgearmor_policy::DefaultPostures,
    /// Locked mode's self-protection policy, compiled with every set.
    self_protection: Vec<edgearmor_policy::HostPolicy>,
}

/// Policy names shown in the summary line before `...`.
const NAMES_SHOWN: usize = 12;

/// The error of a set past a kernel limit: nothing of it is enforced.
fn refusal(problems: &[String]) -> String {
    format!(
        "policy set refused, the kernel could not enforce it whole: {}",
        problems.join("; ")
    )
}

impl PolicyState {
    /// `bundle_dir`: where fleet bundles are unpacked, read like any policy directory.
    pub fn new(
        config: &AgentConfig,
        hostname: String,
        setid: SetidRuleSet,
        key: [u64; 2],
        bundle_dir: Option<PathBuf>,
    ) -> Self {
        let postures = config.posture;
        let mut paths = config.policies.clone();
        paths.extend(bundle_dir);
        let node = config.node_identity(&hostname);
        let source = (!paths.is_empty()).then(|| PolicySource::new(paths, node, postures));
        Self {
            source,
            setid,
            catalog: PolicyCatalog::default(),
            key,
            postures,
            self_protection: Vec::new(),
        }
    }

    /// Locked mode: `policy` (the self-protection policy) is part of every set built
    /// from now on.
    pub fn protect_self(&mut self, policy: Vec<edgearmor_policy::HostPolicy>) {
        if let Some(source) = self.source.as_mut() {
            source.set_extra(policy.clone());
        }
        self.self_protection = policy;
    }

    /// The policy id the self-protection policy's alerts carry, once a set with it
    /// was built.
    pub fn self_protection_id(&self) -> Option<u32> {
        self.catalog.id_of(edgearmor_alert::expand::SELF_PROTECTION)
    }

    /// Reads the policies and builds the kernel tables, with a one-line summary; logs
    /// what the operator must know. `Err` leaves everything as it was.
    pub fn build(&mut self, host: &dyn HostKernel) -> Result<(KernelRuleSet, String), String> {
        let (compiled, count) = match self.source.as_mut() {
            Some(source) => {
                let loaded = source.load()?;
                for problem in &loaded.problems {
                    log::error!("{problem}");
                }
                for skipped in &loaded.skipped {
                    log::info!("{skipped}");
                }
                for warning in &loaded.warnings {
                    log::warn!("{warning}");
                }
                if !loaded.over_limits.is_empty() {
                    return Err(refusal(&loaded.over_limits));
                }
                (loaded.compiled, loaded.policy_count)
            }
            None => (
                edgearmor_policy::compile(&self.self_protection, self.postures),
                self.self_protection.len(),
            ),
        };
        let resolver = loader::HostPaths(host);
        let set = KernelRuleSet::build(
            &self.setid,
            &compiled,
            &mut self.catalog,
            self.key,
            &resolver,
        );
        for skipped in &set.skipped {
            log::error!("not enforceable, skipped: {skipped}");
        }
        for warning in &set.warnings {
            log::warn!("{warning}");
        }
        if !set.refused.is_empty() {
            let all: Vec<String> = set.refused.iter().map(|r| r.to_string()).collect();
            return Err(refusal(&all));
        }
        let (rules, prefixes, globs) = set.sizes();
        let mut names = compiled
            .policy_names
            .iter()
            .take(NAMES_SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join(",");
        if compiled.policy_names.len() > NAMES_SHOWN {
            names.push_str(",...");
        }
        let summary = format!(
            "{count} policies [{names}] ({} rules) + {} setid rule(s) from flags/TOML, policy set {}: {rules} kernel rule entries, {prefixes} prefixes, {globs} pattern lists, {}, {}",
            compiled.rule_count(),
            self.setid.rules.len(),
            compiled.content_hash,
            set.aliases.report(),
            set.exec_aliases.report_executables(),
        );
        Ok((set, summary))
    }
}
