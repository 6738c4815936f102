//! Where batches go: [`stdout`] (KubeArmor JSON lines), [`mqtt`] (the broker, with
//! the [`offline`] buffer and spool for outages); [`outputs`] builds the set a
//! configuration asks for.

pub mod mqtt;
pub mod offline;
pub mod outputs;
pub mod stdout;
