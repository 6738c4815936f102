//! Command line: what `edgearmor-decode` accepts, checked as a whole before anything
//! starts, with errors that name the option and the offending value.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

use edgearmor_alert::expand::ExpandOptions;

pub use edgearmor_mqtt::{ClientCertificate, MqttVersion, TlsFiles, VersionChoice};

use crate::pipeline::DecoderConfig;
use crate::sequence::TrackerConfig;
use crate::soc::{self, Format};
use crate::topic;

pub const USAGE: &str = "\
edgearmor-decode: edgearmor's postcard events from MQTT back to KubeArmor JSON lines

USAGE:
    edgearmor-decode [OPTIONS]                 subscribe to a broker and decode until SIGINT/SIGTERM
    edgearmor-decode --input FILE [OPTIONS]    decode a capture file (- for stdin) and exit
    edgearmor-decode help | --help | -h        this text

BROKER:
    --broker HOST:PORT        broker address [default: 127.0.0.1:1883]
    --client-id ID            MQTT client id; with one, the broker keeps the session (and queues
                              events) for an hour while the decoder is away [default: random,
                              no session kept]
    --ca FILE                 enable TLS, verifying the broker against this CA (PEM)
    --client-cert FILE        client certificate chain (PEM) for mutual TLS; needs --client-key
    --client-key FILE         client private key (PEM: PKCS#8, PKCS#1 or SEC1)
    --username NAME           MQTT user name
    --password-file FILE      MQTT password: the file's first line; needs --username
    --topic-prefix PREFIX     first level(s) of every topic, as the agents' topic_prefix
                              [default: edgearmor]
    --topic FILTER            event topic filter [default: PREFIX/+/+/events]
    --share-group GROUP       subscribe to the events as $share/GROUP/FILTER: the broker splits
                              them between the decoders of the group (policy tables and status
                              are always subscribed to in full); needs MQTT 5
    --mqtt-version V          3.1.1, 5 or auto: MQTT 5, falling back to 3.1.1 when the broker
                              refuses 5 [default: auto]

DECODING:
    --gap-reports on|off      report missing sequence numbers as SystemEvent lines
                              [default: on; off with --share-group, where every member sees
                              only its share of each agent's events]
    --reorder-window-ms MS    how long a gap waits for late events before it is reported
                              [default: 2000]
    --max-agents N            agent boots tracked (sequence state, policy tables); the least
                              recently used beyond this are forgotten [default: 10000]
    --no-event-data           omit EventData (as karmor releases before it did)
    --no-node-id              omit NodeID (likewise)

OUTPUT (any combination; --stdout is the default when none is given):
    --stdout                  JSON lines to stdout
    --output FILE             JSON lines appended to FILE
    --format json|cef         what --stdout and --output print: KubeArmor JSON lines or ArcSight
                              CEF records [default: json]
    --rotate-bytes N          rotate FILE before it would exceed N bytes: FILE -> FILE.1 -> ...
    --rotate-keep K           rotated files kept [default: 5]
    --publish-json            publish each line to PREFIX/<cluster>/<node>/alerts/json (QoS 1)
    --capture FILE            also append every received message to FILE (capture format, see
                              the README), for replay with --input

SYSLOG (for a SIEM; RFC 5424, octet-counted frames):
    --syslog HOST:PORT        send every line to this TCP receiver (RFC 6587)
    --syslog-ca FILE          TLS (RFC 5425), verifying the receiver against this CA (PEM)
    --syslog-client-cert FILE client certificate chain (PEM) for mutual TLS; with --syslog-client-key
    --syslog-client-key FILE  its private key (PEM)
    --syslog-server-name NAME the name the receiver's certificate must carry [default: HOST]
    --syslog-message json|cef the message part: the KubeArmor JSON line or a CEF record
                              [default: json]
    --syslog-facility NAME    kern, user, daemon, auth, syslog, authpriv, local0..local7
                              [default: authpriv]
    --syslog-queue N          messages queued while the receiver is slow or away; beyond, new
                              ones are dropped and counted [default: 10000]

METRICS:
    --metrics IP:PORT         serve Prometheus text on http://IP:PORT/metrics: the agents'
                              counters from their status messages, online/offline, and the
                              decoder's own counters (port 0 picks a free port, printed on
                              stderr); not with --input

    -h, --help                this text
    -V, --version             the version

Diagnostics go to stderr (RUST_LOG=debug for more); counters are printed there at exit.
Exit status: 0 when stopped by SIGINT/SIGTERM or at the end of --input; 1 for a bad command
line (one line on stderr), unusable files, a damaged capture file or a broker error retrying
cannot fix (the message names the fix).
";

/// Default broker, events filter and tuning values.
pub const DEFAULT_BROKER: &str = "127.0.0.1:1883";
pub const DEFAULT_REORDER_WINDOW_MS: u64 = 2_000;
pub const DEFAULT_MAX_AGENTS: usize = 10_000;
pub const DEFAULT_ROTATE_KEEP: u32 = 5;
pub const DEFAULT_SYSLOG_QUEUE: usize = 10_000;
pub const MAX_SYSLOG_QUEUE: usize = 10_000_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Run(Box<Config>),
    Help,
    Version,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub source: Source,
    pub topic_prefix: String,
    pub output: OutputConfig,
    pub expand: ExpandOptions,
    pub gap_reports: bool,
    pub reorder_window_ms: u64,
    pub max_agents: usize,
    /// `--metrics`: where to serve Prometheus text.
    pub metrics: Option<SocketAddr>,
}

impl Config {
    pub fn decoder_config(&self) -> DecoderConfig {
        DecoderConfig {
            topic_prefix: self.topic_prefix.clone(),
            expand: self.expand,
            tracker: TrackerConfig {
                gap_reports: self.gap_reports,
                reorder_window_us: self.reorder_window_ms.saturating_mul(1_000),
                max_streams: self.max_agents,
            },
            max_agents: self.max_agents,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Broker(Box<BrokerConfig>),
    /// A capture file; `-` is stdin.
    Capture(PathBuf),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerConfig {
    pub host: String,
    pub port: u16,
    pub client_id: Option<String>,
    pub tls: Option<TlsFiles>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub topic: String,
    pub share_group: Option<String>,
    pub capture: Option<PathBuf>,
    pub mqtt_version: VersionChoice,
}

impl BrokerConfig {
    /// The events subscription, shared or not.
    pub fn events_filter(&self) -> String {
        match &self.share_group {
            Some(group) => topic::shared_filter(group, &self.topic),
            None => self.topic.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputConfig {
    pub stdout: bool,
    pub file: Option<FileOutput>,
    /// What `--stdout` and `--output` print.
    pub format: Format,
    pub publish_json: bool,
    pub syslog: Option<SyslogOutput>,
}

/// `--syslog`: RFC 5424 over TCP, or TLS with `--syslog-ca`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyslogOutput {
    pub host: String,
    pub port: u16,
    /// TLS (RFC 5425) when given.
    pub tls: Option<TlsFiles>,
    /// The name the receiver's certificate must carry [default: `host`].
    pub server_name: Option<String>,
    /// What MSG carries.
    pub message: Format,
    pub facility: u8,
    /// Messages queued for the receiver; beyond, new ones are dropped (counted).
    pub queue: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileOutput {
    pub path: PathBuf,
    pub rotate_bytes: Option<u64>,
    pub keep: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// lexopt's own message (an unknown option, an option without its value ...).
    Syntax(String),
    Repeated(&'static str),
    InvalidValue {
        option: &'static str,
        value: String,
        reason: String,
    },
    Requires {
        option: &'static str,
        needs: &'static str,
    },
    Conflicts {
        option: &'static str,
        with: &'static str,
    },
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Syntax(e) => write!(f, "{e}"),
            ConfigError::Repeated(option) => write!(f, "{option} was given more than once"),
            ConfigError::InvalidValue {
                option,
                value,
                reason,
            } => write!(f, "invalid value {value:?} for {option}: {reason}"),
            ConfigError::Requires { option, needs } => write!(f, "{option} needs {needs}"),
            ConfigError::Conflicts { option, with } => {
                write!(f, "{option} cannot be combined with {with}")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Every option as given, before the cross-checks.
#[derive(Default)]
struct Given {
    broker: Option<String>,
    client_id: Option<String>,
    ca: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    username: Option<String>,
    password_file: Option<PathBuf>,
    topic: Option<String>,
    topic_prefix: Option<String>,
    share_group: Option<String>,
    mqtt_version: Option<VersionChoice>,
    gap_reports: Option<bool>,
    reorder_window_ms: Option<u64>,
    max_agents: Option<usize>,
    no_event_data: bool,
    no_node_id: bool,
    stdout: bool,
    output: Option<PathBuf>,
    rotate_bytes: Option<u64>,
    rotate_keep: Option<u32>,
    publish_json: bool,
    input: Option<PathBuf>,
    capture: Option<PathBuf>,
    format: Option<Format>,
    metrics: Option<String>,
    syslog: Option<String>,
    syslog_ca: Option<PathBuf>,
    syslog_client_cert: Option<PathBuf>,
    syslog_client_key: Option<PathBuf>,
    syslog_server_name: Option<String>,
    syslog_message: Option<Format>,
    syslog_facility: Option<u8>,
    syslog_queue: Option<usize>,
}

/// Sets `slot` once; a second value for the same option is an error.
fn once<T>(slot: &mut Option<T>, option: &'static str, value: T) -> Result<(), ConfigError> {
    if slot.is_some() {
        return Err(ConfigError::Repeated(option));
    }
    *slot = Some(value);
    Ok(())
}

fn string(value: OsString, option: &'static str) -> Result<String, ConfigError> {
    value.into_string().map_err(|v| ConfigError::InvalidValue {
        option,
        value: v.to_string_lossy().into_owned(),
        reason: "not valid UTF-8".into(),
    })
}

fn number<T: std::str::FromStr>(
    value: OsString,
    option: &'static str,
    what: &str,
) -> Result<T, ConfigError> {
    let text = string(value, option)?;
    text.parse().map_err(|_| ConfigError::InvalidValue {
        option,
        value: text.clone(),
        reason: format!("expected {what}"),
    })
}

pub fn parse<I>(args: I) -> Result<Command, ConfigError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    use lexopt::prelude::*;

    let syntax = |e: lexopt::Error| ConfigError::Syntax(e.to_string());
    let mut parser = lexopt::Parser::from_args(args);
    let mut g = Given::default();
    while let Some(arg) = parser.next().map_err(syntax)? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            Long("broker") => once(
                &mut g.broker,
                "--broker",
                string(parser.value().map_err(syntax)?, "--broker")?,
            )?,
            Long("client-id") => once(
                &mut g.client_id,
                "--client-id",
                string(parser.value().map_err(syntax)?, "--client-id")?,
            )?,
            Long("ca") => once(&mut g.ca, "--ca", parser.value().map_err(syntax)?.into())?,
            Long("client-cert") => once(
                &mut g.client_cert,
                "--client-cert",
                parser.value().map_err(syntax)?.into(),
            )?,
            Long("client-key") => once(
                &mut g.client_key,
                "--client-key",
                parser.value().map_err(syntax)?.into(),
            )?,
            Long("username") => once(
                &mut g.username,
                "--username",
                string(parser.value().map_err(syntax)?, "--username")?,
            )?,
            Long("password-file") => once(
                &mut g.password_file,
                "--password-file",
                parser.value().map_err(syntax)?.into(),
            )?,
            Long("topic") => once(
                &mut g.topic,
                "--topic",
                string(parser.value().map_err(syntax)?, "--topic")?,
            )?,
            Long("topic-prefix") => once(
                &mut g.topic_prefix,
                "--topic-prefix",
                string(parser.value().map_err(syntax)?, "--topic-prefix")?,
            )?,
            Long("share-group") => once(
                &mut g.share_group,
                "--share-group",
                string(parser.value().map_err(syntax)?, "--share-group")?,
            )?,
            Long("mqtt-version") => {
                let value = string(parser.value().map_err(syntax)?, "--mqtt-version")?;
                let choice =
                    value
                        .parse::<VersionChoice>()
                        .map_err(|_| ConfigError::InvalidValue {
                            option: "--mqtt-version",
                            value: value.clone(),
                            reason: "expected 3.1.1, 5 or auto".into(),
                        })?;
                once(&mut g.mqtt_version, "--mqtt-version", choice)?;
            }
            Long("gap-reports") => {
                let value = string(parser.value().map_err(syntax)?, "--gap-reports")?;
                let on = match value.as_str() {
                    "on" => true,
                    "off" => false,
                    _ => {
                        return Err(ConfigError::InvalidValue {
                            option: "--gap-reports",
                            value,
                            reason: "expected on or off".into(),
                        });
                    }
                };
                once(&mut g.gap_reports, "--gap-reports", on)?;
            }
            Long("reorder-window-ms") => once(
                &mut g.reorder_window_ms,
                "--reorder-window-ms",
                number(
                    parser.value().map_err(syntax)?,
                    "--reorder-window-ms",
                    "milliseconds",
                )?,
            )?,
            Long("max-agents") => {
                let n: usize = number(parser.value().map_err(syntax)?, "--max-agents", "a count")?;
                if n == 0 {
                    return Err(ConfigError::InvalidValue {
                        option: "--max-agents",
                        value: n.to_string(),
                        reason: "must be at least 1".into(),
                    });
                }
                once(&mut g.max_agents, "--max-agents", n)?;
            }
            Long("no-event-data") => g.no_event_data = true,
            Long("no-node-id") => g.no_node_id = true,
            Long("stdout") => g.stdout = true,
            Long("output") => once(
                &mut g.output,
                "--output",
                parser.value().map_err(syntax)?.into(),
            )?,
            Long("rotate-bytes") => {
                let n: u64 = number(
                    parser.value().map_err(syntax)?,
                    "--rotate-bytes",
                    "a byte count",
                )?;
                if n == 0 {
                    return Err(ConfigError::InvalidValue {
                        option: "--rotate-bytes",
                        value: n.to_string(),
                        reason: "must be at least 1".into(),
                    });
                }
                once(&mut g.rotate_bytes, "--rotate-bytes", n)?;
            }
            Long("rotate-keep") => {
                let k: u32 = number(
                    parser.value().map_err(syntax)?,
                    "--rotate-keep",
                    "a file count",
                )?;
                if k > 1000 {
                    return Err(ConfigError::InvalidValue {
                        option: "--rotate-keep",
                        value: k.to_string(),
                        reason: "at most 1000 files".into(),
                    });
                }
                once(&mut g.rotate_keep, "--rotate-keep", k)?;
            }
            Long("publish-json") => g.publish_json = true,
            Long("input") => once(
                &mut g.input,
                "--input",
                parser.value().map_err(syntax)?.into(),
            )?,
            Long("capture") => once(
                &mut g.capture,
                "--capture",
                parser.value().map_err(syntax)?.into(),
            )?,
            Long("format") => once(
                &mut g.format,
                "--format",
                format(parser.value().map_err(syntax)?, "--format")?,
            )?,
            Long("metrics") => once(
                &mut g.metrics,
                "--metrics",
                string(parser.value().map_err(syntax)?, "--metrics")?,
            )?,
            Long("syslog") => once(
                &mut g.syslog,
                "--syslog",
                string(parser.value().map_err(syntax)?, "--syslog")?,
            )?,
            Long("syslog-ca") => once(
                &mut g.syslog_ca,
                "--syslog-ca",
                parser.value().map_err(syntax)?.into(),
            )?,
            Long("syslog-client-cert") => once(
                &mut g.syslog_client_cert,
                "--syslog-client-cert",
                parser.value().map_err(syntax)?.into(),
            )?,
            Long("syslog-client-key") => once(
                &mut g.syslog_client_key,
                "--syslog-client-key",
                parser.value().map_err(syntax)?.into(),
            )?,
            Long("syslog-server-name") => once(
                &mut g.syslog_server_name,
                "--syslog-server-name",
                string(parser.value().map_err(syntax)?, "--syslog-server-name")?,
            )?,
            Long("syslog-message") => once(
                &mut g.syslog_message,
                "--syslog-message",
                format(parser.value().map_err(syntax)?, "--syslog-message")?,
            )?,
            Long("syslog-facility") => {
                let name = string(parser.value().map_err(syntax)?, "--syslog-facility")?;
                let facility = soc::facility(&name).ok_or_else(|| ConfigError::InvalidValue {
                    option: "--syslog-facility",
                    value: name.clone(),
                    reason: format!(
                        "expected one of {}",
                        soc::FACILITIES
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                })?;
                once(&mut g.syslog_facility, "--syslog-facility", facility)?;
            }
            Long("syslog-queue") => {
                let n: usize = number(
                    parser.value().map_err(syntax)?,
                    "--syslog-queue",
                    "a message count",
                )?;
                if n == 0 || n > MAX_SYSLOG_QUEUE {
                    return Err(ConfigError::InvalidValue {
                        option: "--syslog-queue",
                        value: n.to_string(),
                        reason: format!("must be 1 to {MAX_SYSLOG_QUEUE}"),
                    });
                }
                once(&mut g.syslog_queue, "--syslog-queue", n)?;
            }
            Value(value) if value == "help" => return Ok(Command::Help),
            Value(value) => {
                return Err(ConfigError::Syntax(format!(
                    "unexpected argument {:?} (edgearmor-decode takes options only)",
                    value.to_string_lossy()
                )));
            }
            other => return Err(ConfigError::Syntax(other.unexpected().to_string())),
        }
    }
    check(g).map(|c| Command::Run(Box::new(c)))
}

fn format(value: OsString, option: &'static str) -> Result<Format, ConfigError> {
    let text = string(value, option)?;
    Format::parse(&text).ok_or_else(|| ConfigError::InvalidValue {
        option,
        value: text,
        reason: "expected json or cef".into(),
    })
}

/// `--syslog` and its companions.
fn syslog_output(g: &mut Given) -> Result<Option<SyslogOutput>, ConfigError> {
    let Some(address) = g.syslog.take() else {
        for (given, option) in [
            (g.syslog_ca.is_some(), "--syslog-ca"),
            (g.syslog_client_cert.is_some(), "--syslog-client-cert"),
            (g.syslog_client_key.is_some(), "--syslog-client-key"),
            (g.syslog_server_name.is_some(), "--syslog-server-name"),
            (g.syslog_message.is_some(), "--syslog-message"),
            (g.syslog_facility.is_some(), "--syslog-facility"),
            (g.syslog_queue.is_some(), "--syslog-queue"),
        ] {
            if given {
                return Err(ConfigError::Requires {
                    option,
                    needs: "--syslog",
                });
            }
        }
        return Ok(None);
    };
    let (host, port) = parse_address("--syslog", &address)?;
    let client = match (g.syslog_client_cert.take(), g.syslog_client_key.take()) {
        (Some(cert), Some(key)) => Some(ClientCertificate { cert, key }),
        (Some(_), None) => {
            return Err(ConfigError::Requires {
                option: "--syslog-client-cert",
                needs: "--syslog-client-key",
            });
        }
        (None, Some(_)) => {
            return Err(ConfigError::Requires {
                option: "--syslog-client-key",
                needs: "--syslog-client-cert",
            });
        }
        (None, None) => None,
    };
    let tls = match g.syslog_ca.take() {
        Some(ca) => Some(TlsFiles { ca, client }),
        None if client.is_some() => {
            return Err(ConfigError::Requires {
                option: "--syslog-client-cert",
                needs: "--syslog-ca",
            });
        }
        None if g.syslog_server_name.is_some() => {
            return Err(ConfigError::Requires {
                option: "--syslog-server-name",
                needs: "--syslog-ca",
            });
        }
        None => None,
    };
    Ok(Some(SyslogOutput {
        host,
        port,
        tls,
        server_name: g.syslog_server_name.take(),
        message: g.syslog_message.unwrap_or_default(),
        facility: g.syslog_facility.unwrap_or(soc::DEFAULT_FACILITY),
        queue: g.syslog_queue.unwrap_or(DEFAULT_SYSLOG_QUEUE),
    }))
}

fn metrics_address(value: Option<String>) -> Result<Option<SocketAddr>, ConfigError> {
    value
        .map(|text| {
            text.parse().map_err(|_| ConfigError::InvalidValue {
                option: "--metrics",
                value: text.clone(),
                reason:
                    "expected IP:PORT (e.g. 127.0.0.1:9464, [::]:9464; port 0 picks a free one)"
                        .into(),
            })
        })
        .transpose()
}

fn check(mut g: Given) -> Result<Config, ConfigError> {
    let syslog = syslog_output(&mut g)?;
    let metrics = metrics_address(g.metrics.take())?;
    let requires = |given: bool, option, needs_given: bool, needs| {
        if given && !needs_given {
            Err(ConfigError::Requires { option, needs })
        } else {
            Ok(())
        }
    };
    requires(
        g.rotate_bytes.is_some(),
        "--rotate-bytes",
        g.output.is_some(),
        "--output",
    )?;
    requires(
        g.rotate_keep.is_some(),
        "--rotate-keep",
        g.rotate_bytes.is_some(),
        "--rotate-bytes",
    )?;
    requires(
        g.client_cert.is_some(),
        "--client-cert",
        g.client_key.is_some(),
        "--client-key",
    )?;
    requires(
        g.client_key.is_some(),
        "--client-key",
        g.client_cert.is_some(),
        "--client-cert",
    )?;
    requires(
        g.client_cert.is_some(),
        "--client-cert",
        g.ca.is_some(),
        "--ca",
    )?;
    requires(
        g.password_file.is_some(),
        "--password-file",
        g.username.is_some(),
        "--username",
    )?;

    let output = OutputConfig {
        stdout: g.stdout || (g.output.is_none() && !g.publish_json && syslog.is_none()),
        file: g.output.map(|path| FileOutput {
            path,
            rotate_bytes: g.rotate_bytes,
            keep: g.rotate_keep.unwrap_or(DEFAULT_ROTATE_KEEP),
        }),
        format: g.format.unwrap_or_default(),
        publish_json: g.publish_json,
        syslog,
    };
    let expand = ExpandOptions {
        event_data: !g.no_event_data,
        node_id: !g.no_node_id,
    };
    let reorder_window_ms = g.reorder_window_ms.unwrap_or(DEFAULT_REORDER_WINDOW_MS);
    let topic_prefix = g
        .topic_prefix
        .unwrap_or_else(|| topic::DEFAULT_PREFIX.into());
    topic::validate_prefix(&topic_prefix).map_err(|reason| ConfigError::InvalidValue {
        option: "--topic-prefix",
        value: topic_prefix.clone(),
        reason: reason.into(),
    })?;
    let max_agents = g.max_agents.unwrap_or(DEFAULT_MAX_AGENTS);

    if let Some(input) = g.input {
        for (given, option) in [
            (g.broker.is_some(), "--broker"),
            (g.client_id.is_some(), "--client-id"),
            (g.ca.is_some(), "--ca"),
            (g.client_cert.is_some(), "--client-cert"),
            (g.username.is_some(), "--username"),
            (g.topic.is_some(), "--topic"),
            (g.share_group.is_some(), "--share-group"),
            (g.mqtt_version.is_some(), "--mqtt-version"),
            (g.publish_json, "--publish-json"),
            (g.capture.is_some(), "--capture"),
            (metrics.is_some(), "--metrics"),
        ] {
            if given {
                return Err(ConfigError::Conflicts {
                    option: "--input",
                    with: option,
                });
            }
        }
        return Ok(Config {
            source: Source::Capture(input),
            topic_prefix,
            output,
            expand,
            gap_reports: g.gap_reports.unwrap_or(true),
            reorder_window_ms,
            max_agents,
            metrics,
        });
    }

    let broker = g.broker.unwrap_or_else(|| DEFAULT_BROKER.into());
    let (host, port) = parse_address("--broker", &broker)?;
    let topic = g
        .topic
        .unwrap_or_else(|| topic::events_filter(&topic_prefix));
    topic::validate_filter(&topic).map_err(|reason| ConfigError::InvalidValue {
        option: "--topic",
        value: topic.clone(),
        reason: reason.into(),
    })?;
    if let Some(group) = &g.share_group {
        topic::validate_share_group(group).map_err(|reason| ConfigError::InvalidValue {
            option: "--share-group",
            value: group.clone(),
            reason: reason.into(),
        })?;
    }
    if let Some(id) = &g.client_id
        && (id.is_empty() || id.len() > 256)
    {
        return Err(ConfigError::InvalidValue {
            option: "--client-id",
            value: id.clone(),
            reason: "must be 1 to 256 bytes".into(),
        });
    }
    let mqtt_version = g.mqtt_version.unwrap_or_default();
    if g.share_group.is_some() && mqtt_version == VersionChoice::Fixed(MqttVersion::V311) {
        return Err(ConfigError::InvalidValue {
            option: "--share-group",
            value: g.share_group.unwrap_or_default(),
            reason: "shared subscriptions need MQTT 5, not --mqtt-version 3.1.1 (with 3.1.1, give each decoder a disjoint --topic)".into(),
        });
    }
    let gap_reports = g.gap_reports.unwrap_or(g.share_group.is_none());
    Ok(Config {
        source: Source::Broker(Box::new(BrokerConfig {
            host,
            port,
            client_id: g.client_id,
            tls: g.ca.map(|ca| TlsFiles {
                ca,
                client: g
                    .client_cert
                    .zip(g.client_key)
                    .map(|(cert, key)| ClientCertificate { cert, key }),
            }),
            username: g.username,
            password_file: g.password_file,
            topic,
            share_group: g.share_group,
            capture: g.capture,
            mqtt_version,
        })),
        topic_prefix,
        output,
        expand,
        gap_reports,
        reorder_window_ms,
        max_agents,
        metrics,
    })
}

/// `HOST:PORT`, `[IPv6]:PORT`.
fn parse_address(option: &'static str, value: &str) -> Result<(String, u16), ConfigError> {
    let invalid = |reason: &str| ConfigError::InvalidValue {
        option,
        value: value.into(),
        reason: reason.into(),
    };
    let (host, port) = value
        .rsplit_once(':')
        .ok_or_else(|| invalid("expected HOST:PORT"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(['[', ']', '/', ' ']) {
        return Err(invalid("expected HOST:PORT"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| invalid("the port must be a number from 1 to 65535"))?;
    if port == 0 {
        return Err(invalid("the port must be a number from 1 to 65535"));
    }
    Ok((host.into(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, ConfigError> {
        match parse(args.iter().copied())? {
            Command::Run(config) => Ok(*config),
            other => panic!("expected a run, got {other:?}"),
        }
    }

    fn broker(config: &Config) -> &BrokerConfig {
        match &config.source {
            Source::Broker(b) => b,
            Source::Capture(_) => panic!("expected a broker source"),
        }
    }

    #[test]
    fn defaults() {
        let config = run(&[]).expect("valid");
        let b = broker(&config);
        assert_eq!((b.host.as_str(), b.port), ("127.0.0.1", 1883));
        assert_eq!(b.events_filter(), "edgearmor/+/+/events");
        assert_eq!(b.mqtt_version, VersionChoice::Auto);
        assert!(config.output.stdout && config.output.file.is_none());
        assert!(config.gap_reports);
        assert_eq!(config.expand, ExpandOptions::default());
        assert_eq!(config.topic_prefix, "edgearmor");
        let config = run(&["--topic-prefix", "site/7"]).expect("valid");
        assert_eq!(broker(&config).events_filter(), "site/7/+/+/events");
        assert_eq!(config.decoder_config().topic_prefix, "site/7");
    }

    #[test]
    fn share_group_turns_gap_reports_off_unless_asked() {
        let config = run(&["--share-group", "g"]).expect("valid");
        assert_eq!(
            broker(&config).events_filter(),
            "$share/g/edgearmor/+/+/events"
        );
        assert!(!config.gap_reports);
        let config = run(&["--share-group", "g", "--gap-reports", "on"]).expect("valid");
        assert!(config.gap_reports);
        let config = run(&["--mqtt-version", "3.1.1"]).expect("valid");
        assert_eq!(
            broker(&config).mqtt_version,
            VersionChoice::Fixed(MqttVersion::V311)
        );
    }

    #[test]
    fn outputs_combine_and_stdout_is_only_the_default() {
        let config = run(&["--output", "/tmp/a", "--rotate-bytes", "100"]).expect("valid");
        assert!(!config.output.stdout);
        assert_eq!(
            config.output.file,
            Some(FileOutput {
                path: "/tmp/a".into(),
                rotate_bytes: Some(100),
                keep: DEFAULT_ROTATE_KEEP
            })
        );
        assert!(!run(&["--publish-json"]).expect("valid").output.stdout);
        assert!(
            run(&["--publish-json", "--stdout"])
                .expect("valid")
                .output
                .stdout
        );
    }

    #[test]
    fn broker_addresses() {
        let b = |v| parse_address("--broker", v);
        assert_eq!(b("[::1]:8883"), Ok(("::1".into(), 8883)));
        assert_eq!(b("mqtt.example:1883"), Ok(("mqtt.example".into(), 1883)));
        assert!(b("nohost").is_err());
        assert!(b("host:0").is_err());
        assert!(b("host:99999").is_err());
    }

    #[test]
    fn bad_command_lines_say_exactly_what_is_wrong() {
        let cases: &[(&[&str], &str)] = &[
            (&["--frobnicate"], "invalid option '--frobnicate'"),
            (
                &["--broker", "localhost"],
                "invalid value \"localhost\" for --broker: expected HOST:PORT",
            ),
            (&["--rotate-bytes", "10"], "--rotate-bytes needs --output"),
            (
                &["--client-cert", "c.pem", "--client-key", "k.pem"],
                "--client-cert needs --ca",
            ),
            (
                &["--client-cert", "c.pem"],
                "--client-cert needs --client-key",
            ),
            (
                &["--password-file", "p"],
                "--password-file needs --username",
            ),
            (
                &["--input", "f", "--share-group", "g"],
                "--input cannot be combined with --share-group",
            ),
            (
                &["--gap-reports", "maybe"],
                "invalid value \"maybe\" for --gap-reports: expected on or off",
            ),
            (
                &["--topic", "a/#/b"],
                "invalid value \"a/#/b\" for --topic: '#' must be a whole level and the last one",
            ),
            (
                &["--share-group", "a/b"],
                "invalid value \"a/b\" for --share-group: a share group name cannot contain '/', '+', '#' or NUL",
            ),
            (
                &["--output", "a", "--output", "b"],
                "--output was given more than once",
            ),
            (
                &["--max-agents", "0"],
                "invalid value \"0\" for --max-agents: must be at least 1",
            ),
            (
                &["--topic-prefix", "a/#"],
                "invalid value \"a/#\" for --topic-prefix: a topic prefix cannot hold wildcards or NUL, nor start with '$'",
            ),
            (
                &["--mqtt-version", "3"],
                "invalid value \"3\" for --mqtt-version: expected 3.1.1, 5 or auto",
            ),
            (
                &["--mqtt-version", "3.1.1", "--share-group", "g"],
                "invalid value \"g\" for --share-group: shared subscriptions need MQTT 5, not --mqtt-version 3.1.1 (with 3.1.1, give each decoder a disjoint --topic)",
            ),
            (
                &["--input", "f", "--mqtt-version", "5"],
                "--input cannot be combined with --mqtt-version",
            ),
            (
                &["--reorder-window-ms", "soon"],
                "invalid value \"soon\" for --reorder-window-ms: expected milliseconds",
            ),
        ];
        for (args, message) in cases {
            let err = run(args).expect_err(&format!("{args:?}"));
            assert_eq!(err.to_string(), *message, "{args:?}");
        }
        assert!(matches!(parse(["--broker"]), Err(ConfigError::Syntax(_))));
    }

    #[test]
    fn input_mode() {
        let config = run(&["--input", "-", "--no-event-data", "--no-node-id"]).expect("valid");
        assert_eq!(config.source, Source::Capture("-".into()));
        assert_eq!(
            config.expand,
            ExpandOptions {
                event_data: false,
                node_id: false
            }
        );
        assert_eq!(parse(["--help"]), Ok(Command::Help));
    }
}
