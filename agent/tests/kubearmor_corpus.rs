//! KubeArmor's own host policies (`policy/tests/corpus/kubearmor/`, every
//! KubeArmorHostPolicy file of the KubeArmor and policy-templates repositories,
//! listed with repository, commit and path in its `SOURCES`) through `edgearmor policy
//! check`, one file at a time, as an operator would check them.
//!
//! The outcome of every file is explicit: the files in [`REFUSED`] are refused with
//! exactly the reasons listed (each diagnostic line is classified into one
//! [`Reason`]), every other file passes. A construct newly enforced, or a
//! regression, changes an outcome and fails here: update the list with it.
//!
//! [`REFUSED`] also says what KubeArmor's CRD says of each file
//! (`deployments/CRD/KubeArmorHostPolicy.yaml` at the commit in `SOURCES`, applied as
//! `kubectl apply` does with its default strict field validation; the corpus's
//! `crd_check.py` computes it). Issue #17 asks that every file the CRD accepts
//! passes, except a pattern that is not a path glob: the `Crd::Accepts` entries are
//! what is left of it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Why `policy check` refuses a corpus file: one per diagnostic line, found by a
/// phrase of its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Reason {
    // --- KubeArmor accepts these; enforcing them needs the kernel side.
    /// `ownerOnly: true` on a file or process rule.
    OwnerOnly,
    /// `**` in a pattern.
    DoubleStar,
    /// Wildcards in the first components (`/*/*/dig`): all such patterns are keyed
    /// under `/`, which holds at most `GLOBS_PER_KEY` of them per source.
    GlobsPerKey,
    /// `syscalls.matchPaths`.
    SyscallMatchPaths,
    /// A `matchSyscalls` entry outside the setid family.
    Syscall,
    // --- refused with that reason by design (issue #17): not a path glob.
    /// A `pattern` written as a regular expression (`^...$`).
    RegexPattern,
    // --- KubeArmor's CRD refuses these too.
    /// No `spec.nodeSelector` (the CRD requires it).
    NoNodeSelector,
    /// A `matchDirectories` `dir` without its trailing `/` (the CRD's pattern).
    DirectoryWithoutSlash,
    /// A key given twice (kubectl's strict field validation refuses it).
    DuplicateKey,
    /// A key the CRD does not have.
    UnknownKey,
    /// `metadata.name` not a Kubernetes object name.
    PolicyName,
    /// `spec:` with nothing in it.
    EmptySpec,
}

use Reason as R;

impl Reason {
    const ALL: [Reason; 12] = [
        R::OwnerOnly,
        R::DoubleStar,
        R::GlobsPerKey,
        R::SyscallMatchPaths,
        R::Syscall,
        R::RegexPattern,
        R::NoNodeSelector,
        R::DirectoryWithoutSlash,
        R::DuplicateKey,
        R::UnknownKey,
        R::PolicyName,
        R::EmptySpec,
    ];

    /// A phrase only this reason's diagnostics contain.
    fn phrase(self) -> &'static str {
        match self {
            R::OwnerOnly => "ownerOnly: true is not supported",
            R::DoubleStar => "`**` is not enforceable",
            R::GlobsPerKey => "GLOBS_PER_KEY",
            R::SyscallMatchPaths => "syscalls.matchPaths is not supported",
            R::Syscall => "is not supported: edgearmor enforces setuid",
            R::RegexPattern => "is a regular expression",
            R::NoNodeSelector => "missing required key \"nodeSelector\"",
            R::DirectoryWithoutSlash => "must end with '/'",
            R::DuplicateKey => "given twice",
            R::UnknownKey => "unknown key",
            R::PolicyName => "invalid policy name",
            R::EmptySpec => "spec: expected a mapping, found nothing",
        }
    }

    /// Whether KubeArmor's CRD accepts what this reason refuses.
    fn crd_accepts(self) -> bool {
        self <= R::RegexPattern
    }

    fn classify(line: &str) -> Reason {
        let found: Vec<Reason> = Self::ALL
            .into_iter()
            .filter(|r| line.contains(r.phrase()))
            .collect();
        match found[..] {
            [reason] => reason,
            _ => panic!("no single reason for {line:?}: {found:?}; add one to Reason"),
        }
    }
}

/// What KubeArmor's CRD says of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Crd {
    Accepts,
    Refuses(&'static str),
}

const NO_NODE_SELECTOR: Crd = Crd::Refuses("spec.nodeSelector is required");

/// Every corpus file `policy check` refuses, what the CRD says of it, and every
/// reason `policy check` gives.
const REFUSED: &[(&str, Crd, &[Reason])] = &[
    (
        "KubeArmor/pkg/KubeArmorController/config/samples/security_v1_kubearmorhostpolicy.yaml",
        Crd::Refuses("spec must be an object"),
        &[R::EmptySpec],
    ),
    (
        "KubeArmor/tests/nonk8s_env/host_policy/res/hsp-audit-syscall.yaml",
        Crd::Accepts,
        &[R::SyscallMatchPaths],
    ),
    (
        "KubeArmor/tests/nonk8s_env/host_policy/res/hsp-block-process-dir-bin.yaml",
        Crd::Refuses("matchDirectories[].dir must end with '/'"),
        &[R::DirectoryWithoutSlash],
    ),
    (
        "policy-templates/cis/system/hsp-cis-1-1-17-controller-manager.yaml",
        Crd::Accepts,
        &[R::OwnerOnly],
    ),
    (
        "policy-templates/cis/system/hsp-cis-1-1-3-controller-manager-pod-block.yaml",
        Crd::Accepts,
        &[R::OwnerOnly],
    ),
    (
        "policy-templates/cis/system/hsp-cis-1-1-9-api-cni-files.yaml",
        Crd::Accepts,
        &[R::OwnerOnly],
    ),
    (
        "policy-templates/cis/system/hsp-cis-1.1.13-admin-conf-block.yaml",
        Crd::Accepts,
        &[R::OwnerOnly],
    ),
    (
        "policy-templates/cis/system/hsp-cis-1.1.15-scheduler-configuration-file-block.yaml",
        Crd::Accepts,
        &[R::OwnerOnly],
    ),
    (
        "policy-templates/cis/system/hsp-cis-1.1.20-restrict-pki-certificate.yaml",
        Crd::Accepts,
        &[R::OwnerOnly],
    ),
    (
        "policy-templates/cis/system/hsp-cis-1.1.5-scheduler-pod-block.yaml",
        Crd::Accepts,
        &[R::OwnerOnly],
    ),
    (
        "policy-templates/cis/system/hsp-cis-1.1.7-etcd-pod-block.yaml",
        Crd::Accepts,
        &[R::OwnerOnly],
    ),
    (
        "policy-templates/cve/system/hsp-cve-2018-15664-docker-cp-symlink-exchange.yaml",
        Crd::Accepts,
        &[R::DoubleStar],
    ),
    (
        "policy-templates/cve/system/hsp-cve-2020-8559-bug-block.yaml",
        Crd::Accepts,
        &[R::DoubleStar],
    ),
    (
        "policy-templates/cve/system/hsp-cve-2024-3094-xz-v5-6-backdoor.yaml",
        Crd::Refuses("file.matchPatterns[].pattern is required (and path unknown)"),
        &[R::UnknownKey],
    ),
    (
        "policy-templates/exposures/configs/hsp-config-server-private-keys.yaml",
        Crd::Accepts,
        &[R::DoubleStar],
    ),
    (
        "policy-templates/mitre/system/hsp-mitre-process-injection-proc-mem.yaml",
        Crd::Accepts,
        &[R::RegexPattern],
    ),
    (
        "policy-templates/mitre/system/hsp-mitre-t1210-audit-kubernetes-manifest.yaml",
        Crd::Accepts,
        &[R::OwnerOnly],
    ),
    (
        "policy-templates/nist/system/hsp-cm-1-configuration-management-policy-and-procedures.yaml",
        Crd::Accepts,
        &[R::OwnerOnly],
    ),
    (
        "policy-templates/nist/system/hsp-nist-ac-6-10-prohibit-non-privileged-users-from-executing-privileged-functions.yaml",
        Crd::Refuses("field \"action\" given twice (kubectl's strict field validation)"),
        &[R::DuplicateKey],
    ),
    (
        "policy-templates/nist/system/hsp-nist-ac-6-9-auditing-use-of-privileged-functions.yaml",
        Crd::Refuses("field \"action\" given twice (kubectl's strict field validation)"),
        &[R::DuplicateKey],
    ),
    (
        "policy-templates/nist/system/hsp-nist-au-3-audit-bash-config-files.yaml",
        Crd::Accepts,
        &[R::DoubleStar],
    ),
    (
        "policy-templates/nist/system/hsp-nist-au-3-audit-etc-dir.yaml",
        Crd::Accepts,
        &[R::OwnerOnly],
    ),
    (
        "policy-templates/nist/system/hsp-nist-ca-9-audit-untrusted-read-on-sensitive-files.yaml",
        Crd::Refuses("field \"action\" given twice (kubectl's strict field validation)"),
        &[R::OwnerOnly, R::DuplicateKey],
    ),
    (
        "policy-templates/nist/system/hsp-nist-cm-11-2-allow-user-installation-of-software-only-with-explicit-privileged-status.yaml",
        Crd::Accepts,
        &[R::OwnerOnly],
    ),
    (
        "policy-templates/nist/system/hsp-nist-si-4-detect-execution-of-network-tools-on-host.yaml",
        Crd::Accepts,
        &[R::GlobsPerKey],
    ),
    (
        "policy-templates/stigs/system/hsp-audit-stig ubuntu-20-010137-chfn.yaml",
        Crd::Refuses("spec.nodeSelector is required; metadata.name is not a DNS subdomain"),
        &[R::NoNodeSelector, R::PolicyName],
    ),
    (
        "policy-templates/stigs/system/hsp-audit-stig-ubuntu-20-010136-su.yaml",
        NO_NODE_SELECTOR,
        &[R::NoNodeSelector],
    ),
    (
        "policy-templates/stigs/system/hsp-audit-stig-ubuntu-20-010138-mount.yaml",
        NO_NODE_SELECTOR,
        &[R::NoNodeSelector],
    ),
    (
        "policy-templates/stigs/system/hsp-audit-stig-ubuntu-20-010139-umount.yaml",
        NO_NODE_SELECTOR,
        &[R::NoNodeSelector],
    ),
    (
        "policy-templates/stigs/system/hsp-audit-stig-ubuntu-20-010148-chown.yaml",
        NO_NODE_SELECTOR,
        &[R::Syscall, R::NoNodeSelector],
    ),
    (
        "policy-templates/stigs/system/hsp-audit-stig-ubuntu-20-010161-sudo.yaml",
        NO_NODE_SELECTOR,
        &[R::NoNodeSelector],
    ),
    (
        "policy-templates/stigs/system/hsp-audit-stig-ubuntu-20-010162-sudoedit.yaml",
        NO_NODE_SELECTOR,
        &[R::NoNodeSelector],
    ),
    (
        "policy-templates/stigs/system/hsp-audit-stig-ubuntu-20-010163-chsh.yaml",
        NO_NODE_SELECTOR,
        &[R::NoNodeSelector],
    ),
    (
        "policy-templates/stigs/system/hsp-audit-stig-ubuntu-20-010164-newgrp.yaml",
        NO_NODE_SELECTOR,
        &[R::NoNodeSelector],
    ),
    (
        "policy-templates/stigs/system/hsp-audit-stig-ubuntu-20-010165-chcon.yaml",
        NO_NODE_SELECTOR,
        &[R::NoNodeSelector],
    ),
    (
        "policy-templates/stigs/system/hsp-audit-stig-ubuntu-20-010166-apparmor-parser.yaml",
        NO_NODE_SELECTOR,
        &[R::NoNodeSelector],
    ),
    (
        "policy-templates/stigs/system/hsp-audit-stig-ubuntu-20-010168-chacl.yaml",
        NO_NODE_SELECTOR,
        &[R::NoNodeSelector],
    ),
    (
        "policy-templates/stigs/system/hsp-audit-stig-ubuntu-20-010172-passwd.yaml",
        NO_NODE_SELECTOR,
        &[R::NoNodeSelector],
    ),
    (
        "policy-templates/stigs/system/hsp-audit-stig-ubuntu-20-010173-unix-update.yaml",
        NO_NODE_SELECTOR,
        &[R::NoNodeSelector],
    ),
    (
        "policy-templates/stigs/system/hsp-audit-stig-ubuntu-20-010174-gpasswd.yaml",
        NO_NODE_SELECTOR,
        &[R::NoNodeSelector],
    ),
    (
        "policy-templates/stigs/system/hsp-audit-stig-ubuntu-20-010175-chage.yaml",
        NO_NODE_SELECTOR,
        &[R::NoNodeSelector],
    ),
    (
        "policy-templates/stigs/system/hsp-audit-stig-ubuntu-20-010176-usermod.yaml",
        NO_NODE_SELECTOR,
        &[R::NoNodeSelector],
    ),
    (
        "policy-templates/stigs/system/hsp-audit-stig-ubuntu-20-010177-crontab.yaml",
        NO_NODE_SELECTOR,
        &[R::NoNodeSelector],
    ),
    (
        "policy-templates/stigs/system/hsp-audit-stig-ubuntu-20-010178-pam-timestamp.yaml",
        NO_NODE_SELECTOR,
        &[R::NoNodeSelector],
    ),
    (
        "policy-templates/stigs/system/hsp-audit-stig-ubuntu-20-010267-sensitive-syscall.yaml",
        NO_NODE_SELECTOR,
        &[R::Syscall, R::NoNodeSelector],
    ),
    (
        "policy-templates/stigs/system/hsp-audit-stig-ubuntu-20-010297-kmod.yaml",
        NO_NODE_SELECTOR,
        &[R::NoNodeSelector],
    ),
    (
        "policy-templates/stigs/system/hsp-audit-stig-ubuntu-20-010298-fdisk.yaml",
        NO_NODE_SELECTOR,
        &[R::NoNodeSelector],
    ),
    (
        "policy-templates/stigs/system/hsp-audit-stig-ubuntu-20-010451-conf.yaml",
        NO_NODE_SELECTOR,
        &[R::DoubleStar, R::NoNodeSelector],
    ),
    (
        "policy-templates/stigs/system/hsp-block-stig-ubuntu-20-010419-log.yaml",
        NO_NODE_SELECTOR,
        &[R::OwnerOnly, R::NoNodeSelector],
    ),
    (
        "policy-templates/stigs/system/hsp-block-stig-ubuntu-20-010422-syslog.yaml",
        NO_NODE_SELECTOR,
        &[R::OwnerOnly, R::NoNodeSelector],
    ),
    (
        "policy-templates/stigs/system/hsp-block-stig-ubuntu-20-010427-lib.yaml",
        NO_NODE_SELECTOR,
        &[R::OwnerOnly, R::NoNodeSelector],
    ),
];

/// Files `policy check` accepts although KubeArmor's CRD refuses them, and why it does.
const ACCEPTED_THOUGH_THE_CRD_REFUSES: &[(&str, &str)] = &[(
    "KubeArmor/tests/nonk8s_env/host_policy/res/hsp-audit-network-protocol.yaml",
    "network.matchProtocols[].fromSource is required",
)];

/// Files whose `metadata.namespace` `policy check` ignores, with its warning.
const NAMESPACE_WARNED: &[&str] =
    &["policy-templates/nist/system/hsp-nist-au-3-audit-access-to-log-files.yaml"];

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policy/tests/corpus/kubearmor")
}

/// The files `SOURCES` lists (relative to the corpus directory).
fn sources() -> Vec<String> {
    let text = std::fs::read_to_string(corpus().join("SOURCES")).expect("SOURCES");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let fields: Vec<&str> = l.split('\t').collect();
            assert_eq!(
                fields.len(),
                4,
                "SOURCES line {l:?}: file, repo, commit, path"
            );
            assert!(
                fields[1].starts_with("kubearmor/") && fields[2].len() == 40,
                "SOURCES line {l:?}"
            );
            fields[0].to_owned()
        })
        .collect()
}

/// Every `*.yaml` under `dir`, relative to `root`.
fn yaml_files(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("corpus directory") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            yaml_files(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let relative = path.strip_prefix(root).expect("under the corpus");
            out.push(relative.to_str().expect("UTF-8 name").to_owned());
        }
    }
}

/// `edgearmor policy check FILE` in the corpus directory: success, and the lines
/// it printed (problems and warnings).
fn check(file: &str) -> (bool, Vec<String>) {
    let out = Command::new(env!("CARGO_BIN_EXE_edgearmor"))
        .current_dir(corpus())
        .args(["policy", "check", file])
        .output()
        .expect("edgearmor runs");
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    (out.status.success(), lines)
}

#[test]
fn the_corpus_is_every_file_sources_lists() {
    let mut on_disk = Vec::new();
    yaml_files(&corpus(), &corpus(), &mut on_disk);
    on_disk.sort();
    let mut listed = sources();
    listed.sort();
    assert_eq!(on_disk, listed);
    for (file, ..) in REFUSED {
        assert!(listed.iter().any(|l| l == file), "{file} is not in SOURCES");
    }
}

#[test]
fn each_kubearmor_host_policy_has_its_expected_outcome() {
    let expected: BTreeMap<&str, (Crd, &[Reason])> = REFUSED
        .iter()
        .map(|(file, crd, reasons)| (*file, (*crd, *reasons)))
        .collect();
    assert_eq!(expected.len(), REFUSED.len(), "a file listed twice");
    let files = sources();
    let mut wrong = Vec::new();
    // Files refused for each reason, and the diagnostic lines of each.
    let mut by_reason: BTreeMap<Reason, (usize, usize)> = BTreeMap::new();
    let (mut accepted, mut crd_accepted, mut crd_accepted_passing) = (0, 0, 0);
    for file in &files {
        let (ok, lines) = check(file);
        let problems: Vec<&String> = lines
            .iter()
            .filter(|l| !l.starts_with("warning: "))
            .collect();
        let mut reasons = BTreeSet::new();
        for line in &problems {
            assert!(line.starts_with(file.as_str()), "names the file: {line}");
            let reason = Reason::classify(line);
            by_reason.entry(reason).or_default().1 += 1;
            reasons.insert(reason);
        }
        for reason in &reasons {
            by_reason.entry(*reason).or_default().0 += 1;
        }
        assert_eq!(
            ok,
            problems.is_empty(),
            "{file}: exit status and problems: {lines:?}"
        );
        let warned = lines
            .iter()
            .any(|l| l.contains("metadata.namespace") && l.contains("is ignored"));
        assert_eq!(
            warned,
            NAMESPACE_WARNED.contains(&file.as_str()),
            "{file}: {lines:?}"
        );
        let crd_accepts = match expected.get(file.as_str()) {
            Some((crd, want)) => {
                let want: BTreeSet<Reason> = want.iter().copied().collect();
                if reasons != want {
                    wrong.push(format!(
                        "{file}: refused for {reasons:?}, expected {want:?}: {problems:?}"
                    ));
                }
                *crd == Crd::Accepts
            }
            None => {
                if !ok {
                    wrong.push(format!("{file}: refused, expected to pass: {problems:?}"));
                }
                !ACCEPTED_THOUGH_THE_CRD_REFUSES
                    .iter()
                    .any(|(f, _)| f == file)
            }
        };
        accepted += usize::from(ok);
        crd_accepted += usize::from(crd_accepts);
        crd_accepted_passing += usize::from(crd_accepts && ok);
    }
    println!(
        "{} files: {accepted} pass; {crd_accepted} accepted by KubeArmor's CRD, {crd_accepted_passing} of them pass",
        files.len()
    );
    for (reason, (files, lines)) in &by_reason {
        println!("refused for {reason:?}: {files} file(s), {lines} diagnostic(s)");
    }
    assert!(
        wrong.is_empty(),
        "outcomes changed (update REFUSED):\n{}",
        wrong.join("\n")
    );
}

/// What the CRD accepts is refused only for what issue #17 leaves to the kernel side
/// (or a regex); what it refuses, `policy check` refuses for the same reason.
#[test]
fn refusals_agree_with_kubearmors_crd() {
    for (file, crd, reasons) in REFUSED {
        assert!(!reasons.is_empty(), "{file}");
        match crd {
            Crd::Accepts => assert!(
                reasons.iter().all(|r| r.crd_accepts()),
                "{file}: the CRD accepts it, so {reasons:?} must not include a CRD refusal"
            ),
            Crd::Refuses(why) => assert!(
                reasons.iter().any(|r| !r.crd_accepts()),
                "{file}: the CRD refuses it ({why}), so must policy check, for that"
            ),
        }
    }
}
