//! Every way a broker refuses, against real brokers: the agent and the decoder must
//! name the broker, the code and the fix. Decoders exit (status 1) when retrying cannot
//! help; agents keep retrying and say why. mosquitto answers with reason codes over
//! MQTT 5 and return codes over 3.1.1 but grants every subscription (its ACL filters
//! deliveries), so refused subscriptions are nats-server's (3.1.1 return code 0x80).
//! The protocol version refused is in the matrix (`scenarios::version_refused`).

use std::process::Command;

use edgearmor_broker_tests::brokers::{Broker, Mosquitto, Nats};
use edgearmor_broker_tests::process::Scratch;
use edgearmor_broker_tests::{Decoder, agent, pki};

/// A mosquitto with users `agent`, `decoder` (password `right`) and an ACL: the agent
/// may publish only its status and policy tables (not events); anonymous clients are
/// refused.
fn locked_broker(dir: &Scratch) -> Mosquitto {
    let passwords = dir.file("passwords");
    for (i, user) in ["agent", "decoder"].iter().enumerate() {
        let mut command = Command::new("mosquitto_passwd");
        if i == 0 {
            command.arg("-c");
        }
        let status = command
            .arg("-b")
            .arg(&passwords)
            .args([user, "right"])
            .status()
            .expect("mosquitto_passwd runs");
        assert!(status.success());
    }
    let acl = dir.file("acl");
    std::fs::write(
        &acl,
        "user agent\ntopic write edgearmor/matrix/+/status\ntopic write edgearmor/matrix/+/policies/#\n\n\
         user decoder\ntopic read edgearmor/#\n",
    )
    .expect("acl");
    let pki = pki::make(&dir.path, "refusals");
    let extra = format!(
        "allow_anonymous false\npassword_file {}\nacl_file {}\n",
        passwords.display(),
        acl.display()
    );
    // Run as root, mosquitto drops to its own user: it must read these files.
    let _ = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(&dir.path)
        .status();
    Mosquitto::start(&dir.dir("broker"), &pki, &extra)
}

fn password(dir: &Scratch, name: &str, text: &str) -> String {
    let path = dir.file(name);
    std::fs::write(&path, format!("{text}\n")).expect("password file");
    path.to_string_lossy().into_owned()
}

/// The decoder's exit: status 1 and `expected` in its output.
fn exits_with(decoder: &mut Decoder, expected: &str) {
    let status = decoder.proc.wait_exit();
    let output = decoder.proc.output();
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(
        output.contains(expected),
        "expected {expected:?} in:\n{output}"
    );
}

#[test]
fn bad_credentials_name_the_code_and_the_settings() {
    let dir = Scratch::new("refused-credentials");
    let broker = locked_broker(&dir);
    let address = broker.address();
    let wrong = password(&dir, "wrong", "wrong");
    for (version, code) in [
        // mosquitto 2.0 says "not authorized" for a wrong password.
        ("5", "not authorized (MQTT 5 reason code 0x87)"),
        ("3.1.1", "not authorized (MQTT 3.1.1 return code 0x05)"),
    ] {
        let mut decoder = Decoder::start(
            &dir,
            &format!("credentials-{version}"),
            &[
                "--broker",
                &address,
                "--mqtt-version",
                version,
                "--username",
                "decoder",
                "--password-file",
                &wrong,
            ],
        );
        exits_with(
            &mut decoder,
            &format!(
                "edgearmor-decode: broker {address} refused the connection: {code}; check --username and --password-file"
            ),
        );
    }
    let mut sender = agent(
        &address,
        "gw-creds",
        5,
        1,
        &["--username", "agent", "--password-file", &wrong],
    );
    sender.wait_output(&format!(
        "broker {address} refused the connection: not authorized (MQTT 5 reason code 0x87); check mqtt.username and mqtt.password_file"
    ));
}

#[test]
fn a_subscription_the_acl_forbids_is_named_with_its_filter() {
    let dir = Scratch::new("refused-subscription");
    let pki = pki::make(&dir.path, "nats-acl");
    // MQTT clients of a NATS user with permissions need its internal $MQTT subjects.
    let authorization = "authorization { users = [ {user: decoder, password: right, permissions: \
        {subscribe: [\"edgearmor.*.*.status\", \"edgearmor.*.*.policies.*\", \"$MQTT.sub.>\"], publish: [\"$MQTT.>\"]}} ] }";
    let broker = Nats::start_with(&dir.dir("broker"), &pki, authorization);
    let address = broker.address();
    let right = password(&dir, "right", "right");
    let mut decoder = Decoder::start(
        &dir,
        "subscription",
        &[
            "--broker",
            &address,
            "--username",
            "decoder",
            "--password-file",
            &right,
        ],
    );
    exits_with(
        &mut decoder,
        &format!(
            "edgearmor-decode: broker {address} refused the subscription to edgearmor/+/+/events: failure (MQTT 3.1.1 return code 0x80); the broker's ACL must let user \"decoder\" read edgearmor/+/+/events"
        ),
    );
}

#[test]
fn a_publish_the_acl_forbids_is_named_and_the_batches_stay_buffered() {
    let dir = Scratch::new("refused-publish");
    let broker = locked_broker(&dir);
    let address = broker.address();
    let right = password(&dir, "right", "right");
    let mut sender = agent(
        &address,
        "gw-acl",
        5,
        1,
        &[
            "--username",
            "agent",
            "--password-file",
            &right,
            "--mqtt-version",
            "5",
        ],
    );
    sender.wait_output(&format!(
        "MQTT: broker {address} refused a publish to edgearmor/matrix/gw-acl/events: not authorized (MQTT 5 reason code 0x87); the broker's ACL must let user \"agent\" publish to edgearmor/matrix/gw-acl/events; batches stay buffered"
    ));
    // Not delivered, so not acknowledged: the agent keeps them and tries again.
    sender.wait_output_n("MQTT: connected to", 2);
    assert!(sender.exited().is_none(), "{}", sender.output());
}

#[test]
fn a_client_id_taken_over_is_named() {
    let dir = Scratch::new("refused-client-id");
    let pki = pki::make(&dir.path, "client-id");
    let broker = Mosquitto::start(&dir.dir("broker"), &pki, "");
    let address = broker.address();
    // Two decoders with one client id take the session from each other. An MQTT 5
    // broker may say so (DISCONNECT 0x8e, which stops the decoder); mosquitto 2.0 just
    // closes the older connection, over 3.1.1 and 5 alike: the short-lived connections
    // are pointed out, with the client id.
    for version in ["5", "3.1.1"] {
        let id = format!("decoder-twin-{}", version.replace('.', ""));
        let session = [
            "--broker",
            address.as_str(),
            "--client-id",
            id.as_str(),
            "--mqtt-version",
            version,
        ];
        let mut first = Decoder::ready(&dir, &format!("{id}-1"), &session);
        let _second = Decoder::ready(&dir, &format!("{id}-2"), &session);
        first.proc.wait_output(&format!(
            "another client may be using the client id \"{id}\": give every client its own --client-id"
        ));
    }
}

#[test]
fn tls_to_a_plain_port_is_named() {
    let dir = Scratch::new("refused-tls");
    let pki = pki::make(&dir.path, "plain-port");
    let broker = Mosquitto::start(&dir.dir("broker"), &pki, "");
    let address = broker.address();
    let ca = pki.ca.to_string_lossy().into_owned();
    let mut decoder = Decoder::start(&dir, "tls-plain", &["--broker", &address, "--ca", &ca]);
    exits_with(
        &mut decoder,
        &format!("edgearmor-decode: TLS connection to {address} failed:"),
    );
    assert!(
        decoder
            .proc
            .output()
            .contains("(is this the broker's TLS port? it did not complete a TLS handshake)"),
        "{}",
        decoder.proc.output()
    );
}
