//! Syslog to a SIEM's receiver: RFC 5424 messages ([`crate::soc`]) octet-counted over TCP
//! (RFC 6587) or TLS (RFC 5425, rustls with ring, the receiver verified against a CA of
//! our own, optionally a client certificate).
//!
//! The decoder never waits for the receiver: [`SyslogSink`] formats the message and puts
//! it in a bounded queue (`--syslog-queue` messages) that a thread of its own
//! writes out. What cannot be delivered is counted, never dropped silently:
//! - a full queue (receiver slow or away longer than the queue lasts) drops the new
//!   message (`forward_dropped_queue_full`, logged at every power of two);
//! - a connection that fails while a batch is written: the whole batch is sent again on
//!   the next connection (`forward_resent`; the receiver may see a message twice, never
//!   none); before every batch the connection is checked for an end the receiver sent
//!   (FIN, reset, TLS close_notify), so a receiver that went away is noticed before
//!   messages are written into a dead socket. Syslog has no acknowledgements: what the
//!   receiver's kernel took but the receiver never read when it died, and a batch
//!   written in the instant between that check and the receiver's going away, are
//!   losses no syslog sender can see.
//! - at exit the queue gets [`CLOSE_TIMEOUT`] to drain; what is left is counted
//!   (`forward_unsent_at_exit`) and logged.
//!
//! Reconnects use the agent's backoff (250 ms to 30 s, jittered).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use edgearmor_alert::HostAlert;
use edgearmor_mqtt::{Backoff, TlsError};
use log::{debug, error, info, warn};
use rustls::pki_types::ServerName;

pub use crate::cli::SyslogOutput as ForwardConfig;
use crate::sink::{AlertSink, LineOrigin, SinkError};
use crate::soc::{self, Format};

/// Largest message sent: above it a line is dropped (counted), not cut. Receivers must
/// accept it (rsyslog: `global(maxMessageSize="64k")`).
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A receiver that stops reading for this long ends the connection (the batch is resent).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new TLS 1.3 session waits for the receiver's first word (see
/// [`await_acceptance`]); receivers that send session tickets answer at once.
pub const ACCEPTANCE_WAIT: Duration = Duration::from_secs(1);
/// How long the queue may take to drain at exit.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages written per batch (one write).
const BATCH: usize = 256;
/// A connection that lasted this long resets the backoff.
const STABLE: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct ForwardStats {
    pub queued: AtomicU64,
    pub sent: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub dropped_too_large: AtomicU64,
    pub resent: AtomicU64,
    pub unsent_at_exit: AtomicU64,
    pub connections: AtomicU64,
    pub connect_errors: AtomicU64,
    pub queue_lines: AtomicU64,
    pub connected: AtomicU64,
}

impl ForwardStats {
    pub fn pairs(&self) -> Vec<(&'static str, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("forward_queued", get(&self.queued)),
            ("forward_sent", get(&self.sent)),
            ("forward_dropped_queue_full", get(&self.dropped_queue_full)),
            ("forward_dropped_too_large", get(&self.dropped_too_large)),
            ("forward_resent", get(&self.resent)),
            ("forward_unsent_at_exit", get(&self.unsent_at_exit)),
            ("forward_connections", get(&self.connections)),
            ("forward_connect_errors", get(&self.connect_errors)),
            ("forward_queue_lines", get(&self.queue_lines)),
            ("forward_connected", get(&self.connected)),
        ]
    }
}

struct Queue {
    frames: VecDeque<Vec<u8>>,
    /// Set by `close`: drain until then, then stop.
    close_by: Option<Instant>,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    stats: ForwardStats,
    capacity: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panicked holder left a consistent VecDeque: keep going.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_len(&self, queue: &Queue) {
        self.stats
            .queue_lines
            .store(queue.frames.len() as u64, Ordering::Relaxed);
    }
}

/// Where to connect, TLS set up (files read and checked) before the thread starts.
struct Target {
    address: String,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
}

/// The [`AlertSink`] side: formats and queues.
pub struct SyslogSink {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    message: Format,
    facility: u8,
    text: String,
    cef: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("invalid TLS server name {0:?} for --syslog")]
    ServerName(String),
    #[error("starting the syslog thread: {0}")]
    Thread(#[source] io::Error),
}

impl SyslogSink {
    pub fn start(config: &ForwardConfig) -> Result<Self, ForwardError> {
        let tls = match &config.tls {
            Some(files) => {
                let name = config.server_name.clone().unwrap_or(config.host.clone());
                let server_name = ServerName::try_from(name.clone())
                    .map_err(|_| ForwardError::ServerName(name))?;
                Some((
                    Arc::new(edgearmor_mqtt::tls::client_config(files)?),
                    server_name,
                ))
            }
            None => None,
        };
        let host = if config.host.contains(':') {
            format!("[{}]", config.host)
        } else {
            config.host.clone()
        };
        let target = Target {
            address: format!("{host}:{}", config.port),
            tls,
        };
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                frames: VecDeque::new(),
                close_by: None,
            }),
            wake: Condvar::new(),
            stats: ForwardStats::default(),
            capacity: config.queue.max(1),
        });
        let for_thread = shared.clone();
        let thread = std::thread::Builder::new()
            .name("syslog".into())
            .spawn(move || run(&for_thread, &target))
            .map_err(ForwardError::Thread)?;
        Ok(Self {
            shared,
            thread: Some(thread),
            message: config.message,
            facility: config.facility,
            text: String::with_capacity(2048),
            cef: String::with_capacity(1024),
        })
    }

    fn enqueue(&mut self) {
        let stats = &self.shared.stats;
        if self.text.len() > MAX_MESSAGE_LEN {
            let n = stats.dropped_too_large.fetch_add(1, Ordering::Relaxed) + 1;
            warn!(
                "syslog: a {}-byte message is over the {MAX_MESSAGE_LEN}-byte limit: dropped ({n} so far)",
                self.text.len()
            );
            return;
        }
        let framed = soc::frame(&self.text);
        let mut queue = self.shared.lock();
        if queue.frames.len() >= self.shared.capacity {
            drop(queue);
            let n = stats.dropped_queue_full.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                warn!(
                    "syslog: send queue full ({} messages, receiver slow or away): a message was dropped ({n} so far)",
                    self.shared.capacity
                );
            }
            return;
        }
        queue.frames.push_back(framed);
        self.shared.set_len(&queue);
        drop(queue);
        stats.queued.fetch_add(1, Ordering::Relaxed);
        self.shared.wake.notify_one();
    }
}

impl AlertSink for SyslogSink {
    fn write_line(&mut self, _: &LineOrigin<'_>, line: &str) -> Result<(), SinkError> {
        self.text.clear();
        soc::write_syslog_line(&mut self.text, self.facility, line);
        self.enqueue();
        Ok(())
    }

    fn write_alert(
        &mut self,
        _: &LineOrigin<'_>,
        alert: &HostAlert,
        line: &str,
    ) -> Result<(), SinkError> {
        self.text.clear();
        let msg = match self.message {
            Format::Json => line,
            Format::Cef => {
                self.cef.clear();
                soc::write_cef(&mut self.cef, alert);
                &self.cef
            }
        };
        soc::write_syslog(&mut self.text, self.facility, alert, msg);
        self.enqueue();
        Ok(())
    }

    /// Queued is handed over: the thread delivers (or counts) it.
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    fn stats(&self) -> Vec<(&'static str, u64)> {
        self.shared.stats.pairs()
    }

    fn close(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.shared.lock().close_by = Some(Instant::now() + CLOSE_TIMEOUT);
        self.shared.wake.notify_all();
        let _ = thread.join();
        let mut queue = self.shared.lock();
        let left = queue.frames.len() as u64;
        queue.frames.clear();
        self.shared.set_len(&queue);
        if left > 0 {
            self.shared
                .stats
                .unsent_at_exit
                .fetch_add(left, Ordering::Relaxed);
            error!(
                "syslog: {left} messages not delivered: the receiver did not take them before the stop (which waits {} s at most)",
                CLOSE_TIMEOUT.as_secs()
            );
        }
    }
}

impl Drop for SyslogSink {
    fn drop(&mut self) {
        self.close();
    }
}

enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Conn {
    fn socket(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => &s.sock,
        }
    }

    /// Whether the receiver ended the connection (FIN, reset, TLS close_notify).
    fn receiver_left(&mut self) -> bool {
        let socket = self.socket();
        if socket.set_nonblocking(true).is_err() {
            return true;
        }
        let mut byte = [0u8; 1];
        let peeked = socket.peek(&mut byte);
        let left = match (peeked, &mut *self) {
            (Ok(0), _) => true,
            (Err(e), _) => e.kind() != io::ErrorKind::WouldBlock,
            // Receivers send nothing in plain syslog: read and forget it.
            (Ok(_), Conn::Plain(s)) => {
                let mut sink = [0u8; 512];
                matches!(s.read(&mut sink), Ok(0))
            }
            // TLS records (a close_notify, a key update): let rustls read them.
            (Ok(_), Conn::Tls(s)) => {
                let mut plain = [0u8; 512];
                match s.read(&mut plain) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) => e.kind() != io::ErrorKind::WouldBlock,
                }
            }
        };
        left || self.socket().set_nonblocking(false).is_err()
    }

    fn write_all_flush(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.write_all(bytes),
            Conn::Tls(s) => s.write_all(bytes).and_then(|()| s.flush()),
        }
    }
}

fn connect(target: &Target) -> io::Result<Conn> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for address in target.address.to_socket_addrs()? {
        let socket = match TcpStream::connect_timeout(&address, CONNECT_TIMEOUT) {
            Ok(s) => s,
            Err(e) => {
                last = e;
                continue;
            }
        };
        socket.set_write_timeout(Some(WRITE_TIMEOUT))?;
        socket.set_read_timeout(Some(CONNECT_TIMEOUT))?;
        socket.set_nodelay(true)?;
        let Some((config, name)) = &target.tls else {
            return Ok(Conn::Plain(socket));
        };
        let tls = rustls::ClientConnection::new(config.clone(), name.clone())
            .map_err(io::Error::other)?;
        let mut stream = rustls::StreamOwned::new(tls, socket);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        await_acceptance(&mut stream)?;
        return Ok(Conn::Tls(Box::new(stream)));
    }
    Err(last)
}

/// In TLS 1.3 the client's handshake ends before the server has checked the client's
/// certificate (or its absence): a receiver that requires one refuses the session only
/// after our first messages could be written into it, and they would be lost unseen. So
/// wait for the server's first word after the handshake: its session tickets (accepted),
/// or an alert or the end (refused, an error naming the alert). A receiver that sends
/// neither within [`ACCEPTANCE_WAIT`] is taken as accepting. In TLS 1.2 the server's
/// Finished, the handshake's last message, already says it accepted.
fn await_acceptance(
    stream: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
) -> io::Result<()> {
    if stream.conn.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
        return Ok(());
    }
    stream.sock.set_read_timeout(Some(ACCEPTANCE_WAIT))?;
    let waited = Instant::now();
    let read = stream.conn.read_tls(&mut stream.sock);
    debug!(
        "syslog: the receiver's first TLS 1.3 record after {} ms",
        waited.elapsed().as_millis()
    );
    stream.sock.set_read_timeout(Some(CONNECT_TIMEOUT))?;
    let refused = |why: String| {
        io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!(
                "the receiver refused the TLS session after the handshake: {why} (does it require a client certificate, --syslog-client-cert?)"
            ),
        )
    };
    match read {
        Ok(0) => Err(refused("it closed the connection".into())),
        Ok(_) => match stream.conn.process_new_packets() {
            Ok(state) if state.peer_has_closed() => Err(refused("close_notify".into())),
            Ok(_) => Ok(()),
            Err(e) => Err(refused(e.to_string())),
        },
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The thread: connect, drain, reconnect after failures, until closed.
fn run(shared: &Shared, target: &Target) {
    let mut backoff = Backoff::new();
    let mut failures: u64 = 0;
    loop {
        if closing_done(shared) {
            return;
        }
        match connect(target) {
            Ok(mut conn) => {
                shared.stats.connections.fetch_add(1, Ordering::Relaxed);
                shared.stats.connected.store(1, Ordering::Relaxed);
                info!("syslog: connected to {}", target.address);
                let since = Instant::now();
                let result = pump(shared, &mut conn);
                shared.stats.connected.store(0, Ordering::Relaxed);
                let _ = conn.socket().shutdown(Shutdown::Both);
                match result {
                    Ok(()) => return,
                    Err(e) => warn!("syslog: connection to {} ended: {e}", target.address),
                }
                if since.elapsed() >= STABLE {
                    backoff.reset();
                }
            }
            Err(e) => {
                failures += 1;
                shared.stats.connect_errors.fetch_add(1, Ordering::Relaxed);
                // Every failure at first, then every power of two: a receiver away
                // for a day does not fill the log.
                if failures <= 3 || failures.is_power_of_two() {
                    warn!(
                        "syslog: cannot connect to {}: {e} ({failures} failures)",
                        target.address
                    );
                }
            }
        }
        let delay = backoff.next_delay();
        let queue = shared.lock();
        if queue.close_by.is_some() {
            // Stopping and no receiver: waiting longer helps nobody.
            return;
        }
        let _ = shared.wake.wait_timeout(queue, delay);
    }
}

fn closing_done(shared: &Shared) -> bool {
    let queue = shared.lock();
    queue
        .close_by
        .is_some_and(|by| queue.frames.is_empty() || Instant::now() >= by)
}

/// Writes batches until the connection fails (`Err`) or the queue is closed and
/// drained, or its close deadline passed (`Ok`).
fn pump(shared: &Shared, conn: &mut Conn) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(64 * 1024);
    loop {
        let mut batch = Vec::new();
        {
            let mut queue = shared.lock();
            loop {
                if let Some(by) = queue.close_by
                    && (queue.frames.is_empty() || Instant::now() >= by)
                {
                    return Ok(());
                }
                if !queue.frames.is_empty() {
                    break;
                }
                let (q, timeout) = shared
                    .wake
                    .wait_timeout(queue, Duration::from_secs(1))
                    .unwrap_or_else(|p| p.into_inner());
                queue = q;
                if timeout.timed_out() && queue.frames.is_empty() {
                    // Idle: notice a receiver that left now, not at the next message.
                    drop(queue);
                    if conn.receiver_left() {
                        return Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            "the receiver closed the connection",
                        ));
                    }
                    queue = shared.lock();
                }
            }
            let n = queue.frames.len().min(BATCH);
            batch.extend(queue.frames.drain(..n));
            shared.set_len(&queue);
        }
        let result = if conn.receiver_left() {
            Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the receiver closed the connection",
            ))
        } else {
            bytes.clear();
            for frame in &batch {
                bytes.extend_from_slice(frame);
            }
            conn.write_all_flush(&bytes)
        };
        if let Err(e) = result {
            let mut queue = shared.lock();
            let n = batch.len() as u64;
            for frame in batch.into_iter().rev() {
                queue.frames.push_front(frame);
            }
            shared.set_len(&queue);
            shared.stats.resent.fetch_add(n, Ordering::Relaxed);
            return Err(e);
        }
        shared
            .stats
            .sent
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
    }
}
