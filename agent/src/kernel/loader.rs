//! Loads the embedded BPF object into the kernel: kernel offsets and the path-hash key
//! as globals, the rule tables filled before anything attaches, then the programs,
//! then the identity of processes that were already running. The rule tables are
//! [`super::policy_maps`]'s, the pins [`super::pins`]'.

use std::path::Path;

use aya::maps::{Array, HashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::links::FdLink;
use aya::programs::{BtfTracePoint, Lsm, ProgramError};
use aya::{Btf, Ebpf, EbpfError, EbpfLoader};
use edgearmor_probe_abi::{AgentState, ExePath, names, path_hash, programs};
use sha2::{Digest, Sha256};

use crate::host::HostKernel;
use crate::kernel::btf::KernelBtf;
use crate::kernel::pins::{pin_links, record_agent_state};
use crate::kernel::policy_maps::PolicyMaps;
use crate::kernel::readiness::{EnforcementUnavailable, classify_attach_failure};
use crate::kernel::rule_tables::KernelRuleSet;

/// The committed, architecture-neutral object built by `probes/build.sh`.
pub static PROBES_OBJECT: &[u8] =
    aya::include_bytes_aligned!("../../../probes/edgearmor-probes.bpf.o");

/// Hex SHA-256 of [`PROBES_OBJECT`]; printed at start so tests can prove which object ran.
pub fn probes_sha256() -> String {
    Sha256::digest(PROBES_OBJECT)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The loaded programs and the links this process holds: what is attached stays
/// attached for as long as this value lives (or, with a pin directory, as long as
/// the pins do). The running agent keeps it apart from everything that reads events,
/// so no part of the event path can drop enforcement.
pub struct AttachedProbes {
    _ebpf: Ebpf,
    /// Links not pinned: dropping them detaches their programs.
    _owned_links: Vec<FdLink>,
}

/// A ring buffer of kernel records and the kernel's count of records it could not
/// write there.
pub struct KernelEvents {
    pub ring: RingBuf<MapData>,
    pub drops: DropCounter,
}

/// Probes attached and enforcing.
pub struct LoadedProbes {
    pub attached: AttachedProbes,
    pub events: KernelEvents,
    pub policy: PolicyMaps,
    pub seeded_processes: usize,
    /// Optional hooks this kernel refused, each with what that costs.
    pub degraded: Vec<String>,
    /// State pinned by an earlier agent was taken over.
    pub adopted: bool,
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

pub(crate) fn map_failure(name: &str, detail: impl std::fmt::Display) -> EnforcementUnavailable {
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

    let (links, degraded) = attach_all(&mut ebpf, &aya_btf)?;
    let links = match pin_dir {
        Some(dir) => {
            pin_links(dir, links)?;
            Vec::new()
        }
        None => links.into_iter().map(|(_, link)| link).collect(),
    };

    let seeded_processes = seed_identities(&mut ebpf, host, &key)?;
    let events = enforcing_events(&mut ebpf, key, pin_dir.is_some(), adopting)?;
    Ok(LoadedProbes {
        attached: AttachedProbes {
            _ebpf: ebpf,
            _owned_links: links,
        },
        events,
        policy,
        seeded_processes,
        degraded,
        adopted: adopting,
    })
}

/// Each attached program's name and link.
type NamedLinks = Vec<(&'static str, FdLink)>;

/// Attaches every program: the tracepoints, then the LSM hooks. An optional hook this
/// kernel refuses is left out and described in the second list.
fn attach_all(
    ebpf: &mut Ebpf,
    aya_btf: &Btf,
) -> Result<(NamedLinks, Vec<String>), EnforcementUnavailable> {
    let mut links = Vec::new();
    for (program, tracepoint) in programs::BTF_TRACEPOINTS {
        links.push((
            program,
            attach_btf_tracepoint(ebpf, aya_btf, program, tracepoint)?,
        ));
    }
    let mut degraded = Vec::new();
    for (program, hook) in programs::LSM {
        let prog: &mut Lsm = program_of(ebpf, program, hook)?;
        if let Err(e) = prog.load(hook, aya_btf) {
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
    Ok((links, degraded))
}

/// The decision ring buffer and its drop counter; with pins, the counter starts from
/// what an earlier agent already accounted for and remembers what this one has seen.
fn enforcing_events(
    ebpf: &mut Ebpf,
    key: [u64; 2],
    pinned: bool,
    adopting: bool,
) -> Result<KernelEvents, EnforcementUnavailable> {
    let drops = take_drops(ebpf)?;
    let (drops_seen, state) = if pinned {
        let seen = record_agent_state(ebpf, key, adopting)?;
        let map = ebpf
            .take_map(names::AGENT_STATE)
            .ok_or_else(|| map_failure(names::AGENT_STATE, "missing"))?;
        let state = Array::try_from(map).map_err(|e| map_failure(names::AGENT_STATE, e))?;
        (seen, Some(state))
    } else {
        (0, None)
    };
    Ok(KernelEvents {
        ring: take_ring(ebpf, names::EVENTS)?,
        drops: DropCounter {
            baseline: drops_seen,
            state,
            ..drops
        },
    })
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
    /// The tracepoint, attached for as long as this is held.
    pub attached: AttachedProbes,
    pub events: KernelEvents,
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
    let events = KernelEvents {
        ring: take_ring(&mut ebpf, names::EXEC_EVENTS)?,
        drops: take_drops(&mut ebpf)?,
    };
    Ok(MonitorProbes {
        attached: AttachedProbes {
            _ebpf: ebpf,
            _owned_links: vec![link],
        },
        events,
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
        let hash = if bytes.len() <= edgearmor_probe_abi::MAX_HASHED_PATH_BYTES {
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
