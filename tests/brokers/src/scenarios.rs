//! The scenarios every broker of the matrix runs (agent `send-test-alerts` → broker →
//! `edgearmor-decode`), each asserting delivery by sequence number:
//!
//! - [`order`]: events in order, sequence numbers contiguous, every alert once;
//! - [`status`]: retained birth, last will after SIGKILL, both retained for late
//!   subscribers;
//! - [`redelivery`]: QoS 1 messages queued for a persistent decoder session survive a
//!   broker restart;
//! - [`tls`]: both over TLS, the broker verified against the test's CA;
//! - [`session_loss`]: the broker killed and started fresh (no persistence) while 100
//!   batches are unacknowledged: all delivered afterwards, from the agent's buffer;
//! - [`disjoint_filters`]: scale-out without shared subscriptions, one decoder per
//!   agent topic;
//! - [`shared_subscription`]: scale-out with an MQTT 5 share group;
//! - [`version_refused`]: `--mqtt-version 5` (or `--share-group`) against a broker
//!   that speaks only 3.1.1 says so and exits;
//! - [`lost_acks`]: PUBACKs that never come on a live connection: the batches are sent
//!   again.

use std::time::{Duration, Instant};

use crate::brokers::Broker;
use crate::process::{Scratch, wait_for};
use crate::proxy::{Mode, Proxy};
use crate::{Decoder, agent, agent_with_config, assert_delivered, config_file, counter, path_arg};

/// Runs scenarios against one broker, timing each; the summary goes to stderr.
pub struct Matrix<'a> {
    pub broker: &'a mut dyn Broker,
    pub dir: &'a Scratch,
    started: Instant,
    results: Vec<(String, Duration)>,
}

impl<'a> Matrix<'a> {
    pub fn new(broker: &'a mut dyn Broker, dir: &'a Scratch, started: Instant) -> Self {
        Self {
            broker,
            dir,
            started,
            results: Vec::new(),
        }
    }

    pub fn run(&mut self, name: &str, scenario: impl FnOnce(&mut dyn Broker, &Scratch)) {
        eprintln!("[{}] {name} ...", self.broker.name());
        let start = Instant::now();
        scenario(self.broker, self.dir);
        let took = start.elapsed();
        eprintln!(
            "[{}] {name} ok ({:.1} s)",
            self.broker.name(),
            took.as_secs_f64()
        );
        self.results.push((name.to_owned(), took));
    }

    /// One line per scenario with its duration, and the total with the broker's start.
    pub fn summary(&self) -> String {
        let mut text = format!("{}:", self.broker.name());
        for (name, took) in &self.results {
            text.push_str(&format!(" {name} {:.1} s;", took.as_secs_f64()));
        }
        text.push_str(&format!(
            " total with broker start {:.1} s",
            self.started.elapsed().as_secs_f64()
        ));
        text
    }
}

/// `--mqtt-version` for both sides, or nothing (auto).
fn version_args(version: Option<&'static str>) -> Vec<&'static str> {
    version
        .map(|v| vec!["--mqtt-version", v])
        .unwrap_or_default()
}

/// Events arrive in order with contiguous sequence numbers; the connection says which
/// version `auto` settled on.
pub fn order(broker: &mut dyn Broker, dir: &Scratch, version: Option<&'static str>) {
    const EVENTS: u64 = 300;
    let tag = version.unwrap_or("auto").replace('.', "");
    let node = format!("gw-order-{tag}");
    let address = broker.address();
    let mut args = vec!["--broker", address.as_str()];
    args.extend(version_args(version));
    let mut decoder = Decoder::ready(dir, &format!("order-{tag}"), &args);
    let mut extra = vec!["--shutdown-grace-secs", "60"];
    extra.extend(version_args(version));
    let mut sender = agent(&address, &node, EVENTS, 1, &extra);
    sender.wait_success();
    decoder.wait_alerts(&node, EVENTS);
    assert_delivered(&decoder, &node, EVENTS, "order");
    // Arrival order: nothing arrives before everything below it did (repeats allowed).
    let received = decoder.received();
    let mut highest = 0;
    for seq in received.seqs[&node].values().flatten() {
        assert!(
            *seq <= highest + 1,
            "sequence number {seq} arrived before {}",
            highest + 1
        );
        highest = highest.max(*seq);
    }
    let expected = match version {
        Some("3.1.1") => "(MQTT 3.1.1)",
        Some(_) => "(MQTT 5)",
        None if broker.speaks_v5() => "(MQTT 5)",
        None => "(MQTT 3.1.1)",
    };
    let output = sender.output();
    assert!(
        output.contains(&format!("MQTT: connected to {address} {expected}")),
        "the agent speaks {expected}:\n{output}"
    );
    if version.is_none() && !broker.speaks_v5() {
        assert_eq!(
            output.matches("does not speak MQTT 5").count(),
            1,
            "auto says once that it fell back:\n{output}"
        );
    }
    let stopped = decoder.stop();
    assert_eq!(counter(&stopped, "gaps"), Some(0), "{stopped}");
}

/// Birth retained, last will after SIGKILL, both retained for a late subscriber of the
/// exact topic; a late decoder (wildcard subscriptions) gets the retained last will
/// where the broker hands retained messages to wildcard subscriptions.
pub fn status(broker: &mut dyn Broker, dir: &Scratch) {
    let node = "gw-status";
    let topic = format!("edgearmor/matrix/{node}/status");
    let address = broker.address();
    let decoder = Decoder::ready(dir, "status", &["--broker", &address]);
    let mut sender = agent(&address, node, 100_000, 50, &[]);
    wait_for("the birth message", || {
        !decoder.statuses(node, "online").is_empty()
    });
    let birth = crate::retained_message(broker.port(), &topic, "\"state\":\"online\"");
    assert!(birth.contains("\"boot_id\":"), "{birth}");
    sender.kill();
    wait_for("the last will", || {
        !decoder.statuses(node, "offline").is_empty()
    });
    crate::retained_message(broker.port(), &topic, "\"state\":\"offline\"");
    if broker.retained_on_wildcards() {
        let late = Decoder::ready(dir, "status-late", &["--broker", &address]);
        wait_for("the retained last will at a late decoder", || {
            late.statuses(node, "offline").iter().any(|l| {
                l["Message"].as_str().is_some_and(|m| {
                    m.contains("[retained: published before this decoder subscribed]")
                })
            })
        });
    }
}

/// QoS 1 redelivery across a broker restart: events queued for a persistent decoder
/// session while it is away survive the restart and arrive when it comes back.
pub fn redelivery(broker: &mut dyn Broker, dir: &Scratch) {
    const EVENTS: u64 = 50;
    let node = "gw-redelivery";
    let address = broker.address();
    let session = [
        "--broker",
        address.as_str(),
        "--client-id",
        "matrix-redelivery",
    ];
    let mut first = Decoder::ready(dir, "redelivery-1", &session);
    // A clean DISCONNECT: the broker keeps the session and queues for it.
    first.stop();
    let mut sender = agent(&address, node, EVENTS, 1, &[]);
    // The agent exits once the broker has acknowledged every batch.
    sender.wait_success();
    broker.restart();
    let second = Decoder::ready(dir, "redelivery-2", &session);
    second.wait_alerts(node, EVENTS);
    assert_delivered(&second, node, EVENTS, "redelivery across a broker restart");
}

/// Agent and decoder over TLS, the broker verified against the test's CA.
pub fn tls(broker: &mut dyn Broker, dir: &Scratch) {
    const EVENTS: u64 = 50;
    let node = "gw-tls";
    let address = broker.tls_address();
    let ca = path_arg(&broker.ca());
    let decoder = Decoder::ready(dir, "tls", &["--broker", &address, "--ca", &ca]);
    let mut sender = agent(&address, node, EVENTS, 1, &["--ca", &ca]);
    sender.wait_success();
    decoder.wait_alerts(node, EVENTS);
    assert_delivered(&decoder, node, EVENTS, "TLS");
}

/// Broker session loss: the agent connects through a proxy that lets its CONNECT
/// through and then holds everything it sends, so 100 batches (one event each) stay
/// unacknowledged; the broker is killed and started with no state (as one without
/// persistence comes back), a decoder subscribes to it, and only then does the agent
/// see its connection end. Its reconnect must deliver all 100 from its own buffer,
/// whatever the broker (does not) remember.
pub fn session_loss(broker: &mut dyn Broker, dir: &Scratch) {
    const BATCHES: u64 = 100;
    let node = "gw-session-loss";
    let proxy = Proxy::start(broker.port(), Mode::HoldAfterConnect);
    let address = broker.address();
    let watcher = Decoder::ready(dir, "session-loss-before", &["--broker", &address]);
    // The agent must not notice the held connection by itself before the cut: with
    // the default keep-alive (30 s) its unanswered ping, or its batches unacknowledged
    // for twice that, end the connection after about a minute, and killing the broker
    // and starting it fresh (RabbitMQ, on a loaded machine) can take longer. The cut
    // is seen at once whatever the keep-alive.
    let config = config_file(
        dir,
        "one-event-batches.toml",
        "[pipeline]\nbatch_max_events = 1\nflush_interval_ms = 1\n[mqtt]\nkeep_alive_secs = 600\n",
    );
    let mut sender = agent_with_config(
        &config,
        &proxy.address(),
        node,
        BATCHES,
        0,
        &["--shutdown-grace-secs", "120"],
    );
    sender.wait_output("MQTT: connected to");
    sender.wait_output(&format!(
        "produced {BATCHES} event(s) from {BATCHES} test alert(s), delivering"
    ));
    assert!(
        !watcher.received().seqs.contains_key(node),
        "nothing may pass the proxy before the broker loses the session"
    );
    drop(watcher);
    proxy.keep_clients_open();
    broker.kill();
    broker.start_fresh();
    let decoder = Decoder::ready(dir, "session-loss-after", &["--broker", &address]);
    assert_eq!(
        sender.count("MQTT: connected to"),
        1,
        "the agent has not noticed yet:\n{}",
        sender.output()
    );
    proxy.set_mode(Mode::Forward);
    proxy.cut();
    sender.wait_success();
    decoder.wait_alerts(node, BATCHES);
    assert_delivered(&decoder, node, BATCHES, "after the broker lost the session");
    assert!(
        sender.count("MQTT: connected to") >= 2,
        "the agent reconnected:\n{}",
        sender.output()
    );
}

/// Acknowledgements that never come on a live connection (pings answered): after twice
/// the keep-alive the agent starts a new connection and sends the batches again.
pub fn lost_acks(broker: &mut dyn Broker, dir: &Scratch) {
    const EVENTS: u64 = 50;
    let node = "gw-lost-acks";
    let proxy = Proxy::start(broker.port(), Mode::DropPubAcks);
    let address = broker.address();
    let decoder = Decoder::ready(dir, "lost-acks", &["--broker", &address]);
    let config = config_file(dir, "keep-alive-5.toml", "[mqtt]\nkeep_alive_secs = 5\n");
    let mut sender = agent_with_config(
        &config,
        &proxy.address(),
        node,
        EVENTS,
        1,
        &["--shutdown-grace-secs", "120"],
    );
    // The events reach the broker, and through it the decoder, unacknowledged.
    decoder.wait_alerts(node, EVENTS);
    proxy.set_mode(Mode::Forward);
    sender.wait_output(&format!(
        "MQTT: broker {} has not acknowledged",
        proxy.address()
    ));
    sender.wait_success();
    assert_delivered(&decoder, node, EVENTS, "after lost acknowledgements");
    assert!(
        decoder.received().repeats(node) > 0,
        "the unacknowledged batches were sent again"
    );
}

/// Scale-out without shared subscriptions: one decoder per agent topic filter, each
/// gets exactly its agent's events.
pub fn disjoint_filters(broker: &mut dyn Broker, dir: &Scratch) {
    const EVENTS: u64 = 100;
    let address = broker.address();
    let nodes = ["gw-left", "gw-right"];
    let decoders: Vec<Decoder> = nodes
        .iter()
        .map(|node| {
            let filter = format!("edgearmor/matrix/{node}/events");
            Decoder::ready(
                dir,
                &format!("filter-{node}"),
                &["--broker", &address, "--topic", &filter],
            )
        })
        .collect();
    let mut senders: Vec<_> = nodes
        .iter()
        .map(|node| agent(&address, node, EVENTS, 1, &[]))
        .collect();
    for sender in &mut senders {
        sender.wait_success();
    }
    for (decoder, node) in decoders.iter().zip(nodes) {
        decoder.wait_alerts(node, EVENTS);
        assert_delivered(decoder, node, EVENTS, "disjoint topic filters");
        let other = nodes
            .iter()
            .find(|n| **n != node)
            .copied()
            .unwrap_or_default();
        assert!(
            decoder.test_alerts(other).is_empty(),
            "{node}'s decoder must not see {other}'s events"
        );
    }
}

/// Scale-out with an MQTT 5 share group: two decoders, every event exactly once
/// across them.
pub fn shared_subscription(broker: &mut dyn Broker, dir: &Scratch) {
    const EVENTS: u64 = 200;
    let node = "gw-shared";
    let address = broker.address();
    let decoders: Vec<Decoder> = (0..2)
        .map(|i| {
            Decoder::ready(
                dir,
                &format!("shared-{i}"),
                &["--broker", &address, "--share-group", "matrix"],
            )
        })
        .collect();
    let mut sender = agent(&address, node, EVENTS, 1, &[]);
    sender.wait_success();
    wait_for("every shared event", || {
        decoders
            .iter()
            .map(|d| d.test_alerts(node).len() as u64)
            .sum::<u64>()
            >= EVENTS
    });
    let mut all: Vec<u64> = decoders.iter().flat_map(|d| d.test_alerts(node)).collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..EVENTS).collect::<Vec<_>>(),
        "every event exactly once across the share group"
    );
    assert!(
        decoders.iter().all(|d| !d.test_alerts(node).is_empty()),
        "both members got a share"
    );
}

/// `--mqtt-version 5` against a broker that speaks only 3.1.1: the decoder exits
/// naming the version; the agent says the same and keeps retrying.
pub fn version_refused(broker: &mut dyn Broker, dir: &Scratch) {
    let address = broker.address();
    let mut decoder = Decoder::start(
        dir,
        "v5-only",
        &["--broker", &address, "--mqtt-version", "5"],
    );
    let status = decoder.proc.wait_exit();
    let output = decoder.proc.output();
    assert_eq!(status.code(), Some(1), "{output}");
    let expected = format!(
        "edgearmor-decode: broker {address} does not speak MQTT 5: it closed the connection on our MQTT 5 CONNECT without answering, and accepts MQTT 3.1.1; set --mqtt-version to auto or 3.1.1"
    );
    assert!(output.contains(&expected), "{output}");
    // A share group needs MQTT 5: `auto` landing on 3.1.1 is an error, not a decoder
    // that would get no events.
    let mut shared = Decoder::start(
        dir,
        "v5-share",
        &["--broker", &address, "--share-group", "g"],
    );
    let status = shared.proc.wait_exit();
    let output = shared.proc.output();
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(
        output.contains(&format!("edgearmor-decode: broker {address} speaks only MQTT 3.1.1, and --share-group needs MQTT 5 shared subscriptions")),
        "{output}"
    );
    let mut sender = agent(&address, "gw-v5-only", 5, 1, &["--mqtt-version", "5"]);
    sender.wait_output(&format!("broker {address} does not speak MQTT 5"));
    assert!(
        sender
            .output()
            .contains("set mqtt.mqtt_version to auto or 3.1.1"),
        "{}",
        sender.output()
    );
    sender.kill();
}
