//! The binary's command line and offline mode: bad options and unusable files exit 1
//! with a message naming the option, value or path; `--input` decodes a capture file,
//! also a damaged one up to the damage.

mod support;

use std::process::{Command, Output};

use support::{ScratchDir, agent, batch, encode, events_topic};

fn decode(args: &[&str]) -> Output {
    Command::new(support::DECODER)
        .args(args)
        .output()
        .expect("run edgearmor-decode")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn bad_command_lines_exit_1_with_a_precise_message() {
    for (args, message) in [
        (
            &["--frobnicate"][..],
            "edgearmor-decode: invalid option '--frobnicate'\nRun edgearmor-decode --help for the options.\n",
        ),
        (
            &["--broker", "127.0.0.1:http"][..],
            "edgearmor-decode: invalid value \"127.0.0.1:http\" for --broker: the port must be a number from 1 to 65535\n",
        ),
        (
            &["--rotate-keep", "3", "--output", "x"][..],
            "edgearmor-decode: --rotate-keep needs --rotate-bytes\n",
        ),
    ] {
        let output = decode(args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&output).starts_with(message),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(output.stdout.is_empty());
    }
}

#[test]
fn unusable_files_are_named() {
    let dir = ScratchDir::new("cli-files");
    let not_pem = dir.path("not-a-ca.pem");
    support::write_file(&not_pem, "hello\n");
    let not_pem = not_pem.to_str().expect("utf-8");
    for (args, message) in [
        (
            vec!["--ca", "/nonexistent/ca.pem"],
            "edgearmor-decode: /nonexistent/ca.pem: cannot read certificates: ",
        ),
        (
            vec!["--ca", not_pem],
            &*format!("edgearmor-decode: {not_pem}: holds no PEM certificate"),
        ),
        (
            vec!["--output", "/nonexistent/dir/alerts.json"],
            "edgearmor-decode: opening /nonexistent/dir/alerts.json: No such file or directory",
        ),
        (
            vec!["--input", "/nonexistent/capture"],
            "edgearmor-decode: /nonexistent/capture: No such file or directory",
        ),
        (
            vec!["--username", "u", "--password-file", "/nonexistent/pw"],
            "edgearmor-decode: /nonexistent/pw: cannot read the password: ",
        ),
    ] {
        let output = decode(&args);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(message),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn an_unknown_option_or_argument_gets_one_line_and_a_pointer_not_the_usage() {
    for (args, first_line) in [
        (
            &["--frobnicate"][..],
            "edgearmor-decode: invalid option '--frobnicate'",
        ),
        (
            &["frobnicate"][..],
            "edgearmor-decode: unexpected argument \"frobnicate\" (edgearmor-decode takes options only)",
        ),
        (
            &["--syslog-ca", "ca.pem"][..],
            "edgearmor-decode: --syslog-ca needs --syslog",
        ),
        (
            &["--syslog", "127.0.0.1:6514", "--syslog-message", "xml"][..],
            "edgearmor-decode: invalid value \"xml\" for --syslog-message: expected json or cef",
        ),
        (
            &["--syslog", "127.0.0.1:6514", "--syslog-facility", "mail"][..],
            "edgearmor-decode: invalid value \"mail\" for --syslog-facility: expected one of kern, user, daemon, auth, syslog, authpriv, local0, local1, local2, local3, local4, local5, local6, local7",
        ),
        (
            &["--metrics", "localhost:9464"][..],
            "edgearmor-decode: invalid value \"localhost:9464\" for --metrics: expected IP:PORT (e.g. 127.0.0.1:9464, [::]:9464; port 0 picks a free one)",
        ),
        (
            &["--input", "x.cap", "--metrics", "127.0.0.1:0"][..],
            "edgearmor-decode: --input cannot be combined with --metrics",
        ),
    ] {
        let output = decode(args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert_eq!(
            stderr(&output),
            format!("{first_line}\nRun edgearmor-decode --help for the options.\n"),
            "{args:?}"
        );
        assert!(output.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn a_taken_metrics_port_and_unusable_syslog_files_are_errors_before_anything_starts() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("address").to_string();
    let output = decode(&["--metrics", &address]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).starts_with(&format!(
            "edgearmor-decode: --metrics {address}: Address already in use"
        )),
        "{}",
        stderr(&output)
    );
    let output = decode(&[
        "--syslog",
        "127.0.0.1:6514",
        "--syslog-ca",
        "/nonexistent/ca.pem",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output)
            .starts_with("edgearmor-decode: /nonexistent/ca.pem: cannot read certificates: "),
        "{}",
        stderr(&output)
    );
}

#[test]
fn help_and_version() {
    for args in [&["--help"][..], &["-h"], &["help"]] {
        let output = decode(args);
        assert!(output.status.success(), "{args:?}");
        let usage = String::from_utf8_lossy(&output.stdout);
        for expected in [
            "--share-group GROUP",
            "--syslog HOST:PORT",
            "--metrics IP:PORT",
            "--format json|cef",
            "Exit status: 0 when stopped",
        ] {
            assert!(usage.contains(expected), "{args:?}: {expected}");
        }
    }
    let output = decode(&["-V"]);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("edgearmor-decode {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_damaged_capture_is_decoded_up_to_the_damage() {
    let dir = ScratchDir::new("cli-capture");
    let path = dir.path("damaged.cap");
    let gw = agent("default", "gw1", 1);
    let topic = events_topic(&gw);
    let first = encode(&batch(&gw, 0, 1, 2));
    let second = encode(&batch(&gw, 0, 3, 2));
    support::write_capture(&path, &[(&topic, &first), (&topic, &second)]);
    let mut bytes = std::fs::read(&path).expect("capture");
    bytes.truncate(bytes.len() - 5);
    std::fs::write(&path, &bytes).expect("rewrite");
    let output = decode(&["--input", path.to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.lines().count(),
        2,
        "the first record's events: {stdout}"
    );
    let err = stderr(&output);
    assert!(err.contains("record 1 is truncated at byte"), "{err}");
    assert_eq!(support::counter(&err, "lines"), Some(2), "{err}");
}

#[test]
fn the_input_can_come_from_stdin() {
    let dir = ScratchDir::new("cli-stdin");
    let path = dir.path("in.cap");
    let gw = agent("default", "gw1", 1);
    support::write_capture(
        &path,
        &[(&events_topic(&gw), &encode(&batch(&gw, 0, 1, 3)))],
    );
    let output = Command::new(support::DECODER)
        .args(["--input", "-"])
        .stdin(std::fs::File::open(&path).expect("capture"))
        .output()
        .expect("run");
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout).lines().count(), 3);
}
