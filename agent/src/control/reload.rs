//! Changing what is enforced while the agent runs: a reload (SIGHUP, or changed policy
//! files) rebuilds the kernel tables from the policy sources and swaps them in with one
//! generation switch; a fleet bundle is checked, unpacked into the bundle directory and
//! applied the same way, and its result reported. On any failure the set in force stays.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use edgearmor_bundle::Scope;

use crate::control::fleet::{BundleReport, FleetPolicy};
use crate::control::policy_state::PolicyState;
use crate::events::pipeline::unix_micros;
use crate::host::HostKernel;
use crate::kernel::policy_maps::PolicyMaps;
use crate::sinks::mqtt::{Inbound, RetainedPublisher};
use crate::sinks::outputs::PolicyUpdates;

/// The policy set in force and everything a new one must reach: the kernel tables
/// (none in monitor-only mode), the outputs' policy table, the batcher's policy-set id.
pub struct Enforced<'h> {
    pub host: &'h dyn HostKernel,
    pub state: PolicyState,
    pub maps: Option<PolicyMaps>,
    pub updates: PolicyUpdates,
    pub batch_policy_set: Arc<AtomicU64>,
    /// Reloads refused so far (the `policy_reloads_failed` counter).
    pub reloads_failed: u64,
}

impl Enforced<'_> {
    /// Re-reads the policies and swaps them in atomically; on any failure the set in
    /// force stays, and the error says why.
    pub fn reload(&mut self) -> Result<(), String> {
        let Some(maps) = self.maps.as_mut() else {
            return Err("monitor-only mode: policies cannot be reloaded here".into());
        };
        let (set, summary) = self
            .state
            .build(self.host)
            .map_err(|e| format!("reload failed, the previous policy set stays enforced: {e}"))?;
        maps.apply(set)
            .map_err(|e| format!("reload failed, the previous policy set stays enforced: {e}"))?;
        let table = self.state.catalog.snapshot();
        let hash = table.hash;
        self.updates.publish(table);
        self.batch_policy_set.store(hash, Ordering::Relaxed);
        eprintln!(
            "edgearmor: policies applied: {summary} (generation {}, policy table {hash:016x})",
            maps.generation()
        );
        Ok(())
    }

    /// [`Self::reload`], logging a failure.
    pub fn reload_logged(&mut self) {
        if let Err(e) = self.reload() {
            self.reloads_failed += 1;
            log::error!("{e}");
        }
    }

    /// A reload if a policy file changed since the last look.
    pub fn reload_if_changed(&mut self) {
        if self.state.source.as_mut().is_some_and(|s| s.changed()) {
            log::info!("policy files changed: reloading");
            self.reload_logged();
        }
    }
}

/// Where bundles come from and where their results go.
pub struct Bundles {
    pub fleet: FleetPolicy,
    /// Bundles arriving here are node-specific; elsewhere, fleet-wide.
    pub node_topic: String,
    /// The retained publisher and topic of `.../policy/reported` (with MQTT).
    pub reports: Option<(RetainedPublisher, String)>,
}

impl Bundles {
    /// Checks an offered bundle, applies it through `enforced` when it passes, and
    /// reports the result (nothing for the bundle in force offered again).
    pub fn offer(&mut self, message: &Inbound, enforced: &mut Enforced<'_>) {
        // The topic's scope; the bundle's signed scope must be the same.
        let scope = if message.topic == self.node_topic {
            Scope::Node
        } else {
            Scope::Fleet
        };
        let Some(report) = apply_bundle(&mut self.fleet, scope, &message.payload, || {
            enforced.reload()
        }) else {
            return;
        };
        eprintln!(
            "edgearmor: bundle v{} from the {} topic {}{}",
            report.version,
            report.scope.as_str(),
            if report.applied {
                "applied"
            } else {
                "rejected: "
            },
            report.reason
        );
        if let Some((publisher, topic)) = &self.reports {
            let json = report.to_json(unix_micros() / 1_000_000);
            publisher.publish(topic.clone(), json.into_bytes());
        }
    }
}

/// Checks an offered bundle and, when it passes, applies it with `reload`; returns
/// what to report (nothing for the bundle in force offered again).
pub fn apply_bundle(
    fleet: &mut FleetPolicy,
    scope: Scope,
    payload: &[u8],
    reload: impl FnOnce() -> Result<(), String>,
) -> Option<BundleReport> {
    let staged = match fleet.offer(scope, payload) {
        Ok(None) => return None,
        Ok(Some(staged)) => staged,
        Err(report) => return Some(report),
    };
    let rejected = |reason: String| BundleReport {
        scope,
        version: staged.bundle.version(),
        sha256: staged.bundle.sha256_hex().to_owned(),
        applied: false,
        reason,
    };
    let outcome = fleet
        .unpack(&staged)
        .map_err(|e| format!("unpacking: {e}"))
        .and_then(|()| reload());
    if let Err(reason) = outcome {
        let report = rejected(reason);
        if let Err(e) = fleet.restore() {
            log::error!("fleet: cannot restore the bundle in force: {e}");
        }
        return Some(report);
    }
    match fleet.commit(staged) {
        Ok(report) => Some(report),
        Err(e) => {
            // Enforced but not recorded: the next start re-applies what is on disk.
            log::error!("fleet: bundle applied but its version could not be recorded: {e}");
            None
        }
    }
}
