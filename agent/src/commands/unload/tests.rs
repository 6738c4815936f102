//! `unload` against a fake kernel: every refusal of locked mode, without root.

use std::cell::Cell;
use std::path::PathBuf;

use edgearmor_bundle::SigningKey;
use edgearmor_bundle::unlock::{UnlockClaims, create_unlock_token, new_unlock_claims};

use super::*;
use crate::host::{InodeKind, KernelInode, MOUNTINFO};

const NOW: i64 = 1_800_000_000;
const CONFIG_INO: u64 = 77;
/// `8:1` as the kernel encodes it.
const CONFIG_DEV: u32 = 8 << 20 | 1;

/// A host named `gw-7` whose clock says `now` and whose config file is inode 77.
struct Host {
    now: Cell<i64>,
}

impl HostKernel for Host {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        match path == Path::new(MOUNTINFO) {
            true => Ok(b"1 0 8:1 / / rw - ext4 /dev/sda1 rw\n".to_vec()),
            false => Err(io::ErrorKind::NotFound.into()),
        }
    }
    fn mount_securityfs(&self) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
    fn release(&self) -> String {
        "test".into()
    }
    fn node_name(&self) -> String {
        "gw-7".into()
    }
    fn process_executable(&self, _tgid: u32) -> Option<PathBuf> {
        Some("/usr/sbin/edgearmor".into())
    }
    fn real_path(&self, _path: &Path) -> Option<PathBuf> {
        None
    }
    fn kernel_inode(&self, path: &Path, _follow: bool) -> io::Result<KernelInode> {
        let ino = match path.file_name().and_then(|n| n.to_str()) {
            Some("agent.toml") => CONFIG_INO,
            Some("other.toml") => CONFIG_INO + 1,
            _ => return Err(io::ErrorKind::NotFound.into()),
        };
        Ok(KernelInode {
            ino,
            mnt_id: 1,
            kind: InodeKind::Regular,
            links: 1,
        })
    }
    fn wall_clock_ns(&self) -> i128 {
        i128::from(self.now.get()) * 1_000_000_000
    }
    fn random_key(&self) -> io::Result<[u64; 2]> {
        Ok([1, 2])
    }
    fn is_bpffs(&self, _path: &Path) -> bool {
        true
    }
}

/// Pins that are locked (or not) and count unloads.
struct FakePins {
    states: Result<Vec<LockState>, ()>,
    unloads: Cell<usize>,
}

impl Pins for FakePins {
    fn lock_states(&self, pin_dir: &Path) -> Result<Vec<LockState>, String> {
        self.states.clone().map_err(|()| {
            format!(
                "cannot tell whether the kernel is locked: {}: EPERM",
                pin_dir.display()
            )
        })
    }
    fn unload(&self, _pin_dir: &Path) -> io::Result<usize> {
        self.unloads.set(self.unloads.get() + 1);
        Ok(14)
    }
}

fn locked_state(config_ino: u64) -> LockState {
    LockState {
        locked: LOCKED,
        policy_id: 9,
        config_ino,
        config_dev: CONFIG_DEV,
        ..LockState::default()
    }
}

fn locked() -> FakePins {
    FakePins {
        states: Ok(vec![locked_state(CONFIG_INO)]),
        unloads: Cell::new(0),
    }
}

/// A scratch directory with the fleet's public key and a config naming it.
struct Setup {
    dir: PathBuf,
    config: AgentConfig,
    key: SigningKey,
    host: Host,
}

impl Setup {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("edgearmor-unload-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let key = SigningKey::from_seed(&[3; 32]);
        let public = dir.join("fleet.pub");
        std::fs::write(&public, key.verifying_key().to_text().as_str()).expect("writes");
        let mut config = AgentConfig::default();
        config.fleet.public_keys = vec![public];
        config.fleet.state_dir = dir.join("state");
        config.pin_dir = dir.join("pins");
        Self {
            dir,
            config,
            key,
            host: Host {
                now: Cell::new(NOW),
            },
        }
    }

    fn token(&self, name: &str, claims: &UnlockClaims) -> PathBuf {
        self.token_by(name, claims, &self.key)
    }

    fn token_by(&self, name: &str, claims: &UnlockClaims, key: &SigningKey) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, create_unlock_token(key, claims).expect("signs")).expect("writes");
        path
    }

    fn unload(&self, pins: &FakePins, config: &str, token: Option<&Path>) -> ExitCode {
        unload_with(
            &self.host,
            pins,
            &self.config,
            &self.dir.join(config),
            token,
        )
    }

    /// The resources of the tamper reports waiting, taking them.
    fn reports(&self) -> Vec<String> {
        let mut seen = Vec::new();
        tamper::drain(
            &self.config.fleet.state_dir,
            &mut |r| {
                seen.push(r.resource.clone());
                true
            },
            &|n| TamperReport::summary(n, 0),
        )
        .expect("drains");
        seen
    }
}

fn claims(node: &str, issued: i64, valid_for: u64) -> UnlockClaims {
    new_unlock_claims(node, issued as u64, valid_for).expect("claims")
}

fn refused() -> ExitCode {
    ExitCode::from(EXIT_REFUSED)
}

#[test]
fn unlocked_unload_is_what_it_was() {
    let s = Setup::new("unlocked");
    for states in [vec![], vec![LockState::default()]] {
        let pins = FakePins {
            states: Ok(states),
            unloads: Cell::new(0),
        };
        assert_eq!(s.unload(&pins, "no-such.toml", None), ExitCode::SUCCESS);
        assert_eq!(pins.unloads.get(), 1);
    }
    assert!(s.reports().is_empty());
}

#[test]
fn unknown_lock_state_removes_nothing() {
    let s = Setup::new("unknown");
    let pins = FakePins {
        states: Err(()),
        unloads: Cell::new(0),
    };
    assert_eq!(s.unload(&pins, "agent.toml", None), ExitCode::from(1));
    assert_eq!(pins.unloads.get(), 0);
}

#[test]
fn locked_without_a_token_is_refused_and_reported_once() {
    let s = Setup::new("no-token");
    let pins = locked();
    assert_eq!(s.unload(&pins, "agent.toml", None), refused());
    assert_eq!(pins.unloads.get(), 0);
    let reports = s.reports();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(
        reports[0].ends_with("/pins: no unlock token"),
        "{reports:?}"
    );
}

#[test]
fn a_valid_token_unloads_once() {
    let s = Setup::new("valid");
    let pins = locked();
    let token = s.token("t.tok", &claims("gw-7", NOW - 60, 3600));
    assert_eq!(
        s.unload(&pins, "agent.toml", Some(&token)),
        ExitCode::SUCCESS
    );
    assert_eq!(pins.unloads.get(), 1);
    assert!(s.reports().is_empty());
    // Replayed, even an hour later with the clock set back.
    s.host.now.set(NOW - 30);
    assert_eq!(s.unload(&pins, "agent.toml", Some(&token)), refused());
    assert_eq!(pins.unloads.get(), 1);
    assert_eq!(
        s.reports(),
        [format!(
            "edgearmor unload {}: unlock token replayed",
            s.config.pin_dir.display()
        )]
    );
}

#[test]
fn every_bad_token_is_refused_and_reported() {
    let s = Setup::new("bad");
    let pins = locked();
    let other_key = SigningKey::from_seed(&[4; 32]);
    let cases = [
        (
            s.token("expired", &claims("gw-7", NOW - 7200, 3600)),
            "unlock token expired",
        ),
        (
            s.token("foreign", &claims("gw-8", NOW, 3600)),
            "unlock token for another node",
        ),
        (
            s.token("early", &claims("gw-7", NOW + 3600, 60)),
            "unlock token not valid yet",
        ),
        (
            s.token_by("unsigned", &claims("gw-7", NOW, 60), &other_key),
            "unlock token badly signed",
        ),
        (s.dir.join("fleet.pub"), "not an unlock token"),
        (s.dir.join("missing.tok"), "unreadable token"),
    ];
    for (token, why) in &cases {
        assert_eq!(
            s.unload(&pins, "agent.toml", Some(token)),
            refused(),
            "{why}"
        );
    }
    assert_eq!(pins.unloads.get(), 0);
    let reports = s.reports();
    let whys: Vec<&str> = reports
        .iter()
        .map(|r| r.rsplit(": ").next().unwrap_or(""))
        .collect();
    let expected: Vec<&str> = cases.iter().map(|(_, why)| *why).collect();
    assert_eq!(whys, expected);
    // After all that, a good token still works.
    let good = s.token("good", &claims("gw-7", NOW, 60));
    assert_eq!(
        s.unload(&pins, "agent.toml", Some(&good)),
        ExitCode::SUCCESS
    );
}

#[test]
fn another_configuration_cannot_bring_its_own_keys() {
    let s = Setup::new("other-config");
    let pins = locked();
    let token = s.token("t.tok", &claims("gw-7", NOW, 60));
    for config in ["other.toml", "missing.toml"] {
        assert_eq!(s.unload(&pins, config, Some(&token)), refused(), "{config}");
    }
    assert_eq!(pins.unloads.get(), 0);
    assert_eq!(s.reports().len(), 2);
    // The token was not used up by the refusals.
    assert_eq!(
        s.unload(&pins, "agent.toml", Some(&token)),
        ExitCode::SUCCESS
    );
}

#[test]
fn no_fleet_key_no_unlock() {
    let mut s = Setup::new("no-keys");
    s.config.fleet.public_keys.clear();
    let pins = locked();
    let token = s.token("t.tok", &claims("gw-7", NOW, 60));
    assert_eq!(s.unload(&pins, "agent.toml", Some(&token)), refused());
    let reports = s.reports();
    assert!(reports[0].ends_with("no fleet key"), "{reports:?}");
}

#[test]
fn a_lock_of_the_attackers_cannot_choose_the_configuration() {
    let s = Setup::new("two-locks");
    let token = s.token("t.tok", &claims("gw-7", NOW, 60));
    // The real lock names agent.toml; a map made by the attacker names other.toml.
    let pins = FakePins {
        states: Ok(vec![locked_state(CONFIG_INO + 1), locked_state(CONFIG_INO)]),
        unloads: Cell::new(0),
    };
    assert_eq!(s.unload(&pins, "other.toml", Some(&token)), refused());
    assert_eq!(s.unload(&pins, "agent.toml", Some(&token)), refused());
    assert_eq!(pins.unloads.get(), 0);
    let reports = s.reports();
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert!(
        reports
            .iter()
            .all(|r| r.ends_with("not the locked configuration")),
        "{reports:?}"
    );
}
