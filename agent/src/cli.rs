//! The command line: which subcommand, and the configuration it runs with (`agent.toml`
//! overridden by flags, rule files and `--deny-*` rules loaded). Parsing only; the
//! commands themselves live in [`crate::commands`].

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lexopt::prelude::*;

use crate::config::{AgentConfig, DEFAULT_CONFIG_PATH, Enforcement, FleetConfig};
use crate::control::setid_rules::SetidRuleSet;

mod help;
pub use help::{command_help, known_command, usage};

#[derive(Debug, PartialEq)]
pub enum Command {
    Run,
    /// `policy check [--host[=NAME]] [--label K=V]... [--config FILE] FILE_OR_DIR...`.
    PolicyCheck {
        paths: Vec<PathBuf>,
        /// `--host` alone: this machine's files too (what `run` would warn about).
        host: bool,
        /// Set by `--host=NAME`, `--label` or `--config`: which policies select it.
        node: Option<NodeQuery>,
    },
    /// `keygen --out PREFIX`: PREFIX.key and PREFIX.pub.
    Keygen(PathBuf),
    /// Detach everything pinned and remove the pins; in locked mode only with a token.
    Unload {
        token: Option<PathBuf>,
    },
    /// `unlock-token create`: a signed unlock token for `node`.
    UnlockTokenCreate {
        key: PathBuf,
        node: String,
        valid_for_secs: u64,
        out: PathBuf,
    },
    BundleCreate {
        key: PathBuf,
        version: u64,
        scope: edgearmor_bundle::Scope,
        targets: Vec<String>,
        out: PathBuf,
        policies: Vec<PathBuf>,
    },
    BundleVerify {
        public_keys: Vec<PathBuf>,
        max_bytes: usize,
        bundle: PathBuf,
    },
    KernelCheck(Option<PathBuf>),
    SendTestAlerts {
        count: u64,
        interval: Duration,
    },
    /// `status [--config FILE] [--json]`.
    Status {
        json: bool,
    },
    Version,
    /// The whole usage, or one command's help.
    Help(Option<&'static str>),
}

/// A command line that could not be parsed: one line, and where to read more.
#[derive(Debug, PartialEq)]
pub struct UsageError {
    pub message: String,
    /// The command it was for, if the first word named one.
    pub command: Option<&'static str>,
}

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.command {
            Some(c) if c != "help" => write!(f, "{} (see `edgearmor {c} --help`)", self.message),
            _ => write!(f, "{} (see `edgearmor --help`)", self.message),
        }
    }
}

/// A parsed command line: the command, and for the commands that run the agent's
/// machinery, the configuration and setid rules it runs with.
pub struct Invocation {
    pub command: Command,
    pub config: AgentConfig,
    pub rules: SetidRuleSet,
    /// Where the configuration came from (`--config`, else the default path) and the
    /// flags that overrode it: a locked kernel holds `run` to the locked file.
    pub origin: ConfigOrigin,
}

/// The configuration file a command ran with and the flags given over it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigOrigin {
    pub file: PathBuf,
    /// Flag names (without `--`) that changed the configuration or added rules.
    pub overrides: Vec<String>,
}

impl Invocation {
    fn bare(command: Command) -> Self {
        Self {
            command,
            config: AgentConfig::default(),
            rules: SetidRuleSet::default(),
            origin: ConfigOrigin::default(),
        }
    }
}

fn text(e: lexopt::Error) -> String {
    e.to_string()
}

/// An option's value as UTF-8, or why not.
fn string(value: OsString) -> Result<String, String> {
    value
        .into_string()
        .map_err(|v| format!("{v:?} is not UTF-8"))
}

/// Parses `args` (without the program name), reading the configuration file and
/// rule files the command needs. `COMMAND --help` (or `-h`) anywhere after a command
/// is that command's help, whatever else the line holds.
pub fn parse<I>(args: I) -> Result<Invocation, UsageError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let command = args
        .first()
        .and_then(|a| a.to_str())
        .and_then(known_command);
    if let Some(name) = command
        && name != "help"
        && args[1..].iter().any(|a| a == "--help" || a == "-h")
    {
        return Ok(Invocation::bare(Command::Help(Some(name))));
    }
    parse_command(args).map_err(|message| UsageError { message, command })
}

fn parse_command(args: Vec<OsString>) -> Result<Invocation, String> {
    let mut parser = lexopt::Parser::from_args(args);
    let sub = match parser.next().map_err(text)? {
        Some(Value(v)) => v.string().map_err(text)?,
        Some(Long("help")) | Some(Short('h')) | None => "help".into(),
        Some(Long("version")) | Some(Short('V')) => "version".into(),
        Some(other) => return Err(other.unexpected().to_string()),
    };
    let command = match sub.as_str() {
        "run" => Command::Run,
        "send-test-alerts" => Command::SendTestAlerts {
            count: 10,
            interval: Duration::from_millis(10),
        },
        "version" => return no_more_arguments(&mut parser, Command::Version),
        "help" => return parse_help(&mut parser).map(Invocation::bare),
        "unload" => return unlock::parse_unload(&mut parser),
        "unlock-token" => return unlock::parse_unlock_token(&mut parser).map(Invocation::bare),
        "status" => Command::Status { json: false },
        "check" => return parse_check(&mut parser).map(Invocation::bare),
        "keygen" | "bundle" => return parse_fleet_command(&sub, &mut parser).map(Invocation::bare),
        "policy" => return parse_policy_check(&mut parser).map(Invocation::bare),
        other => return Err(format!("unknown command `{other}`")),
    };
    parse_agent_options(command, &mut parser)
}

/// `help [COMMAND]`.
fn parse_help(parser: &mut lexopt::Parser) -> Result<Command, String> {
    let name = match parser.next().map_err(text)? {
        None => return Ok(Command::Help(None)),
        Some(Value(v)) => string(v)?,
        Some(other) => return Err(other.unexpected().to_string()),
    };
    let command = known_command(&name).ok_or_else(|| format!("unknown command `{name}`"))?;
    no_more_arguments(parser, Command::Help(Some(command))).map(|i| i.command)
}

/// `command`, refusing anything after it.
fn no_more_arguments(parser: &mut lexopt::Parser, command: Command) -> Result<Invocation, String> {
    match parser.next().map_err(text)? {
        None => Ok(Invocation::bare(command)),
        Some(other) => Err(other.unexpected().to_string()),
    }
}

/// `check [--kernel-config FILE]`.
fn parse_check(parser: &mut lexopt::Parser) -> Result<Command, String> {
    let mut config = None;
    while let Some(arg) = parser.next().map_err(text)? {
        match arg {
            Long("kernel-config") => config = Some(PathBuf::from(parser.value().map_err(text)?)),
            other => return Err(other.unexpected().to_string()),
        }
    }
    Ok(Command::KernelCheck(config))
}

/// The node `policy check` reports the selection for.
#[derive(Debug, Default, PartialEq)]
pub struct NodeQuery {
    /// `--host=NAME`.
    pub host_name: Option<String>,
    /// `--label KEY=VALUE`, checked, in order given.
    pub labels: Vec<(String, String)>,
    /// `--config FILE`: its `node` and `[labels]`.
    pub config: Option<PathBuf>,
}

/// `policy check FILE_OR_DIR...`.
fn parse_policy_check(parser: &mut lexopt::Parser) -> Result<Command, String> {
    match parser.next().map_err(text)? {
        Some(Value(v)) if v == "check" => {}
        _ => return Err("expected `policy check FILE_OR_DIR...`".into()),
    }
    let mut paths = Vec::new();
    let mut host = false;
    let mut query = NodeQuery::default();
    while let Some(arg) = parser.next().map_err(text)? {
        match arg {
            Value(v) => paths.push(PathBuf::from(v)),
            // `--host=NAME` names a node; `--host` alone is this machine.
            Long("host") => match parser.optional_value() {
                Some(name) => query.host_name = Some(string(name)?),
                None => host = true,
            },
            Long("label") => {
                let value = string(parser.value().map_err(text)?)?;
                let pair = edgearmor_policy::node_labels::parse_label_assignment(&value)
                    .map_err(|e| format!("--label {e}"))?;
                if edgearmor_policy::node_labels::is_reserved_label(&pair.0) {
                    return Err(format!(
                        "--label {value}: this label is always the host name: use --host=NAME"
                    ));
                }
                query.labels.push(pair);
            }
            Long("config") => query.config = Some(PathBuf::from(parser.value().map_err(text)?)),
            other => return Err(other.unexpected().to_string()),
        }
    }
    if paths.is_empty() {
        return Err("policy check: give at least one file or directory".into());
    }
    let node = (query != NodeQuery::default()).then_some(query);
    Ok(Command::PolicyCheck { paths, host, node })
}

/// The options of `run` and `send-test-alerts`: the configuration file,
/// flags overriding it, and the rules they name.
fn parse_agent_options(
    mut command: Command,
    parser: &mut lexopt::Parser,
) -> Result<Invocation, String> {
    let mut config_path: Option<PathBuf> = None;
    let mut overrides: Vec<(String, String)> = Vec::new();
    let mut no_stdout = false;
    while let Some(arg) = parser.next().map_err(text)? {
        let flag = match &arg {
            Long("json") if matches!(command, Command::Status { .. }) => {
                command = Command::Status { json: true };
                continue;
            }
            Long("no-stdout") => {
                no_stdout = true;
                continue;
            }
            Long(name) => name.to_string(),
            other => return Err(other.clone().unexpected().to_string()),
        };
        let value = parser
            .value()
            .map_err(text)?
            .string()
            .map_err(|e| format!("--{flag}: {e}"))?;
        if flag == "config" {
            config_path = Some(value.into());
        } else {
            overrides.push((flag, value));
        }
    }
    let mut config = match &config_path {
        Some(path) => AgentConfig::load(path, true),
        None => AgentConfig::load(Path::new(DEFAULT_CONFIG_PATH), false),
    }
    .map_err(|e| e.to_string())?;
    let mut flag_rules = Vec::new();
    let origin = ConfigOrigin {
        file: config_path.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH)),
        overrides: overrides.iter().map(|(flag, _)| flag.clone()).collect(),
    };
    for (flag, value) in overrides {
        if flag == "deny-setgid" || flag == "deny-setuid" {
            flag_rules.push((flag, value));
        } else {
            apply_override(&mut config, &mut command, &flag, value)?;
        }
    }
    if no_stdout {
        config.output.stdout = false;
    }
    config.validate().map_err(|e| e.to_string())?;
    let rules = load_rules(&config, &flag_rules)?;
    if matches!(command, Command::Run)
        && rules.is_empty()
        && config.policies.is_empty()
        && config.fleet.public_keys.is_empty()
    {
        return Err(
            "no rules: give --policies PATH, --rules FILE, rules in agent.toml, [fleet] public_keys for bundles, or --deny-setgid/--deny-setuid PATH"
                .into(),
        );
    }
    Ok(Invocation {
        command,
        config,
        rules,
        origin,
    })
}

/// One `--flag value` over the configuration (or, for `--count` and `--interval-ms`,
/// over `send-test-alerts`).
fn apply_override(
    config: &mut AgentConfig,
    command: &mut Command,
    flag: &str,
    value: String,
) -> Result<(), String> {
    let number = |v: &str| {
        v.parse::<u64>()
            .map_err(|_| format!("--{flag}: `{v}` is not a number"))
    };
    match flag {
        "rules" => config.rules.push(value.into()),
        "policies" => config.policies.push(value.into()),
        "cluster" | "host-name" => {
            // Checked here so the error names the flag the value came from.
            edgearmor_mqtt::topic::validate_level(&value, &format!("--{flag}"))
                .map_err(|e| e.to_string())?;
            if flag == "cluster" {
                config.cluster = value;
            } else {
                config.node = value;
            }
        }
        "broker" => config.mqtt.broker = value,
        "ca" => config.mqtt.ca_file = Some(value.into()),
        "client-cert" => config.mqtt.client_cert = Some(value.into()),
        "client-key" => config.mqtt.client_key = Some(value.into()),
        "username" => config.mqtt.username = Some(value),
        "password-file" => config.mqtt.password_file = Some(value.into()),
        "mqtt-version" => {
            config.mqtt.mqtt_version = value.parse().map_err(|e| format!("--mqtt-version: {e}"))?
        }
        "spool-dir" => config.offline.spool_dir = Some(value.into()),
        "buffer-bytes" => config.offline.buffer_bytes = number(&value)? as usize,
        "max-alerts-per-sec" => config.throttle.max_alerts_per_sec = number(&value)? as u32,
        "throttle-sec" => config.throttle.throttle_sec = number(&value)? as u32,
        "shutdown-grace-secs" => config.mqtt.shutdown_grace_secs = number(&value)?,
        "enforcement" => {
            config.enforcement = match value.as_str() {
                "auto" => Enforcement::Auto,
                "required" => Enforcement::Required,
                other => {
                    return Err(format!(
                        "--enforcement: `{other}` is neither auto nor required"
                    ));
                }
            }
        }
        "count" | "interval-ms" => match command {
            Command::SendTestAlerts { count, interval } => {
                if flag == "count" {
                    *count = number(&value)?;
                } else {
                    *interval = Duration::from_millis(number(&value)?);
                }
            }
            _ => return Err(format!("--{flag} belongs to send-test-alerts")),
        },
        _ => return Err(format!("unknown option --{flag}")),
    }
    Ok(())
}

/// The setid rules of the configuration's rule files, then those of `--deny-*` flags.
fn load_rules(
    config: &AgentConfig,
    flag_rules: &[(String, String)],
) -> Result<SetidRuleSet, String> {
    let mut rules = SetidRuleSet::default();
    for file in &config.rules {
        rules.add_file(file).map_err(|e| e.to_string())?;
    }
    for (flag, path) in flag_rules {
        let op = if flag == "deny-setgid" {
            "setgid"
        } else {
            "setuid"
        };
        rules.add_flag(flag, op, path).map_err(|e| e.to_string())?;
    }
    Ok(rules)
}

/// `keygen --out PREFIX`, `bundle create ...`, `bundle verify ...`.
fn parse_fleet_command(sub: &str, parser: &mut lexopt::Parser) -> Result<Command, String> {
    let action = if sub == "bundle" {
        match parser.next().map_err(text)? {
            Some(Value(v)) => v.string().map_err(text)?,
            _ => return Err("expected `bundle create ...` or `bundle verify ...`".into()),
        }
    } else {
        "keygen".to_owned()
    };
    let args = FleetArgs::parse(parser)?;
    match action.as_str() {
        "keygen" => Ok(Command::Keygen(
            args.out.ok_or("keygen: give --out PREFIX")?,
        )),
        "create" => args.into_create(),
        "verify" => args.into_verify(),
        other => Err(format!(
            "unknown bundle command `{other}` (create or verify)"
        )),
    }
}

/// Everything `keygen` and `bundle create|verify` accept; each command then takes
/// what it needs.
struct FleetArgs {
    out: Option<PathBuf>,
    key: Option<PathBuf>,
    version: Option<u64>,
    scope: edgearmor_bundle::Scope,
    targets: Vec<String>,
    public_keys: Vec<PathBuf>,
    max_bytes: usize,
    files: Vec<PathBuf>,
}

impl FleetArgs {
    fn parse(parser: &mut lexopt::Parser) -> Result<Self, String> {
        let mut args = FleetArgs {
            out: None,
            key: None,
            version: None,
            scope: edgearmor_bundle::Scope::Fleet,
            targets: Vec::new(),
            public_keys: Vec::new(),
            max_bytes: FleetConfig::default().bundle_max_bytes,
            files: Vec::new(),
        };
        while let Some(arg) = parser.next().map_err(text)? {
            let name = match arg {
                Long(name) => name.to_owned(),
                Value(v) => {
                    args.files.push(PathBuf::from(v));
                    continue;
                }
                other => return Err(other.unexpected().to_string()),
            };
            const NAMES: [&str; 7] = [
                "out",
                "key",
                "public-key",
                "version",
                "max-bytes",
                "scope",
                "targets",
            ];
            if !NAMES.contains(&name.as_str()) {
                return Err(format!("unknown option --{name}"));
            }
            let value = parser
                .value()
                .map_err(text)?
                .string()
                .map_err(|e| format!("--{name}: {e}"))?;
            let number = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| format!("--{name}: `{v}` is not a number"))
            };
            match name.as_str() {
                "out" => args.out = Some(PathBuf::from(value)),
                "key" => args.key = Some(PathBuf::from(value)),
                "public-key" => args.public_keys.push(PathBuf::from(value)),
                "version" => args.version = Some(number(&value)?),
                "max-bytes" => args.max_bytes = number(&value)? as usize,
                "scope" => {
                    args.scope = edgearmor_bundle::Scope::parse(&value).ok_or_else(|| {
                        format!("--scope: `{value}` is neither `fleet` nor `node`")
                    })?
                }
                "targets" => args.targets.extend(
                    value
                        .split(',')
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned),
                ),
                _ => return Err(format!("unknown option --{name}")),
            }
        }
        Ok(args)
    }

    fn into_create(self) -> Result<Command, String> {
        if self.files.is_empty() {
            return Err("bundle create: give at least one policy file".into());
        }
        Ok(Command::BundleCreate {
            key: self
                .key
                .ok_or("bundle create: give --key SECRET_KEY_FILE")?,
            version: self.version.ok_or("bundle create: give --version N")?,
            scope: self.scope,
            targets: self.targets,
            out: self.out.ok_or("bundle create: give --out FILE")?,
            policies: self.files,
        })
    }

    fn into_verify(self) -> Result<Command, String> {
        if self.public_keys.is_empty() {
            return Err("bundle verify: give --public-key FILE".into());
        }
        let bundle = match self.files.as_slice() {
            [one] => one.clone(),
            _ => return Err("bundle verify: give exactly one bundle file".into()),
        };
        Ok(Command::BundleVerify {
            public_keys: self.public_keys,
            max_bytes: self.max_bytes,
            bundle,
        })
    }
}

#[cfg(test)]
mod tests;
mod unlock;
