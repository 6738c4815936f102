//! Shared by the integration tests: wire-message builders (encoded with the agent's own
//! `edgearmor_wire::encode`), a real mosquitto broker, a small MQTT publisher standing
//! in for the agent's pipeline, and the `edgearmor-decode` binary as a child process.
#![allow(dead_code)] // Each test file uses its own part of this.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

use edgearmor_wire::{
    Action, AgentId, Alert, Batch, Data, Event, EventBody, LsmHook, Message, Operation, Outcome,
    PolicyMeta, PolicyRef, PolicyTable, SetIdSyscall, Source,
};

pub fn s<const N: usize>(v: &str) -> heapless::String<N> {
    heapless::String::try_from(v).expect("fits its bound")
}

pub fn agent(cluster: &str, node: &str, boot: u8) -> AgentId {
    AgentId {
        cluster: s(cluster),
        node: s(node),
        boot_id: [boot; 16],
    }
}

/// A blocked setgid whose pid encodes `n`, so every event is recognisable in output.
pub fn numbered_alert(n: u32) -> Event {
    Event {
        time_us: 1_795_932_048_000_000 + u64::from(n),
        body: EventBody::Alert(Alert {
            pid: 100_000 + n,
            ppid: 1,
            uid: 0,
            process: s("/usr/sbin/sshd"),
            parent_process: s("/sbin/init"),
            source: Source::Process,
            policy: PolicyRef::Id(0),
            operation: Operation::Syscall,
            resource: s(""),
            data: Data::SetId {
                syscall: SetIdSyscall::Setgid,
                id: 0,
            },
            action: Action::Block,
            result: Outcome::OperationNotPermitted,
            cwd: Default::default(),
        }),
    }
}

pub fn exec_alert(n: u32) -> Event {
    Event {
        time_us: 1_795_932_048_000_000 + u64::from(n),
        body: EventBody::Alert(Alert {
            pid: 200_000 + n,
            ppid: 1582,
            uid: 1000,
            process: s("/usr/bin/apt"),
            parent_process: s("/usr/bin/bash"),
            source: Source::ParentProcess,
            policy: PolicyRef::DefaultPosture,
            operation: Operation::Process,
            resource: s("/usr/bin/apt"),
            data: Data::Lsm(LsmHook::BprmCheckSecurity),
            action: Action::Audit,
            result: Outcome::Passed,
            cwd: Default::default(),
        }),
    }
}

/// Events `first_seq..first_seq+count` of `agent`, as numbered alerts.
pub fn batch(agent: &AgentId, policy_set: u64, first_seq: u64, count: u32) -> Message {
    let mut events = heapless::Vec::new();
    for i in 0..count {
        let n = u32::try_from(first_seq).expect("small") + i;
        events.push(numbered_alert(n)).expect("at most 32 events");
    }
    Message::Batch(Batch {
        agent: agent.clone(),
        policy_set,
        first_seq,
        events,
    })
}

pub fn policy_table(
    agent: &AgentId,
    policy_set: u64,
    policies: &[(&str, u8, &str, &str)],
) -> Message {
    Message::PolicyTable(PolicyTable {
        agent: agent.clone(),
        policy_set,
        total: u32::try_from(policies.len()).expect("small"),
        first_id: 0,
        policies: policies
            .iter()
            .map(|(name, severity, tags, message)| PolicyMeta {
                name: s(name),
                severity: *severity,
                tags: s(tags),
                message: s(message),
            })
            .collect(),
    })
}

/// The agent's encoder: `edgearmor_wire::encode` into a buffer of the documented bound.
pub fn encode(message: &Message) -> Vec<u8> {
    let mut buf = vec![0u8; Message::MAX_ENCODED_LEN];
    edgearmor_wire::encode(message, &mut buf)
        .expect("every message fits MAX_ENCODED_LEN")
        .to_vec()
}

pub fn events_topic(agent: &AgentId) -> String {
    format!("edgearmor/{}/{}/events", agent.cluster, agent.node)
}

pub fn policies_topic(agent: &AgentId, part: u32) -> String {
    format!("edgearmor/{}/{}/policies/{part}", agent.cluster, agent.node)
}

pub fn status_topic(agent: &AgentId) -> String {
    format!("edgearmor/{}/{}/status", agent.cluster, agent.node)
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    pub fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "edgearmor-decode-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Self(dir)
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A mosquitto broker on loopback, killed on drop.
pub struct Mosquitto {
    child: Child,
    pub port: u16,
    /// The TLS listener, when started with certificates.
    pub tls_port: Option<u16>,
    pub dir: ScratchDir,
}

pub struct BrokerTls<'a> {
    pub ca_pem: &'a str,
    pub cert_pem: &'a str,
    pub key_pem: &'a str,
    pub require_client_certificate: bool,
}

impl Mosquitto {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// A plain listener, plus a TLS one when `tls` is given.
    pub fn start_with(tls: Option<BrokerTls<'_>>) -> Self {
        let dir = ScratchDir::new("mosquitto");
        let port = free_port();
        let mut conf = format!(
            "per_listener_settings false\nallow_anonymous true\npersistence false\n\
             max_queued_messages 100000\nlistener {port} 127.0.0.1\n"
        );
        let mut tls_port = None;
        if let Some(tls) = &tls {
            let p = free_port();
            tls_port = Some(p);
            for (file, pem) in [
                ("ca.pem", tls.ca_pem),
                ("server.pem", tls.cert_pem),
                ("server.key", tls.key_pem),
            ] {
                std::fs::write(dir.path(file), pem).expect("write broker TLS file");
            }
            conf.push_str(&format!(
                "listener {p} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {}\n",
                dir.path("ca.pem").display(),
                dir.path("server.pem").display(),
                dir.path("server.key").display(),
                tls.require_client_certificate
            ));
        }
        let conf_path = dir.path("mosquitto.conf");
        std::fs::write(&conf_path, conf).expect("write mosquitto.conf");
        // Run as root, mosquitto drops to its own user: it must be able to read the files.
        let _ = Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(&dir.0)
            .status();
        let log = std::fs::File::create(dir.path("mosquitto.log")).expect("log file");
        let child = Command::new("/usr/sbin/mosquitto")
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start /usr/sbin/mosquitto");
        let mut broker = Self {
            child,
            port,
            tls_port,
            dir,
        };
        // Ours once it says it runs (every listener open) and the ports answer: a port
        // that merely answers may have been taken by another process since
        // `free_port` chose it (then this mosquitto exits, unable to bind).
        let ports: Vec<u16> = std::iter::once(port).chain(tls_port).collect();
        let log_path = broker.dir.path("mosquitto.log");
        let mut exited = false;
        let ready = wait_until(Duration::from_secs(15), || {
            exited = matches!(broker.child.try_wait(), Ok(Some(_)));
            if exited {
                return true;
            }
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            log.lines()
                .any(|l| l.ends_with(" running") && l.contains("mosquitto version"))
                && ports
                    .iter()
                    .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok())
        });
        if !ready || exited {
            let _ = broker.child.kill();
            panic!(
                "mosquitto did not listen (or exited) within 15 s; its log:\n{}",
                std::fs::read_to_string(broker.dir.path("mosquitto.log")).unwrap_or_default()
            );
        }
        broker
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One message to publish.
pub struct Outgoing {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Outgoing {
    pub fn new(topic: String, payload: Vec<u8>) -> Self {
        Self {
            topic,
            payload,
            retain: false,
        }
    }

    pub fn retained(topic: String, payload: Vec<u8>) -> Self {
        Self {
            topic,
            payload,
            retain: true,
        }
    }
}

/// Publishes `messages` in order at QoS 1 (MQTT 3.1.1, like a constrained agent) and
/// returns once the broker has acknowledged every one. Stands in for the agent's
/// pipeline until the end-to-end tests switch to it.
pub fn publish_all(port: u16, messages: Vec<Outgoing>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let mut options =
            rumqttc::MqttOptions::new(format!("test-publisher-{}", free_port()), "127.0.0.1", port);
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, messages.len() + 10);
        let total = messages.len();
        for m in messages {
            client
                .publish(m.topic, rumqttc::QoS::AtLeastOnce, m.retain, m.payload)
                .await
                .expect("queue the publish");
        }
        let mut acked = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while acked < total {
            let event = tokio::time::timeout_at(deadline, eventloop.poll())
                .await
                .expect("the broker acknowledges every publish within 20 s")
                .expect("publisher connection");
            if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = event {
                acked += 1;
            }
        }
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while eventloop.poll().await.is_ok() {}
        })
        .await;
    });
}

pub const DECODER: &str = env!("CARGO_BIN_EXE_edgearmor-decode");

/// A running `edgearmor-decode`, its stdout lines and stderr collected by threads.
pub struct DecoderProcess {
    child: Child,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    /// The stdout and stderr threads; each ends at the end of its pipe.
    readers: Vec<std::thread::JoinHandle<()>>,
    pub received: Vec<String>,
}

impl DecoderProcess {
    pub fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(DECODER)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start edgearmor-decode");
        let stdout: ChildStdout = child.stdout.take().expect("piped");
        let stderr: ChildStderr = child.stderr.take().expect("piped");
        let (tx, lines) = channel();
        let out_reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let collected = Arc::new(Mutex::new(String::new()));
        let sink = collected.clone();
        let err_reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut all = sink.lock().unwrap_or_else(|p| p.into_inner());
                all.push_str(&line);
                all.push('\n');
            }
        });
        Self {
            child,
            lines,
            stderr: collected,
            readers: vec![out_reader, err_reader],
            received: Vec::new(),
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits for the "ready" line (subscriptions acknowledged); panics with stderr if
    /// the decoder exits or stays silent.
    pub fn wait_ready(&mut self) {
        let ready = wait_until(Duration::from_secs(20), || {
            self.stderr().contains("edgearmor-decode: ready:")
                || self.child.try_wait().ok().flatten().is_some()
        });
        assert!(
            ready && self.stderr().contains("edgearmor-decode: ready:"),
            "decoder not ready; stderr:\n{}",
            self.stderr()
        );
    }

    /// Collects stdout lines until `done(all lines so far)` or the timeout.
    pub fn collect_until(&mut self, timeout: Duration, mut done: impl FnMut(&[String]) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(&self.received) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                Ok(line) => self.received.push(line),
                Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(_) => return,
            }
        }
    }

    /// SIGTERM, then waits for the exit; returns the status with every stdout line.
    pub fn terminate(self) -> (ExitStatus, Vec<String>, String) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        self.wait_exit()
    }

    /// Waits (at most 20 s) for the process to exit by itself.
    pub fn wait_exit(mut self) -> (ExitStatus, Vec<String>, String) {
        let mut status = None;
        wait_until(Duration::from_secs(20), || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        let status = match status {
            Some(s) => s,
            None => {
                let _ = self.child.kill();
                panic!("decoder did not exit; stderr:\n{}", self.stderr());
            }
        };
        // Both reader threads end at the end of their pipe, which the exit closed:
        // once they have, every line the decoder wrote is here.
        let readers = std::mem::take(&mut self.readers);
        let drained = wait_until(Duration::from_secs(20), || {
            readers.iter().all(|r| r.is_finished())
        });
        assert!(
            drained,
            "the decoder's output pipes stayed open after it exited; stderr:\n{}",
            self.stderr()
        );
        for reader in readers {
            let _ = reader.join();
        }
        self.received.extend(self.lines.try_iter());
        let stderr = self.stderr();
        (status, std::mem::take(&mut self.received), stderr)
    }
}

impl Drop for DecoderProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A field of a JSON line.
pub fn field(line: &str, key: &str) -> serde_json::Value {
    let value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
    value.get(key).cloned().unwrap_or(serde_json::Value::Null)
}

/// `name=value` from the counters line on stderr.
pub fn counter(stderr: &str, name: &str) -> Option<u64> {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("edgearmor-decode: counters:"))?;
    line.split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
}

/// Writes `messages` as a capture file (the `--input` format).
pub fn write_capture(path: &Path, messages: &[(&str, &[u8])]) {
    let file = std::fs::File::create(path).expect("create capture");
    let mut writer =
        edgearmor_decode::capture::CaptureWriter::new(std::io::BufWriter::new(file), true)
            .expect("write magic");
    for (i, (topic, payload)) in messages.iter().enumerate() {
        writer
            .append(1_000_000 * i as u64, false, topic, payload)
            .expect("append");
    }
    writer.flush().expect("flush");
}

pub fn write_file(path: &Path, contents: &str) {
    let mut f = std::fs::File::create(path).expect("create");
    f.write_all(contents.as_bytes()).expect("write");
}

/// Subscribes to `filter` (MQTT 3.1.1), signals `ready` once the broker acknowledged the
/// subscription, then sends the first `count` messages (topic, payload as UTF-8) on
/// `lines`, or stops after 30 s.
pub fn collect_published(
    port: u16,
    filter: &str,
    count: usize,
    ready: std::sync::mpsc::Sender<()>,
    lines: std::sync::mpsc::Sender<(String, String)>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let mut options = rumqttc::MqttOptions::new(
            format!("test-subscriber-{}", free_port()),
            "127.0.0.1",
            port,
        );
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 10);
        client
            .subscribe(filter, rumqttc::QoS::AtLeastOnce)
            .await
            .expect("queue the subscription");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut received = 0;
        while received < count {
            let Ok(Ok(event)) = tokio::time::timeout_at(deadline, eventloop.poll()).await else {
                return;
            };
            match event {
                rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) => {
                    let _ = ready.send(());
                }
                rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => {
                    received += 1;
                    let _ = lines.send((
                        p.topic.clone(),
                        String::from_utf8_lossy(&p.payload).into_owned(),
                    ));
                }
                _ => {}
            }
        }
    });
}

/// A CA and a server certificate for 127.0.0.1, as PEM: (ca, cert, key).
pub fn server_pki(ca_name: &str) -> (String, String, String, CertifiedIssuer<'static, KeyPair>) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("CA");
    let server_key = KeyPair::generate().expect("key");
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("params")
        .signed_by(&server_key, &ca)
        .expect("server cert");
    (ca.pem(), server.pem(), server_key.serialize_pem(), ca)
}
