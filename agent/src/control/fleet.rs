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
//! `state_dir` holds, all written atomically (temporary file, fsync, rename, fsync of
//! the directory) with modes 0600/0700 and never through a symbolic link:
//!
//! - `applied`: version, hash and scope of the applied bundle, the commit point;
//!   `applied.prev`: the state it replaced, the last good copy;
//! - `applied-<sha256>.bundle`: the signed bytes of the bundles those two name;
//! - `policies/`: the applied bundle's files, the directory the policy source reads.
//!
//! A crash at any step of a delivery (see `edgearmor_bundle::fault::POINTS`) leaves
//! the previous bundle or the new one recorded; at the next start [`FleetPolicy::new`]
//! makes `policies/` hold exactly the recorded bundle's files again (restoring it from
//! the stored bytes when an unpack was interrupted, emptying it when nothing is
//! recorded), replaces a damaged `applied` by `applied.prev`, and reports what it did
//! ([`StartReport`]: the log and `.../policy/reported`). When both state copies are
//! damaged no version is known: bundles are refused (anti-rollback fails closed) and
//! the policies in place stay enforced.
//!
//! [`FleetPolicy`] holds no MQTT or kernel: the caller feeds it payloads and applies
//! what it stages, so the logic is unit-tested without either.

use std::path::{Path, PathBuf};

use edgearmor_bundle::files::{self, replace_atomically};
use edgearmor_bundle::{
    AppliedState, BundleError, Scope, VerifiedBundle, VerifyingKey, check_rollback, differences,
    fault, parse_public_key, previous_copy_path, unpack, verify,
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

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("fleet public key {}: {detail}", path.display())]
    Key { path: PathBuf, detail: String },
    #[error("fleet state: {0}")]
    State(#[source] BundleError),
    #[error("fleet: no public_keys configured")]
    NoKeys,
}

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

/// What the start found wrong with the fleet state and what it did: logged, and
/// published retained on `.../policy/reported` once connected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartReport {
    /// The applied bundle concerned (0 and "" when none).
    pub version: u64,
    pub sha256: String,
    /// The signed scope of the bundle concerned, when known.
    pub scope: Option<Scope>,
    /// `restored`: repaired from the copies in `state_dir`, the applied bundle in
    /// force; `unrecoverable`: it could not be, and `detail` says what stays.
    pub result: &'static str,
    pub detail: String,
}

impl StartReport {
    /// The retained JSON on `.../policy/reported`, shaped like [`BundleReport`]'s.
    pub fn to_json(&self, unix_secs: u64) -> String {
        let mut out = String::from("{");
        out.push_str(&format!("\"version\":{},", self.version));
        out.push_str("\"sha256\":");
        edgearmor_alert::write_go_string(&mut out, &self.sha256);
        out.push_str(",\"scope\":");
        edgearmor_alert::write_go_string(&mut out, self.scope.map_or("", Scope::as_str));
        out.push_str(",\"result\":");
        edgearmor_alert::write_go_string(&mut out, self.result);
        out.push_str(",\"reason\":");
        edgearmor_alert::write_go_string(&mut out, &self.detail);
        out.push_str(&format!(",\"time\":{unix_secs}}}"));
        out
    }
}

/// The applied state, inside `state_dir`.
const STATE_FILE: &str = "applied";
/// Where releases before the bundle store kept the applied bundle and its scope.
const LEGACY_BUNDLE_FILE: &str = "applied.bundle";
const LEGACY_SCOPE_FILE: &str = "applied.scope";

pub struct FleetPolicy {
    settings: FleetSettings,
    cluster: String,
    node: String,
    applied: Option<AppliedState>,
    /// The bundle in force, to put back if applying a newer one fails midway; its
    /// signed scope says whether a node-specific bundle is in force.
    in_force: Option<StagedBundle>,
    /// Set when the applied state and its last good copy are both damaged: no
    /// version is known, so no bundle is accepted (anti-rollback fails closed).
    blocked: Option<String>,
    /// What the start repaired (or could not), until published.
    start_reports: Vec<StartReport>,
}

impl FleetPolicy {
    /// Reads what was applied before (state directory created, mode 0700, if
    /// missing) and makes the bundle policy directory hold exactly the applied
    /// bundle's files: a damaged state file is replaced by its last good copy, a
    /// missing or altered policy directory (a crash in the middle of an unpack) is
    /// restored from the applied bundle's signed bytes kept in `state_dir`. What was
    /// repaired is logged and kept for [`Self::take_start_report`]. Fails only when
    /// `state_dir` itself cannot be used.
    pub fn new(settings: FleetSettings, cluster: &str, node: &str) -> Result<Self, FleetError> {
        files::create_private_dir_all(&settings.state_dir)
            .map_err(|e| FleetError::State(e.into()))?;
        let mut fleet = Self {
            settings,
            cluster: cluster.to_owned(),
            node: node.to_owned(),
            applied: None,
            in_force: None,
            blocked: None,
            start_reports: Vec::new(),
        };
        fleet.recover();
        for report in &fleet.start_reports {
            match report.result {
                "restored" => log::warn!("fleet: {}", report.detail),
                _ => log::error!("fleet: {}", report.detail),
            }
        }
        Ok(fleet)
    }

    fn state_path(&self) -> PathBuf {
        self.settings.state_dir.join(STATE_FILE)
    }

    /// `state_dir/applied-<sha256>.bundle`: the signed bytes of an applied bundle.
    fn bundle_path(&self, sha256_hex: &str) -> PathBuf {
        self.settings
            .state_dir
            .join(format!("applied-{sha256_hex}.bundle"))
    }

    fn report(&mut self, result: &'static str, detail: String) {
        let (version, sha256) = self
            .applied
            .as_ref()
            .map_or((0, String::new()), |a| (a.version, a.sha256_hex.clone()));
        self.start_reports.push(StartReport {
            version,
            sha256,
            scope: self.applied_scope(),
            result,
            detail,
        });
    }

    /// The start's repairs, in order: state, applied bundle, policy directory.
    fn recover(&mut self) {
        self.remove_stale_temporaries();
        let state_path = self.state_path();
        match AppliedState::load_or_recover(&state_path) {
            Ok(recovered) => {
                self.applied = recovered.state;
                if let Some(repaired) = recovered.repaired {
                    self.report("restored", format!("applied state {repaired}"));
                }
            }
            Err(e) => {
                let reason = format!(
                    "fleet state unusable, no bundle is accepted until it is repaired: {e}"
                );
                self.report(
                    "unrecoverable",
                    format!(
                        "{reason}; the policy directory {} stays as it is",
                        self.policy_dir().display()
                    ),
                );
                self.blocked = Some(reason);
                return;
            }
        }
        let policy_dir = self.policy_dir();
        let Some(applied) = self.applied.clone() else {
            self.empty_policy_dir();
            return;
        };
        let staged = match self.load_applied_bundle(&applied) {
            Ok(staged) => staged,
            Err(why) => {
                self.report(
                    "unrecoverable",
                    format!(
                        "the applied bundle v{} ({}) cannot be restored: {why}; the policy directory {} stays as it is",
                        applied.version,
                        applied.sha256_hex,
                        policy_dir.display()
                    ),
                );
                if let Err(e) = files::create_private_dir_all(&policy_dir) {
                    log::error!("fleet: {e}");
                }
                return;
            }
        };
        match differences(&staged.bundle, &policy_dir) {
            Ok(None) => {}
            Ok(Some(found)) => {
                let outcome = remove_unless_directory(&policy_dir)
                    .and_then(|()| unpack(&staged.bundle, &policy_dir));
                let source = self.bundle_path(&applied.sha256_hex);
                match outcome {
                    Ok(()) => self.report(
                        "restored",
                        format!(
                            "policy directory {} did not hold the applied bundle v{} ({found}): restored it from {}",
                            policy_dir.display(),
                            applied.version,
                            source.display()
                        ),
                    ),
                    Err(e) => self.report(
                        "unrecoverable",
                        format!(
                            "policy directory {} did not hold the applied bundle v{} ({found}) and could not be restored from {}: {e}",
                            policy_dir.display(),
                            applied.version,
                            source.display()
                        ),
                    ),
                }
            }
            Err(e) => self.report(
                "unrecoverable",
                format!(
                    "policy directory {} cannot be checked: {e}",
                    policy_dir.display()
                ),
            ),
        }
        self.in_force = Some(staged);
    }

    /// Removes `.<name>.tmp-*` files an interrupted atomic write left in `state_dir`
    /// (never renamed, so never in force).
    fn remove_stale_temporaries(&self) {
        let Ok(entries) = std::fs::read_dir(&self.settings.state_dir) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.contains(".tmp-") {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => log::info!(
                        "fleet: removed {}, left by an interrupted write",
                        entry.path().display()
                    ),
                    Err(e) => log::warn!("fleet: cannot remove {}: {e}", entry.path().display()),
                }
            }
        }
    }

    /// Nothing applied: the policy directory exists and is empty (files there were
    /// unpacked but never recorded: a crash before the commit).
    fn empty_policy_dir(&mut self) {
        let dir = self.policy_dir();
        let leftover = match std::fs::symlink_metadata(&dir).map(|m| m.file_type()) {
            Ok(kind) if kind.is_symlink() => Some(format!(
                "was a symbolic link (to {})",
                std::fs::read_link(&dir).unwrap_or_default().display()
            )),
            Ok(kind) if !kind.is_dir() => Some("was not a directory".to_owned()),
            _ => match std::fs::read_dir(&dir) {
                Ok(entries) => {
                    let names: Vec<String> = entries
                        .filter_map(Result::ok)
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect();
                    (!names.is_empty()).then(|| format!("held {}", names.join(", ")))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => Some(format!("was unreadable ({e})")),
            },
        };
        let outcome = match &leftover {
            Some(_) => remove_any(&dir),
            None => Ok(()),
        }
        .and_then(|()| files::create_private_dir_all(&dir).map_err(BundleError::from));
        match (leftover, outcome) {
            (Some(found), Ok(())) => self.report(
                "restored",
                format!(
                    "policy directory {} {found} although no bundle is recorded as applied (a crash before the commit): emptied",
                    dir.display()
                ),
            ),
            (_, Err(e)) => self.report(
                "unrecoverable",
                format!("policy directory {}: {e}", dir.display()),
            ),
            (None, Ok(())) => {}
        }
    }

    /// The applied bundle's signed bytes from the bundle store (or an older release's
    /// single copy), verified and matching the state's version and hash.
    fn load_applied_bundle(&self, applied: &AppliedState) -> Result<StagedBundle, String> {
        let mut problems = Vec::new();
        let stored = self.bundle_path(&applied.sha256_hex);
        let legacy = self.settings.state_dir.join(LEGACY_BUNDLE_FILE);
        for path in [&stored, &legacy] {
            let bytes = match files::read(path) {
                Ok(Some(bytes)) => bytes,
                Ok(None) => {
                    if path == &stored {
                        problems.push(format!("{} is missing", path.display()));
                    }
                    continue;
                }
                Err(e) => {
                    problems.push(e.to_string());
                    continue;
                }
            };
            let bundle = match verify(&bytes, &self.settings.public_keys, bytes.len()) {
                Ok(bundle) => bundle,
                Err(e) => {
                    problems.push(format!("{}: {e}", path.display()));
                    continue;
                }
            };
            if bundle.sha256_hex() != applied.sha256_hex || bundle.version() != applied.version {
                problems.push(format!(
                    "{} holds v{} ({}), not the applied bundle",
                    path.display(),
                    bundle.version(),
                    bundle.sha256_hex()
                ));
                continue;
            }
            if path == &legacy
                && let Err(e) = replace_atomically(&stored, &bytes, || {})
            {
                log::warn!("fleet: cannot move the applied bundle into the bundle store: {e}");
            }
            return Ok(StagedBundle { bundle, bytes });
        }
        Err(problems.join("; "))
    }

    /// What the start repaired (or could not), once, as one report (the retained
    /// topic keeps one message): the last bundle concerned, `unrecoverable` if any
    /// repair failed, every detail in order.
    pub fn take_start_report(&mut self) -> Option<StartReport> {
        let reports = std::mem::take(&mut self.start_reports);
        let mut merged = reports.last()?.clone();
        if reports.iter().any(|r| r.result == "unrecoverable") {
            merged.result = "unrecoverable";
        }
        merged.detail = reports
            .iter()
            .map(|r| r.detail.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        Some(merged)
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
        if let Some(reason) = &self.blocked {
            return Err(reject(version, &sha, reason.clone()));
        }
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
        unpack(&staged.bundle, &self.policy_dir())?;
        fault::point("fleet:unpacked");
        Ok(())
    }

    /// Puts back the policies of the bundle in force (or none) after a failed apply.
    pub fn restore(&self) -> Result<(), BundleError> {
        let dir = self.policy_dir();
        match (&self.in_force, &self.applied) {
            (Some(previous), _) => unpack(&previous.bundle, &dir),
            (None, None) => {
                // An empty directory, not none: the policy source must stay listable.
                remove_any(&dir)?;
                Ok(files::create_private_dir_all(&dir)?)
            }
            (None, Some(applied)) => Err(BundleError::Io {
                action: "restore",
                path: dir,
                source: std::io::Error::other(format!(
                    "the bytes of the applied bundle v{} are not in the state directory",
                    applied.version
                )),
            }),
        }
    }

    /// Records a bundle whose policies are now enforced: its signed bytes into the
    /// bundle store, then the applied state (the commit point: anti-rollback trusts
    /// it), each written atomically; then older stored bundles go.
    pub fn commit(&mut self, staged: StagedBundle) -> Result<BundleReport, BundleError> {
        fault::point("fleet:reloaded");
        let sha = staged.bundle.sha256_hex().to_owned();
        replace_atomically(&self.bundle_path(&sha), &staged.bytes, || {})?;
        fault::point("commit:bundle-stored");
        let mut state = AppliedState::from_bundle(&staged.bundle);
        // For operators reading the file; decisions use the signed scope.
        state.scope = Some(staged.bundle.scope().as_str().to_owned());
        state.store(&self.state_path())?;
        fault::point("commit:state-stored");
        self.applied = Some(state);
        self.prune_bundle_store();
        let report = BundleReport {
            scope: staged.bundle.scope(),
            version: staged.bundle.version(),
            sha256: sha,
            applied: true,
            reason: String::new(),
        };
        self.in_force = Some(staged);
        Ok(report)
    }

    /// Removes stored bundles that neither the applied state nor its last good copy
    /// names, and an older release's single copy. Failures are logged: they cost
    /// only disk space.
    fn prune_bundle_store(&self) {
        let state_path = self.state_path();
        let mut keep = vec![];
        for path in [state_path.clone(), previous_copy_path(&state_path)] {
            if let Ok(Some(state)) = AppliedState::load(&path) {
                keep.push(format!("applied-{}.bundle", state.sha256_hex));
            }
        }
        let Ok(entries) = std::fs::read_dir(&self.settings.state_dir) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let stored = name.starts_with("applied-") && name.ends_with(".bundle");
            let legacy = name == LEGACY_BUNDLE_FILE || name == LEGACY_SCOPE_FILE;
            if ((stored && !keep.contains(&name)) || legacy)
                && let Err(e) = std::fs::remove_file(entry.path())
            {
                log::warn!("fleet: cannot remove {}: {e}", entry.path().display());
            }
        }
    }
}

/// Removes whatever is at `path` (a directory tree, a file or a symbolic link, never
/// following it); nothing there is fine.
fn remove_any(path: &Path) -> Result<(), BundleError> {
    let removed = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
    };
    removed.map_err(|source| BundleError::Io {
        action: "remove",
        path: path.to_owned(),
        source,
    })
}

/// Removes a symbolic link or file where a directory belongs (never following it).
fn remove_unless_directory(path: &Path) -> Result<(), BundleError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.is_dir() => remove_any(path),
        _ => Ok(()),
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
