//! Loads the embedded BPF object into the kernel: kernel offsets and the path-hash key
//! as globals, the rule tables filled before anything attaches, then the programs,
//! then the identity of processes that were already running. [`PolicyMaps`] later
//! swaps whole policy sets atomically (generation switch, see the ABI crate).

use std::path::Path;

use aya::maps::{Array, HashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{BtfTracePoint, Lsm, ProgramError};
use aya::{Btf, Ebpf, EbpfError, EbpfLoader};
use edgearmor_probe_abi::{
    ActivePolicy, AgentState, ExePath, GlobList, PrefixKey, RuleKey, RuleValue, names, path_hash,
    programs,
};
use sha2::{Digest, Sha256};

use crate::btf::KernelBtf;
use crate::host::HostKernel;
use crate::kernel_rules::KernelRuleSet;
use crate::readiness::{EnforcementUnavailable, classify_attach_failure};

/// The committed, architecture-neutral object built by `probes/build.sh`.
pub static PROBES_OBJECT: &[u8] =
    aya::include_bytes_aligned!("../../probes/edgearmor-probes.bpf.o");

/// Hex SHA-256 of [`PROBES_OBJECT`]; printed at start so tests can prove which object ran.
pub fn probes_sha256() -> String {
    Sha256::digest(PROBES_OBJECT)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Probes attached and enforcing; dropping `ebpf` detaches them.
pub struct LoadedProbes {
    /// Owns the programs and links; kept alive for as long as enforcement should last.
    pub ebpf: Ebpf,
    pub events: RingBuf<MapData>,
    pub drops: DropCounter,
    pub policy: PolicyMaps,
    pub seeded_processes: usize,
    /// Optional hooks this kernel refused, each with what that costs.
    pub degraded: Vec<String>,
    /// State pinned by an earlier agent was taken over.
    pub adopted: bool,
    /// Links this process owns (when nothing is pinned, dropping them detaches).
    pub owned_links: Vec<FdLink>,
}

/// Removes the entries of `map` whose key matches (listed first: deleting while
/// iterating would skip keys).
fn remove_where<K: aya::Pod, V: aya::Pod>(
    map: &mut HashMap<MapData, K, V>,
    stale: impl Fn(&K) -> bool,
) {
    let keys: Vec<K> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| stale(k))
        .collect();
    for k in keys {
        let _ = map.remove(&k);
    }
}

/// Why a policy set could not be written; the previous set stays enforced.
#[derive(Debug, thiserror::Error)]
#[error("writing map {map}: {detail} (the previous policy set stays enforced)")]
pub struct ApplyError {
    pub map: &'static str,
    pub detail: String,
}

/// The rule tables of the loaded probes and the generation they enforce.
pub struct PolicyMaps {
    rules: HashMap<MapData, RuleKey, RuleValue>,
    prefixes: HashMap<MapData, PrefixKey, u32>,
    globs: HashMap<MapData, RuleKey, GlobList>,
    active: Array<MapData, ActivePolicy>,
    generation: u32,
    applied: KernelRuleSet,
    /// The tables hold an earlier agent's entries, which this one does not know.
    adopted: bool,
}

impl PolicyMaps {
    fn take(ebpf: &mut Ebpf, adopting: bool) -> Result<Self, EnforcementUnavailable> {
        fn take_map(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map, EnforcementUnavailable> {
            ebpf.take_map(name)
                .ok_or_else(|| map_failure(name, "missing"))
        }
        Ok(Self {
            rules: HashMap::try_from(take_map(ebpf, names::RULES)?)
                .map_err(|e| map_failure(names::RULES, e))?,
            prefixes: HashMap::try_from(take_map(ebpf, names::PREFIXES)?)
                .map_err(|e| map_failure(names::PREFIXES, e))?,
            globs: HashMap::try_from(take_map(ebpf, names::GLOBS)?)
                .map_err(|e| map_failure(names::GLOBS, e))?,
            active: Array::try_from(take_map(ebpf, names::ACTIVE)?)
                .map_err(|e| map_failure(names::ACTIVE, e))?,
            generation: 0,
            applied: KernelRuleSet::default(),
            adopted: adopting,
        })
        .map(|mut maps: Self| {
            if adopting {
                maps.generation = maps.active.get(&0, 0).map(|a| a.generation).unwrap_or(0);
            }
            maps
        })
    }

    /// The generation being enforced.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Enforces `next` instead of the current set, atomically: `next` is written
    /// under a new generation while the current one stays in force, one write to
    /// `ACTIVE` switches every hook, then the old entries are removed. On a write
    /// error the partial new generation is removed and nothing changes.
    pub fn apply(&mut self, next: KernelRuleSet) -> Result<(), ApplyError> {
        let generation = self.generation.wrapping_add(1);
        if let Err(e) = self.write(&next, generation) {
            self.remove(&next, generation);
            return Err(e);
        }
        let active = ActivePolicy {
            generation,
            class_mask: next.class_mask,
        };
        if let Err(e) = self.active.set(0, active, 0) {
            self.remove(&next, generation);
            return Err(ApplyError {
                map: names::ACTIVE,
                detail: e.to_string(),
            });
        }
        let old = std::mem::replace(&mut self.applied, next);
        self.remove(&old, self.generation);
        self.generation = generation;
        if std::mem::take(&mut self.adopted) {
            self.remove_other_generations();
        }
        Ok(())
    }

    /// Deletes every entry not of the current generation (what an earlier agent left).
    fn remove_other_generations(&mut self) {
        let generation = self.generation;
        remove_where(&mut self.rules, |k| k.generation != generation);
        remove_where(&mut self.prefixes, |k| k.generation != generation);
        remove_where(&mut self.globs, |k| k.generation != generation);
    }

    fn write(&mut self, set: &KernelRuleSet, generation: u32) -> Result<(), ApplyError> {
        for (k, v) in set.rule_entries(generation) {
            self.rules.insert(k, v, 0).map_err(|e| ApplyError {
                map: names::RULES,
                detail: e.to_string(),
            })?;
        }
        for (k, v) in set.prefix_entries(generation) {
            self.prefixes.insert(k, v, 0).map_err(|e| ApplyError {
                map: names::PREFIXES,
                detail: e.to_string(),
            })?;
        }
        for (k, v) in set.glob_entries(generation) {
            self.globs.insert(k, v, 0).map_err(|e| ApplyError {
                map: names::GLOBS,
                detail: e.to_string(),
            })?;
        }
        Ok(())
    }

    /// Removes `set`'s entries of `generation` (missing entries are fine).
    fn remove(&mut self, set: &KernelRuleSet, generation: u32) {
        for (k, _) in set.rule_entries(generation) {
            let _ = self.rules.remove(&k);
        }
        for (k, _) in set.prefix_entries(generation) {
            let _ = self.prefixes.remove(&k);
        }
        for (k, _) in set.glob_entries(generation) {
            let _ = self.globs.remove(&k);
        }
    }
}

/// The kernel's count of events it could not put in the ring buffer.
pub struct DropCounter {
    counts: PerCpuArray<MapData, u64>,
    /// Drops an earlier agent already accounted for (adopted maps keep counting).
    baseline: u64,
    /// With pinned state: where the count seen so far is kept for the next agent.
    state: Option<Array<MapData, AgentState>>,
}

impl DropCounter {
    /// Events dropped and not yet accounted for by an earlier agent, over all CPUs;
    /// remembers what this agent has now seen, so the next one does not count it again.
    pub fn total(&mut self) -> u64 {
        let raw: u64 = self
            .counts
            .get(&0, 0)
            .map(|per_cpu| per_cpu.iter().sum::<u64>())
            .unwrap_or(0);
        if let Some(state) = self.state.as_mut()
            && let Ok(mut current) = state.get(&0, 0)
            && current.drops_seen != raw
        {
            current.drops_seen = raw;
            let _ = state.set(0, current, 0);
        }
        raw.saturating_sub(self.baseline)
    }
}

fn load_failure(step: &str, e: EbpfError) -> EnforcementUnavailable {
    let errno = match &e {
        EbpfError::MapError(aya::maps::MapError::CreateError { io_error, .. }) => {
            io_error.raw_os_error()
        }
        EbpfError::ProgramError(ProgramError::LoadError { io_error, .. }) => {
            io_error.raw_os_error()
        }
        _ => None,
    };
    match errno {
        Some(libc::EPERM) => EnforcementUnavailable::NotPermitted {
            step: step.to_owned(),
        },
        errno => EnforcementUnavailable::Failed {
            step: step.to_owned(),
            errno,
            detail: e.to_string(),
        },
    }
}

fn program_failure(program: &str, hook: &str, e: ProgramError) -> EnforcementUnavailable {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            if io_error.raw_os_error() == Some(libc::EPERM)
                && verifier_log.to_string().trim().is_empty()
            {
                return EnforcementUnavailable::NotPermitted {
                    step: format!("load {program}"),
                };
            }
            let log = verifier_log.to_string();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n");
            EnforcementUnavailable::Verifier {
                program: program.to_owned(),
                log_tail: format!("{io_error}\n{tail}"),
            }
        }
        ProgramError::SyscallError(e) => {
            classify_attach_failure(program, hook, e.io_error.raw_os_error(), e.to_string())
        }
        other => classify_attach_failure(program, hook, None, other.to_string()),
    }
}

/// The verifier's own words for a refusal: the line just before its statistics
/// (e.g. "helper call is not allowed in probe"), else the first line.
fn verifier_reason(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let stats = lines
        .iter()
        .position(|l| l.starts_with("verification time") || l.starts_with("processed "));
    match stats {
        Some(i) if i > 0 => lines[i - 1].trim().to_owned(),
        _ => lines
            .first()
            .map(|l| l.trim().to_owned())
            .unwrap_or_default(),
    }
}

fn map_failure(name: &str, detail: impl std::fmt::Display) -> EnforcementUnavailable {
    EnforcementUnavailable::Failed {
        step: format!("opening map {name}"),
        errno: None,
        detail: detail.to_string(),
    }
}

/// The kernel's view of a rule's path: symlinks resolved when the file exists, since
/// the probes see the executable's real path.
pub fn kernel_path(host: &dyn HostKernel, executable: &str) -> String {
    match host.real_path(Path::new(executable)) {
        Some(real) => real.to_string_lossy().into_owned(),
        None => executable.to_owned(),
    }
}

/// Creates the object's maps with this kernel's offsets and the path-hash key;
/// returns it with the BTF programs attach by. With `pin_dir`, the persistent maps
/// are the ones pinned there (created and pinned when absent).
fn open_object(
    btf: &KernelBtf,
    key: [u64; 2],
    pin_dir: Option<&Path>,
) -> Result<(Ebpf, Btf), EnforcementUnavailable> {
    let offsets = btf
        .kernel_offsets()
        .map_err(EnforcementUnavailable::BadBtf)?;
    let pins: Vec<(&str, std::path::PathBuf)> = pin_dir
        .map(|dir| {
            names::PERSISTENT
                .iter()
                .map(|n| (*n, dir.join(n)))
                .collect()
        })
        .unwrap_or_default();
    let mut loader = EbpfLoader::new();
    loader
        .override_global(names::KERNEL_OFFSETS, &offsets, true)
        .override_global(names::PATH_HASH_KEY, &key, true);
    for (name, path) in &pins {
        loader.map_pin_path(name, path.as_path());
    }
    let ebpf = loader
        .load(PROBES_OBJECT)
        .map_err(|e| load_failure("load the BPF object", e))?;
    let aya_btf = Btf::from_sys_fs().map_err(|e| EnforcementUnavailable::Failed {
        step: "reading kernel BTF for attach".into(),
        errno: None,
        detail: e.to_string(),
    })?;
    Ok((ebpf, aya_btf))
}

/// Loads the probes with `rules` in force from the first attached program on.
/// `key` is the path-hash key `rules` was built with.
///
/// With `pin_dir` (a directory on bpffs), maps and links are pinned there, so
/// enforcement outlives this process. When an earlier agent left pinned state, it is
/// adopted: its maps (identities, unread events, drop counter) are reused, the rules
/// are replaced atomically, and its links are replaced only after the new programs
/// are attached, so there is no moment without enforcement.
pub fn load(
    host: &dyn HostKernel,
    btf: &KernelBtf,
    key: [u64; 2],
    rules: KernelRuleSet,
    pin_dir: Option<&Path>,
) -> Result<LoadedProbes, EnforcementUnavailable> {
    let adopting = pin_dir.is_some_and(|dir| dir.join(names::AGENT_STATE).exists());
    let (mut ebpf, aya_btf) = open_object(btf, key, pin_dir)?;

    // Rules first: once a program attaches it enforces whatever the maps hold.
    let mut policy = PolicyMaps::take(&mut ebpf, adopting)?;
    policy
        .apply(rules)
        .map_err(|e| EnforcementUnavailable::Failed {
            step: "writing the rule tables".into(),
            errno: None,
            detail: e.to_string(),
        })?;

    let mut links = Vec::new();
    for (program, tracepoint) in programs::BTF_TRACEPOINTS {
        links.push((
            program,
            attach_btf_tracepoint(&mut ebpf, &aya_btf, program, tracepoint)?,
        ));
    }
    let mut degraded = Vec::new();
    for (program, hook) in programs::LSM {
        let prog: &mut Lsm = program_of(&mut ebpf, program, hook)?;
        if let Err(e) = prog.load(hook, &aya_btf) {
            let failure = program_failure(program, hook, e);
            if !programs::OPTIONAL.contains(&program) {
                return Err(failure);
            }
            degraded.push(format!(
                "{hook}: this kernel refuses {program} ({}); unlinks are not checked, file rules still apply at open",
                verifier_reason(&failure.to_string())
            ));
            continue;
        }
        let id = prog
            .attach()
            .map_err(|e| program_failure(program, hook, e))?;
        let link = prog
            .take_link(id)
            .map_err(|e| program_failure(program, hook, e))?;
        links.push((program, FdLink::from(link)));
    }
    let links = match pin_dir {
        Some(dir) => {
            pin_links(dir, links)?;
            Vec::new()
        }
        None => links.into_iter().map(|(_, link)| link).collect(),
    };

    let seeded_processes = seed_identities(&mut ebpf, host, &key)?;
    let drops = take_drops(&mut ebpf)?;
    let (drops_seen, state) = if pin_dir.is_some() {
        let seen = record_agent_state(&mut ebpf, key, adopting)?;
        let map = ebpf
            .take_map(names::AGENT_STATE)
            .ok_or_else(|| map_failure(names::AGENT_STATE, "missing"))?;
        let state = Array::try_from(map).map_err(|e| map_failure(names::AGENT_STATE, e))?;
        (seen, Some(state))
    } else {
        (0, None)
    };
    Ok(LoadedProbes {
        events: take_ring(&mut ebpf, names::EVENTS)?,
        drops: DropCounter {
            baseline: drops_seen,
            state,
            ..drops
        },
        ebpf,
        policy,
        seeded_processes,
        degraded,
        adopted: adopting,
        owned_links: links,
    })
}

/// Pins each new link at `<dir>/links/<program>`, replacing (and so detaching) the
/// link an earlier agent pinned there only once the new one is attached.
fn pin_links(dir: &Path, links: Vec<(&str, FdLink)>) -> Result<(), EnforcementUnavailable> {
    let link_dir = dir.join("links");
    std::fs::create_dir_all(&link_dir).map_err(|e| EnforcementUnavailable::Failed {
        step: format!("creating {}", link_dir.display()),
        errno: e.raw_os_error(),
        detail: e.to_string(),
    })?;
    let mut replaced = Vec::new();
    for (program, link) in links {
        let path = link_dir.join(program);
        if path.exists() {
            // Still attached: the fd keeps the old program in place until the new
            // link is pinned, then it is dropped (and detached).
            match PinnedLink::from_pin(&path).map(PinnedLink::unpin) {
                Ok(Ok(old)) => replaced.push(old),
                Ok(Err(e)) => log::warn!("cannot unpin {}: {e}", path.display()),
                Err(e) => log::warn!("cannot open {}: {e}", path.display()),
            }
        }
        link.pin(&path)
            .map_err(|e| EnforcementUnavailable::Failed {
                step: format!("pinning the {program} link at {}", path.display()),
                errno: None,
                detail: e.to_string(),
            })?;
    }
    drop(replaced);
    Ok(())
}

/// Stores the key (and keeps the drop baseline) for the next agent; returns the
/// drop count an earlier agent already accounted for.
fn record_agent_state(
    ebpf: &mut Ebpf,
    key: [u64; 2],
    adopting: bool,
) -> Result<u64, EnforcementUnavailable> {
    let map = ebpf
        .map_mut(names::AGENT_STATE)
        .ok_or_else(|| map_failure(names::AGENT_STATE, "missing"))?;
    let mut state: Array<_, AgentState> =
        Array::try_from(map).map_err(|e| map_failure(names::AGENT_STATE, e))?;
    let previous = state.get(&0, 0).unwrap_or_default();
    let drops_seen = if adopting && previous.valid == 1 {
        previous.drops_seen
    } else {
        0
    };
    state
        .set(
            0,
            AgentState {
                path_hash_key: key,
                drops_seen,
                valid: 1,
            },
            0,
        )
        .map_err(|e| map_failure(names::AGENT_STATE, e))?;
    Ok(drops_seen)
}

/// The path-hash key of the agent whose state is pinned in `dir`, if any: an adopting
/// agent must build its rules with it (identities in the maps are hashed with it).
pub fn pinned_key(dir: &Path) -> Option<[u64; 2]> {
    let data = aya::maps::MapData::from_pin(dir.join(names::AGENT_STATE)).ok()?;
    let state: Array<_, AgentState> = Array::try_from(aya::maps::Map::Array(data)).ok()?;
    let value = state.get(&0, 0).ok()?;
    (value.valid == 1).then_some(value.path_hash_key)
}

/// `edgearmor unload`: detaches every pinned program and removes the pinned maps.
/// Returns how many pins were removed. The kernel releases an unpinned tracing link
/// asynchronously (after an RCU grace period), so this waits until the links are
/// gone from the kernel's list: when it returns, nothing is enforced any more.
pub fn unload(dir: &Path) -> std::io::Result<usize> {
    let mut removed = 0;
    let mut link_ids = Vec::new();
    let links = dir.join("links");
    match std::fs::read_dir(&links) {
        Ok(entries) => {
            for entry in entries {
                let path = entry?.path();
                match PinnedLink::from_pin(&path) {
                    Ok(pinned) => {
                        let link = pinned.unpin()?;
                        if let Ok(info) = link.info() {
                            link_ids.push(info.id());
                        }
                    }
                    Err(e) => {
                        log::warn!("{}: not a pinned link ({e}), removed", path.display());
                        std::fs::remove_file(&path)?;
                    }
                }
                removed += 1;
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                let path = entry?.path();
                if !path.is_dir() {
                    std::fs::remove_file(&path)?;
                    removed += 1;
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let _ = std::fs::remove_dir(&links);
    let _ = std::fs::remove_dir(dir);
    // Bounded: a link the kernel keeps (someone else holds it) is reported.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let live: Vec<u32> = aya::programs::loaded_links()
            .filter_map(Result::ok)
            .map(|l| l.id())
            .filter(|id| link_ids.contains(id))
            .collect();
        if live.is_empty() {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err(std::io::Error::other(format!(
                "links {live:?} are still attached (another process holds them)"
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Ok(removed)
}

/// The program `name` of the object, as its concrete type.
fn program_of<'a, P>(
    ebpf: &'a mut Ebpf,
    name: &str,
    attach_to: &str,
) -> Result<&'a mut P, EnforcementUnavailable>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| map_failure(name, "program missing from object"))?
        .try_into()
        .map_err(|e: ProgramError| program_failure(name, attach_to, e))
}

fn attach_btf_tracepoint(
    ebpf: &mut Ebpf,
    btf: &Btf,
    program: &str,
    tracepoint: &str,
) -> Result<FdLink, EnforcementUnavailable> {
    let prog: &mut BtfTracePoint = program_of(ebpf, program, tracepoint)?;
    prog.load(tracepoint, btf)
        .map_err(|e| program_failure(program, tracepoint, e))?;
    let id = prog
        .attach()
        .map_err(|e| program_failure(program, tracepoint, e))?;
    let link = prog
        .take_link(id)
        .map_err(|e| program_failure(program, tracepoint, e))?;
    Ok(FdLink::from(link))
}

fn take_ring(ebpf: &mut Ebpf, name: &str) -> Result<RingBuf<MapData>, EnforcementUnavailable> {
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| map_failure(name, "missing"))?;
    RingBuf::try_from(map).map_err(|e| map_failure(name, e))
}

fn take_drops(ebpf: &mut Ebpf) -> Result<DropCounter, EnforcementUnavailable> {
    let map = ebpf
        .take_map(names::EVENT_DROPS)
        .ok_or_else(|| map_failure(names::EVENT_DROPS, "missing"))?;
    PerCpuArray::try_from(map)
        .map(|counts| DropCounter {
            counts,
            baseline: 0,
            state: None,
        })
        .map_err(|e| map_failure(names::EVENT_DROPS, e))
}

/// Monitor-only probes: one exec tracepoint and its ring buffer.
pub struct MonitorProbes {
    pub ebpf: Ebpf,
    pub events: RingBuf<MapData>,
    pub drops: DropCounter,
    /// The tracepoint's link: attached for as long as it is held.
    pub link: FdLink,
}

/// Loads only the exec tracepoint, for kernels where BPF-LSM cannot attach. Needs BTF
/// (for offsets and the typed tracepoint) but no BPF trampoline.
pub fn load_monitor(
    host: &dyn HostKernel,
    btf: &KernelBtf,
) -> Result<MonitorProbes, EnforcementUnavailable> {
    let key = host
        .random_key()
        .map_err(|e| EnforcementUnavailable::Failed {
            step: "reading a random path-hash key".into(),
            errno: e.raw_os_error(),
            detail: e.to_string(),
        })?;
    let (mut ebpf, aya_btf) = open_object(btf, key, None)?;
    let (program, tracepoint) = programs::MONITOR_EXEC;
    let link = attach_btf_tracepoint(&mut ebpf, &aya_btf, program, tracepoint)?;
    Ok(MonitorProbes {
        events: take_ring(&mut ebpf, names::EXEC_EVENTS)?,
        drops: take_drops(&mut ebpf)?,
        ebpf,
        link,
    })
}

/// Gives processes that started before the probes their identity. Runs after attach
/// and never overwrites (`BPF_NOEXIST`): an exec seen by the kernel is fresher than
/// what /proc said a moment ago.
fn seed_identities(
    ebpf: &mut Ebpf,
    host: &dyn HostKernel,
    key: &[u64; 2],
) -> Result<usize, EnforcementUnavailable> {
    const BPF_NOEXIST: u64 = 1;
    let mut seeded = 0;
    let running = host.process_executables();
    {
        let map = ebpf
            .map_mut(names::EXE_PATHS)
            .ok_or_else(|| map_failure(names::EXE_PATHS, "missing"))?;
        let mut paths: HashMap<_, u64, ExePath> =
            HashMap::try_from(map).map_err(|e| map_failure(names::EXE_PATHS, e))?;
        for (_, exe) in &running {
            let bytes = exe.as_os_str().as_encoded_bytes();
            if let Some(path) = ExePath::from_bytes(bytes) {
                let _ = paths.insert(path_hash(key, bytes), path, 0);
            }
        }
    }
    let map = ebpf
        .map_mut(names::PROC_IDENTITY)
        .ok_or_else(|| map_failure(names::PROC_IDENTITY, "missing"))?;
    let mut identity: HashMap<_, u32, u64> =
        HashMap::try_from(map).map_err(|e| map_failure(names::PROC_IDENTITY, e))?;
    for (tgid, exe) in &running {
        let bytes = exe.as_os_str().as_encoded_bytes();
        let hash = if bytes.len() < edgearmor_probe_abi::PATH_CAP {
            path_hash(key, bytes)
        } else {
            0
        };
        if identity.insert(tgid, hash, BPF_NOEXIST).is_ok() {
            seeded += 1;
        }
    }
    Ok(seeded)
}

#[cfg(test)]
mod tests {
    #[test]
    fn verifier_reason_is_the_line_before_the_statistics() {
        let log = "the kernel's verifier rejected check_unlink:\nInvalid argument (os error 22)\n35: (85) call bpf_d_path#147\nhelper call is not allowed in probe\nverification time 2054 usec\nprocessed 34 insns";
        assert_eq!(
            super::verifier_reason(log),
            "helper call is not allowed in probe"
        );
        assert_eq!(super::verifier_reason("just one line"), "just one line");
    }
}
