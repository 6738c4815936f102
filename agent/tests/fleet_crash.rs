//! A crash at every step of a policy delivery, and damaged fleet state: the next start
//! has a recorded bundle's policies in force, says what it repaired, and a re-offer of
//! the interrupted bundle applies.
//!
//! Each crash is real: this test binary runs itself again as a child
//! ([`child_applies_the_offered_bundle`]) that delivers a signed bundle with the agent's
//! own code (`apply_bundle`: unpack, reload through a `PolicySource`, commit) and
//! aborts at the fault point named by `EDGEARMOR_FAULT` (debug builds only). The parent
//! then starts over the way the agent does (`FleetPolicy::new`) and checks what the
//! policy source loads from the real files. On this machine the kernel cannot enforce,
//! so "in force" is what the policy source loads; the last test runs the real
//! `edgearmor run` (monitor-only) across such a crash.

use std::path::{Path, PathBuf};
use std::process::Command;

use edgearmor::control::fleet::{FleetPolicy, FleetSettings};
use edgearmor::control::policy_source::PolicySource;
use edgearmor::control::reload::apply_bundle;
use edgearmor_bundle::{
    BundleBody, BundleFile, Scope, SigningKey, create, differences, fault, verify,
};
use edgearmor_policy::{DefaultPosture, DefaultPostures};
use edgearmor_vm::broker::{Broker, Subscriber, free_port, wait_for};
use edgearmor_vm::process::WatchedProcess;

/// Set (to a state directory) only in the child.
const CHILD_ENV: &str = "EDGEARMOR_TEST_CRASH_STATE_DIR";
const NODE: &str = "gw-1";

fn key() -> SigningKey {
    SigningKey::from_seed(&[42; 32])
}

/// A one-policy bundle signed by `key` whose policy is named `name`.
fn signed_bundle(key: &SigningKey, version: u64, name: &str) -> Vec<u8> {
    let policy = format!(
        "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorHostPolicy\nmetadata:\n  name: {name}\nspec:\n  nodeSelector:\n    matchLabels:\n      kubearmor.io/hostname: \"*\"\n  process:\n    matchPaths:\n      - path: /usr/bin/{name}\n  action: Block\n"
    );
    let body = BundleBody {
        version,
        created_unix: 1,
        targets: Vec::new(),
        files: vec![BundleFile {
            name: format!("{name}.yaml"),
            contents: policy.into_bytes(),
        }],
        scope: Scope::Fleet,
    };
    create(key, &body).expect("a valid bundle")
}

fn settings(state_dir: &Path) -> FleetSettings {
    FleetSettings {
        public_keys: vec![key().verifying_key()],
        bundle_max_bytes: 64 * 1024,
        state_dir: state_dir.to_owned(),
    }
}

fn open(state_dir: &Path) -> FleetPolicy {
    FleetPolicy::new(settings(state_dir), "site", NODE).expect("the state directory is usable")
}

/// A one-policy bundle whose policy is named `name`.
fn bundle(version: u64, name: &str) -> Vec<u8> {
    signed_bundle(&key(), version, name)
}

/// The policy names the policy source loads from the bundle directory: what a start
/// (or a reload) would put in force.
fn loaded_policy_names(fleet: &FleetPolicy) -> Vec<String> {
    let mut source = PolicySource::new(
        vec![fleet.policy_dir()],
        NODE.into(),
        DefaultPostures::uniform(DefaultPosture::Audit),
    );
    let loaded = source.load().expect("the bundle directory is listable");
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    loaded.compiled.policy_names
}

/// Applies `payload` the way a running agent does, the reload being a policy-source
/// load of the real files.
fn deliver(
    fleet: &mut FleetPolicy,
    payload: &[u8],
) -> Option<edgearmor::control::fleet::BundleReport> {
    let dir = fleet.policy_dir();
    apply_bundle(fleet, Scope::Fleet, payload, || {
        let mut source = PolicySource::new(
            vec![dir.clone()],
            NODE.into(),
            DefaultPostures::uniform(DefaultPosture::Audit),
        );
        source.load().map(|_| ())
    })
}

fn scratch(name: &str) -> PathBuf {
    edgearmor_vm::broker::scratch(Path::new(env!("CARGO_TARGET_TMPDIR")), name)
}

/// Entries of `dir`, sorted.
fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The child: delivers `<state dir>/offer.bundle`; with `EDGEARMOR_FAULT` set it
/// aborts on the way. Run on its own (no variable) it does nothing.
#[test]
fn child_applies_the_offered_bundle() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let offer = dir
        .parent()
        .expect("a scratch directory")
        .join("offer.bundle");
    let payload = std::fs::read(offer).expect("the offer");
    let mut fleet = open(&dir);
    let report = deliver(&mut fleet, &payload);
    println!("child delivered: {report:?}");
}

/// Runs the child against `state_dir` with `EDGEARMOR_FAULT=point`; returns whether
/// it stopped there (`false`: it finished, the point is not on this path).
fn crash_child_at(state_dir: &Path, point: &str) -> bool {
    let output = Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", "child_applies_the_offered_bundle", "--nocapture"])
        .env(CHILD_ENV, state_dir)
        .env(fault::ENV, point)
        .output()
        .expect("the child runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        assert!(!stderr.contains("fault point"), "{stderr}");
        return false;
    }
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGABRT),
        "the child dies at the fault point, not otherwise: {}\n{stderr}",
        output.status
    );
    assert!(
        stderr.contains(&format!("fault point {point} reached")),
        "{stderr}"
    );
    true
}

#[test]
fn a_crash_at_every_step_of_a_delivery_leaves_a_recorded_bundle_in_force() {
    let committed_from = fault::POINTS
        .iter()
        .position(|p| *p == "commit:state-stored")
        .expect("the commit point is listed");
    let v1 = bundle(1, "v1-block-ls");
    let v2 = bundle(2, "v2-block-cat");
    let mut crashes = 0;
    for (index, point) in fault::POINTS.iter().enumerate() {
        for first_bundle in [true, false] {
            let root = scratch(&format!("crash-{}-{first_bundle}", point.replace(':', "-")));
            let state_dir = root.join("state");
            let (before, offered, offered_name) = if first_bundle {
                (None, &v1, "v1-block-ls")
            } else {
                let mut fleet = open(&state_dir);
                let report = deliver(&mut fleet, &v1).expect("v1 is new");
                assert!(report.applied, "{report:?}");
                (Some((1, "v1-block-ls")), &v2, "v2-block-cat")
            };
            std::fs::write(root.join("offer.bundle"), offered).expect("writes the offer");
            if !crash_child_at(&state_dir, point) {
                // Keeping a previous copy needs a previous state.
                assert!(
                    first_bundle && *point == "state:previous-copied",
                    "{point} is on every delivery's path"
                );
                continue;
            }
            crashes += 1;

            let mut fleet = open(&state_dir);
            let committed = index >= committed_from;
            let (version, names): (Option<u64>, Vec<String>) = match (committed, before) {
                (true, _) => (Some(offered_version(offered)), vec![offered_name.into()]),
                (false, Some((v, name))) => (Some(v), vec![name.into()]),
                (false, None) => (None, vec![]),
            };
            let context = format!("crash at {point} (first bundle: {first_bundle})");
            assert_eq!(fleet.applied_version(), version, "{context}");
            assert_eq!(loaded_policy_names(&fleet), names, "{context}");
            // Exactly the recorded bundle's files, nothing half-written beside them.
            if let Some((_, name)) = before.filter(|_| !committed) {
                let b = verify(&v1, &[key().verifying_key()], 1 << 20).expect("v1");
                assert_eq!(differences(&b, &fleet.policy_dir()).expect("checks"), None);
                assert_eq!(list(&fleet.policy_dir()), [format!("{name}.yaml")]);
            }
            // A missing or stale directory was repaired and said so.
            let report = fleet.take_start_report();
            match *point {
                "unpack:after-first-rename" if !first_bundle => {
                    let report = report.expect("a repair report");
                    assert_eq!((report.result, report.version), ("restored", 1));
                    assert!(
                        report.detail.contains(
                            "did not hold the applied bundle v1 (missing): restored it from"
                        ),
                        "{context}: {}",
                        report.detail
                    );
                }
                "unpack:after-second-rename"
                | "fleet:unpacked"
                | "fleet:reloaded"
                | "commit:bundle-stored"
                | "state:previous-copied"
                | "state:before-rename" => {
                    let report = report.expect("a repair report");
                    assert_eq!(report.result, "restored", "{context}");
                    let expected = if first_bundle {
                        "although no bundle is recorded as applied"
                    } else {
                        "did not hold the applied bundle v1"
                    };
                    assert!(
                        report.detail.contains(expected),
                        "{context}: {}",
                        report.detail
                    );
                }
                _ => assert_eq!(report, None, "{context}: nothing to repair"),
            }

            // The interrupted bundle offered again (MQTT redelivers it retained).
            let again = deliver(&mut fleet, offered);
            if committed {
                assert_eq!(again, None, "{context}: already applied");
            } else {
                assert!(
                    again.as_ref().is_some_and(|r| r.applied),
                    "{context}: {again:?}"
                );
            }
            assert_eq!(loaded_policy_names(&fleet), [offered_name], "{context}");
            assert_eq!(fleet.applied_version(), Some(offered_version(offered)));
            assert!(
                !list(&state_dir)
                    .iter()
                    .any(|n| n.contains(".tmp-") || n.contains(".trash-")),
                "{context}: leftovers {:?}",
                list(&state_dir)
            );
            let _ = std::fs::remove_dir_all(&root);
        }
    }
    assert_eq!(
        crashes,
        2 * fault::POINTS.len() - 1,
        "every point crashed once per path"
    );
}

fn offered_version(bytes: &[u8]) -> u64 {
    verify(bytes, &[key().verifying_key()], 1 << 20)
        .expect("verifies")
        .version()
}

#[test]
fn a_damaged_state_file_is_replaced_by_its_last_good_copy_and_enforcement_goes_on() {
    let root = scratch("damaged-state");
    let state_dir = root.join("state");
    let mut fleet = open(&state_dir);
    deliver(&mut fleet, &bundle(1, "v1-block-ls")).expect("v1");
    let v2 = bundle(2, "v2-block-cat");
    deliver(&mut fleet, &v2).expect("v2");
    drop(fleet);
    let state = state_dir.join("applied");
    let elsewhere = root.join("elsewhere");
    std::fs::write(&elsewhere, "not the agent's").expect("writes");

    for damage in ["garbage", "symlink"] {
        std::fs::remove_file(&state).expect("removes");
        if damage == "garbage" {
            std::fs::write(&state, "version=2\nsha256=zz\n").expect("writes");
        } else {
            std::os::unix::fs::symlink(&elsewhere, &state).expect("links");
        }
        let mut fleet = open(&state_dir);
        // The last good copy (v1) is in force again, its policies restored.
        assert_eq!(fleet.applied_version(), Some(1), "{damage}");
        assert_eq!(loaded_policy_names(&fleet), ["v1-block-ls"], "{damage}");
        let report = fleet.take_start_report().expect("reported");
        assert_eq!(report.result, "restored");
        assert!(
            report.detail.contains("applied.prev")
                && report.detail.contains("did not hold the applied bundle v1"),
            "{damage}: {}",
            report.detail
        );
        assert!(std::fs::symlink_metadata(&state).expect("there").is_file());
        assert_eq!(
            std::fs::read_to_string(&elsewhere).expect("reads"),
            "not the agent's",
            "the link's target was not written"
        );
        // The retained v2 comes back and applies.
        let report = deliver(&mut fleet, &v2).expect("v2 again");
        assert!(report.applied, "{report:?}");
        assert_eq!(loaded_policy_names(&fleet), ["v2-block-cat"]);
    }

    // A symbolic link planted in place of the policy directory (to files of the
    // attacker's choosing) is not followed: it is replaced by the applied bundle.
    let planted = root.join("planted");
    std::fs::create_dir(&planted).expect("creates");
    std::fs::write(planted.join("allow-all.yaml"), "not a policy").expect("writes");
    let policies = state_dir.join("policies");
    std::fs::remove_dir_all(&policies).expect("removes");
    std::os::unix::fs::symlink(&planted, &policies).expect("links");
    let mut fleet = open(&state_dir);
    assert!(
        std::fs::symlink_metadata(&policies)
            .expect("there")
            .is_dir()
    );
    assert_eq!(loaded_policy_names(&fleet), ["v2-block-cat"]);
    let report = fleet.take_start_report().expect("reported");
    assert!(
        report.detail.contains("symbolic link") && report.detail.contains("restored it from"),
        "{}",
        report.detail
    );
    assert_eq!(
        list(&planted),
        ["allow-all.yaml"],
        "the link's target untouched"
    );
    drop(fleet);

    // Both copies damaged: no version is known, so no bundle is accepted, and the
    // policies in place stay.
    std::fs::write(&state, "garbage").expect("writes");
    std::fs::write(state_dir.join("applied.prev"), "garbage").expect("writes");
    let mut fleet = open(&state_dir);
    assert_eq!(loaded_policy_names(&fleet), ["v2-block-cat"]);
    let report = fleet.take_start_report().expect("reported");
    assert_eq!(report.result, "unrecoverable");
    let refused = deliver(&mut fleet, &bundle(3, "v3-block-dd")).expect("a report");
    assert!(!refused.applied);
    assert!(
        refused.reason.contains("no bundle is accepted") && refused.reason.contains("remove both"),
        "{}",
        refused.reason
    );
    assert_eq!(loaded_policy_names(&fleet), ["v2-block-cat"]);
    let _ = std::fs::remove_dir_all(&root);
}

/// The real agent, monitor-only (this kernel cannot enforce): v1 recorded in its
/// state directory, v2 retained on the fleet topic. The first run crashes in the
/// middle of unpacking v2 (no policy directory left); the second run's log says it
/// restored v1, its policy summary names v1's policy, and the restore is retained on
/// `.../policy/reported`.
#[test]
fn the_real_agent_restores_the_policy_directory_after_a_crash_mid_unpack() {
    let dir = scratch("crash-e2e");
    let state_dir = dir.join("state");
    let (secret, public) = edgearmor_bundle::generate_keypair().expect("a key pair");
    let signing = edgearmor_bundle::parse_secret_key(secret.as_str()).expect("parses");
    let public_file = dir.join("fleet.pub");
    std::fs::write(&public_file, public.as_str()).expect("writes");
    let signed = |version: u64, name: &str| signed_bundle(&signing, version, name);
    // v1 recorded the way a running agent records it.
    {
        let settings = FleetSettings::load(
            std::slice::from_ref(&public_file),
            64 * 1024,
            state_dir.clone(),
        )
        .expect("key");
        let mut fleet = FleetPolicy::new(settings, "default", "gw-crash").expect("state");
        let dir = fleet.policy_dir();
        let report = apply_bundle(&mut fleet, Scope::Fleet, &signed(1, "v1-block-ls"), || {
            PolicySource::new(
                vec![dir.clone()],
                "gw-crash".into(),
                DefaultPostures::uniform(DefaultPosture::Audit),
            )
            .load()
            .map(|_| ())
        })
        .expect("a report");
        assert!(report.applied, "{report:?}");
    }
    let port = free_port();
    let _broker = Broker::start(&dir, port, "");
    let sub = Subscriber::connect(port, "crash-sub");
    sub.publish_retained("edgearmor/default/policy", signed(2, "v2-block-cat"));
    wait_for("the retained v2", || {
        !sub.on_topic("default/policy").is_empty()
    });
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "node = \"gw-crash\"\npin_dir = \"\"\n[output]\nstdout = false\n[mqtt]\nbroker = \"127.0.0.1:{port}\"\n[fleet]\npublic_keys = [\"{}\"]\nstate_dir = \"{}\"\n",
            public_file.display(),
            state_dir.display()
        ),
    )
    .expect("writes the configuration");
    let agent = |fault_point: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_edgearmor"));
        command
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info");
        if let Some(point) = fault_point {
            command.env(fault::ENV, point);
        }
        WatchedProcess::spawn(command)
    };

    let mut crashing = agent(Some("unpack:after-first-rename"));
    crashing.wait_stderr("fault point unpack:after-first-rename reached");
    // It aborts right after that line; reaped here either way.
    crashing.kill();
    assert!(
        !state_dir.join("policies").exists(),
        "the crash left no policy directory: {:?}",
        list(&state_dir)
    );

    let mut restarted = agent(None);
    restarted.wait_stderr("edgearmor: ready:");
    let log = restarted.stderr();
    let restored_line = log
        .lines()
        .find(|l| l.contains("policy directory") && l.contains("restored it from"))
        .unwrap_or_else(|| panic!("no restore line in:\n{log}"));
    assert!(
        restored_line.contains("did not hold the applied bundle v1 (missing)"),
        "{restored_line}"
    );
    assert!(
        log.lines().any(|l| l.contains("1 policies [v1-block-ls]")),
        "the policy set loaded at start is v1's:\n{log}"
    );
    assert!(log.contains("monitor-only"), "{log}");
    wait_for("the retained restore report", || {
        sub.on_topic("gw-crash/policy/reported")
            .iter()
            .any(|(p, _)| String::from_utf8_lossy(p).contains("\"result\":\"restored\""))
    });
    let (report, _) = sub
        .on_topic("gw-crash/policy/reported")
        .into_iter()
        .find(|(p, _)| String::from_utf8_lossy(p).contains("\"result\":\"restored\""))
        .expect("found above");
    let report = String::from_utf8(report).expect("utf8");
    assert!(
        report.contains("\"version\":1") && report.contains("(missing)"),
        "{report}"
    );
    restarted.kill();
}
