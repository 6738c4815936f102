//! Locked mode, the agent's side: what it protects and who it is.
//!
//! The files are protected by a policy of their own, `edgearmor-self-protection`
//! ([`SELF_PROTECTION`]), compiled with the operator's: `Block` with `readOnly` on the
//! agent binary, its configuration file, the rules files and fleet keys, and
//! recursively on `pin_dir`, the policy directories, `state_dir` and the spool, plus
//! every directory above them by its exact name (so none of them can be renamed
//! away and replaced). The file hooks then decide them like any rule, by inode too
//! (the rules' aliases), failing closed where they cannot decide; the probes exempt
//! the agent from this one policy only (`lock::exempt`).
//!
//! [`LockState`] tells the probes which binary the agent is (by inode, as the kernel
//! sees it) and which configuration file it was locked with; a later `run` compares
//! its own with them ([`refusal`]).

use std::io;
use std::path::{Path, PathBuf};

use edgearmor_alert::expand::SELF_PROTECTION;
use edgearmor_policy::{HostPolicy, parse_policy_text};
use edgearmor_probe_abi::{LOCKED, LockState, MAX_PROTECTED_MOUNTPOINTS};

use crate::config::AgentConfig;
use crate::host::{HostKernel, MOUNTINFO, mount_devices};

/// What locked mode protects: files by name, directories with all they hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProtectedPaths {
    pub files: Vec<PathBuf>,
    pub directories: Vec<PathBuf>,
}

impl ProtectedPaths {
    /// The agent binary, `config_file`, and every file and directory of `config` the
    /// agent's behaviour comes from or its state goes to.
    pub fn of(config: &AgentConfig, config_file: &Path, agent_exe: &Path) -> Self {
        let mut p = Self::default();
        p.files
            .push(PathBuf::from(crate::kernel::lock::LOCK_MARKER));
        p.files.push(agent_exe.to_path_buf());
        p.files.push(config_file.to_path_buf());
        p.files.extend(config.rules.iter().cloned());
        p.files.extend(config.fleet.public_keys.iter().cloned());
        for policy in &config.policies {
            if policy.is_dir() {
                p.directories.push(policy.clone());
            } else {
                p.files.push(policy.clone());
            }
        }
        if !config.pin_dir.as_os_str().is_empty() {
            p.directories.push(config.pin_dir.clone());
        }
        p.directories.push(config.fleet.state_dir.clone());
        p.directories
            .extend(config.offline.spool_dir.iter().cloned());
        p
    }

    /// Every directory above a protected path, `/` excepted, once.
    fn ancestors(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        for path in self.files.iter().chain(&self.directories) {
            for a in path.ancestors().skip(1) {
                if a.parent().is_some() && !out.iter().any(|o| o == a) {
                    out.push(a.to_path_buf());
                }
            }
        }
        out.sort();
        out
    }

    /// The self-protection policy as KubeArmorHostPolicy YAML; `Err` names a path no
    /// rule can hold (relative, or not expressible in a YAML string).
    pub fn policy_text(&self) -> Result<String, String> {
        let ancestors = self.ancestors();
        let mut paths = String::from("    matchPaths:\n");
        for file in self.files.iter().chain(&ancestors) {
            paths.push_str(&format!(
                "      - path: {}\n        readOnly: true\n",
                quoted(file)?
            ));
        }
        let mut dirs = String::from("    matchDirectories:\n");
        for dir in &self.directories {
            let mut text = quoted(dir)?;
            if !text.ends_with("/\"") {
                text.insert(text.len() - 1, '/');
            }
            dirs.push_str(&format!(
                "      - dir: {text}\n        recursive: true\n        readOnly: true\n"
            ));
        }
        Ok(format!(
            "apiVersion: security.kubearmor.com/v1
kind: KubeArmorHostPolicy
metadata:
  name: {SELF_PROTECTION}
spec:
  nodeSelector:
    matchLabels:
      kubearmor.io/hostname: \"*\"
  severity: 10
  message: locked mode denied a change to edgearmor
  file:
{paths}{dirs}  action: Block
",
            paths = if self.files.is_empty() && ancestors.is_empty() {
                ""
            } else {
                &paths
            },
            dirs = if self.directories.is_empty() {
                ""
            } else {
                &dirs
            },
        ))
    }

    /// `(i_ino, s_dev)` of every protected path that exists, of everything the
    /// protected directories hold, and of every directory above them (`/` too):
    /// what nothing may be mounted on. More than `MAX_PROTECTED_MOUNTPOINTS` is an
    /// error naming the limit (the lock is refused).
    pub fn mountpoints(&self, host: &dyn HostKernel) -> Result<Vec<(u64, u32)>, String> {
        let text = host
            .read(Path::new(MOUNTINFO))
            .map_err(|e| format!("locked mode: {MOUNTINFO}: {e}"))?;
        let mounts = mount_devices(&String::from_utf8_lossy(&text))
            .map_err(|e| format!("locked mode: {MOUNTINFO}: {e}"))?;
        let mut todo: Vec<PathBuf> = self
            .files
            .iter()
            .chain(&self.ancestors())
            .cloned()
            .collect();
        todo.push(PathBuf::from("/"));
        let mut dirs: Vec<PathBuf> = self.directories.clone();
        let mut out = Vec::new();
        while let Some(path) = todo.pop().or_else(|| dirs.pop()) {
            let Ok(inode) = host.kernel_inode(&path, false) else {
                continue; // nothing there (yet): nothing to mount on
            };
            let Some(dev) = mounts.get(&inode.mnt_id).copied() else {
                return Err(format!(
                    "locked mode: {}: mount {} is not in {MOUNTINFO}",
                    path.display(),
                    inode.mnt_id
                ));
            };
            if !out.contains(&(inode.ino, dev)) {
                out.push((inode.ino, dev));
            }
            if out.len() > MAX_PROTECTED_MOUNTPOINTS {
                return Err(format!(
                    "locked mode: more than MAX_PROTECTED_MOUNTPOINTS ({MAX_PROTECTED_MOUNTPOINTS}) files and directories to keep mounts off (at {})",
                    path.display()
                ));
            }
            if inode.kind == crate::host::InodeKind::Directory
                && self.is_inside_protected_dir(&path)
            {
                let entries = std::fs::read_dir(&path)
                    .map_err(|e| format!("locked mode: {}: {e}", path.display()))?;
                for entry in entries.flatten() {
                    dirs.push(entry.path());
                }
            }
        }
        Ok(out)
    }

    fn is_inside_protected_dir(&self, path: &Path) -> bool {
        self.directories.iter().any(|d| path.starts_with(d))
    }

    /// The self-protection policy, parsed like a policy file.
    pub fn policy(&self) -> Result<Vec<HostPolicy>, String> {
        let text = self.policy_text()?;
        parse_policy_text(Path::new(SELF_PROTECTION), &text).map_err(|diagnostics| {
            let all: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
            format!("the self-protection policy: {}", all.join("; "))
        })
    }
}

/// `path` as a double-quoted YAML string.
fn quoted(path: &Path) -> Result<String, String> {
    let text = path
        .to_str()
        .filter(|t| t.starts_with('/') && !t.chars().any(char::is_control))
        .ok_or_else(|| {
            format!(
                "locked mode cannot protect {}: not an absolute UTF-8 path without control characters",
                path.display()
            )
        })?;
    Ok(format!(
        "\"{}\"",
        text.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

/// `(i_ino, s_dev)` of `path` (followed) as the kernel's hooks see it.
pub fn kernel_id(host: &dyn HostKernel, path: &Path) -> io::Result<(u64, u32)> {
    let inode = host.kernel_inode(path, true)?;
    let text = host.read(Path::new(MOUNTINFO))?;
    let mounts = mount_devices(&String::from_utf8_lossy(&text))?;
    let dev = mounts
        .get(&inode.mnt_id)
        .copied()
        .ok_or_else(|| io::Error::other(format!("mount {} is not in {MOUNTINFO}", inode.mnt_id)))?;
    Ok((inode.ino, dev))
}

/// Who locks: the agent binary and configuration file, by inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockIdentity {
    pub agent: (u64, u32),
    pub config: (u64, u32),
}

impl LockIdentity {
    pub fn of(host: &dyn HostKernel, config_file: &Path, agent_exe: &Path) -> io::Result<Self> {
        Ok(Self {
            agent: kernel_id(host, agent_exe)?,
            config: kernel_id(host, config_file)?,
        })
    }

    /// The `LOCK_STATE` value that says so, locked or (while the agent marks itself)
    /// not yet; `pin_dev` is the bpffs of the pins.
    pub fn state(&self, locked: bool, policy_id: u32, pin_dev: u32) -> LockState {
        LockState {
            locked: if locked { LOCKED } else { 0 },
            policy_id,
            agent_ino: self.agent.0,
            agent_dev: self.agent.1,
            pin_dev,
            config_ino: self.config.0,
            config_dev: self.config.1,
            _pad: 0,
        }
    }
}

/// Why `run` must not start while the kernel is locked (`state`): another
/// configuration file than the locked one, or command-line overrides (`flags`, which
/// would change what is enforced or where alerts go without changing the protected
/// file). `None`: it may (not locked, or the locked file and no override).
pub fn refusal(
    state: Option<&LockState>,
    config_file: &Path,
    config: Option<(u64, u32)>,
    flags: &[String],
) -> Option<String> {
    let state = state.filter(|s| s.locked == LOCKED)?;
    let locked_with = (state.config_ino, state.config_dev);
    if config != Some(locked_with) {
        let found = config.map_or("it does not exist".to_owned(), |(ino, dev)| {
            format!("it is inode {ino} on device {dev:#x}")
        });
        return Some(format!(
            "the kernel is locked (tamper protection) with the configuration file of inode {} on device {:#x}; {} is another file ({found}): run the agent with the locked configuration, or unlock first (edgearmor unload with a token)",
            locked_with.0,
            locked_with.1,
            config_file.display()
        ));
    }
    if !flags.is_empty() {
        let named: Vec<String> = flags.iter().map(|f| format!("--{f}")).collect();
        return Some(format!(
            "the kernel is locked (tamper protection): {} would override the locked configuration {}; change it through a signed bundle, or unlock first",
            named.join(", "),
            config_file.display()
        ));
    }
    None
}

#[cfg(test)]
mod tests;
