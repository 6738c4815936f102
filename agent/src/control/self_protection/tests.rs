//! Locked mode's protected paths, its policy and `run`'s refusals.

use super::*;
use edgearmor_policy::{DefaultPostures, compile};

fn config() -> AgentConfig {
    let mut c = AgentConfig::default();
    c.rules.push("/etc/edgearmor/rules.toml".into());
    c.policies.push("/etc/edgearmor/one-policy.yaml".into());
    c.fleet.public_keys.push("/etc/edgearmor/fleet.pub".into());
    c.offline.spool_dir = Some("/var/spool/edgearmor".into());
    c
}

#[test]
fn every_file_and_directory_the_agent_depends_on_is_protected() {
    let p = ProtectedPaths::of(
        &config(),
        Path::new("/etc/edgearmor/agent.toml"),
        Path::new("/usr/bin/edgearmor"),
    );
    for f in [
        "/usr/bin/edgearmor",
        "/etc/edgearmor/agent.toml",
        "/etc/edgearmor/rules.toml",
        "/etc/edgearmor/one-policy.yaml",
        "/etc/edgearmor/fleet.pub",
    ] {
        assert!(p.files.contains(&PathBuf::from(f)), "{f}: {p:?}");
    }
    for d in [
        "/sys/fs/bpf/edgearmor",
        "/var/lib/edgearmor/fleet",
        "/var/spool/edgearmor",
    ] {
        assert!(p.directories.contains(&PathBuf::from(d)), "{d}: {p:?}");
    }
    let ancestors = p.ancestors();
    for a in [
        "/etc",
        "/etc/edgearmor",
        "/usr/bin",
        "/sys/fs/bpf",
        "/var/lib",
    ] {
        assert!(ancestors.contains(&PathBuf::from(a)), "{a}: {ancestors:?}");
    }
    assert!(!ancestors.contains(&PathBuf::from("/")));
}

#[test]
fn the_policy_compiles_to_write_blocks_under_the_reserved_name() {
    let p = ProtectedPaths::of(
        &config(),
        Path::new("/etc/edgearmor/agent.toml"),
        Path::new("/usr/bin/edgearmor"),
    );
    let policies = p.policy().expect("parses");
    assert_eq!(policies.len(), 1);
    assert_eq!(policies[0].name, SELF_PROTECTION);
    let compiled = compile(&policies, DefaultPostures::default());
    // Every file, every ancestor and every directory: one rule each.
    let expected = p.files.len() + p.ancestors().len() + p.directories.len();
    assert_eq!(
        compiled.file.rules.len(),
        expected,
        "{:?}",
        compiled.file.rules
    );
    assert!(compiled.file.rules.iter().all(|r| r.matcher.read_only));
}

#[test]
fn a_path_no_rule_can_hold_is_an_error_naming_it() {
    let mut p = ProtectedPaths::default();
    p.files.push("relative/agent.toml".into());
    let err = p.policy_text().expect_err("relative");
    assert!(err.contains("relative/agent.toml"), "{err}");
    let mut p = ProtectedPaths::default();
    p.files.push("/etc/odd\"name".into());
    if let Err(e) = p.policy() {
        panic!("a quote is escaped: {e}");
    }
}

fn locked(config: (u64, u32)) -> LockState {
    LockIdentity {
        agent: (7, 0x800001),
        config,
    }
    .state(true, 0, 0x1c)
}

#[test]
fn a_locked_kernel_refuses_another_config_file_and_every_override() {
    let file = Path::new("/etc/edgearmor/agent.toml");
    let state = locked((42, 0x800001));
    assert_eq!(refusal(Some(&state), file, Some((42, 0x800001)), &[]), None);
    let other = refusal(
        Some(&state),
        Path::new("/tmp/a.toml"),
        Some((43, 0x800001)),
        &[],
    )
    .expect("another file");
    assert!(
        other.contains("/tmp/a.toml") && other.contains("inode 43"),
        "{other}"
    );
    let missing = refusal(Some(&state), file, None, &[]).expect("missing");
    assert!(missing.contains("does not exist"), "{missing}");
    let flags = refusal(
        Some(&state),
        file,
        Some((42, 0x800001)),
        &["policies".into(), "broker".into()],
    )
    .expect("overrides");
    assert!(flags.contains("--policies, --broker"), "{flags}");
}

#[test]
fn an_unlocked_kernel_refuses_nothing() {
    let file = Path::new("/etc/edgearmor/agent.toml");
    assert_eq!(refusal(None, file, None, &["policies".into()]), None);
    let mut state = locked((42, 1));
    state.locked = 0;
    assert_eq!(
        refusal(Some(&state), file, Some((1, 1)), &["rules".into()]),
        None
    );
}
