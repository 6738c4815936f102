//! A clustered broker: three nats-server nodes with JetStream clustered (the MQTT
//! streams replicated on all three) on loopback. Two agents publish to two different
//! nodes, their decoders (one per agent, disjoint topic filters, persistent sessions)
//! read from the others; mid-stream one node is killed (SIGKILL) and started again.
//! Every event must come out of the decoders exactly once after sequence dedup, with
//! contiguous sequence numbers, and nothing may be lost that the agents did not report
//! lost themselves (they report none: their buffers are large enough).

use std::time::Instant;

use edgearmor_broker_tests::brokers::NatsCluster;
use edgearmor_broker_tests::process::{Scratch, wait_for};
use edgearmor_broker_tests::{Decoder, agent, assert_delivered};

const EVENTS: u64 = 1500;

/// The `N` of the agent's `produced N event(s) from N test alert(s)` line: with no
/// throttle every event is a test alert.
fn produced(output: &str) -> u64 {
    output
        .lines()
        .find_map(|l| l.split("edgearmor: produced ").nth(1))
        .and_then(|rest| {
            let (events, rest) = rest.split_once(" event(s) from ")?;
            let (alerts, _) = rest.split_once(' ')?;
            (events == alerts).then(|| events.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no `produced N event(s) from N test alert(s)` line:\n{output}"))
}

#[test]
fn a_nats_cluster_delivers_every_event_once_when_a_node_dies_mid_stream() {
    let started = Instant::now();
    let dir = Scratch::new("cluster");
    let mut cluster = NatsCluster::start(&dir.dir("nodes"));
    let cluster_up = started.elapsed();
    // gw-1 publishes to node 1 and is decoded from node 3; gw-2 publishes to node 2
    // and is decoded from node 1, the node that dies.
    let decoder_of = |node: &str, at: usize| {
        let filter = format!("edgearmor/matrix/{node}/events");
        let id = format!("cluster-decoder-{node}");
        Decoder::ready(
            &dir,
            &format!("cluster-{node}"),
            &[
                "--broker",
                &cluster.address(at),
                "--client-id",
                &id,
                "--topic",
                &filter,
            ],
        )
    };
    let gw1 = decoder_of("gw-1", 2);
    let gw2 = decoder_of("gw-2", 0);
    let grace = ["--shutdown-grace-secs", "120"];
    // gw-1's stream ends only when told to (SIGTERM, once the node is back): with a
    // fixed count it could have been sent in full (3 s) while the decoders, slowed by
    // a loaded machine, had shown only 200 of it, and the node would die after the
    // stream instead of in its middle. Its buffer (64 MiB, not 1) holds what it makes
    // however long the node takes to come back: nothing may be dropped.
    let gw1_args = ["--shutdown-grace-secs", "120", "--buffer-bytes", "67108864"];
    let mut agent1 = agent(&cluster.address(0), "gw-1", 1_000_000, 2, &gw1_args);
    let mut agent2 = agent(&cluster.address(1), "gw-2", EVENTS, 2, &grace);

    wait_for("gw-1's stream to be under way", || {
        gw1.test_alerts("gw-1").len() >= 200
    });
    cluster.kill(0);
    // The agent on the dead node notices and buffers.
    agent1.wait_output("MQTT: connection to broker");
    let killed_after = gw1.test_alerts("gw-1").len();
    cluster.restart(0);
    // The stream goes on through the restarted node, then ends.
    wait_for("gw-1's stream after the restart", || {
        gw1.test_alerts("gw-1").len() >= killed_after + 200
    });
    let status = agent1.terminate();
    assert!(
        status.success(),
        "agent gw-1 ({status}):\n{}",
        agent1.output()
    );
    let gw1_events = produced(&agent1.output());

    agent2.wait_success();
    gw1.wait_alerts("gw-1", gw1_events);
    gw2.wait_alerts("gw-2", EVENTS);
    for (decoder, node, events) in [(&gw1, "gw-1", gw1_events), (&gw2, "gw-2", EVENTS)] {
        assert_delivered(decoder, node, events, "across a node's death");
        let received = decoder.received();
        let losses: usize = received
            .seqs
            .get(node)
            .map(|boots| boots.values().map(Vec::len).sum::<usize>())
            .unwrap_or(0)
            - received
                .alerts
                .get(node)
                .map(|boots| boots.values().map(Vec::len).sum::<usize>())
                .unwrap_or(0);
        assert_eq!(
            losses, 0,
            "{node}: no loss reports, nothing the agent counted as lost"
        );
    }
    assert!(
        (killed_after as u64) < gw1_events,
        "the node died mid-stream ({killed_after} of {gw1_events} had arrived)"
    );
    eprintln!(
        "{}: cluster up in {:.1} s; node 1 killed after {killed_after} of gw-1's {gw1_events} events; \
         gw-1 repeats {} gw-2 repeats {}; total {:.1} s",
        cluster.name(),
        cluster_up.as_secs_f64(),
        gw1.received().repeats("gw-1"),
        gw2.received().repeats("gw-2"),
        started.elapsed().as_secs_f64()
    );
}
