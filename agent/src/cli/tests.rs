//! The command line: commands, overrides, and mistakes named.

use super::*;

fn parse_ok(args: &[&str]) -> Invocation {
    match parse(args.iter().copied()) {
        Ok(i) => i,
        Err(e) => panic!("{args:?}: {e}"),
    }
}

fn parse_err(args: &[&str]) -> String {
    match parse(args.iter().copied()) {
        Ok(i) => panic!("{args:?} parsed as {:?}", i.command),
        Err(e) => e.to_string(),
    }
}

#[test]
fn no_arguments_is_help() {
    assert_eq!(parse_ok(&[]).command, Command::Help(None));
    assert_eq!(parse_ok(&["--help"]).command, Command::Help(None));
    assert_eq!(parse_ok(&["-h"]).command, Command::Help(None));
    assert_eq!(parse_ok(&["help"]).command, Command::Help(None));
}

#[test]
fn every_command_has_help_both_ways_and_a_line_in_the_usage() {
    let usage = usage();
    for (name, _, _, _) in help::COMMANDS {
        let help = command_help(name).expect("help");
        assert!(
            help.starts_with(&format!("usage: edgearmor {name}")),
            "{help}"
        );
        assert!(
            help.contains("exit status: 0"),
            "{name}: exit codes in its help"
        );
        assert_eq!(parse_ok(&["help", name]).command, Command::Help(Some(name)));
        if *name != "help" {
            // Wherever --help stands, and whatever else (even wrong) the line holds.
            for line in [
                vec![*name, "--help"],
                vec![*name, "-h"],
                vec![*name, "--bogus", "x", "--help"],
            ] {
                assert_eq!(
                    parse_ok(&line).command,
                    Command::Help(Some(name)),
                    "{line:?}"
                );
            }
        }
        assert!(
            usage.contains(&format!("\n  {name:<17} ")),
            "{name} listed:\n{usage}"
        );
        assert!(usage.contains(&format!(
                "edgearmor {}",
                &help["usage: edgearmor ".len()..]
                    .lines()
                    .next()
                    .unwrap_or_default()
            )));
    }
    assert!(usage.contains("exit status: 0 success; 1 usage"), "{usage}");
    assert!(usage.contains("3 nothing is enforced (status)"), "{usage}");
    assert!(parse_err(&["help", "frobnicate"]).contains("unknown command `frobnicate`"));
}

#[test]
fn version_three_ways_and_nothing_after_it() {
    for line in [&["version"][..], &["--version"], &["-V"]] {
        assert_eq!(parse_ok(line).command, Command::Version, "{line:?}");
    }
    assert!(parse_err(&["version", "extra"]).contains("unexpected argument"));
}

#[test]
fn a_mistake_is_one_line_pointing_at_the_help() {
    let unknown = parse(["frobnicate"]).err().expect("refused");
    assert_eq!(
        unknown.to_string(),
        "unknown command `frobnicate` (see `edgearmor --help`)"
    );
    let option = parse(["run", "--bogus", "1"]).err().expect("refused");
    assert_eq!(option.command, Some("run"));
    assert_eq!(
        option.to_string(),
        "unknown option --bogus (see `edgearmor run --help`)"
    );
    let top = parse(["--bogus"]).err().expect("refused");
    assert_eq!(top.to_string().lines().count(), 1, "{top}");
    assert!(
        top.to_string().ends_with("(see `edgearmor --help`)"),
        "{top}"
    );
    let check = parse(["check", "--kernel-confg", "x"])
        .err()
        .expect("refused");
    assert!(
        check
            .to_string()
            .ends_with("(see `edgearmor check --help`)"),
        "{check}"
    );
}

#[test]
fn status_takes_a_config_and_json() {
    assert_eq!(
        parse_ok(&["status", "--config", "/dev/null"]).command,
        Command::Status { json: false }
    );
    assert_eq!(
        parse_ok(&["status", "--config", "/dev/null", "--json"]).command,
        Command::Status { json: true }
    );
    // Only status has --json.
    assert!(parse_err(&["run", "--json", "x"]).starts_with("unknown option --json"));
}

#[test]
fn flags_override_the_configuration() {
    let dir = std::env::temp_dir().join(format!("edgearmor-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        "cluster = \"plant7\"\n[throttle]\nmax_alerts_per_sec = 3\n",
    )
    .expect("write config");
    let config = config.to_string_lossy().into_owned();
    let i = parse_ok(&[
        "run",
        "--config",
        &config,
        "--host-name",
        "gw-12",
        "--max-alerts-per-sec",
        "0",
        "--broker",
        "127.0.0.1:1883",
        "--mqtt-version",
        "5",
        "--no-stdout",
        "--deny-setgid",
        "/bin/busybox",
    ]);
    assert_eq!(i.command, Command::Run);
    assert_eq!(i.config.cluster, "plant7");
    assert_eq!(i.config.node, "gw-12");
    assert_eq!(i.config.throttle.max_alerts_per_sec, 0);
    assert_eq!(i.config.mqtt.broker, "127.0.0.1:1883");
    assert_eq!(
        i.config.mqtt.mqtt_version,
        edgearmor_mqtt::VersionChoice::Fixed(edgearmor_mqtt::MqttVersion::V5)
    );
    assert!(!i.config.output.stdout);
    assert_eq!(i.rules.rules.len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mistakes_name_the_flag() {
    assert!(parse_err(&["frobnicate"]).contains("unknown command `frobnicate`"));
    assert!(parse_err(&["run", "--bogus", "1"]).contains("unknown option --bogus"));
    assert!(
        parse_err(&["send-test-alerts", "--count", "many"])
            .contains("--count: `many` is not a number")
    );
    assert!(parse_err(&["run", "--count", "3"]).contains("--count belongs to send-test-alerts"));
    assert!(
        parse_err(&["run", "--enforcement", "maybe"])
            .contains("`maybe` is neither auto nor required")
    );
    assert!(
        parse_err(&["send-test-alerts", "--mqtt-version", "6"])
            .contains("--mqtt-version: \"6\" is not an MQTT version")
    );
    assert!(parse_err(&["run"]).starts_with("no rules:"));
    for (flag, value) in [("--host-name", "gw/12"), ("--cluster", "plant#7")] {
        let err = parse_err(&["send-test-alerts", flag, value]);
        assert!(
            err.starts_with(&format!("{flag}: {value:?} cannot be an MQTT topic level")),
            "{err}"
        );
    }
    assert!(parse_err(&["policy", "check"]).contains("at least one file"));
    assert!(parse_err(&["policy", "check", "--host"]).contains("at least one file"));
}

#[test]
fn policy_check_takes_host() {
    assert_eq!(
        parse_ok(&["policy", "check", "--host", "p.yaml"]).command,
        Command::PolicyCheck {
            paths: vec![PathBuf::from("p.yaml")],
            host: true,
            node: None,
        }
    );
    assert_eq!(
        parse_ok(&["policy", "check", "p.yaml"]).command,
        Command::PolicyCheck {
            paths: vec![PathBuf::from("p.yaml")],
            host: false,
            node: None,
        }
    );
}

#[test]
fn policy_check_takes_a_node_and_its_labels() {
    let args = [
        "policy",
        "check",
        "--host=gw-7",
        "--label",
        "site=plant-7",
        "--label",
        "role=edge",
        "--config",
        "a.toml",
        "p.yaml",
    ];
    assert_eq!(
        parse_ok(&args).command,
        Command::PolicyCheck {
            paths: vec![PathBuf::from("p.yaml")],
            host: false,
            node: Some(crate::cli::NodeQuery {
                host_name: Some("gw-7".into()),
                labels: vec![
                    ("site".into(), "plant-7".into()),
                    ("role".into(), "edge".into())
                ],
                config: Some("a.toml".into()),
            }),
        }
    );
    let err = parse_err(&["policy", "check", "--label", "site", "p.yaml"]);
    assert!(
        err.contains("--label \"site\": expected key=value"),
        "{err}"
    );
    let err = parse_err(&[
        "policy",
        "check",
        "--label",
        "kubernetes.io/hostname=gw",
        "p.yaml",
    ]);
    assert!(err.contains("use --host=NAME"), "{err}");
    let err = parse_err(&["policy", "check", "--label", "site=a b", "p.yaml"]);
    assert!(err.contains("\"site\"") && err.contains("\"a b\""), "{err}");
}

#[test]
fn send_test_alerts_takes_count_and_interval() {
    let i = parse_ok(&["send-test-alerts", "--count", "5", "--interval-ms", "0"]);
    assert_eq!(
        i.command,
        Command::SendTestAlerts {
            count: 5,
            interval: Duration::ZERO
        }
    );
}

#[test]
fn fleet_commands_take_their_own_options() {
    let i = parse_ok(&[
        "bundle",
        "create",
        "--key",
        "k",
        "--version",
        "7",
        "--targets",
        "gw-*,,a/b",
        "--out",
        "v7.bundle",
        "p1.yaml",
        "p2.yaml",
    ]);
    assert_eq!(
        i.command,
        Command::BundleCreate {
            key: "k".into(),
            version: 7,
            scope: edgearmor_bundle::Scope::Fleet,
            targets: vec!["gw-*".into(), "a/b".into()],
            out: "v7.bundle".into(),
            policies: vec!["p1.yaml".into(), "p2.yaml".into()],
        }
    );
    assert_eq!(
        parse_ok(&["keygen", "--out", "fleet"]).command,
        Command::Keygen("fleet".into())
    );
    assert!(parse_err(&["bundle", "verify", "b"]).contains("give --public-key"));
    assert!(
        parse_err(&["bundle", "verify", "--public-key", "p", "a", "b"])
            .contains("exactly one bundle file")
    );
    assert!(parse_err(&["bundle", "sign"]).contains("unknown bundle command `sign`"));
    let node = parse_ok(&[
        "bundle",
        "create",
        "--key",
        "k",
        "--version",
        "8",
        "--scope",
        "node",
        "--targets",
        "gw-1",
        "--out",
        "b",
        "p.yaml",
    ]);
    assert!(matches!(
        node.command,
        Command::BundleCreate {
            scope: edgearmor_bundle::Scope::Node,
            ..
        }
    ));
    assert!(
        parse_err(&["bundle", "create", "--scope", "site"])
            .contains("--scope: `site` is neither `fleet` nor `node`")
    );
}

#[test]
fn the_origin_names_the_config_file_and_every_flag_over_it() {
    let dir = std::env::temp_dir().join(format!("edgearmor-cli-origin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("agent.toml");
    std::fs::write(&config, "locked = true\npolicies = [\"/etc/p\"]\n").expect("write config");
    let config = config.to_string_lossy().into_owned();
    let plain = parse_ok(&["run", "--config", &config, "--no-stdout"]);
    assert!(plain.config.locked);
    assert_eq!(plain.origin.file, PathBuf::from(&config));
    assert!(
        plain.origin.overrides.is_empty(),
        "--no-stdout changes nothing enforced"
    );
    let flagged = parse_ok(&[
        "run",
        "--config",
        &config,
        "--policies",
        "/tmp/p",
        "--deny-setgid",
        "/usr/bin/x",
        "--broker",
        "h:1",
    ]);
    assert_eq!(
        flagged.origin.overrides,
        vec!["policies".to_owned(), "deny-setgid".into(), "broker".into()]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
