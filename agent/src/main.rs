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
//! not even monitor-only mode works), 3 when `status` finds nothing enforced or locked
//! mode refuses (`unload` without a valid unlock token); the message names what is
//! missing. `edgearmor help COMMAND` says each command's.
//!
//! This file only dispatches: parsing is [`edgearmor::cli`], each command is a module
//! of [`edgearmor::commands`].

use std::process::ExitCode;

use edgearmor::cli::{self, Command};
use edgearmor::commands::{self, bundle, check, policy, run, status, test_alerts, unload};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let invocation = match cli::parse(std::env::args_os().skip(1)) {
        Ok(i) => i,
        // One line and where to read more, not the whole usage.
        Err(e) => return commands::fail(1, e),
    };
    match invocation.command {
        Command::Help(None) => {
            println!("{}", cli::usage());
            ExitCode::SUCCESS
        }
        Command::Help(Some(name)) => {
            println!("{}", cli::command_help(name).unwrap_or_else(cli::usage));
            ExitCode::SUCCESS
        }
        Command::Status { json } => status::status(&invocation.config, json),
        Command::Version => commands::version(),
        Command::Run => run::run(invocation.config, invocation.rules, &invocation.origin),
        Command::PolicyCheck { paths, host, node } => {
            policy::policy_check(&paths, host, node.as_ref())
        }
        Command::Keygen(prefix) => {
            commands::refuse_when_locked("keygen").unwrap_or_else(|| bundle::keygen(&prefix))
        }
        Command::Unload { token } => unload::unload(
            &invocation.config,
            &invocation.origin.file,
            token.as_deref(),
        ),
        Command::UnlockTokenCreate {
            key,
            node,
            valid_for_secs,
            out,
        } => commands::refuse_when_locked("unlock-token create")
            .unwrap_or_else(|| bundle::unlock_token_create(&key, &node, valid_for_secs, &out)),
        Command::BundleCreate {
            key,
            version,
            scope,
            targets,
            out,
            policies,
        } => commands::refuse_when_locked("bundle create")
            .unwrap_or_else(|| bundle::create(&key, version, scope, &targets, &out, &policies)),
        Command::BundleVerify {
            public_keys,
            max_bytes,
            bundle,
        } => bundle::verify(&public_keys, max_bytes, &bundle),
        Command::KernelCheck(config) => check::kernel_check(config.as_deref()),
        Command::SendTestAlerts { count, interval } => {
            let gate = commands::locked_gate(
                &edgearmor::host::LiveKernel,
                &invocation.config,
                &invocation.origin,
            );
            match gate {
                Ok(()) => test_alerts::send_test_alerts(invocation.config, count, interval),
                Err(why) => commands::fail(1, format_args!("send-test-alerts: {why}")),
            }
        }
    }
}
