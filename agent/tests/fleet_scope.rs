//! A bundle's scope is signed: the real `edgearmor run` with a real mosquitto refuses
//! a fleet bundle replayed on its node topic (and a node bundle on the fleet topic),
//! reporting both scopes on `.../policy/reported`, while the same fleet bundle on the
//! fleet topic passes every check.
//!
//! On a machine where BPF-LSM cannot run, `run` watches monitor-only and cannot swap
//! policies in, so a bundle that passed every check is reported rejected for exactly
//! that reason; with enforcement it is applied. Either way the scope check comes
//! first, so its refusals are the same.

use std::path::{Path, PathBuf};
use std::process::Command;

use edgearmor_bundle::{
    BundleBody, BundleFile, Scope, SigningKey, create, generate_keypair, parse_secret_key,
};
use edgearmor_vm::broker::{Broker, Subscriber, free_port, wait_for};
use edgearmor_vm::process::WatchedProcess;
use serde_json::Value;

const POLICY: &str = "apiVersion: security.kubearmor.com/v1
kind: KubeArmorHostPolicy
metadata:
  name: fleet-block-ls
spec:
  nodeSelector:
    matchLabels:
      kubearmor.io/hostname: \"*\"
  process:
    matchPaths:
      - path: /usr/bin/ls
  action: Block
";

fn scratch(name: &str) -> PathBuf {
    edgearmor_vm::broker::scratch(Path::new(env!("CARGO_TARGET_TMPDIR")), name)
}

fn bundle(key: &SigningKey, version: u64, scope: Scope, targets: &[&str]) -> Vec<u8> {
    let body = BundleBody {
        version,
        created_unix: 1_800_000_000,
        targets: targets.iter().map(|t| t.to_string()).collect(),
        files: vec![BundleFile {
            name: "ls.yaml".into(),
            contents: POLICY.as_bytes().to_vec(),
        }],
        scope,
    };
    create(key, &body).expect("a valid bundle")
}

/// The `n`-th report (0-based) on gw-1's `policy/reported`, once it has arrived.
fn report(sub: &Subscriber, n: usize) -> Value {
    wait_for("the bundle report", || {
        sub.on_topic("site/gw-1/policy/reported").len() > n
    });
    let (payload, _) = sub.on_topic("site/gw-1/policy/reported").remove(n);
    serde_json::from_slice(&payload).expect("report is JSON")
}

#[test]
fn a_replayed_fleet_bundle_on_a_node_topic_is_refused_naming_both_scopes() {
    let dir = scratch("fleet-scope");
    let port = free_port();
    let _broker = Broker::start(&dir, port, "");
    let sub = Subscriber::connect(port, "fleet-scope-sub");

    let (secret, public) = generate_keypair().expect("key pair");
    let key = parse_secret_key(secret.as_str()).expect("secret key");
    let public_path = dir.join("fleet.pub");
    std::fs::write(&public_path, format!("{}\n", public.as_str())).expect("public key");
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "cluster = \"site\"\nnode = \"gw-1\"\npin_dir = \"\"\n[output]\nstdout = false\n\
             [mqtt]\nbroker = \"127.0.0.1:{port}\"\n\
             [fleet]\npublic_keys = [\"{}\"]\nstate_dir = \"{}\"\n",
            public_path.display(),
            dir.join("state").display()
        ),
    )
    .expect("agent.toml");
    let mut command = Command::new(env!("CARGO_BIN_EXE_edgearmor"));
    command
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info");
    let agent = WatchedProcess::spawn(command);
    agent.wait_stderr("edgearmor: ready:");
    wait_for("the agent online", || {
        sub.on_topic("site/gw-1/status")
            .iter()
            .any(|(p, _)| String::from_utf8_lossy(p).contains("\"online\""))
    });
    let monitor_only = agent.stderr().contains("ready: monitor-only");

    let fleet_topic = "edgearmor/site/policy";
    let node_topic = "edgearmor/site/gw-1/policy";
    let fleet_v2 = bundle(&key, 2, Scope::Fleet, &[]);

    // 1. The fleet bundle replayed on the node's topic.
    sub.publish_retained(node_topic, fleet_v2.clone());
    let replayed = report(&sub, 0);
    assert_eq!(replayed["result"], "rejected", "{replayed}");
    assert_eq!(replayed["scope"], "node");
    assert_eq!(replayed["version"], 2);
    let reason = replayed["reason"].as_str().expect("reason");
    assert!(
        reason.contains("signed scope fleet") && reason.contains("node topic"),
        "{reason}"
    );

    // 2. A node bundle on the fleet topic.
    sub.publish_retained(fleet_topic, bundle(&key, 3, Scope::Node, &["gw-1"]));
    let misrouted = report(&sub, 1);
    assert_eq!(misrouted["result"], "rejected", "{misrouted}");
    let reason = misrouted["reason"].as_str().expect("reason");
    assert!(
        reason.contains("signed scope node") && reason.contains("fleet topic"),
        "{reason}"
    );

    // 3. The same fleet bundle where it belongs passes every check: applied, or on
    //    a kernel without BPF-LSM refused only because policies cannot be swapped in.
    sub.publish_retained(fleet_topic, fleet_v2);
    let proper = report(&sub, 2);
    assert_eq!(proper["scope"], "fleet");
    if monitor_only {
        assert_eq!(proper["result"], "rejected", "{proper}");
        assert_eq!(
            proper["reason"],
            "monitor-only mode: policies cannot be reloaded here"
        );
    } else {
        assert_eq!(proper["result"], "applied", "{proper}");
    }
    // The last report is the retained one a newcomer gets.
    let late = Subscriber::connect(port, "fleet-scope-late");
    let retained = report(&late, 0);
    assert_eq!(
        (&retained["version"], &retained["scope"]),
        (&proper["version"], &proper["scope"])
    );
    let log = agent.stderr();
    assert!(
        log.contains("bundle v2 from the node topic rejected: signed scope fleet"),
        "{log}"
    );
}
