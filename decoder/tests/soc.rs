//! The SOC side against the real things, on loopback: Debian's `prometheus` scraping the
//! decoder's `--metrics` endpoint (the test asks Prometheus's query API), Debian's
//! `rsyslog` receiving `--syslog` over TCP and TLS (certificates made here) as JSON and
//! CEF messages and writing them to files the test reads, a real mosquitto in between.
//! Nothing sleeps a fixed time: every wait is for a signal (a log line, a file's
//! content, a query result).

mod soc_support;
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use soc_support::{ListenerPem, Prometheus, Rsyslog, SyslogLine, WAIT, http_get, parse_line};
use support::{
    DecoderProcess, Mosquitto, Outgoing, ScratchDir, agent, batch, counter, encode, events_topic,
    field, publish_all, server_pki, status_topic, wait_until,
};

/// The decoder's metrics port, from its stderr line (it was started on port 0).
fn metrics_port(decoder: &DecoderProcess) -> u16 {
    let mut port = None;
    wait_until(Duration::from_secs(20), || {
        port = decoder.stderr().lines().find_map(|l| {
            l.strip_prefix("edgearmor-decode: metrics: serving http://127.0.0.1:")
                .and_then(|rest| rest.strip_suffix("/metrics"))
                .and_then(|p| p.parse().ok())
        });
        port.is_some()
    });
    port.unwrap_or_else(|| panic!("no metrics line; stderr:\n{}", decoder.stderr()))
}

fn birth(counters: &str) -> Vec<u8> {
    format!(
        r#"{{"state":"online","agent_version":"0.1.0","boot_id":"01010101010101010101010101010101","kernel":"6.12.117+deb12-amd64","enforcement":"available","enforcement_detail":"","policy_set":"0000000000000000","time":1795932048,"counters":{{{counters}}}}}"#
    )
    .into_bytes()
}

#[test]
fn prometheus_scrapes_the_agents_and_the_decoders_counters() {
    let broker = Mosquitto::start();
    let gw = agent("default", "gw1", 1);
    let mut decoder = DecoderProcess::spawn(&[
        "--broker",
        &broker.address(),
        "--metrics",
        "127.0.0.1:0",
        "--reorder-window-ms",
        "200",
    ]);
    decoder.wait_ready();
    let port = metrics_port(&decoder);
    // The agent's birth with its counters (retained, as the agent publishes it), 20 events
    // with 11..=20 missing, one garbage payload.
    publish_all(
        broker.port,
        vec![
            Outgoing::retained(
                status_topic(&gw),
                birth(r#""alerts_sent":12,"alerts_lost_ring":3,"ringbuf_used_bytes":4096"#),
            ),
            Outgoing::new(events_topic(&gw), encode(&batch(&gw, 0, 1, 10))),
            Outgoing::new(events_topic(&gw), encode(&batch(&gw, 0, 21, 10))),
            Outgoing::new(events_topic(&gw), b"\x01garbage".to_vec()),
        ],
    );
    let prom_dir = ScratchDir::new("prometheus");
    let prometheus = Prometheus::start(&prom_dir.0, &format!("127.0.0.1:{port}"));
    let context = || format!("decoder stderr:\n{}", decoder.stderr());
    let node = r#"{cluster="default",node="gw1"}"#;
    for (query, value) in [
        (format!("edgearmor_agent_alerts_sent{node}"), 12.0),
        (format!("edgearmor_agent_alerts_lost_ring{node}"), 3.0),
        (format!("edgearmor_agent_ringbuf_used_bytes{node}"), 4096.0),
        (format!("edgearmor_agent_up{node}"), 1.0),
        (
            r#"edgearmor_agent_info{cluster="default",node="gw1",agent_version="0.1.0",kernel="6.12.117+deb12-amd64",enforcement="available"}"#.into(),
            1.0,
        ),
        (
            format!("edgearmor_agent_status_time_seconds{node}"),
            1_795_932_048.0,
        ),
        (format!("edgearmor_decode_agent_alerts_total{node}"), 20.0),
        (format!("edgearmor_decode_agent_gaps_total{node}"), 1.0),
        (
            format!("edgearmor_decode_agent_gap_lost_events_total{node}"),
            10.0,
        ),
        ("edgearmor_decode_alerts_total".into(), 20.0),
        (
            r#"edgearmor_decode_rejected_payloads_total{reason="malformed"}"#.into(),
            1.0,
        ),
        (r#"up{job="edgearmor-decode"}"#.into(), 1.0),
    ] {
        prometheus.wait_for(&query, value, &context);
    }
    // The help texts are the contract's (Prometheus keeps them as metadata).
    let (_, metadata) = http_get(
        prometheus.port,
        "/api/v1/metadata?metric=edgearmor_agent_alerts_sent",
    )
    .expect("metadata");
    assert!(
        metadata.contains("Alerts the agent handed to its outputs"),
        "{metadata}"
    );
    // More alerts: the decode rate Prometheus computes is above zero.
    publish_all(
        broker.port,
        vec![Outgoing::new(
            events_topic(&gw),
            encode(&batch(&gw, 0, 31, 10)),
        )],
    );
    prometheus.wait_for("edgearmor_decode_alerts_total", 30.0, &context);
    let rate = prometheus.query("rate(edgearmor_decode_alerts_total[1m])");
    assert!(rate.len() == 1 && rate[0] > 0.0, "rate: {rate:?}");
    // The last will (the broker publishes it when the agent vanishes): offline, counters kept.
    publish_all(
        broker.port,
        vec![Outgoing::retained(
            status_topic(&gw),
            br#"{"state":"offline","boot_id":"01010101010101010101010101010101","agent_version":"0.1.0"}"#.to_vec(),
        )],
    );
    prometheus.wait_for(&format!("edgearmor_agent_up{node}"), 0.0, &context);
    prometheus.wait_for(
        &format!("edgearmor_agent_alerts_sent{node}"),
        12.0,
        &context,
    );
    let (status, _, stderr) = decoder.terminate();
    assert!(status.success(), "{stderr}");
    assert!(
        counter(&stderr, "metrics_requests").is_some_and(|n| n > 0),
        "{stderr}"
    );
}

/// A raw exchange with the metrics endpoint: what it answers (empty when it closed).
fn raw_exchange(port: u16, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let _ = stream.write_all(request);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

#[test]
fn the_metrics_endpoint_serves_only_get_metrics_and_bounds_its_clients() {
    let broker = Mosquitto::start();
    let mut decoder =
        DecoderProcess::spawn(&["--broker", &broker.address(), "--metrics", "127.0.0.1:0"]);
    decoder.wait_ready();
    let port = metrics_port(&decoder);
    let ok = raw_exchange(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert!(
        ok.contains("Content-Type: text/plain; version=0.0.4")
            && ok.contains("\r\nConnection: close\r\n")
            && ok.contains("# TYPE edgearmor_decode_messages_total counter\n"),
        "{ok}"
    );
    for (request, status) in [
        (
            &b"POST /metrics HTTP/1.1\r\n\r\n"[..],
            "405 Method Not Allowed",
        ),
        (b"GET /admin HTTP/1.1\r\n\r\n", "404 Not Found"),
        (b"\x16\x03\x01 hello\r\n\r\n", "400 Bad Request"),
    ] {
        let answer = raw_exchange(port, request);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{answer}"
        );
    }
    let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    huge.resize(64 * 1024, b'a');
    let answer = raw_exchange(port, &huge);
    assert!(
        answer.starts_with("HTTP/1.1 431") || answer.is_empty(),
        "an over-long head is refused: {answer}"
    );
    // Slowloris: a head that never ends is cut off at the deadline, however it drips.
    let mut slow = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    slow.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let started = Instant::now();
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(30) {
        if slow.write_all(b"X").is_err() {
            closed = true;
            break;
        }
        let mut byte = [0u8; 1];
        match slow.read(&mut byte) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    let lasted = started.elapsed();
    assert!(
        closed && lasted >= Duration::from_secs(4) && lasted < Duration::from_secs(10),
        "a dripping client is closed at the 5 s request deadline (closed: {closed}, after {lasted:?})"
    );
    // Connections over the limit are closed at once; the held ones do not stop scrapes
    // for long (they end at their deadline).
    let held: Vec<TcpStream> = (0..16)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    let refused = wait_until(Duration::from_secs(5), || {
        raw_exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n").is_empty()
    });
    assert!(refused, "a 17th connection is refused");
    let served = wait_until(Duration::from_secs(20), || {
        raw_exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200")
    });
    assert!(
        served,
        "scrapes work again once the held connections time out"
    );
    drop(held);
    let (status, _, stderr) = decoder.terminate();
    assert!(status.success(), "{stderr}");
    assert!(
        counter(&stderr, "metrics_connections_refused").is_some_and(|n| n >= 1),
        "{stderr}"
    );
}

fn pid_of_json(msg: &str) -> Option<i64> {
    serde_json::from_str::<serde_json::Value>(msg).ok()?["PID"].as_i64()
}

#[test]
fn rsyslog_receives_json_over_tcp_and_the_decoder_rides_out_its_restart() {
    let dir = ScratchDir::new("rsyslog-tcp");
    let (ca, cert, key, _) = server_pki("edgearmor test CA");
    for (name, pem) in [("ca.pem", &ca), ("server.pem", &cert), ("server.key", &key)] {
        std::fs::write(dir.path(name), pem).expect("write PEM");
    }
    let pem = ListenerPem {
        ca: &dir.path("ca.pem"),
        cert: &dir.path("server.pem"),
        key: &dir.path("server.key"),
    };
    let mut rsyslog = Rsyslog::start(&dir.0, &pem, None);
    let broker = Mosquitto::start();
    let gw = agent("default", "gw1", 1);
    let mut decoder = DecoderProcess::spawn(&[
        "--broker",
        &broker.address(),
        "--syslog",
        &format!("127.0.0.1:{}", rsyslog.plain_port),
        "--stdout",
    ]);
    decoder.wait_ready();
    publish_all(
        broker.port,
        vec![Outgoing::new(
            events_topic(&gw),
            encode(&batch(&gw, 0, 1, 10)),
        )],
    );
    let arrived = wait_until(WAIT, || rsyslog.lines("plain.log").len() >= 10);
    assert!(
        arrived,
        "{:?}\n{}",
        rsyslog.lines("plain.log"),
        decoder.stderr()
    );
    decoder.collect_until(WAIT, |lines| lines.len() >= 10);
    let first = parse_line(&rsyslog.lines("plain.log")[0]);
    // authpriv (10) * 8 + warning (4): a blocked setgid.
    assert_eq!(first.pri, "84");
    assert_eq!(first.timestamp, "2026-11-29T06:00:48.000001Z");
    assert_eq!(first.hostname, "gw1");
    assert_eq!(first.app, "edgearmor");
    assert_eq!(first.msgid, "MatchedHostPolicy");
    assert!(
        first.sd.starts_with(
            r#"[edgearmor@32473 cluster="default" node="gw1" operation="Syscall" action="Block""#
        ),
        "{}",
        first.sd
    );
    // The MSG is the decoder's JSON line, byte for byte.
    assert_eq!(first.msg, decoder.received[0]);

    // The receiver goes away; events keep coming; it comes back on the same port.
    rsyslog.daemon.stop();
    publish_all(
        broker.port,
        vec![Outgoing::new(
            events_topic(&gw),
            encode(&batch(&gw, 0, 11, 10)),
        )],
    );
    decoder.collect_until(WAIT, |lines| lines.len() >= 20);
    let restarted = Rsyslog::start(
        &dir.0,
        &pem,
        Some([rsyslog.plain_port, rsyslog.tls_port, rsyslog.mtls_port]),
    );
    let mut pids = Vec::new();
    let all = wait_until(WAIT, || {
        pids = restarted
            .lines("plain.log")
            .iter()
            .filter_map(|l| pid_of_json(&parse_line(l).msg))
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids.len() >= 20
    });
    let (status, _, stderr) = decoder.terminate();
    eprintln!("{stderr}");
    assert!(all, "after the restart: {pids:?}\n{stderr}");
    assert_eq!(pids, (100_001..=100_020).collect::<Vec<i64>>());
    assert!(status.success(), "{stderr}");
    assert_eq!(counter(&stderr, "forward_queued"), Some(20), "{stderr}");
    assert_eq!(counter(&stderr, "forward_sent"), Some(20), "{stderr}");
    assert_eq!(
        counter(&stderr, "forward_dropped_queue_full"),
        Some(0),
        "{stderr}"
    );
    assert_eq!(
        counter(&stderr, "forward_unsent_at_exit"),
        Some(0),
        "{stderr}"
    );
    assert!(
        counter(&stderr, "forward_connections").is_some_and(|n| n >= 2),
        "{stderr}"
    );
}

#[test]
fn rsyslog_receives_json_and_cef_over_tls_and_a_wrong_ca_never_connects() {
    let dir = ScratchDir::new("rsyslog-tls");
    let (ca, cert, key, _) = server_pki("edgearmor test CA");
    let (other_ca, ..) = server_pki("some other CA");
    for (name, pem) in [
        ("ca.pem", &ca),
        ("server.pem", &cert),
        ("server.key", &key),
        ("other-ca.pem", &other_ca),
    ] {
        std::fs::write(dir.path(name), pem).expect("write PEM");
    }
    let pem = ListenerPem {
        ca: &dir.path("ca.pem"),
        cert: &dir.path("server.pem"),
        key: &dir.path("server.key"),
    };
    let rsyslog = Rsyslog::start(&dir.0, &pem, None);
    let broker = Mosquitto::start();
    let gw = agent("default", "gw1", 1);
    let tls_target = format!("127.0.0.1:{}", rsyslog.tls_port);
    let ca_path = dir.path("ca.pem");
    let ca_arg = ca_path.to_str().expect("utf-8");
    let other_path = dir.path("other-ca.pem");
    let other_arg = other_path.to_str().expect("utf-8");
    let mut json = DecoderProcess::spawn(&[
        "--broker",
        &broker.address(),
        "--syslog",
        &tls_target,
        "--syslog-ca",
        ca_arg,
        "--syslog-facility",
        "local4",
    ]);
    let mut cef = DecoderProcess::spawn(&[
        "--broker",
        &broker.address(),
        "--syslog",
        &tls_target,
        "--syslog-ca",
        ca_arg,
        "--syslog-message",
        "cef",
        "--syslog-server-name",
        "localhost",
    ]);
    let mut wrong = DecoderProcess::spawn(&[
        "--broker",
        &broker.address(),
        "--syslog",
        &tls_target,
        "--syslog-ca",
        other_arg,
        "--stdout",
    ]);
    for decoder in [&mut json, &mut cef, &mut wrong] {
        decoder.wait_ready();
    }
    publish_all(
        broker.port,
        vec![Outgoing::new(
            events_topic(&gw),
            encode(&batch(&gw, 0, 1, 5)),
        )],
    );
    let arrived = wait_until(WAIT, || rsyslog.lines("tls.log").len() >= 10);
    let lines = rsyslog.lines("tls.log");
    assert!(arrived, "{lines:?}\n{}\n{}", json.stderr(), cef.stderr());
    let received: Vec<SyslogLine> = lines.iter().map(|l| parse_line(l)).collect();
    let json_lines: Vec<&SyslogLine> = received.iter().filter(|r| r.msg.starts_with('{')).collect();
    let cef_lines: Vec<&SyslogLine> = received
        .iter()
        .filter(|r| r.msg.starts_with("CEF:"))
        .collect();
    assert_eq!((json_lines.len(), cef_lines.len()), (5, 5), "{lines:?}");
    // local4 (20) * 8 + warning (4).
    assert!(json_lines.iter().all(|r| r.pri == "164"), "{lines:?}");
    assert_eq!(
        json_lines
            .iter()
            .filter_map(|r| pid_of_json(&r.msg))
            .collect::<Vec<_>>(),
        (100_001..=100_005).collect::<Vec<i64>>()
    );
    assert!(
        json_lines
            .iter()
            .all(|r| field(&r.msg, "Type") == "MatchedHostPolicy")
    );
    let version = env!("CARGO_PKG_VERSION");
    let first_cef = &cef_lines[0];
    assert_eq!(first_cef.pri, "84");
    assert!(
        first_cef.msg.starts_with(&format!(
            "CEF:0|edgearmor|edgearmor|{version}|MatchedHostPolicy:Syscall|"
        )),
        "{}",
        first_cef.msg
    );
    for key in [
        " spid=100001 ",
        " suid=0 ",
        " act=Block ",
        " sproc=/usr/sbin/sshd ",
        " dvchost=gw1 ",
        " cs1=default",
    ] {
        assert!(first_cef.msg.contains(key), "{key} in {}", first_cef.msg);
    }
    // The wrong CA: refused at the handshake, said so, nothing delivered.
    wrong.collect_until(WAIT, |lines| lines.len() >= 5);
    let refused = wait_until(WAIT, || {
        wrong.stderr().contains("syslog: cannot connect to")
    });
    let (status, _, stderr) = wrong.terminate();
    assert!(refused && status.success(), "{stderr}");
    assert!(
        stderr.contains("certificate"),
        "the reason is named: {stderr}"
    );
    assert_eq!(counter(&stderr, "forward_sent"), Some(0), "{stderr}");
    assert_eq!(counter(&stderr, "forward_connections"), Some(0), "{stderr}");
    assert_eq!(
        counter(&stderr, "forward_unsent_at_exit"),
        Some(5),
        "what could not be delivered is counted: {stderr}"
    );
    for decoder in [json, cef] {
        let (status, _, stderr) = decoder.terminate();
        assert!(status.success(), "{stderr}");
        assert_eq!(counter(&stderr, "forward_sent"), Some(5), "{stderr}");
    }
}

#[test]
fn cef_to_stdout_from_a_capture() {
    let dir = ScratchDir::new("cef-capture");
    let path = dir.path("in.cap");
    let gw = agent("default", "gw1", 1);
    support::write_capture(
        &path,
        &[(&events_topic(&gw), &encode(&batch(&gw, 0, 1, 3)))],
    );
    let output = Command::new(support::DECODER)
        .args(["--input", path.to_str().expect("utf-8"), "--format", "cef"])
        .output()
        .expect("run");
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("CEF:0|edgearmor|edgearmor|")),
        "{stdout}"
    );
    assert!(lines[2].contains(" spid=100003 "), "{stdout}");
}

#[test]
fn a_full_send_queue_drops_new_messages_and_counts_every_one() {
    let dir = ScratchDir::new("syslog-queue");
    let path = dir.path("in.cap");
    let gw = agent("default", "gw1", 1);
    support::write_capture(
        &path,
        &[(&events_topic(&gw), &encode(&batch(&gw, 0, 1, 10)))],
    );
    // A port nobody listens on: the receiver is away for the whole run.
    let away = soc_support::free_port();
    let output = Command::new(support::DECODER)
        .args(["--input", path.to_str().expect("utf-8")])
        .args([
            "--syslog",
            &format!("127.0.0.1:{away}"),
            "--syslog-queue",
            "3",
        ])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(counter(&stderr, "forward_queued"), Some(3), "{stderr}");
    assert_eq!(
        counter(&stderr, "forward_dropped_queue_full"),
        Some(7),
        "{stderr}"
    );
    assert_eq!(
        counter(&stderr, "forward_unsent_at_exit"),
        Some(3),
        "{stderr}"
    );
    assert_eq!(counter(&stderr, "forward_sent"), Some(0), "{stderr}");
    assert!(
        stderr.contains("syslog: send queue full (3 messages, receiver slow or away)")
            && stderr.contains(
                "syslog: 3 messages not delivered: the receiver did not take them before the stop"
            ),
        "{stderr}"
    );
}

#[test]
fn rsyslog_requiring_a_client_certificate_takes_the_decoders_and_no_other() {
    let dir = ScratchDir::new("rsyslog-mtls");
    let (ca, cert, key, issuer) = server_pki("edgearmor test CA");
    let client_key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "decoder-1");
    let client = params.signed_by(&client_key, &issuer).expect("client cert");
    for (name, pem) in [
        ("ca.pem", ca),
        ("server.pem", cert),
        ("server.key", key),
        ("client.pem", client.pem()),
        ("client.key", client_key.serialize_pem()),
    ] {
        std::fs::write(dir.path(name), pem).expect("write PEM");
    }
    let pem = ListenerPem {
        ca: &dir.path("ca.pem"),
        cert: &dir.path("server.pem"),
        key: &dir.path("server.key"),
    };
    let rsyslog = Rsyslog::start(&dir.0, &pem, None);
    let broker = Mosquitto::start();
    let gw = agent("default", "gw1", 1);
    let target = format!("127.0.0.1:{}", rsyslog.mtls_port);
    let path = |name| dir.path(name).to_str().expect("utf-8").to_owned();
    let mut with_cert = DecoderProcess::spawn(&[
        "--broker",
        &broker.address(),
        "--syslog",
        &target,
        "--syslog-ca",
        &path("ca.pem"),
        "--syslog-client-cert",
        &path("client.pem"),
        "--syslog-client-key",
        &path("client.key"),
        "--stdout",
    ]);
    let mut without = DecoderProcess::spawn(&[
        "--broker",
        &broker.address(),
        "--syslog",
        &target,
        "--syslog-ca",
        &path("ca.pem"),
        "--stdout",
    ]);
    with_cert.wait_ready();
    without.wait_ready();
    publish_all(
        broker.port,
        vec![Outgoing::new(
            events_topic(&gw),
            encode(&batch(&gw, 0, 1, 5)),
        )],
    );
    let arrived = wait_until(WAIT, || rsyslog.lines("mtls.log").len() >= 5);
    without.collect_until(WAIT, |lines| lines.len() >= 5);
    let (status, _, stderr) = with_cert.terminate();
    assert!(
        arrived && status.success(),
        "{:?}\n{stderr}",
        rsyslog.lines("mtls.log")
    );
    assert_eq!(counter(&stderr, "forward_sent"), Some(5), "{stderr}");
    // Without a certificate rsyslog ends every session: nothing of it is written, and
    // the decoder counts all five as undelivered when it stops.
    let (status, _, stderr) = without.terminate();
    eprintln!("{stderr}");
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("the receiver refused the TLS session after the handshake: "),
        "the refusal is named: {stderr}"
    );
    assert_eq!(rsyslog.lines("mtls.log").len(), 5, "{stderr}");
    assert_eq!(
        counter(&stderr, "forward_unsent_at_exit"),
        Some(5),
        "{stderr}"
    );
    assert_eq!(
        counter(&stderr, "forward_dropped_queue_full"),
        Some(0),
        "{stderr}"
    );
}
