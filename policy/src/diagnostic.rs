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

impl std::error::Error for Diagnostic {}

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
            UnsupportedConstruct::YamlTag { .. } => "",
        })
    }
}

/// What is wrong. Variants carry the offending value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyError {
    // --- the file
    Unreadable {
        reason: String,
    },
    NotUtf8,
    FileTooLarge {
        bytes: u64,
        limit: u64,
    },
    YamlSyntax {
        problem: String,
    },
    NestingTooDeep {
        limit: usize,
    },
    NoPolicyDocument,

    // --- document shape
    UnsupportedApiVersion {
        found: String,
    },
    UnsupportedKind {
        found: String,
    },
    UnknownKey {
        key: String,
        expected: &'static [&'static str],
        suggestion: Option<&'static str>,
    },
    DuplicateKey {
        key: String,
        first_line: usize,
    },
    MissingKey {
        key: &'static str,
    },
    WrongType {
        expected: ExpectedType,
        found: String,
    },
    NonStringKey {
        found: String,
    },
    Unsupported(UnsupportedConstruct),

    // --- values
    InvalidAction {
        found: String,
    },
    SeverityOutOfRange {
        found: i64,
    },
    InvalidPolicyName {
        name: String,
    },
    TextTooLong {
        what: &'static str,
        length: usize,
        limit: usize,
    },
    InvalidTag {
        tag: String,
    },
    NotAbsolute {
        path: String,
    },
    NotNormalized {
        path: String,
    },
    PathHasTrailingSlash {
        path: String,
    },
    DirectoryWithoutTrailingSlash {
        dir: String,
    },
    PathTooLong {
        path: String,
        limit: usize,
    },
    NulInPath {
        path: String,
    },
    InvalidPattern(GlobError),
    /// A valid pattern the kernel matcher cannot enforce, and why.
    PatternNotEnforceable {
        pattern: String,
        reason: &'static str,
    },
    UnknownProtocol {
        found: String,
    },
    UnknownCapability {
        found: String,
        suggestion: Option<&'static str>,
    },
    UnsupportedSyscall {
        found: String,
    },
    AllowInSyscalls {
        set_at: String,
    },

    // --- structure
    EmptyList {
        key: &'static str,
    },
    EmptySection {
        section: &'static str,
        matchers: &'static [&'static str],
    },
    NoRules,

    // --- node selection
    MissingHostnameLabel,
    UnsupportedNodeLabel {
        label: String,
    },
    InvalidHostname {
        found: String,
    },
    /// Both host-name labels name a host, and not the same one.
    ConflictingHostnames {
        first: String,
        second: String,
    },

    // --- across documents and files
    DuplicatePolicyName {
        name: String,
        first_file: PathBuf,
        first_line: usize,
    },
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyError::Unreadable { reason } => write!(f, "cannot read the file: {reason}"),
            PolicyError::NotUtf8 => f.write_str("the file is not valid UTF-8"),
            PolicyError::FileTooLarge { bytes, limit } => {
                write!(f, "the file is {bytes} bytes; policy files may be at most {limit} bytes")
            }
            PolicyError::YamlSyntax { problem } => write!(f, "YAML syntax error: {problem}"),
            PolicyError::NestingTooDeep { limit } => {
                write!(f, "YAML nested deeper than {limit} levels")
            }
            PolicyError::NoPolicyDocument => {
                f.write_str("the file holds no KubeArmorHostPolicy document")
            }
            PolicyError::UnsupportedApiVersion { found } => write!(
                f,
                "unsupported apiVersion {found:?} (expected \"security.kubearmor.com/v1\")"
            ),
            PolicyError::UnsupportedKind { found } => write!(
                f,
                "unsupported kind {found:?}: edgearmor enforces \"KubeArmorHostPolicy\" documents only"
            ),
            PolicyError::UnknownKey {
                key,
                expected,
                suggestion,
            } => {
                write!(f, "unknown key {key:?}")?;
                match suggestion {
                    Some(s) => write!(f, " (did you mean {s:?}?)"),
                    None => write!(f, " (expected one of: {})", expected.join(", ")),
                }
            }
            PolicyError::DuplicateKey { key, first_line } => {
                write!(f, "key {key:?} given twice (first on line {first_line})")
            }
            PolicyError::MissingKey { key } => write!(f, "missing required key {key:?}"),
            PolicyError::WrongType { expected, found } => {
                write!(f, "expected {expected}, found {found}")
            }
            PolicyError::NonStringKey { found } => {
                write!(f, "keys must be strings, found {found}")
            }
            PolicyError::Unsupported(construct) => write!(f, "{construct}"),
            PolicyError::InvalidAction { found } => write!(
                f,
                "invalid action {found:?} (expected \"Allow\", \"Audit\" or \"Block\")"
            ),
            PolicyError::SeverityOutOfRange { found } => {
                write!(f, "severity {found} is out of range (1 to 10)")
            }
            PolicyError::InvalidPolicyName { name } => write!(
                f,
                "invalid policy name {name:?}: use lower-case letters, digits, '-' and '.', \
                 starting and ending with a letter or digit (a Kubernetes object name)"
            ),
            PolicyError::TextTooLong {
                what,
                length,
                limit,
            } => write!(
                f,
                "{what} is {length} bytes long; alerts carry at most {limit} bytes"
            ),
            PolicyError::InvalidTag { tag } => write!(
                f,
                "invalid tag {tag:?}: tags must be non-empty and contain no ',' (alerts join them with commas)"
            ),
            PolicyError::NotAbsolute { path } => write!(f, "{path:?} is not an absolute path"),
            PolicyError::NotNormalized { path } => write!(
                f,
                "{path:?} is not a normalized path: \"//\", \".\" and \"..\" never match the \
                 resolved paths the kernel sees"
            ),
            PolicyError::PathHasTrailingSlash { path } => write!(
                f,
                "{path:?} ends with '/': name directories in matchDirectories"
            ),
            PolicyError::DirectoryWithoutTrailingSlash { dir } => {
                write!(f, "directory {dir:?} must end with '/'")
            }
            PolicyError::PathTooLong { path, limit } => write!(
                f,
                "path {path:?} is {} bytes long; the kernel's limit is {limit}",
                path.len()
            ),
            PolicyError::NulInPath { path } => write!(f, "path {path:?} contains a NUL character"),
            PolicyError::InvalidPattern(problem) => write!(f, "{problem}"),
            PolicyError::PatternNotEnforceable { pattern, reason } => {
                write!(f, "pattern {pattern:?} cannot be enforced: {reason}")
            }
            PolicyError::UnknownProtocol { found } => write!(
                f,
                "unknown protocol {found:?} (expected tcp, udp, icmp or raw, or the same in upper case)"
            ),
            PolicyError::UnknownCapability { found, suggestion } => {
                write!(f, "unknown capability {found:?}")?;
                match suggestion {
                    Some(s) => write!(f, " (did you mean {s:?}? capabilities are written in lower case without CAP_)"),
                    None => f.write_str(
                        " (expected a Linux capability name in lower case without CAP_, such as net_raw or sys_admin)",
                    ),
                }
            }
            PolicyError::UnsupportedSyscall { found } => write!(
                f,
                "syscall {found:?} is not supported: edgearmor enforces setuid, setgid, setreuid, \
                 setregid, setresuid, setresgid, setfsuid and setfsgid"
            ),
            PolicyError::AllowInSyscalls { set_at } => write!(
                f,
                "action Allow (from {set_at}) is not supported for syscalls: setid rules Audit or Block"
            ),
            PolicyError::EmptyList { key } => {
                write!(f, "{key:?} is empty: list at least one entry, or leave the key out")
            }
            PolicyError::EmptySection { section, matchers } => write!(
                f,
                "the {section} section has no rules (give {})",
                one_of(matchers)
            ),
            PolicyError::NoRules => f.write_str(
                "the policy has no rules: give at least one of process, file, network, capabilities, syscalls",
            ),
            PolicyError::MissingHostnameLabel => f.write_str(
                "matchLabels must contain \"kubearmor.io/hostname\" (\"*\" for every host, or a host name)",
            ),
            PolicyError::UnsupportedNodeLabel { label } => write!(
                f,
                "node label {label:?} is not supported: edgearmor selects hosts by \
                 \"kubearmor.io/hostname\" (or \"kubernetes.io/hostname\") only"
            ),
            PolicyError::InvalidHostname { found } => {
                write!(f, "{found:?} is neither \"*\" nor a host name")
            }
            PolicyError::ConflictingHostnames { first, second } => write!(
                f,
                "host name {second:?} contradicts {first:?}: the policy could select no host"
            ),
            PolicyError::DuplicatePolicyName {
                name,
                first_file,
                first_line,
            } => write!(
                f,
                "policy {name:?} is already defined at {}:{first_line}",
                first_file.display()
            ),
        }
    }
}

impl std::error::Error for PolicyError {}

/// `a`, `a or b`, `a, b or c`.
fn one_of(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [only] => (*only).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}
