//! The event path, in stage order: [`ringbuf`] reads the kernel's ring buffer,
//! [`decode`] turns its records into typed decisions (never trusting a record's
//! length), [`enrich`] makes wire events of them, and [`pipeline`] queues them
//! (bounded, drops counted), throttles ([`throttle`]), numbers and batches them for
//! the sinks. [`wall_time`] converts kernel stamps to wall-clock time across clock
//! steps.

pub mod decode;
pub mod enrich;
pub mod pipeline;
pub mod ringbuf;
pub mod tamper;
pub mod throttle;
pub mod wall_time;
