//! edgearmor's policy language: KubeArmorHostPolicy YAML, checked precisely and
//! compiled into the per-class rule tables the agent loads into BPF maps.
//!
//! ```text
//! files/dirs ──► loader ──► yaml_tree (positions) ──► schema ──► HostPolicy ──► compile ──► CompiledPolicySet
//!                  │                                     │
//!                  └── per-file RejectedFile ◄── Diagnostic (file:line: yaml.path: message)
//! ```
//!
//! - [`load_policy_directory`] / [`load_policy_files`]: the agent's entry points. A
//!   file with any problem is rejected whole; the other files still load; valid
//!   policies for another host are reported as skipped.
//! - [`check_policy_paths`]: `edgearmor policy check FILE_OR_DIR...` (the agent prints
//!   each diagnostic on a line and exits non-zero when there is any).
//! - [`compile()`]: resolves metadata (innermost wins), interns it into a policy
//!   table, flattens rules per class, detects allow-list mode, hashes the result.
//! - [`Glob`]: the pattern matcher for `matchPatterns` (semantics in [`glob`]).
//! - [`limits`]: every bound on the work one policy file can cause (size, depth,
//!   nodes with aliases expanded, keys, diagnostics), each refusal a diagnostic.
//!
//! ```
//! use std::path::Path;
//! use edgearmor_policy::{compile, parse_policy_text, DefaultPosture, DefaultPostures};
//!
//! let yaml = r#"
//! apiVersion: security.kubearmor.com/v1
//! kind: KubeArmorHostPolicy
//! metadata:
//!   name: block-apt
//! spec:
//!   nodeSelector:
//!     matchLabels:
//!       kubearmor.io/hostname: "*"
//!   severity: 5
//!   process:
//!     matchPatterns:
//!       - pattern: /usr/bin/apt*
//!   action: Block
//! "#;
//! let policies = parse_policy_text(Path::new("apt.yaml"), yaml).expect("valid policy");
//! let set = compile(&policies, DefaultPostures::uniform(DefaultPosture::Audit));
//! let rule = &set.process.rules[0];
//! assert!(rule.matcher.matches("/usr/bin/apt-get"));
//! assert_eq!(set.metadata(rule.policy_id).map(|m| m.severity.get()), Some(5));
//! println!("policy set {}", set.content_hash);
//! ```

pub mod compile;
pub mod diagnostic;
pub mod fuzzing;
pub mod glob;
pub mod kernel_limits;
pub mod limits;
pub mod loader;
pub mod model;
pub mod node_labels;
pub mod path_rules;
pub mod schema;
pub mod vocabulary;
pub mod yaml_tree;

pub use compile::{
    CompiledPolicySet, CompiledRule, ContentHash, DefaultPostures, PolicyId, PolicyMetadata,
    RuleClass, compile,
};
pub use diagnostic::{Diagnostic, ExpectedType, PolicyError, UnsupportedConstruct};
pub use glob::{Glob, GlobError, GlobToken, KernelGlob, KernelGlobToken};
pub use loader::{
    PolicyLoad, RejectedFile, SkippedPolicy, check_policy_paths, load_policy_directory,
    load_policy_files, parse_policy_text, policy_files_in, read_policy_file,
};
pub use model::{
    FileMatcher, HostPolicy, HostSelector, MetadataOverrides, PathMatcher, PolicyRule,
    PolicySection,
};
pub use node_labels::{NodeIdentity, NodeLabels};
pub use vocabulary::{
    Action, Capability, DefaultPosture, NetworkProtocol, SetIdSyscall, SetidFlavour, SetidKind,
    Severity,
};
pub use yaml_tree::Position;
