//! `edgearmor-decode`: edgearmor's postcard event batches from MQTT back to the exact
//! JSON lines `karmor logs --json` prints, for tooling that already reads KubeArmor.
//!
//! The payload path ([`pipeline::Decoder`]) is independent of transport: the live MQTT
//! client ([`mqtt`]), capture files ([`capture`]), the fuzz target and the benchmark
//! all feed it the same way. Around it:
//!
//! - [`sequence`]: per agent boot sequence tracking (duplicates dropped, gaps reported);
//! - [`policy_store`]: policy tables assembled from their retained parts;
//! - [`status`]: agent birth / last-will status messages as `SystemEvent` lines;
//! - [`sink`]: where the lines go (stdout, rotated file, MQTT, memory); [`soc`]: the
//!   syslog (RFC 5424) and CEF formats, [`forward`]: syslog over TCP/TLS to a SIEM;
//! - [`fleet`]: every node's health (status, counters, gaps) for [`metrics`], the
//!   Prometheus text that [`http`] serves;
//! - [`topic`]: the MQTT topic convention (from `edgearmor-mqtt`, shared with the
//!   agent); [`cli`]: the command line;
//! - [`counters`]: everything counted, printed at exit (and served as metrics);
//! - [`fuzzing`]: the fuzz target's entry point, shared with the seed regression test.
//!
//! The event → alert mapping itself is not here: it is
//! [`edgearmor_alert::expand`], shared with the agent.

pub mod capture;
pub mod cli;
pub mod counters;
pub mod fleet;
#[cfg(feature = "mqtt")]
pub mod forward;
pub mod fuzzing;
#[cfg(feature = "mqtt")]
pub mod http;
pub mod metrics;
#[cfg(feature = "mqtt")]
pub mod mqtt;
pub mod pipeline;
pub mod policy_store;
pub mod sequence;
pub mod sink;
pub mod soc;
pub mod status;
/// The MQTT topic convention (shared with the agent).
pub use edgearmor_mqtt::topic;
