//! The service manager's side of the host: systemd's notification protocol
//! (`sd_notify(3)`) spoken without libsystemd. The manager passes a datagram socket in
//! `NOTIFY_SOCKET` (a path, or `@name` for an abstract socket) and, with `WatchdogSec=`,
//! the ping deadline in `WATCHDOG_USEC` (for the process `WATCHDOG_PID`, when set); the
//! agent sends newline-separated `KEY=VALUE` lines (`READY=1`, `STATUS=...`,
//! `WATCHDOG=1`, `RELOADING=1`) as one datagram each.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";
pub const WATCHDOG_USEC_ENV: &str = "WATCHDOG_USEC";
pub const WATCHDOG_PID_ENV: &str = "WATCHDOG_PID";

/// Where notifications go: the manager's socket, or a test's recorder.
pub trait ServiceManager {
    /// Sends `message` (newline-separated `KEY=VALUE` lines) as one datagram.
    fn notify(&self, message: &str) -> io::Result<()>;
}

/// The socket `NOTIFY_SOCKET` names.
pub struct NotifySocket {
    socket: UnixDatagram,
    address: SocketAddr,
}

impl NotifySocket {
    /// An unbound datagram socket that sends to `spec`: an absolute path, or `@name`
    /// for the abstract namespace (Linux).
    pub fn new(spec: &OsStr) -> io::Result<Self> {
        let bytes = spec.as_bytes();
        let address = match bytes.first() {
            Some(b'/') => SocketAddr::from_pathname(spec)?,
            Some(b'@') => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(&bytes[1..])?
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{NOTIFY_SOCKET_ENV}={spec:?} is neither an absolute path nor @name"),
                ));
            }
        };
        Ok(Self {
            socket: UnixDatagram::unbound()?,
            address,
        })
    }
}

impl ServiceManager for NotifySocket {
    fn notify(&self, message: &str) -> io::Result<()> {
        let sent = self
            .socket
            .send_to_addr(message.as_bytes(), &self.address)?;
        if sent != message.len() {
            return Err(io::Error::other(format!(
                "sent {sent} of {} bytes",
                message.len()
            )));
        }
        Ok(())
    }
}

/// What the environment asks of this process.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ServiceEnv {
    /// `NOTIFY_SOCKET`, if set and not empty.
    pub socket: Option<OsString>,
    /// How often to ping: half of `WATCHDOG_USEC` (as `sd_watchdog_enabled` advises),
    /// when it is meant for this process.
    pub watchdog_every: Option<Duration>,
    /// Why `WATCHDOG_USEC` was not taken (unparsable, zero), for the log.
    pub ignored: Option<String>,
}

/// Reads the service environment through `var`, for process `pid`. `WATCHDOG_PID` set
/// to another process (the variables leaked into a child) means the watchdog is not
/// this process's to feed.
pub fn service_env(var: impl Fn(&str) -> Option<OsString>, pid: u32) -> ServiceEnv {
    let socket = var(NOTIFY_SOCKET_ENV).filter(|s| !s.is_empty());
    let mut env = ServiceEnv {
        socket,
        ..ServiceEnv::default()
    };
    let Some(usec) = var(WATCHDOG_USEC_ENV) else {
        return env;
    };
    if let Some(owner) = var(WATCHDOG_PID_ENV)
        && owner.to_str().and_then(|p| p.parse::<u32>().ok()) != Some(pid)
    {
        env.ignored = Some(format!(
            "{WATCHDOG_PID_ENV}={owner:?} is not this process ({pid})"
        ));
        return env;
    }
    match usec.to_str().and_then(|u| u.parse::<u64>().ok()) {
        Some(usec) if usec > 0 => env.watchdog_every = Some(Duration::from_micros(usec / 2)),
        _ => {
            env.ignored = Some(format!(
                "{WATCHDOG_USEC_ENV}={usec:?} is not a positive number"
            ))
        }
    }
    env
}

/// `CLOCK_MONOTONIC` in microseconds: what `MONOTONIC_USEC=` carries with `RELOADING=1`.
pub fn monotonic_usec() -> u64 {
    u64::try_from(super::clock_ns(libc::CLOCK_MONOTONIC) / 1000).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)], pid: u32) -> ServiceEnv {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        service_env(|k| map.get(k).cloned(), pid)
    }

    #[test]
    fn the_watchdog_is_fed_at_half_its_deadline_and_only_by_its_process() {
        assert_eq!(env(&[], 7), ServiceEnv::default());
        let fed = env(
            &[("NOTIFY_SOCKET", "/run/n"), ("WATCHDOG_USEC", "30000000")],
            7,
        );
        assert_eq!(fed.socket.as_deref(), Some(OsStr::new("/run/n")));
        assert_eq!(fed.watchdog_every, Some(Duration::from_secs(15)));
        let mine = env(&[("WATCHDOG_USEC", "2000000"), ("WATCHDOG_PID", "7")], 7);
        assert_eq!(mine.watchdog_every, Some(Duration::from_secs(1)));
        let other = env(&[("WATCHDOG_USEC", "2000000"), ("WATCHDOG_PID", "8")], 7);
        assert_eq!(other.watchdog_every, None);
        assert!(other.ignored.is_some_and(|r| r.contains("WATCHDOG_PID")));
        for bad in ["0", "-1", "1s", ""] {
            let e = env(&[("WATCHDOG_USEC", bad)], 7);
            assert_eq!(e.watchdog_every, None, "{bad:?}");
            assert!(e.ignored.is_some(), "{bad:?}");
        }
        assert_eq!(env(&[("NOTIFY_SOCKET", "")], 7).socket, None);
    }

    #[test]
    fn datagrams_reach_path_and_abstract_sockets() {
        let dir = std::env::temp_dir().join(format!("edgearmor-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).expect("bind path");
        let abstract_name = format!("@edgearmor-notify-test-{}", std::process::id());
        let abstract_listener = {
            use std::os::linux::net::SocketAddrExt;
            let address = SocketAddr::from_abstract_name(&abstract_name.as_bytes()[1..])
                .expect("abstract address");
            UnixDatagram::bind_addr(&address).expect("bind abstract")
        };
        for (spec, receiver) in [
            (path.as_os_str().to_owned(), &listener),
            (OsString::from(&abstract_name), &abstract_listener),
        ] {
            let socket = NotifySocket::new(&spec).expect("socket");
            socket.notify("READY=1\nSTATUS=up").expect("sent");
            let mut buf = [0u8; 64];
            let n = receiver.recv(&mut buf).expect("received");
            assert_eq!(&buf[..n], b"READY=1\nSTATUS=up", "{spec:?}");
        }
        let relative = NotifySocket::new(OsStr::new("run/notify"));
        assert!(relative.is_err_and(|e| e.kind() == io::ErrorKind::InvalidInput));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
