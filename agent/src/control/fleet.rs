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
    AppliedState, BundleError, Scope, VerifiedBundle, VerifyingKey, check_rollback, fault,
    parse_public_key, previous_copy_path, unpack, verify,
};
use edgearmor_policy::node_labels::{labels_select, parse_label_target};
use edgearmor_policy::{NodeIdentity, NodeLabels};

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
        let result = if self.applied { "applied" } else { "rejected" };
        reported_json(
            self.version,
            &self.sha256,
            self.scope.as_str(),
            result,
            &self.reason,
            unix_secs,
        )
    }
}

impl FleetPolicy {
    /// Whether `bundle` names this node: by name, or by labels it has all of (a
    /// label target with bad syntax names no node).
    fn targeted(&self, bundle: &VerifiedBundle) -> bool {
        let labels = |target: &str| match parse_label_target(target) {
            Some(Ok(labels)) => labels_select(&labels, &self.node),
            Some(Err(_)) | None => false,
        };
        bundle.targets_node_with(&self.cluster, &self.node.hostname, &labels)
    }

    /// Why `bundle` is not for this node: its targets, this node, and what is wrong
    /// with any label target.
    fn not_targeted(&self, bundle: &VerifiedBundle) -> String {
        let labels: Vec<String> = self
            .node
            .labels()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut reason = format!(
            "targets {:?} do not include {}/{} (labels: {})",
            bundle.targets(),
            self.cluster,
            self.node.hostname,
            if labels.is_empty() {
                "none".to_owned()
            } else {
                labels.join(",")
            }
        );
        for target in bundle.targets() {
            if let Some(Err(e)) = parse_label_target(target) {
                reason.push_str(&format!("; {e}"));
            }
        }
        reason
    }
}

/// The one shape of a retained `.../policy/reported` message, for offered bundles and
/// for what a start repaired.
pub(crate) fn reported_json(
    version: u64,
    sha256: &str,
    scope: &str,
    result: &str,
    reason: &str,
    unix_secs: u64,
) -> String {
    let mut out = String::from("{");
    out.push_str(&format!("\"version\":{version},"));
    out.push_str("\"sha256\":");
    edgearmor_alert::write_go_string(&mut out, sha256);
    out.push_str(",\"scope\":");
    edgearmor_alert::write_go_string(&mut out, scope);
    out.push_str(",\"result\":");
    edgearmor_alert::write_go_string(&mut out, result);
    out.push_str(",\"reason\":");
    edgearmor_alert::write_go_string(&mut out, reason);
    out.push_str(&format!(",\"time\":{unix_secs}}}"));
    out
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
            let text = crate::limits::read_text_capped(
                path,
                crate::limits::MAX_PUBLIC_KEY_FILE_BYTES,
                "MAX_PUBLIC_KEY_FILE_BYTES",
            )
            .map_err(|e| FleetError::Key {
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

/// The applied state, inside `state_dir`.
const STATE_FILE: &str = "applied";
/// Where releases before the bundle store kept the applied bundle and its scope.
const LEGACY_BUNDLE_FILE: &str = "applied.bundle";
const LEGACY_SCOPE_FILE: &str = "applied.scope";

pub struct FleetPolicy {
    settings: FleetSettings,
    cluster: String,
    /// The host name and labels bundle targets are matched against.
    node: NodeIdentity,
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
            node: NodeIdentity::named(node),
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

    /// This node's labels (`[labels]` of `agent.toml`), for label targets.
    pub fn with_labels(mut self, labels: NodeLabels) -> Self {
        self.node = NodeIdentity::new(self.node.hostname.clone(), labels);
        self
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
        if !self.targeted(&bundle) {
            return Err(reject(version, &sha, self.not_targeted(&bundle)));
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

mod recovery;
#[cfg(test)]
mod tests;

pub use recovery::StartReport;
