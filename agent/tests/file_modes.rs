//! Files the agent writes are private whatever the umask: the spool, the fleet state
//! and the unpacked bundle policies, each directory 0700 and each file 0600, under a
//! umask of 0000, 0022 and 0777. One test in its own binary: the umask is per process,
//! so nothing else runs while it is changed.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use edgearmor::control::fleet::{FleetPolicy, FleetSettings};
use edgearmor::control::reload::apply_bundle;
use edgearmor::events::pipeline::LossLedger;
use edgearmor::sinks::offline::{BatchKey, OfflineBuffer, PendingBatch, Spool};
use edgearmor_bundle::{BundleBody, BundleFile, Scope, SigningKey, create};

const POLICY: &str = "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorHostPolicy\nmetadata:\n  name: block-ls\nspec:\n  nodeSelector:\n    matchLabels:\n      kubearmor.io/hostname: \"*\"\n  process:\n    matchPaths:\n      - path: /usr/bin/ls\n  action: Block\n";

/// Every path under `root` (not `root` itself) with its permission bits.
fn walk(root: &Path, out: &mut Vec<(PathBuf, bool, u32)>) {
    for entry in std::fs::read_dir(root)
        .expect("lists")
        .filter_map(Result::ok)
    {
        let meta = std::fs::symlink_metadata(entry.path()).expect("inspects");
        out.push((
            entry.path(),
            meta.is_dir(),
            meta.permissions().mode() & 0o7777,
        ));
        if meta.is_dir() {
            walk(&entry.path(), out);
        }
    }
}

fn write_everything(root: &Path) {
    // The spool, created with its parents, holding batches.
    let ledger = LossLedger::default();
    let spool = Spool::open(&root.join("lib").join("spool"), 1 << 20).expect("opens");
    let mut buffer = OfflineBuffer::new(1 << 20, Some(spool));
    for first_seq in [1, 33] {
        buffer.push(
            PendingBatch {
                key: BatchKey {
                    boot_id: [5; 16],
                    first_seq,
                },
                events: 32,
                payload: vec![7; 300],
            },
            &ledger,
        );
    }
    assert_eq!(buffer.unpersisted_batches, 0);
    drop(buffer);

    // The fleet state: two bundles applied (so a previous copy exists too).
    let key = SigningKey::from_seed(&[1; 32]);
    let settings = FleetSettings {
        public_keys: vec![key.verifying_key()],
        bundle_max_bytes: 1 << 16,
        state_dir: root.join("lib").join("fleet"),
    };
    let mut fleet = FleetPolicy::new(settings, "site", "gw").expect("state");
    for version in [1, 2] {
        let body = BundleBody {
            version,
            created_unix: 0,
            targets: Vec::new(),
            files: vec![BundleFile {
                name: "p.yaml".into(),
                contents: POLICY.as_bytes().to_vec(),
            }],
            scope: Scope::Fleet,
        };
        let bytes = create(&key, &body).expect("a valid bundle");
        let report = apply_bundle(&mut fleet, Scope::Fleet, &bytes, || Ok(())).expect("a report");
        assert!(report.applied, "{report:?}");
    }
}

#[test]
fn directories_are_0700_and_files_0600_whatever_the_umask() {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("file-modes");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).expect("scratch");
    for umask in [0o000, 0o022, 0o777] {
        let root = base.join(format!("umask-{umask:04o}"));
        std::fs::create_dir(&root).expect("creates");
        // SAFETY: umask(2) only swaps the process's mask; this binary has one test.
        let old = unsafe { libc::umask(umask) };
        write_everything(&root);
        // SAFETY: as above.
        unsafe { libc::umask(old) };

        let mut seen = Vec::new();
        walk(&root, &mut seen);
        let names: Vec<String> = seen
            .iter()
            .map(|(p, _, _)| {
                p.strip_prefix(&root)
                    .expect("under root")
                    .display()
                    .to_string()
            })
            .collect();
        for expected in [
            "lib",
            "lib/spool",
            "lib/fleet",
            "lib/fleet/applied",
            "lib/fleet/applied.prev",
            "lib/fleet/policies",
            "lib/fleet/policies/p.yaml",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} in {names:?}"
            );
        }
        assert!(
            names.iter().any(|n| n.starts_with("lib/spool/segment-")),
            "{names:?}"
        );
        assert!(
            names
                .iter()
                .any(|n| n.starts_with("lib/fleet/applied-") && n.ends_with(".bundle")),
            "{names:?}"
        );
        for (path, is_dir, mode) in seen {
            let expected = if is_dir { 0o700 } else { 0o600 };
            assert_eq!(
                mode,
                expected,
                "umask {umask:04o}: {} has mode {mode:04o}",
                path.display()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&base);
}
