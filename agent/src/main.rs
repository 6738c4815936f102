//! `edgearmor`: a host-security agent for Linux edge gateways.
//!
//! `edgearmor run` checks that the kernel can enforce, loads the BPF-LSM probes with
//! the configured rules, and sends one event per kernel decision through the pipeline
//! to its outputs (KubeArmor JSON lines on stdout, postcard batches over MQTT).
//! `edgearmor send-test-alerts` pushes synthetic alerts through the same pipeline to
//! prove a gateway's path to its broker. Diagnostics go to stderr (`RUST_LOG`).
//!
//! Exit codes: 0 after a clean stop (SIGTERM/SIGINT), 1 for usage, configuration or
//! rule errors, 2 when this kernel cannot enforce and `enforcement = "required"` (or
//! not even monitor-only mode works); the message names what is missing.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use edgearmor::config::{AgentConfig, DEFAULT_CONFIG_PATH, Enforcement};
use edgearmor::daemon::{self, AgentQueue, Outputs};
use edgearmor::fleet::{BundleReport, BundleScope, FleetPolicy, FleetSettings};
use edgearmor::host::{HostKernel, LiveKernel};
use edgearmor::kernel_rules::KernelRuleSet;
use edgearmor::loader::PolicyMaps;
use edgearmor::pipeline::{Batcher, unix_micros};
use edgearmor::policy_source::PolicySource;
use edgearmor::policy_table::{PolicyCatalog, PolicySet};
use edgearmor::reader::{ExecWatcher, RingbufReader};
use edgearmor::rules::SetidRuleSet;
use edgearmor::status::AgentStatus;
use edgearmor::{loader, readiness};
use edgearmor_wire::{
    Action, AgentId, Alert, Data, Event, EventBody, Operation, Outcome, PolicyRef, SetIdSyscall,
    Source,
};
use futures_lite::{FutureExt, StreamExt};

const USAGE: &str = "\
usage: edgearmor run [OPTIONS] [--deny-setgid PATH]... [--deny-setuid PATH]...
       edgearmor send-test-alerts [OPTIONS] [--count N] [--interval-ms MS]
       edgearmor policy check FILE_OR_DIR...
       edgearmor unload [--config FILE]
       edgearmor keygen --out PREFIX
       edgearmor bundle create --key KEY --version N [--targets A,B] --out FILE POLICY...
       edgearmor bundle verify --public-key FILE [--max-bytes N] BUNDLE
       edgearmor check [--kernel-config FILE]
       edgearmor version

  run               enforce the rules; alerts go to stdout and/or MQTT
  send-test-alerts  push N synthetic alerts (PolicyName edgearmor-test-alert, Action Audit)
                    through the pipeline, deliver them, exit; no kernel needed
  check             can this kernel enforce? one line per requirement with its fix; loads
                    and attaches the probes for real; with --kernel-config, checks a
                    kernel .config instead. Exit 0: it can; 2: it cannot
  policy check      validate KubeArmorHostPolicy YAML offline: one line per problem
                    (file:line: yaml.path: message), exit status 1 if there is any
  version           agent version and the SHA-256 of the embedded BPF object
  unload            detach the pinned programs and remove the pinned maps (stop the agent
                    first); `run` pins them so enforcement survives agent restarts
  keygen            an Ed25519 key pair for signing policy bundles (PREFIX.key, PREFIX.pub)
  bundle create     sign policy files into a bundle (each must pass policy check);
                    targets: node names, cluster/node, `*` or a prefix like `gw-*`
  bundle verify     check a bundle's signature and list what it holds

options (override agent.toml; see README for every key):
  --config FILE           configuration (default /etc/edgearmor/agent.toml, optional)
  --rules FILE            TOML rules file ([[setid]] tables), repeatable
  --policies PATH         KubeArmorHostPolicy file or directory, repeatable; re-read
                          on SIGHUP and when a file changes (policy_poll_ms)
  --deny-setgid PATH      deny that executable changing its gid (repeatable)
  --deny-setuid PATH      deny that executable changing its uid (repeatable)
  --cluster NAME          ClusterName / topic level (default: default)
  --host-name NAME        HostName / topic level (default: uname -n)
  --no-stdout             no JSON lines on stdout
  --broker HOST:PORT      publish to this MQTT broker
  --ca FILE               TLS: verify the broker against this CA (PEM)
  --client-cert FILE --client-key FILE    mutual TLS
  --username NAME --password-file FILE    MQTT credentials
  --spool-dir DIR         persist unacknowledged batches here
  --buffer-bytes N        offline buffer size in memory
  --max-alerts-per-sec N  throttle (0 = off; default 10)
  --throttle-sec N        throttle interval (default 30)
  --shutdown-grace-secs N on stop, keep delivering buffered batches this long (default 5)
  --enforcement auto|required
                          where BPF-LSM cannot run: watch execs monitor-only (auto, the
                          default) or refuse to start (required, exit status 2)";

enum Command {
    Run,
    PolicyCheck(Vec<PathBuf>),
    /// `keygen --out PREFIX`: PREFIX.key and PREFIX.pub.
    Keygen(PathBuf),
    /// Detach everything pinned and remove the pins.
    Unload,
    BundleCreate {
        key: PathBuf,
        version: u64,
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
    Version,
    Help,
}

struct Invocation {
    command: Command,
    config: AgentConfig,
    rules: SetidRuleSet,
}

fn parse_args() -> Result<Invocation, String> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    let sub = match parser.next().map_err(|e| e.to_string())? {
        Some(Value(v)) => v.string().map_err(|e| e.to_string())?,
        Some(Long("help")) | Some(Short('h')) | None => "help".into(),
        Some(other) => return Err(other.unexpected().to_string()),
    };
    let mut command = match sub.as_str() {
        "run" => Command::Run,
        "send-test-alerts" => Command::SendTestAlerts {
            count: 10,
            interval: Duration::from_millis(10),
        },
        "version" => Command::Version,
        "help" => Command::Help,
        "check" => {
            let mut config = None;
            while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
                match arg {
                    Long("kernel-config") => {
                        config = Some(PathBuf::from(parser.value().map_err(|e| e.to_string())?))
                    }
                    other => return Err(other.unexpected().to_string()),
                }
            }
            return Ok(Invocation {
                command: Command::KernelCheck(config),
                config: AgentConfig::default(),
                rules: SetidRuleSet::default(),
            });
        }
        "unload" => Command::Unload,
        "keygen" | "bundle" => {
            return Ok(Invocation {
                command: parse_fleet_command(&sub, &mut parser)?,
                config: AgentConfig::default(),
                rules: SetidRuleSet::default(),
            });
        }
        "policy" => {
            match parser.next().map_err(|e| e.to_string())? {
                Some(Value(v)) if v == "check" => {}
                _ => return Err("expected `policy check FILE_OR_DIR...`".into()),
            }
            let mut paths = Vec::new();
            while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
                match arg {
                    Value(v) => paths.push(PathBuf::from(v)),
                    other => return Err(other.unexpected().to_string()),
                }
            }
            if paths.is_empty() {
                return Err("policy check: give at least one file or directory".into());
            }
            return Ok(Invocation {
                command: Command::PolicyCheck(paths),
                config: AgentConfig::default(),
                rules: SetidRuleSet::default(),
            });
        }
        other => return Err(format!("unknown command `{other}`")),
    };
    let mut config_path: Option<PathBuf> = None;
    let mut overrides: Vec<(String, String)> = Vec::new();
    let mut no_stdout = false;
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        let flag = match &arg {
            Long("help") | Short('h') => {
                command = Command::Help;
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
            .map_err(|e| e.to_string())?
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
        None => AgentConfig::load(std::path::Path::new(DEFAULT_CONFIG_PATH), false),
    }
    .map_err(|e| e.to_string())?;
    let mut flag_rules = Vec::new();
    for (flag, value) in overrides {
        let number = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("--{flag}: `{v}` is not a number"))
        };
        match flag.as_str() {
            "rules" => config.rules.push(value.into()),
            "policies" => config.policies.push(value.into()),
            "deny-setgid" | "deny-setuid" => flag_rules.push((flag, value)),
            "cluster" => config.cluster = value,
            "host-name" => config.node = value,
            "broker" => config.mqtt.broker = value,
            "ca" => config.mqtt.ca_file = Some(value.into()),
            "client-cert" => config.mqtt.client_cert = Some(value.into()),
            "client-key" => config.mqtt.client_key = Some(value.into()),
            "username" => config.mqtt.username = Some(value),
            "password-file" => config.mqtt.password_file = Some(value.into()),
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
            "count" | "interval-ms" => match &mut command {
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
    }
    if no_stdout {
        config.output.stdout = false;
    }
    config.validate().map_err(|e| e.to_string())?;
    let mut rules = SetidRuleSet::default();
    for file in &config.rules {
        rules.add_file(file).map_err(|e| e.to_string())?;
    }
    for (flag, path) in &flag_rules {
        let op = if flag == "deny-setgid" {
            "setgid"
        } else {
            "setuid"
        };
        rules.add_flag(flag, op, path).map_err(|e| e.to_string())?;
    }
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
    })
}

/// The policy side of a running agent: where policies come from, the catalog of
/// their metadata, the setid rules from TOML and flags, and the path-hash key the
/// kernel tables are built with.
struct PolicyState {
    source: Option<PolicySource>,
    setid: SetidRuleSet,
    catalog: PolicyCatalog,
    key: [u64; 2],
    postures: edgearmor_policy::DefaultPostures,
}

impl PolicyState {
    /// `bundle_dir`: where fleet bundles are unpacked, read like any policy directory.
    fn new(
        config: &AgentConfig,
        hostname: String,
        setid: SetidRuleSet,
        key: [u64; 2],
        bundle_dir: Option<std::path::PathBuf>,
    ) -> Self {
        let postures = config.posture;
        let mut paths = config.policies.clone();
        paths.extend(bundle_dir);
        let source = (!paths.is_empty()).then(|| PolicySource::new(paths, hostname, postures));
        Self {
            source,
            setid,
            catalog: PolicyCatalog::default(),
            key,
            postures,
        }
    }

    /// Reads the policies and builds the kernel tables; logs what the operator must
    /// know. `Err` leaves everything as it was.
    fn build(&mut self, host: &LiveKernel) -> Result<(KernelRuleSet, String), String> {
        let (compiled, count) = match self.source.as_mut() {
            Some(source) => {
                let loaded = source.load()?;
                for problem in &loaded.problems {
                    log::error!("{problem}");
                }
                for skipped in &loaded.skipped {
                    log::info!("{skipped}");
                }
                (loaded.compiled, loaded.policy_count)
            }
            None => (edgearmor_policy::compile(&[], self.postures), 0),
        };
        let resolver = |path: &str| loader::kernel_path(host, path);
        let set = KernelRuleSet::build(
            &self.setid,
            &compiled,
            &mut self.catalog,
            self.key,
            &resolver,
        );
        for skipped in &set.skipped {
            log::error!("not enforceable, skipped: {skipped}");
        }
        let (rules, prefixes, globs) = set.sizes();
        const NAMES_SHOWN: usize = 12;
        let mut names = compiled
            .policy_names
            .iter()
            .take(NAMES_SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join(",");
        if compiled.policy_names.len() > NAMES_SHOWN {
            names.push_str(",...");
        }
        let summary = format!(
            "{count} policies [{names}] ({} rules) + {} setid rule(s) from flags/TOML, policy set {}: {rules} kernel rule entries, {prefixes} prefixes, {globs} pattern lists",
            compiled.rule_count(),
            self.setid.rules.len(),
            compiled.content_hash,
        );
        Ok((set, summary))
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let invocation = match parse_args() {
        Ok(i) => i,
        Err(e) => {
            eprintln!("edgearmor: {e}\n\n{USAGE}");
            return ExitCode::from(1);
        }
    };
    match invocation.command {
        Command::Help => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!(
                "edgearmor {} probes-sha256 {}",
                env!("CARGO_PKG_VERSION"),
                loader::probes_sha256()
            );
            ExitCode::SUCCESS
        }
        Command::Run => run(invocation.config, invocation.rules),
        Command::PolicyCheck(paths) => policy_check(&paths),
        Command::Keygen(prefix) => keygen(&prefix),
        Command::Unload => match loader::unload(&invocation.config.pin_dir) {
            Ok(n) => {
                println!(
                    "edgearmor: removed {n} pin(s) from {}: nothing is enforced until the next run",
                    invocation.config.pin_dir.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!(
                    "edgearmor: unload {}: {e}",
                    invocation.config.pin_dir.display()
                );
                ExitCode::from(1)
            }
        },
        Command::BundleCreate {
            key,
            version,
            targets,
            out,
            policies,
        } => bundle_create(&key, version, &targets, &out, &policies),
        Command::BundleVerify {
            public_keys,
            max_bytes,
            bundle,
        } => bundle_verify(&public_keys, max_bytes, &bundle),
        Command::KernelCheck(config) => kernel_check(config.as_deref()),
        Command::SendTestAlerts { count, interval } => {
            send_test_alerts(invocation.config, invocation.rules, count, interval)
        }
    }
}

fn kernel_check(config: Option<&std::path::Path>) -> ExitCode {
    use edgearmor::kernel_check::{check_config, check_live, enforcement_possible, render};
    let lines = match config {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => check_config(&text),
            Err(e) => {
                eprintln!(
                    "edgearmor: cannot read kernel config {}: {e}",
                    path.display()
                );
                return ExitCode::from(1);
            }
        },
        None => check_live(&LiveKernel),
    };
    print!("{}", render(&lines));
    if enforcement_possible(&lines) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

/// `keygen --out PREFIX`, `bundle create ...`, `bundle verify ...`.
fn parse_fleet_command(sub: &str, parser: &mut lexopt::Parser) -> Result<Command, String> {
    use lexopt::prelude::*;
    let action = if sub == "bundle" {
        match parser.next().map_err(|e| e.to_string())? {
            Some(Value(v)) => v.string().map_err(|e| e.to_string())?,
            _ => return Err("expected `bundle create ...` or `bundle verify ...`".into()),
        }
    } else {
        "keygen".to_owned()
    };
    let mut out = None;
    let mut key = None;
    let mut version = None;
    let mut targets = Vec::new();
    let mut public_keys = Vec::new();
    let mut max_bytes = edgearmor::config::FleetConfig::default().bundle_max_bytes;
    let mut files = Vec::new();
    enum Arg {
        Long(String),
        Value(std::ffi::OsString),
    }
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        let arg = match arg {
            Long(name) => Arg::Long(name.to_owned()),
            Value(v) => Arg::Value(v),
            other => return Err(other.unexpected().to_string()),
        };
        let mut value = |name: &str| -> Result<String, String> {
            parser
                .value()
                .map_err(|e| e.to_string())?
                .string()
                .map_err(|e| format!("--{name}: {e}"))
        };
        match arg {
            Arg::Long(name) if name == "out" => out = Some(PathBuf::from(value("out")?)),
            Arg::Long(name) if name == "key" => key = Some(PathBuf::from(value("key")?)),
            Arg::Long(name) if name == "public-key" => {
                public_keys.push(PathBuf::from(value("public-key")?))
            }
            Arg::Long(name) if name == "version" => {
                let v = value("version")?;
                version = Some(
                    v.parse::<u64>()
                        .map_err(|_| format!("--version: `{v}` is not a number"))?,
                );
            }
            Arg::Long(name) if name == "max-bytes" => {
                let v = value("max-bytes")?;
                max_bytes = v
                    .parse()
                    .map_err(|_| format!("--max-bytes: `{v}` is not a number"))?;
            }
            Arg::Long(name) if name == "targets" => targets.extend(
                value("targets")?
                    .split(',')
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned),
            ),
            Arg::Value(v) => files.push(PathBuf::from(v)),
            Arg::Long(name) => return Err(format!("unknown option --{name}")),
        }
    }
    match action.as_str() {
        "keygen" => Ok(Command::Keygen(out.ok_or("keygen: give --out PREFIX")?)),
        "create" => Ok(Command::BundleCreate {
            key: key.ok_or("bundle create: give --key SECRET_KEY_FILE")?,
            version: version.ok_or("bundle create: give --version N")?,
            targets,
            out: out.ok_or("bundle create: give --out FILE")?,
            policies: if files.is_empty() {
                return Err("bundle create: give at least one policy file".into());
            } else {
                files
            },
        }),
        "verify" => Ok(Command::BundleVerify {
            public_keys: if public_keys.is_empty() {
                return Err("bundle verify: give --public-key FILE".into());
            } else {
                public_keys
            },
            max_bytes,
            bundle: match files.as_slice() {
                [one] => one.clone(),
                _ => return Err("bundle verify: give exactly one bundle file".into()),
            },
        }),
        other => Err(format!(
            "unknown bundle command `{other}` (create or verify)"
        )),
    }
}

fn keygen(prefix: &std::path::Path) -> ExitCode {
    let (secret, public) = match edgearmor_bundle::generate_keypair() {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("edgearmor: keygen: {e}");
            return ExitCode::from(1);
        }
    };
    let secret_path = prefix.with_extension("key");
    let public_path = prefix.with_extension("pub");
    let write_secret = || -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&secret_path)?;
        writeln!(f, "{}", secret.as_str())
    };
    if let Err(e) = write_secret() {
        eprintln!("edgearmor: keygen: {}: {e}", secret_path.display());
        return ExitCode::from(1);
    }
    if let Err(e) = std::fs::write(&public_path, format!("{}\n", public.as_str())) {
        eprintln!("edgearmor: keygen: {}: {e}", public_path.display());
        return ExitCode::from(1);
    }
    println!(
        "secret key {} (keep it off the gateways), public key {}",
        secret_path.display(),
        public_path.display()
    );
    ExitCode::SUCCESS
}

fn bundle_create(
    key: &std::path::Path,
    version: u64,
    targets: &[String],
    out: &std::path::Path,
    policies: &[PathBuf],
) -> ExitCode {
    let fail = |msg: String| {
        eprintln!("edgearmor: bundle create: {msg}");
        ExitCode::from(1)
    };
    let key = match std::fs::read_to_string(key)
        .map_err(|e| format!("{}: {e}", key.display()))
        .and_then(|t| {
            edgearmor_bundle::parse_secret_key(&t).map_err(|e| format!("{}: {e}", key.display()))
        }) {
        Ok(k) => k,
        Err(e) => return fail(e),
    };
    // Every file must pass `policy check`: agents refuse a bundle with a bad file.
    let diagnostics = edgearmor_policy::check_policy_paths(policies);
    if !diagnostics.is_empty() {
        for d in &diagnostics {
            println!("{d}");
        }
        return fail(format!("{} problem(s) in the policies", diagnostics.len()));
    }
    let mut files = Vec::new();
    for path in policies {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Err(e) = edgearmor_bundle::check_file_name(&name) {
            return fail(format!("{}: {e}", path.display()));
        }
        match std::fs::read(path) {
            Ok(bytes) => files.push((name, bytes)),
            Err(e) => return fail(format!("{}: {e}", path.display())),
        }
    }
    let bytes = edgearmor_bundle::create(&key, version, targets, &files, unix_micros() / 1_000_000);
    if let Err(e) = std::fs::write(out, &bytes) {
        return fail(format!("{}: {e}", out.display()));
    }
    println!(
        "bundle {} version {version}, {} file(s), {} bytes",
        out.display(),
        files.len(),
        bytes.len()
    );
    ExitCode::SUCCESS
}

fn bundle_verify(public_keys: &[PathBuf], max_bytes: usize, bundle: &std::path::Path) -> ExitCode {
    let fail = |msg: String| {
        eprintln!("edgearmor: bundle verify: {msg}");
        ExitCode::from(1)
    };
    let mut keys = Vec::new();
    for path in public_keys {
        match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| edgearmor_bundle::parse_public_key(&t).map_err(|e| e.to_string()))
        {
            Ok(k) => keys.push(k),
            Err(e) => return fail(format!("{}: {e}", path.display())),
        }
    }
    let bytes = match std::fs::read(bundle) {
        Ok(b) => b,
        Err(e) => return fail(format!("{}: {e}", bundle.display())),
    };
    match edgearmor_bundle::verify(&bytes, &keys, max_bytes) {
        Ok(b) => {
            println!(
                "ok: version {} targets [{}] sha256 {}",
                b.version(),
                b.targets().join(","),
                b.sha256_hex()
            );
            for f in b.files() {
                println!("  {} ({} bytes)", f.name, f.contents.len());
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("{}: {e}", bundle.display())),
    }
}

fn policy_check(paths: &[PathBuf]) -> ExitCode {
    let diagnostics = edgearmor_policy::check_policy_paths(paths);
    for d in &diagnostics {
        println!("{d}");
    }
    if diagnostics.is_empty() {
        eprintln!("edgearmor: policies OK");
        ExitCode::SUCCESS
    } else {
        eprintln!("edgearmor: {} problem(s)", diagnostics.len());
        ExitCode::from(1)
    }
}

/// `HostName` and the node topic level: `node` from the configuration, else `uname -n`.
fn node_name(config: &AgentConfig, host: &dyn HostKernel) -> String {
    if config.node.is_empty() {
        host.node_name()
    } else {
        config.node.clone()
    }
}

/// Identity, policy table, status and outputs shared by `run` and `send-test-alerts`.
struct Session {
    agent: AgentId,
    policies: PolicySet,
    outputs: Outputs,
    ledger: edgearmor::pipeline::SharedLedger,
}

fn start_session(
    config: &AgentConfig,
    policies: PolicySet,
    host: &dyn HostKernel,
    enforcement: Result<(), String>,
) -> Result<Session, String> {
    let node = node_name(config, host);
    let key = host
        .random_key()
        .map_err(|e| format!("cannot read random bytes: {e}"))?;
    let mut boot_id = [0u8; 16];
    boot_id[..8].copy_from_slice(&key[0].to_le_bytes());
    boot_id[8..].copy_from_slice(&key[1].to_le_bytes());
    let bounded = |s: &str, what: &str| {
        heapless::String::try_from(s).map_err(|_| format!("{what} `{s}` is longer than 64 bytes"))
    };
    let agent = AgentId {
        cluster: bounded(&config.cluster, "cluster")?,
        node: bounded(&node, "node name")?,
        boot_id,
    };
    let status = AgentStatus {
        agent_version: env!("CARGO_PKG_VERSION").into(),
        boot_id,
        kernel: host.release(),
        enforcement,
        policy_set: policies.hash,
        unix_secs: unix_micros() / 1_000_000,
    };
    let ledger = daemon::ledger();
    let outputs =
        Outputs::build(config, &agent, &policies, &status, &ledger).map_err(|e| e.to_string())?;
    Ok(Session {
        agent,
        policies,
        outputs,
        ledger,
    })
}

fn stop_signals() -> Result<async_signal::Signals, String> {
    async_signal::Signals::new([async_signal::Signal::Term, async_signal::Signal::Int])
        .map_err(|e| format!("cannot install signal handlers: {e}"))
}

fn reload_signals() -> Result<async_signal::Signals, String> {
    async_signal::Signals::new([async_signal::Signal::Hup])
        .map_err(|e| format!("cannot install the SIGHUP handler: {e}"))
}

/// Where kernel events come from: the enforcing probes, or the exec watcher of
/// monitor-only mode.
enum KernelSource<'h> {
    Enforcing(RingbufReader),
    Monitoring(ExecWatcher<'h>),
}

impl KernelSource<'_> {
    async fn readable(&self) -> std::io::Result<()> {
        match self {
            KernelSource::Enforcing(r) => r.readable().await,
            KernelSource::Monitoring(w) => w.readable().await,
        }
    }

    fn drain(&mut self, queue: &AgentQueue, ledger: &edgearmor::pipeline::LossLedger) {
        match self {
            KernelSource::Enforcing(r) => {
                r.drain(queue, ledger);
            }
            KernelSource::Monitoring(w) => {
                w.drain(queue, ledger);
            }
        }
    }

    fn malformed(&self) -> u64 {
        match self {
            KernelSource::Enforcing(r) => r.malformed,
            KernelSource::Monitoring(w) => w.malformed,
        }
    }
}

/// Monitor-only mode: what the kernel can still do without BPF-LSM.
fn start_monitor<'h>(
    host: &'h LiveKernel,
    rules: &SetidRuleSet,
    catalog: &mut PolicyCatalog,
) -> Result<ExecWatcher<'h>, String> {
    let blob = host
        .read(std::path::Path::new(edgearmor::host::KERNEL_BTF))
        .map_err(|e| format!("no kernel BTF ({e})"))?;
    let btf = edgearmor::btf::KernelBtf::parse(&blob).map_err(|e| e.to_string())?;
    let probes = loader::load_monitor(host, &btf).map_err(|e| e.to_string())?;
    let watched = rules
        .rules
        .iter()
        .filter_map(|r| {
            let executable = r.executable.as_ref()?;
            let id = catalog.intern(r.policy_meta());
            Some((loader::kernel_path(host, executable), id))
        })
        .collect();
    ExecWatcher::new(probes, host, watched)
        .map_err(|e| format!("cannot watch the exec ring buffer: {e}"))
}

fn run(config: AgentConfig, rules: SetidRuleSet) -> ExitCode {
    let host = LiveKernel;
    // Signals first, so a stop request during the (slow, under emulation) load is kept.
    let (mut signals, mut hangups) = match stop_signals().and_then(|s| Ok((s, reload_signals()?))) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("edgearmor: {e}");
            return ExitCode::from(1);
        }
    };
    // Pinned state outlives the agent; an earlier agent's is adopted (same key).
    let pin_dir = pin_dir(&config, &host);
    let adopted_key = pin_dir.as_deref().and_then(loader::pinned_key);
    let key = match adopted_key.map(Ok).unwrap_or_else(|| host.random_key()) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("edgearmor: cannot read random bytes: {e}");
            return ExitCode::from(1);
        }
    };
    let node = node_name(&config, &host);
    let mut fleet = if config.fleet.public_keys.is_empty() {
        None
    } else {
        let settings = FleetSettings::load(
            &config.fleet.public_keys,
            config.fleet.bundle_max_bytes,
            config.fleet.state_dir.clone(),
        )
        .and_then(|s| FleetPolicy::new(s, &config.cluster, &node));
        match settings {
            Ok(f) => {
                // The bundle directory is a policy source even when empty, so the
                // first bundle is noticed like any new policy file.
                if let Err(e) = std::fs::create_dir_all(f.policy_dir()) {
                    eprintln!("edgearmor: {}: {e}", f.policy_dir().display());
                    return ExitCode::from(1);
                }
                Some(f)
            }
            Err(e) => {
                eprintln!("edgearmor: {e}");
                return ExitCode::from(1);
            }
        }
    };
    let mut state = PolicyState::new(
        &config,
        node.clone(),
        rules,
        key,
        fleet.as_ref().map(|f| f.policy_dir()),
    );
    if let Some(version) = fleet.as_ref().and_then(|f| f.applied_version()) {
        log::info!("fleet bundle version {version} in force");
    }
    let (kernel_set, summary) = match state.build(&host) {
        Ok(built) => built,
        Err(e) => {
            eprintln!("edgearmor: {e}");
            return ExitCode::from(1);
        }
    };
    log::info!("{summary}");
    let enforcing = readiness::check_kernel(&host)
        .and_then(|btf| loader::load(&host, &btf, key, kernel_set, pin_dir.as_deref()));
    let mut policy_maps = None;
    let (mut source, enforcement, ready) = match enforcing {
        Ok(probes) => {
            let seeded = probes.seeded_processes;
            for missing in &probes.degraded {
                log::warn!("degraded: {missing}");
            }
            let mut degraded = if probes.degraded.is_empty() {
                String::new()
            } else {
                format!(", degraded: {}", probes.degraded.join("; "))
            };
            match (&pin_dir, probes.adopted) {
                (Some(dir), true) => degraded.push_str(&format!(
                    ", adopted the enforcement pinned in {}",
                    dir.display()
                )),
                (Some(dir), false) => degraded.push_str(&format!(", pinned in {}", dir.display())),
                (None, _) => degraded.push_str(", not pinned: enforcement stops with the agent"),
            }
            match RingbufReader::new(probes, host.boottime_to_unix_offset_ns()) {
                Ok((reader, maps)) => {
                    policy_maps = Some(maps);
                    (
                        KernelSource::Enforcing(reader),
                        Ok(()),
                        format!(
                            "enforcing on kernel {} (probes sha256 {}, {} running processes identified{degraded}",
                            host.release(),
                            loader::probes_sha256(),
                            seeded
                        ),
                    )
                }
                Err(e) => {
                    eprintln!("edgearmor: cannot watch the event ring buffer: {e}");
                    return ExitCode::from(1);
                }
            }
        }
        Err(e) if config.enforcement == Enforcement::Required => {
            eprintln!("edgearmor: cannot enforce here: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            let reason = e.to_string();
            log::warn!("cannot enforce here: {reason}; falling back to monitor-only mode");
            match start_monitor(&host, &state.setid, &mut state.catalog) {
                Ok(w) => (
                    KernelSource::Monitoring(w),
                    Err(reason.clone()),
                    format!(
                        "monitor-only: enforcement unavailable ({reason}); watching execs of {} executable(s) on kernel {} (probes sha256 {}",
                        state.setid.rules.len(),
                        host.release(),
                        loader::probes_sha256()
                    ),
                ),
                Err(monitor) => {
                    eprintln!(
                        "edgearmor: cannot enforce here: {reason}; monitor-only mode failed too: {monitor}"
                    );
                    return ExitCode::from(2);
                }
            }
        }
    };
    let Session {
        agent,
        policies,
        mut outputs,
        ledger,
    } = match start_session(&config, state.catalog.snapshot(), &host, enforcement) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("edgearmor: {e}");
            return ExitCode::from(1);
        }
    };
    eprintln!(
        "edgearmor: ready: {ready}, policy set {:016x})",
        policies.hash
    );
    let queue = AgentQueue::default();
    let mut batcher = Batcher::new(agent, policies.hash, daemon::batch_policy(&config));
    let batch_policy_set = batcher.policy_set_handle();
    let updates = outputs.policy_updates();
    let inbox = outputs.mqtt.as_ref().map(|m| m.inbox());
    let reported_topic = outputs.bundle_reported_topic.clone();
    let retained = outputs.mqtt.as_ref().map(|m| m.retained_handle());
    let poll = (config.policy_poll_ms > 0 && state.source.is_some())
        .then(|| Duration::from_millis(config.policy_poll_ms));
    let read_kernel = async {
        // Checked in this order so a busy ring buffer can starve neither a stop
        // request nor a reload nor the policy poll.
        let mut next_poll = poll.map(|every| std::time::Instant::now() + every);
        loop {
            let wake = async {
                signals.next().await;
                Ok(Wake::Stop)
            }
            .or(async {
                hangups.next().await;
                Ok(Wake::Reload)
            })
            .or(async {
                match next_poll {
                    Some(at) => async_io::Timer::at(at).await,
                    None => std::future::pending().await,
                };
                Ok(Wake::Poll)
            })
            .or(async {
                match &inbox {
                    Some(inbox) => match inbox.recv().await {
                        Ok(message) => Ok(Wake::Bundle(message)),
                        Err(_) => std::future::pending().await,
                    },
                    None => std::future::pending().await,
                }
            })
            .or(async { source.readable().await.map(|()| Wake::Kernel) })
            .await;
            source.drain(&queue, &ledger);
            match wake {
                Ok(Wake::Kernel) | Ok(Wake::Poll) => {}
                Ok(Wake::Stop) => break,
                Ok(Wake::Reload) => {
                    log::info!("SIGHUP: reloading policies");
                    let applied = reload(
                        &host,
                        &mut state,
                        policy_maps.as_mut(),
                        &updates,
                        &batch_policy_set,
                    );
                    if let Err(e) = applied {
                        log::error!("{e}");
                    }
                }
                Ok(Wake::Bundle(message)) => {
                    let Some(fleet) = fleet.as_mut() else {
                        continue;
                    };
                    let report = apply_bundle(fleet, &message, &config, &node, || {
                        reload(
                            &host,
                            &mut state,
                            policy_maps.as_mut(),
                            &updates,
                            &batch_policy_set,
                        )
                    });
                    if let Some(report) = report {
                        eprintln!(
                            "edgearmor: bundle v{} from the {} topic {}{}",
                            report.version,
                            report.scope.as_str(),
                            if report.applied {
                                "applied"
                            } else {
                                "rejected: "
                            },
                            report.reason
                        );
                        if let (Some(publisher), Some(topic)) = (&retained, &reported_topic) {
                            let json = report.to_json(unix_micros() / 1_000_000);
                            publisher.publish(topic.clone(), json.into_bytes());
                        }
                    }
                }
                Err(e) => {
                    log::error!("ring buffer wait failed: {e}");
                    break;
                }
            }
            if let (Some(at), Some(every)) = (next_poll, poll)
                && std::time::Instant::now() >= at
            {
                next_poll = Some(std::time::Instant::now() + every);
                if state.source.as_mut().is_some_and(|s| s.changed()) {
                    log::info!("policy files changed: reloading");
                    let applied = reload(
                        &host,
                        &mut state,
                        policy_maps.as_mut(),
                        &updates,
                        &batch_policy_set,
                    );
                    if let Err(e) = applied {
                        log::error!("{e}");
                    }
                }
            }
        }
    };
    async_io::block_on(daemon::run_pipeline(
        &queue,
        &ledger,
        &mut batcher,
        &mut outputs,
        read_kernel,
    ));
    outputs.shutdown();
    eprintln!(
        "edgearmor: stopped ({} malformed kernel events skipped)",
        source.malformed()
    );
    ExitCode::SUCCESS
}

/// The pin directory, if pinning is configured and possible here (logged if not).
fn pin_dir(config: &AgentConfig, host: &LiveKernel) -> Option<std::path::PathBuf> {
    if config.pin_dir.as_os_str().is_empty() {
        return None;
    }
    let parent = config.pin_dir.parent().unwrap_or(std::path::Path::new("/"));
    if !host.is_bpffs(parent) && !host.is_bpffs(&config.pin_dir) {
        log::warn!(
            "pin_dir {}: not on a mounted bpffs (mount -t bpf bpf {}): enforcement will stop with the agent",
            config.pin_dir.display(),
            parent.display()
        );
        return None;
    }
    if let Err(e) = std::fs::create_dir_all(&config.pin_dir) {
        log::warn!(
            "pin_dir {}: {e}: enforcement will stop with the agent",
            config.pin_dir.display()
        );
        return None;
    }
    Some(config.pin_dir.clone())
}

enum Wake {
    Kernel,
    Stop,
    Reload,
    Poll,
    Bundle(edgearmor::mqtt::Inbound),
}

/// Checks an offered bundle and, when it passes, applies it with `reload`; returns
/// what to report (nothing for the bundle in force offered again).
fn apply_bundle(
    fleet: &mut FleetPolicy,
    message: &edgearmor::mqtt::Inbound,
    config: &AgentConfig,
    node: &str,
    reload: impl FnOnce() -> Result<(), String>,
) -> Option<BundleReport> {
    let node_topic = format!(
        "{}/{}/{node}/policy",
        config.mqtt.topic_prefix, config.cluster
    );
    let scope = if message.topic == node_topic {
        BundleScope::Node
    } else {
        BundleScope::Fleet
    };
    let staged = match fleet.offer(scope, &message.payload) {
        Ok(None) => return None,
        Ok(Some(staged)) => staged,
        Err(report) => return Some(report),
    };
    let rejected = |reason: String| BundleReport {
        scope,
        version: staged.bundle.version(),
        sha256: staged.bundle.sha256_hex().to_owned(),
        applied: false,
        reason,
    };
    if let Err(e) = fleet.unpack(&staged) {
        let report = rejected(format!("unpacking: {e}"));
        if let Err(e) = fleet.restore() {
            log::error!("fleet: cannot restore the bundle in force: {e}");
        }
        return Some(report);
    }
    if let Err(e) = reload() {
        let report = rejected(e);
        if let Err(e) = fleet.restore() {
            log::error!("fleet: cannot restore the bundle in force: {e}");
        }
        return Some(report);
    }
    match fleet.commit(staged) {
        Ok(report) => Some(report),
        Err(e) => {
            // Enforced but not recorded: the next start re-applies what is on disk.
            log::error!("fleet: bundle applied but its version could not be recorded: {e}");
            None
        }
    }
}

/// Re-reads the policies and swaps them in atomically; on any failure the set in
/// force stays, and the log says why.
fn reload(
    host: &LiveKernel,
    state: &mut PolicyState,
    maps: Option<&mut PolicyMaps>,
    updates: &daemon::PolicyUpdates,
    batch_policy_set: &std::sync::atomic::AtomicU64,
) -> Result<(), String> {
    let Some(maps) = maps else {
        return Err("monitor-only mode: policies cannot be reloaded here".into());
    };
    let (set, summary) = state
        .build(host)
        .map_err(|e| format!("reload failed, the previous policy set stays enforced: {e}"))?;
    maps.apply(set).map_err(|e| format!("reload failed: {e}"))?;
    let table = state.catalog.snapshot();
    let hash = table.hash;
    updates.publish(table);
    batch_policy_set.store(hash, std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "edgearmor: policies applied: {summary} (generation {}, policy table {hash:016x})",
        maps.generation()
    );
    Ok(())
}

/// A synthetic alert: audit, clearly named, about this agent's own process.
fn test_alert(n: u64) -> Event {
    let me = std::env::current_exe()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    Event {
        time_us: unix_micros(),
        body: EventBody::Alert(Alert {
            pid: std::process::id(),
            ppid: 0,
            uid: 0,
            process: edgearmor::alerts::bounded(&me),
            parent_process: heapless::String::new(),
            source: Source::Process,
            policy: PolicyRef::Id(0),
            operation: Operation::Syscall,
            resource: edgearmor::alerts::bounded(&format!("test alert {n}")),
            data: Data::SetId {
                syscall: SetIdSyscall::Setgid,
                id: n as u32,
            },
            action: Action::Audit,
            result: Outcome::Passed,
            cwd: Default::default(),
        }),
    }
}

fn send_test_alerts(
    config: AgentConfig,
    _rules: SetidRuleSet,
    count: u64,
    interval: Duration,
) -> ExitCode {
    let host = LiveKernel;
    let mut signals = match stop_signals() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("edgearmor: {e}");
            return ExitCode::from(1);
        }
    };
    // Policy id 0 names the test alerts.
    let mut catalog = PolicyCatalog::default();
    catalog.intern(edgearmor_wire::PolicyMeta {
        name: edgearmor::alerts::bounded("edgearmor-test-alert"),
        severity: 1,
        tags: edgearmor::alerts::bounded("edgearmor,test"),
        message: edgearmor::alerts::bounded("synthetic alert from edgearmor send-test-alerts"),
    });
    let Session {
        agent,
        policies,
        mut outputs,
        ledger,
    } = match start_session(
        &config,
        catalog.snapshot(),
        &host,
        Err("send-test-alerts does not enforce".into()),
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("edgearmor: {e}");
            return ExitCode::from(1);
        }
    };
    eprintln!("edgearmor: ready: sending {count} test alert(s)");
    let queue = AgentQueue::default();
    let mut batcher = Batcher::new(agent, policies.hash, daemon::batch_policy(&config));
    let produce = async {
        for n in 0..count {
            queue.offer(test_alert(n));
            let pause = async {
                async_io::Timer::after(interval).await;
                false
            };
            if pause.or(async { signals.next().await.is_some() }).await {
                break;
            }
        }
    };
    async_io::block_on(daemon::run_pipeline(
        &queue,
        &ledger,
        &mut batcher,
        &mut outputs,
        produce,
    ));
    let produced = batcher.next_seq() - 1;
    eprintln!("edgearmor: produced {produced} event(s), delivering");
    outputs.shutdown();
    eprintln!("edgearmor: done");
    ExitCode::SUCCESS
}
