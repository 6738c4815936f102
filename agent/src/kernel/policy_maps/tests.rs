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
fn tables(fail_at: Option<(usize, i32)>) -> (PolicyMaps, Rules, Rc<RefCell<Option<ActivePolicy>>>) {
    tables_holding(fail_at, Rc::default(), false)
}

fn tables_holding(
    fail_at: Option<(usize, i32)>,
    rules: Rules,
    adopting: bool,
) -> (PolicyMaps, Rules, Rc<RefCell<Option<ActivePolicy>>>) {
    let aliases = FakeTable {
        entries: Rc::default(),
        inserts: 0,
        fail_at: None,
    };
    tables_with(fail_at, rules, aliases, adopting)
}

fn tables_with(
    fail_at: Option<(usize, i32)>,
    rules: Rules,
    aliases: FakeTable<AliasKey, AliasValue>,
    adopting: bool,
) -> (PolicyMaps, Rules, Rc<RefCell<Option<ActivePolicy>>>) {
    let active = Rc::new(RefCell::new(None));
    let tables = Tables {
        rules: Box::new(FakeTable {
            entries: rules.clone(),
            inserts: 0,
            fail_at,
        }),
        prefixes: Box::new(FakeTable::<PrefixKey, u32> {
            entries: Rc::default(),
            inserts: 0,
            fail_at: None,
        }),
        globs: Box::new(FakeTable::<RuleKey, GlobList> {
            entries: Rc::default(),
            inserts: 0,
            fail_at: None,
        }),
        aliases: Box::new(aliases),
        exec_aliases: Box::new(FakeTable::<AliasKey, AliasValue> {
            entries: Rc::default(),
            inserts: 0,
            fail_at: None,
        }),
        active: Box::new(FakeActive(active.clone())),
    };
    (PolicyMaps::over(tables, adopting), rules, active)
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
        EnforcementUnavailable::not_permitted("load check_socket"),
    ];
    for failure in &lacking {
        assert!(failure.kernel_lacks_bpf_lsm(), "{failure}");
    }
}

type Aliases = Rc<RefCell<StdMap<AliasKey, AliasValue>>>;

/// Tables whose `FILE_ALIASES` map is `aliases` and fails its `fail_at`-th insert.
fn alias_tables(
    aliases: &Aliases,
    fail_at: Option<(usize, i32)>,
    adopting: bool,
) -> (PolicyMaps, Rules) {
    let table = FakeTable {
        entries: aliases.clone(),
        inserts: 0,
        fail_at,
    };
    let (maps, rules, _) = tables_with(None, Rc::default(), table, adopting);
    (maps, rules)
}

/// `set_of(1)` with alias entries for (ino, name) on device 8:1.
fn aliased(names: &[(u64, &str)]) -> KernelRuleSet {
    let mut set = set_of(1);
    for (ino, name) in names {
        set.aliases
            .names
            .insert((*ino, 8 << 20 | 1), (*name).to_owned());
    }
    set
}

/// (generation, ino, name) of every alias entry, sorted.
fn alias_contents(aliases: &Aliases) -> Vec<(u32, u64, String)> {
    let mut out: Vec<(u32, u64, String)> = aliases
        .borrow()
        .iter()
        .map(|(k, v)| {
            let name = &v.path[..v.len as usize];
            (
                k.generation,
                k.ino,
                String::from_utf8_lossy(name).into_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn aliases_are_swapped_with_the_rules_and_the_old_generation_deleted() {
    let aliases: Aliases = Rc::default();
    let (mut maps, _) = alias_tables(&aliases, None, false);
    maps.apply(aliased(&[(10, "/etc/shadow"), (11, "/etc/ro/")]))
        .expect("fits");
    assert_eq!(
        alias_contents(&aliases),
        [(1, 10, "/etc/shadow".into()), (1, 11, "/etc/ro/".into())]
    );
    assert!(aliases.borrow().keys().all(|k| k.dev == 8 << 20 | 1));
    maps.apply(aliased(&[(10, "/etc/shadow"), (12, "/etc/gshadow")]))
        .expect("fits");
    assert_eq!(
        alias_contents(&aliases),
        [
            (2, 10, "/etc/shadow".into()),
            (2, 12, "/etc/gshadow".into())
        ]
    );
}

#[test]
fn a_failed_alias_write_names_the_map_and_keeps_the_set_in_force() {
    let aliases: Aliases = Rc::default();
    let (mut maps, rules) = alias_tables(&aliases, Some((3, libc::ENOMEM)), false);
    maps.apply(aliased(&[(10, "/etc/shadow")])).expect("fits");
    let err = maps
        .apply(aliased(&[(10, "/etc/shadow"), (12, "/etc/gshadow")]))
        .expect_err("the third alias insert fails");
    assert_eq!(err.map, names::FILE_ALIASES);
    assert!(err.to_string().contains("ino: 12"), "{err}");
    assert!(
        err.to_string().contains(&format!("errno {}", libc::ENOMEM)),
        "{err}"
    );
    assert_eq!(maps.generation(), 1);
    assert_eq!(alias_contents(&aliases), [(1, 10, "/etc/shadow".into())]);
    assert!(rules.borrow().keys().all(|k| k.generation == 1));
}

#[test]
fn adopted_aliases_of_an_earlier_agent_are_counted_and_then_deleted() {
    let aliases: Aliases = Rc::default();
    let full = (0..u64::from(ALIASES_CAPACITY)).map(|i| (i, "/etc/f"));
    let earlier: Vec<(u64, &str)> = full.collect();
    for (k, v) in aliased(&earlier[..earlier.len() - 1]).alias_entries(7) {
        aliases.borrow_mut().insert(k, v);
    }
    let (mut maps, _) = alias_tables(&aliases, None, true);
    let err = maps
        .apply(aliased(&[(1, "/a"), (2, "/b")]))
        .expect_err("no room beside the earlier set");
    assert_eq!(err.map, names::FILE_ALIASES);
    let held = format!("holds {} until the switch", ALIASES_CAPACITY - 1);
    assert!(err.to_string().contains(&held), "{err}");
    maps.apply(aliased(&[(1, "/a")])).expect("one entry fits");
    assert_eq!(alias_contents(&aliases), [(1, 1, "/a".into())]);
}
