//! `edgearmor policy check` and node labels: which policies select a gateway named
//! on the command line (`--host=NAME`, `--label`, `--config agent.toml`), the
//! namespace warning, and kernel limits counted for label-selected policies on
//! every host.

use std::path::{Path, PathBuf};
use std::process::Command;

fn check(args: &[&str], paths: &[&Path]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_edgearmor"))
        .args(["policy", "check"])
        .args(args)
        .args(paths)
        .output()
        .expect("edgearmor runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn policy_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ea-labels-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn policy(name: &str, labels: &str, body: &str) -> String {
    format!(
        "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorHostPolicy\nmetadata:\n  name: {name}\nspec:\n  nodeSelector:\n    matchLabels:\n{labels}{body}  action: Block\n"
    )
}

const BODY: &str = "  process:\n    matchPaths:\n      - path: /usr/bin/apt\n";

#[test]
fn a_named_gateway_with_labels_shows_which_policies_select_it() {
    let dir = policy_dir("select");
    std::fs::write(
        dir.join("a.yaml"),
        policy("plant-7", "      site: plant-7\n", BODY),
    )
    .expect("write");
    std::fs::write(
        dir.join("b.yaml"),
        policy(
            "gw-7-edge",
            "      kubernetes.io/hostname: gw-7\n      role: edge\n",
            BODY,
        ),
    )
    .expect("write");
    std::fs::write(
        dir.join("c.yaml"),
        policy("plant-8", "      site: plant-8\n", BODY),
    )
    .expect("write");
    let (ok, stdout, _) = check(
        &[
            "--host=gw-7",
            "--label",
            "site=plant-7",
            "--label",
            "role=edge",
        ],
        &[&dir],
    );
    assert!(ok, "{stdout}");
    let d = dir.display();
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            format!(
                "{d}/a.yaml:1: policy \"plant-7\" selects host \"gw-7\" (labels role=edge,site=plant-7)"
            ),
            format!(
                "{d}/b.yaml:1: policy \"gw-7-edge\" selects host \"gw-7\" (labels role=edge,site=plant-7)"
            ),
            format!(
                "{d}/c.yaml:1: policy \"plant-8\" selects nodes with site=plant-8, not host \"gw-7\" (labels role=edge,site=plant-7): skipped"
            ),
        ]
    );
    // The same node from agent.toml; --label wins over its [labels].
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        "node = \"gw-7\"\n[labels]\nsite = \"plant-8\"\nrole = \"edge\"\n",
    )
    .expect("write");
    let config_arg = config.to_str().expect("UTF-8");
    let (ok, stdout, _) = check(&["--config", config_arg], &[&dir]);
    assert!(ok, "{stdout}");
    assert!(
        stdout.contains("policy \"plant-8\" selects host \"gw-7\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("policy \"gw-7-edge\" selects host"),
        "{stdout}"
    );
    assert!(
        stdout.contains("policy \"plant-7\" selects nodes with site=plant-7, not"),
        "{stdout}"
    );
    let (_, stdout, _) = check(
        &["--config", config_arg, "--label", "site=plant-7"],
        &[&dir],
    );
    assert!(
        stdout.contains("policy \"plant-7\" selects host \"gw-7\""),
        "{stdout}"
    );
    // A bad agent.toml is a problem, named.
    std::fs::write(&config, "[labels]\nsite = \"plant 7\"\n").expect("write");
    let (ok, stdout, _) = check(&["--config", config_arg], &[&dir]);
    assert!(!ok);
    assert!(
        stdout.contains("agent.toml: labels.\"site\": value \"plant 7\""),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn metadata_namespace_is_a_warning_not_a_problem() {
    let dir = policy_dir("namespace");
    let text = policy("ns", "      kubearmor.io/hostname: \"*\"\n", BODY)
        .replace("  name: ns\n", "  name: ns\n  namespace: default\n");
    std::fs::write(dir.join("p.yaml"), text).expect("write");
    let (ok, stdout, stderr) = check(&[], &[&dir]);
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(
        stdout.trim(),
        format!(
            "warning: {}/p.yaml:5: metadata.namespace: metadata.namespace \"default\" is ignored: a KubeArmorHostPolicy is cluster-scoped",
            dir.display()
        )
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn label_selected_policies_count_in_every_hosts_set() {
    let limit = edgearmor_probe_abi::RULES_CAPACITY as usize / 2;
    let dir = policy_dir("limits");
    let paths = |prefix: &str, n: usize| -> String {
        let mut body = String::from("  file:\n    matchPaths:\n");
        for i in 0..n {
            body.push_str(&format!("      - path: /opt/{prefix}{i}\n"));
        }
        body
    };
    // Exactly the limit for every host (one entry is the undecidable one) ...
    let every = policy(
        "many",
        "      kubearmor.io/hostname: \"*\"\n",
        &paths("f", limit - 1),
    );
    std::fs::write(dir.join("p.yaml"), every).expect("write");
    let (ok, stdout, _) = check(&[], &[&dir]);
    assert!(ok, "{stdout}");
    // ... and one more for the nodes labelled site=plant-7, whichever they are.
    let labelled = policy("plant-7", "      site: plant-7\n", &paths("extra", 1));
    std::fs::write(dir.join("q.yaml"), labelled).expect("write");
    let (ok, stdout, _) = check(&[], &[&dir]);
    assert!(!ok, "{stdout}");
    assert!(
        stdout.contains(&format!("({} needed)", limit + 1))
            && stdout.contains(&format!("RULES_PER_SET = {limit}")),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
