//! Alias entries built from policies over a fake host: files, directories, hard
//! links, symlinked rule paths, missing paths and every limit.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use edgearmor_policy::{DefaultPosture, DefaultPostures, compile, parse_policy_text};
use edgearmor_probe_abi::ALIAS_PATH_CAP;

use super::super::{KernelRuleSet, limits::ALIAS_SCAN_ENTRIES};
use super::AliasTable;
use crate::control::policy_table::PolicyCatalog;
use crate::control::setid_rules::SetidRuleSet;
use crate::host::{DirEntry, HostKernel, InodeKind, KernelInode};
use crate::kernel::loader::HostPaths;

/// The root filesystem's mount (id 22, device 254:0) and a second one (id 40, 0:45).
const MOUNTS: &str =
    "22 1 254:0 / / rw - ext4 /dev/vda rw\n40 22 0:45 / /srv rw - tmpfs tmpfs rw\n";
const ROOT_DEV: u32 = 254 << 20;
const SRV_DEV: u32 = 45;

/// A host whose files are a table: path -> inode; symlinks resolve through `links`.
#[derive(Default)]
struct FakeHost {
    inodes: BTreeMap<String, KernelInode>,
    symlinks: BTreeMap<String, String>,
    /// A directory listed with this many generated regular files (links 2, ino from 1000).
    generated: Option<(String, usize)>,
}

impl FakeHost {
    fn add(&mut self, path: &str, ino: u64, kind: InodeKind, links: u64) -> &mut Self {
        let mnt_id = if path.starts_with("/srv") { 40 } else { 22 };
        let inode = KernelInode {
            ino,
            mnt_id,
            kind,
            links,
        };
        self.inodes.insert(path.to_owned(), inode);
        self
    }
    fn file(&mut self, path: &str, ino: u64, links: u64) -> &mut Self {
        self.add(path, ino, InodeKind::Regular, links)
    }
    fn dir(&mut self, path: &str, ino: u64) -> &mut Self {
        self.add(path, ino, InodeKind::Directory, 2)
    }
    fn generated_file(&self, path: &str) -> Option<KernelInode> {
        let (dir, n) = self.generated.as_ref()?;
        let i: usize = path
            .strip_prefix(dir.as_str())?
            .strip_prefix("/f")?
            .parse()
            .ok()?;
        (i < *n).then_some(KernelInode {
            ino: 1000 + i as u64,
            mnt_id: 22,
            kind: InodeKind::Regular,
            links: 2,
        })
    }
}

impl HostKernel for FakeHost {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        match path.to_str() {
            Some("/proc/self/mountinfo") => Ok(MOUNTS.as_bytes().to_vec()),
            _ => Err(io::ErrorKind::NotFound.into()),
        }
    }
    fn mount_securityfs(&self) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
    fn release(&self) -> String {
        "test".into()
    }
    fn node_name(&self) -> String {
        "gw-1".into()
    }
    fn process_executable(&self, _tgid: u32) -> Option<PathBuf> {
        None
    }
    fn real_path(&self, path: &Path) -> Option<PathBuf> {
        let p = path.to_str()?;
        let real = self.symlinks.get(p).map_or(p, String::as_str);
        self.inodes.contains_key(real).then(|| real.into())
    }
    fn random_key(&self) -> io::Result<[u64; 2]> {
        Ok([1, 2])
    }
    fn is_bpffs(&self, _path: &Path) -> bool {
        false
    }
    fn kernel_inode(&self, path: &Path, follow: bool) -> io::Result<KernelInode> {
        let p = path.to_str().ok_or(io::ErrorKind::InvalidInput)?;
        if let Some(target) = self.symlinks.get(p) {
            return match follow {
                true => self.kernel_inode(Path::new(target), true),
                false => Ok(KernelInode {
                    ino: 9999,
                    mnt_id: 22,
                    kind: InodeKind::Symlink,
                    links: 1,
                }),
            };
        }
        let found = self
            .inodes
            .get(p)
            .copied()
            .or_else(|| self.generated_file(p));
        found.ok_or_else(|| io::ErrorKind::NotFound.into())
    }
    fn dir_entries(&self, dir: &Path, max: usize) -> io::Result<(Vec<DirEntry>, bool)> {
        let dir = dir.to_str().ok_or(io::ErrorKind::InvalidInput)?;
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        let direct = |p: &&String| {
            p.strip_prefix(prefix.as_str())
                .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
        };
        let mut all: Vec<DirEntry> = Vec::new();
        for p in self
            .inodes
            .keys()
            .chain(self.symlinks.keys())
            .filter(direct)
        {
            let (kind, links) = match self.inodes.get(p) {
                Some(i) => (
                    i.kind,
                    if i.kind == InodeKind::Regular {
                        i.links
                    } else {
                        0
                    },
                ),
                None => (InodeKind::Symlink, 0),
            };
            let name = p[prefix.len()..].into();
            all.push(DirEntry { name, kind, links });
        }
        if let Some((generated, n)) = &self.generated
            && generated.trim_end_matches('/') == dir.trim_end_matches('/')
        {
            all.extend((0..*n).map(|i| DirEntry {
                name: format!("f{i}").into(),
                kind: InodeKind::Regular,
                links: 2,
            }));
        }
        let complete = all.len() <= max;
        all.truncate(max);
        Ok((all, complete))
    }
}

fn policy(name: &str, action: &str, file: &str) -> String {
    format!(
        "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorHostPolicy\nmetadata:\n  name: {name}\nspec:\n  nodeSelector:\n    matchLabels:\n      kubearmor.io/hostname: \"*\"\n  file:\n{file}  action: {action}\n"
    )
}

fn build_on(host: Option<&FakeHost>, yamls: &[String]) -> KernelRuleSet {
    let mut policies = Vec::new();
    for (i, yaml) in yamls.iter().enumerate() {
        let file = PathBuf::from(format!("p{i}.yaml"));
        policies.extend(parse_policy_text(&file, yaml).expect("valid policy"));
    }
    let compiled = compile(&policies, DefaultPostures::uniform(DefaultPosture::Audit));
    let identity = |p: &str| p.to_owned();
    let paths = host.map(|h| HostPaths(h));
    let resolver: &dyn super::super::PathResolver = match &paths {
        Some(p) => p,
        None => &identity,
    };
    KernelRuleSet::build(
        &SetidRuleSet::default(),
        &compiled,
        &mut PolicyCatalog::default(),
        [1, 2],
        resolver,
    )
}

fn names(table: &AliasTable) -> Vec<(u64, u32, &str)> {
    table
        .names
        .iter()
        .map(|(&(ino, dev), n)| (ino, dev, n.as_str()))
        .collect()
}

fn notes(set: &KernelRuleSet) -> Vec<String> {
    set.warnings.iter().map(ToString::to_string).collect()
}

/// /etc/shadow (hard-linked elsewhere), the readOnly tree /etc/ro/ and /srv/ (another
/// mount, not recursive).
fn gateway() -> FakeHost {
    let mut host = FakeHost::default();
    host.dir("/etc", 2)
        .file("/etc/shadow", 10, 2)
        .dir("/etc/ro", 20)
        .file("/etc/ro/a", 21, 1)
        .file("/etc/ro/b", 22, 3)
        .dir("/etc/ro/sub", 23)
        .file("/etc/ro/sub/c", 24, 2)
        .dir("/srv", 30)
        .file("/srv/x", 31, 2)
        .dir("/srv/deeper", 32)
        .file("/srv/deeper/y", 33, 2);
    host.symlinks
        .insert("/etc/ro/link".into(), "/etc/shadow".into());
    host
}

const GATEWAY_RULES: &str = "    matchPaths:\n      - path: /etc/shadow\n    matchDirectories:\n      - dir: /etc/ro/\n        recursive: true\n        readOnly: true\n      - dir: /srv/\n";

#[test]
fn rule_paths_directories_and_other_linked_files_get_their_names() {
    let host = gateway();
    let set = build_on(Some(&host), &[policy("p", "Block", GATEWAY_RULES)]);
    assert!(set.refused.is_empty(), "{:?}", set.refused);
    assert_eq!(
        names(&set.aliases),
        [
            (10, ROOT_DEV, "/etc/shadow"),
            (20, ROOT_DEV, "/etc/ro/"),
            (22, ROOT_DEV, "/etc/ro/b"),
            (23, ROOT_DEV, "/etc/ro/sub/"),
            (24, ROOT_DEV, "/etc/ro/sub/c"),
            (30, SRV_DEV, "/srv/"),
            (31, SRV_DEV, "/srv/x"),
        ]
    );
    // Not /etc/ro/a (one link), not the symlink, nothing under /srv/deeper/ (not
    // recursive), not /srv/deeper/ itself.
    assert_eq!((set.aliases.protected, set.aliases.subdirectories), (3, 1));
    let linked: Vec<(&str, u64)> = set
        .aliases
        .linked
        .iter()
        .map(|(n, l)| (n.as_str(), *l))
        .collect();
    assert_eq!(
        linked,
        [
            ("/etc/ro/b", 3),
            ("/etc/ro/sub/c", 2),
            ("/etc/shadow", 2),
            ("/srv/x", 2)
        ]
    );
    assert!(notes(&set).is_empty(), "{:?}", notes(&set));
    assert_eq!(
        set.aliases.report(),
        "3 protected inode(s) with an alias entry (7 entries with subdirectories and other-linked files), 4 protected file(s) with other hard links: /etc/ro/b (3 links), /etc/ro/sub/c (2 links), /etc/shadow (2 links), /srv/x (2 links)"
    );
    let entries: Vec<_> = set.alias_entries(5).collect();
    assert_eq!(entries.len(), 7);
    let (key, value) = entries[1];
    assert_eq!((key.ino, key.dev, key.generation), (20, ROOT_DEV, 5));
    assert_eq!(&value.path[..value.len as usize], b"/etc/ro/");
    assert!(value.path[value.len as usize..].iter().all(|&b| b == 0));
}

#[test]
fn a_symlinked_rule_path_is_named_as_the_kernel_sees_it() {
    let mut host = FakeHost::default();
    host.file("/usr/bin/ls", 7, 1);
    host.symlinks.insert("/bin/ls".into(), "/usr/bin/ls".into());
    let rules = "    matchPaths:\n      - path: /bin/ls\n";
    let set = build_on(Some(&host), &[policy("p", "Block", rules)]);
    assert_eq!(names(&set.aliases), [(7, ROOT_DEV, "/usr/bin/ls")]);
}

#[test]
fn missing_and_unidentifiable_paths_get_no_entry_and_a_note() {
    let mut host = gateway();
    host.file("/etc/dir-as-file", 50, 1)
        .dir("/etc/file-as-dir", 51);
    let rules = "    matchPaths:\n      - path: /etc/missing\n      - path: /etc/file-as-dir\n    matchDirectories:\n      - dir: /etc/gone/\n      - dir: /etc/dir-as-file/\n";
    let set = build_on(Some(&host), &[policy("p", "Block", rules)]);
    assert!(set.refused.is_empty(), "{:?}", set.refused);
    assert!(set.aliases.names.is_empty(), "{:?}", set.aliases);
    let notes = notes(&set);
    assert_eq!(notes.len(), 4, "{notes:?}");
    let expect = [
        "policy p: /etc/dir-as-file/: /etc/dir-as-file/ is not a directory: no alias entry",
        "policy p: /etc/file-as-dir: /etc/file-as-dir is a directory (matchDirectories protects one)",
        "policy p: /etc/gone/: /etc/gone/ does not exist now: no alias entry, the rule matches it by this name only",
        "policy p: /etc/missing: /etc/missing does not exist now",
    ];
    for (note, start) in notes.iter().zip(expect) {
        assert!(note.starts_with(start), "{note}");
    }
    // A host that cannot tell inodes apart (the trait's default) says so per path.
    struct Blind;
    impl HostKernel for Blind {
        fn read(&self, _path: &Path) -> io::Result<Vec<u8>> {
            Ok(MOUNTS.as_bytes().to_vec())
        }
        fn mount_securityfs(&self) -> io::Result<()> {
            Ok(())
        }
        fn release(&self) -> String {
            String::new()
        }
        fn node_name(&self) -> String {
            String::new()
        }
        fn process_executable(&self, _tgid: u32) -> Option<PathBuf> {
            None
        }
        fn real_path(&self, _path: &Path) -> Option<PathBuf> {
            None
        }
        fn random_key(&self) -> io::Result<[u64; 2]> {
            Ok([0; 2])
        }
        fn is_bpffs(&self, _path: &Path) -> bool {
            false
        }
    }
    let compiled = compile(
        &parse_policy_text(Path::new("p.yaml"), &policy("p", "Block", GATEWAY_RULES))
            .expect("valid"),
        DefaultPostures::uniform(DefaultPosture::Audit),
    );
    let set = KernelRuleSet::build(
        &SetidRuleSet::default(),
        &compiled,
        &mut PolicyCatalog::default(),
        [1, 2],
        &HostPaths(&Blind),
    );
    assert!(set.aliases.names.is_empty());
    assert_eq!(set.warnings.len(), 3, "{:?}", set.warnings);
    for w in &set.warnings {
        assert!(
            w.reason
                .starts_with(&format!("cannot identify {} (unsupported", w.rule)),
            "{w}"
        );
    }
}

#[test]
fn one_inode_named_by_two_rules_is_decided_as_the_stronger() {
    let mut host = FakeHost::default();
    host.file("/etc/a", 10, 2).file("/etc/b", 10, 2);
    let audit = policy("weak", "Audit", "    matchPaths:\n      - path: /etc/a\n");
    let block = policy("strong", "Block", "    matchPaths:\n      - path: /etc/b\n");
    let set = build_on(Some(&host), &[audit, block]);
    assert_eq!(names(&set.aliases), [(10, ROOT_DEV, "/etc/b")]);
    assert_eq!(
        notes(&set),
        [
            "policy weak: /etc/a: /etc/a is the same file as /etc/b: it is decided as /etc/b whatever name reaches it"
        ]
    );
}

#[test]
fn a_protected_name_as_long_as_path_max_has_its_entry_a_longer_file_found_is_a_note() {
    let fits = format!("/{}", "d".repeat(ALIAS_PATH_CAP - 2));
    let mut host = FakeHost::default();
    host.file(&fits, 5, 1);
    let rules = policy(
        "long",
        "Block",
        &format!("    matchPaths:\n      - path: {fits}\n"),
    );
    let set = build_on(Some(&host), &[rules]);
    assert!(set.refused.is_empty(), "{:?}", set.refused);
    assert_eq!(names(&set.aliases), [(5, ROOT_DEV, fits.as_str())]);
    // Found under a protected directory it is a note: what is on disk never refuses.
    let mut host = FakeHost::default();
    let deep = format!("/etc/ro/{}", "f".repeat(ALIAS_PATH_CAP));
    host.dir("/etc/ro", 20).file(&deep, 21, 2);
    let set = build_on(
        Some(&host),
        &[policy(
            "p",
            "Block",
            "    matchDirectories:\n      - dir: /etc/ro/\n",
        )],
    );
    assert!(set.refused.is_empty());
    assert_eq!(names(&set.aliases), [(20, ROOT_DEV, "/etc/ro/")]);
    assert!(
        notes(&set)[0].contains(&format!(
            "longer than ALIAS_PATH_CAP - 1 = {} bytes",
            ALIAS_PATH_CAP - 1
        )),
        "{:?}",
        notes(&set)
    );
}

#[test]
fn linked_files_past_the_table_are_counted_and_reported() {
    let mut host = FakeHost::default();
    host.dir("/var/lib", 20);
    let files = edgearmor_probe_abi::ALIASES_PER_SET + 10;
    host.generated = Some(("/var/lib".into(), files));
    let set = build_on(
        Some(&host),
        &[policy(
            "p",
            "Audit",
            "    matchDirectories:\n      - dir: /var/lib/\n",
        )],
    );
    assert!(set.refused.is_empty());
    assert_eq!(
        set.aliases.names.len(),
        edgearmor_probe_abi::ALIASES_PER_SET
    );
    assert_eq!(
        set.aliases.linked.len(),
        files,
        "every linked file is listed"
    );
    assert!(
        set.aliases
            .report()
            .ends_with(&format!("(+{} more)", files - 8)),
        "{}",
        set.aliases.report()
    );
    assert_eq!(
        notes(&set),
        [format!(
            "policy (the whole set): matchDirectories: 11 subdirectories and files with other hard links under protected directories have no alias entry: ALIASES_PER_SET = {} entries are in use; they are decided by the name that reaches them",
            edgearmor_probe_abi::ALIASES_PER_SET
        )]
    );
}

#[test]
fn a_search_past_the_budget_names_the_directory_not_fully_searched() {
    let mut host = gateway();
    host.dir("/var", 40).dir("/var/big", 41);
    host.generated = Some(("/var/big".into(), ALIAS_SCAN_ENTRIES));
    let rules = "    matchDirectories:\n      - dir: /var/\n        recursive: true\n      - dir: /etc/ro/\n        recursive: true\n";
    let set = build_on(Some(&host), &[policy("p", "Audit", rules)]);
    let notes = notes(&set);
    assert!(notes.iter().any(|n| n.starts_with("policy p: /var/: not fully searched for hard links: the scan budget (ALIAS_SCAN_ENTRIES = 100000 directory entries per policy set) ran out in /var/big/")), "{notes:?}");
    assert_eq!(set.aliases.unsearched, ["/var/"]);
    let report = set.aliases.report();
    let tail = ", not fully searched for hard links (scan budget): /var/";
    assert!(report.ends_with(tail), "{report}");
    // The budget is per set: /etc/ro/ (searched first, fewer levels) was searched whole.
    assert!(
        set.aliases.names.values().any(|n| n == "/etc/ro/sub/c"),
        "{:?}",
        set.aliases
    );
}

fn process_policy(name: &str, action: &str, process: &str) -> String {
    format!(
        "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorHostPolicy\nmetadata:\n  name: {name}\nspec:\n  nodeSelector:\n    matchLabels:\n      kubearmor.io/hostname: \"*\"\n  process:\n{process}  action: {action}\n"
    )
}

/// Process rules fill the exec table with files only: the named executable, and the
/// other-linked files under a directory (recursively), never a directory; the file
/// table stays empty, and the report lists the other-linked executables.
#[test]
fn process_rules_follow_their_executables_by_inode() {
    let mut host = gateway();
    host.dir("/usr", 40)
        .dir("/usr/bin", 41)
        .file("/usr/bin/apt", 42, 2)
        .dir("/usr/sbin", 43)
        .file("/usr/sbin/one", 44, 1)
        .file("/usr/sbin/two", 45, 2)
        .dir("/usr/sbin/sub", 46)
        .file("/usr/sbin/sub/three", 47, 3);
    let rules = "    matchPaths:\n      - path: /usr/bin/apt\n    matchDirectories:\n      - dir: /usr/sbin/\n        recursive: true\n";
    let set = build_on(Some(&host), &[process_policy("p", "Block", rules)]);
    assert!(set.refused.is_empty(), "{:?}", set.refused);
    assert!(set.aliases.names.is_empty(), "{:?}", set.aliases);
    assert_eq!(
        names(&set.exec_aliases),
        [
            (42, ROOT_DEV, "/usr/bin/apt"),
            (45, ROOT_DEV, "/usr/sbin/two"),
            (47, ROOT_DEV, "/usr/sbin/sub/three"),
        ]
    );
    assert_eq!(set.exec_aliases.protected, 1);
    assert_eq!(
        set.exec_aliases.report_executables(),
        "exec identity: 1 executable(s) followed by inode (3 entries with other-linked files), 3 executable(s) with other hard links: /usr/bin/apt (2 links), /usr/sbin/sub/three (3 links), /usr/sbin/two (2 links)"
    );
    let entries: Vec<_> = set.exec_alias_entries(7).collect();
    assert_eq!(entries.len(), 3);
    assert!(entries.iter().all(|(k, _)| k.generation == 7));
}
