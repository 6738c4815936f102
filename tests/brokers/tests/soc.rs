//! The SOC path end to end with the real binaries: the agent (`send-test-alerts`) →
//! mosquitto → `edgearmor-decode --syslog (TLS, CEF) --metrics` → Debian's rsyslog
//! (a TLS listener with this test's certificates, writing what it parsed to a file) and
//! Debian's Prometheus (scraping the decoder; the test asks its query API). The agent is
//! then killed: its last will turns `edgearmor_agent_up` to 0.

#[path = "../../../decoder/tests/soc_support/mod.rs"]
mod soc_support;

use edgearmor_broker_tests::brokers::{Broker, Mosquitto};
use edgearmor_broker_tests::process::{Scratch, arg, wait_for};
use edgearmor_broker_tests::{Decoder, agent, counter, pki};
use soc_support::{ListenerPem, Prometheus, Rsyslog, parse_line};

const NODE: &str = "gw-soc";

/// The N of every `test alert N` CEF message rsyslog wrote.
fn cef_test_alerts(rsyslog: &Rsyslog) -> Vec<u64> {
    let mut seen: Vec<u64> = rsyslog
        .lines("tls.log")
        .iter()
        .map(|l| parse_line(l))
        .filter(|l| l.msgid == "MatchedHostPolicy" && l.msg.starts_with("CEF:0|edgearmor|"))
        .filter_map(|l| {
            let (_, rest) = l.msg.split_once(" flexString1=test alert ")?;
            rest.split(' ').next()?.parse().ok()
        })
        .collect();
    seen.sort_unstable();
    seen
}

#[test]
fn the_real_agents_alerts_reach_rsyslog_over_tls_and_its_health_prometheus() {
    let dir = Scratch::new("soc");
    let pki = pki::make(&dir.path, "soc");
    let broker = Mosquitto::start(&dir.dir("broker"), &pki, "");
    let pem = ListenerPem {
        ca: &pki.ca,
        cert: &pki.server_cert,
        key: &pki.server_key,
    };
    let rsyslog = Rsyslog::start(&dir.dir("rsyslog"), &pem, None);
    let address = broker.address();
    let syslog = format!("127.0.0.1:{}", rsyslog.tls_port);
    let ca = arg(&pki.ca);
    let mut decoder = Decoder::ready(
        &dir,
        "soc",
        &[
            "--broker",
            &address,
            "--syslog",
            &syslog,
            "--syslog-ca",
            &ca,
            "--syslog-message",
            "cef",
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    let port: u16 = decoder
        .proc
        .output()
        .lines()
        .find_map(|l| {
            l.strip_prefix("edgearmor-decode: metrics: serving http://127.0.0.1:")?
                .strip_suffix("/metrics")?
                .parse()
                .ok()
        })
        .expect("the metrics line comes before the ready line");
    let prometheus = Prometheus::start(&dir.dir("prometheus"), &format!("127.0.0.1:{port}"));
    let context = || decoder.proc.output();
    // An alert every 20 ms until killed.
    let mut sender = agent(&address, NODE, 1_000_000, 20, &[]);
    let labels = format!(r#"cluster="matrix",node="{NODE}""#);
    prometheus.wait_for(&format!("edgearmor_agent_up{{{labels}}}"), 1.0, &context);
    let version = env!("CARGO_PKG_VERSION");
    prometheus.wait_for(
        &format!(r#"count(edgearmor_agent_info{{{labels},agent_version="{version}"}})"#),
        1.0,
        &context,
    );
    prometheus.wait_for(
        &format!("edgearmor_decode_agent_alerts_total{{{labels}}} >= bool 20"),
        1.0,
        &context,
    );
    sender.kill();
    prometheus.wait_for(&format!("edgearmor_agent_up{{{labels}}}"), 0.0, &context);
    prometheus.wait_for(
        &format!("edgearmor_decode_agent_gaps_total{{{labels}}}"),
        0.0,
        &context,
    );
    // Every alert the decoder wrote reached rsyslog as CEF over TLS, exactly once.
    let stopped = decoder.stop();
    let mut written = decoder.test_alerts(NODE);
    written.sort_unstable();
    assert!(written.len() >= 20, "{stopped}");
    wait_for("every alert at rsyslog", || {
        cef_test_alerts(&rsyslog).len() >= written.len()
    });
    assert_eq!(cef_test_alerts(&rsyslog), written, "{stopped}");
    eprintln!(
        "{} alerts of the real agent at rsyslog (CEF over TLS), its birth and last will in Prometheus",
        written.len()
    );
    assert_eq!(
        counter(&stopped, "forward_dropped_queue_full"),
        Some(0),
        "{stopped}"
    );
    assert_eq!(
        counter(&stopped, "forward_unsent_at_exit"),
        Some(0),
        "{stopped}"
    );
    assert_eq!(
        counter(&stopped, "forward_sent"),
        counter(&stopped, "lines"),
        "{stopped}"
    );
    // The agent's birth and last will went the same way, as SystemEvents.
    let statuses = rsyslog
        .lines("tls.log")
        .iter()
        .map(|l| parse_line(l))
        .filter(|l| l.msgid == "SystemEvent" && l.msg.contains("|SystemEvent:AgentStatus|"))
        .count();
    assert!(statuses >= 2, "{:?}", rsyslog.lines("tls.log"));
}
