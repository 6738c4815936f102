//! The fuzz harness's entry point (`fuzz/fuzz_targets/policy_check.rs`), here so the
//! fuzz target, the regression test of checked-in inputs and anyone reproducing a
//! crash run exactly the same code.
//!
//! An input is the bytes of one policy file (not UTF-8: read lossily, as the bytes
//! then still reach the YAML parser). It is checked like `edgearmor policy check`
//! does, and what passes is compiled. Every invariant below panics when broken,
//! which is what the fuzzer looks for:
//!
//! - refused text gets between 1 and [`MAX_DIAGNOSTICS_PER_FILE`] + 1 diagnostics,
//!   in line order, each on a line of the text as YAML counts lines (LF, CRLF or a
//!   bare CR; 0 for the whole file), each with a message;
//! - accepted text compiles; compiling twice gives the same set and hash; every
//!   rule's policy has metadata; a class is in allow-list mode exactly when one of
//!   its rules allows.

use std::path::Path;

use crate::limits::MAX_DIAGNOSTICS_PER_FILE;
use crate::{
    Action, CompiledPolicySet, DefaultPosture, DefaultPostures, compile, parse_policy_text,
};

/// Checks (and compiles) one input; panics if an invariant breaks.
pub fn run_input(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let file = Path::new("fuzz.yaml");
    match parse_policy_text(file, &text) {
        Err(diagnostics) => check_diagnostics(&text, &diagnostics),
        Ok(policies) => {
            let mut postures = DefaultPostures::uniform(DefaultPosture::Audit);
            postures.file = DefaultPosture::Block;
            let set = compile(&policies, postures);
            assert_eq!(
                set,
                compile(&policies, postures),
                "compiling is deterministic"
            );
            check_compiled(&set);
        }
    }
}

fn check_diagnostics(text: &str, diagnostics: &[crate::Diagnostic]) {
    assert!(!diagnostics.is_empty(), "a refusal says why");
    assert!(
        diagnostics.len() <= MAX_DIAGNOSTICS_PER_FILE + 1,
        "{} diagnostics",
        diagnostics.len()
    );
    // Lines as YAML counts them (a bare CR breaks a line too), plus one: at the end
    // of a text without a final line break the parser points at the line after.
    let crlf = text.matches("\r\n").count();
    let breaks = text.matches('\n').count() + text.matches('\r').count() - crlf;
    let lines = breaks + 2;
    let listed = diagnostics.len().min(MAX_DIAGNOSTICS_PER_FILE);
    for pair in diagnostics[..listed].windows(2) {
        assert!(
            (pair[0].line, pair[0].column) <= (pair[1].line, pair[1].column),
            "in line order: {} then {}",
            pair[0],
            pair[1]
        );
    }
    for d in diagnostics {
        assert!(d.line <= lines, "line {} of {lines}: {d}", d.line);
        assert!(!d.message().is_empty(), "{d:?} has a message");
    }
}

fn check_compiled(set: &CompiledPolicySet) {
    let ids = set
        .process
        .rules
        .iter()
        .map(|r| (r.policy_id, r.action))
        .chain(set.file.rules.iter().map(|r| (r.policy_id, r.action)))
        .chain(set.network.rules.iter().map(|r| (r.policy_id, r.action)))
        .chain(
            set.capabilities
                .rules
                .iter()
                .map(|r| (r.policy_id, r.action)),
        )
        .chain(set.setid.iter().map(|r| (r.policy_id, r.action)));
    for (id, _) in ids {
        assert!(set.metadata(id).is_some(), "rule of unknown policy {id:?}");
    }
    assert_eq!(
        set.process.allow_list,
        set.process.rules.iter().any(|r| r.action == Action::Allow)
    );
    assert_eq!(
        set.file.allow_list,
        set.file.rules.iter().any(|r| r.action == Action::Allow)
    );
    assert_eq!(
        set.network.allow_list,
        set.network.rules.iter().any(|r| r.action == Action::Allow)
    );
    assert_eq!(
        set.capabilities.allow_list,
        set.capabilities
            .rules
            .iter()
            .any(|r| r.action == Action::Allow)
    );
    assert!(
        !set.setid.iter().any(|r| r.action == Action::Allow),
        "setid rules never allow"
    );
}
