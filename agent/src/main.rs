//! `edgearmor`: a host-security agent for Linux edge gateways.
//!
//! `edgearmor run` checks that the kernel can enforce, loads the BPF-LSM probes with
//! the configured rules, and prints one KubeArmor JSON alert per kernel decision on
//! stdout. Diagnostics go to stderr (`RUST_LOG` sets the level).
//!
//! Exit codes: 0 after a clean stop (SIGTERM/SIGINT), 1 for usage or rule errors,
//! 2 when this kernel cannot enforce (the message names what is missing).

mod alerts;
mod btf;
mod events;
mod host;
mod loader;
mod reader;
mod readiness;
mod rules;
mod sink;

use std::path::PathBuf;
use std::process::ExitCode;

use crate::alerts::AlertBuilder;
use crate::host::{HostKernel, LiveKernel};
use crate::reader::RingbufReader;
use crate::rules::SetidRuleSet;
use crate::sink::JsonLinesSink;

const USAGE: &str = "\
usage: edgearmor run [--rules FILE] [--deny-setgid PATH]... [--deny-setuid PATH]...
                     [--cluster NAME] [--host-name NAME]
       edgearmor version

  run         enforce the rules and print KubeArmor JSON alerts on stdout
  --rules     TOML file of [[setid]] rules (executable, deny, policy, severity, tags, message)
  --deny-setgid / --deny-setuid PATH
              deny that executable changing its gid / uid (repeatable)
  --cluster   ClusterName in alerts (default: default)
  --host-name HostName in alerts (default: this machine's node name)
  version     print the agent version and the SHA-256 of its embedded BPF object";

struct RunOptions {
    rules: SetidRuleSet,
    cluster: String,
    host_name: Option<String>,
}

enum Command {
    Run(RunOptions),
    Version,
    Help,
}

fn parse_args() -> Result<Command, String> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    let sub = match parser.next().map_err(|e| e.to_string())? {
        Some(Value(v)) => v.string().map_err(|e| e.to_string())?,
        Some(Long("help")) | Some(Short('h')) | None => return Ok(Command::Help),
        Some(other) => return Err(other.unexpected().to_string()),
    };
    match sub.as_str() {
        "version" => return Ok(Command::Version),
        "help" => return Ok(Command::Help),
        "run" => {}
        other => return Err(format!("unknown command `{other}`")),
    }
    let mut opts = RunOptions {
        rules: SetidRuleSet::default(),
        cluster: "default".into(),
        host_name: None,
    };
    let mut rule_files: Vec<PathBuf> = Vec::new();
    let mut flag_rules: Vec<(&'static str, &'static str, String)> = Vec::new();
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        let value = |p: &mut lexopt::Parser| -> Result<String, String> {
            p.value()
                .map_err(|e| e.to_string())?
                .string()
                .map_err(|e| e.to_string())
        };
        match arg {
            Long("rules") => rule_files.push(value(&mut parser)?.into()),
            Long("deny-setgid") => flag_rules.push(("deny-setgid", "setgid", value(&mut parser)?)),
            Long("deny-setuid") => flag_rules.push(("deny-setuid", "setuid", value(&mut parser)?)),
            Long("cluster") => opts.cluster = value(&mut parser)?,
            Long("host-name") => opts.host_name = Some(value(&mut parser)?),
            Long("help") | Short('h') => return Ok(Command::Help),
            other => return Err(other.unexpected().to_string()),
        }
    }
    for file in &rule_files {
        opts.rules.add_file(file).map_err(|e| e.to_string())?;
    }
    for (flag, op, path) in &flag_rules {
        opts.rules
            .add_flag(flag, op, path)
            .map_err(|e| e.to_string())?;
    }
    if opts.rules.is_empty() {
        return Err("no rules: give --rules FILE or --deny-setgid/--deny-setuid PATH".into());
    }
    Ok(Command::Run(opts))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match parse_args() {
        Ok(Command::Help) => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Command::Version) => {
            println!(
                "edgearmor {} probes-sha256 {}",
                env!("CARGO_PKG_VERSION"),
                loader::probes_sha256()
            );
            ExitCode::SUCCESS
        }
        Ok(Command::Run(opts)) => run(opts),
        Err(e) => {
            eprintln!("edgearmor: {e}\n\n{USAGE}");
            ExitCode::from(1)
        }
    }
}

fn run(opts: RunOptions) -> ExitCode {
    let host = LiveKernel;
    // Signals first, so a stop request during the (slow, under emulation) load is kept.
    let mut signals =
        match async_signal::Signals::new([async_signal::Signal::Term, async_signal::Signal::Int]) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("edgearmor: cannot install signal handlers: {e}");
                return ExitCode::from(1);
            }
        };
    let probes = match readiness::check_kernel(&host)
        .and_then(|btf| loader::load(&host, &btf, &opts.rules))
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("edgearmor: cannot enforce here: {e}");
            return ExitCode::from(2);
        }
    };
    let builder = AlertBuilder {
        cluster_name: opts.cluster,
        host_name: opts.host_name.unwrap_or_else(|| host.node_name()),
        boottime_to_unix_ns: host.boottime_to_unix_offset_ns(),
    };
    let seeded = probes.seeded_processes;
    let mut reader = match RingbufReader::new(probes) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("edgearmor: cannot watch the event ring buffer: {e}");
            return ExitCode::from(1);
        }
    };
    eprintln!(
        "edgearmor: ready: enforcing {} setid rule(s) on kernel {} (probes sha256 {}, {} running processes identified)",
        opts.rules.rules.len(),
        host.release(),
        loader::probes_sha256(),
        seeded
    );
    let mut sink = JsonLinesSink::new(std::io::stdout().lock());
    match async_io::block_on(reader.run(&opts.rules, &builder, &mut sink, &mut signals)) {
        Ok(()) => {
            eprintln!(
                "edgearmor: stopped ({} malformed kernel events skipped)",
                reader.malformed
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("edgearmor: writing alerts failed: {e}");
            ExitCode::from(1)
        }
    }
}
