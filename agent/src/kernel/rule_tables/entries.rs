//! A built set as the kernel maps' entries, under one policy generation.

use edgearmor_probe_abi::{
    ALIAS_PATH_CAP, AliasKey, AliasValue, GLOBS_PER_KEY, GlobList, GlobRule, MATCH_DIRECTORY,
    PrefixKey, RuleKey, RuleValue,
};

use super::KernelRuleSet;

impl KernelRuleSet {
    /// Entries for `RULES` under `generation`.
    pub fn rule_entries(&self, generation: u32) -> impl Iterator<Item = (RuleKey, RuleValue)> + '_ {
        self.rules
            .iter()
            .map(move |(&(source, target, class, kind), v)| {
                (
                    RuleKey {
                        source,
                        target,
                        class,
                        kind,
                        generation,
                        _pad: 0,
                    },
                    *v,
                )
            })
    }

    /// Entries for `PREFIXES` under `generation`.
    pub fn prefix_entries(&self, generation: u32) -> impl Iterator<Item = (PrefixKey, u32)> + '_ {
        self.prefixes.iter().map(move |(&(prefix, class), flags)| {
            (
                PrefixKey {
                    prefix,
                    class,
                    generation,
                },
                *flags,
            )
        })
    }

    /// Entries for `GLOBS` under `generation`.
    pub fn glob_entries(&self, generation: u32) -> impl Iterator<Item = (RuleKey, GlobList)> + '_ {
        self.globs
            .iter()
            .map(move |(&(source, prefix, class), rules)| {
                let mut list = GlobList {
                    count: rules.len().min(GLOBS_PER_KEY) as u32,
                    _pad: 0,
                    rules: [GlobRule::EMPTY; GLOBS_PER_KEY],
                };
                for (slot, rule) in list.rules.iter_mut().zip(rules) {
                    *slot = *rule;
                }
                (
                    RuleKey {
                        source,
                        target: prefix,
                        class,
                        kind: MATCH_DIRECTORY,
                        generation,
                        _pad: 0,
                    },
                    list,
                )
            })
    }

    /// Entries for `FILE_ALIASES` under `generation` (names are within
    /// `ALIAS_PATH_CAP - 1` bytes: longer ones refuse the set when it is built).
    pub fn alias_entries(
        &self,
        generation: u32,
    ) -> impl Iterator<Item = (AliasKey, AliasValue)> + '_ {
        table_entries(&self.aliases, generation)
    }

    /// Entries for `EXEC_ALIASES` under `generation`, as [`Self::alias_entries`].
    pub fn exec_alias_entries(
        &self,
        generation: u32,
    ) -> impl Iterator<Item = (AliasKey, AliasValue)> + '_ {
        table_entries(&self.exec_aliases, generation)
    }
}

/// The map entries of an alias table under `generation`.
fn table_entries(
    table: &super::AliasTable,
    generation: u32,
) -> impl Iterator<Item = (AliasKey, AliasValue)> + '_ {
    table.names.iter().map(move |(&(ino, dev), name)| {
        let mut value = AliasValue {
            len: 0,
            _pad: 0,
            path: [0; ALIAS_PATH_CAP],
        };
        let bytes = &name.as_bytes()[..name.len().min(ALIAS_PATH_CAP - 1)];
        value.path[..bytes.len()].copy_from_slice(bytes);
        value.len = bytes.len() as u32;
        (
            AliasKey {
                ino,
                dev,
                generation,
            },
            value,
        )
    })
}
