//! Locked mode in the kernel (the probes' `lock` module does the denying): the agent
//! writes `LOCK_STATE`, lists every map, program, link and pin of edgearmor's in
//! `PROTECTED`, and pins `LOCK_STATE` once more at [`LOCK_MARKER`], where any `run`
//! finds it whatever configuration it was given.
//!
//! Order ([`Locking`]): `begin` (right after the object is opened: its maps are
//! protected before any program uses them, and `LOCK_STATE` names this agent, still
//! unlocked unless the kernel already is) → the identity programs and the iterator
//! mark this agent → each program is protected before it attaches, each link as it
//! is attached → `finish`: the pins are protected, what an earlier agent left in
//! `PROTECTED` and no longer exists is removed, the kernel is locked.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use aya::Ebpf;
use aya::maps::{Array, HashMap, Map, MapData, MapInfo};
use aya::programs::links::PinnedLink;
use edgearmor_probe_abi::{
    LOCKED, LockState, PROTECTED_LINK, PROTECTED_MAP, PROTECTED_MOUNTPOINT, PROTECTED_PIN,
    PROTECTED_PROG, ProtectedKey, names,
};

use crate::control::self_protection::{LockIdentity, kernel_id};
use crate::host::HostKernel;
use crate::kernel::loader::map_failure;
use crate::kernel::readiness::EnforcementUnavailable;

/// Where `LOCK_STATE` is pinned a second time, at a path no configuration names: a
/// `run` or `unload` given another configuration (another `pin_dir`) still finds
/// the kernel locked. On the same bpffs as `pin_dir` (required), so it is
/// protected like the other pins.
pub const LOCK_MARKER: &str = "/sys/fs/bpf/edgearmor-locked";

/// Whether locked mode can hold on this kernel: its hooks (`bpf_lsm_<hook>` in BTF),
/// the bpffs of the marker, and the lockdown state, which decides whether root can
/// load a kernel module and so undo anything BPF does. `Ok` names what holds,
/// `Err` what does not.
pub fn can_hold(
    btf: &crate::kernel::btf::KernelBtf,
    host: &dyn HostKernel,
) -> Result<String, String> {
    let missing: Vec<&str> = edgearmor_probe_abi::programs::LOCK
        .iter()
        .map(|(_, hook)| *hook)
        .filter(|hook| !btf.has_func(&format!("bpf_lsm_{hook}")))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "hooks missing from this kernel: {}",
            missing.join(", ")
        ));
    }
    let marker_dir = Path::new(LOCK_MARKER).parent().unwrap_or(Path::new("/"));
    if !host.is_bpffs(marker_dir) {
        return Err(format!(
            "no bpffs at {} (mount -t bpf bpf {})",
            marker_dir.display(),
            marker_dir.display()
        ));
    }
    let lockdown = host
        .read(Path::new("/sys/kernel/security/lockdown"))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let active = lockdown
        .split_whitespace()
        .find(|w| w.starts_with('['))
        .map(|w| w.trim_matches(['[', ']']).to_owned())
        .unwrap_or_else(|| "no lockdown LSM".into());
    if active == "none" || active == "no lockdown LSM" {
        return Err(format!(
            "hooks present, but lockdown is {active}: root can load a kernel module (or write /dev/mem) and undo locked mode; boot with lockdown=integrity and module signing enforced"
        ));
    }
    Ok(format!(
        "its {} hooks are present, bpffs at {}, lockdown {active}",
        edgearmor_probe_abi::programs::LOCK.len(),
        marker_dir.display()
    ))
}

/// What the agent locks with: who it is, the id its alerts carry, and the
/// `(i_ino, s_dev)` of every inode nothing may be mounted on
/// (`ProtectedPaths::mountpoints`).
#[derive(Clone, Debug)]
pub struct LockRequest {
    pub identity: LockIdentity,
    pub policy_id: u32,
    pub mountpoints: Vec<(u64, u32)>,
}

/// A lock in progress (see the module comment).
pub(crate) struct Locking {
    state: LockState,
    protected: HashMap<MapData, ProtectedKey, u32>,
    current: BTreeSet<ProtectedKey>,
    pin_dir: PathBuf,
}

fn failed(step: &str, detail: impl std::fmt::Display) -> EnforcementUnavailable {
    EnforcementUnavailable::Failed {
        step: format!("locked mode: {step}"),
        errno: None,
        detail: detail.to_string(),
    }
}

/// The map data of the kinds of map the object defines.
fn map_data(map: &Map) -> Option<&MapData> {
    match map {
        Map::Array(m)
        | Map::HashMap(m)
        | Map::LruHashMap(m)
        | Map::PerCpuArray(m)
        | Map::RingBuf(m)
        | Map::Unsupported(m) => Some(m),
        _ => None,
    }
}

impl Locking {
    /// [`Self::begin`] with a request; locked mode needs pins.
    pub(crate) fn begin_if(
        host: &dyn HostKernel,
        ebpf: &mut Ebpf,
        request: Option<&LockRequest>,
        pin_dir: Option<&Path>,
    ) -> Result<Option<Self>, EnforcementUnavailable> {
        match (request, pin_dir) {
            (Some(request), Some(dir)) => Self::begin(host, ebpf, request, dir).map(Some),
            (Some(_), None) => Err(failed(
                "pin_dir",
                "locked = true needs pin_dir on a mounted bpffs: without pins enforcement ends with the agent",
            )),
            (None, _) => Ok(None),
        }
    }

    /// Protects every map of the object and writes `LOCK_STATE` (locked only if the
    /// kernel already was: this agent is then marked since its exec).
    pub(crate) fn begin(
        host: &dyn HostKernel,
        ebpf: &mut Ebpf,
        request: &LockRequest,
        pin_dir: &Path,
    ) -> Result<Self, EnforcementUnavailable> {
        let pin_dev = kernel_id(host, pin_dir)
            .map_err(|e| failed("pin_dir", e))?
            .1;
        let marker_dir = Path::new(LOCK_MARKER).parent().unwrap_or(Path::new("/"));
        let marker_dev = kernel_id(host, marker_dir)
            .map_err(|e| failed("marker", e))?
            .1;
        if marker_dev != pin_dev || !host.is_bpffs(marker_dir) {
            return Err(failed(
                "pin_dir",
                format!(
                    "{} must be on the bpffs mounted at {} (its lock marker {LOCK_MARKER} is protected with the pins)",
                    pin_dir.display(),
                    marker_dir.display()
                ),
            ));
        }
        let mut ids = Vec::new();
        for (name, map) in ebpf.maps() {
            let data = map_data(map)
                .ok_or_else(|| failed("maps", format!("{name}: unexpected map type")))?;
            ids.push(data.info().map_err(|e| map_failure(name, e))?.id());
        }
        let map = ebpf
            .take_map(names::PROTECTED)
            .ok_or_else(|| map_failure(names::PROTECTED, "missing"))?;
        let protected = HashMap::try_from(map).map_err(|e| map_failure(names::PROTECTED, e))?;
        let mut lock = Self {
            state: LockState::default(),
            protected,
            current: BTreeSet::new(),
            pin_dir: pin_dir.to_path_buf(),
        };
        for id in ids {
            lock.protect(PROTECTED_MAP, u64::from(id))?;
        }
        for &(ino, dev) in &request.mountpoints {
            lock.protect_key(ProtectedKey {
                kind: PROTECTED_MOUNTPOINT,
                dev,
                id: ino,
            })?;
        }
        let already = read_state(ebpf)?.locked == LOCKED;
        lock.state = request.identity.state(already, request.policy_id, pin_dev);
        write_state(ebpf, lock.state)?;
        Ok(lock)
    }

    /// Adds one object to `PROTECTED` at once.
    pub(crate) fn protect(&mut self, kind: u32, id: u64) -> Result<(), EnforcementUnavailable> {
        self.protect_key(ProtectedKey { kind, dev: 0, id })
    }

    fn protect_key(&mut self, key: ProtectedKey) -> Result<(), EnforcementUnavailable> {
        self.protected
            .insert(key, 1, 0)
            .map_err(|e| map_failure(names::PROTECTED, e))?;
        self.current.insert(key);
        Ok(())
    }

    /// Protects a loaded program (before it attaches) and the maps it uses.
    pub(crate) fn protect_program(
        &mut self,
        info: aya::programs::ProgramInfo,
    ) -> Result<(), EnforcementUnavailable> {
        self.protect(PROTECTED_PROG, u64::from(info.id()))?;
        let maps = info.map_ids().map_err(|e| failed("program maps", e))?;
        for id in maps.unwrap_or_default() {
            self.protect(PROTECTED_MAP, u64::from(id))?;
        }
        Ok(())
    }

    /// Protects the pins (and the marker, pinned here), drops what no longer exists
    /// from `PROTECTED`, and locks the kernel.
    pub(crate) fn finish(mut self, ebpf: &mut Ebpf) -> Result<LockState, EnforcementUnavailable> {
        // The identity programs (the iterator, the tracepoint) too.
        let infos: Vec<_> = ebpf.programs().filter_map(|(_, p)| p.info().ok()).collect();
        for info in infos {
            self.protect_program(info)?;
        }
        let marker = Path::new(LOCK_MARKER);
        if !marker.exists() {
            let map = ebpf
                .map(names::LOCK_STATE)
                .ok_or_else(|| map_failure(names::LOCK_STATE, "missing"))?;
            map.pin(marker)
                .map_err(|e| failed("pinning the marker", e))?;
        }
        let mut pins = vec![marker.to_path_buf()];
        for dir in [self.pin_dir.clone(), self.pin_dir.join("links")] {
            let entries = std::fs::read_dir(&dir).map_err(|e| failed("listing pins", e))?;
            for entry in entries {
                let entry = entry.map_err(|e| failed("listing pins", e))?;
                if entry.file_type().is_ok_and(|t| t.is_file()) {
                    pins.push(entry.path());
                }
            }
        }
        for pin in pins {
            self.protect_pin(&pin)?;
        }
        let stale: Vec<ProtectedKey> = self
            .protected
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !self.current.contains(k))
            .collect();
        for key in stale {
            let _ = self.protected.remove(&key);
        }
        self.state.locked = LOCKED;
        write_state(ebpf, self.state)?;
        Ok(self.state)
    }

    /// A pin's inode, and the map or link it holds.
    fn protect_pin(&mut self, pin: &Path) -> Result<(), EnforcementUnavailable> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(pin).map_err(|e| failed(&pin.display().to_string(), e))?;
        self.protect(PROTECTED_PIN, meta.ino())?;
        if let Ok(info) = MapInfo::from_pin(pin) {
            return self.protect(PROTECTED_MAP, u64::from(info.id()));
        }
        let link = PinnedLink::from_pin(pin).map_err(|e| failed(&pin.display().to_string(), e))?;
        let id = aya::programs::links::FdLink::from(link)
            .info()
            .map_err(|e| failed(&pin.display().to_string(), e))?
            .id();
        self.protect(PROTECTED_LINK, u64::from(id))
    }
}

fn lock_array(ebpf: &mut Ebpf) -> Result<Array<&mut MapData, LockState>, EnforcementUnavailable> {
    let map = ebpf
        .map_mut(names::LOCK_STATE)
        .ok_or_else(|| map_failure(names::LOCK_STATE, "missing"))?;
    Array::try_from(map).map_err(|e| map_failure(names::LOCK_STATE, e))
}

fn read_state(ebpf: &mut Ebpf) -> Result<LockState, EnforcementUnavailable> {
    lock_array(ebpf)?
        .get(&0, 0)
        .map_err(|e| map_failure(names::LOCK_STATE, e))
}

fn write_state(ebpf: &mut Ebpf, state: LockState) -> Result<(), EnforcementUnavailable> {
    lock_array(ebpf)?
        .set(0, state, 0)
        .map_err(|e| map_failure(names::LOCK_STATE, e))
}
