//! Loads the embedded BPF object into the kernel: kernel offsets and the path-hash key
//! as globals, the rule tables filled before anything attaches, then the identity
//! programs, then the identity of the tasks that were already running (a task
//! iterator), then the enforcing programs. The rule tables are
//! [`super::policy_maps`]'s, the pins [`super::pins`]'.

use std::io::Read;
use std::path::Path;

use aya::maps::{Array, MapData, PerCpuArray, RingBuf};
use aya::programs::links::FdLink;
use aya::programs::{BtfTracePoint, Iter, Lsm, ProgramError};
use aya::{Btf, Ebpf, EbpfError, EbpfLoader};
use edgearmor_probe_abi::{AgentState, exec_identity, names, programs};
use sha2::{Digest, Sha256};

use crate::host::HostKernel;
use crate::kernel::btf::KernelBtf;
use crate::kernel::lock::{LockRequest, Locking};
use crate::kernel::pins::{pin_links, record_agent_state};
use crate::kernel::policy_maps::PolicyMaps;
use crate::kernel::readiness::{EnforcementUnavailable, classify_attach_failure};
use crate::kernel::ring_sizes::check_ring_buffers;
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
    /// Tasks that were running before the probes and got their identity at load.
    pub identified_tasks: usize,
    /// Hooks this kernel does not have, each with what checks their operation
    /// instead (`programs::WHERE_HOOKED`): facts about the kernel, nothing missing.
    pub covered_elsewhere: Vec<String>,
    /// State pinned by an earlier agent was taken over.
    pub adopted: bool,
    /// Locked mode: the state the kernel was locked with.
    pub locked: Option<edgearmor_probe_abi::LockState>,
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
        Some(libc::EPERM) => EnforcementUnavailable::not_permitted(step),
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
                return EnforcementUnavailable::not_permitted(format!("load {program}"));
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

/// Rule paths as this host resolves them (the seam's `real_path`).
pub struct HostPaths<'h>(pub &'h dyn HostKernel);

impl crate::kernel::rule_tables::PathResolver for HostPaths<'_> {
    fn real_path(&self, path: &str) -> Option<String> {
        self.0
            .real_path(Path::new(path))
            .map(|real| real.to_string_lossy().into_owned())
    }

    fn multi_call_binaries(&self) -> std::collections::BTreeSet<String> {
        crate::kernel::multi_call::installed(&|p| self.real_path(p))
    }

    fn host(&self) -> Option<&dyn HostKernel> {
        Some(self.0)
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
    let exec_offsets = btf.exec_offsets().map_err(EnforcementUnavailable::BadBtf)?;
    let pins: Vec<(&str, std::path::PathBuf)> = pin_dir
        .map(|dir| {
            names::PERSISTENT
                .iter()
                .chain(exec_identity::PERSISTENT.iter())
                .map(|n| (*n, dir.join(n)))
                .collect()
        })
        .unwrap_or_default();
    let mut loader = EbpfLoader::new();
    // `TASK_IDENTITY` (task storage) has no typed wrapper in aya; it is only created,
    // pinned and adopted, never read from user space.
    loader
        .allow_unsupported_maps()
        .override_global(names::KERNEL_OFFSETS, &offsets, true)
        .override_global(exec_identity::EXEC_OFFSETS, &exec_offsets, true)
        .override_global(names::PATH_HASH_KEY, &key, true);
    for (name, path) in &pins {
        loader.map_pin_path(name, path.as_path());
    }
    let ebpf = loader
        .load(PROBES_OBJECT)
        .map_err(|e| load_failure("load the BPF object", e))?;
    // aya's loader holds its own full parse of the kernel BTF (`EbpfLoader::new`
    // makes it and cannot be given it back): gone before the one attaching needs is
    // made, so the two are never in memory together (each is ~15 MB).
    drop(loader);
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
///
/// With `lock` (locked mode, which needs `pin_dir`), the kernel is locked once
/// everything is attached (see `kernel::lock`).
pub fn load(
    host: &dyn HostKernel,
    btf: &KernelBtf,
    key: [u64; 2],
    rules: KernelRuleSet,
    pin_dir: Option<&Path>,
    lock: Option<&LockRequest>,
) -> Result<LoadedProbes, EnforcementUnavailable> {
    check_ring_buffers(host)?;
    let adopting = pin_dir.is_some_and(|dir| dir.join(names::AGENT_STATE).exists());
    let (mut ebpf, aya_btf) = open_object(btf, key, pin_dir)?;
    let mut locking = Locking::begin_if(host, &mut ebpf, lock, pin_dir)?;

    // Rules first: once a program attaches it enforces whatever the maps hold.
    let mut policy = PolicyMaps::take(&mut ebpf, adopting)?;
    policy
        .apply(rules)
        .map_err(EnforcementUnavailable::RuleTables)?;

    // Identities before enforcement: a hook never decides on a task the iterator has
    // not reached yet.
    let mut covered_elsewhere = Vec::new();
    let mut links = attach_lsm(
        &mut ebpf,
        (&aya_btf, btf),
        &programs::IDENTITY,
        &mut covered_elsewhere,
        &mut locking,
    )?;
    let (program, tracepoint) = programs::IDENTITY_CATCH_UP;
    links.push((
        program,
        attach_btf_tracepoint(&mut ebpf, &aya_btf, program, tracepoint)?,
    ));
    let identified_tasks = identify_running(&mut ebpf, &aya_btf)?;
    if locking.is_some() {
        let list = &programs::LOCK;
        links.extend(attach_lsm(
            &mut ebpf,
            (&aya_btf, btf),
            list,
            &mut covered_elsewhere,
            &mut locking,
        )?);
    }
    links.extend(attach_lsm(
        &mut ebpf,
        (&aya_btf, btf),
        &programs::LSM,
        &mut covered_elsewhere,
        &mut locking,
    )?);
    links.extend(attach_lsm(
        &mut ebpf,
        (&aya_btf, btf),
        &exec_identity::PROGRAMS,
        &mut covered_elsewhere,
        &mut locking,
    )?);
    let links = match pin_dir {
        Some(dir) => {
            pin_links(dir, links)?;
            Vec::new()
        }
        None => links.into_iter().map(|(_, link)| link).collect(),
    };
    let locked = locking.map(|l| l.finish(&mut ebpf)).transpose()?;

    let events = enforcing_events(&mut ebpf, key, pin_dir.is_some(), adopting)?;
    Ok(LoadedProbes {
        attached: AttachedProbes {
            _ebpf: ebpf,
            _owned_links: links,
        },
        events,
        policy,
        identified_tasks,
        covered_elsewhere,
        adopted: adopting,
        locked,
    })
}

/// Each attached program's name and link.
type NamedLinks = Vec<(&'static str, FdLink)>;

/// Attaches the LSM programs of `list`, in order. A program of
/// `programs::WHERE_HOOKED` whose hook this kernel lacks (no `bpf_lsm_<hook>` in its
/// BTF) is left out, and what checks its operation instead goes to
/// `covered_elsewhere`; every other refusal fails the load.
/// In locked mode each program is protected before it attaches, each link as soon as
/// it exists.
fn attach_lsm(
    ebpf: &mut Ebpf,
    (aya_btf, btf): (&Btf, &KernelBtf),
    list: &[(&'static str, &'static str)],
    covered_elsewhere: &mut Vec<String>,
    locking: &mut Option<Locking>,
) -> Result<NamedLinks, EnforcementUnavailable> {
    let mut links = Vec::new();
    for &(program, hook) in list {
        if let Some(covered) = absent_hook(btf, program, hook) {
            covered_elsewhere.push(covered);
            continue;
        }
        let prog: &mut Lsm = program_of(ebpf, program, hook)?;
        prog.load(hook, aya_btf)
            .map_err(|e| program_failure(program, hook, e))?;
        if let Some(lock) = locking.as_mut() {
            let info = prog.info().map_err(|e| program_failure(program, hook, e))?;
            lock.protect_program(info)?;
        }
        let id = prog
            .attach()
            .map_err(|e| program_failure(program, hook, e))?;
        let link = FdLink::from(
            prog.take_link(id)
                .map_err(|e| program_failure(program, hook, e))?,
        );
        if let Some(lock) = locking.as_mut() {
            let id = link.info().map_err(|e| map_failure(program, e))?.id();
            lock.protect(edgearmor_probe_abi::PROTECTED_LINK, u64::from(id))?;
        }
        links.push((program, link));
    }
    Ok(links)
}

/// For a program attached only where the kernel has its hook, and a kernel without
/// it: what checks the operation instead.
fn absent_hook(btf: &KernelBtf, program: &str, hook: &str) -> Option<String> {
    let (_, covered) = programs::WHERE_HOOKED
        .iter()
        .find(|(name, _)| *name == program)?;
    if btf.has_func(&format!("bpf_lsm_{hook}")) {
        return None;
    }
    Some(format!("{hook}: not in this kernel; {covered}"))
}

/// Passes of the identity iterator before a task it could not store an identity for
/// fails the start: a store fails while another task-storage call on the same CPU is
/// preempted inside the kernel's helper (seen on PREEMPT_RT), which passes.
const IDENTIFY_PASSES_MAX: usize = 8;

/// Runs the task iterator that gives every task without an identity (one that
/// started before the probes) its executable's, twice (why twice, and why no fork
/// escapes: the `identity` probes' overview), and again while a pass could not store
/// one, up to [`IDENTIFY_PASSES_MAX`]; returns how many tasks it identified.
/// Harmless when adopting: tasks that have an identity keep it.
fn identify_running(ebpf: &mut Ebpf, aya_btf: &Btf) -> Result<usize, EnforcementUnavailable> {
    let (program, iterator) = programs::IDENTIFY_RUNNING;
    let prog: &mut Iter = program_of(ebpf, program, iterator)?;
    prog.load(iterator, aya_btf)
        .map_err(|e| program_failure(program, iterator, e))?;
    let failed = |detail: String| EnforcementUnavailable::Failed {
        step: format!("running the {program} task iterator"),
        errno: None,
        detail,
    };
    let mut identified = 0;
    for pass in 1..=IDENTIFY_PASSES_MAX {
        let id = prog
            .attach()
            .map_err(|e| program_failure(program, iterator, e))?;
        let link = prog
            .take_link(id)
            .map_err(|e| program_failure(program, iterator, e))?;
        let mut output = Vec::new();
        link.into_file()
            .map_err(|e| failed(e.to_string()))?
            .read_to_end(&mut output)
            .map_err(|e| failed(e.to_string()))?;
        match identified_by(&output) {
            Ok(n) if pass >= 2 => return Ok(identified + n),
            Ok(n) => identified += n,
            // Those tasks would act as "unknown" and escape their fromSource rules.
            Err(not_stored) if pass == IDENTIFY_PASSES_MAX => {
                return Err(failed(format!(
                    "the kernel could not store the identity of {not_stored} running tasks in {pass} passes"
                )));
            }
            // Tried again by the next pass, which only visits tasks without one,
            // after yielding the CPU: the task preempted inside its task-storage call
            // (which holds that CPU's storage lock) gets to finish it.
            Err(_) => {
                identified += output
                    .iter()
                    .filter(|b| **b == programs::IDENTIFIED)
                    .count();
                std::thread::yield_now();
            }
        }
    }
    Ok(identified)
}

/// The tasks one iterator pass identified, from its output (one byte per task); Err:
/// how many it could not store an identity for.
fn identified_by(output: &[u8]) -> Result<usize, usize> {
    let not_stored = output
        .iter()
        .filter(|b| **b != programs::IDENTIFIED)
        .count();
    if not_stored > 0 {
        return Err(not_stored);
    }
    Ok(output.len())
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
    check_ring_buffers(host)?;
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

#[cfg(test)]
mod tests {
    #[test]
    fn a_hook_the_kernel_lacks_is_covered_elsewhere_only_where_the_abi_says_so() {
        use crate::kernel::btf::{KernelBtf, tests::synthetic_btf};
        let btf = KernelBtf::parse(&synthetic_btf()).expect("parses");
        // The kernel has the hook (`bpf_lsm_demo`): attached.
        assert_eq!(
            super::absent_hook(&btf, "check_file_truncate", "demo"),
            None
        );
        // It does not: left out, and what checks ftruncate instead is said.
        let covered = super::absent_hook(&btf, "check_file_truncate", "file_truncate")
            .expect("file_truncate is attached only where the kernel has it");
        assert!(covered.contains("path_truncate"), "{covered}");
        // Every other program is attached or the load fails: never skipped.
        assert_eq!(super::absent_hook(&btf, "check_open", "file_open"), None);
    }

    #[test]
    fn an_identity_the_kernel_could_not_store_fails_the_load() {
        use edgearmor_probe_abi::programs::{IDENTIFIED, NOT_STORED};
        assert_eq!(super::identified_by(&[]), Ok(0));
        assert_eq!(super::identified_by(&[IDENTIFIED; 3]), Ok(3));
        assert_eq!(
            super::identified_by(&[IDENTIFIED, NOT_STORED, IDENTIFIED]),
            Err(1)
        );
        // Anything else is not a task identified either.
        assert_eq!(super::identified_by(&[IDENTIFIED, 0]), Err(1));
    }
}
