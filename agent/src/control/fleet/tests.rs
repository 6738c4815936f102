//! Offers, scope, rollback and restarts with real signed bundles and state files.

use super::*;
use edgearmor_bundle::{BundleBody, BundleFile, SigningKey, create};

const POLICY: &str = "apiVersion: security.kubearmor.com/v1
kind: KubeArmorHostPolicy
metadata:
  name: block-ls
spec:
  nodeSelector:
    matchLabels:
      kubearmor.io/hostname: \"*\"
  process:
    matchPaths:
      - path: /usr/bin/ls
  action: Block
";

fn open_fleet(dir: &Path, key: &SigningKey) -> FleetPolicy {
    let settings = FleetSettings {
        public_keys: vec![key.verifying_key()],
        bundle_max_bytes: 4096,
        state_dir: dir.to_owned(),
    };
    FleetPolicy::new(settings, "site", "gw-1").expect("state dir")
}

fn scoped(key: &SigningKey, version: u64, scope: Scope, targets: &[&str], policy: &str) -> Vec<u8> {
    let body = BundleBody {
        version,
        created_unix: 1,
        targets: targets.iter().map(|t| t.to_string()).collect(),
        files: vec![BundleFile {
            name: "p.yaml".into(),
            contents: policy.as_bytes().to_vec(),
        }],
        scope,
    };
    create(key, &body).expect("a valid bundle")
}

/// A fleet-scoped bundle.
fn bundle(key: &SigningKey, version: u64, targets: &[&str], policy: &str) -> Vec<u8> {
    scoped(key, version, Scope::Fleet, targets, policy)
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("edgearmor-fleet-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn applies_then_refuses_rollback_foreign_targets_and_bad_policies() {
    let dir = temp("flow");
    let key = SigningKey::from_seed(&[7; 32]);
    let mut fleet = open_fleet(&dir, &key);
    let v2 = bundle(&key, 2, &[], POLICY);
    let staged = fleet.offer(Scope::Fleet, &v2).expect("valid").expect("new");
    fleet.unpack(&staged).expect("unpacked");
    assert!(fleet.policy_dir().join("p.yaml").exists());
    let report = fleet.commit(staged).expect("committed");
    assert!(report.applied);
    assert!(
        matches!(fleet.offer(Scope::Fleet, &v2), Ok(None)),
        "the same bundle again is a no-op"
    );

    let old = bundle(&key, 1, &[], POLICY);
    let r = fleet
        .offer(Scope::Fleet, &old)
        .err()
        .expect("rollback refused");
    assert!(
        r.reason.contains("rollback") || r.reason.contains("version"),
        "{}",
        r.reason
    );

    let foreign = bundle(&key, 3, &["gw-2"], POLICY);
    let r = fleet
        .offer(Scope::Fleet, &foreign)
        .err()
        .expect("foreign refused");
    assert!(r.reason.contains("targets"), "{}", r.reason);

    let broken = bundle(
        &key,
        3,
        &[],
        &POLICY.replace("action: Block", "action: Blok"),
    );
    let r = fleet
        .offer(Scope::Fleet, &broken)
        .err()
        .expect("bad policy refused");
    assert!(r.reason.contains("p.yaml"), "{}", r.reason);

    let other_key = SigningKey::from_seed(&[8; 32]);
    let forged = bundle(&other_key, 9, &[], POLICY);
    let r = fleet
        .offer(Scope::Fleet, &forged)
        .err()
        .expect("bad signature refused");
    assert!(r.reason.contains("signature"), "{}", r.reason);

    let huge = bundle(&key, 9, &[], &format!("{POLICY}#{}\n", "x".repeat(5000)));
    let r = fleet
        .offer(Scope::Fleet, &huge)
        .err()
        .expect("oversize refused");
    assert_eq!(r.version, 0, "refused before reading: {}", r.reason);

    // Anti-rollback survives a restart, and so does the bundle to fall back to.
    let again = open_fleet(&dir, &key);
    assert_eq!(again.applied_version(), Some(2));
    assert!(again.offer(Scope::Fleet, &old).is_err());
    std::fs::remove_dir_all(again.policy_dir()).expect("policies removed");
    again.restore().expect("restored");
    assert!(again.policy_dir().join("p.yaml").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_node_bundle_wins_over_fleet_bundles() {
    let dir = temp("scope");
    let key = SigningKey::from_seed(&[3; 32]);
    let mut fleet = open_fleet(&dir, &key);
    let node = scoped(&key, 5, Scope::Node, &["gw-1"], POLICY);
    let staged = fleet
        .offer(Scope::Node, &node)
        .expect("valid")
        .expect("new");
    fleet.commit(staged).expect("committed");
    let newer_fleet = bundle(&key, 6, &[], POLICY);
    let r = fleet
        .offer(Scope::Fleet, &newer_fleet)
        .err()
        .expect("refused");
    assert!(r.reason.contains("node-specific"), "{}", r.reason);
    let json = r.to_json(10);
    assert!(
        json.contains("\"result\":\"rejected\"") && json.contains("\"version\":6"),
        "{json}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A format 1 bundle, as agents before format 2 received them: magic, the body
/// without a scope (postcard, written out by hand), the signature.
fn format_1_bundle(key: &SigningKey, version: u8, policy: &str) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut n: usize) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
    assert!(version < 0x80, "one varint byte");
    let mut bytes = edgearmor_bundle::MAGIC_V1.to_vec();
    bytes.extend_from_slice(&[version, 1, 0, 1]); // version, created, no targets, 1 file
    varint(&mut bytes, "p.yaml".len());
    bytes.extend_from_slice(b"p.yaml");
    varint(&mut bytes, policy.len());
    bytes.extend_from_slice(policy.as_bytes());
    let signature = key.sign(&bytes);
    bytes.extend_from_slice(&signature);
    bytes
}

#[test]
fn a_fleet_bundle_replayed_on_the_node_topic_is_refused_and_changes_nothing() {
    let dir = temp("replay");
    let key = SigningKey::from_seed(&[5; 32]);
    let mut fleet = open_fleet(&dir, &key);
    let v2 = bundle(&key, 2, &[], POLICY);
    let r = fleet.offer(Scope::Node, &v2).err().expect("replay refused");
    assert_eq!((r.scope, r.version, r.applied), (Scope::Node, 2, false));
    assert!(
        r.reason.contains("signed scope fleet") && r.reason.contains("node topic"),
        "{}",
        r.reason
    );
    assert_eq!(fleet.applied_version(), None, "nothing applied");
    let unpacked = std::fs::read_dir(fleet.policy_dir()).map_or(0, |d| d.count());
    assert_eq!(unpacked, 0, "nothing unpacked");
    // Where it belongs it applies, and later fleet bundles still do: the replay
    // did not make this node "node-specific".
    for version in [2, 3] {
        let b = bundle(&key, version, &[], POLICY);
        let staged = fleet.offer(Scope::Fleet, &b).expect("valid").expect("new");
        fleet.unpack(&staged).expect("unpacked");
        fleet.commit(staged).expect("committed");
    }
    assert_eq!(fleet.applied_version(), Some(3));
    assert_eq!(fleet.applied_scope(), Some(Scope::Fleet));
    // The bundle in force replayed on the node topic: the same bytes, a no-op.
    let v3 = bundle(&key, 3, &[], POLICY);
    assert!(matches!(fleet.offer(Scope::Node, &v3), Ok(None)));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_node_bundle_on_the_fleet_topic_is_refused() {
    let dir = temp("misrouted");
    let key = SigningKey::from_seed(&[6; 32]);
    let fleet = open_fleet(&dir, &key);
    let node = scoped(&key, 4, Scope::Node, &["gw-1"], POLICY);
    let r = fleet
        .offer(Scope::Fleet, &node)
        .err()
        .expect("misrouted refused");
    assert!(
        r.reason.contains("signed scope node") && r.reason.contains("fleet topic"),
        "{}",
        r.reason
    );
    let json = r.to_json(1);
    assert!(json.contains("\"scope\":\"fleet\""), "{json}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_scope_in_force_is_the_signed_one_across_restarts() {
    let dir = temp("restart-scope");
    let key = SigningKey::from_seed(&[4; 32]);
    let mut fleet = open_fleet(&dir, &key);
    let staged = fleet
        .offer(Scope::Fleet, &bundle(&key, 1, &[], POLICY))
        .expect("valid")
        .expect("new");
    fleet.commit(staged).expect("committed");
    // An older agent's topic-derived record, as the replay left it: not trusted.
    std::fs::write(dir.join("applied.scope"), "node").expect("stale scope file");
    let mut again = open_fleet(&dir, &key);
    assert_eq!(again.applied_scope(), Some(Scope::Fleet));
    let staged = again
        .offer(
            Scope::Node,
            &scoped(&key, 2, Scope::Node, &["gw-*"], POLICY),
        )
        .expect("valid")
        .expect("new");
    again.commit(staged).expect("committed");
    // Restarted with a node bundle in force: fleet bundles wait.
    let restarted = open_fleet(&dir, &key);
    assert_eq!(restarted.applied_scope(), Some(Scope::Node));
    let r = restarted
        .offer(Scope::Fleet, &bundle(&key, 3, &[], POLICY))
        .err()
        .expect("node bundle wins");
    assert!(r.reason.contains("node-specific"), "{}", r.reason);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn format_1_bundles_are_fleet_bundles() {
    let dir = temp("format-1");
    let key = SigningKey::from_seed(&[2; 32]);
    let mut fleet = open_fleet(&dir, &key);
    let old = format_1_bundle(&key, 3, POLICY);
    let r = fleet
        .offer(Scope::Node, &old)
        .err()
        .expect("not from a node topic");
    assert!(
        r.reason.contains("format 1 bundles are fleet-scoped") && r.reason.contains("--scope node"),
        "{}",
        r.reason
    );
    let staged = fleet
        .offer(Scope::Fleet, &old)
        .expect("valid")
        .expect("new");
    fleet.unpack(&staged).expect("unpacked");
    fleet.commit(staged).expect("committed");
    // In force across a restart, to fall back to.
    let again = open_fleet(&dir, &key);
    assert_eq!(again.applied_scope(), Some(Scope::Fleet));
    std::fs::remove_dir_all(again.policy_dir()).expect("policies removed");
    again.restore().expect("restored");
    assert!(again.policy_dir().join("p.yaml").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_policy_file_that_is_not_utf8_is_refused_by_name() {
    let dir = temp("utf8");
    let key = SigningKey::from_seed(&[1; 32]);
    let fleet = open_fleet(&dir, &key);
    // A Latin-1 "é" in a comment.
    let mut contents = POLICY.as_bytes().to_vec();
    contents.extend_from_slice(b"# caf\xe9\n");
    let body = BundleBody {
        version: 1,
        created_unix: 1,
        targets: Vec::new(),
        files: vec![BundleFile {
            name: "latin1.yaml".into(),
            contents,
        }],
        scope: Scope::Fleet,
    };
    let r = fleet
        .offer(Scope::Fleet, &create(&key, &body).expect("bundle"))
        .err()
        .expect("refused");
    assert_eq!(r.reason, "policy latin1.yaml: the file is not valid UTF-8");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn label_targets_apply_only_where_every_label_matches() {
    let key = SigningKey::from_seed(&[7; 32]);
    let labels = |pairs: &[(&str, &str)]| -> NodeLabels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let dir = temp("labels");
    let fleet =
        open_fleet(&dir, &key).with_labels(labels(&[("site", "plant-7"), ("role", "edge")]));
    for targets in [
        &["site=plant-7"][..],
        &["site=plant-7,role=edge"],
        &["gw-9", "role=edge"],
        &["kubernetes.io/hostname=gw-1,site=plant-7"],
    ] {
        let offered = bundle(&key, 2, targets, POLICY);
        let staged = fleet.offer(Scope::Fleet, &offered);
        assert!(
            matches!(staged, Ok(Some(_))),
            "{targets:?}: {:?}",
            staged.err()
        );
    }
    for targets in [
        &["site=plant-8"][..],
        &["site=plant-7,role=core"],
        &["model=rpi5"],
        &["kubearmor.io/hostname=gw-2,site=plant-7"],
    ] {
        let offered = bundle(&key, 2, targets, POLICY);
        let r = fleet
            .offer(Scope::Fleet, &offered)
            .err()
            .expect("not for this node");
        assert!(!r.applied);
        assert!(
            r.reason
                .contains("do not include site/gw-1 (labels: role=edge,site=plant-7)"),
            "{targets:?}: {}",
            r.reason
        );
    }
    // Bad syntax names no node, and the report says why.
    let bad = bundle(&key, 2, &["site=plant 7"], POLICY);
    let r = fleet.offer(Scope::Fleet, &bad).err().expect("refused");
    assert!(r.reason.contains("target \"site=plant 7\""), "{}", r.reason);
    // A node without labels is never named by label.
    let bare = open_fleet(&dir, &key);
    let offered = bundle(&key, 2, &["site=plant-7"], POLICY);
    let r = bare.offer(Scope::Fleet, &offered).err().expect("refused");
    assert!(r.reason.contains("(labels: none)"), "{}", r.reason);
    let _ = std::fs::remove_dir_all(&dir);
}
