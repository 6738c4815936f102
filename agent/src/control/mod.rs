//! What is enforced and how it changes: policy files ([`policy_source`]), setid rules
//! from TOML and flags ([`setid_rules`]), the catalog of policy metadata alerts refer
//! to ([`policy_table`]), signed bundles from the fleet ([`fleet`]); [`policy_state`]
//! builds kernel tables from all of it and [`reload`] swaps them in while running;
//! [`tamper`] keeps the refusals made outside the agent until it reports them.

pub mod fleet;
pub mod policy_source;
pub mod policy_state;
pub mod policy_table;
pub mod reload;
pub mod self_protection;
pub mod setid_rules;
pub mod tamper;
