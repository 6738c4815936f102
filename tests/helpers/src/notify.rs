//! `notify-listen PATH SILENCE_MS`: what systemd does with `NOTIFY_SOCKET`, for the
//! guest that has no systemd. Binds a unix datagram socket at PATH and prints every
//! datagram as it arrives:
//!
//! `EA-NOTIFY t=MS msg=READY=1|STATUS=enforcing ...` (milliseconds since the listener
//! started; the datagram's newlines as `|`)
//!
//! and `EA-NOTIFY-SILENT t=MS after=MS` once whenever SILENCE_MS pass without a datagram
//! (the guest waits on that line to know a watchdog interval went unpinged). Runs until
//! killed. `notify-send` adds marks of the guest's own steps.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

pub fn listen(args: &[String]) {
    let (Some(path), Some(silence)) = (
        args.first(),
        args.get(1).and_then(|s| s.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: setid-probe notify-listen PATH SILENCE_MS");
        std::process::exit(2);
    };
    let _ = std::fs::remove_file(path);
    let socket = UnixDatagram::bind(path).unwrap_or_else(|e| {
        eprintln!("setid-probe: bind {path}: {e}");
        std::process::exit(3);
    });
    let silence = Duration::from_millis(silence);
    let start = Instant::now();
    let mut last = Instant::now();
    let mut said_silent = false;
    let mut buf = vec![0u8; 4096];
    let mut out = std::io::stdout();
    loop {
        let wait = silence
            .saturating_sub(last.elapsed())
            .max(Duration::from_millis(1));
        let _ = socket.set_read_timeout(Some(wait));
        match socket.recv(&mut buf) {
            Ok(n) => {
                last = Instant::now();
                said_silent = false;
                let msg = String::from_utf8_lossy(&buf[..n]).replace('\n', "|");
                let _ = writeln!(out, "EA-NOTIFY t={} msg={msg}", start.elapsed().as_millis());
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if !said_silent && last.elapsed() >= silence {
                    said_silent = true;
                    let _ = writeln!(
                        out,
                        "EA-NOTIFY-SILENT t={} after={}",
                        start.elapsed().as_millis(),
                        last.elapsed().as_millis()
                    );
                }
            }
            Err(e) => {
                eprintln!("setid-probe: recv on {path}: {e}");
                std::process::exit(3);
            }
        }
        let _ = out.flush();
    }
}

/// `notify-send PATH MSG`: one datagram, so the guest marks its own steps (`MARK=...`)
/// in the listener's timeline.
pub fn send(args: &[String]) {
    let (Some(path), Some(msg)) = (args.first(), args.get(1)) else {
        eprintln!("usage: setid-probe notify-send PATH MSG");
        std::process::exit(2);
    };
    let sent = UnixDatagram::unbound().and_then(|s| s.send_to(msg.as_bytes(), path));
    if let Err(e) = sent {
        eprintln!("setid-probe: send to {path}: {e}");
        std::process::exit(3);
    }
}
