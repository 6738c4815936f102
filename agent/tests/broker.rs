//! The agent's path to a real broker: real `mosquitto` processes on free loopback
//! ports, the real `edgearmor` binary (`send-test-alerts` drives the same pipeline as
//! `run`, without a kernel), certificates generated here, and a subscriber that
//! decodes what arrives with the wire crate.
//!
//! Checks on what arrived run only after a signal that everything has: the agent
//! exits only once the broker acknowledged its batches, and then `Subscriber::barrier`
//! makes sure the subscriber received all the broker had accepted. A subscriber always
//! has its (persistent) session before the agent can publish.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use edgearmor_vm::broker::{Broker, Subscriber, free_port, wait_for};
use edgearmor_vm::process::WatchedProcess;
use edgearmor_wire::{EventBody, LossSource, Message};

fn scratch(name: &str) -> PathBuf {
    edgearmor_vm::broker::scratch(Path::new(env!("CARGO_TARGET_TMPDIR")), name)
}

/// The agent binary in `send-test-alerts` mode; its stderr is collected as it comes.
/// The agent binary in `send-test-alerts` mode, without throttling unless the test's
/// own flags (which come later and win) ask for it.
struct Agent;

impl Agent {
    fn start(args: &[&str]) -> WatchedProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_edgearmor"));
        command
            .arg("send-test-alerts")
            .args([
                "--config",
                "/dev/null",
                "--no-stdout",
                "--max-alerts-per-sec",
                "0",
            ])
            .args(args)
            .env("RUST_LOG", "info");
        WatchedProcess::spawn(command)
    }
}

fn broker_arg(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

fn alert_seqs(events: &BTreeMap<([u8; 16], u64), EventBody>) -> Vec<u64> {
    events
        .iter()
        .filter(|(_, b)| matches!(b, EventBody::Alert(_)))
        .map(|((_, seq), _)| *seq)
        .collect()
}

#[test]
fn events_arrive_in_order_with_contiguous_sequence_numbers() {
    let dir = scratch("order");
    let port = free_port();
    let _broker = Broker::start(&dir, port, "");
    let sub = Subscriber::connect(port, "order-sub");
    let broker = broker_arg(port);
    let mut agent = Agent::start(&[
        "--broker",
        &broker,
        "--count",
        "300",
        "--interval-ms",
        "1",
        "--host-name",
        "gw-order",
    ]);
    agent.wait_success();
    sub.barrier();
    wait_for("300 events", || sub.events().len() >= 300);
    let events = sub.events();
    let seqs: Vec<u64> = events.keys().map(|(_, s)| *s).collect();
    assert_eq!(seqs, (1..=300).collect::<Vec<_>>(), "contiguous from 1");
    // Arrival order: each batch starts where the previous one ended.
    let mut next = 1;
    for (payload, _) in sub.on_topic("gw-order/events") {
        let Ok(Message::Batch(b)) = edgearmor_wire::decode(&payload) else {
            panic!("batch")
        };
        assert!(
            b.first_seq <= next,
            "batch {} arrived before {next}",
            b.first_seq
        );
        next = next.max(b.first_seq + b.events.len() as u64);
    }
    // The policy table is retained: a subscriber arriving later still gets it.
    let late = Subscriber::connect(port, "order-late");
    wait_for("the retained policy table", || {
        !late.on_topic("gw-order/policies/0").is_empty()
    });
    let (table, retained) = late.on_topic("gw-order/policies/0").remove(0);
    assert!(retained);
    let Ok(Message::PolicyTable(t)) = edgearmor_wire::decode(&table) else {
        panic!("table")
    };
    assert_eq!(t.policies[0].name.as_str(), "edgearmor-test-alert");
}

/// The `N` of the agent's `produced N event(s)` line.
fn produced(stderr: &str) -> u64 {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("edgearmor: produced "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `produced N` line:\n{stderr}"))
}

#[test]
fn a_broker_outage_loses_nothing_that_fit_in_the_buffer() {
    let dir = scratch("outage");
    let port = free_port();
    let mut broker = Broker::start(&dir, port, "");
    let sub = Subscriber::connect(port, "outage-sub");
    let broker_addr = broker_arg(port);
    // A stream that only SIGTERM ends: the outage falls in its middle however slowly
    // this test runs next to the agent.
    let mut agent = Agent::start(&[
        "--broker",
        &broker_addr,
        "--count",
        "1000000",
        "--interval-ms",
        "5",
        "--shutdown-grace-secs",
        "60",
    ]);
    wait_for("first events", || !sub.events().is_empty());
    broker.stop();
    agent.wait_stderr("cannot reach broker");
    let during_outage = sub.events().len();
    broker.resume();
    // Delivery goes on after the outage: more arrives than had before it.
    wait_for("events after the outage", || {
        sub.events().len() > during_outage
    });
    agent.terminate();
    agent.wait_success();
    let total = produced(&agent.stderr());
    sub.barrier();
    let events = sub.events();
    assert_eq!(alert_seqs(&events), (1..=total).collect::<Vec<_>>());
    assert!(
        (during_outage as u64) < total,
        "the outage happened mid-stream"
    );
    assert!(
        !events.values().any(|b| matches!(b, EventBody::Loss(_))),
        "nothing may be lost when the buffer is large enough"
    );
}

#[test]
fn a_too_small_buffer_reports_exactly_the_missing_sequence_numbers() {
    let dir = scratch("small");
    let port = free_port();
    let broker_addr = broker_arg(port);
    // The subscriber's persistent session exists before the agent can reach the
    // broker: mosquitto saves it when stopped and restores it when resumed, and
    // queues for it whatever arrives before it reconnects.
    let mut broker = Broker::start(&dir, port, "");
    let sub = Subscriber::connect(port, "small-sub");
    broker.stop();
    // No broker yet: everything waits in a 60 KB buffer and the oldest batches go.
    let mut agent = Agent::start(&[
        "--broker",
        &broker_addr,
        "--count",
        "3000",
        "--interval-ms",
        "1",
        "--buffer-bytes",
        "60000",
        "--shutdown-grace-secs",
        "60",
    ]);
    agent.wait_stderr("delivering");
    broker.resume();
    agent.wait_success();
    // The agent is gone; the broker queued everything for the persistent subscriber.
    sub.barrier();
    let events = sub.events();
    assert!(
        events.values().any(|b| matches!(b, EventBody::Loss(_))),
        "the loss report"
    );
    let highest = events.keys().map(|(_, s)| *s).max().unwrap_or(0);
    let missing: BTreeSet<u64> = (1..=highest)
        .filter(|s| !events.keys().any(|(_, k)| k == s))
        .collect();
    let mut reported = BTreeSet::new();
    let mut reported_count = 0;
    for body in events.values() {
        if let EventBody::Loss(l) = body {
            assert_eq!(l.source, LossSource::OfflineBuffer, "{l:?}");
            reported_count += l.count;
            reported.extend(l.first_seq..=l.last_seq);
        }
    }
    assert!(
        !missing.is_empty(),
        "a 60 KB buffer cannot hold 3000 alerts"
    );
    assert_eq!(
        reported_count,
        missing.len() as u64,
        "drop count equals missing sequence numbers"
    );
    assert_eq!(
        reported, missing,
        "reported ranges are exactly the missing numbers"
    );
}

#[test]
fn with_a_spool_a_killed_agent_loses_nothing_that_fit() {
    let dir = scratch("spool");
    let spool = dir.join("spool");
    let spool_arg = spool.to_string_lossy().into_owned();
    let port = free_port();
    let broker_addr = broker_arg(port);
    // Broker down: batches go to the spool; then SIGKILL mid-stream.
    let mut first = Agent::start(&[
        "--broker",
        &broker_addr,
        "--count",
        "100000",
        "--interval-ms",
        "2",
        "--spool-dir",
        &spool_arg,
        "--host-name",
        "gw-spool",
    ]);
    first.wait_stderr("ready");
    wait_for("spooled batches", || {
        std::fs::read_dir(&spool)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                    .sum::<u64>()
                    > 20_000
            })
            .unwrap_or(false)
    });
    first.kill();
    // What the first agent had spooled, read back with the spool's own parser.
    let (_, spooled) = edgearmor::sinks::offline::Spool::open(&spool, 16 << 20)
        .expect("spool readable after SIGKILL");
    let spooled_events: u64 = spooled.iter().map(|b| u64::from(b.events)).sum();
    assert!(spooled_events > 0);
    let first_boot = spooled[0].key.boot_id;

    let _broker = Broker::start(&dir, port, "");
    let sub = Subscriber::connect(port, "spool-sub");
    let mut second = Agent::start(&[
        "--broker",
        &broker_addr,
        "--count",
        "0",
        "--spool-dir",
        &spool_arg,
        "--host-name",
        "gw-spool",
        "--shutdown-grace-secs",
        "60",
    ]);
    second.wait_success();
    sub.barrier();
    wait_for("the first agent's events", || {
        sub.events()
            .keys()
            .filter(|(boot, _)| *boot == first_boot)
            .count() as u64
            >= spooled_events
    });
    let first_seqs: Vec<u64> = sub
        .events()
        .keys()
        .filter(|(b, _)| *b == first_boot)
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(
        first_seqs,
        (1..=spooled_events).collect::<Vec<_>>(),
        "every spooled event, contiguous"
    );
    let (_, left) = edgearmor::sinks::offline::Spool::open(&spool, 16 << 20).expect("spool");
    assert!(left.is_empty(), "delivered batches leave the spool");
}

#[test]
fn status_is_online_then_offline_after_sigkill() {
    let dir = scratch("status");
    let port = free_port();
    let _broker = Broker::start(&dir, port, "");
    let sub = Subscriber::connect(port, "status-sub");
    let broker_addr = broker_arg(port);
    let mut agent = Agent::start(&[
        "--broker",
        &broker_addr,
        "--count",
        "100000",
        "--interval-ms",
        "50",
        "--host-name",
        "gw-status",
    ]);
    wait_for("online", || {
        sub.on_topic("gw-status/status")
            .iter()
            .any(|(p, _)| p.starts_with(b"{\"state\":\"online\""))
    });
    // Retained: a subscriber arriving now gets the birth message at once.
    let early = Subscriber::connect(port, "status-early");
    wait_for("retained online", || {
        early
            .on_topic("gw-status/status")
            .iter()
            .any(|(p, r)| *r && p.starts_with(b"{\"state\":\"online\""))
    });
    let (birth, _) = early.on_topic("gw-status/status").remove(0);
    let birth = String::from_utf8(birth).expect("utf8");
    for key in [
        "\"agent_version\":",
        "\"boot_id\":",
        "\"kernel\":",
        "\"enforcement\":\"unavailable\"",
        "\"policy_set\":",
    ] {
        assert!(birth.contains(key), "{key} in {birth}");
    }
    agent.kill(); // SIGKILL: only the broker can tell the world
    wait_for("offline", || {
        sub.on_topic("gw-status/status")
            .iter()
            .any(|(p, _)| p.starts_with(b"{\"state\":\"offline\""))
    });
    // A late subscriber sees the retained offline state.
    let late = Subscriber::connect(port, "status-late");
    wait_for("retained offline", || {
        late.on_topic("gw-status/status")
            .iter()
            .any(|(p, r)| *r && p.starts_with(b"{\"state\":\"offline\""))
    });
}

/// PEM files made for one test: a CA, a server certificate for 127.0.0.1 and a client
/// certificate, both signed by the CA.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn make_pki(dir: &Path, name: &str) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} test CA"));
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let write = |file: String, pem: String| {
        let path = dir.join(file);
        std::fs::write(&path, pem).expect("write");
        path
    };
    let leaf = |names: Vec<String>, role: &str| {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(names).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} {role}"));
        let cert = params.signed_by(&key, &issuer).expect("cert");
        (
            write(format!("{name}-{role}.pem"), cert.pem()),
            write(format!("{name}-{role}.key"), key.serialize_pem()),
        )
    };
    let (server_cert, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()], "server");
    let (client_cert, client_key) = leaf(vec!["gw-mtls".into()], "client");
    Pki {
        ca: write(format!("{name}-ca.pem"), ca_cert.pem()),
        server_cert,
        server_key,
        client_cert,
        client_key,
    }
}

fn tls_listener(port: u16, pki: &Pki, require_client_certificate: bool) -> String {
    format!(
        "listener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {require_client_certificate}\n",
        pki.ca.display(),
        pki.server_cert.display(),
        pki.server_key.display()
    )
}

#[test]
fn mutual_tls_with_a_client_certificate_works_and_without_one_is_refused() {
    let dir = scratch("mtls");
    let pki = make_pki(&dir, "mtls");
    let plain = free_port();
    let tls = free_port();
    let _broker = Broker::start(&dir, plain, &tls_listener(tls, &pki, true));
    let sub = Subscriber::connect(plain, "mtls-sub");
    let tls_addr = broker_arg(tls);
    let arg = |p: &PathBuf| p.to_string_lossy().into_owned();
    let (ca, cert, key) = (arg(&pki.ca), arg(&pki.client_cert), arg(&pki.client_key));
    let mut agent = Agent::start(&[
        "--broker",
        &tls_addr,
        "--ca",
        &ca,
        "--client-cert",
        &cert,
        "--client-key",
        &key,
        "--count",
        "20",
        "--interval-ms",
        "1",
        "--host-name",
        "gw-mtls",
    ]);
    agent.wait_success();
    sub.barrier();
    wait_for("20 events over mutual TLS", || sub.events().len() >= 20);

    let mut without = Agent::start(&[
        "--broker",
        &tls_addr,
        "--ca",
        &ca,
        "--count",
        "5",
        "--host-name",
        "gw-no-cert",
    ]);
    without.wait_stderr(&format!("broker {tls_addr}"));
    let err = without.stderr();
    assert!(
        !err.contains("MQTT: connected"),
        "a broker requiring client certificates must refuse: {err}"
    );
    without.kill();
}

#[test]
fn tls_with_generated_certificates_works_and_a_wrong_ca_is_named() {
    let dir = scratch("tls");
    let pki = make_pki(&dir, "good");
    let other_ca = make_pki(&dir, "other").ca;
    let ca = pki.ca.clone();
    let plain = free_port();
    let tls = free_port();
    let _broker = Broker::start(&dir, plain, &tls_listener(tls, &pki, false));
    let sub = Subscriber::connect(plain, "tls-sub");
    let tls_addr = broker_arg(tls);
    let ca_arg = ca.to_string_lossy().into_owned();
    let mut agent = Agent::start(&[
        "--broker",
        &tls_addr,
        "--ca",
        &ca_arg,
        "--count",
        "50",
        "--interval-ms",
        "1",
        "--host-name",
        "gw-tls",
    ]);
    agent.wait_success();
    sub.barrier();
    wait_for("50 events over TLS", || sub.events().len() >= 50);

    let wrong = other_ca.to_string_lossy().into_owned();
    let mut agent = Agent::start(&[
        "--broker",
        &tls_addr,
        "--ca",
        &wrong,
        "--count",
        "5",
        "--host-name",
        "gw-tls-bad",
    ]);
    agent.wait_stderr("TLS with broker");
    let err = agent.stderr();
    assert!(
        err.contains("is ca_file the CA that signed the broker's certificate"),
        "{err}"
    );
    agent.kill();
}

#[test]
fn a_wrong_password_is_refused_with_a_clear_error() {
    let dir = scratch("auth");
    let passwords = dir.join("passwords");
    let status = Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(&passwords)
        .args(["gw", "right-password"])
        .status()
        .expect("mosquitto_passwd runs");
    assert!(status.success());
    let port = free_port();
    // Overrides the anonymous default of the fixture for this broker.
    let conf_extra = format!(
        "password_file {}\nallow_anonymous false",
        passwords.display()
    );
    let _broker = Broker::start(&dir, port, &conf_extra);
    let pass_file = dir.join("agent.pass");
    std::fs::write(&pass_file, "wrong-password\n").expect("write");
    let broker_addr = broker_arg(port);
    let pass_arg = pass_file.to_string_lossy().into_owned();
    let mut agent = Agent::start(&[
        "--broker",
        &broker_addr,
        "--username",
        "gw",
        "--password-file",
        &pass_arg,
        "--count",
        "5",
    ]);
    agent.wait_stderr("refused the connection");
    let err = agent.stderr();
    assert!(
        err.contains("bad user name or password") || err.contains("not authorized"),
        "{err}"
    );
    agent.kill();

    std::fs::write(&pass_file, "right-password\n").expect("write");
    let mut agent = Agent::start(&[
        "--broker",
        &broker_addr,
        "--username",
        "gw",
        "--password-file",
        &pass_arg,
        "--count",
        "5",
    ]);
    agent.wait_stderr("MQTT: connected");
    agent.wait_success();
}

#[test]
fn throttling_follows_kubearmor_and_accounts_for_every_dropped_alert() {
    let dir = scratch("throttle");
    let port = free_port();
    let _broker = Broker::start(&dir, port, "");
    let sub = Subscriber::connect(port, "throttle-sub");
    let broker_addr = broker_arg(port);
    // Later flags win: 10 alerts per second, then a 30 s quiet interval.
    let mut agent = Agent::start(&[
        "--broker",
        &broker_addr,
        "--count",
        "100",
        "--interval-ms",
        "1",
        "--max-alerts-per-sec",
        "10",
        "--throttle-sec",
        "30",
        "--host-name",
        "gw-throttle",
    ]);
    agent.wait_success();
    // Throttle losses are reported at every flush, so there may be several reports:
    // all of them are here once the barrier is.
    sub.barrier();
    let events = sub.events();
    assert!(
        events
            .values()
            .any(|b| matches!(b, EventBody::Loss(l) if l.source == LossSource::Throttle)),
        "the throttle loss report"
    );
    let alerts = events
        .values()
        .filter(|b| matches!(b, EventBody::Alert(_)))
        .count();
    let thresholds: Vec<_> = events
        .values()
        .filter_map(|b| match b {
            EventBody::AlertThreshold(t) => Some(*t),
            _ => None,
        })
        .collect();
    let throttled: u64 = events
        .values()
        .filter_map(|b| match b {
            EventBody::Loss(l) if l.source == LossSource::Throttle => Some(l.count),
            _ => None,
        })
        .sum();
    assert_eq!(alerts, 10, "the first 10 alerts of the second pass");
    assert_eq!(
        thresholds.len(),
        1,
        "one AlertThreshold event: {thresholds:?}"
    );
    assert_eq!(
        (
            thresholds[0].max_alerts_per_sec,
            thresholds[0].dropping_alerts_interval
        ),
        (10, 30)
    );
    assert_eq!(
        alerts as u64 + throttled,
        100,
        "every dropped alert is counted"
    );
}
