//! `/etc/edgearmor/agent.toml`: every setting of the agent, with its default. Command-
//! line flags override the file. Unknown keys and bad values are errors naming the key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use edgearmor_bundle::limits::MAX_BUNDLE_BYTES;
use edgearmor_mqtt::status::MAX_LABELS_LEN;
use edgearmor_mqtt::{AgentTopics, ClientCertificate, TlsFiles, VersionChoice};
use edgearmor_policy::node_labels::{
    MAX_NODE_LABELS, check_label_key, check_label_value, is_reserved_label,
};
use edgearmor_policy::{DefaultPostures, NodeLabels};
use serde::Deserialize;

use crate::limits::{CappedReadError, MAX_CONFIG_FILE_BYTES, read_text_capped};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/edgearmor/agent.toml";

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// `ClusterName` in alerts and the second topic level.
    pub cluster: String,
    /// `HostName` in alerts and the third topic level; empty = `uname -n`.
    pub node: String,
    /// This gateway's node labels (`[labels]`, `key = "value"` in Kubernetes label
    /// syntax): what policies' `nodeSelector.matchLabels` and bundle targets select
    /// by, besides the host name. Reported in the birth message.
    pub labels: NodeLabels,
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
    /// Locked mode (tamper protection): the kernel denies every process but this
    /// agent removing the pins, detaching or changing edgearmor's BPF objects,
    /// ptracing or signalling the agent (PID 1 may signal it), and changing the agent
    /// binary, this file, the policy and rules files, `state_dir`, the spool and the
    /// fleet keys. Policy then changes only through signed bundles.
    pub locked: bool,
    pub output: OutputConfig,
    pub mqtt: MqttConfig,
    pub pipeline: PipelineConfig,
    pub offline: OfflineConfig,
    pub throttle: ThrottleConfig,
    pub fleet: FleetConfig,
    pub status: StatusConfig,
}

/// The agent's own health: the retained status message's refresh and the file
/// `edgearmor status` reads.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StatusConfig {
    /// Republish the retained `online` status with fresh counters this often, and
    /// rewrite `file` (at least 1).
    pub interval_sec: u64,
    /// Where the running agent keeps its state for `edgearmor status` (removed when
    /// it stops); "" = nowhere.
    pub file: PathBuf,
}

impl Default for StatusConfig {
    fn default() -> Self {
        Self {
            interval_sec: 60,
            file: PathBuf::from(DEFAULT_STATUS_FILE),
        }
    }
}

/// `[status] file`'s default: runtime state, gone at reboot like the agent itself
/// (the unit's `RuntimeDirectory=edgearmor`).
pub const DEFAULT_STATUS_FILE: &str = "/run/edgearmor/status.json";

/// Signed policy bundles over MQTT (off unless `public_keys` is set).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// Files with the fleet's Ed25519 public keys (`edgearmor keygen`); empty = no
    /// bundles are accepted.
    pub public_keys: Vec<PathBuf>,
    /// Larger bundles are refused unread; at most `MAX_BUNDLE_BYTES`.
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
    /// Enforce where possible; where BPF-LSM cannot run (kernel, privileges) run
    /// monitor-only and say why. A broken load (rule tables, maps, verifier) is fatal.
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
            labels: NodeLabels::new(),
            rules: Vec::new(),
            policies: Vec::new(),
            policy_poll_ms: 1000,
            pin_dir: PathBuf::from("/sys/fs/bpf/edgearmor"),
            posture: DefaultPostures::default(),
            enforcement: Enforcement::Auto,
            locked: false,
            output: OutputConfig::default(),
            mqtt: MqttConfig::default(),
            pipeline: PipelineConfig::default(),
            offline: OfflineConfig::default(),
            throttle: ThrottleConfig::default(),
            fleet: FleetConfig::default(),
            status: StatusConfig::default(),
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
    /// Larger than [`MAX_CONFIG_FILE_BYTES`]: refused unread.
    #[error("config {}: {source}", path.display())]
    TooLarge {
        path: PathBuf,
        source: CappedReadError,
    },
    #[error("config {}: {}", path.display(), message.trim_end())]
    Parse { path: PathBuf, message: String },
    #[error("config: {key} = {value:?}: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: String,
    },
    /// A `[labels]` entry that is not a Kubernetes label, or is one of the host-name
    /// labels (which always hold the host name).
    #[error("config {origin}{}: {reason}", label_key(key))]
    Label {
        origin: String,
        key: String,
        reason: String,
    },
    /// A cluster or node name (or a level of the topic prefix) that cannot be a topic
    /// level; the error names the value and where it came from.
    #[error("config: {0}")]
    TopicLevel(#[from] edgearmor_mqtt::topic::TopicLevelError),
}

/// `labels` for the whole table (`key` empty), else `labels."key"`.
fn label_key(key: &str) -> String {
    if key.is_empty() {
        "labels".into()
    } else {
        format!("labels.{key:?}")
    }
}

impl AgentConfig {
    /// Reads `path`; a missing file at the default path means "all defaults".
    /// Files larger than [`MAX_CONFIG_FILE_BYTES`] are refused unread.
    pub fn load(path: &Path, required: bool) -> Result<Self, ConfigError> {
        match read_text_capped(path, MAX_CONFIG_FILE_BYTES, "MAX_CONFIG_FILE_BYTES") {
            Ok(text) => Self::parse(path, &text),
            Err(CappedReadError::Io(e))
                if !required && e.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(Self::default())
            }
            Err(CappedReadError::Io(source)) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
            Err(source) => Err(ConfigError::TooLarge {
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
        // Checked here too so the error names the file the value came from.
        config.validate_topic_levels(&format!("{}: ", path.display()))?;
        config.validate_labels(&format!("{}: ", path.display()))?;
        config.validate()?;
        Ok(config)
    }

    /// `cluster`, `node` (unless empty: `uname -n` is checked when it is read) and
    /// `mqtt.topic_prefix` as topic levels; `origin` prefixes the key in errors.
    fn validate_topic_levels(&self, origin: &str) -> Result<(), ConfigError> {
        use edgearmor_mqtt::topic::validate_level;
        validate_level(&self.cluster, &format!("{origin}cluster"))?;
        if !self.node.is_empty() {
            validate_level(&self.node, &format!("{origin}node"))?;
        }
        edgearmor_mqtt::topic::validate_prefix(&self.mqtt.topic_prefix).map_err(|reason| {
            ConfigError::Invalid {
                key: "mqtt.topic_prefix",
                value: self.mqtt.topic_prefix.clone(),
                reason: reason.to_owned(),
            }
        })
    }

    /// `[labels]`: Kubernetes label keys and values, at most [`MAX_NODE_LABELS`], not
    /// the host-name labels; `origin` prefixes the key in errors.
    fn validate_labels(&self, origin: &str) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: String| ConfigError::Label {
            origin: origin.to_owned(),
            key: key.to_owned(),
            reason,
        };
        if self.labels.len() > MAX_NODE_LABELS {
            let reason = format!(
                "{} labels, more than {MAX_NODE_LABELS} (MAX_NODE_LABELS)",
                self.labels.len()
            );
            return Err(bad("", reason));
        }
        let total: usize = self.labels.iter().map(|(k, v)| k.len() + v.len()).sum();
        if total > MAX_LABELS_LEN {
            let reason = format!(
                "keys and values are {total} bytes together, more than {MAX_LABELS_LEN} \
                 (MAX_LABELS_LEN: the birth message carries them)"
            );
            return Err(bad("", reason));
        }
        for (key, value) in &self.labels {
            if is_reserved_label(key) {
                let reason = "this label is always the host name: set `node` instead".into();
                return Err(bad(key, reason));
            }
            check_label_key(key).map_err(|e| bad(key, format!("not a label key: {e}")))?;
            check_label_value(value)
                .map_err(|e| bad(key, format!("value {value:?} is not a label value: {e}")))?;
        }
        Ok(())
    }

    /// The node policies and bundles are matched against.
    pub fn node_identity(&self, hostname: &str) -> edgearmor_policy::NodeIdentity {
        edgearmor_policy::NodeIdentity::new(hostname, self.labels.clone())
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
        self.validate_topic_levels("")?;
        self.validate_labels("")?;
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
        if self.status.interval_sec == 0 {
            return invalid("status.interval_sec", "0".into(), "must be at least 1");
        }
        if self.fleet.bundle_max_bytes > MAX_BUNDLE_BYTES {
            return invalid(
                "fleet.bundle_max_bytes",
                self.fleet.bundle_max_bytes.to_string(),
                &format!("must be at most {MAX_BUNDLE_BYTES} (MAX_BUNDLE_BYTES)"),
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
mod tests;
