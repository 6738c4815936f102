//! Node labels end to end, with the real `edgearmor run` and a real mosquitto: the
//! birth message carries the `[labels]` of `agent.toml`, a fleet bundle targeted at
//! labels (`site=plant-7`) is taken up by the agent whose labels match and refused,
//! reported on its `.../policy/reported`, by one whose labels do not; and of the
//! policies (the agent's own, and where it can enforce the bundle's too) those
//! selecting other labels are skipped while those selecting this node's labels load.
//!
//! The bundle's policies only audit paths nothing runs, so where BPF-LSM enforces on
//! the test machine nothing it does changes. Where `run` is monitor-only, a bundle
//! that passed every check is reported rejected for exactly that reason (as in
//! `fleet_scope`); the label refusal comes before that check either way.

use std::path::{Path, PathBuf};
use std::process::Command;

use edgearmor_bundle::{
    BundleBody, BundleFile, Scope, SigningKey, create, generate_keypair, parse_secret_key,
};
use edgearmor_vm::broker::{Broker, Subscriber, free_port, wait_for};
use edgearmor_vm::process::WatchedProcess;
use serde_json::Value;

/// An audit-only policy for the nodes with `labels` (YAML `matchLabels` lines).
fn policy(name: &str, labels: &str) -> BundleFile {
    BundleFile {
        name: format!("{name}.yaml"),
        contents: format!(
            "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorHostPolicy\nmetadata:\n  \
             name: {name}\n  namespace: kube-system\nspec:\n  nodeSelector:\n    matchLabels:\n\
             {labels}  process:\n    matchPaths:\n      - path: /usr/bin/edgearmor-labels-test-never-run\n  \
             action: Audit\n"
        )
        .into_bytes(),
    }
}

fn scratch(name: &str) -> PathBuf {
    edgearmor_vm::broker::scratch(Path::new(env!("CARGO_TARGET_TMPDIR")), name)
}

/// The same three policies for the agent's own policy directory and the bundle:
/// for plant-7, for plant-8, and for host gw-1 with role edge.
fn policies() -> Vec<BundleFile> {
    vec![
        policy("plant-7-audit", "      site: plant-7\n"),
        policy("plant-8-audit", "      site: plant-8\n"),
        policy(
            "gw-1-edge-audit",
            "      kubernetes.io/hostname: gw-1\n      role: edge\n",
        ),
    ]
}

/// What gw-1 (site plant-7, role edge) logs when it loads [`policies`].
const GW1_SELECTION: [&str; 3] = [
    "policy \"plant-8-audit\" selects nodes with site=plant-8, not host \"gw-1\" (labels role=edge,site=plant-7): skipped",
    "2 policies [gw-1-edge-audit,plant-7-audit]",
    "metadata.namespace \"kube-system\" is ignored: a KubeArmorHostPolicy is cluster-scoped",
];

/// `edgearmor run` as node `node` of cluster `site` with `labels` (TOML table body)
/// and [`policies`] in its own policy directory.
fn start_agent(dir: &Path, port: u16, public: &Path, node: &str, labels: &str) -> WatchedProcess {
    let local = dir.join(format!("policies-{node}"));
    std::fs::create_dir_all(&local).expect("policy dir");
    for file in policies() {
        std::fs::write(local.join(&file.name), &file.contents).expect("policy");
    }
    let config = dir.join(format!("{node}.toml"));
    std::fs::write(
        &config,
        format!(
            "cluster = \"site\"\nnode = \"{node}\"\npin_dir = \"\"\npolicies = [\"{}\"]\n\
             [labels]\n{labels}[output]\nstdout = false\n[mqtt]\nbroker = \"127.0.0.1:{port}\"\n\
             [fleet]\npublic_keys = [\"{}\"]\nstate_dir = \"{}\"\n",
            local.display(),
            public.display(),
            dir.join(format!("state-{node}")).display()
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
    agent
}

/// The retained online birth message of `node`, once it has arrived.
fn birth(sub: &Subscriber, node: &str) -> Value {
    let topic = format!("site/{node}/status");
    wait_for("the agent online", || {
        sub.on_topic(&topic)
            .iter()
            .any(|(p, _)| String::from_utf8_lossy(p).contains("\"online\""))
    });
    let (payload, _) = sub
        .on_topic(&topic)
        .into_iter()
        .rfind(|(p, _)| String::from_utf8_lossy(p).contains("\"online\""))
        .expect("online status");
    serde_json::from_slice(&payload).expect("status is JSON")
}

/// The first report on `node`'s `policy/reported`, once it has arrived.
fn report(sub: &Subscriber, node: &str) -> Value {
    let topic = format!("site/{node}/policy/reported");
    wait_for("the bundle report", || !sub.on_topic(&topic).is_empty());
    let (payload, _) = sub.on_topic(&topic).remove(0);
    serde_json::from_slice(&payload).expect("report is JSON")
}

#[test]
fn a_label_targeted_bundle_applies_where_the_labels_match_and_is_refused_elsewhere() {
    let dir = scratch("fleet-labels");
    let port = free_port();
    let _broker = Broker::start(&dir, port, "");
    let sub = Subscriber::connect(port, "fleet-labels-sub");
    let (secret, public) = generate_keypair().expect("key pair");
    let key: SigningKey = parse_secret_key(secret.as_str()).expect("secret key");
    let public_path = dir.join("fleet.pub");
    std::fs::write(&public_path, format!("{}\n", public.as_str())).expect("public key");

    // A plant-7 edge gateway: its birth message names its labels.
    let mut matching = start_agent(
        &dir,
        port,
        &public_path,
        "gw-1",
        "site = \"plant-7\"\nrole = \"edge\"\n",
    );
    let status = birth(&sub, "gw-1");
    assert_eq!(
        status["labels"],
        serde_json::json!({"role": "edge", "site": "plant-7"}),
        "{status}"
    );
    let monitor_only = matching.stderr().contains("ready: monitor-only");
    let log = matching.stderr();
    for line in GW1_SELECTION {
        assert!(log.contains(line), "{line}\n{log}");
    }

    let body = BundleBody {
        version: 2,
        created_unix: 1_800_000_000,
        targets: vec!["site=plant-7,role=edge".into()],
        files: policies()
            .into_iter()
            .map(|f| BundleFile {
                name: format!("bundle-{}", f.name),
                contents: String::from_utf8(f.contents)
                    .expect("UTF-8")
                    .replace("-audit\n", "-bundle-audit\n")
                    .into_bytes(),
            })
            .collect(),
        scope: Scope::Fleet,
    };
    let bytes = create(&key, &body).expect("a valid bundle");
    sub.publish_retained("edgearmor/site/policy", bytes);

    let taken = report(&sub, "gw-1");
    assert_eq!(taken["version"], 2, "{taken}");
    if monitor_only {
        assert_eq!(taken["result"], "rejected", "{taken}");
        assert_eq!(
            taken["reason"],
            "monitor-only mode: policies cannot be reloaded here"
        );
    } else {
        assert_eq!(taken["result"], "applied", "{taken}");
        // The reload selected the bundle's policies by labels too.
        matching.wait_stderr(
            "policy \"plant-8-bundle-audit\" selects nodes with site=plant-8, not host \"gw-1\"",
        );
        matching.wait_stderr(
            "4 policies [gw-1-edge-audit,gw-1-edge-bundle-audit,plant-7-audit,plant-7-bundle-audit]",
        );
    }
    matching.terminate();
    matching.wait_success();

    // A plant-8 gateway gets the same retained fleet bundle and refuses it.
    let other = start_agent(
        &dir,
        port,
        &public_path,
        "gw-2",
        "site = \"plant-8\"\nrole = \"edge\"\n",
    );
    assert_eq!(birth(&sub, "gw-2")["labels"]["site"], "plant-8");
    // Only the plant-8 policy is for gw-2.
    let log = other.stderr();
    assert!(log.contains("1 policies [plant-8-audit]"), "{log}");
    let refused = report(&sub, "gw-2");
    assert_eq!(refused["result"], "rejected", "{refused}");
    assert_eq!(refused["version"], 2);
    assert_eq!(
        refused["reason"],
        "targets [\"site=plant-7,role=edge\"] do not include site/gw-2 (labels: role=edge,site=plant-8)"
    );
    wait_for("the refusal logged", || {
        other.stderr().contains("rejected: targets")
    });
}

#[test]
fn bundle_create_refuses_a_label_target_no_node_can_have() {
    let dir = scratch("fleet-labels-create");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_edgearmor"))
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("edgearmor runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stderr) = run(&["keygen", "--out", "fleet"]);
    assert!(ok, "{stderr}");
    let file = policy("plant-7-audit", "      site: plant-7\n");
    std::fs::write(dir.join(&file.name), &file.contents).expect("policy");
    let create = |targets: &str| {
        run(&[
            "bundle",
            "create",
            "--key",
            "fleet.key",
            "--version",
            "1",
            "--targets",
            targets,
            "--out",
            "b.bundle",
            &file.name,
        ])
    };
    let (ok, stderr) = create("site=plant 7");
    assert!(!ok);
    assert!(
        stderr.contains("target \"site=plant 7\": label \"site\": value \"plant 7\""),
        "{stderr}"
    );
    assert!(!dir.join("b.bundle").exists());
    let (ok, stderr) = create("site=plant-7,role=edge");
    assert!(ok, "{stderr}");
    assert!(dir.join("b.bundle").exists());
}
