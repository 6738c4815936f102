//! The canonical names of protected inodes (`FILE_ALIASES`): the path walk of the
//! file hooks looks up the target and each ancestor directory by inode, so a
//! protected file or directory reached by another name (a hard link made before the
//! policy, a bind mount, a renamed ancestor, another mount namespace) is decided as
//! its protected name.
//!
//! Every file rule with a fixed path names one inode (found through the host seam as
//! the kernel sees it). Under each `matchDirectories` rule, the regular files with
//! other hard links get an entry of their own, since their other names are anywhere;
//! under a recursive one the subdirectories do too, since a bind mount of one starts
//! the walk there. The search has a budget ([`ALIAS_SCAN_ENTRIES`]): a directory not
//! fully searched is reported, never skipped silently.
//!
//! Process rules get the same search into their own table (`EXEC_ALIASES`, see the
//! ABI's `exec_identity`): the executable a rule names, and the other-linked
//! regular files under its directories, by inode; an exec or an executable mapping
//! of that inode is decided by its canonical name. Only files: the exec hook looks
//! up the file it runs, never a directory.

use std::cmp::Reverse;
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::path::Path;

use edgearmor_policy::{Action, PathMatcher};
use edgearmor_probe_abi::ALIASES_PER_SET;

use super::limits::{ALIAS_SCAN_ENTRIES, alias_name_too_long};
use super::{Builder, SkippedRule};
use crate::host::{HostKernel, InodeKind, MOUNTINFO, mount_devices};

/// The alias entries of one policy set, independent of the generation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AliasTable {
    /// (`i_ino`, `s_dev`) -> canonical name (a directory's ends with `/`).
    pub names: BTreeMap<(u64, u32), String>,
    /// Inodes named by rules that have an entry.
    pub protected: usize,
    /// Subdirectories of recursive protected directories with an entry.
    pub subdirectories: usize,
    /// Protected files with other hard links -> their link count.
    pub linked: BTreeMap<String, u64>,
    /// Protected directories the search for other-linked files did not finish.
    pub unsearched: Vec<String>,
}

/// Protected files listed by name in a report; the rest are counted.
const LINKED_SHOWN: usize = 8;

impl AliasTable {
    /// What the start and reload reports say about the aliases.
    pub fn report(&self) -> String {
        self.describe(
            format!(
                "{} protected inode(s) with an alias entry ({} entries with subdirectories and other-linked files)",
                self.protected,
                self.names.len()
            ),
            "protected file(s)",
        )
    }

    /// What the start and reload reports say about the executables followed by file.
    pub fn report_executables(&self) -> String {
        self.describe(
            format!(
                "exec identity: {} executable(s) followed by inode ({} entries with other-linked files)",
                self.protected,
                self.names.len()
            ),
            "executable(s)",
        )
    }

    /// `text` (the head), then the other-linked files (called `linked_noun`) and the
    /// directories the scan budget left unsearched.
    fn describe(&self, mut text: String, linked_noun: &str) -> String {
        if !self.linked.is_empty() {
            let shown: Vec<String> = self
                .linked
                .iter()
                .take(LINKED_SHOWN)
                .map(|(name, links)| format!("{name} ({links} links)"))
                .collect();
            text.push_str(&format!(
                ", {} {linked_noun} with other hard links: {}",
                self.linked.len(),
                shown.join(", ")
            ));
            if self.linked.len() > LINKED_SHOWN {
                text.push_str(&format!(" (+{} more)", self.linked.len() - LINKED_SHOWN));
            }
        }
        if !self.unsearched.is_empty() {
            text.push_str(&format!(
                ", not fully searched for hard links (scan budget): {}",
                self.unsearched.join(" ")
            ));
        }
        text
    }
}

/// A fixed path some file rule names, resolved as the kernel sees it.
struct Protected {
    name: String,
    /// `Some(recursive)` for a directory rule.
    directory: Option<bool>,
    /// Block > Audit > Allow: an inode two rules name is decided as the stronger's.
    strength: u8,
    policy: String,
}

impl Builder<'_> {
    /// The alias table of the set's file rules; limits it exceeds are refusals,
    /// everything it could not cover is a note (`warnings`).
    pub(super) fn aliases(&mut self) {
        let targets: Vec<_> = (self.policies.file.rules.iter())
            .map(|r| (&r.matcher.target, r.action, r.policy_id))
            .collect();
        if let Some(table) = self.alias_table(&targets, Entries::FilesAndDirectories) {
            self.set.aliases = table;
        }
    }

    /// The exec alias table of the set's process rules (regular files only).
    pub(super) fn exec_aliases(&mut self) {
        let targets: Vec<_> = (self.policies.process.rules.iter())
            .map(|r| (&r.matcher, r.action, r.policy_id))
            .collect();
        if let Some(table) = self.alias_table(&targets, Entries::Files) {
            self.set.exec_aliases = table;
        }
    }

    /// The table of the rules on `targets`; `None` when there is nothing to search
    /// (or offline).
    fn alias_table(
        &mut self,
        targets: &[(&PathMatcher, Action, edgearmor_policy::PolicyId)],
        entries: Entries,
    ) -> Option<AliasTable> {
        let mut named: BTreeMap<String, Protected> = BTreeMap::new();
        for &(target, action, policy_id) in targets {
            let rule = (action, policy_id);
            let (name, directory) = match target {
                PathMatcher::Exact(path) => (self.resolver.kernel_path(path), None),
                PathMatcher::Directory { dir, recursive } => (self.real_dir(dir), Some(*recursive)),
                PathMatcher::Pattern(_) => continue,
            };
            let strength = match rule.0 {
                Action::Allow => 0,
                Action::Audit => 1,
                Action::Block => 2,
            };
            let policy = self.policy_name(rule.1);
            let entry = named.entry(name.clone()).or_insert(Protected {
                name,
                directory,
                strength,
                policy,
            });
            entry.strength = entry.strength.max(strength);
            if let (Some(r), Some(more)) = (&mut entry.directory, directory) {
                *r |= more;
            }
        }
        for p in named.values() {
            if let Some(reason) = alias_name_too_long(&p.name) {
                self.set.refused.push(note(p, reason));
            }
        }
        // The root's name is where every walk ends anyway: it needs no entry.
        named.retain(|name, _| alias_name_too_long(name).is_none() && name != "/");
        // offline (`policy check` without --host), or nothing to find
        let host = self.resolver.host().filter(|_| !named.is_empty())?;
        let mut order: Vec<&Protected> = named.values().collect();
        order.sort_by_key(|p| (Reverse(p.strength), p.name.as_str()));
        let mut scan = match Scan::new(host, entries) {
            Ok(scan) => scan,
            Err(e) => {
                self.set.warnings.push(SkippedRule {
                    policy: "(the whole set)".into(),
                    rule: MOUNTINFO.into(),
                    reason: format!(
                        "cannot read the mount table ({e}): no {} rule follows its file to another name",
                        entries.class()
                    ),
                });
                return None;
            }
        };
        order.retain(|p| scan.protect(p));
        for p in outermost_directories(&order) {
            scan.directory(p);
        }
        scan.finish();
        self.set.warnings.extend(scan.notes);
        Some(scan.table)
    }
}

/// Directory rules to search, without those a recursive one above already covers.
fn outermost_directories<'a>(order: &[&'a Protected]) -> Vec<(&'a Protected, bool)> {
    let dirs: Vec<(&Protected, bool)> = order
        .iter()
        .filter_map(|p| Some((*p, p.directory?)))
        .collect();
    dirs.iter()
        .filter(|(p, _)| {
            !dirs.iter().any(|(above, recursive)| {
                *recursive && above.name != p.name && p.name.starts_with(&above.name)
            })
        })
        .copied()
        .collect()
}

fn note(p: &Protected, reason: String) -> SkippedRule {
    SkippedRule {
        policy: p.policy.clone(),
        rule: p.name.clone(),
        reason,
    }
}

/// Which inodes a table holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Entries {
    /// File rules: files, directories and (recursive) subdirectories, since the file
    /// hooks' walk looks up every ancestor.
    FilesAndDirectories,
    /// Process rules: regular files only (the exec hook looks up the file it runs).
    Files,
}

impl Entries {
    fn class(self) -> &'static str {
        match self {
            Self::FilesAndDirectories => "file",
            Self::Files => "process",
        }
    }
}

/// One search of the host for the inodes of a set.
struct Scan<'h> {
    host: &'h dyn HostKernel,
    entries: Entries,
    mounts: BTreeMap<u64, u32>,
    table: AliasTable,
    notes: Vec<SkippedRule>,
    /// Directory entries still to look at.
    budget: usize,
    /// Other-linked files and subdirectories left out: the table was full.
    no_room: usize,
}

impl<'h> Scan<'h> {
    fn new(host: &'h dyn HostKernel, entries: Entries) -> io::Result<Self> {
        let text = host.read(Path::new(MOUNTINFO))?;
        Ok(Self {
            host,
            entries,
            mounts: mount_devices(&String::from_utf8_lossy(&text))?,
            table: AliasTable::default(),
            notes: Vec::new(),
            budget: ALIAS_SCAN_ENTRIES,
            no_room: 0,
        })
    }

    /// The (ino, dev) of `path` and its kind and links.
    fn identify(&self, path: &str, follow: bool) -> io::Result<((u64, u32), InodeKind, u64)> {
        let bare = match path.trim_end_matches('/') {
            "" => "/",
            bare => bare,
        };
        let inode = self.host.kernel_inode(Path::new(bare), follow)?;
        let dev = self.mounts.get(&inode.mnt_id).copied().ok_or_else(|| {
            io::Error::other(format!("mount {} is not in {MOUNTINFO}", inode.mnt_id))
        })?;
        Ok(((inode.ino, dev), inode.kind, inode.links))
    }

    /// The entry of a path a rule names; whether it got one.
    fn protect(&mut self, p: &Protected) -> bool {
        let (key, kind, links) = match self.identify(&p.name, true) {
            Ok(found) => found,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let reason = format!(
                    "{} does not exist now: no alias entry, the rule matches it by this name only",
                    p.name
                );
                self.notes.push(note(p, reason));
                return false;
            }
            Err(e) => {
                let reason = format!(
                    "cannot identify {} ({e}): no alias entry, the rule matches it by this name only",
                    p.name
                );
                self.notes.push(note(p, reason));
                return false;
            }
        };
        let reason = match (p.directory.is_some(), kind) {
            (true, InodeKind::Directory) | (false, InodeKind::Regular | InodeKind::Other) => None,
            (true, _) => Some("is not a directory"),
            (false, _) => Some("is a directory (matchDirectories protects one)"),
        };
        if let Some(reason) = reason {
            let reason = format!(
                "{} {reason}: no alias entry, the rule matches it by this name only",
                p.name
            );
            self.notes.push(note(p, reason));
            return false;
        }
        if p.directory.is_some() && self.entries == Entries::Files {
            // Searched for other-linked files; the directory itself needs no entry.
            return true;
        }
        if let Some(other) = self.table.names.get(&key) {
            let reason = format!(
                "{} is the same file as {other}: it is decided as {other} whatever name reaches it",
                p.name
            );
            self.notes.push(note(p, reason));
            return false;
        }
        self.table.names.insert(key, p.name.clone());
        self.table.protected += 1;
        if kind == InodeKind::Regular && links > 1 {
            self.table.linked.insert(p.name.clone(), links);
        }
        true
    }

    /// Searches a protected directory (breadth first, so a budget that runs out
    /// leaves the deepest levels) for other-linked files and, if recursive,
    /// subdirectories.
    fn directory(&mut self, (p, recursive): (&Protected, bool)) {
        let mut queue = VecDeque::from([p.name.clone()]);
        while let Some(dir) = queue.pop_front() {
            let listed = match self.budget {
                0 => Ok((Vec::new(), false)),
                budget => self.host.dir_entries(Path::new(&dir), budget),
            };
            let (entries, complete) = match listed {
                Ok(listed) => listed,
                Err(e) => {
                    let reason = format!(
                        "cannot search {dir} for hard links ({e}): a file there with another hard link is decided by the name that reaches it"
                    );
                    self.notes.push(note(p, reason));
                    continue;
                }
            };
            self.budget -= entries.len().min(self.budget);
            for e in entries {
                let Some(name) = e.name.to_str() else {
                    let reason = format!(
                        "{dir}{} is not UTF-8: no alias entry",
                        e.name.to_string_lossy()
                    );
                    self.notes.push(note(p, reason));
                    continue;
                };
                let path = format!("{dir}{name}");
                match e.kind {
                    InodeKind::Directory if recursive => {
                        let sub = format!("{path}/");
                        if self.entries == Entries::FilesAndDirectories
                            && self.add_found(p, &sub, InodeKind::Directory, 0)
                        {
                            self.table.subdirectories += 1;
                        }
                        queue.push_back(sub);
                    }
                    InodeKind::Regular if e.links > 1 => {
                        self.add_found(p, &path, InodeKind::Regular, e.links);
                    }
                    _ => {}
                }
            }
            if !complete {
                self.table.unsearched.push(p.name.clone());
                let reason = format!(
                    "not fully searched for hard links: the scan budget (ALIAS_SCAN_ENTRIES = {ALIAS_SCAN_ENTRIES} directory entries per policy set) ran out in {dir}; a file not searched that has another hard link is decided by the name that reaches it"
                );
                return self.notes.push(note(p, reason));
            }
        }
    }

    /// An entry for a file or subdirectory found under a protected directory; whether
    /// it was added.
    fn add_found(&mut self, p: &Protected, path: &str, kind: InodeKind, links: u64) -> bool {
        if let Some(reason) = alias_name_too_long(path) {
            self.notes
                .push(note(p, format!("{reason}: no alias entry")));
            return false;
        }
        let key = match self.identify(path, false) {
            // Changed since it was listed: only what is still the same kind counts.
            Ok((key, found, _)) if found == kind => key,
            Ok(_) => return false,
            Err(e) => {
                self.notes.push(note(
                    p,
                    format!("cannot identify {path} ({e}): no alias entry"),
                ));
                return false;
            }
        };
        if kind == InodeKind::Regular {
            self.table.linked.insert(path.to_owned(), links);
        }
        if self.table.names.contains_key(&key) {
            return false;
        }
        if self.table.names.len() >= ALIASES_PER_SET {
            self.no_room += 1;
            return false;
        }
        self.table.names.insert(key, path.to_owned());
        true
    }

    fn finish(&mut self) {
        if self.no_room > 0 {
            self.notes.push(SkippedRule {
                policy: "(the whole set)".into(),
                rule: "matchDirectories".into(),
                reason: format!(
                    "{} subdirectories and files with other hard links under protected directories have no alias entry: ALIASES_PER_SET = {ALIASES_PER_SET} entries are in use; they are decided by the name that reaches them",
                    self.no_room
                ),
            });
        }
    }
}

#[cfg(test)]
mod tests;
