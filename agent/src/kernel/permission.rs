//! Who refused the agent's `bpf()` calls (`EPERM`): telling root to "run as root" helps
//! nobody, so this looks at what the process is (effective uid, effective capabilities,
//! seccomp, user namespace) and what the kernel enforces (lockdown) and names the first
//! thing that explains it.

use std::path::Path;

/// Capabilities the probes need: load and attach BPF programs (`CAP_BPF`), BTF-typed
/// tracing and `bpf_d_path` (`CAP_PERFMON`), LSM programs, pinning and iterators
/// (`CAP_SYS_ADMIN`), with the bit numbers of `linux/capability.h`.
pub const NEEDED_CAPABILITIES: [(u32, &str); 3] =
    [(39, "CAP_BPF"), (38, "CAP_PERFMON"), (21, "CAP_SYS_ADMIN")];

/// What the process and kernel say about themselves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessFacts {
    pub euid: u32,
    /// `CapEff:` of `/proc/self/status`.
    pub effective_caps: Option<u64>,
    /// `Seccomp:` of `/proc/self/status` (0 off, 1 strict, 2 filter).
    pub seccomp: Option<u32>,
    /// `/proc/self/uid_map`, whitespace collapsed (`0 0 4294967295` = the initial
    /// user namespace).
    pub uid_map: Option<String>,
    /// The selected mode of `/sys/kernel/security/lockdown` (`none`, `integrity`,
    /// `confidentiality`).
    pub lockdown: Option<String>,
}

/// Why `bpf()` was refused, as far as this process can tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Whether the process is root: only then is "run as root" the wrong advice.
    pub root: bool,
    pub reason: String,
}

impl ProcessFacts {
    /// This process's facts, from procfs and securityfs (each `None` if unreadable).
    pub fn live() -> Self {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
                .map(str::to_owned)
        };
        let read = |path: &str| std::fs::read_to_string(Path::new(path)).ok();
        Self {
            // SAFETY: geteuid takes no arguments and cannot fail.
            euid: unsafe { libc::geteuid() },
            effective_caps: field("CapEff:").and_then(|h| u64::from_str_radix(&h, 16).ok()),
            seccomp: field("Seccomp:").and_then(|s| s.parse().ok()),
            uid_map: read("/proc/self/uid_map")
                .map(|m| m.split_whitespace().collect::<Vec<_>>().join(" ")),
            lockdown: read("/sys/kernel/security/lockdown").and_then(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix('[')?.strip_suffix(']'))
                    .map(str::to_owned)
            }),
        }
    }

    /// The first explanation that fits, most specific first.
    pub fn refusal(&self) -> Refusal {
        let root = self.euid == 0;
        let reason = if !root {
            format!(
                "this process is not root (euid {}): run it as root",
                self.euid
            )
        } else if let Some(missing) = self.missing_capabilities() {
            format!(
                "this process is root but lacks {missing} in its effective capabilities \
                 (a container, or the unit's CapabilityBoundingSet=, drops them): grant them"
            )
        } else if self.seccomp.is_some_and(|s| s != 0) {
            "this process is root with the capabilities it needs, but runs under a seccomp \
             filter (Seccomp: 2 in /proc/self/status, e.g. a container runtime's) that \
             refuses bpf(): run it without that filter"
                .to_owned()
        } else if self
            .uid_map
            .as_deref()
            .is_some_and(|m| m != "0 0 4294967295")
        {
            format!(
                "this process is root only in a user namespace (uid_map {:?}): BPF-LSM needs \
                 root of the initial user namespace",
                self.uid_map.as_deref().unwrap_or_default()
            )
        } else {
            format!(
                "this process is root with {}, no seccomp filter, in the initial user \
                 namespace (lockdown: {}): the kernel refused it itself (another LSM's policy, \
                 or a sandbox around this machine); the kernel log may say which",
                NEEDED_CAPABILITIES.map(|(_, n)| n).join(", "),
                self.lockdown.as_deref().unwrap_or("unknown")
            )
        };
        Refusal { root, reason }
    }

    fn missing_capabilities(&self) -> Option<String> {
        let caps = self.effective_caps?;
        let missing: Vec<&str> = NEEDED_CAPABILITIES
            .iter()
            .filter(|(bit, _)| caps & (1u64 << bit) == 0)
            .map(|(_, name)| *name)
            .collect();
        (!missing.is_empty()).then(|| missing.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> ProcessFacts {
        ProcessFacts {
            euid: 0,
            effective_caps: Some(0x1ff_ffff_ffff),
            seccomp: Some(0),
            uid_map: Some("0 0 4294967295".into()),
            lockdown: Some("integrity".into()),
        }
    }

    #[test]
    fn root_is_never_told_to_run_as_root() {
        let user = ProcessFacts {
            euid: 1000,
            ..root()
        };
        let r = user.refusal();
        assert!(
            !r.root && r.reason.contains("not root (euid 1000)"),
            "{r:?}"
        );
        let no_bpf = ProcessFacts {
            effective_caps: Some(0x1ff_ffff_ffff & !(1 << 39) & !(1 << 21)),
            ..root()
        };
        let seccomp = ProcessFacts {
            seccomp: Some(2),
            ..root()
        };
        let userns = ProcessFacts {
            uid_map: Some("0 100000 65536".into()),
            ..root()
        };
        let cases = [
            (no_bpf, "lacks CAP_BPF, CAP_SYS_ADMIN"),
            (seccomp, "seccomp filter"),
            (userns, "user namespace (uid_map \"0 100000 65536\")"),
            (root(), "the kernel refused it itself"),
        ];
        for (facts, expected) in cases {
            let r = facts.refusal();
            assert!(r.root, "{facts:?}");
            assert!(r.reason.contains(expected), "{expected}: {}", r.reason);
            assert!(!r.reason.contains("run it as root"), "{}", r.reason);
        }
        assert!(root().refusal().reason.contains("lockdown: integrity"));
    }

    #[test]
    fn the_live_facts_are_this_process() {
        let facts = ProcessFacts::live();
        // SAFETY: geteuid cannot fail.
        assert_eq!(facts.euid, unsafe { libc::geteuid() });
        assert!(
            facts.effective_caps.is_some() && facts.seccomp.is_some(),
            "{facts:?}"
        );
        assert_eq!(facts.refusal().root, facts.euid == 0);
    }
}
