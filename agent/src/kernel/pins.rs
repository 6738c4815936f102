//! Pinned state in bpffs: links pinned so enforcement outlives the agent, the agent
//! state (path-hash key, drop baseline) the next agent adopts, and `unload`, which
//! removes it all deliberately.

use std::path::{Path, PathBuf};

use aya::Ebpf;
use aya::maps::Array;
use aya::programs::links::{FdLink, PinnedLink};
use edgearmor_probe_abi::{AgentState, LockState, names};

use crate::kernel::loader::map_failure;
use crate::kernel::readiness::EnforcementUnavailable;

/// Pins each new link at `<dir>/links/<program>`, replacing (and so detaching) the
/// link an earlier agent pinned there only once the new one is attached.
pub(crate) fn pin_links(
    dir: &Path,
    links: Vec<(&str, FdLink)>,
) -> Result<(), EnforcementUnavailable> {
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
pub(crate) fn record_agent_state(
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

/// What `dir` holds, for `edgearmor status`: the pinned links (each keeps a program
/// attached, with or without an agent) and the rule tables' active generation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PinnedEnforcement {
    /// Program names with a pinned link, sorted.
    pub links: Vec<String>,
    /// `ACTIVE`: the generation and classes the pinned tables enforce.
    pub active: Option<edgearmor_probe_abi::ActivePolicy>,
    /// Why `ACTIVE` could not be read, when links are pinned.
    pub unreadable: Option<String>,
}

pub fn pinned_enforcement(dir: &Path) -> PinnedEnforcement {
    let mut links: Vec<String> = std::fs::read_dir(dir.join("links"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    links.sort();
    let mut pinned = PinnedEnforcement {
        links,
        ..Default::default()
    };
    if pinned.links.is_empty() {
        return pinned;
    }
    let path = dir.join(names::ACTIVE);
    let active = aya::maps::MapData::from_pin(&path)
        .map_err(|e| e.to_string())
        .and_then(|data| {
            Array::<_, edgearmor_probe_abi::ActivePolicy>::try_from(aya::maps::Map::Array(data))
                .map_err(|e| e.to_string())
        })
        .and_then(|array| array.get(&0, 0).map_err(|e| e.to_string()));
    match active {
        Ok(a) => pinned.active = Some(a),
        Err(e) => pinned.unreadable = Some(format!("{}: {e}", path.display())),
    }
    pinned
}

/// `edgearmor unload`: detaches every pinned program and removes the pinned maps.
/// Returns how many pins were removed. The kernel releases an unpinned tracing link
/// asynchronously (after an RCU grace period), so this waits until the links are
/// gone from the kernel's list: when it returns, nothing is enforced any more.
pub fn unload(dir: &Path) -> std::io::Result<usize> {
    // Unlocked first: the map outlives its pins for a while (the kernel frees it
    // after the programs that use it), and a `run` reading it meanwhile must not
    // find the kernel locked.
    unlock(&dir.join(names::LOCK_STATE))?;
    unlock(Path::new(crate::kernel::lock::LOCK_MARKER))?;
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
    // Locked mode's second pin of LOCK_STATE, outside `dir`.
    match std::fs::remove_file(crate::kernel::lock::LOCK_MARKER) {
        Ok(()) => removed += 1,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
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

/// Sets `locked` to 0 in the `LOCK_STATE` pinned at `pin` (none there: nothing to do).
fn unlock(pin: &Path) -> std::io::Result<()> {
    if !pin.exists() {
        return Ok(());
    }
    let failed = |e: String| std::io::Error::other(format!("unlocking {}: {e}", pin.display()));
    let data = aya::maps::MapData::from_pin(pin).map_err(|e| failed(e.to_string()))?;
    let mut state: Array<_, LockState> =
        Array::try_from(aya::maps::Map::Array(data)).map_err(|e| failed(e.to_string()))?;
    let mut value = state.get(&0, 0).map_err(|e| failed(e.to_string()))?;
    value.locked = 0;
    state.set(0, value, 0).map_err(|e| failed(e.to_string()))
}

/// Why the pinned `LOCK_STATE` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("cannot open the pinned map {path}: {detail}")]
    Open { path: PathBuf, detail: String },
    #[error("cannot read the pinned map {path}: {detail}")]
    Read { path: PathBuf, detail: String },
}

/// The locked-mode state pinned in `pin_dir`: `None` when nothing is pinned there
/// (no agent ran, or it was unloaded); an unreadable pin is an error, never "unlocked".
pub fn lock_state(pin_dir: &Path) -> Result<Option<LockState>, PinError> {
    read_lock_pin(&pin_dir.join(names::LOCK_STATE))
}

fn read_lock_pin(path: &Path) -> Result<Option<LockState>, PinError> {
    let path = path.to_path_buf();
    if !path.exists() {
        return Ok(None);
    }
    let open = |detail: String| PinError::Open {
        path: path.clone(),
        detail,
    };
    let data = aya::maps::MapData::from_pin(&path).map_err(|e| open(e.to_string()))?;
    let state: Array<_, LockState> =
        Array::try_from(aya::maps::Map::Array(data)).map_err(|e| open(e.to_string()))?;
    let value = state.get(&0, 0).map_err(|e| PinError::Read {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    Ok(Some(value))
}

/// The locked-mode state pinned at the fixed marker (`kernel::lock::LOCK_MARKER`):
/// `None` when the kernel was never locked since the bpffs was mounted (or was
/// unloaded).
pub fn kernel_lock() -> Result<Option<LockState>, PinError> {
    read_lock_pin(Path::new(crate::kernel::lock::LOCK_MARKER))
}

/// The value of every map called `LOCK_STATE` loaded in the kernel, pinned where the
/// filesystem shows it or not (a mount over the marker's directory hides the pin,
/// not the map). A foreign map of that name with another layout is skipped; one with
/// this layout counts (it can only keep an agent from starting, never unlock).
pub fn loaded_lock_states() -> Vec<LockState> {
    aya::maps::loaded_maps()
        .filter_map(Result::ok)
        .filter(|info| info.name_as_str() == Some(names::LOCK_STATE))
        .filter_map(|info| {
            let data = aya::maps::MapData::from_id(info.id()).ok()?;
            let state: Array<_, LockState> = Array::try_from(aya::maps::Map::Array(data)).ok()?;
            state.get(&0, 0).ok()
        })
        .collect()
}
