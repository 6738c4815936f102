//! The kernel side: whether this kernel can enforce ([`readiness`], and the
//! operator-facing [`check`]), the struct offsets the probes need ([`btf`]), loading,
//! attaching and pinning the embedded probes ([`loader`]), and a policy set as the
//! kernel's rule tables ([`rule_tables`]). Nothing here formats alerts or talks to a
//! broker.

pub mod btf;
pub mod check;
pub mod loader;
pub mod readiness;
pub mod rule_tables;
