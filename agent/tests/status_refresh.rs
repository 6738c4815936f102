//! The periodic status refresh against a real mosquitto: the agent's outputs (MQTT thread
//! and all) publish a refreshed `online` status with counters on the status topic alone
//! (the policy tables are not sent again), the broker's link state is what the MQTT
//! thread saw, and the next connect's birth is the refreshed one.

use std::path::Path;

use edgearmor::commands::session::Session;
use edgearmor::config::AgentConfig;
use edgearmor::control::policy_table::PolicyCatalog;
use edgearmor::host::LiveKernel;
use edgearmor_mqtt::StatusMessage;
use edgearmor_vm::broker::{Broker, Subscriber, free_port, scratch, wait_for};

fn statuses(sub: &Subscriber) -> Vec<StatusMessage> {
    sub.on_topic("/gw-refresh/status")
        .iter()
        .map(|(p, _)| StatusMessage::from_json(p).expect("a valid status"))
        .collect()
}

#[test]
fn refreshed_counters_reach_the_broker_alone_and_survive_a_reconnect() {
    let dir = scratch(Path::new(env!("CARGO_TARGET_TMPDIR")), "status-refresh");
    let port = free_port();
    let mut broker = Broker::start(&dir, port, "");
    let sub = Subscriber::connect(port, "refresh-watcher");
    let mut config = AgentConfig::default();
    config.mqtt.broker = format!("127.0.0.1:{port}");
    config.node = "gw-refresh".into();
    config.output.stdout = false;
    let catalog = PolicyCatalog::default();
    let session = Session::start(&config, catalog.snapshot(), &LiveKernel, Err("test".into()))
        .expect("outputs start");
    let mqtt = session.outputs.mqtt.as_ref().expect("MQTT output");
    let handle = mqtt.status_handle();
    wait_for("the first connect", || handle.link().connected());
    wait_for("the birth", || !statuses(&sub).is_empty());
    sub.barrier();
    let tables_before = sub.on_topic("/policies/0").len();
    assert_eq!(
        statuses(&sub)[0].counters.iter().count(),
        0,
        "the first birth has none"
    );

    let board = session.outputs.status_board();
    let refreshed = {
        let mut status = board.borrow_mut();
        status.counters.set("alerts_sent", 41);
        status
            .counters
            .set("broker_reconnects", handle.link().connects() - 1);
        status.unix_secs += 60;
        status.birth_json()
    };
    handle.refresh(refreshed.clone());
    wait_for("the refreshed status", || statuses(&sub).len() >= 2);
    sub.barrier();
    let latest = statuses(&sub).pop().expect("a status");
    assert_eq!(latest.counters.get("alerts_sent"), Some(41));
    assert_eq!(latest.counters.get("broker_reconnects"), Some(0));
    assert_eq!(
        sub.on_topic("/policies/0").len(),
        tables_before,
        "a refresh does not resend the policy tables"
    );
    assert_eq!(handle.buffered_batches(), 0);

    // The broker goes away, forgetting everything it retained, and comes back: the link
    // says so, and what it retains now (the agent's birth on reconnecting, nothing
    // else) is the refreshed status, not the first one.
    broker.stop();
    wait_for("the lost connection", || !handle.link().connected());
    assert!(!handle.link().last_error().is_empty());
    std::fs::remove_file(dir.join("mosquitto.db")).expect("mosquitto saved its state");
    broker.resume();
    wait_for("the reconnect", || handle.link().connects() == 2);
    let late = Subscriber::connect(port, "refresh-late");
    wait_for("the retained birth", || !statuses(&late).is_empty());
    let reborn = statuses(&late).pop().expect("a status");
    assert_eq!(reborn.counters.get("alerts_sent"), Some(41), "{refreshed}");
    session.outputs.shutdown();
}
