//! Real brokers from Debian's packages, started by the tests on free loopback ports,
//! each with a plain and a TLS MQTT listener (certificates from [`crate::pki`]), its
//! state in a scratch directory, and a readiness signal (an MQTT CONNECT accepted), not
//! a sleep:
//!
//! - [`Mosquitto`] (`/usr/sbin/mosquitto`, 2.x): MQTT 3.1.1 and 5, persistence on;
//! - [`Nats`] (`nats-server` 2.9 with JetStream, which its MQTT needs, and a
//!   `server_name`): MQTT 3.1.1 only; [`NatsCluster`] is three of them clustered;
//! - [`RabbitMq`] (`rabbitmq-server` 3.10 with `rabbitmq_mqtt` from an
//!   `enabled_plugins` file): MQTT 3.1.1 only; a foreground Erlang node with its own
//!   node name, distribution port, epmd (ours, on a port of its own), mnesia and log
//!   directories and config, so nothing of the machine's own RabbitMQ is touched.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::pki::Pki;
use crate::process::{Proc, WAIT, accepts, free_port, wait_until};

/// What a broker is and does, for the scenarios.
pub trait Broker {
    /// `mosquitto 2.0.11`, ...
    fn name(&self) -> String;
    /// The plain MQTT port.
    fn port(&self) -> u16;
    /// The TLS MQTT port (verified against [`Broker::ca`]).
    fn tls_port(&self) -> u16;
    fn ca(&self) -> PathBuf;
    /// Whether it speaks MQTT 5.
    fn speaks_v5(&self) -> bool;
    /// Whether retained messages reach subscriptions with wildcards.
    fn retained_on_wildcards(&self) -> bool;
    /// Stops it gracefully and starts it again with its state (sessions, queued
    /// messages, retained messages).
    fn restart(&mut self);
    /// SIGKILL: no goodbye, no state saved.
    fn kill(&mut self);
    /// Starts it again after [`Broker::kill`] with no state at all (as a broker without
    /// persistence comes back).
    fn start_fresh(&mut self);

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }

    fn tls_address(&self) -> String {
        format!("127.0.0.1:{}", self.tls_port())
    }
}

/// Waits until 127.0.0.1:`port` answers an MQTT 3.1.1 CONNECT with a CONNACK (of any
/// return code: a broker refusing anonymous clients is up too), and leaves at once.
pub fn wait_mqtt_ready(name: &str, port: u16, broker: &mut Proc) {
    let deadline = Instant::now() + WAIT;
    loop {
        if mqtt_accepts(port) {
            return;
        }
        if let Some(status) = broker.exited() {
            panic!(
                "{name} exited ({status}) while starting:\n{}",
                broker.output()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not accept an MQTT CONNECT on port {port} within {WAIT:?}:\n{}",
            broker.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn mqtt_accepts(port: u16) -> bool {
    if !accepts(port) {
        return false;
    }
    let mut options = rumqttc::MqttOptions::new(
        format!("edgearmor-readiness-{}", free_port()),
        "127.0.0.1",
        port,
    );
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut connection) = rumqttc::Client::new(options, 4);
    let answer = connection.recv_timeout(Duration::from_secs(5));
    if matches!(
        answer,
        Ok(Err(rumqttc::ConnectionError::ConnectionRefused(_)))
    ) {
        return true;
    }
    let accepted = matches!(
        answer,
        Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))))
    );
    if accepted && client.disconnect().is_ok() {
        // Until the DISCONNECT is written (or the connection ends).
        for _ in 0..10 {
            match connection.recv_timeout(Duration::from_millis(500)) {
                Ok(Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect))) | Ok(Err(_)) => {
                    break;
                }
                Ok(Ok(_)) => {}
                Err(_) => break,
            }
        }
    }
    accepted
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn remove_dir(path: &Path) {
    if path.exists() {
        std::fs::remove_dir_all(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

fn running_as_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The installed version of a Debian package, for the broker's name.
fn package_version(package: &str) -> String {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", package])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_else(|| "unknown version".into())
}

fn installed(program: &str, package: &str) {
    assert!(
        Path::new(program).exists(),
        "{program} is missing: install the Debian package {package} (scripts/install-deps.sh does)"
    );
}

/// mosquitto with persistence, a plain and a TLS listener.
pub struct Mosquitto {
    dir: PathBuf,
    conf: PathBuf,
    port: u16,
    tls_port: u16,
    pki: Pki,
    proc: Option<Proc>,
}

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

impl Mosquitto {
    /// Starts it with its state in `dir`; `extra` is added to its configuration
    /// (password files, ACLs, ...).
    pub fn start(dir: &Path, pki: &Pki, extra: &str) -> Self {
        installed(MOSQUITTO, "mosquitto");
        let port = free_port();
        let tls_port = free_port();
        let conf = dir.join("mosquitto.conf");
        let anonymous = if extra.contains("allow_anonymous") {
            ""
        } else {
            "allow_anonymous true\n"
        };
        // Started as root, mosquitto would switch to its own user and could not write
        // its persistence file here.
        let user = if running_as_root() { "user root\n" } else { "" };
        write(
            &conf,
            &format!(
                "per_listener_settings false\n{user}{anonymous}persistence true\npersistence_location {dir}/\n\
                 max_queued_messages 100000\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n\
                 listener {port} 127.0.0.1\n\
                 listener {tls_port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\nrequire_certificate false\n{extra}\n",
                dir = dir.display(),
                ca = pki.ca.display(),
                cert = pki.server_cert.display(),
                key = pki.server_key.display(),
            ),
        );
        let mut broker = Self {
            dir: dir.to_owned(),
            conf,
            port,
            tls_port,
            pki: pki.clone(),
            proc: None,
        };
        broker.launch();
        broker
    }

    fn launch(&mut self) {
        let mut command = Command::new(MOSQUITTO);
        command.arg("-c").arg(&self.conf);
        let mut proc = Proc::spawn("mosquitto", command);
        wait_mqtt_ready("mosquitto", self.port, &mut proc);
        wait_until("mosquitto's TLS listener", WAIT, || accepts(self.tls_port));
        self.proc = Some(proc);
    }

    fn stop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            // SIGTERM: it saves sessions and retained messages.
            proc.terminate();
        }
    }
}

impl Broker for Mosquitto {
    fn name(&self) -> String {
        format!("mosquitto {}", package_version("mosquitto"))
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn tls_port(&self) -> u16 {
        self.tls_port
    }
    fn ca(&self) -> PathBuf {
        self.pki.ca.clone()
    }
    fn speaks_v5(&self) -> bool {
        true
    }
    fn retained_on_wildcards(&self) -> bool {
        true
    }
    fn restart(&mut self) {
        self.stop();
        self.launch();
    }
    fn kill(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill();
        }
    }
    fn start_fresh(&mut self) {
        self.kill();
        let db = self.dir.join("mosquitto.db");
        if db.exists() {
            std::fs::remove_file(&db).unwrap_or_else(|e| panic!("{}: {e}", db.display()));
        }
        self.launch();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

const NATS: &str = "/usr/sbin/nats-server";

/// One nats-server process with JetStream and MQTT (plain or TLS: NATS has one MQTT
/// listener per server).
struct NatsNode {
    name: String,
    conf: PathBuf,
    store: PathBuf,
    mqtt_port: u16,
    proc: Option<Proc>,
}

impl NatsNode {
    fn new(dir: &Path, name: &str, mqtt: &str, mqtt_port: u16, cluster: &str) -> Self {
        installed(NATS, "nats-server");
        let store = dir.join(format!("{name}-jetstream"));
        let conf = dir.join(format!("{name}.conf"));
        let client_port = free_port();
        write(
            &conf,
            &format!(
                "server_name: \"{name}\"\nlisten: \"127.0.0.1:{client_port}\"\n\
                 jetstream {{ store_dir: \"{store}\" }}\n{mqtt}\n{cluster}\n",
                store = store.display(),
            ),
        );
        Self {
            name: name.to_owned(),
            conf,
            store,
            mqtt_port,
            proc: None,
        }
    }

    fn launch(&mut self) -> &mut Proc {
        let mut command = Command::new(NATS);
        command.arg("-c").arg(&self.conf);
        self.proc.insert(Proc::spawn(&self.name, command))
    }

    fn stop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.terminate();
        }
    }

    fn kill(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill();
        }
    }

    fn output(&self) -> String {
        self.proc.as_ref().map(Proc::output).unwrap_or_default()
    }
}

/// A single nats-server with MQTT on a plain port, and a second one with MQTT over TLS.
pub struct Nats {
    plain: NatsNode,
    tls: NatsNode,
    pki: Pki,
}

impl Nats {
    pub fn start(dir: &Path, pki: &Pki) -> Self {
        Self::start_with(dir, pki, "")
    }

    /// With `extra` in the plain server's configuration (authorization, ...).
    pub fn start_with(dir: &Path, pki: &Pki, extra: &str) -> Self {
        let id = std::process::id();
        let port = free_port();
        let tls_port = free_port();
        let plain = NatsNode::new(
            dir,
            &format!("ea-nats-{id}-{port}"),
            &format!("mqtt {{ listen: \"127.0.0.1:{port}\" }}"),
            port,
            extra,
        );
        let tls = NatsNode::new(
            dir,
            &format!("ea-nats-tls-{id}-{tls_port}"),
            &format!(
                "mqtt {{ listen: \"127.0.0.1:{tls_port}\", tls {{ cert_file: \"{}\", key_file: \"{}\", timeout: 5 }} }}",
                pki.server_cert.display(),
                pki.server_key.display()
            ),
            tls_port,
            "",
        );
        let mut nats = Self {
            plain,
            tls,
            pki: pki.clone(),
        };
        nats.launch_plain();
        let tls_port = nats.tls.mqtt_port;
        nats.tls.launch();
        wait_until("nats-server's MQTT TLS listener", WAIT, || {
            accepts(tls_port)
        });
        nats
    }

    fn launch_plain(&mut self) {
        let port = self.plain.mqtt_port;
        let name = self.plain.name.clone();
        let proc = self.plain.launch();
        wait_mqtt_ready(&name, port, proc);
    }

    pub fn output(&self) -> String {
        self.plain.output()
    }
}

impl Broker for Nats {
    fn name(&self) -> String {
        format!("nats-server {}", package_version("nats-server"))
    }
    fn port(&self) -> u16 {
        self.plain.mqtt_port
    }
    fn tls_port(&self) -> u16 {
        self.tls.mqtt_port
    }
    fn ca(&self) -> PathBuf {
        self.pki.ca.clone()
    }
    fn speaks_v5(&self) -> bool {
        false
    }
    fn retained_on_wildcards(&self) -> bool {
        true
    }
    fn restart(&mut self) {
        self.plain.stop();
        self.launch_plain();
    }
    fn kill(&mut self) {
        self.plain.kill();
    }
    fn start_fresh(&mut self) {
        self.plain.kill();
        remove_dir(&self.plain.store);
        self.launch_plain();
    }
}

/// Three nats-server nodes, JetStream clustered (the MQTT streams replicated on all
/// three), each with its own MQTT port.
pub struct NatsCluster {
    nodes: Vec<NatsNode>,
}

impl NatsCluster {
    pub fn start(dir: &Path) -> Self {
        let id = std::process::id();
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let route_list = routes
            .iter()
            .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let mut nodes: Vec<NatsNode> = routes
            .iter()
            .enumerate()
            .map(|(i, route)| {
                let mqtt_port = free_port();
                NatsNode::new(
                    dir,
                    &format!("ea-n{}-{id}", i + 1),
                    &format!("mqtt {{ listen: \"127.0.0.1:{mqtt_port}\", stream_replicas: 3 }}"),
                    mqtt_port,
                    &format!(
                        "cluster {{ name: \"ea-{id}\", listen: \"127.0.0.1:{route}\", routes: [{route_list}] }}"
                    ),
                )
            })
            .collect();
        for node in &mut nodes {
            node.launch();
        }
        let mut cluster = Self { nodes };
        for i in 0..3 {
            cluster.wait_ready(i);
        }
        cluster
    }

    fn wait_ready(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let port = node.mqtt_port;
        let name = node.name.clone();
        let Some(proc) = node.proc.as_mut() else {
            panic!("{name} is not running");
        };
        wait_mqtt_ready(&name, port, proc);
    }

    /// The MQTT port of node `i` (0, 1, 2).
    pub fn port(&self, i: usize) -> u16 {
        self.nodes[i].mqtt_port
    }

    pub fn address(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.port(i))
    }

    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts node `i` again with its JetStream state.
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].launch();
        self.wait_ready(i);
    }

    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- {}\n{}", n.name, n.output()))
            .collect()
    }

    pub fn name(&self) -> String {
        format!(
            "3 x nats-server {} (JetStream cluster)",
            package_version("nats-server")
        )
    }
}

const RABBITMQ: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const EPMD: &str = "/usr/bin/epmd";

/// A RabbitMQ node with the MQTT plugin, as a foreground process of its own.
pub struct RabbitMq {
    dir: PathBuf,
    node: String,
    port: u16,
    tls_port: u16,
    dist_port: u16,
    epmd_port: u16,
    pki: Pki,
    epmd: Option<Proc>,
    proc: Option<Proc>,
}

impl RabbitMq {
    pub fn start(dir: &Path, pki: &Pki) -> Self {
        installed(RABBITMQ, "rabbitmq-server");
        installed(EPMD, "erlang-base");
        let port = free_port();
        let tls_port = free_port();
        let s = |p: &Path| p.display().to_string();
        write(
            &dir.join("rabbitmq.config"),
            &format!(
                "[\n {{rabbit, [{{tcp_listeners, []}}, {{loopback_users, []}},\n   {{ssl_options, [{{cacertfile, \"{ca}\"}}, {{certfile, \"{cert}\"}}, {{keyfile, \"{key}\"}}, {{verify, verify_none}}, {{fail_if_no_peer_cert, false}}]}}]}},\n \
                 {{rabbitmq_mqtt, [{{tcp_listeners, [{{\"127.0.0.1\", {port}}}]}}, {{ssl_listeners, [{{\"127.0.0.1\", {tls_port}}}]}}, {{allow_anonymous, true}}]}}\n].\n",
                ca = s(&pki.ca),
                cert = s(&pki.server_cert),
                key = s(&pki.server_key),
            ),
        );
        write(&dir.join("enabled_plugins"), "[rabbitmq_mqtt].\n");
        let mut broker = Self {
            dir: dir.to_owned(),
            node: format!("edgearmor-{}-{port}@localhost", std::process::id()),
            port,
            tls_port,
            dist_port: free_port(),
            epmd_port: free_port(),
            pki: pki.clone(),
            epmd: None,
            proc: None,
        };
        broker.start_epmd();
        broker.launch();
        broker
    }

    /// Our own epmd in the foreground, so the node does not start a daemon one.
    fn start_epmd(&mut self) {
        let mut command = Command::new(EPMD);
        command.args(["-port", &self.epmd_port.to_string()]);
        let proc = Proc::spawn("epmd", command);
        let port = self.epmd_port;
        wait_until("epmd to listen", WAIT, || accepts(port));
        self.epmd = Some(proc);
    }

    fn launch(&mut self) {
        let dir = &self.dir;
        let mut command = Command::new(RABBITMQ);
        command
            .current_dir(dir)
            // Its Erlang cookie lives in HOME.
            .env("HOME", dir)
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.config"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", dir.join("rabbitmq.pid"))
            .env("RABBITMQ_CONF_ENV_FILE", dir.join("rabbitmq-env.conf"))
            // `exec erl`: the child is the node itself, and SIGTERM stops it cleanly.
            .env("RUNNING_UNDER_SYSTEMD", "1");
        let mut proc = Proc::spawn("rabbitmq-server", command);
        wait_mqtt_ready("rabbitmq-server", self.port, &mut proc);
        wait_until("rabbitmq's MQTT TLS listener", WAIT, || {
            accepts(self.tls_port)
        });
        self.proc = Some(proc);
    }

    pub fn output(&self) -> String {
        self.proc.as_ref().map(Proc::output).unwrap_or_default()
    }
}

impl Broker for RabbitMq {
    fn name(&self) -> String {
        format!("rabbitmq-server {}", package_version("rabbitmq-server"))
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn tls_port(&self) -> u16 {
        self.tls_port
    }
    fn ca(&self) -> PathBuf {
        self.pki.ca.clone()
    }
    fn speaks_v5(&self) -> bool {
        false
    }
    fn retained_on_wildcards(&self) -> bool {
        false
    }
    fn restart(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.terminate();
        }
        self.launch();
    }
    fn kill(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill();
        }
    }
    fn start_fresh(&mut self) {
        self.kill();
        remove_dir(&self.dir.join("mnesia"));
        self.launch();
    }
}

impl Drop for RabbitMq {
    fn drop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill();
        }
        if let Some(mut epmd) = self.epmd.take() {
            epmd.kill();
        }
    }
}
