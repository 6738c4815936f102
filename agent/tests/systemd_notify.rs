//! The real `edgearmor` binary talking to a real unix datagram socket the way systemd
//! listens on `NOTIFY_SOCKET`: `send-test-alerts` runs the same notifier and the same
//! executor-driven watchdog task as `run`, without a kernel. The test reads what
//! arrives until `STOPPING=1` (no sleeps: every wait is a receive with a deadline).

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn scratch(name: &str) -> PathBuf {
    edgearmor_vm::broker::scratch(Path::new(env!("CARGO_TARGET_TMPDIR")), name)
}

/// Every datagram until `STOPPING=1`, each with when it arrived.
fn receive_until_stopping(socket: &UnixDatagram) -> Vec<(Instant, String)> {
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("a notification within 30 s ({e}); so far {got:?}"));
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        let last = message.starts_with("STOPPING=1");
        got.push((Instant::now(), message));
        if last {
            return got;
        }
    }
}

/// `send-test-alerts` with the notification environment `env`; exits 0.
fn run_agent(env: &[(&str, String)], count: u32) -> std::process::Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_edgearmor"));
    command
        .args(["send-test-alerts", "--config", "/dev/null", "--no-stdout"])
        .args(["--count", &count.to_string(), "--interval-ms", "5"])
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    command.spawn().expect("edgearmor runs")
}

fn pings(got: &[(Instant, String)]) -> Vec<Instant> {
    got.iter()
        .filter(|(_, m)| m == "WATCHDOG=1")
        .map(|(t, _)| *t)
        .collect()
}

#[test]
fn the_agent_notifies_ready_and_feeds_the_watchdog_on_a_path_socket() {
    let dir = scratch("notify-path");
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind");
    // 200 ms deadline: pings every 100 ms while 200 alerts take at least a second.
    let mut agent = run_agent(
        &[
            ("NOTIFY_SOCKET", path.display().to_string()),
            ("WATCHDOG_USEC", "200000".into()),
        ],
        200,
    );
    let got = receive_until_stopping(&socket);
    assert!(agent.wait().expect("exits").success());
    assert_eq!(
        got[0].1, "READY=1\nSTATUS=sending 200 test alert(s)",
        "{got:?}"
    );
    assert_eq!(
        got.last().map(|g| g.1.as_str()),
        Some("STOPPING=1\nSTATUS=stopping")
    );
    let pings = pings(&got);
    assert!(
        pings.len() >= 5,
        "a ping every 100 ms for over a second: {got:?}"
    );
    // Half the deadline apart (never faster; a loaded machine may be slower).
    for pair in pings.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= Duration::from_millis(80), "pings {gap:?} apart");
    }
}

#[test]
fn abstract_sockets_work_and_a_watchdog_for_another_pid_is_not_fed() {
    let name = format!("edgearmor-notify-{}", std::process::id());
    let address = {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract name")
    };
    let socket = UnixDatagram::bind_addr(&address).expect("bind abstract");
    // WATCHDOG_PID names this test process, not the agent: it must not ping.
    let mut agent = run_agent(
        &[
            ("NOTIFY_SOCKET", format!("@{name}")),
            ("WATCHDOG_USEC", "100000".into()),
            ("WATCHDOG_PID", std::process::id().to_string()),
        ],
        50,
    );
    let got = receive_until_stopping(&socket);
    assert!(agent.wait().expect("exits").success());
    assert!(got[0].1.starts_with("READY=1\n"), "{got:?}");
    assert_eq!(pings(&got), Vec::<Instant>::new(), "{got:?}");
    assert_eq!(got.len(), 2, "READY and STOPPING only: {got:?}");
}

#[test]
fn a_socket_nobody_listens_on_is_reported_and_the_agent_still_runs() {
    let dir = scratch("notify-gone");
    let output = Command::new(env!("CARGO_BIN_EXE_edgearmor"))
        .args(["send-test-alerts", "--config", "/dev/null", "--no-stdout"])
        .args(["--count", "20", "--interval-ms", "5"])
        .env("NOTIFY_SOCKET", dir.join("nobody.sock"))
        .env("WATCHDOG_USEC", "100000")
        .env_remove("WATCHDOG_PID")
        .output()
        .expect("edgearmor runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // Said once, not at every ping.
    assert_eq!(
        stderr.matches("cannot notify systemd").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("edgearmor: done"), "{stderr}");
}
