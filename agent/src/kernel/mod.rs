//! The kernel side: whether this kernel can enforce ([`readiness`], and the
//! operator-facing [`check`]), the struct offsets the probes need ([`btf`]), loading,
//! attaching the embedded probes ([`loader`]), keeping them pinned across agents
//! ([`pins`]), ring buffers sized for this kernel's pages ([`ring_sizes`]), and a policy set as the kernel's rule tables ([`rule_tables`], written
//! by [`policy_maps`]). Nothing here formats alerts or talks to a
//! broker.

pub mod btf;
pub mod check;
pub mod loader;
pub mod lock;
pub mod multi_call;
pub mod permission;
pub mod pins;
pub mod policy_maps;
pub mod readiness;
pub mod ring_sizes;
pub mod ring_usage;
pub mod rule_tables;
