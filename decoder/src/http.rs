//! The metrics endpoint: a deliberately tiny HTTP/1.1 server answering `GET /metrics`
//! with [`crate::metrics::render`]'s text, and nothing else.
//!
//! Bounded against a hostile network: at most [`MAX_CONNECTIONS`] at once (more are
//! closed at accept, counted), a request head of at most [`MAX_REQUEST_BYTES`] that must
//! arrive whole within [`REQUEST_TIMEOUT`] (a slowloris client dripping bytes is cut off
//! at the deadline, not per read), the response written within [`WRITE_TIMEOUT`], one
//! request per connection (`Connection: close`). The numbers come from the decoding loop,
//! which renders them when asked (a [`Scrape`]), so a scrape sees the current values.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use log::{debug, warn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};

pub const MAX_CONNECTIONS: usize = 16;
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a scrape waits for the decoding loop (busy with a large batch, say).
pub const RENDER_TIMEOUT: Duration = Duration::from_secs(5);

/// A scrape waiting for its text.
pub type Scrape = oneshot::Sender<String>;

#[derive(Default)]
pub struct HttpStats {
    pub requests: AtomicU64,
    pub refused: AtomicU64,
}

impl HttpStats {
    pub fn pairs(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("metrics_requests", self.requests.load(Ordering::Relaxed)),
            (
                "metrics_connections_refused",
                self.refused.load(Ordering::Relaxed),
            ),
        ]
    }
}

/// The bound listener: bound before anything starts, so a taken port is a command-line
/// error, not a surprise later.
pub struct MetricsServer {
    listener: std::net::TcpListener,
    pub address: SocketAddr,
}

impl MetricsServer {
    pub fn bind(address: SocketAddr) -> io::Result<Self> {
        let listener = std::net::TcpListener::bind(address)?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        Ok(Self { listener, address })
    }

    /// Serves on the current tokio runtime; scrapes arrive on the returned channel.
    pub fn spawn(self, stats: Arc<HttpStats>) -> io::Result<mpsc::Receiver<Scrape>> {
        let listener = TcpListener::from_std(self.listener)?;
        let (scrapes, receiver) = mpsc::channel(MAX_CONNECTIONS);
        // On stderr without the logger, so scripts and tests find the port (also for :0).
        eprintln!(
            "edgearmor-decode: metrics: serving http://{}/metrics",
            self.address
        );
        tokio::spawn(accept_loop(listener, scrapes, stats));
        Ok(receiver)
    }
}

async fn accept_loop(listener: TcpListener, scrapes: mpsc::Sender<Scrape>, stats: Arc<HttpStats>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, say: do not spin.
                warn!("metrics: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            debug!("metrics: {peer}: refused, {MAX_CONNECTIONS} connections open");
            drop(stream);
            continue;
        };
        let scrapes = scrapes.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(stream, &scrapes, &stats).await {
                debug!("metrics: {peer}: {e}");
            }
            drop(slot);
        });
    }
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    Metrics,
    NotFound,
    MethodNotAllowed,
    Bad,
}

/// Reads a request line `GET /metrics HTTP/1.x` (query string allowed) from a head.
pub fn parse_request(head: &[u8]) -> Request {
    let Some(line) = head.split(|&b| b == b'\n').next() else {
        return Request::Bad;
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Ok(line) = std::str::from_utf8(line) else {
        return Request::Bad;
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Bad;
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Request::Bad;
    }
    if method != "GET" {
        return Request::MethodNotAllowed;
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    if path == "/metrics" {
        Request::Metrics
    } else {
        Request::NotFound
    }
}

fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
        .or_else(|| buf.windows(2).position(|w| w == b"\n\n").map(|at| at + 2))
}

/// Reads the request head; `None` when it is larger than [`MAX_REQUEST_BYTES`].
async fn read_head(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; MAX_REQUEST_BYTES];
    let mut len = 0;
    loop {
        if head_end(&buf[..len]).is_some() {
            buf.truncate(len);
            return Ok(Some(buf));
        }
        if len == buf.len() {
            return Ok(None);
        }
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the end of the request head",
            ));
        }
        len += n;
    }
}

async fn serve(
    mut stream: TcpStream,
    scrapes: &mpsc::Sender<Scrape>,
    stats: &HttpStats,
) -> io::Result<()> {
    let head = match tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request head not received in time",
            ));
        }
    };
    let (status, extra, body) = match head.as_deref().map(parse_request) {
        None => (
            "431 Request Header Fields Too Large",
            "",
            "request head too large\n".to_owned(),
        ),
        Some(Request::Bad) => ("400 Bad Request", "", "bad request\n".to_owned()),
        Some(Request::MethodNotAllowed) => (
            "405 Method Not Allowed",
            "Allow: GET\r\n",
            "only GET /metrics\n".to_owned(),
        ),
        Some(Request::NotFound) => ("404 Not Found", "", "only GET /metrics\n".to_owned()),
        Some(Request::Metrics) => {
            let (reply, text) = oneshot::channel();
            let rendered = match scrapes.try_send(reply) {
                Ok(()) => tokio::time::timeout(RENDER_TIMEOUT, text).await.ok(),
                Err(_) => None,
            };
            match rendered {
                Some(Ok(text)) => {
                    stats.requests.fetch_add(1, Ordering::Relaxed);
                    ("200 OK", "", text)
                }
                _ => (
                    "503 Service Unavailable",
                    "",
                    "the decoder is busy\n".to_owned(),
                ),
            }
        }
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    );
    match tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await
    {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "response not taken in time",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_metrics_is_served() {
        let cases: &[(&[u8], Request)] = &[
            (
                b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
                Request::Metrics,
            ),
            (b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", Request::Metrics),
            (b"GET / HTTP/1.1\r\n\r\n", Request::NotFound),
            (b"GET /metricsx HTTP/1.1\r\n\r\n", Request::NotFound),
            (b"POST /metrics HTTP/1.1\r\n\r\n", Request::MethodNotAllowed),
            (b"GET /metrics\r\n\r\n", Request::Bad),
            (b"GET /metrics SPDY/3\r\n\r\n", Request::Bad),
            (b"GET  /metrics HTTP/1.1\r\n\r\n", Request::Bad),
            (b"GET http://x/metrics HTTP/1.1\r\n\r\n", Request::Bad),
            (b"\xff\xfe\r\n\r\n", Request::Bad),
        ];
        for (head, expected) in cases {
            assert_eq!(
                &parse_request(head),
                expected,
                "{}",
                String::from_utf8_lossy(head)
            );
        }
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
    }
}
