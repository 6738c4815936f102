//! End to end against real mosquitto brokers on loopback: the built `edgearmor-decode`
//! binary as a child process, a small publisher standing in for the agent's pipeline.
//!
//! - two decoders in one shared-subscription group output every event exactly once;
//! - TLS: the right CA connects, a wrong CA is a clear error; mutual TLS;
//! - a missing sequence range becomes one `SystemEvent` naming it;
//! - statuses become `SystemEvent`s, lines are re-published as JSON, garbage is skipped.

mod support;

use std::collections::BTreeMap;
use std::sync::mpsc::channel;
use std::time::Duration;

use rcgen::{CertificateParams, KeyPair};
use support::{
    BrokerTls, DecoderProcess, Mosquitto, Outgoing, ScratchDir, agent, batch, counter, encode,
    events_topic, field, policies_topic, policy_table, publish_all, server_pki, status_topic,
};

fn alert_pids(lines: &[String]) -> Vec<i64> {
    lines
        .iter()
        .filter(|l| field(l, "Type") == "MatchedHostPolicy")
        .filter_map(|l| field(l, "PID").as_i64())
        .collect()
}

#[test]
fn two_decoders_in_a_share_group_output_every_event_exactly_once() {
    const BATCHES: u64 = 40;
    const PER_BATCH: u32 = 8;
    let broker = Mosquitto::start();
    let address = broker.address();
    let gw = agent("default", "gw1", 1);
    // Retained before the decoders start: each must still get it (non-shared subscription).
    publish_all(
        broker.port,
        vec![Outgoing::retained(
            policies_topic(&gw, 0),
            encode(&policy_table(
                &gw,
                7,
                &[("hsp-block-sshd-setid", 8, "NIST", "no setgid")],
            )),
        )],
    );
    let out = ScratchDir::new("share");
    let file = out.path("alerts.json");
    let file_arg = file.to_str().expect("utf-8 temp path");
    let mut first = DecoderProcess::spawn(&[
        "--broker",
        &address,
        "--share-group",
        "decoders",
        "--output",
        file_arg,
    ]);
    let mut second = DecoderProcess::spawn(&["--broker", &address, "--share-group", "decoders"]);
    first.wait_ready();
    second.wait_ready();

    let messages = (0..BATCHES)
        .map(|i| {
            let message = batch(&gw, 7, 1 + i * u64::from(PER_BATCH), PER_BATCH);
            Outgoing::new(events_topic(&gw), encode(&message))
        })
        .collect();
    publish_all(broker.port, messages);
    let total = (BATCHES * u64::from(PER_BATCH)) as usize;

    // The second decoder prints to stdout; the first to its file. The file is read
    // while the decoder writes it, so its last line may be cut short (a read can land
    // between the pages of one write): only lines ending in a newline count.
    let file_pids = || {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let complete = text.rsplit_once('\n').map_or("", |(whole, _)| whole);
        let lines: Vec<String> = complete.lines().map(str::to_owned).collect();
        alert_pids(&lines)
    };
    let all_arrived = support::wait_until(Duration::from_secs(30), || {
        second.collect_until(Duration::from_millis(50), |_| false);
        file_pids().len() + alert_pids(&second.received).len() >= total
    });
    let (status1, _, stderr1) = first.terminate();
    let (status2, stdout2, stderr2) = second.terminate();
    assert!(
        all_arrived,
        "not every event arrived:\n{stderr1}\n{stderr2}"
    );
    assert!(
        status1.success() && status2.success(),
        "{stderr1}\n{stderr2}"
    );

    let text = std::fs::read_to_string(&file).expect("the first decoder's file");
    let lines1: Vec<String> = text.lines().map(str::to_owned).collect();
    let pids1 = alert_pids(&lines1);
    let pids2 = alert_pids(&stdout2);
    assert!(
        !pids1.is_empty() && !pids2.is_empty(),
        "the broker shares the load: {} + {}",
        pids1.len(),
        pids2.len()
    );
    let mut seen: BTreeMap<i64, usize> = BTreeMap::new();
    for pid in pids1.iter().chain(&pids2) {
        *seen.entry(*pid).or_default() += 1;
    }
    let expected: Vec<i64> = (1..=total as i64).map(|n| 100_000 + n).collect();
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), expected);
    assert!(seen.values().all(|n| *n == 1), "every event exactly once");
    // Both decoders resolved policy ids from the retained table.
    for line in lines1.iter().chain(&stdout2) {
        assert_eq!(field(line, "PolicyName"), "hsp-block-sshd-setid", "{line}");
    }
    // Members of a share group do not report the others' share as lost.
    assert_eq!(counter(&stderr1, "gaps"), Some(0), "{stderr1}");
    assert_eq!(counter(&stderr2, "gaps"), Some(0), "{stderr2}");
    assert_eq!(
        counter(&stderr1, "lines").zip(counter(&stderr2, "lines")),
        Some((pids1.len() as u64, pids2.len() as u64))
    );
}

#[test]
fn a_missing_sequence_range_becomes_one_system_event() {
    let broker = Mosquitto::start();
    let gw = agent("default", "gw1", 0xab);
    let mut decoder =
        DecoderProcess::spawn(&["--broker", &broker.address(), "--reorder-window-ms", "300"]);
    decoder.wait_ready();
    let topic = events_topic(&gw);
    publish_all(
        broker.port,
        vec![
            Outgoing::new(topic.clone(), encode(&batch(&gw, 0, 1, 10))),
            Outgoing::new(topic.clone(), encode(&batch(&gw, 0, 1, 10))), // redelivered
            Outgoing::new(topic.clone(), encode(&batch(&gw, 0, 21, 10))), // 11..=20 lost
        ],
    );
    decoder.collect_until(Duration::from_secs(20), |lines| {
        lines.iter().any(|l| l.contains("AlertLoss"))
    });
    let (status, lines, stderr) = decoder.terminate();
    eprintln!("{stderr}");
    assert!(status.success(), "{stderr}");
    let losses: Vec<&String> = lines
        .iter()
        .filter(|l| field(l, "Operation") == "AlertLoss")
        .collect();
    assert_eq!(losses.len(), 1, "{lines:?}");
    assert_eq!(field(losses[0], "Type"), "SystemEvent");
    assert_eq!(field(losses[0], "Data"), "lost=10 first_seq=11 last_seq=20");
    assert_eq!(
        field(losses[0], "Message"),
        "10 events were lost: sequence numbers 11..20 of agent boot abababab never reached the decoder"
    );
    assert_eq!(alert_pids(&lines).len(), 20);
    assert_eq!(counter(&stderr, "duplicates"), Some(10), "{stderr}");
    assert_eq!(counter(&stderr, "gap_lost_events"), Some(10), "{stderr}");
}

#[test]
fn statuses_garbage_and_republished_json() {
    let broker = Mosquitto::start();
    let gw = agent("default", "gw1", 1);
    // A test subscriber for the re-published lines.
    let (ready_tx, ready_rx) = channel();
    let (lines_tx, lines_rx) = channel();
    let port = broker.port;
    let subscriber = std::thread::spawn(move || {
        support::collect_published(port, "edgearmor/+/+/alerts/json", 2, ready_tx, lines_tx)
    });
    ready_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("test subscriber ready");
    let mut decoder =
        DecoderProcess::spawn(&["--broker", &broker.address(), "--publish-json", "--stdout"]);
    decoder.wait_ready();
    let birth = br#"{"state":"online","agent_version":"0.1.0","boot_id":"0123456789abcdef0123456789abcdef","kernel":"6.12.117+deb12-arm64","enforcement":"available","enforcement_detail":"","policy_set":"0000000000000007","time":1795932048}"#;
    publish_all(
        broker.port,
        vec![
            Outgoing::retained(status_topic(&gw), birth.to_vec()),
            Outgoing::new(events_topic(&gw), b"\x01garbage".to_vec()),
            Outgoing::new(events_topic(&gw), Vec::new()),
            Outgoing::new(status_topic(&gw), b"{not json".to_vec()),
            Outgoing::new(events_topic(&gw), encode(&batch(&gw, 0, 1, 1))),
        ],
    );
    decoder.collect_until(Duration::from_secs(20), |lines| lines.len() >= 2);
    let published: Vec<(String, String)> = lines_rx.iter().take(2).collect();
    let (status, lines, stderr) = decoder.terminate();
    let _ = subscriber.join();
    assert!(status.success(), "{stderr}");
    assert_eq!(lines.len(), 2, "{lines:?}\n{stderr}");
    assert_eq!(field(&lines[0], "Operation"), "AgentStatus");
    assert_eq!(field(&lines[1], "PID"), 100_001);
    // Every stdout line was also published, under the node's topic.
    assert_eq!(
        published,
        lines
            .iter()
            .map(|l| ("edgearmor/default/gw1/alerts/json".to_owned(), l.clone()))
            .collect::<Vec<_>>()
    );
    assert_eq!(counter(&stderr, "rejected_malformed"), Some(1), "{stderr}");
    assert_eq!(counter(&stderr, "rejected_empty"), Some(1), "{stderr}");
    assert_eq!(counter(&stderr, "rejected_status"), Some(1), "{stderr}");
    assert_eq!(counter(&stderr, "republished"), Some(2), "{stderr}");
    assert!(
        stderr
            .contains("edgearmor/default/gw1/events: skipped a 8-byte payload: malformed payload"),
        "the topic and the reason are logged: {stderr}"
    );
}

#[test]
fn tls_with_the_right_ca_decodes_and_a_wrong_ca_is_a_clear_error() {
    let (ca_pem, cert_pem, key_pem, _ca) = server_pki("edgearmor test CA");
    let (other_ca_pem, ..) = server_pki("some other CA");
    let broker = Mosquitto::start_with(Some(BrokerTls {
        ca_pem: &ca_pem,
        cert_pem: &cert_pem,
        key_pem: &key_pem,
        require_client_certificate: false,
    }));
    let tls_address = format!("127.0.0.1:{}", broker.tls_port.expect("TLS listener"));
    let dir = ScratchDir::new("tls");
    let ca = dir.path("ca.pem");
    let wrong = dir.path("wrong-ca.pem");
    support::write_file(&ca, &ca_pem);
    support::write_file(&wrong, &other_ca_pem);

    let mut decoder = DecoderProcess::spawn(&[
        "--broker",
        &tls_address,
        "--ca",
        ca.to_str().expect("utf-8"),
    ]);
    decoder.wait_ready();
    let gw = agent("default", "gw1", 1);
    publish_all(
        broker.port,
        vec![Outgoing::new(
            events_topic(&gw),
            encode(&batch(&gw, 0, 1, 2)),
        )],
    );
    decoder.collect_until(Duration::from_secs(20), |lines| lines.len() >= 2);
    let (status, lines, stderr) = decoder.terminate();
    assert!(status.success(), "{stderr}");
    assert_eq!(alert_pids(&lines), vec![100_001, 100_002]);

    let refused = DecoderProcess::spawn(&[
        "--broker",
        &tls_address,
        "--ca",
        wrong.to_str().expect("utf-8"),
    ]);
    let (status, lines, stderr) = refused.wait_exit();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(lines.is_empty());
    let expected = format!(
        "edgearmor-decode: TLS connection to {tls_address} failed: invalid peer certificate: UnknownIssuer \
         (is --ca the CA that signed the broker's certificate?)"
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

#[test]
fn mutual_tls_with_a_client_certificate() {
    let (ca_pem, cert_pem, key_pem, ca) = server_pki("edgearmor test CA");
    let client_key = KeyPair::generate().expect("key");
    let mut client_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    client_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "decoder-1");
    let client_cert = client_params
        .signed_by(&client_key, &ca)
        .expect("client cert");
    let broker = Mosquitto::start_with(Some(BrokerTls {
        ca_pem: &ca_pem,
        cert_pem: &cert_pem,
        key_pem: &key_pem,
        require_client_certificate: true,
    }));
    let tls_address = format!("127.0.0.1:{}", broker.tls_port.expect("TLS listener"));
    let dir = ScratchDir::new("mtls");
    for (name, pem) in [
        ("ca.pem", ca_pem.clone()),
        ("client.pem", client_cert.pem()),
        ("client.key", client_key.serialize_pem()),
    ] {
        support::write_file(&dir.path(name), &pem);
    }
    let path = |name| dir.path(name).to_str().expect("utf-8").to_owned();
    let mut decoder = DecoderProcess::spawn(&[
        "--broker",
        &tls_address,
        "--ca",
        &path("ca.pem"),
        "--client-cert",
        &path("client.pem"),
        "--client-key",
        &path("client.key"),
    ]);
    decoder.wait_ready();
    let gw = agent("default", "gw1", 1);
    publish_all(
        broker.port,
        vec![Outgoing::new(
            events_topic(&gw),
            encode(&batch(&gw, 0, 1, 1)),
        )],
    );
    decoder.collect_until(Duration::from_secs(20), |lines| !lines.is_empty());
    let (status, lines, stderr) = decoder.terminate();
    assert!(status.success(), "{stderr}");
    assert_eq!(alert_pids(&lines), vec![100_001]);

    // Without the client certificate the broker refuses us: a fatal, explained error.
    let refused = DecoderProcess::spawn(&["--broker", &tls_address, "--ca", &path("ca.pem")]);
    let (status, _, stderr) = refused.wait_exit();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("does it require a client certificate?"),
        "{stderr}"
    );
}
