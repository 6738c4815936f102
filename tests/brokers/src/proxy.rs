//! A TCP proxy on loopback between a client and a broker, under the test's control:
//! forward, hold a connection after its CONNECT (the broker answers the CONNECT, then
//! nothing the client sends reaches it, so nothing is acknowledged), refuse (accept and
//! close), cut every open connection, point at another port.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Forward,
    /// Passes the client's first MQTT packet (its CONNECT) and everything the broker
    /// sends; holds the rest of what the client sends.
    HoldAfterConnect,
    /// Forwards everything but the broker's PUBACKs: publishes arrive, pings are
    /// answered, nothing is acknowledged.
    DropPubAcks,
    /// Accepts and closes at once.
    Refuse,
}

struct State {
    mode: Mutex<Mode>,
    /// Keep clients' connections open when the broker's end (see
    /// [`Proxy::keep_clients_open`]).
    keep_clients: AtomicBool,
    target: AtomicU16,
    open: Mutex<Vec<TcpStream>>,
    accepted: AtomicUsize,
}

pub struct Proxy {
    pub port: u16,
    state: Arc<State>,
}

impl Proxy {
    /// Listens on a free loopback port, forwarding to 127.0.0.1:`target` in `mode`.
    pub fn start(target: u16, mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy listener");
        let port = listener.local_addr().expect("proxy address").port();
        let state = Arc::new(State {
            mode: Mutex::new(mode),
            keep_clients: AtomicBool::new(false),
            target: AtomicU16::new(target),
            open: Mutex::new(Vec::new()),
            accepted: AtomicUsize::new(0),
        });
        let shared = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                let state = shared.clone();
                std::thread::spawn(move || serve(client, state));
            }
        });
        Self { port, state }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap_or_else(|p| p.into_inner()) = mode;
    }

    /// From now on a client learns nothing when the broker's side of its connection
    /// ends (as behind a load balancer): its connection stays up until [`Proxy::cut`].
    pub fn keep_clients_open(&self) {
        self.state.keep_clients.store(true, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Closes every open connection, both sides.
    pub fn cut(&self) {
        for stream in self
            .state
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.set_mode(Mode::Refuse);
        self.cut();
    }
}

fn track(state: &State, stream: &TcpStream) {
    if let Ok(clone) = stream.try_clone() {
        state
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(clone);
    }
}

fn serve(mut client: TcpStream, state: Arc<State>) {
    let mode = *state.mode.lock().unwrap_or_else(|p| p.into_inner());
    if mode == Mode::Refuse {
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", state.target.load(Ordering::SeqCst)))
    else {
        return;
    };
    track(&state, &client);
    track(&state, &upstream);
    if mode == Mode::HoldAfterConnect {
        let Some(connect) = read_packet(&mut client) else {
            return;
        };
        if upstream.write_all(&connect).is_err() {
            return;
        }
    }
    if let (Ok(mut from_broker), Ok(mut to_client)) = (upstream.try_clone(), client.try_clone()) {
        let state = state.clone();
        std::thread::spawn(move || {
            if mode == Mode::DropPubAcks {
                while let Some(packet) = read_packet(&mut from_broker) {
                    let puback = packet[0] >> 4 == 4;
                    if !puback && to_client.write_all(&packet).is_err() {
                        break;
                    }
                }
            } else {
                let _ = std::io::copy(&mut from_broker, &mut to_client);
            }
            if !state.keep_clients.load(Ordering::SeqCst) {
                let _ = to_client.shutdown(Shutdown::Both);
            }
        });
    }
    if matches!(mode, Mode::Forward | Mode::DropPubAcks) {
        let _ = std::io::copy(&mut client, &mut upstream);
        let _ = upstream.shutdown(Shutdown::Both);
    }
    // Holding: the client's later bytes stay unread until the test cuts the connection.
}

/// One MQTT packet: the fixed header's type byte, the remaining length (variable
/// length integer), then that many bytes.
fn read_packet(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut packet = vec![0u8; 1];
    stream.read_exact(&mut packet).ok()?;
    let mut length = 0usize;
    for shift in [0, 7, 14, 21] {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).ok()?;
        packet.push(byte[0]);
        length |= usize::from(byte[0] & 0x7f) << shift;
        if byte[0] & 0x80 == 0 {
            let start = packet.len();
            packet.resize(start + length, 0);
            stream.read_exact(&mut packet[start..]).ok()?;
            return Some(packet);
        }
    }
    None
}
