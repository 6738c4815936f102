//! The setuid/setgid rule set: which executables may not (Block) or may only visibly
//! (Audit) change their uid or gid. Rules come from `--deny-setuid`/`--deny-setgid`
//! flags and a small TOML file (KubeArmorHostPolicy `syscalls` sections go through
//! the policy compiler instead).
//!
//! ```toml
//! [[setid]]
//! executable = "/usr/sbin/sshd"
//! deny = ["setgid", "setuid"]
//! policy = "block-sshd-setid"   # PolicyName in alerts
//! severity = 8                  # optional, 1..10
//! tags = ["NIST", "MITRE_T1548"]
//! message = "sshd may not change its ids"
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use edgearmor_probe_abi::MAX_HASHED_PATH_BYTES;
use edgearmor_wire::{MAX_MESSAGE_BYTES, MAX_POLICY_NAME_BYTES, MAX_TAGS_BYTES, SetidKind};
use serde::Deserialize;

use crate::limits::{CappedReadError, MAX_RULES_FILE_BYTES, read_text_capped};

/// Policy name used when a rule does not name one.
pub const DEFAULT_POLICY_NAME: &str = "edgearmor-setid";

/// One rule: which calls of which executable, and the metadata its alerts carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetidRule {
    /// `None`: every executable (a policy rule without `fromSource`).
    pub executable: Option<String>,
    /// Syscall bits (`setid_bit`) denied.
    pub deny_mask: u32,
    /// Syscall bits allowed but reported.
    pub audit_mask: u32,
    pub policy: String,
    pub severity: Option<u8>,
    pub tags: Vec<String>,
    pub message: String,
}

impl SetidRule {
    /// The metadata its alerts carry, as the policy table holds it.
    pub fn policy_meta(&self) -> edgearmor_wire::PolicyMeta {
        use crate::events::enrich::bounded;
        edgearmor_wire::PolicyMeta {
            name: bounded(&self.policy),
            severity: self.severity.unwrap_or(0),
            tags: bounded(&self.tags.join(",")),
            message: bounded(&self.message),
        }
    }
}

/// The rules in load order; a rule's index is the `rule_id` the kernel echoes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetidRuleSet {
    pub rules: Vec<SetidRule>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Larger than [`MAX_RULES_FILE_BYTES`]: refused unread.
    #[error("{}: {source}", path.display())]
    TooLarge {
        path: PathBuf,
        source: CappedReadError,
    },
    /// TOML syntax or shape error; `message` already names line and column.
    #[error("{}: {}", path.display(), message.trim_end())]
    Parse { path: PathBuf, message: String },
    #[error("{origin}: executable `{executable}` is not an absolute path")]
    NotAbsolute { origin: String, executable: String },
    #[error("{origin}: executable `{executable}` is longer than {MAX_HASHED_PATH_BYTES} bytes")]
    TooLong { origin: String, executable: String },
    #[error("{origin}: unknown operation `{operation}` in deny (expected `setuid` or `setgid`)")]
    UnknownOperation { origin: String, operation: String },
    #[error("{origin}: rule for `{executable}` denies nothing (deny = [])")]
    EmptyDeny { origin: String, executable: String },
    #[error("{origin}: severity {severity} is outside 1..10")]
    BadSeverity { origin: String, severity: i64 },
    /// A metadata field longer than alerts can carry.
    #[error("{origin}: {field} is longer than {limit} bytes")]
    FieldTooLong {
        origin: String,
        field: &'static str,
        limit: usize,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    setid: Vec<RuleEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleEntry {
    executable: String,
    deny: Vec<String>,
    policy: Option<String>,
    severity: Option<i64>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    message: String,
}

impl SetidRuleSet {
    /// Adds the rules of a TOML file; nothing is added when any rule in it is bad.
    /// Files larger than [`MAX_RULES_FILE_BYTES`] are refused unread.
    pub fn add_file(&mut self, path: &Path) -> Result<(), RuleError> {
        let text =
            read_text_capped(path, MAX_RULES_FILE_BYTES, "MAX_RULES_FILE_BYTES").map_err(|e| {
                match e {
                    CappedReadError::Io(source) => RuleError::Read {
                        path: path.to_owned(),
                        source,
                    },
                    source => RuleError::TooLarge {
                        path: path.to_owned(),
                        source,
                    },
                }
            })?;
        self.add_toml(path, &text)
    }

    pub fn add_toml(&mut self, path: &Path, text: &str) -> Result<(), RuleError> {
        let file: RuleFile = toml::from_str(text).map_err(|e| RuleError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let mut staged = Vec::with_capacity(file.setid.len());
        for (i, entry) in file.setid.into_iter().enumerate() {
            let origin = format!("{}: setid[{i}]", path.display());
            let mut mask = 0;
            for op in &entry.deny {
                mask |= operation_mask(&origin, op)?;
            }
            if mask == 0 {
                return Err(RuleError::EmptyDeny {
                    origin,
                    executable: entry.executable,
                });
            }
            let severity = match entry.severity {
                None => None,
                Some(s @ 1..=10) => Some(s as u8),
                Some(severity) => return Err(RuleError::BadSeverity { origin, severity }),
            };
            check_executable(&origin, &entry.executable)?;
            let policy = entry
                .policy
                .unwrap_or_else(|| DEFAULT_POLICY_NAME.to_owned());
            for (field, len, limit) in [
                ("policy", policy.len(), MAX_POLICY_NAME_BYTES),
                ("tags", entry.tags.join(",").len(), MAX_TAGS_BYTES),
                ("message", entry.message.len(), MAX_MESSAGE_BYTES),
            ] {
                if len > limit {
                    return Err(RuleError::FieldTooLong {
                        origin,
                        field,
                        limit,
                    });
                }
            }
            staged.push(SetidRule {
                executable: Some(entry.executable),
                deny_mask: mask,
                audit_mask: 0,
                policy,
                severity,
                tags: entry.tags,
                message: entry.message,
            });
        }
        self.push_all(staged);
        Ok(())
    }

    /// Adds a command-line rule (`--deny-setgid PATH`).
    pub fn add_flag(
        &mut self,
        flag: &str,
        operation: &str,
        executable: &str,
    ) -> Result<(), RuleError> {
        let origin = format!("--{flag}");
        let mask = operation_mask(&origin, operation)?;
        check_executable(&origin, executable)?;
        self.push(SetidRule {
            executable: Some(executable.to_owned()),
            deny_mask: mask,
            audit_mask: 0,
            policy: DEFAULT_POLICY_NAME.to_owned(),
            severity: None,
            tags: Vec::new(),
            message: String::new(),
        });
        Ok(())
    }

    /// A second rule for the same executable widens the first; its metadata stays.
    fn push(&mut self, rule: SetidRule) {
        self.push_all([rule]);
    }

    /// Adds rules, merging those for an executable already present into its rule:
    /// one pass with an index, so a file of thousands of rules costs no more than
    /// reading them.
    fn push_all(&mut self, rules: impl IntoIterator<Item = SetidRule>) {
        let mut index: HashMap<Option<String>, usize> = self
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| (r.executable.clone(), i))
            .collect();
        for rule in rules {
            match index.get(&rule.executable) {
                Some(&i) => self.rules[i].deny_mask |= rule.deny_mask,
                None => {
                    index.insert(rule.executable.clone(), self.rules.len());
                    self.rules.push(rule);
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn get(&self, rule_id: u32) -> Option<&SetidRule> {
        self.rules.get(rule_id as usize)
    }
}

fn operation_mask(origin: &str, op: &str) -> Result<u32, RuleError> {
    match op {
        "setuid" => Ok(SetidKind::User.kernel_mask()),
        "setgid" => Ok(SetidKind::Group.kernel_mask()),
        other => Err(RuleError::UnknownOperation {
            origin: origin.to_owned(),
            operation: other.to_owned(),
        }),
    }
}

fn check_executable(origin: &str, executable: &str) -> Result<(), RuleError> {
    if !executable.starts_with('/') {
        return Err(RuleError::NotAbsolute {
            origin: origin.to_owned(),
            executable: executable.to_owned(),
        });
    }
    if executable.len() > MAX_HASHED_PATH_BYTES {
        return Err(RuleError::TooLong {
            origin: origin.to_owned(),
            executable: executable.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETID_ALL_UID: u32 = 0x0f;
    const SETID_ALL_GID: u32 = 0xf0;

    fn parse(text: &str) -> Result<SetidRuleSet, RuleError> {
        let mut set = SetidRuleSet::default();
        set.add_toml(Path::new("rules.toml"), text)?;
        Ok(set)
    }

    #[test]
    fn parses_rules_with_metadata_and_defaults() {
        let set = parse(
            r#"
            [[setid]]
            executable = "/usr/sbin/sshd"
            deny = ["setgid", "setuid"]
            policy = "block-sshd"
            severity = 8
            tags = ["NIST", "MITRE"]
            message = "no"

            [[setid]]
            executable = "/usr/bin/su"
            deny = ["setuid"]
            "#,
        )
        .expect("valid");
        assert_eq!(set.rules.len(), 2);
        assert_eq!(set.rules[0].deny_mask, SETID_ALL_GID | SETID_ALL_UID);
        assert_eq!(set.rules[0].severity, Some(8));
        assert_eq!(set.rules[1].policy, DEFAULT_POLICY_NAME);
        assert_eq!(set.rules[1].deny_mask, SETID_ALL_UID);
    }

    #[test]
    fn bad_rules_name_the_problem_and_where() {
        let cases = [
            (
                "[[setid]]\nexecutable = \"sshd\"\ndeny = [\"setgid\"]\n",
                "rules.toml: setid[0]: executable `sshd` is not an absolute path",
            ),
            (
                "[[setid]]\nexecutable = \"/a\"\ndeny = [\"chmod\"]\n",
                "rules.toml: setid[0]: unknown operation `chmod`",
            ),
            (
                "[[setid]]\nexecutable = \"/a\"\ndeny = []\n",
                "denies nothing",
            ),
            (
                "[[setid]]\nexecutable = \"/a\"\ndeny = [\"setuid\"]\nseverity = 42\n",
                "severity 42 is outside 1..10",
            ),
            (
                "[[setid]]\nexecutable = \"/a\"\ndeny = [\"setuid\"]\ncolour = 1\n",
                "unknown field `colour`",
            ),
            ("[[setid]\n", "line 1"),
            (
                "[[setid]]\nexecutable = \"/a\"\ndeny = [\"setuid\"]\npolicy = \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"\n",
                "policy is longer than 128 bytes",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(want), "{text:?}: got {err:?}, want {want:?}");
        }
    }

    #[test]
    fn an_oversized_rules_file_is_refused_unread_and_adds_nothing() {
        let dir = std::env::temp_dir().join(format!("edgearmor-rules-big-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("rules.toml");
        let file = std::fs::File::create(&path).expect("create");
        file.set_len(100 << 20).expect("sparse 100 MB");
        let mut set = SetidRuleSet::default();
        let err = set.add_file(&path).expect_err("too large");
        assert!(matches!(err, RuleError::TooLarge { .. }), "{err:?}");
        assert!(
            err.to_string().contains(
                "is 104857600 bytes; at most 262144 bytes are read (MAX_RULES_FILE_BYTES)"
            ),
            "{err}"
        );
        assert!(set.rules.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_bad_rule_adds_nothing_from_its_file() {
        let mut set = SetidRuleSet::default();
        set.add_flag("deny-setgid", "setgid", "/usr/sbin/sshd")
            .expect("valid");
        let err = set.add_toml(
            Path::new("r.toml"),
            "[[setid]]\nexecutable = \"/bin/a\"\ndeny = [\"setuid\"]\n[[setid]]\nexecutable = \"b\"\ndeny = [\"setuid\"]\n",
        );
        assert!(err.is_err());
        assert_eq!(
            set.rules.len(),
            1,
            "the good rule before the bad one must not be added"
        );
    }
}
