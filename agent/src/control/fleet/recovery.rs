//! What a start repairs in the fleet state: a damaged applied-state file (replaced by
//! its last good copy), a policy directory a crash left missing, half-replaced or
//! holding uncommitted files (restored from the applied bundle's signed bytes kept in
//! `state_dir`); each repair logged and reported once.

use edgearmor_bundle::files::{self, replace_atomically};
use edgearmor_bundle::{AppliedState, BundleError, Scope, differences, unpack, verify};

use super::{FleetPolicy, LEGACY_BUNDLE_FILE, StagedBundle, remove_any, remove_unless_directory};

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
        super::reported_json(
            self.version,
            &self.sha256,
            self.scope.map_or("", Scope::as_str),
            self.result,
            &self.detail,
            unix_secs,
        )
    }
}

impl FleetPolicy {
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
    pub(super) fn recover(&mut self) {
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
        self.restore_policy_dir(&applied, &staged);
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

    /// Makes the policy directory hold exactly the applied bundle's files, reporting
    /// what it found and did.
    fn restore_policy_dir(&mut self, applied: &AppliedState, staged: &StagedBundle) {
        let policy_dir = self.policy_dir();
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
    }
}
