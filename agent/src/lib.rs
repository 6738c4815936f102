//! The edgearmor agent as a library: everything `edgearmor` (the binary) does, in
//! modules the integration tests can drive without a kernel.
//!
//! - kernel side: [`readiness`] (can this kernel enforce?), [`btf`] (struct offsets),
//!   [`loader`] (load and attach the embedded probes), [`reader`] (ring buffer),
//!   [`events`] (decode kernel records), all behind the [`host`] seam;
//! - policy: [`rules`] (setid rules from TOML and flags), [`kernel_rules`] (a policy
//!   set as kernel tables) and [`policy_table`] (metadata by id);
//! - event path: [`alerts`] (enrichment into wire events), [`pipeline`] (bounded
//!   queue, batcher, throttle, loss accounting), sinks: [`sink`] (stdout JSON),
//!   [`mqtt`] (broker, status, offline buffer in [`offline`]);
//! - [`config`] (`agent.toml`), [`status`] (birth / last will), [`daemon`] (wiring).

pub mod alerts;
pub mod btf;
pub mod config;
pub mod daemon;
pub mod events;
pub mod fleet;
pub mod host;
pub mod kernel_check;
pub mod kernel_rules;
pub mod loader;
pub mod mqtt;
pub mod offline;
pub mod pipeline;
pub mod policy_source;
pub mod policy_table;
pub mod reader;
pub mod readiness;
pub mod rules;
pub mod sink;
pub mod status;
