//! Tamper reports: refusals decided outside the running agent (`edgearmor unload` in
//! locked mode without a valid unlock token), kept in `state_dir` until an agent
//! delivers them as alerts like any other (`Type: MatchedHostPolicy`, `PolicyName:
//! edgearmor-self-protection`, `Action: Block`). A file per report, so a report made
//! while no agent runs (stopped by PID 1, crashed) is delivered by the next one; in
//! locked mode the kernel denies everyone but the agent binary writing or removing
//! them.
//!
//! Bounded: at most [`MAX_TAMPER_REPORTS`] wait; past that each refusal only counts
//! in one counter file, delivered as one more report naming the count and the limit.

use std::path::{Path, PathBuf};

use edgearmor_bundle::files::{self, FileError};
use edgearmor_wire::{
    Action, Alert, Data, Event, EventBody, Operation, Outcome, PolicyRef, Source,
};

use crate::events::enrich::bounded;

/// The reports' directory in `state_dir`.
pub const REPORTS_DIR: &str = "tamper-reports";

/// Reports waiting for delivery at most; further refusals are counted.
pub const MAX_TAMPER_REPORTS: usize = 64;

/// Bytes of one report file read at most (a report is under 1 KiB).
const MAX_REPORT_BYTES: usize = 2048;

/// The count of refusals not kept as reports, in [`REPORTS_DIR`].
const DROPPED_FILE: &str = "dropped";

/// Suffix of report files (`<time_us>-<pid>-<n>.report`).
const REPORT_SUFFIX: &str = ".report";

/// One refusal: who tried what, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TamperReport {
    /// Unix time in microseconds.
    pub time_us: u64,
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    /// The refused process's executable.
    pub process: String,
    /// Its parent's executable.
    pub parent_process: String,
    /// What was refused and why, e.g. `edgearmor unload: unlock token expired`.
    pub resource: String,
}

/// Where [`record`] put a report.
#[derive(Debug, PartialEq, Eq)]
pub enum Recorded {
    /// In its own file.
    Stored(PathBuf),
    /// Only counted: [`MAX_TAMPER_REPORTS`] were waiting. The count so far.
    Counted(u64),
}

/// Keeps `report` for the next delivery (the running agent's, or the next agent's).
pub fn record(state_dir: &Path, report: &TamperReport) -> Result<Recorded, FileError> {
    let dir = state_dir.join(REPORTS_DIR);
    files::create_private_dir_all(&dir)?;
    let _lock = DirLock::take(&dir)?;
    let waiting = waiting(&dir)?;
    if waiting.len() >= MAX_TAMPER_REPORTS {
        let dropped = read_dropped(&dir).saturating_add(1);
        files::replace_atomically(
            &dir.join(DROPPED_FILE),
            format!("{dropped}\n").as_bytes(),
            || {},
        )?;
        return Ok(Recorded::Counted(dropped));
    }
    // Unique under the lock: the time, the process, and the first free number (one
    // process may be refused twice within a tick of a coarse clock).
    let name = |n: usize| format!("{:020}-{}-{n}{REPORT_SUFFIX}", report.time_us, report.pid);
    let path = (0..MAX_TAMPER_REPORTS)
        .map(|n| dir.join(name(n)))
        .find(|p| !waiting.contains(p))
        .unwrap_or_else(|| dir.join(name(MAX_TAMPER_REPORTS)));
    files::write_new_synced(&path, report.to_text().as_bytes())?;
    Ok(Recorded::Stored(path))
}

/// Hands every waiting report to `deliver`, oldest first, removing each it takes
/// (`true`); stops at the first it does not (a full queue: the rest wait). Then the
/// count of refusals not kept, as one more report made by `summary`. A report that
/// cannot be read is logged and counted with those. Returns how many were delivered.
pub fn drain(
    state_dir: &Path,
    deliver: &mut dyn FnMut(&TamperReport) -> bool,
    summary: &dyn Fn(u64) -> TamperReport,
) -> Result<usize, FileError> {
    let dir = state_dir.join(REPORTS_DIR);
    if std::fs::symlink_metadata(&dir).is_err() {
        return Ok(0);
    }
    // Refuses a symbolic link or a directory others may write.
    files::create_private_dir_all(&dir)?;
    let _lock = DirLock::take(&dir)?;
    let mut delivered = 0;
    let mut unreadable = 0u64;
    for path in waiting(&dir)? {
        let report = files::read(&path).map(|bytes| {
            let bytes = bytes.unwrap_or_default();
            (bytes.len() <= MAX_REPORT_BYTES)
                .then(|| String::from_utf8(bytes).ok())
                .flatten()
                .and_then(|text| TamperReport::parse(&text))
        });
        match report {
            Ok(Some(report)) => {
                if !deliver(&report) {
                    return Ok(delivered);
                }
                delivered += 1;
            }
            Ok(None) | Err(_) => {
                log::warn!(
                    "tamper report {} is unreadable: counted, removed",
                    path.display()
                );
                unreadable += 1;
            }
        }
        std::fs::remove_file(&path).map_err(|e| FileError::io("remove", &path, e))?;
    }
    let dropped = read_dropped(&dir).saturating_add(unreadable);
    if dropped > 0 && deliver(&summary(dropped)) {
        delivered += 1;
        let path = dir.join(DROPPED_FILE);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(FileError::io("remove", &path, e));
            }
            _ => {}
        }
    }
    Ok(delivered)
}

/// Whether anything waits in `state_dir`'s reports directory (a cheap look before
/// the lock is read).
pub fn pending(state_dir: &Path) -> bool {
    std::fs::read_dir(state_dir.join(REPORTS_DIR)).is_ok_and(|mut entries| entries.next().is_some())
}

/// The report files waiting, oldest first (their names start with the time).
fn waiting(dir: &Path) -> Result<Vec<PathBuf>, FileError> {
    let entries = std::fs::read_dir(dir).map_err(|e| FileError::io("list", dir, e))?;
    let mut reports: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(REPORT_SUFFIX))
        .collect();
    reports.sort();
    Ok(reports)
}

/// The dropped count (0 when there is no count, or it is unreadable: the reports
/// themselves say a count was lost only through the log).
fn read_dropped(dir: &Path) -> u64 {
    let path = dir.join(DROPPED_FILE);
    match files::read(&path) {
        Ok(Some(bytes)) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or_else(|| {
                log::warn!("{} is not a count: taken as 1", path.display());
                1
            }),
        Ok(None) => 0,
        Err(e) => {
            log::warn!("{e}: taken as 1");
            1
        }
    }
}

/// An exclusive `flock` of the reports' directory: `unload`s and the draining agent
/// take turns, so a count is never lost between a read and its write.
struct DirLock {
    _held: std::fs::File,
}

impl DirLock {
    fn take(dir: &Path) -> Result<Self, FileError> {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(dir).map_err(|e| FileError::io("open", dir, e))?;
        // SAFETY: flock takes the descriptor we own and no pointers.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(FileError::io("lock", dir, std::io::Error::last_os_error()));
        }
        Ok(Self { _held: file })
    }
}

impl TamperReport {
    /// The alert: KubeArmor's shape of a refused process (`Operation: Process`, the
    /// parent as `Source`), under the self-protection policy `policy_id` of the
    /// delivering agent's table, `Action: Block`.
    pub fn event(&self, policy_id: u32) -> Event {
        Event {
            time_us: self.time_us,
            body: EventBody::Alert(Alert {
                pid: self.pid,
                ppid: self.ppid,
                uid: self.uid,
                process: bounded(&self.process),
                parent_process: bounded(&self.parent_process),
                source: Source::ParentProcess,
                policy: PolicyRef::Id(policy_id),
                operation: Operation::Process,
                resource: bounded(&self.resource),
                data: Data::Execve,
                action: Action::Block,
                result: Outcome::PermissionDenied,
                cwd: heapless::String::new(),
            }),
        }
    }

    /// The report standing for `count` refusals that were only counted.
    pub fn summary(count: u64, time_us: u64) -> Self {
        Self {
            time_us,
            pid: 0,
            ppid: 0,
            uid: 0,
            process: String::new(),
            parent_process: String::new(),
            resource: format!(
                "edgearmor unload: {count} more refusal(s) counted, not reported one by one ({MAX_TAMPER_REPORTS} were waiting, MAX_TAMPER_REPORTS)"
            ),
        }
    }

    /// `key=value` lines; values have no control characters (replaced by `?`).
    fn to_text(&self) -> String {
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect()
        };
        format!(
            "time_us={}\npid={}\nppid={}\nuid={}\nprocess={}\nparent={}\nresource={}\n",
            self.time_us,
            self.pid,
            self.ppid,
            self.uid,
            clean(&self.process),
            clean(&self.parent_process),
            clean(&self.resource)
        )
    }

    /// The inverse of [`Self::to_text`]: every key once, nothing else.
    fn parse(text: &str) -> Option<Self> {
        let mut fields: [Option<&str>; 7] = [None; 7];
        const KEYS: [&str; 7] = [
            "time_us", "pid", "ppid", "uid", "process", "parent", "resource",
        ];
        for line in text.lines() {
            let (key, value) = line.split_once('=')?;
            let slot = fields.get_mut(KEYS.iter().position(|k| *k == key)?)?;
            if slot.replace(value).is_some() {
                return None;
            }
        }
        let [time_us, pid, ppid, uid, process, parent, resource] = fields;
        Some(Self {
            time_us: time_us?.parse().ok()?,
            pid: pid?.parse().ok()?,
            ppid: ppid?.parse().ok()?,
            uid: uid?.parse().ok()?,
            process: process?.to_owned(),
            parent_process: parent?.to_owned(),
            resource: resource?.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests;
