//! The closed sets of words a policy may use: actions, severities, default
//! postures, network protocols, Linux capabilities and the setid syscalls, each
//! with its spelling in KubeArmor YAML and the number the kernel uses. The setid
//! family is defined in `edgearmor-wire` (its wire encoding) and re-exported here.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

/// What a matching rule does. KubeArmor spells these capitalised in YAML and alerts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Permitted; puts the rule's class into allow-list mode.
    Allow,
    /// Permitted and reported (`Action: Audit`, `Result: Passed`).
    Audit,
    /// Denied and reported.
    Block,
}

impl Action {
    /// KubeArmor's default when no level of a policy sets an action.
    pub const DEFAULT: Action = Action::Block;

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "Allow",
            Action::Audit => "Audit",
            Action::Block => "Block",
        }
    }

    /// Exact KubeArmor spelling only (the CRD's enum is case-sensitive).
    pub fn from_yaml(word: &str) -> Option<Action> {
        match word {
            "Allow" => Some(Action::Allow),
            "Audit" => Some(Action::Audit),
            "Block" => Some(Action::Block),
            _ => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A policy severity, 1..=10.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Severity(u8);

impl Severity {
    pub const MIN: u8 = 1;
    pub const MAX: u8 = 10;
    /// What alerts carry when no level of a policy sets a severity: KubeArmor
    /// documents 1 as the default and its alerts show `"Severity":"1"` then.
    pub const DEFAULT: Severity = Severity(1);

    pub fn new(value: i64) -> Option<Severity> {
        if (i64::from(Self::MIN)..=i64::from(Self::MAX)).contains(&value) {
            u8::try_from(value).ok().map(Severity)
        } else {
            None
        }
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a class in allow-list mode does with everything its `Allow` rules do not
/// cover (reported as `PolicyName: DefaultPosture`). Configured by the operator,
/// not by policies: the agent's `[posture]` table deserializes into it (`audit` or
/// `block`, `audit` when unset).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
// Named in serde's messages as the agent's config has always printed it
// (`expected enum Posture`).
#[serde(
    rename = "Posture",
    expecting = "enum Posture",
    rename_all = "lowercase"
)]
pub enum DefaultPosture {
    #[default]
    Audit,
    Block,
}

impl DefaultPosture {
    pub fn as_str(self) -> &'static str {
        match self {
            DefaultPosture::Audit => "audit",
            DefaultPosture::Block => "block",
        }
    }
}

impl fmt::Display for DefaultPosture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was neither `audit` nor `block`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown default posture {0:?} (expected \"audit\" or \"block\")")]
pub struct UnknownPosture(pub String);

impl FromStr for DefaultPosture {
    type Err = UnknownPosture;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "audit" => Ok(DefaultPosture::Audit),
            "block" => Ok(DefaultPosture::Block),
            other => Err(UnknownPosture(other.to_string())),
        }
    }
}

/// `network.matchProtocols[].protocol`. How each maps onto `socket_create`'s
/// (family, type, protocol) is the agent's business; the names are KubeArmor's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NetworkProtocol {
    Tcp,
    Udp,
    Icmp,
    Raw,
    Sctp,
}

impl NetworkProtocol {
    pub const ALL: [NetworkProtocol; 5] = [
        NetworkProtocol::Tcp,
        NetworkProtocol::Udp,
        NetworkProtocol::Icmp,
        NetworkProtocol::Raw,
        NetworkProtocol::Sctp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NetworkProtocol::Tcp => "tcp",
            NetworkProtocol::Udp => "udp",
            NetworkProtocol::Icmp => "icmp",
            NetworkProtocol::Raw => "raw",
            NetworkProtocol::Sctp => "sctp",
        }
    }

    /// KubeArmor's CRD accepts each name in lower case or all upper case.
    pub fn from_yaml(word: &str) -> Option<NetworkProtocol> {
        Self::ALL
            .into_iter()
            .find(|p| word == p.as_str() || word == p.as_str().to_ascii_uppercase())
    }

    /// Whether `word` is one of the names KubeArmor's CRD accepts beyond ours
    /// (refused as not supported yet rather than as unknown).
    pub fn is_kubearmor_only(word: &str) -> bool {
        KUBEARMOR_ONLY_PROTOCOLS
            .iter()
            .any(|p| word == *p || word == p.to_ascii_uppercase())
    }
}

/// The protocol names of KubeArmor's CRD (`matchProtocols[].protocol`) that
/// [`NetworkProtocol`] does not have.
pub const KUBEARMOR_ONLY_PROTOCOLS: &[&str] = &[
    "icmpv6",
    "stream",
    "dgram",
    "rdm",
    "seqpacket",
    "dccp",
    "packet",
    "all",
];

impl fmt::Display for NetworkProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Linux capability, by its number in `<linux/capability.h>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Capability(u8);

/// Linux capability names in number order (`CAP_` prefix dropped, lower case, as
/// KubeArmor writes them). KubeArmor's CRD lists 0..=33; the later ones exist on
/// every kernel this agent targets, so they are accepted too.
const CAPABILITY_NAMES: [&str; 41] = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

impl Capability {
    pub fn from_yaml(word: &str) -> Option<Capability> {
        CAPABILITY_NAMES
            .iter()
            .position(|&name| name == word)
            .and_then(|n| u8::try_from(n).ok())
            .map(Capability)
    }

    /// For an unknown name, the accepted spelling it most likely meant
    /// (`CAP_NET_RAW` and `NET_RAW` suggest `net_raw`).
    pub fn suggestion_for(word: &str) -> Option<&'static str> {
        let lowered = word.to_ascii_lowercase();
        let bare = lowered.strip_prefix("cap_").unwrap_or(&lowered);
        let bare = bare.replace('-', "_");
        CAPABILITY_NAMES.iter().copied().find(|&name| name == bare)
    }

    /// The capability number the kernel's `capable` hook receives.
    /// The capability with this number, if Linux defines it.
    pub fn from_number(number: u8) -> Option<Capability> {
        (usize::from(number) < CAPABILITY_NAMES.len()).then_some(Capability(number))
    }

    pub fn number(self) -> u8 {
        self.0
    }

    pub fn as_str(self) -> &'static str {
        CAPABILITY_NAMES
            .get(usize::from(self.0))
            .copied()
            .unwrap_or("unknown")
    }

    /// `CAP_NET_RAW`, as alerts name it.
    pub fn kernel_name(self) -> String {
        format!("CAP_{}", self.as_str().to_ascii_uppercase())
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The setid syscalls a `syscalls` section names: one definition, shared with the
/// wire format and the probes' kernel kinds (see [`edgearmor_wire::setid`]).
pub use edgearmor_wire::setid::{SetIdSyscall, SetidFlavour, SetidKind};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_have_linux_numbers() {
        assert_eq!(
            Capability::from_yaml("chown").map(Capability::number),
            Some(0)
        );
        assert_eq!(
            Capability::from_yaml("net_raw").map(Capability::number),
            Some(13)
        );
        assert_eq!(
            Capability::from_yaml("sys_admin").map(Capability::number),
            Some(21)
        );
        assert_eq!(
            Capability::from_yaml("checkpoint_restore").map(Capability::number),
            Some(40)
        );
        assert_eq!(Capability::from_yaml("NET_RAW"), None);
        assert_eq!(Capability::suggestion_for("CAP_NET_RAW"), Some("net_raw"));
        assert_eq!(Capability::suggestion_for("net-raw"), Some("net_raw"));
        assert_eq!(Capability::suggestion_for("teleport"), None);
        assert_eq!(
            Capability::from_yaml("setgid").map(Capability::kernel_name),
            Some("CAP_SETGID".to_string())
        );
    }

    #[test]
    fn protocols_accept_lower_and_upper_case_only() {
        assert_eq!(
            NetworkProtocol::from_yaml("raw"),
            Some(NetworkProtocol::Raw)
        );
        assert_eq!(
            NetworkProtocol::from_yaml("TCP"),
            Some(NetworkProtocol::Tcp)
        );
        assert_eq!(NetworkProtocol::from_yaml("Tcp"), None);
        assert_eq!(
            NetworkProtocol::from_yaml("SCTP"),
            Some(NetworkProtocol::Sctp)
        );
        assert_eq!(NetworkProtocol::from_yaml("icmpv6"), None);
        assert!(NetworkProtocol::is_kubearmor_only("icmpv6"));
        assert!(NetworkProtocol::is_kubearmor_only("ICMPV6"));
        assert!(!NetworkProtocol::is_kubearmor_only("tcp"));
    }

    #[test]
    fn setid_syscalls_know_kind_and_flavour() {
        assert_eq!(
            SetIdSyscall::from_name("setresgid"),
            Some(SetIdSyscall::Setresgid)
        );
        assert_eq!(SetIdSyscall::Setresgid.kind(), SetidKind::Group);
        assert_eq!(SetIdSyscall::Setfsuid.flavour(), SetidFlavour::Fs);
        assert_eq!(SetIdSyscall::from_name("setuid32"), None);
    }

    #[test]
    fn severity_range() {
        assert_eq!(Severity::new(0), None);
        assert_eq!(Severity::new(11), None);
        assert_eq!(Severity::new(10).map(Severity::get), Some(10));
    }

    #[test]
    fn postures_parse() {
        assert_eq!("block".parse(), Ok(DefaultPosture::Block));
        assert!("Block".parse::<DefaultPosture>().is_err());
    }
}
