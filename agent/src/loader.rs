//! Loads the embedded BPF object into the kernel: kernel offsets and the path-hash key
//! as globals, the rule map filled before anything attaches, then the programs, then
//! the identity of processes that were already running.

use std::path::Path;

use aya::maps::{HashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::{BtfTracePoint, Lsm, ProgramError};
use aya::{Btf, Ebpf, EbpfError, EbpfLoader};
use edgearmor_probe_abi::{
    ExePath, SETID_ANY_EXECUTABLE, SetidRule as KernelSetidRule, names, path_hash, programs,
};
use sha2::{Digest, Sha256};

use crate::btf::KernelBtf;
use crate::host::HostKernel;
use crate::readiness::{EnforcementUnavailable, classify_attach_failure};
use crate::rules::SetidRuleSet;

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
    pub seeded_processes: usize,
}

/// The kernel's count of events it could not put in the ring buffer.
pub struct DropCounter(PerCpuArray<MapData, u64>);

impl DropCounter {
    /// Events dropped since load, summed over all CPUs.
    pub fn total(&self) -> u64 {
        self.0
            .get(&0, 0)
            .map(|per_cpu| per_cpu.iter().sum())
            .unwrap_or(0)
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

/// Creates the object's maps with this kernel's offsets and a fresh path-hash key;
/// returns it with the BTF programs attach by, and the key.
fn open_object(
    host: &dyn HostKernel,
    btf: &KernelBtf,
) -> Result<(Ebpf, Btf, [u64; 2]), EnforcementUnavailable> {
    let offsets = btf
        .kernel_offsets()
        .map_err(EnforcementUnavailable::BadBtf)?;
    let key = host
        .random_key()
        .map_err(|e| EnforcementUnavailable::Failed {
            step: "reading a random path-hash key".into(),
            errno: e.raw_os_error(),
            detail: e.to_string(),
        })?;
    let ebpf = EbpfLoader::new()
        .override_global(names::KERNEL_OFFSETS, &offsets, true)
        .override_global(names::PATH_HASH_KEY, &key, true)
        .load(PROBES_OBJECT)
        .map_err(|e| load_failure("load the BPF object", e))?;
    let aya_btf = Btf::from_sys_fs().map_err(|e| EnforcementUnavailable::Failed {
        step: "reading kernel BTF for attach".into(),
        errno: None,
        detail: e.to_string(),
    })?;
    Ok((ebpf, aya_btf, key))
}

pub fn load(
    host: &dyn HostKernel,
    btf: &KernelBtf,
    rules: &SetidRuleSet,
) -> Result<LoadedProbes, EnforcementUnavailable> {
    let (mut ebpf, aya_btf, key) = open_object(host, btf)?;

    // Rules first: once a program attaches it enforces whatever the map holds.
    {
        let map = ebpf
            .map_mut(names::SETID_RULES)
            .ok_or_else(|| map_failure(names::SETID_RULES, "missing"))?;
        let mut rule_map: HashMap<_, u64, KernelSetidRule> =
            HashMap::try_from(map).map_err(|e| map_failure(names::SETID_RULES, e))?;
        for (executable, value) in rules.kernel_entries() {
            let key_hash = match executable {
                None => SETID_ANY_EXECUTABLE,
                Some(executable) => {
                    let path = kernel_path(host, executable);
                    if path != executable {
                        log::info!("rule for {executable} applies to its real path {path}");
                    }
                    let Some(exe) = ExePath::from_bytes(path.as_bytes()) else {
                        log::warn!("rule for {executable}: real path {path} is too long, skipped");
                        continue;
                    };
                    path_hash(&key, &exe.words)
                }
            };
            rule_map
                .insert(key_hash, value, 0)
                .map_err(|e| map_failure(names::SETID_RULES, e))?;
        }
    }

    for (program, tracepoint) in programs::BTF_TRACEPOINTS {
        attach_btf_tracepoint(&mut ebpf, &aya_btf, program, tracepoint)?;
    }
    for (program, hook) in programs::LSM {
        let prog: &mut Lsm = program_of(&mut ebpf, program, hook)?;
        prog.load(hook, &aya_btf)
            .map_err(|e| program_failure(program, hook, e))?;
        prog.attach()
            .map_err(|e| program_failure(program, hook, e))?;
    }

    let seeded_processes = seed_identities(&mut ebpf, host, &key)?;
    Ok(LoadedProbes {
        events: take_ring(&mut ebpf, names::EVENTS)?,
        drops: take_drops(&mut ebpf)?,
        ebpf,
        seeded_processes,
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
) -> Result<(), EnforcementUnavailable> {
    let prog: &mut BtfTracePoint = program_of(ebpf, program, tracepoint)?;
    prog.load(tracepoint, btf)
        .map_err(|e| program_failure(program, tracepoint, e))?;
    prog.attach()
        .map_err(|e| program_failure(program, tracepoint, e))?;
    Ok(())
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
        .map(DropCounter)
        .map_err(|e| map_failure(names::EVENT_DROPS, e))
}

/// Monitor-only probes: one exec tracepoint and its ring buffer.
pub struct MonitorProbes {
    pub ebpf: Ebpf,
    pub events: RingBuf<MapData>,
    pub drops: DropCounter,
}

/// Loads only the exec tracepoint, for kernels where BPF-LSM cannot attach. Needs BTF
/// (for offsets and the typed tracepoint) but no BPF trampoline.
pub fn load_monitor(
    host: &dyn HostKernel,
    btf: &KernelBtf,
) -> Result<MonitorProbes, EnforcementUnavailable> {
    let (mut ebpf, aya_btf, _) = open_object(host, btf)?;
    let (program, tracepoint) = programs::MONITOR_EXEC;
    attach_btf_tracepoint(&mut ebpf, &aya_btf, program, tracepoint)?;
    Ok(MonitorProbes {
        events: take_ring(&mut ebpf, names::EXEC_EVENTS)?,
        drops: take_drops(&mut ebpf)?,
        ebpf,
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
            if let Some(path) = ExePath::from_bytes(exe.as_os_str().as_encoded_bytes()) {
                let _ = paths.insert(path_hash(key, &path.words), path, 0);
            }
        }
    }
    let map = ebpf
        .map_mut(names::PROC_IDENTITY)
        .ok_or_else(|| map_failure(names::PROC_IDENTITY, "missing"))?;
    let mut identity: HashMap<_, u32, u64> =
        HashMap::try_from(map).map_err(|e| map_failure(names::PROC_IDENTITY, e))?;
    for (tgid, exe) in &running {
        let hash = ExePath::from_bytes(exe.as_os_str().as_encoded_bytes())
            .map(|p| path_hash(key, &p.words))
            .unwrap_or(0);
        if identity.insert(tgid, hash, BPF_NOEXIST).is_ok() {
            seeded += 1;
        }
    }
    Ok(seeded)
}
