//! Broker fixtures for integration tests: a real `mosquitto` on a free loopback port
//! (stopped and restarted at will, its sessions persisted across restarts) and a
//! subscriber that records everything under `edgearmor/#` and decodes event batches.
//! Test support: failures panic with a message naming what did not happen.

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgearmor_wire::{EventBody, Message};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

/// How long fixtures wait for a condition before failing the test.
pub const WAIT: Duration = Duration::from_secs(60);

/// Where [`free_port`] starts looking.
const FIXED_PORTS_FROM: u16 = 10_000;

/// A loopback port nobody listens on right now, below the kernel's ephemeral range.
///
/// A test's broker can leave its port unbound for seconds (stopped and resumed, or
/// started after the agent already tries it). A port of the ephemeral range can in
/// that time become the local end of any loopback connection on the machine (or of
/// the agent's own attempt, a TCP self-connect), and the broker then cannot bind it
/// again; a port below the range is only ever taken by an explicit bind. Each
/// process walks the range from its own offset, so parallel tests (and parallel test
/// processes) do not try the same ports.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_from = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let span = u32::from(ephemeral_from.saturating_sub(FIXED_PORTS_FROM));
    if span < 1000 {
        // No room below the range here: any free port, as the kernel picks it.
        return TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
    }
    let offset = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIXED_PORTS_FROM + ((offset + n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIXED_PORTS_FROM}..{ephemeral_from}");
}

/// An empty scratch directory `<root>/broker-<name>`.
pub fn scratch(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(format!("broker-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Polls `done` every 20 ms until it holds or `WAIT` passes.
pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A mosquitto process; stopped (SIGTERM, so it saves its state) on drop.
pub struct Broker {
    child: Option<Child>,
    conf: PathBuf,
    log: PathBuf,
    port: u16,
    /// How many times it was started: its log gains one "running" line per start.
    starts: usize,
}

impl Broker {
    /// Starts mosquitto on 127.0.0.1:`port` with its state in `dir`; `extra` is
    /// appended to its configuration (TLS listeners, password files, ...).
    pub fn start(dir: &Path, port: u16, extra: &str) -> Self {
        let conf = dir.join("mosquitto.conf");
        let anonymous = if extra.contains("allow_anonymous") {
            ""
        } else {
            "allow_anonymous true\n"
        };
        // `user root`: started as root, mosquitto would switch to its own user and then
        // could not write its persistence file here, losing sessions across a restart.
        let text = format!(
            "listener {port} 127.0.0.1\nuser root\n{anonymous}persistence true\npersistence_location {0}/\nlog_dest file {0}/mosquitto.log\nlog_type all\n{extra}\n",
            dir.display()
        );
        std::fs::write(&conf, text).expect("mosquitto.conf");
        let mut broker = Self {
            child: None,
            conf,
            log: dir.join("mosquitto.log"),
            port,
            starts: 0,
        };
        broker.resume();
        broker
    }

    /// Starts it again on the same port, with the state it saved.
    ///
    /// Returns once this mosquitto has said it runs (its listeners are open) and the
    /// port answers: a port that merely answers could belong to another process that
    /// took it since [`free_port`] chose it.
    pub fn resume(&mut self) {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto runs (scripts/install-deps.sh installs it)");
        // Owned by `self` from here on, so a failed wait below still stops it.
        let child = self.child.insert(child);
        self.starts += 1;
        let (port, starts, log) = (self.port, self.starts, &self.log);
        wait_for("mosquitto to listen", || {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if let Ok(Some(status)) = child.try_wait() {
                panic!("mosquitto exited ({status}) on port {port}; its log:\n{text}");
            }
            let running = text
                .lines()
                .filter(|l| l.ends_with(" running") && l.contains("mosquitto version"))
                .count();
            running >= starts && TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    /// Stops it with SIGTERM (it saves sessions and retained messages).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the pid of a child we own and have not reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A received message: topic, payload, retain flag.
type Received = (String, Vec<u8>, bool);

/// Records every message under `edgearmor/#` from a persistent session.
pub struct Subscriber {
    messages: Arc<Mutex<Vec<Received>>>,
    client: Client,
    id: String,
    barriers: AtomicU64,
}

impl Subscriber {
    /// Connects with a persistent session as `id` and subscribes to `edgearmor/#`.
    pub fn connect(port: u16, id: &str) -> Self {
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options
            .set_clean_session(false)
            .set_keep_alive(Duration::from_secs(5));
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut connection) = Client::new(options, 100);
        client
            .subscribe("edgearmor/#", QoS::AtLeastOnce)
            .expect("subscribe");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        let subscribed = Arc::new(Mutex::new(false));
        let flag = subscribed.clone();
        std::thread::spawn(move || {
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        sink.lock().expect("lock").push((
                            p.topic.clone(),
                            p.payload.to_vec(),
                            p.retain,
                        ));
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => *flag.lock().expect("lock") = true,
                    Ok(_) => {}
                    // The broker may be down on purpose; rumqttc reconnects on the next poll.
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        });
        wait_for("the subscription", || *subscribed.lock().expect("lock"));
        Self {
            messages,
            client,
            id: id.to_owned(),
            barriers: AtomicU64::new(0),
        }
    }

    /// Returns once this subscriber has received everything the broker accepted before
    /// the call: it publishes a marker to itself (under `edgearmor/barrier/`) and waits
    /// for it. The broker routes messages in the order it accepts them and delivers
    /// them to one subscriber in that order, so whatever another client had published
    /// (and seen acknowledged) before, for example an agent that has exited after
    /// delivering its last batch, is here once the marker is.
    pub fn barrier(&self) {
        let n = self.barriers.fetch_add(1, Ordering::Relaxed);
        let topic = format!("edgearmor/barrier/{}/{n}", self.id);
        self.client
            .publish(topic.as_str(), QoS::AtLeastOnce, false, Vec::new())
            .expect("barrier publish queued");
        wait_for("the barrier marker", || {
            self.messages
                .lock()
                .expect("lock")
                .iter()
                .any(|(t, _, _)| *t == topic)
        });
    }

    /// Publishes `payload` retained (QoS 1) on `topic`.
    pub fn publish_retained(&self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, true, payload)
            .expect("publish queued");
    }

    /// Payloads and retain flags of messages whose topic ends with `suffix`.
    pub fn on_topic(&self, suffix: &str) -> Vec<(Vec<u8>, bool)> {
        self.messages
            .lock()
            .expect("lock")
            .iter()
            .filter(|(t, _, _)| t.ends_with(suffix))
            .map(|(_, p, r)| (p.clone(), *r))
            .collect()
    }

    /// Every event received on events topics, keyed by (boot id, sequence number);
    /// QoS 1 duplicates collapse.
    pub fn events(&self) -> BTreeMap<([u8; 16], u64), EventBody> {
        let mut out = BTreeMap::new();
        for (payload, _) in self.on_topic("/events") {
            let Ok(Message::Batch(batch)) = edgearmor_wire::decode(&payload) else {
                panic!("events topic carried something other than a batch");
            };
            for (i, event) in batch.events.iter().enumerate() {
                out.insert(
                    (batch.agent.boot_id, batch.first_seq + i as u64),
                    event.body.clone(),
                );
            }
        }
        out
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.client.disconnect();
    }
}
