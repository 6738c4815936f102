//! Everything MQTT that edgearmor's agent and its gateway-side decoder share, except the
//! event format itself (that is `edgearmor-wire`):
//!
//! - [`topic`]: the topic convention, every topic the agent publishes or subscribes to
//!   ([`topic::AgentTopics`]) and the filters the decoder subscribes with;
//! - [`status`]: the retained status message (birth and last will), one type the agent
//!   serializes and the decoder reads;
//! - [`tls`]: the broker connection's rustls client configuration from a CA, a client
//!   certificate and its key (ring provider; feature `tls`, on by default);
//! - [`credentials`]: user name and password file (its first line);
//! - [`backoff`]: reconnect delays, exponential from 250 ms to 30 s with jitter.
//!
//! Without the `tls` feature the crate needs neither rumqttc nor rustls (the decoder's
//! fuzz target builds it that way). Errors name the file or value at fault and chain
//! their cause through [`std::error::Error::source`]; [`ErrorChain`] prints the lot on
//! one line.

pub mod backoff;
#[cfg(feature = "client")]
pub mod client;
pub mod credentials;
pub mod limits;
pub mod refusal;
pub mod status;
pub mod tls;
pub mod topic;
pub mod version;

pub use backoff::Backoff;
pub use credentials::{Credentials, CredentialsError};
pub use status::{
    AgentState, COUNTERS, Counters, Enforcement, StatusError, StatusMessage, counter_help,
};
#[cfg(feature = "tls")]
pub use tls::TlsError;
pub use tls::{ClientCertificate, TlsFiles};
pub use topic::AgentTopics;
pub use version::{MqttVersion, VersionChoice};

/// An error and its sources, `: `-separated: the one line a binary prints for it.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_chain_is_one_line() {
        let err = credentials::read_password_file(std::path::Path::new("/nonexistent/pw"))
            .expect_err("missing");
        let line = ErrorChain(&err).to_string();
        assert!(
            line.starts_with("/nonexistent/pw: cannot read the password: ")
                && line.len() > "/nonexistent/pw: cannot read the password: ".len(),
            "{line}"
        );
    }
}
