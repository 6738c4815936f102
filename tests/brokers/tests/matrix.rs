//! The broker matrix: each broker from Debian's packages, started once for this test
//! binary's test of it, runs the scenarios of `edgearmor_broker_tests::scenarios`
//! (the real agent → the broker → the real decoder, asserting delivery by sequence
//! number). The summary line with each scenario's duration goes to stderr
//! (`cargo test -p edgearmor-broker-tests --test matrix -- --nocapture`).

use std::time::Instant;

use edgearmor_broker_tests::brokers::{Mosquitto, Nats, RabbitMq};
use edgearmor_broker_tests::pki;
use edgearmor_broker_tests::process::Scratch;
use edgearmor_broker_tests::scenarios::{
    Matrix, disjoint_filters, lost_acks, order, redelivery, session_loss, shared_subscription,
    status, tls, version_refused,
};

#[test]
fn mosquitto() {
    let started = Instant::now();
    let dir = Scratch::new("mosquitto");
    let pki = pki::make(&dir.path, "mosquitto");
    let mut broker = Mosquitto::start(&dir.dir("broker"), &pki, "");
    let mut matrix = Matrix::new(&mut broker, &dir, started);
    matrix.run("order, auto (MQTT 5)", |b, d| order(b, d, None));
    matrix.run("order, MQTT 3.1.1", |b, d| order(b, d, Some("3.1.1")));
    matrix.run("status", status);
    matrix.run("QoS 1 across a restart", redelivery);
    matrix.run("TLS", tls);
    matrix.run("session loss", session_loss);
    matrix.run("lost PUBACKs", lost_acks);
    matrix.run("shared subscription", shared_subscription);
    matrix.run("disjoint filters", disjoint_filters);
    eprintln!("{}", matrix.summary());
}

#[test]
fn nats_server() {
    let started = Instant::now();
    let dir = Scratch::new("nats");
    let pki = pki::make(&dir.path, "nats");
    let mut broker = Nats::start(&dir.dir("broker"), &pki);
    let mut matrix = Matrix::new(&mut broker, &dir, started);
    matrix.run("order, auto (MQTT 3.1.1)", |b, d| order(b, d, None));
    matrix.run("MQTT 5 refused", version_refused);
    matrix.run("status", status);
    matrix.run("QoS 1 across a restart", redelivery);
    matrix.run("TLS", tls);
    matrix.run("session loss", session_loss);
    matrix.run("disjoint filters", disjoint_filters);
    eprintln!("{}", matrix.summary());
}

#[test]
fn rabbitmq_server() {
    let started = Instant::now();
    let dir = Scratch::new("rabbitmq");
    let pki = pki::make(&dir.path, "rabbitmq");
    let mut broker = RabbitMq::start(&dir.dir("broker"), &pki);
    let mut matrix = Matrix::new(&mut broker, &dir, started);
    matrix.run("order, auto (MQTT 3.1.1)", |b, d| order(b, d, None));
    matrix.run("MQTT 5 refused", version_refused);
    matrix.run("status", status);
    matrix.run("QoS 1 across a restart", redelivery);
    matrix.run("TLS", tls);
    matrix.run("session loss", session_loss);
    matrix.run("disjoint filters", disjoint_filters);
    eprintln!("{}", matrix.summary());
}
