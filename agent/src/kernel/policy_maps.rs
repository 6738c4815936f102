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
    ActivePolicy, GLOBS_CAPACITY, GlobList, PREFIXES_CAPACITY, PrefixKey, RULES_CAPACITY, RuleKey,
    RuleValue, names,
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

/// The rule tables of the loaded probes and the generation they enforce.
pub struct PolicyMaps {
    rules: Box<dyn Table<RuleKey, RuleValue>>,
    prefixes: Box<dyn Table<PrefixKey, u32>>,
    globs: Box<dyn Table<RuleKey, GlobList>>,
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
        let active: Array<MapData, ActivePolicy> = Array::try_from(take_map(ebpf, names::ACTIVE)?)
            .map_err(|e| map_failure(names::ACTIVE, e))?;
        Ok(Self::over(
            Box::new(rules),
            Box::new(prefixes),
            Box::new(globs),
            Box::new(active),
            adopting,
        ))
    }

    /// The tables over any map handles (the kernel's, or a test's).
    pub(crate) fn over(
        rules: Box<dyn Table<RuleKey, RuleValue>>,
        prefixes: Box<dyn Table<PrefixKey, u32>>,
        globs: Box<dyn Table<RuleKey, GlobList>>,
        active: Box<dyn Slot>,
        adopting: bool,
    ) -> Self {
        let generation = match adopting {
            true => active.get().map(|a| a.generation).unwrap_or(0),
            false => 0,
        };
        Self {
            rules,
            prefixes,
            globs,
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
        // Adopted tables hold what an earlier agent wrote, which only the maps know.
        let (in_rules, in_prefixes, in_globs) = match self.adopted {
            true => (
                self.rules.keys().len(),
                self.prefixes.keys().len(),
                self.globs.keys().len(),
            ),
            false => self.applied.sizes(),
        };
        for (map, capacity, needed, in_force) in [
            (names::RULES, RULES_CAPACITY, rules, in_rules),
            (names::PREFIXES, PREFIXES_CAPACITY, prefixes, in_prefixes),
            (names::GLOBS, GLOBS_CAPACITY, globs, in_globs),
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap as StdMap;
    use std::hash::Hash;
    use std::rc::Rc;

    use edgearmor_probe_abi::{
        ACTION_BLOCK, ANY_SOURCE, CLASS_NETWORK, MATCH_ITEM, SLOT_READ, Verdict,
    };

    /// A map in memory that refuses its `fail_at`-th insert with `errno`, as the
    /// kernel refuses an element it cannot allocate or hold.
    struct FakeTable<K, V> {
        entries: Rc<RefCell<StdMap<K, V>>>,
        inserts: usize,
        fail_at: Option<(usize, i32)>,
    }

    impl<K: Hash + Eq + Copy, V: Copy> Table<K, V> for FakeTable<K, V> {
        fn insert(&mut self, key: K, value: V) -> Result<(), i32> {
            self.inserts += 1;
            match self.fail_at {
                Some((n, errno)) if n == self.inserts => Err(errno),
                _ => {
                    self.entries.borrow_mut().insert(key, value);
                    Ok(())
                }
            }
        }
        fn remove(&mut self, key: &K) {
            self.entries.borrow_mut().remove(key);
        }
        fn keys(&self) -> Vec<K> {
            self.entries.borrow().keys().copied().collect()
        }
    }

    struct FakeActive(Rc<RefCell<Option<ActivePolicy>>>);

    impl Slot for FakeActive {
        fn get(&self) -> Option<ActivePolicy> {
            *self.0.borrow()
        }
        fn set(&mut self, value: ActivePolicy) -> Result<(), i32> {
            *self.0.borrow_mut() = Some(value);
            Ok(())
        }
    }

    type Rules = Rc<RefCell<StdMap<RuleKey, RuleValue>>>;

    /// Tables whose `RULES` map fails its `fail_at`-th insert.
    fn tables(
        fail_at: Option<(usize, i32)>,
    ) -> (PolicyMaps, Rules, Rc<RefCell<Option<ActivePolicy>>>) {
        tables_holding(fail_at, Rc::default(), false)
    }

    fn tables_holding(
        fail_at: Option<(usize, i32)>,
        rules: Rules,
        adopting: bool,
    ) -> (PolicyMaps, Rules, Rc<RefCell<Option<ActivePolicy>>>) {
        let active = Rc::new(RefCell::new(None));
        let maps = PolicyMaps::over(
            Box::new(FakeTable {
                entries: rules.clone(),
                inserts: 0,
                fail_at,
            }),
            Box::new(FakeTable::<PrefixKey, u32> {
                entries: Rc::default(),
                inserts: 0,
                fail_at: None,
            }),
            Box::new(FakeTable::<RuleKey, GlobList> {
                entries: Rc::default(),
                inserts: 0,
                fail_at: None,
            }),
            Box::new(FakeActive(active.clone())),
            adopting,
        );
        (maps, rules, active)
    }

    /// A set of `n` network item rules.
    fn set_of(n: u64) -> KernelRuleSet {
        let mut set = KernelRuleSet::default();
        let mut value = RuleValue::NONE;
        value.slots[SLOT_READ] = Verdict {
            action: ACTION_BLOCK,
            policy_id: 1,
        };
        for item in 1..=n {
            set.rules
                .insert((ANY_SOURCE, item, CLASS_NETWORK, MATCH_ITEM), value);
        }
        set.class_mask = edgearmor_probe_abi::class_bit(CLASS_NETWORK);
        set
    }

    #[test]
    fn a_failed_write_names_map_key_and_errno_and_changes_nothing() {
        let (mut maps, rules, active) = tables(Some((3, libc::ENOMEM)));
        let err = maps.apply(set_of(5)).expect_err("the third insert fails");
        let text = err.to_string();
        assert_eq!(err.map, names::RULES);
        assert!(text.contains("map RULES"), "{text}");
        assert!(text.contains("target: 3"), "the failing key: {text}");
        assert!(text.contains("generation: 1"), "{text}");
        assert!(text.contains(&format!("errno {}", libc::ENOMEM)), "{text}");
        // The partial generation is gone and nothing was switched.
        assert!(rules.borrow().is_empty(), "{:?}", rules.borrow().keys());
        assert_eq!(*active.borrow(), None);
        assert_eq!(maps.generation(), 0);
    }

    #[test]
    fn a_failed_write_keeps_the_set_in_force() {
        let (mut maps, rules, active) = tables(Some((4, libc::E2BIG)));
        maps.apply(set_of(2)).expect("the first set fits");
        let err = maps
            .apply(set_of(3))
            .expect_err("the second set's 2nd insert fails");
        assert!(err.to_string().contains("errno 7"), "{err}");
        assert_eq!(active.borrow().map(|a| a.generation), Some(1));
        let kept = rules.borrow();
        assert_eq!(kept.len(), 2);
        assert!(kept.keys().all(|k| k.generation == 1));
    }

    #[test]
    fn a_set_the_tables_cannot_hold_is_refused_before_writing() {
        let (mut maps, rules, _) = tables(None);
        let half = u64::from(RULES_CAPACITY / 2);
        maps.apply(set_of(half)).expect("half fits");
        let err = maps
            .apply(set_of(half + 1))
            .expect_err("both cannot live at once");
        let text = err.to_string();
        assert!(
            text.contains(&format!("the table holds {RULES_CAPACITY}")),
            "{text}"
        );
        assert!(text.contains(&format!("needs {}", half + 1)), "{text}");
        assert_eq!(rules.borrow().len(), half as usize, "nothing written");
        maps.apply(set_of(half)).expect("the same size again fits");
    }

    #[test]
    fn adopted_tables_count_what_an_earlier_agent_left() {
        let earlier: Rules = Rc::default();
        for (k, v) in set_of(u64::from(RULES_CAPACITY) - 1).rule_entries(7) {
            earlier.borrow_mut().insert(k, v);
        }
        let (mut maps, rules, _) = tables_holding(None, earlier, true);
        let err = maps
            .apply(set_of(2))
            .expect_err("no room beside the earlier set");
        let held = format!("holds {} until the switch", RULES_CAPACITY - 1);
        assert!(err.to_string().contains(&held), "{err}");
        assert_eq!(rules.borrow().len(), RULES_CAPACITY as usize - 1);
        maps.apply(set_of(1)).expect("one entry fits");
        // After the switch the earlier agent's generation is gone.
        assert_eq!(rules.borrow().len(), 1);
    }

    #[test]
    fn only_bpf_lsm_unavailable_here_is_a_reason_for_monitor_only_mode() {
        let (mut maps, _, _) = tables(Some((1, libc::ENOMEM)));
        let write = maps.apply(set_of(1)).expect_err("fails");
        let broken = [
            EnforcementUnavailable::RuleTables(write),
            EnforcementUnavailable::Verifier {
                program: "check_socket".into(),
                log_tail: String::new(),
            },
            EnforcementUnavailable::Failed {
                step: "opening map RULES".into(),
                errno: Some(libc::ENOMEM),
                detail: String::new(),
            },
        ];
        for failure in &broken {
            assert!(!failure.kernel_lacks_bpf_lsm(), "{failure}");
        }
        let lacking = [
            EnforcementUnavailable::BpfLsmNotBuiltIn,
            EnforcementUnavailable::BpfLsmInactive {
                active: "capability".into(),
            },
            EnforcementUnavailable::NoTrampoline {
                program: "p".into(),
                hook: "h".into(),
            },
            EnforcementUnavailable::NotPermitted {
                step: "load check_socket".into(),
            },
        ];
        for failure in &lacking {
            assert!(failure.kernel_lacks_bpf_lsm(), "{failure}");
        }
    }
}
