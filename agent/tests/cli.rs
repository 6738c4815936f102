//! The real `edgearmor` binary's command-line habits: `--version`, help for every
//! command both ways, one-line mistakes pointing at the help, documented exit codes, and
//! `check` telling root what refused it instead of "run as root".

use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

fn edgearmor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgearmor"))
        .args(args)
        .output()
        .expect("edgearmor runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn version_three_ways() {
    let expected = format!("edgearmor {} probes-sha256 ", env!("CARGO_PKG_VERSION"));
    for args in [&["--version"][..], &["-V"], &["version"]] {
        let out = edgearmor(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let stdout = text(&out.stdout);
        assert!(stdout.starts_with(&expected), "{args:?}: {stdout}");
        let hash = stdout.trim().rsplit(' ').next().unwrap_or_default();
        assert_eq!(hash.len(), 64, "{stdout}");
    }
}

#[test]
fn every_command_has_its_help_both_ways() {
    let usage = text(&edgearmor(&["--help"]).stdout);
    for command in [
        "run",
        "send-test-alerts",
        "status",
        "check",
        "policy",
        "unload",
        "keygen",
        "bundle",
        "version",
        "help",
    ] {
        let help = edgearmor(&["help", command]);
        assert_eq!(help.status.code(), Some(0), "help {command}");
        let help = text(&help.stdout);
        assert!(
            help.starts_with(&format!("usage: edgearmor {command}")),
            "{help}"
        );
        assert!(help.contains("exit status: 0"), "{command}: {help}");
        if command != "help" {
            let dashed = edgearmor(&[command, "--help"]);
            assert_eq!(dashed.status.code(), Some(0), "{command} --help");
            assert_eq!(text(&dashed.stdout), help, "{command} --help");
        }
        assert!(
            usage.contains(&format!("\n  {command} ")),
            "{command} in\n{usage}"
        );
    }
    // `policy check --help` too: the help of the command's first word.
    let policy = edgearmor(&["policy", "check", "--help"]);
    assert!(text(&policy.stdout).starts_with("usage: edgearmor policy check"));
}

#[test]
fn mistakes_are_one_line_with_a_pointer_and_exit_1() {
    for (args, expected) in [
        (
            &["frobnicate"][..],
            "edgearmor: unknown command `frobnicate` (see `edgearmor --help`)",
        ),
        (
            &["--bogus"],
            "edgearmor: invalid option '--bogus' (see `edgearmor --help`)",
        ),
        (
            &["run", "--bogus", "1"],
            "edgearmor: unknown option --bogus (see `edgearmor run --help`)",
        ),
        (
            &["check", "--kernel-confg", "x"],
            "edgearmor: invalid option '--kernel-confg' (see `edgearmor check --help`)",
        ),
        (
            &["help", "frobnicate"],
            "edgearmor: unknown command `frobnicate` (see `edgearmor --help`)",
        ),
        (
            &["status", "--config", "/dev/null", "--verbose", "x"],
            "edgearmor: unknown option --verbose (see `edgearmor status --help`)",
        ),
    ] {
        let out = edgearmor(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(text(&out.stderr), format!("{expected}\n"), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}: no usage dump");
    }
}

fn scratch(name: &str) -> std::path::PathBuf {
    edgearmor_vm::broker::scratch(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")), name)
}

#[test]
fn status_reads_the_pins_and_the_agents_file() {
    let dir = scratch("status");
    let pins = dir.join("pins");
    let file = dir.join("status.json");
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "pin_dir = {:?}\n[status]\nfile = {:?}\n",
            pins.display().to_string(),
            file.display().to_string()
        ),
    )
    .expect("config");
    let config = config.display().to_string();
    let status = |json: bool| {
        let mut args = vec!["status", "--config", config.as_str()];
        if json {
            args.push("--json");
        }
        edgearmor(&args)
    };
    // Nothing: exit 3.
    let out = status(false);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("enforcement  none\n"), "{stdout}");
    assert!(
        stdout.contains("agent        no agent runs (no "),
        "{stdout}"
    );
    // Pinned links without an agent: enforced all the same (exit 0). These are plain
    // files, not bpffs pins, so the generation cannot be read, and that is said.
    std::fs::create_dir_all(pins.join("links")).expect("links dir");
    for program in ["check_exec", "check_open"] {
        std::fs::write(pins.join("links").join(program), b"").expect("link");
    }
    let out = status(false);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("enforcement  pinned\n"), "{stdout}");
    assert!(stdout.contains("2 program(s) attached from"), "{stdout}");
    assert!(
        stdout.contains("cannot read the pinned generation"),
        "{stdout}"
    );
    // A running agent's report (this test process stands in for its pid).
    let now = edgearmor::events::pipeline::unix_micros() / 1_000_000;
    let report = serde_json::json!({
        "pid": std::process::id(), "time": now, "interval_sec": 60, "mode": "enforcing",
        "detail": "", "classes": ["process"], "policy_set": "00000000000000ab",
        "generation": 2, "pin_dir": pins.display().to_string(), "adopted": false,
        "broker": {"address": "127.0.0.1:1883", "connected": false, "last_error": "connection refused"},
        "counters": {"alerts_sent": 5, "alerts_lost_ring": 0, "uptime_seconds": 7}
    });
    std::fs::write(&file, report.to_string()).expect("status file");
    let out = status(false);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    for expected in [
        "enforcement  enforcing\n",
        &format!(
            "agent        running (pid {}, up 7 s)\n",
            std::process::id()
        ),
        "status       enforcing process; policy set 00000000000000ab generation 2; broker 127.0.0.1:1883 unreachable: connection refused\n",
        "broker       127.0.0.1:1883 unreachable: connection refused\n",
        "  alerts_sent                5\n",
    ] {
        assert!(stdout.contains(expected), "{expected:?} in\n{stdout}");
    }
    let json: serde_json::Value = serde_json::from_slice(&status(true).stdout).expect("json");
    assert_eq!(json["agent"]["counters"]["alerts_sent"], 5);
    assert_eq!(json["pins"]["links"][1], "check_open");
}

/// `check` refused `bpf()`: a non-root process is told to run as root, root is told what
/// refused it. Needs root (to run the other side as `nobody`); on a machine where root
/// may load the probes, the root side checks exit 0 instead.
#[test]
fn check_gives_run_as_root_advice_only_to_non_root() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        let out = edgearmor(&["check"]);
        assert!(
            text(&out.stdout).contains("fix: run as root"),
            "{}",
            text(&out.stdout)
        );
        return;
    }
    let root = edgearmor(&["check"]);
    let stdout = text(&root.stdout);
    if root.status.code() == Some(0) {
        assert!(!stdout.contains("FAIL"), "{stdout}");
    } else {
        assert_eq!(root.status.code(), Some(2), "{stdout}");
        assert!(
            !stdout.contains("run as root"),
            "root told to be root:\n{stdout}"
        );
        assert!(!stdout.contains("run it as root"), "{stdout}");
        if stdout.contains("not permitted") {
            assert!(stdout.contains("this process is root"), "{stdout}");
        }
    }
    let nobody = Command::new(env!("CARGO_BIN_EXE_edgearmor"))
        .arg("check")
        .uid(65534)
        .gid(65534)
        .output()
        .expect("edgearmor runs as nobody");
    let stdout = text(&nobody.stdout);
    assert_eq!(nobody.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains("this process is not root (euid 65534): run it as root"),
        "{stdout}"
    );
}
