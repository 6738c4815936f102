//! The rule tables of loaded probes: a whole policy set written under a new
//! generation, switched in with one write to the one-entry `ACTIVE` array, then the
//! old generation's entries removed, so no hook ever sees neither set or a mix.
//!
//! The maps are reached through [`Table`] and [`Slot`], so tests make a write fail the
//! way the kernel does (an errno on the n-th insert) without root.

use std::fmt;

use aya::Ebpf;
use aya::maps::{Array, HashMap, MapData, MapError};
use edgearmor_probe_abi::{
    ALIASES_CAPACITY, ActivePolicy, AliasKey, AliasValue, GLOBS_CAPACITY, GlobList,
    PREFIXES_CAPACITY, PrefixKey, RULES_CAPACITY, RuleKey, RuleValue, exec_identity, names,
};

use crate::kernel::loader::map_failure;
use crate::kernel::readiness::EnforcementUnavailable;
use crate::kernel::rule_tables::KernelRuleSet;

/// A kernel hash map as the rule tables use it: the seam that lets a test make a
/// write fail the way the kernel does, without root.
pub(crate) trait Table<K, V> {
    /// Inserts or replaces; `Err(errno)` (0 when the kernel gave none) on failure.
    fn insert(&mut self, key: K, value: V) -> Result<(), i32>;
    /// Removes if present.
    fn remove(&mut self, key: &K);
    /// Every key now in the map.
    fn keys(&self) -> Vec<K>;
}

/// The one-entry `ACTIVE` array.
pub(crate) trait Slot {
    fn get(&self) -> Option<ActivePolicy>;
    fn set(&mut self, value: ActivePolicy) -> Result<(), i32>;
}

/// The errno of a failed map syscall (0 when aya failed before the kernel was asked).
fn map_errno(e: &MapError) -> i32 {
    match e {
        MapError::SyscallError(s) => s.io_error.raw_os_error().unwrap_or(0),
        _ => 0,
    }
}

impl<K: aya::Pod, V: aya::Pod> Table<K, V> for HashMap<MapData, K, V> {
    fn insert(&mut self, key: K, value: V) -> Result<(), i32> {
        HashMap::insert(self, key, value, 0).map_err(|e| map_errno(&e))
    }
    fn remove(&mut self, key: &K) {
        let _ = HashMap::remove(self, key);
    }
    fn keys(&self) -> Vec<K> {
        HashMap::keys(self).filter_map(Result::ok).collect()
    }
}

impl Slot for Array<MapData, ActivePolicy> {
    fn get(&self) -> Option<ActivePolicy> {
        Array::get(self, &0, 0).ok()
    }
    fn set(&mut self, value: ActivePolicy) -> Result<(), i32> {
        Array::set(self, 0, value, 0).map_err(|e| map_errno(&e))
    }
}

/// Removes the entries of `map` whose key matches (listed first: deleting while
/// iterating would skip keys).
fn remove_where<K, V>(map: &mut dyn Table<K, V>, stale: impl Fn(&K) -> bool) {
    for k in map.keys().into_iter().filter(|k| stale(k)) {
        map.remove(&k);
    }
}

/// Why a policy set could not be written, naming the map, the entry and the errno
/// (whatever was in force before stays in force).
#[derive(Debug, thiserror::Error)]
#[error("map {map}: {what}")]
pub struct ApplyError {
    pub map: &'static str,
    pub what: String,
}

impl ApplyError {
    fn write(map: &'static str, key: impl fmt::Debug, errno: i32) -> Self {
        let cause = if errno == 0 {
            "failed".to_owned()
        } else {
            let text = std::io::Error::from_raw_os_error(errno).to_string();
            let bare = text.split(" (os error").next().unwrap_or_default();
            format!("{bare} (errno {errno})")
        };
        Self {
            map,
            what: format!("writing {key:?}: {cause}"),
        }
    }
}

/// The map handles [`PolicyMaps`] works on (the kernel's, or a test's).
pub(crate) struct Tables {
    pub rules: Box<dyn Table<RuleKey, RuleValue>>,
    pub prefixes: Box<dyn Table<PrefixKey, u32>>,
    pub globs: Box<dyn Table<RuleKey, GlobList>>,
    pub aliases: Box<dyn Table<AliasKey, AliasValue>>,
    pub exec_aliases: Box<dyn Table<AliasKey, AliasValue>>,
    pub active: Box<dyn Slot>,
}

/// The rule tables of the loaded probes and the generation they enforce.
pub struct PolicyMaps {
    rules: Box<dyn Table<RuleKey, RuleValue>>,
    prefixes: Box<dyn Table<PrefixKey, u32>>,
    globs: Box<dyn Table<RuleKey, GlobList>>,
    aliases: Box<dyn Table<AliasKey, AliasValue>>,
    exec_aliases: Box<dyn Table<AliasKey, AliasValue>>,
    active: Box<dyn Slot>,
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
        let rules: HashMap<MapData, RuleKey, RuleValue> =
            HashMap::try_from(take_map(ebpf, names::RULES)?)
                .map_err(|e| map_failure(names::RULES, e))?;
        let prefixes: HashMap<MapData, PrefixKey, u32> =
            HashMap::try_from(take_map(ebpf, names::PREFIXES)?)
                .map_err(|e| map_failure(names::PREFIXES, e))?;
        let globs: HashMap<MapData, RuleKey, GlobList> =
            HashMap::try_from(take_map(ebpf, names::GLOBS)?)
                .map_err(|e| map_failure(names::GLOBS, e))?;
        let aliases: HashMap<MapData, AliasKey, AliasValue> =
            HashMap::try_from(take_map(ebpf, names::FILE_ALIASES)?)
                .map_err(|e| map_failure(names::FILE_ALIASES, e))?;
        let exec_aliases: HashMap<MapData, AliasKey, AliasValue> =
            HashMap::try_from(take_map(ebpf, exec_identity::EXEC_ALIASES)?)
                .map_err(|e| map_failure(exec_identity::EXEC_ALIASES, e))?;
        let active: Array<MapData, ActivePolicy> = Array::try_from(take_map(ebpf, names::ACTIVE)?)
            .map_err(|e| map_failure(names::ACTIVE, e))?;
        let tables = Tables {
            rules: Box::new(rules),
            prefixes: Box::new(prefixes),
            globs: Box::new(globs),
            aliases: Box::new(aliases),
            exec_aliases: Box::new(exec_aliases),
            active: Box::new(active),
        };
        Ok(Self::over(tables, adopting))
    }

    /// The tables over any map handles (the kernel's, or a test's).
    pub(crate) fn over(tables: Tables, adopting: bool) -> Self {
        let Tables {
            rules,
            prefixes,
            globs,
            aliases,
            exec_aliases,
            active,
        } = tables;
        let generation = match adopting {
            true => active.get().map(|a| a.generation).unwrap_or(0),
            false => 0,
        };
        Self {
            rules,
            prefixes,
            globs,
            aliases,
            exec_aliases,
            active,
            generation,
            applied: KernelRuleSet::default(),
            adopted: adopting,
        }
    }

    /// The generation being enforced.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The classes the set in force has rules for (`ActivePolicy::class_mask`).
    pub fn class_mask(&self) -> u32 {
        self.applied.class_mask
    }

    /// Enforces `next` instead of the current set, atomically: `next` is written
    /// under a new generation while the current one stays in force, one write to
    /// `ACTIVE` switches every hook, then the old entries are removed. On a write
    /// error the partial new generation is removed and nothing changes.
    pub fn apply(&mut self, next: KernelRuleSet) -> Result<(), ApplyError> {
        self.check_room(&next)?;
        let generation = self.generation.wrapping_add(1);
        if let Err(e) = self.write(&next, generation) {
            self.remove(&next, generation);
            return Err(e);
        }
        let active = ActivePolicy {
            generation,
            class_mask: next.class_mask,
        };
        if let Err(errno) = self.active.set(active) {
            self.remove(&next, generation);
            return Err(ApplyError::write(names::ACTIVE, active, errno));
        }
        let old = std::mem::replace(&mut self.applied, next);
        self.remove(&old, self.generation);
        self.generation = generation;
        if std::mem::take(&mut self.adopted) {
            self.remove_other_generations();
        }
        Ok(())
    }

    /// Refuses, before anything is written, a set the tables cannot hold beside the
    /// one in force (both live until the switch), naming the table and its capacity.
    fn check_room(&self, next: &KernelRuleSet) -> Result<(), ApplyError> {
        let (rules, prefixes, globs) = next.sizes();
        let aliases = next.aliases.names.len();
        let exec_aliases = next.exec_aliases.names.len();
        // Adopted tables hold what an earlier agent wrote, which only the maps know;
        // `EXEC_ALIASES` also what the kernel added (renamed-over files), so it is
        // always counted in the map.
        let in_exec_aliases = self.exec_aliases.keys().len();
        let (in_rules, in_prefixes, in_globs, in_aliases) = match self.adopted {
            true => (
                self.rules.keys().len(),
                self.prefixes.keys().len(),
                self.globs.keys().len(),
                self.aliases.keys().len(),
            ),
            false => {
                let (r, p, g) = self.applied.sizes();
                (r, p, g, self.applied.aliases.names.len())
            }
        };
        for (map, capacity, needed, in_force) in [
            (names::RULES, RULES_CAPACITY, rules, in_rules),
            (names::PREFIXES, PREFIXES_CAPACITY, prefixes, in_prefixes),
            (names::GLOBS, GLOBS_CAPACITY, globs, in_globs),
            (names::FILE_ALIASES, ALIASES_CAPACITY, aliases, in_aliases),
            (
                exec_identity::EXEC_ALIASES,
                exec_identity::EXEC_ALIASES_CAPACITY,
                exec_aliases,
                in_exec_aliases,
            ),
        ] {
            if needed + in_force > capacity as usize {
                return Err(ApplyError {
                    map,
                    what: format!(
                        "the policy set needs {needed} entries and the set in force holds {in_force} until the switch; the table holds {capacity}"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Deletes every entry not of the current generation (what an earlier agent left).
    fn remove_other_generations(&mut self) {
        let generation = self.generation;
        remove_where(self.rules.as_mut(), |k| k.generation != generation);
        remove_where(self.prefixes.as_mut(), |k| k.generation != generation);
        remove_where(self.globs.as_mut(), |k| k.generation != generation);
        remove_where(self.aliases.as_mut(), |k| k.generation != generation);
        remove_where(self.exec_aliases.as_mut(), |k| k.generation != generation);
    }

    fn write(&mut self, set: &KernelRuleSet, generation: u32) -> Result<(), ApplyError> {
        for (k, v) in set.rule_entries(generation) {
            self.rules
                .insert(k, v)
                .map_err(|errno| ApplyError::write(names::RULES, k, errno))?;
        }
        for (k, v) in set.prefix_entries(generation) {
            self.prefixes
                .insert(k, v)
                .map_err(|errno| ApplyError::write(names::PREFIXES, k, errno))?;
        }
        for (k, v) in set.glob_entries(generation) {
            self.globs
                .insert(k, v)
                .map_err(|errno| ApplyError::write(names::GLOBS, k, errno))?;
        }
        for (k, v) in set.alias_entries(generation) {
            self.aliases
                .insert(k, v)
                .map_err(|errno| ApplyError::write(names::FILE_ALIASES, k, errno))?;
        }
        for (k, v) in set.exec_alias_entries(generation) {
            self.exec_aliases
                .insert(k, v)
                .map_err(|errno| ApplyError::write(exec_identity::EXEC_ALIASES, k, errno))?;
        }
        Ok(())
    }

    /// Removes `set`'s entries of `generation` (missing entries are fine).
    fn remove(&mut self, set: &KernelRuleSet, generation: u32) {
        for (k, _) in set.rule_entries(generation) {
            self.rules.remove(&k);
        }
        for (k, _) in set.prefix_entries(generation) {
            self.prefixes.remove(&k);
        }
        for (k, _) in set.glob_entries(generation) {
            self.globs.remove(&k);
        }
        for (k, _) in set.alias_entries(generation) {
            self.aliases.remove(&k);
        }
        // Every entry of the generation: the kernel adds some (`follow_rename`).
        remove_where(self.exec_aliases.as_mut(), |k| k.generation == generation);
    }
}

#[cfg(test)]
mod tests;
