//! `/etc/edgearmor/agent.toml`: every setting of the agent, with its default. Command-
//! line flags override the file. Unknown keys and bad values are errors naming the key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use edgearmor_mqtt::{AgentTopics, ClientCertificate, TlsFiles, VersionChoice};
use edgearmor_policy::DefaultPostures;
use serde::Deserialize;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/edgearmor/agent.toml";

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// `ClusterName` in alerts and the second topic level.
    pub cluster: String,
    /// `HostName` in alerts and the third topic level; empty = `uname -n`.
    pub node: String,
    /// Rule files (TOML, `[[setid]]` tables).
    pub rules: Vec<PathBuf>,
    /// KubeArmorHostPolicy files or directories of them.
    pub policies: Vec<PathBuf>,
    /// How often to look for changed policy files, in milliseconds (0 = only on
    /// SIGHUP).
    pub policy_poll_ms: u64,
    /// What a class in allow-list mode does with what no rule allows (`[posture]`:
    /// `process`, `file`, `network`, `capabilities`, each `audit` or `block`), in the
    /// policy compiler's own type.
    pub posture: DefaultPostures,
    /// Where programs, links and maps are pinned (on bpffs) so enforcement outlives
    /// the agent and the next agent adopts it; "" = nothing pinned.
    pub pin_dir: PathBuf,
    /// What to do on a kernel that cannot run BPF-LSM: keep watching (`auto`) or refuse
    /// to start (`required`).
    pub enforcement: Enforcement,
    pub output: OutputConfig,
    pub mqtt: MqttConfig,
    pub pipeline: PipelineConfig,
    pub offline: OfflineConfig,
    pub throttle: ThrottleConfig,
    pub fleet: FleetConfig,
}

/// Signed policy bundles over MQTT (off unless `public_keys` is set).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// Files with the fleet's Ed25519 public keys (`edgearmor keygen`); empty = no
    /// bundles are accepted.
    pub public_keys: Vec<PathBuf>,
    /// Larger bundles are refused unread.
    pub bundle_max_bytes: usize,
    /// Applied version (anti-rollback) and the unpacked bundle policies.
    pub state_dir: PathBuf,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            public_keys: Vec::new(),
            bundle_max_bytes: 256 * 1024,
            state_dir: PathBuf::from("/var/lib/edgearmor/fleet"),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Enforcement {
    /// Enforce where possible; elsewhere run monitor-only and say why.
    #[default]
    Auto,
    /// Refuse to start where the kernel cannot enforce.
    Required,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// KubeArmor JSON lines on stdout.
    pub stdout: bool,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// `host:port`; empty disables MQTT.
    pub broker: String,
    /// Empty = `edgearmor-<cluster>-<node>` (stable, so the broker keeps the session).
    pub client_id: String,
    pub topic_prefix: String,
    /// PEM CA certificate; setting it enables TLS.
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub username: Option<String>,
    /// File holding the password (first line), so it stays out of the config and `ps`.
    pub password_file: Option<PathBuf>,
    pub keep_alive_secs: u64,
    /// On stop, how long to keep trying to deliver buffered batches.
    pub shutdown_grace_secs: u64,
    /// `"3.1.1"`, `"5"` or `"auto"` (5, falling back to 3.1.1 when the broker refuses it).
    pub mqtt_version: VersionChoice,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Flush a batch at this many events (1..=32).
    pub batch_max_events: usize,
    /// Flush a non-empty batch at least this often.
    pub flush_interval_ms: u64,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OfflineConfig {
    /// Memory for batches the broker has not acknowledged; the oldest go first.
    pub buffer_bytes: usize,
    /// Persist unacknowledged batches here (empty = memory only).
    pub spool_dir: Option<PathBuf>,
    /// Size cap of the spool directory.
    pub spool_bytes: u64,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleConfig {
    /// More alerts than this in one second start a throttle interval (0 = off).
    pub max_alerts_per_sec: u32,
    /// Length of the interval in which alerts are dropped.
    pub throttle_sec: u32,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            cluster: "default".into(),
            node: String::new(),
            rules: Vec::new(),
            policies: Vec::new(),
            policy_poll_ms: 1000,
            pin_dir: PathBuf::from("/sys/fs/bpf/edgearmor"),
            posture: DefaultPostures::default(),
            enforcement: Enforcement::Auto,
            output: OutputConfig::default(),
            mqtt: MqttConfig::default(),
            pipeline: PipelineConfig::default(),
            offline: OfflineConfig::default(),
            throttle: ThrottleConfig::default(),
            fleet: FleetConfig::default(),
        }
    }
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self { stdout: true }
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            broker: String::new(),
            client_id: String::new(),
            topic_prefix: "edgearmor".into(),
            ca_file: None,
            client_cert: None,
            client_key: None,
            username: None,
            password_file: None,
            keep_alive_secs: 30,
            shutdown_grace_secs: 5,
            mqtt_version: VersionChoice::Auto,
        }
    }
}

impl MqttConfig {
    /// `broker` split into host and port.
    pub fn broker_address(&self) -> Result<(String, u16), ConfigError> {
        let bad = || ConfigError::Invalid {
            key: "mqtt.broker",
            value: self.broker.clone(),
            reason: "expected host:port".into(),
        };
        let (host, port) = self.broker.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        Ok((
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
        ))
    }

    /// `client_id`, or the stable default for this agent.
    pub fn client_id_for(&self, cluster: &str, node: &str) -> String {
        if self.client_id.is_empty() {
            format!("edgearmor-{cluster}-{node}")
        } else {
            self.client_id.clone()
        }
    }

    /// The topics of this agent under `topic_prefix`.
    pub fn topics(&self, cluster: &str, node: &str) -> AgentTopics {
        AgentTopics::new(&self.topic_prefix, cluster, node)
    }

    /// The TLS files, when `ca_file` enables TLS.
    pub fn tls_files(&self) -> Option<TlsFiles> {
        let ca = self.ca_file.clone()?;
        let client = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => Some(ClientCertificate {
                cert: cert.clone(),
                key: key.clone(),
            }),
            // `validate` refuses one without the other.
            _ => None,
        };
        Some(TlsFiles { ca, client })
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            batch_max_events: edgearmor_wire::MAX_BATCH_EVENTS,
            flush_interval_ms: 200,
        }
    }
}

impl Default for OfflineConfig {
    fn default() -> Self {
        Self {
            buffer_bytes: 1 << 20,
            spool_dir: None,
            spool_bytes: 16 << 20,
        }
    }
}

impl Default for ThrottleConfig {
    /// KubeArmor's defaults.
    fn default() -> Self {
        Self {
            max_alerts_per_sec: 10,
            throttle_sec: 30,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {}: {}", path.display(), message.trim_end())]
    Parse { path: PathBuf, message: String },
    #[error("config: {key} = {value:?}: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: String,
    },
}

impl AgentConfig {
    /// Reads `path`; a missing file at the default path means "all defaults".
    pub fn load(path: &Path, required: bool) -> Result<Self, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(path, &text),
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, value: String, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                value,
                reason: reason.to_owned(),
            })
        };
        if self.cluster.is_empty() || self.cluster.contains(['/', '+', '#']) {
            return invalid(
                "cluster",
                self.cluster.clone(),
                "must be non-empty without '/', '+' or '#'",
            );
        }
        if self.node.contains(['/', '+', '#']) {
            return invalid(
                "node",
                self.node.clone(),
                "must not contain '/', '+' or '#'",
            );
        }
        if !(1..=edgearmor_wire::MAX_BATCH_EVENTS).contains(&self.pipeline.batch_max_events) {
            return invalid(
                "pipeline.batch_max_events",
                self.pipeline.batch_max_events.to_string(),
                "must be between 1 and 32",
            );
        }
        if self.pipeline.flush_interval_ms == 0 {
            return invalid(
                "pipeline.flush_interval_ms",
                "0".into(),
                "must be at least 1",
            );
        }
        if self.offline.buffer_bytes < edgearmor_wire::Message::MAX_ENCODED_LEN {
            return invalid(
                "offline.buffer_bytes",
                self.offline.buffer_bytes.to_string(),
                &format!(
                    "must hold at least one full batch ({} bytes)",
                    edgearmor_wire::Message::MAX_ENCODED_LEN
                ),
            );
        }
        if !self.mqtt.broker.is_empty() {
            self.broker_address()?;
        }
        if self.mqtt.client_cert.is_some() != self.mqtt.client_key.is_some() {
            return invalid(
                "mqtt.client_cert",
                format!("{:?}", self.mqtt.client_cert),
                "client_cert and client_key go together",
            );
        }
        if self.mqtt.client_cert.is_some() && self.mqtt.ca_file.is_none() {
            return invalid(
                "mqtt.ca_file",
                String::new(),
                "a client certificate needs TLS: set ca_file",
            );
        }
        if self.mqtt.password_file.is_some() && self.mqtt.username.is_none() {
            return invalid(
                "mqtt.username",
                String::new(),
                "password_file needs a username",
            );
        }
        Ok(())
    }

    /// `mqtt.broker` split into host and port.
    pub fn broker_address(&self) -> Result<(String, u16), ConfigError> {
        self.mqtt.broker_address()
    }

    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.pipeline.flush_interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_means_documented_defaults() {
        let c = AgentConfig::parse(Path::new("a.toml"), "").expect("valid");
        assert_eq!(c, AgentConfig::default());
        assert_eq!(c.throttle.max_alerts_per_sec, 10);
        assert_eq!(c.offline.buffer_bytes, 1 << 20);
        assert!(c.output.stdout);
    }

    #[test]
    fn full_file_parses() {
        let c = AgentConfig::parse(
            Path::new("a.toml"),
            r#"
            cluster = "plant-7"
            node = "gw-12"
            enforcement = "required"
            rules = ["/etc/edgearmor/rules.toml"]
            [output]
            stdout = false
            [mqtt]
            broker = "broker.local:8883"
            ca_file = "/etc/edgearmor/ca.pem"
            username = "gw-12"
            password_file = "/etc/edgearmor/mqtt.pass"
            mqtt_version = "3.1.1"
            [pipeline]
            batch_max_events = 16
            flush_interval_ms = 500
            [offline]
            buffer_bytes = 2097152
            spool_dir = "/var/lib/edgearmor/spool"
            spool_bytes = 8388608
            [throttle]
            max_alerts_per_sec = 0
            "#,
        )
        .expect("valid");
        assert_eq!(
            c.broker_address().expect("valid"),
            ("broker.local".into(), 8883)
        );
        assert_eq!(
            c.offline.spool_dir.as_deref(),
            Some(Path::new("/var/lib/edgearmor/spool"))
        );
        assert_eq!(
            c.mqtt.mqtt_version,
            VersionChoice::Fixed(edgearmor_mqtt::MqttVersion::V311)
        );
        assert_eq!(MqttConfig::default().mqtt_version, VersionChoice::Auto);
    }

    #[test]
    fn mqtt_settings_resolve_client_id_topics_and_tls_files() {
        let mut m = MqttConfig::default();
        assert_eq!(
            m.client_id_for("plant-7", "gw-12"),
            "edgearmor-plant-7-gw-12"
        );
        assert_eq!(
            m.topics("plant-7", "gw-12").events,
            "edgearmor/plant-7/gw-12/events"
        );
        assert_eq!(m.tls_files(), None);
        m.client_id = "fixed".into();
        m.topic_prefix = "site/7".into();
        m.ca_file = Some("/ca.pem".into());
        assert_eq!(m.client_id_for("c", "n"), "fixed");
        assert_eq!(m.topics("c", "n").status, "site/7/c/n/status");
        assert_eq!(
            m.tls_files(),
            Some(TlsFiles {
                ca: "/ca.pem".into(),
                client: None
            })
        );
        m.client_cert = Some("/c.pem".into());
        m.client_key = Some("/c.key".into());
        assert_eq!(
            m.tls_files().and_then(|t| t.client),
            Some(ClientCertificate {
                cert: "/c.pem".into(),
                key: "/c.key".into()
            })
        );
    }

    #[test]
    fn mistakes_name_the_key() {
        let cases = [
            ("colour = 1", "unknown field `colour`"),
            ("enforcement = \"maybe\"", "unknown variant `maybe`"),
            (
                "[mqtt]\nbroker = \"nohost\"",
                "mqtt.broker = \"nohost\": expected host:port",
            ),
            ("[mqtt]\nbroker = \"h:99999\"", "expected host:port"),
            (
                "[pipeline]\nbatch_max_events = 64",
                "pipeline.batch_max_events",
            ),
            ("[offline]\nbuffer_bytes = 10", "offline.buffer_bytes"),
            ("[throttle]\nmax_alerts_per_sec = -1", "max_alerts_per_sec"),
            ("cluster = \"a/b\"", "cluster"),
            ("[mqtt]\nclient_cert = \"/c\"", "client_key go together"),
            ("[mqtt]\npassword_file = \"/p\"", "needs a username"),
            (
                "[mqtt]\nmqtt_version = \"3.1\"",
                "\"3.1\" is not an MQTT version: expected \"3.1.1\", \"5\" or \"auto\"",
            ),
        ];
        for (text, want) in cases {
            let err = AgentConfig::parse(Path::new("a.toml"), text)
                .expect_err(text)
                .to_string();
            assert!(err.contains(want), "{text:?}: {err:?} lacks {want:?}");
        }
    }

    #[test]
    fn posture_table_goes_straight_to_the_compiler() {
        use edgearmor_policy::DefaultPosture;
        let c = AgentConfig::parse(
            Path::new("a.toml"),
            "[posture]\nfile = \"block\"\ncapabilities = \"audit\"\n",
        )
        .expect("valid");
        assert_eq!(
            c.posture,
            DefaultPostures {
                process: DefaultPosture::Audit,
                file: DefaultPosture::Block,
                network: DefaultPosture::Audit,
                capabilities: DefaultPosture::Audit,
            }
        );
        assert_eq!(c.posture, {
            let mut p = DefaultPostures::uniform(DefaultPosture::Audit);
            p.file = DefaultPosture::Block;
            p
        });
        let cases = [
            (
                "[posture]\ncolour = \"audit\"",
                "unknown field `colour`, expected one of `process`, `file`, `network`, `capabilities`",
            ),
            (
                "[posture]\nfile = \"Block\"",
                "unknown variant `Block`, expected `audit` or `block`",
            ),
            ("[posture]\nfile = 1", "wanted string or table"),
            ("posture = 1", "expected struct PostureConfig"),
        ];
        for (text, want) in cases {
            let err = AgentConfig::parse(Path::new("a.toml"), text)
                .expect_err(text)
                .to_string();
            assert!(err.contains(want), "{text:?}: {err:?} lacks {want:?}");
        }
    }

    #[test]
    fn missing_default_file_is_defaults_but_missing_explicit_file_is_an_error() {
        let nowhere = Path::new("/nonexistent/edgearmor.toml");
        assert_eq!(
            AgentConfig::load(nowhere, false).expect("defaults"),
            AgentConfig::default()
        );
        assert!(AgentConfig::load(nowhere, true).is_err());
    }
}
