//! The broker matrix's support: real brokers ([`brokers`]), the real `edgearmor`
//! agent (`send-test-alerts`, the same pipeline as `run`, without a kernel) and the
//! real `edgearmor-decode`, as child processes ([`process`]), certificates made per
//! test ([`pki`]), a controllable TCP proxy ([`proxy`]), and what a decoder received
//! read back from its capture file, by sequence number ([`Received`]).
//!
//! Test support: failures panic naming what did not happen, with the processes' output.

pub mod brokers;
pub mod pki;
pub mod process;
pub mod proxy;
pub mod scenarios;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use edgearmor_decode::capture::CaptureReader;
use edgearmor_wire::{EventBody, Message};

use crate::process::{Proc, Scratch, arg, binaries, wait_for};

/// `edgearmor send-test-alerts` to `broker` as node `node`: `count` alerts, `interval_ms`
/// apart, no throttle, no stdout; `extra` flags come last (and win).
pub fn agent(broker: &str, node: &str, count: u64, interval_ms: u64, extra: &[&str]) -> Proc {
    agent_with_config(
        Path::new("/dev/null"),
        broker,
        node,
        count,
        interval_ms,
        extra,
    )
}

/// [`agent`] with a configuration file (for settings without a flag).
pub fn agent_with_config(
    config: &Path,
    broker: &str,
    node: &str,
    count: u64,
    interval_ms: u64,
    extra: &[&str],
) -> Proc {
    let mut command = Command::new(binaries().agent);
    command
        .arg("send-test-alerts")
        .arg("--config")
        .arg(config)
        .args([
            "--no-stdout",
            "--max-alerts-per-sec",
            "0",
            "--broker",
            broker,
        ])
        .args(["--host-name", node, "--cluster", "matrix"])
        .args(["--count", &count.to_string()])
        .args(["--interval-ms", &interval_ms.to_string()])
        .args(extra)
        .env("RUST_LOG", "info");
    Proc::spawn(&format!("agent {node}"), command)
}

/// A running `edgearmor-decode` writing its lines to a file and every message it
/// receives to a capture file.
pub struct Decoder {
    pub proc: Proc,
    pub lines: PathBuf,
    pub capture: PathBuf,
}

impl Decoder {
    /// Starts it with `args` (broker, TLS, version, topic, ...).
    pub fn start(dir: &Scratch, name: &str, args: &[&str]) -> Self {
        let lines = dir.file(&format!("{name}.json"));
        let capture = dir.file(&format!("{name}.cap"));
        let mut command = Command::new(binaries().decoder);
        command
            .args(args)
            .arg("--output")
            .arg(&lines)
            .arg("--capture")
            .arg(&capture)
            .env("RUST_LOG", "info");
        Self {
            proc: Proc::spawn(&format!("decoder {name}"), command),
            lines,
            capture,
        }
    }

    /// Started and subscribed.
    pub fn ready(dir: &Scratch, name: &str, args: &[&str]) -> Self {
        let mut decoder = Self::start(dir, name, args);
        decoder.proc.wait_output("edgearmor-decode: ready:");
        decoder
    }

    /// Subscriptions acknowledged this many times (after each connect without a
    /// session), as its log says.
    pub fn wait_subscribed(&mut self, times: usize) {
        self.proc.wait_output_n("] subscribed to ", times);
    }

    /// Every JSON line written so far.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.lines)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// `N` of every `test alert N` line of `node`, in output order.
    pub fn test_alerts(&self, node: &str) -> Vec<u64> {
        self.lines()
            .iter()
            .filter(|l| l["Type"] == "MatchedHostPolicy" && l["HostName"] == node)
            .filter_map(|l| {
                l["Resource"]
                    .as_str()?
                    .strip_prefix("test alert ")?
                    .parse()
                    .ok()
            })
            .collect()
    }

    /// Status lines of `node` whose message says `state`.
    pub fn statuses(&self, node: &str, state: &str) -> Vec<serde_json::Value> {
        let needle = format!(" {state} (boot");
        self.lines()
            .into_iter()
            .filter(|l| l["Operation"] == "AgentStatus" && l["HostName"] == node)
            .filter(|l| l["Message"].as_str().is_some_and(|m| m.contains(&needle)))
            .collect()
    }

    /// What arrived, from the capture file.
    pub fn received(&self) -> Received {
        Received::read(&self.capture)
    }

    /// Waits until `node`'s alerts `0..count` are all in the output.
    pub fn wait_alerts(&self, node: &str, count: u64) {
        wait_for(&format!("{count} test alerts of {node}"), || {
            let mut seen = self.test_alerts(node);
            seen.sort_unstable();
            seen.dedup();
            seen.len() as u64 >= count
        });
    }

    /// SIGTERM; the exit status must be 0. Returns its output (with the counters).
    pub fn stop(&mut self) -> String {
        let status = self.proc.terminate();
        let output = self.proc.output();
        assert!(status.success(), "decoder failed ({status}):\n{output}");
        output
    }
}

/// `name=value` from a decoder's counters line.
pub fn counter(output: &str, name: &str) -> Option<u64> {
    output
        .lines()
        .find(|l| l.starts_with("edgearmor-decode: counters:"))?
        .split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
}

/// Event batches a decoder received: per node, per agent boot, every sequence number in
/// arrival order (repeats included).
#[derive(Debug, Default)]
pub struct Received {
    pub seqs: BTreeMap<String, BTreeMap<[u8; 16], Vec<u64>>>,
    /// Alert events (not loss reports), per node and boot.
    pub alerts: BTreeMap<String, BTreeMap<[u8; 16], Vec<u64>>>,
    /// `(topic, retained)` of every status message.
    pub statuses: Vec<(String, bool, String)>,
}

impl Received {
    pub fn read(capture: &Path) -> Self {
        let mut received = Self::default();
        let Ok(file) = std::fs::File::open(capture) else {
            return received;
        };
        let mut reader = CaptureReader::new(std::io::BufReader::new(file));
        // A record being written is the end for now.
        while let Ok(Some(message)) = reader.next_message() {
            if message.topic.ends_with("/status") {
                received.statuses.push((
                    message.topic.clone(),
                    message.retained,
                    String::from_utf8_lossy(&message.payload).into_owned(),
                ));
                continue;
            }
            let Ok(Message::Batch(batch)) = edgearmor_wire::decode(&message.payload) else {
                continue;
            };
            let node = batch.agent.node.to_string();
            for (i, event) in batch.events.iter().enumerate() {
                let seq = batch.first_seq + i as u64;
                received
                    .seqs
                    .entry(node.clone())
                    .or_default()
                    .entry(batch.agent.boot_id)
                    .or_default()
                    .push(seq);
                if matches!(event.body, EventBody::Alert(_)) {
                    received
                        .alerts
                        .entry(node.clone())
                        .or_default()
                        .entry(batch.agent.boot_id)
                        .or_default()
                        .push(seq);
                }
            }
        }
        received
    }

    /// The one boot of `node` and its sequence numbers, deduplicated and sorted.
    pub fn unique_seqs(&self, node: &str) -> Vec<u64> {
        let boots = self.seqs.get(node).cloned().unwrap_or_default();
        assert!(
            boots.len() <= 1,
            "{node}: one agent boot expected, got {}",
            boots.len()
        );
        let mut seqs: Vec<u64> = boots.into_values().flatten().collect();
        seqs.sort_unstable();
        seqs.dedup();
        seqs
    }

    /// Sequence numbers that arrived more than once.
    pub fn repeats(&self, node: &str) -> usize {
        let all: usize = self
            .seqs
            .get(node)
            .map(|b| b.values().map(Vec::len).sum())
            .unwrap_or(0);
        all - self.unique_seqs(node).len()
    }
}

/// Asserts that `node`'s events reached `decoder` with sequence numbers exactly
/// `1..=count` after dropping repeats, and that its output has every test alert
/// `0..count` exactly once.
pub fn assert_delivered(decoder: &Decoder, node: &str, count: u64, context: &str) {
    let received = decoder.received();
    let seqs = received.unique_seqs(node);
    assert_eq!(
        seqs,
        (1..=count).collect::<Vec<_>>(),
        "{context}: {node}'s sequence numbers after dropping repeats"
    );
    let mut alerts = decoder.test_alerts(node);
    alerts.sort_unstable();
    assert_eq!(
        alerts,
        (0..count).collect::<Vec<_>>(),
        "{context}: every test alert of {node} exactly once in the decoder's output"
    );
}

/// Subscribes (MQTT 3.1.1, clean session) to the exact `topic` on 127.0.0.1:`port` and
/// returns the first retained message whose payload contains `needle`.
pub fn retained_message(port: u16, topic: &str, needle: &str) -> String {
    let mut options = rumqttc::MqttOptions::new(
        format!("edgearmor-retained-{}", process::free_port()),
        "127.0.0.1",
        port,
    );
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut connection) = rumqttc::Client::new(options, 10);
    client
        .subscribe(topic, rumqttc::QoS::AtLeastOnce)
        .expect("queue the subscription");
    let deadline = std::time::Instant::now() + process::WAIT;
    while std::time::Instant::now() < deadline {
        match connection.recv_timeout(Duration::from_millis(500)) {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)))) => {
                let text = String::from_utf8_lossy(&p.payload).into_owned();
                if p.retain && text.contains(needle) {
                    let _ = client.disconnect();
                    return text;
                }
            }
            // The broker may not be up yet; the next recv reconnects.
            Ok(Err(_)) => std::thread::sleep(Duration::from_millis(100)),
            _ => {}
        }
    }
    panic!("no retained message containing {needle:?} on {topic} (port {port})");
}

/// A configuration file for settings without a flag.
pub fn config_file(dir: &Scratch, name: &str, text: &str) -> PathBuf {
    let path = dir.file(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}

/// `path` as an argument (re-exported for the tests).
pub fn path_arg(path: &Path) -> String {
    arg(path)
}
