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
//! not even monitor-only mode works); the message names what is missing; 3 when locked
//! mode refuses (`unload` without a valid unlock token).
//!
//! This file only dispatches: parsing is [`edgearmor::cli`], each command is a module
//! of [`edgearmor::commands`].

use std::process::ExitCode;

use edgearmor::cli::{self, Command, USAGE};
use edgearmor::commands::{self, bundle, check, policy, run, test_alerts, unload};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let invocation = match cli::parse(std::env::args_os().skip(1)) {
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
