//! Starting the agent, in order: signals (so a stop during the slow load is kept), the
//! pinned state of an earlier agent, the fleet's bundle state, the policies, the kernel
//! (enforcing, or monitor-only), then the outputs.

use std::path::{Path, PathBuf};

use super::report::{KernelFacts, Reporter};
use super::{Agent, StartError};
use crate::cli::ConfigOrigin;
use crate::commands::service::ServiceNotifier;
use crate::commands::session::{Session, node_name, reload_signals, stop_signals};
use crate::config::{AgentConfig, Enforcement};
use crate::control::fleet::{FleetPolicy, FleetSettings};
use crate::control::policy_state::PolicyState;
use crate::control::reload::{Bundles, Enforced};
use crate::control::self_protection::{LockIdentity, ProtectedPaths};
use crate::control::setid_rules::SetidRuleSet;
use crate::events::pipeline::{Batcher, unix_micros};
use crate::events::ringbuf::{ExecWatcher, KernelSource, RingbufReader};
use crate::host::{ClockSteps, HostKernel, KERNEL_BTF};
use crate::kernel::btf::KernelBtf;
use crate::kernel::loader::{self, AttachedProbes};
use crate::kernel::lock::LockRequest;
use crate::kernel::pins;
use crate::kernel::policy_maps::PolicyMaps;
use crate::kernel::readiness::{self, EnforcementUnavailable};
use crate::kernel::rule_tables::KernelRuleSet;
use crate::sinks::outputs::{AgentQueue, Outputs, batch_policy};

/// What the kernel side came up as.
struct KernelStart<'h> {
    probes: AttachedProbes,
    source: KernelSource<'h>,
    /// The rule tables (enforcing only).
    maps: Option<PolicyMaps>,
    /// `Err(reason)` when this kernel cannot enforce: the birth message says so.
    enforcement: Result<(), String>,
    /// The `ready:` line's description.
    ready: String,
    /// What `edgearmor status` says about the kernel side.
    facts: KernelFacts,
}

impl<'h> Agent<'h> {
    pub fn start(
        host: &'h dyn HostKernel,
        config: AgentConfig,
        rules: SetidRuleSet,
        origin: &ConfigOrigin,
    ) -> Result<Self, StartError> {
        let stop_signals = stop_signals().map_err(StartError::input)?;
        let reload_signals = reload_signals().map_err(StartError::input)?;
        // Before anything else: this binary is exempt from a locked kernel's
        // self-protection, so it must not run with another configuration.
        let identity = lock_gate(host, &config, origin)?;
        // Pinned state outlives the agent; an earlier agent's is adopted (same key).
        let pin_dir = pin_dir(&config, host);
        let key = match pin_dir.as_deref().and_then(pins::pinned_key) {
            Some(key) => key,
            None => host
                .random_key()
                .map_err(|e| StartError::input(format!("cannot read random bytes: {e}")))?,
        };
        let node = node_name(&config, host).map_err(|e| StartError::input(e.to_string()))?;
        let fleet = fleet_policy(&config, &node)?;
        let bundle_dir = fleet.as_ref().map(FleetPolicy::policy_dir);
        let mut state = PolicyState::new(&config, node.clone(), rules, key, bundle_dir);
        if let Some(version) = fleet.as_ref().and_then(|f| f.applied_version()) {
            log::info!("fleet bundle version {version} in force");
        }
        let mut mountpoints = Vec::new();
        if identity.is_some() {
            let paths = ProtectedPaths::of(&config, &origin.file, &agent_exe()?);
            state.protect_self(paths.policy().map_err(StartError::input)?);
            mountpoints = paths.mountpoints(host).map_err(StartError::input)?;
        }
        let (kernel_set, summary) = state.build(host).map_err(StartError::input)?;
        log::info!("{summary}");
        let lock = match identity {
            Some(identity) => Some(LockRequest {
                identity,
                policy_id: state.self_protection_id().ok_or_else(|| {
                    StartError::input("locked mode: the self-protection policy has no id")
                })?,
                mountpoints,
            }),
            None => None,
        };
        let kernel = start_kernel(host, &config, &mut state, key, kernel_set, (pin_dir, lock))?;
        let Session {
            agent,
            policies,
            outputs,
            ledger,
        } = Session::start(&config, state.catalog.snapshot(), host, kernel.enforcement)
            .map_err(StartError::input)?;
        eprintln!(
            "edgearmor: ready: {}, policy set {:016x})",
            kernel.ready, policies.hash
        );
        let batcher = Batcher::new(agent, policies.hash, batch_policy(&config));
        let reporter = reporter(&config, &outputs, &ledger, &batcher, kernel.facts);
        let bundles = fleet.map(|fleet| bundles(fleet, &config, &node, &outputs));
        let enforced = Enforced {
            host,
            state,
            maps: kernel.maps,
            updates: outputs.policy_updates(),
            batch_policy_set: batcher.policy_set_handle(),
            reloads_failed: 0,
        };
        Ok(Agent {
            reporter,
            clock_steps: clock_steps(host),
            config,
            probes: kernel.probes,
            source: kernel.source,
            enforced,
            bundles,
            queue: AgentQueue::default(),
            batcher,
            outputs,
            ledger,
            stop_signals,
            reload_signals,
        })
    }
}

/// The bundle side of the fleet: where bundles arrive and their reports go. What the
/// start repaired in the fleet state (already logged) is retained on
/// `.../policy/reported` once connected.
fn bundles(fleet: FleetPolicy, config: &AgentConfig, node: &str, outputs: &Outputs) -> Bundles {
    let mut bundles = Bundles {
        fleet,
        node_topic: config.mqtt.topics(&config.cluster, node).node_bundle,
        reports: outputs
            .mqtt
            .as_ref()
            .map(|m| m.retained_handle())
            .zip(outputs.bundle_reported_topic.clone()),
    };
    let repairs = bundles.fleet.take_start_report();
    if let (Some((publisher, topic)), Some(report)) = (&bundles.reports, repairs) {
        let json = report.to_json(unix_micros() / 1_000_000);
        publisher.publish(topic.clone(), json.into_bytes());
    }
    bundles
}

/// The reports' sources: the outputs' birth and broker link, the ledger, the batcher.
fn reporter(
    config: &AgentConfig,
    outputs: &Outputs,
    ledger: &crate::events::pipeline::SharedLedger,
    batcher: &Batcher,
    facts: KernelFacts,
) -> Reporter {
    let mut reporter = Reporter::new(config, ServiceNotifier::from_env(), outputs.status_board());
    reporter.mqtt = outputs
        .mqtt
        .as_ref()
        .map(|m| (m.status_handle(), config.mqtt.broker.clone()));
    reporter.ledger = ledger.clone();
    reporter.alerts_sent = batcher.alerts_sent_handle();
    reporter.kernel = facts;
    reporter
}

/// Wake-ups on wall-clock steps, or none (logged) where the kernel cannot give them.
fn clock_steps(host: &dyn HostKernel) -> ClockSteps {
    host.clock_steps().unwrap_or_else(|e| {
        log::warn!(
            "cannot watch for wall-clock steps ({e}): a step is noticed at the next kernel event, whose time may be off by the step"
        );
        ClockSteps::none()
    })
}

/// The fleet's bundle state, when `[fleet] public_keys` is set.
fn fleet_policy(config: &AgentConfig, node: &str) -> Result<Option<FleetPolicy>, StartError> {
    if config.fleet.public_keys.is_empty() {
        return Ok(None);
    }
    let fleet = FleetSettings::load(
        &config.fleet.public_keys,
        config.fleet.bundle_max_bytes,
        config.fleet.state_dir.clone(),
    )
    .and_then(|s| FleetPolicy::new(s, &config.cluster, node))
    .map(|fleet| fleet.with_labels(config.labels.clone()))
    .map_err(|e| StartError::input(e.to_string()))?;
    // `new` leaves the bundle directory in place (empty when nothing is applied): it is
    // a policy source, so the first bundle is noticed like any new policy file.
    Ok(Some(fleet))
}

/// Loads and attaches the enforcing probes; where this kernel cannot, falls back to
/// monitor-only mode (`enforcement = "auto"`) or refuses (`"required"`).
fn start_kernel<'h>(
    host: &'h dyn HostKernel,
    config: &AgentConfig,
    state: &mut PolicyState,
    key: [u64; 2],
    kernel_set: KernelRuleSet,
    (pin_dir, lock): (Option<PathBuf>, Option<LockRequest>),
) -> Result<KernelStart<'h>, StartError> {
    let aliases = format!(
        "{}, {}",
        kernel_set.aliases.report(),
        kernel_set.exec_aliases.report_executables()
    );
    let enforcing = readiness::check_kernel(host).and_then(|btf| {
        loader::load(
            host,
            &btf,
            key,
            kernel_set,
            pin_dir.as_deref(),
            lock.as_ref(),
        )
    });
    let probes = match enforcing {
        // Locked mode never falls back: an agent that cannot lock does not run.
        Err(e) if lock.is_some() => {
            return Err(StartError::kernel(format!(
                "cannot lock (locked = true): {e}"
            )));
        }
        Ok(probes) => probes,
        Err(e) if falls_back(config.enforcement, &e) => {
            return start_monitor(host, state, e.to_string());
        }
        Err(e) if e.kernel_lacks_bpf_lsm() => {
            return Err(StartError::kernel(format!("cannot enforce here: {e}")));
        }
        Err(e) => {
            return Err(StartError::kernel(format!(
                "loading the enforcing probes failed: {e}; BPF-LSM itself works here, so enforcement = \"auto\" does not fall back to monitor-only mode"
            )));
        }
    };
    for fact in &probes.covered_elsewhere {
        log::info!("{fact}");
    }
    let mut notes = if probes.covered_elsewhere.is_empty() {
        String::new()
    } else {
        format!(", {}", probes.covered_elsewhere.join("; "))
    };
    match (&pin_dir, probes.adopted) {
        (Some(dir), true) => notes.push_str(&format!(
            ", adopted the enforcement pinned in {}",
            dir.display()
        )),
        (Some(dir), false) => notes.push_str(&format!(", pinned in {}", dir.display())),
        (None, _) => notes.push_str(", not pinned: enforcement stops with the agent"),
    }
    notes.push_str(&format!(", {aliases}"));
    let facts = KernelFacts {
        unavailable: None,
        pin_dir: pin_dir.clone(),
        adopted: probes.adopted,
        ring_bytes: Some(u64::from(edgearmor_probe_abi::EVENTS_RING_BYTES)),
        ring_usage: ring_usage(host, &probes.events),
    };
    if let Some(locked) = &probes.locked {
        notes.push_str(&format!(
            ", locked (tamper protection: agent inode {}, config inode {})",
            locked.agent_ino, locked.config_ino
        ));
    }
    let reader = RingbufReader::new(probes.events, host)
        .map_err(|e| StartError::input(format!("cannot watch the event ring buffer: {e}")))?;
    Ok(KernelStart {
        probes: probes.attached,
        source: KernelSource::Enforcing(reader),
        maps: Some(probes.policy),
        enforcement: Ok(()),
        facts,
        ready: format!(
            "enforcing on kernel {} (probes sha256 {}, {} running tasks identified{notes}",
            host.release(),
            loader::probes_sha256(),
            probes.identified_tasks
        ),
    })
}

/// The ring buffer's fill level for the status, or none (logged) if its pages cannot be
/// mapped.
fn ring_usage(
    host: &dyn HostKernel,
    events: &loader::KernelEvents,
) -> Option<std::rc::Rc<crate::kernel::ring_usage::RingUsage>> {
    use std::os::fd::AsFd;
    let page = host
        .page_size()
        .ok()
        .and_then(|p| usize::try_from(p).ok())?;
    match crate::kernel::ring_usage::RingUsage::new(events.ring.as_fd(), page) {
        Ok(usage) => Some(std::rc::Rc::new(usage)),
        Err(e) => {
            log::warn!("cannot map the ring buffer's positions (no ringbuf_used_bytes): {e}");
            None
        }
    }
}

/// Whether a failed enforcing load becomes monitor-only mode: only under `auto`, and
/// only when BPF-LSM cannot run here (see `kernel_lacks_bpf_lsm`). A load that breaks
/// after the kernel said it can (rule tables, maps, pins, the verifier) is fatal:
/// running unenforced because of it would pass a broken load off as a limitation.
fn falls_back(enforcement: Enforcement, failure: &EnforcementUnavailable) -> bool {
    enforcement == Enforcement::Auto && failure.kernel_lacks_bpf_lsm()
}

/// Monitor-only mode: what the kernel can still do without BPF-LSM.
fn start_monitor<'h>(
    host: &'h dyn HostKernel,
    state: &mut PolicyState,
    reason: String,
) -> Result<KernelStart<'h>, StartError> {
    log::warn!("cannot enforce here: {reason}; falling back to monitor-only mode");
    let failed = |monitor: String| {
        StartError::kernel(format!(
            "cannot enforce here: {reason}; monitor-only mode failed too: {monitor}"
        ))
    };
    let blob = host
        .read(Path::new(KERNEL_BTF))
        .map_err(|e| failed(format!("no kernel BTF ({e})")))?;
    let btf = KernelBtf::parse(&blob).map_err(|e| failed(e.to_string()))?;
    // Not held while aya parses the BTF again to load.
    drop(blob);
    let probes = loader::load_monitor(host, &btf).map_err(|e| failed(e.to_string()))?;
    let watched = state
        .setid
        .rules
        .iter()
        .filter_map(|r| {
            let executable = r.executable.as_ref()?;
            let id = state.catalog.intern(r.policy_meta());
            Some((loader::kernel_path(host, executable), id))
        })
        .collect();
    let ring = ring_usage(host, &probes.events);
    let watcher = ExecWatcher::new(probes.events, host, watched)
        .map_err(|e| failed(format!("cannot watch the exec ring buffer: {e}")))?;
    Ok(KernelStart {
        probes: probes.attached,
        source: KernelSource::Monitoring(watcher),
        maps: None,
        ready: format!(
            "monitor-only: enforcement unavailable ({reason}); watching execs of {} executable(s) on kernel {} (probes sha256 {}",
            state.setid.rules.len(),
            host.release(),
            loader::probes_sha256()
        ),
        facts: KernelFacts {
            unavailable: Some(reason.clone()),
            ring_bytes: Some(u64::from(edgearmor_probe_abi::EXEC_EVENTS_RING_BYTES)),
            ring_usage: ring,
            ..KernelFacts::default()
        },
        enforcement: Err(reason),
    })
}

/// The running binary, as the kernel resolved it at exec.
fn agent_exe() -> Result<PathBuf, StartError> {
    std::fs::read_link("/proc/self/exe")
        .map_err(|e| StartError::input(format!("locked mode: cannot read /proc/self/exe: {e}")))
}

/// Refuses a `run` a locked kernel does not allow ([`refusal`]), whatever
/// `pin_dir` the configuration names (the marker is at a fixed path, and every
/// loaded `LOCK_STATE` map is read, pinned in sight or not); with
/// `locked = true`, who this agent is for the lock.
fn lock_gate(
    host: &dyn HostKernel,
    config: &AgentConfig,
    origin: &ConfigOrigin,
) -> Result<Option<LockIdentity>, StartError> {
    crate::commands::locked_gate(host, config, origin).map_err(StartError::input)?;
    if !config.locked {
        return Ok(None);
    }
    LockIdentity::of(host, &origin.file, &agent_exe()?)
        .map(Some)
        .map_err(|e| {
            StartError::input(format!(
                "locked mode: cannot identify the agent binary and {}: {e}",
                origin.file.display()
            ))
        })
}

/// The pin directory, if pinning is configured and possible here (logged if not).
fn pin_dir(config: &AgentConfig, host: &dyn HostKernel) -> Option<PathBuf> {
    if config.pin_dir.as_os_str().is_empty() {
        return None;
    }
    let parent = config.pin_dir.parent().unwrap_or(Path::new("/"));
    if !host.is_bpffs(parent) && !host.is_bpffs(&config.pin_dir) {
        log::warn!(
            "pin_dir {}: not on a mounted bpffs (mount -t bpf bpf {}): enforcement will stop with the agent",
            config.pin_dir.display(),
            parent.display()
        );
        return None;
    }
    if let Err(e) = std::fs::create_dir_all(&config.pin_dir) {
        log::warn!(
            "pin_dir {}: {e}: enforcement will stop with the agent",
            config.pin_dir.display()
        );
        return None;
    }
    Some(config.pin_dir.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_falls_back_only_for_a_kernel_without_bpf_lsm() {
        let inactive = EnforcementUnavailable::BpfLsmInactive {
            active: "capability".into(),
        };
        let broken = EnforcementUnavailable::Failed {
            step: "opening map RULES".into(),
            errno: Some(libc::ENOMEM),
            detail: "create".into(),
        };
        assert!(falls_back(Enforcement::Auto, &inactive));
        assert!(!falls_back(Enforcement::Required, &inactive));
        assert!(!falls_back(Enforcement::Auto, &broken));
        assert!(!falls_back(Enforcement::Required, &broken));
    }
}
