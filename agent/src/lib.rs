//! The edgearmor agent as a library: everything `edgearmor` (the binary) does, in
//! modules the integration tests can drive without a kernel. The tree follows the
//! data path (docs/architecture.md has the picture):
//!
//! - [`kernel`]: can this kernel enforce, its struct offsets, loading and pinning the
//!   embedded probes, the rule tables they read; all kernel access goes through the
//!   [`host`] seam;
//! - [`events`]: the event path in stage order: ring-buffer read, decode, enrich,
//!   bounded queue, batch and throttle (postcard encoding is `edgearmor-wire`'s);
//! - [`sinks`]: where batches go: stdout JSON lines, MQTT with its offline buffer and
//!   spool;
//! - [`control`]: what is enforced: policy sources, setid rules, the policy catalog,
//!   reloads and signed fleet bundles;
//! - [`commands`]: one module per `edgearmor` subcommand; [`commands::run`] is the
//!   running agent; [`cli`] parses the command line, [`config`] reads `agent.toml`,
//!   [`status`] is the retained birth / last-will message; [`limits`] bounds the
//!   agent's own input files.

pub mod cli;
pub mod commands;
pub mod config;
pub mod control;
pub mod events;
pub mod fuzzing;
pub mod host;
pub mod kernel;
pub mod limits;
pub mod sinks;
pub mod status;
