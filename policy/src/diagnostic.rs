//! Problems found in policy files, located precisely: [`Diagnostic`] is one problem
//! at a file, line, column and YAML path; [`PolicyError`] says what is wrong and
//! carries the offending value.
//!
//! A diagnostic prints as `file:line: yaml.path: message`, the form
//! `edgearmor policy check` shows, e.g.
//! `policies/ssh.yaml:14: spec.process.matchPaths[1].path: "sbin/sshd" is not an absolute path`.

use std::fmt;
use std::path::PathBuf;

use crate::glob::GlobError;
use crate::yaml_tree::Position;

/// One problem in one policy file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based; 0 when the problem concerns the whole file (it cannot be read).
    pub line: usize,
    /// 1-based; 0 when `line` is 0.
    pub column: usize,
    /// Where in the document, e.g. `spec.process.matchPaths[1].path`; empty when
    /// the problem is not inside a document (unreadable file, YAML syntax).
    pub yaml_path: String,
    pub error: PolicyError,
}

impl Diagnostic {
    pub(crate) fn at(
        file: impl Into<PathBuf>,
        position: Position,
        yaml_path: impl Into<String>,
        error: PolicyError,
    ) -> Self {
        Diagnostic {
            file: file.into(),
            line: position.line,
            column: position.column,
            yaml_path: yaml_path.into(),
            error,
        }
    }

    pub(crate) fn whole_file(file: impl Into<PathBuf>, error: PolicyError) -> Self {
        Diagnostic {
            file: file.into(),
            line: 0,
            column: 0,
            yaml_path: String::new(),
            error,
        }
    }

    /// The message alone, without location.
    pub fn message(&self) -> String {
        self.error.to_string()
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if !self.yaml_path.is_empty() {
            write!(f, ": {}", self.yaml_path)?;
        }
        write!(f, ": {}", self.error)
    }
}

impl std::error::Error for Diagnostic {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// The type a key's value should have had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectedType {
    String,
    Integer,
    Boolean,
    List,
    Mapping,
}

impl fmt::Display for ExpectedType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExpectedType::String => "a string",
            ExpectedType::Integer => "an integer",
            ExpectedType::Boolean => "true or false",
            ExpectedType::List => "a list",
            ExpectedType::Mapping => "a mapping",
        })
    }
}

/// A construct of KubeArmor's policy language (or of YAML) that edgearmor refuses
/// instead of silently ignoring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnsupportedConstruct {
    /// `ownerOnly: true` on process or file rules.
    OwnerOnly,
    /// `spec.apparmor`: a raw AppArmor profile.
    AppArmorProfile,
    /// `syscalls.matchPaths`: syscalls selected by the path they act on.
    SyscallMatchPaths,
    /// `fromSource: [{dir: ...}]` in `syscalls`.
    SyscallSourceDirectory,
    /// An explicit YAML tag (`!!str`, `!custom`), as the parser resolved it.
    YamlTag { tag: String },
    /// `nodeSelector.matchExpressions`: not in KubeArmor's host policy CRD.
    NodeMatchExpressions,
    /// `spec.device` (`matchDevice`: USB device control).
    Device,
    /// `network.matchDNSQueries`.
    DnsQueries,
    /// `execname` on a process path.
    ExecName,
    /// `allowedArgs` on a process path.
    AllowedArgs,
    /// `pts` on a process or file rule.
    Pts,
}

impl fmt::Display for UnsupportedConstruct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let UnsupportedConstruct::YamlTag { tag } = self {
            return write!(
                f,
                "explicit YAML tags are not supported, found {tag:?}: remove the tag (quote the \
                 value if it must be a string)"
            );
        }
        f.write_str(match self {
            UnsupportedConstruct::OwnerOnly => {
                "ownerOnly: true is not supported: edgearmor cannot yet restrict a path to its \
                 owner; remove it (or set it to false)"
            }
            UnsupportedConstruct::AppArmorProfile => {
                "apparmor profiles are not supported: edgearmor enforces with BPF-LSM, not AppArmor"
            }
            UnsupportedConstruct::SyscallMatchPaths => {
                "syscalls.matchPaths is not supported: use syscalls.matchSyscalls (with fromSource \
                 to name the calling executable)"
            }
            UnsupportedConstruct::SyscallSourceDirectory => {
                "fromSource \"dir\" is not supported: name each executable with \"path\""
            }
            UnsupportedConstruct::NodeMatchExpressions => {
                "nodeSelector.matchExpressions is not part of KubeArmor's KubeArmorHostPolicy \
                 (its nodeSelector has matchLabels only): select nodes with matchLabels"
            }
            UnsupportedConstruct::Device => {
                "device (matchDevice) is not supported yet: edgearmor does not decide device \
                 access; remove the section"
            }
            UnsupportedConstruct::DnsQueries => {
                "matchDNSQueries is not supported yet: edgearmor does not see DNS lookups; \
                 remove it"
            }
            UnsupportedConstruct::ExecName => {
                "execname is not supported yet: edgearmor does not match executables by name alone \
                 (give the path); remove it"
            }
            UnsupportedConstruct::AllowedArgs => {
                "allowedArgs is not supported yet: edgearmor does not match process arguments; \
                 remove it"
            }
            UnsupportedConstruct::Pts => {
                "pts is not supported yet: edgearmor does not decide by the terminal a process \
                 runs on; remove it"
            }
            UnsupportedConstruct::YamlTag { .. } => "",
        })
    }
}

/// What is wrong. Variants carry the offending value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    // --- the file
    #[error("cannot read the file: {reason}")]
    Unreadable { reason: String },
    #[error("the file is not valid UTF-8")]
    NotUtf8,
    /// `bytes`: the size on disk, or `None` when only reading found it too large
    /// (a file that is not a regular file, or grew while being read).
    #[error(
        "the file is {}; policy files may be at most {limit} bytes (MAX_POLICY_FILE_BYTES)",
        match bytes { Some(b) => format!("{b} bytes"), None => format!("larger than {limit} bytes") }
    )]
    FileTooLarge { bytes: Option<u64>, limit: u64 },
    #[error("YAML syntax error: {problem}")]
    YamlSyntax { problem: String },
    #[error(
        "YAML nested deeper than {limit} levels (MAX_NESTING_DEPTH; an alias nests its \
         anchor's whole depth)"
    )]
    NestingTooDeep { limit: usize },
    #[error(
        "the file expands to more than {limit} YAML nodes (MAX_YAML_NODES; each alias counts \
         as a copy of its anchor)"
    )]
    TooManyNodes { limit: usize },
    #[error(
        "the file expands to more than {limit} bytes of YAML text (MAX_YAML_SCALAR_BYTES; \
         each alias counts as a copy of its anchor)"
    )]
    TooMuchText { limit: usize },
    #[error(
        "the YAML parser had to read more than {limit} bytes past this point without \
         completing a node (MAX_YAML_LOOKAHEAD_BYTES): a flow collection ([...] or {{...}}), \
         scalar or comment that long is refused; write long lists in block style"
    )]
    LookaheadTooLong { limit: usize },
    #[error("a mapping with more than {limit} keys (MAX_MAPPING_KEYS)")]
    TooManyKeys { limit: usize },
    #[error(
        "{more} more problem(s) in this file not shown: at most {limit} are reported per file \
         (MAX_DIAGNOSTICS_PER_FILE)"
    )]
    MoreProblems { more: usize, limit: usize },
    #[error("the file holds no KubeArmorHostPolicy document")]
    NoPolicyDocument,

    // --- document shape
    #[error("unsupported apiVersion {found:?} (expected \"security.kubearmor.com/v1\")")]
    UnsupportedApiVersion { found: String },
    #[error(
        "unsupported kind {found:?}: edgearmor enforces \"KubeArmorHostPolicy\" documents only"
    )]
    UnsupportedKind { found: String },
    #[error("unknown key {key:?} ({})", key_hint(expected, suggestion))]
    UnknownKey {
        key: String,
        expected: &'static [&'static str],
        suggestion: Option<&'static str>,
    },
    #[error("key {key:?} given twice (first on line {first_line})")]
    DuplicateKey { key: String, first_line: usize },
    #[error("missing required key {key:?}")]
    MissingKey { key: &'static str },
    #[error("expected {expected}, found {found}")]
    WrongType {
        expected: ExpectedType,
        found: String,
    },
    #[error("keys must be strings, found {found}")]
    NonStringKey { found: String },
    #[error("{0}")]
    Unsupported(UnsupportedConstruct),

    // --- values
    #[error("invalid action {found:?} (expected \"Allow\", \"Audit\" or \"Block\")")]
    InvalidAction { found: String },
    #[error("severity {found} is out of range (1 to 10)")]
    SeverityOutOfRange { found: i64 },
    #[error(
        "invalid policy name {name:?}: use lower-case letters, digits, '-' and '.', \
         starting and ending with a letter or digit (a Kubernetes object name)"
    )]
    InvalidPolicyName { name: String },
    #[error("{what} is {length} bytes long; alerts carry at most {limit} bytes")]
    TextTooLong {
        what: &'static str,
        length: usize,
        limit: usize,
    },
    #[error(
        "invalid tag {tag:?}: tags must be non-empty and contain no ',' (alerts join them with commas)"
    )]
    InvalidTag { tag: String },
    #[error("{path:?} is not an absolute path")]
    NotAbsolute { path: String },
    #[error(
        "{path:?} is not a normalized path: \"//\", \".\" and \"..\" never match the \
         resolved paths the kernel sees"
    )]
    NotNormalized { path: String },
    #[error("{path:?} ends with '/': name directories in matchDirectories")]
    PathHasTrailingSlash { path: String },
    #[error("directory {dir:?} must end with '/'")]
    DirectoryWithoutTrailingSlash { dir: String },
    #[error("path {path:?} is {} bytes long; the kernel's limit is {limit}", path.len())]
    PathTooLong { path: String, limit: usize },
    #[error("path {path:?} contains a NUL character")]
    NulInPath { path: String },
    #[error(transparent)]
    InvalidPattern(GlobError),
    /// A `pattern` anchored like a regular expression: KubeArmor's enforcers apply
    /// patterns as path globs, so this one could never match a path.
    #[error(
        "pattern {pattern:?} is a regular expression (it starts with '^'), not a path glob: \
         patterns match the whole path with '*', '?' and [...]; write it without the '^' and \
         '$' anchors"
    )]
    RegexPattern { pattern: String },
    /// The policy set needs more of a kernel table or matcher than it has: the kernel
    /// could not enforce the set whole.
    #[error(
        "policy {policy}: {rule}: more {what} than the kernel's {limit} = {value}; the kernel could not enforce the policy set whole"
    )]
    KernelLimit {
        limit: &'static str,
        value: usize,
        policy: String,
        rule: String,
        what: String,
    },
    /// A valid pattern the kernel matcher cannot enforce, and why.
    #[error("pattern {pattern:?} cannot be enforced: {reason}")]
    PatternNotEnforceable {
        pattern: String,
        reason: &'static str,
    },
    #[error(
        "unknown protocol {found:?} (expected tcp, udp, icmp, raw or sctp, or the same in upper case)"
    )]
    UnknownProtocol { found: String },
    #[error(
        "protocol {found:?} is not supported yet: edgearmor's network rules name tcp, udp, \
         icmp (ICMP and ICMPv6), raw (every SOCK_RAW and AF_PACKET socket) and sctp"
    )]
    UnsupportedProtocol { found: String },
    #[error("unknown capability {found:?} ({})", capability_hint(suggestion))]
    UnknownCapability {
        found: String,
        suggestion: Option<&'static str>,
    },
    #[error(
        "syscall {found:?} is not supported: edgearmor enforces setuid, setgid, setreuid, \
         setregid, setresuid, setresgid, setfsuid and setfsgid"
    )]
    UnsupportedSyscall { found: String },
    #[error(
        "action Allow (from {set_at}) is not supported for syscalls: setid rules Audit or Block"
    )]
    AllowInSyscalls { set_at: String },

    // --- structure
    #[error("{key:?} is empty: list at least one entry, or leave the key out")]
    EmptyList { key: &'static str },
    #[error("the {section} section has no rules (give {})", one_of(matchers))]
    EmptySection {
        section: &'static str,
        matchers: &'static [&'static str],
    },
    #[error(
        "the policy has no rules: give at least one of process, file, network, capabilities, syscalls"
    )]
    NoRules,

    // --- node selection
    #[error(
        "matchLabels is empty: give \"kubearmor.io/hostname\" (\"*\" for every host, or a \
         host name) or the labels of the nodes to select"
    )]
    MissingHostnameLabel,
    /// A `matchLabels` key or value that is not Kubernetes label syntax.
    #[error("node label {part} {found:?}: {reason}")]
    InvalidNodeLabel {
        part: &'static str,
        found: String,
        reason: String,
    },
    #[error("{found:?} is neither \"*\" nor a host name")]
    InvalidHostname { found: String },
    #[error(
        "{found:?} is not a host-name pattern (letters, digits, '-', '.', '_' and '*' for \
         any run of characters)"
    )]
    InvalidHostnamePattern { found: String },
    /// Both host-name labels name a host, and not the same one.
    #[error("host name {second:?} contradicts {first:?}: the policy could select no host")]
    ConflictingHostnames { first: String, second: String },

    // --- accepted and ignored (warnings)
    #[error("metadata.namespace {namespace:?} is ignored: a KubeArmorHostPolicy is cluster-scoped")]
    IgnoredNamespace { namespace: String },

    // --- across documents and files
    #[error("policy {name:?} is already defined at {}:{first_line}", first_file.display())]
    DuplicatePolicyName {
        name: String,
        first_file: PathBuf,
        first_line: usize,
    },
}

/// What follows an unknown key: the likely intended one, or every accepted one.
fn key_hint(expected: &[&str], suggestion: &Option<&str>) -> String {
    match suggestion {
        Some(s) => format!("did you mean {s:?}?"),
        None => format!("expected one of: {}", expected.join(", ")),
    }
}

/// What follows an unknown capability: the likely intended one, or the spelling rule.
fn capability_hint(suggestion: &Option<&str>) -> String {
    match suggestion {
        Some(s) => {
            format!("did you mean {s:?}? capabilities are written in lower case without CAP_")
        }
        None => "expected a Linux capability name in lower case without CAP_, such as net_raw \
                 or sys_admin"
            .to_string(),
    }
}

/// `a`, `a or b`, `a, b or c`.
fn one_of(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [only] => (*only).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}
