//! The rule tables of loaded probes: a whole policy set written under a new
//! generation, switched in with one write to the one-entry `ACTIVE` array, then the
//! old generation's entries removed, so no hook ever sees neither set or a mix.

use aya::Ebpf;
use aya::maps::{Array, HashMap, MapData};
use edgearmor_probe_abi::{ActivePolicy, GlobList, PrefixKey, RuleKey, RuleValue, names};

use crate::kernel::loader::map_failure;
use crate::kernel::readiness::EnforcementUnavailable;
use crate::kernel::rule_tables::KernelRuleSet;

/// Removes the entries of `map` whose key matches (listed first: deleting while
/// iterating would skip keys).
fn remove_where<K: aya::Pod, V: aya::Pod>(
    map: &mut HashMap<MapData, K, V>,
    stale: impl Fn(&K) -> bool,
) {
    let keys: Vec<K> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| stale(k))
        .collect();
    for k in keys {
        let _ = map.remove(&k);
    }
}

/// Why a policy set could not be written; the previous set stays enforced.
#[derive(Debug, thiserror::Error)]
#[error("writing map {map}: {detail} (the previous policy set stays enforced)")]
pub struct ApplyError {
    pub map: &'static str,
    pub detail: String,
}

/// The rule tables of the loaded probes and the generation they enforce.
pub struct PolicyMaps {
    rules: HashMap<MapData, RuleKey, RuleValue>,
    prefixes: HashMap<MapData, PrefixKey, u32>,
    globs: HashMap<MapData, RuleKey, GlobList>,
    active: Array<MapData, ActivePolicy>,
    generation: u32,
    applied: KernelRuleSet,
    /// The tables hold an earlier agent's entries, which this one does not know.
    adopted: bool,
}

impl PolicyMaps {
    pub(crate) fn take(ebpf: &mut Ebpf, adopting: bool) -> Result<Self, EnforcementUnavailable> {
        fn take_map(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map, EnforcementUnavailable> {
            ebpf.take_map(name)
                .ok_or_else(|| map_failure(name, "missing"))
        }
        Ok(Self {
            rules: HashMap::try_from(take_map(ebpf, names::RULES)?)
                .map_err(|e| map_failure(names::RULES, e))?,
            prefixes: HashMap::try_from(take_map(ebpf, names::PREFIXES)?)
                .map_err(|e| map_failure(names::PREFIXES, e))?,
            globs: HashMap::try_from(take_map(ebpf, names::GLOBS)?)
                .map_err(|e| map_failure(names::GLOBS, e))?,
            active: Array::try_from(take_map(ebpf, names::ACTIVE)?)
                .map_err(|e| map_failure(names::ACTIVE, e))?,
            generation: 0,
            applied: KernelRuleSet::default(),
            adopted: adopting,
        })
        .map(|mut maps: Self| {
            if adopting {
                maps.generation = maps.active.get(&0, 0).map(|a| a.generation).unwrap_or(0);
            }
            maps
        })
    }

    /// The generation being enforced.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Enforces `next` instead of the current set, atomically: `next` is written
    /// under a new generation while the current one stays in force, one write to
    /// `ACTIVE` switches every hook, then the old entries are removed. On a write
    /// error the partial new generation is removed and nothing changes.
    pub fn apply(&mut self, next: KernelRuleSet) -> Result<(), ApplyError> {
        let generation = self.generation.wrapping_add(1);
        if let Err(e) = self.write(&next, generation) {
            self.remove(&next, generation);
            return Err(e);
        }
        let active = ActivePolicy {
            generation,
            class_mask: next.class_mask,
        };
        if let Err(e) = self.active.set(0, active, 0) {
            self.remove(&next, generation);
            return Err(ApplyError {
                map: names::ACTIVE,
                detail: e.to_string(),
            });
        }
        let old = std::mem::replace(&mut self.applied, next);
        self.remove(&old, self.generation);
        self.generation = generation;
        if std::mem::take(&mut self.adopted) {
            self.remove_other_generations();
        }
        Ok(())
    }

    /// Deletes every entry not of the current generation (what an earlier agent left).
    fn remove_other_generations(&mut self) {
        let generation = self.generation;
        remove_where(&mut self.rules, |k| k.generation != generation);
        remove_where(&mut self.prefixes, |k| k.generation != generation);
        remove_where(&mut self.globs, |k| k.generation != generation);
    }

    fn write(&mut self, set: &KernelRuleSet, generation: u32) -> Result<(), ApplyError> {
        for (k, v) in set.rule_entries(generation) {
            self.rules.insert(k, v, 0).map_err(|e| ApplyError {
                map: names::RULES,
                detail: e.to_string(),
            })?;
        }
        for (k, v) in set.prefix_entries(generation) {
            self.prefixes.insert(k, v, 0).map_err(|e| ApplyError {
                map: names::PREFIXES,
                detail: e.to_string(),
            })?;
        }
        for (k, v) in set.glob_entries(generation) {
            self.globs.insert(k, v, 0).map_err(|e| ApplyError {
                map: names::GLOBS,
                detail: e.to_string(),
            })?;
        }
        Ok(())
    }

    /// Removes `set`'s entries of `generation` (missing entries are fine).
    fn remove(&mut self, set: &KernelRuleSet, generation: u32) {
        for (k, _) in set.rule_entries(generation) {
            let _ = self.rules.remove(&k);
        }
        for (k, _) in set.prefix_entries(generation) {
            let _ = self.prefixes.remove(&k);
        }
        for (k, _) in set.glob_entries(generation) {
            let _ = self.globs.remove(&k);
        }
    }
}
