//! Signed policy bundles from the fleet: which offered bundle to apply, and what to
//! report about each.
//!
//! A bundle arrives (retained) on `<prefix>/<cluster>/policy` (fleet-wide) or
//! `<prefix>/<cluster>/<node>/policy` (this node; wins over fleet-wide). It is
//! applied only when, in this order: it is no larger than `fleet.bundle_max_bytes`
//! (checked before anything is parsed), its Ed25519 signature verifies against a
//! configured public key, its signed scope is that of the topic it arrived on (a
//! fleet bundle replayed on a node's topic, or the other way round, is refused), it
//! targets this node, its version is above the applied one (remembered on disk, so a
//! restart cannot be rolled back), a node-specific bundle is not in force when a
//! fleet-wide one arrives, and every policy file in it is UTF-8 and passes the same
//! checks as `edgearmor policy check`. Then its files replace the bundle policy
//! directory and the policy set is reloaded atomically; only when that succeeded is the
//! new version recorded. Each decision is reported, retained, on
//! `<prefix>/<cluster>/<node>/policy/reported`.
//!
//! [`FleetPolicy`] holds no MQTT or kernel: the caller feeds it payloads and applies
//! what it stages, so the logic is unit-tested without either.

use std::fmt;
use std::path::{Path, PathBuf};

use std::io::Read;

use edgearmor_bundle::limits::MAX_BUNDLE_BYTES;
use edgearmor_bundle::{
    AppliedState, BundleError, Scope, VerifiedBundle, VerifyingKey, check_rollback,
    parse_public_key, unpack, verify,
};

/// What happened to one offered bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleReport {
    /// The scope of the topic it arrived on (a bundle is applied only when its
    /// signed scope is the same).
    pub scope: Scope,
    /// 0 when the bundle could not be read far enough to know it.
    pub version: u64,
    /// Hex SHA-256 of the bundle bytes ("" when refused before verification).
    pub sha256: String,
    pub applied: bool,
    /// Why it was rejected ("" when applied).
    pub reason: String,
}

impl BundleReport {
    /// The retained JSON on `.../policy/reported`.
    pub fn to_json(&self, unix_secs: u64) -> String {
        let mut out = String::from("{");
        out.push_str(&format!("\"version\":{},", self.version));
        out.push_str("\"sha256\":");
        edgearmor_alert::write_go_string(&mut out, &self.sha256);
        out.push_str(",\"scope\":");
        edgearmor_alert::write_go_string(&mut out, self.scope.as_str());
        out.push_str(",\"result\":");
        edgearmor_alert::write_go_string(
            &mut out,
            if self.applied { "applied" } else { "rejected" },
        );
        out.push_str(",\"reason\":");
        edgearmor_alert::write_go_string(&mut out, &self.reason);
        out.push_str(&format!(",\"time\":{unix_secs}}}"));
        out
    }
}

/// `[fleet]` settings resolved: keys read, paths fixed.
pub struct FleetSettings {
    pub public_keys: Vec<VerifyingKey>,
    pub bundle_max_bytes: usize,
    pub state_dir: PathBuf,
}

#[derive(Debug)]
pub enum FleetError {
    Key { path: PathBuf, detail: String },
    State(BundleError),
    NoKeys,
}

impl fmt::Display for FleetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FleetError::Key { path, detail } => {
                write!(f, "fleet public key {}: {detail}", path.display())
            }
            FleetError::State(e) => write!(f, "fleet state: {e}"),
            FleetError::NoKeys => f.write_str("fleet: no public_keys configured"),
        }
    }
}

impl std::error::Error for FleetError {}

impl FleetSettings {
    pub fn load(
        key_files: &[PathBuf],
        bundle_max_bytes: usize,
        state_dir: PathBuf,
    ) -> Result<Self, FleetError> {
        if key_files.is_empty() {
            return Err(FleetError::NoKeys);
        }
        let mut public_keys = Vec::new();
        for path in key_files {
            let text = std::fs::read_to_string(path).map_err(|e| FleetError::Key {
                path: path.clone(),
                detail: e.to_string(),
            })?;
            public_keys.push(parse_public_key(&text).map_err(|e| FleetError::Key {
                path: path.clone(),
                detail: e.to_string(),
            })?);
        }
        Ok(Self {
            public_keys,
            bundle_max_bytes,
            state_dir,
        })
    }
}

/// A bundle that passed every check and waits to be applied; its scope is the
/// signed one, which is also that of the topic it came from.
pub struct StagedBundle {
    pub bundle: VerifiedBundle,
    bytes: Vec<u8>,
}

pub struct FleetPolicy {
    settings: FleetSettings,
    cluster: String,
    node: String,
    applied: Option<AppliedState>,
    /// The bundle in force, to put back if applying a newer one fails midway; its
    /// signed scope says whether a node-specific bundle is in force.
    in_force: Option<StagedBundle>,
}

impl FleetPolicy {
    /// Reads what was applied before (state directory created if missing).
    pub fn new(settings: FleetSettings, cluster: &str, node: &str) -> Result<Self, FleetError> {
        std::fs::create_dir_all(&settings.state_dir).map_err(|e| {
            FleetError::State(BundleError::Io {
                action: "create",
                path: settings.state_dir.clone(),
                source: e,
            })
        })?;
        let applied =
            AppliedState::load(&settings.state_dir.join("applied")).map_err(FleetError::State)?;
        let in_force = read_in_force(&settings);
        Ok(Self {
            settings,
            cluster: cluster.to_owned(),
            node: node.to_owned(),
            applied,
            in_force,
        })
    }

    /// The signed scope of the bundle in force, if any.
    pub fn applied_scope(&self) -> Option<Scope> {
        self.in_force.as_ref().map(|b| b.bundle.scope())
    }

    /// The directory bundle policies are unpacked into (a policy source).
    pub fn policy_dir(&self) -> PathBuf {
        self.settings.state_dir.join("policies")
    }

    /// The size of the largest bundle that is read at all.
    pub fn max_bytes(&self) -> usize {
        self.settings.bundle_max_bytes
    }

    pub fn applied_version(&self) -> Option<u64> {
        self.applied.as_ref().map(|a| a.version)
    }

    /// Checks an offered payload. `Ok(None)`: the bundle in force, offered again
    /// (retained messages come back on every reconnect): nothing to do or report.
    ///
    /// `scope` is that of the topic the payload arrived on.
    pub fn offer(
        &self,
        scope: Scope,
        payload: &[u8],
    ) -> Result<Option<StagedBundle>, BundleReport> {
        let reject = |version, sha256: &str, reason: String| BundleReport {
            scope,
            version,
            sha256: sha256.to_owned(),
            applied: false,
            reason,
        };
        if payload.is_empty() {
            return Ok(None); // a cleared retained topic
        }
        let bundle = verify(
            payload,
            &self.settings.public_keys,
            self.settings.bundle_max_bytes,
        )
        .map_err(|e| reject(0, "", e.to_string()))?;
        let (version, sha) = (bundle.version(), bundle.sha256_hex().to_owned());
        if self.applied.as_ref().is_some_and(|a| a.sha256_hex == sha) {
            return Ok(None);
        }
        if bundle.scope() != scope {
            return Err(reject(version, &sha, scope_mismatch(&bundle, scope)));
        }
        if !bundle.targets_node(&self.cluster, &self.node) {
            return Err(reject(
                version,
                &sha,
                format!(
                    "targets {:?} do not include {}/{}",
                    bundle.targets(),
                    self.cluster,
                    self.node
                ),
            ));
        }
        check_rollback(self.applied.as_ref(), version)
            .map_err(|e| reject(version, &sha, e.to_string()))?;
        if scope == Scope::Fleet && self.applied_scope() == Some(Scope::Node) {
            return Err(reject(
                version,
                &sha,
                "a node-specific bundle is in force; it wins over fleet-wide bundles".into(),
            ));
        }
        for file in bundle.files() {
            let Ok(text) = std::str::from_utf8(&file.contents) else {
                return Err(reject(
                    version,
                    &sha,
                    format!("policy {}: the file is not valid UTF-8", file.name),
                ));
            };
            if let Err(diagnostics) =
                edgearmor_policy::parse_policy_text(Path::new(&file.name), text)
            {
                let first = diagnostics
                    .first()
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| format!("{}: invalid", file.name));
                return Err(reject(version, &sha, format!("policy {first}")));
            }
        }
        Ok(Some(StagedBundle {
            bundle,
            bytes: payload.to_vec(),
        }))
    }

    /// Writes a staged bundle's files over the bundle policy directory.
    pub fn unpack(&self, staged: &StagedBundle) -> Result<(), BundleError> {
        unpack(&staged.bundle, &self.policy_dir())
    }

    /// Puts back the policies of the bundle in force (or none) after a failed apply.
    pub fn restore(&self) -> Result<(), BundleError> {
        match &self.in_force {
            Some(previous) => unpack(&previous.bundle, &self.policy_dir()),
            None => match std::fs::remove_dir_all(self.policy_dir()) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(BundleError::Io {
                    action: "remove",
                    path: self.policy_dir(),
                    source,
                }),
            },
        }
    }

    /// Records a bundle whose policies are now enforced.
    pub fn commit(&mut self, staged: StagedBundle) -> Result<BundleReport, BundleError> {
        let bundle_path = self.settings.state_dir.join("applied.bundle");
        std::fs::write(&bundle_path, &staged.bytes).map_err(|source| BundleError::Io {
            action: "write",
            path: bundle_path,
            source,
        })?;
        let state = AppliedState::from_bundle(&staged.bundle);
        // Last: the version is what anti-rollback trusts.
        state.store(&self.settings.state_dir.join("applied"))?;
        self.applied = Some(state);
        let report = BundleReport {
            scope: staged.bundle.scope(),
            version: staged.bundle.version(),
            sha256: staged.bundle.sha256_hex().to_owned(),
            applied: true,
            reason: String::new(),
        };
        self.in_force = Some(staged);
        Ok(report)
    }
}

/// Why a bundle is refused on a topic of another scope than the one it was signed
/// with: both scopes named.
fn scope_mismatch(bundle: &VerifiedBundle, topic: Scope) -> String {
    let format_1 = if bundle.format() == edgearmor_bundle::FormatVersion::V1 {
        " (format 1 bundles are fleet-scoped; re-sign it with `bundle create --scope node`)"
    } else {
        ""
    };
    format!(
        "signed scope {} does not match the {topic} topic it arrived on{format_1}: a bundle is \
         applied only from the topic of its signed scope (replayed or misrouted?)",
        bundle.scope()
    )
}

/// The bundle in force, as the last commit wrote it (`None`, logged, when it is
/// missing or no longer verifies, e.g. after a key rotation).
fn read_in_force(settings: &FleetSettings) -> Option<StagedBundle> {
    let path = settings.state_dir.join("applied.bundle");
    let mut bytes = Vec::new();
    let read = std::fs::File::open(&path)
        .and_then(|f| f.take(MAX_BUNDLE_BYTES as u64 + 1).read_to_end(&mut bytes));
    match read {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            log::warn!("fleet: {}: {e}; no bundle to fall back to", path.display());
            return None;
        }
    }
    match verify(&bytes, &settings.public_keys, MAX_BUNDLE_BYTES) {
        Ok(bundle) => Some(StagedBundle { bundle, bytes }),
        Err(e) => {
            log::warn!("fleet: {}: {e}; no bundle to fall back to", path.display());
            None
        }
    }
}

#[cfg(test)]
mod tests {
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

    fn scoped(
        key: &SigningKey,
        version: u64,
        scope: Scope,
        targets: &[&str],
        policy: &str,
    ) -> Vec<u8> {
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
        let dir =
            std::env::temp_dir().join(format!("edgearmor-fleet-{name}-{}", std::process::id()));
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
        assert!(!fleet.policy_dir().exists(), "nothing unpacked");
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
            r.reason.contains("format 1 bundles are fleet-scoped")
                && r.reason.contains("--scope node"),
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
}
