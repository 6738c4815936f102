//! The fuzz harness's entry point (`fuzz/fuzz_targets/agent_config.rs`), here so the
//! fuzz target, the regression test of checked-in inputs and anyone reproducing a
//! crash run exactly the same code.
//!
//! An input is the text of a TOML file (read lossily when not UTF-8), parsed both as
//! `agent.toml` and as a `[[setid]]` rules file. Every invariant below panics when
//! broken:
//!
//! - a configuration that parses passes its own validation, and parses the same
//!   twice; a refusal names the file;
//! - a rules file that is refused adds nothing (the rules already there stay as
//!   they were); one that is accepted adds only absolute executables.

use std::path::Path;

use crate::config::AgentConfig;
use crate::control::setid_rules::SetidRuleSet;

/// Parses one input both ways; panics if an invariant breaks.
pub fn run_input(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("fuzz.toml");
    match AgentConfig::parse(path, &text) {
        Ok(config) => {
            assert!(config.validate().is_ok(), "a parsed config is valid");
            let again = AgentConfig::parse(path, &text).expect("parses the same twice");
            assert_eq!(again, config);
        }
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with("config"), "{message}");
        }
    }

    let mut rules = SetidRuleSet::default();
    rules
        .add_flag("deny-setgid", "setgid", "/usr/sbin/sshd")
        .expect("a valid flag rule");
    let before = rules.rules.clone();
    match rules.add_toml(path, &text) {
        Err(e) => {
            assert_eq!(rules.rules, before, "a refused file adds nothing");
            assert!(e.to_string().starts_with("fuzz.toml"), "{e}");
        }
        Ok(()) => {
            for rule in &rules.rules {
                let executable = rule.executable.as_deref().unwrap_or("");
                assert!(executable.starts_with('/'), "{executable:?}");
            }
        }
    }
}
