//! The SOC daemons of the tests, started on loopback with generated configurations and
//! killed on drop: Debian's `prometheus` (asked through its query API) and `rsyslog`
//! (imtcp, plain and TLS, writing what it parsed to files). Shared by the decoder's SOC
//! tests and the broker suite's end-to-end one (included there with `#[path]`), so it
//! uses only std, libc and serde_json.
#![allow(dead_code)] // Each test file uses its own part of this.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Polls `condition` every 20 ms until it holds or `timeout` passes.
pub fn wait(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
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

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

pub const PROMETHEUS: &str = "/usr/bin/prometheus";
pub const RSYSLOGD: &str = "/usr/sbin/rsyslogd";
pub const WAIT: Duration = Duration::from_secs(60);

/// A child process killed (and reaped) on drop.
pub struct Daemon {
    child: Child,
    name: &'static str,
    log: PathBuf,
}

impl Daemon {
    pub fn spawn(name: &'static str, command: &mut Command, log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).expect("log file");
        let err = file.try_clone().expect("log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e} (scripts/install-deps.sh installs it)"));
        Self { child, name, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until `ready()`, panicking with the log if the process exits first.
    pub fn wait_ready(&mut self, what: &str, mut ready: impl FnMut(&Self) -> bool) {
        let mut exited = false;
        let ok = wait(WAIT, || {
            exited = !self.running();
            exited || ready(self)
        });
        assert!(
            ok && !exited,
            "{} not ready ({what}); its log:\n{}",
            self.name,
            self.log()
        );
    }

    /// SIGTERM and wait for the exit.
    pub fn stop(&mut self) {
        // SAFETY: kill(2) on our own, not yet reaped child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let exited = wait(WAIT, || !self.running());
        assert!(exited, "{} ignored SIGTERM:\n{}", self.name, self.log());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` over HTTP/1.0 (no chunking): (status code, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let code = head.split(' ').nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}

pub fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"_-.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub struct Prometheus {
    pub daemon: Daemon,
    pub port: u16,
}

impl Prometheus {
    /// Scraping `target` every 200 ms, its state in `dir`.
    pub fn start(dir: &Path, target: &str) -> Self {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 200ms\n  scrape_timeout: 150ms\n\
                 scrape_configs:\n  - job_name: edgearmor-decode\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let port = free_port();
        let mut daemon = Daemon::spawn(
            "prometheus",
            Command::new(PROMETHEUS)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}")),
            dir.join("prometheus.log"),
        );
        daemon.wait_ready("its API answering", |_| {
            http_get(port, "/-/ready").is_some_and(|(code, _)| code == 200)
        });
        Self { daemon, port }
    }

    /// The values of an instant query's result vector.
    pub fn query(&self, promql: &str) -> Vec<f64> {
        let Some((200, body)) = http_get(
            self.port,
            &format!("/api/v1/query?query={}", url_encode(promql)),
        ) else {
            return Vec::new();
        };
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        json["data"]["result"]
            .as_array()
            .map(|results| {
                results
                    .iter()
                    .filter_map(|r| r["value"][1].as_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until the query returns exactly `expected`; `context` (the decoder's
    /// stderr, say) goes into the failure message.
    pub fn wait_for(&self, promql: &str, expected: f64, context: &dyn Fn() -> String) {
        let mut last = Vec::new();
        let ok = wait(WAIT, || {
            last = self.query(promql);
            last == [expected]
        });
        assert!(
            ok,
            "{promql}: Prometheus answers {last:?}, not [{expected}]\nprometheus log:\n{}\n{}",
            self.daemon.log(),
            context()
        );
    }
}

pub struct Rsyslog {
    pub daemon: Daemon,
    pub plain_port: u16,
    pub tls_port: u16,
    /// TLS that requires a client certificate signed by the CA.
    pub mtls_port: u16,
    pub dir: PathBuf,
}

/// The TLS listener's PEM files.
pub struct ListenerPem<'a> {
    pub ca: &'a Path,
    pub cert: &'a Path,
    pub key: &'a Path,
}

impl Rsyslog {
    /// imtcp on three ports (plain; TLS with `cert`/`key`; TLS requiring a client
    /// certificate of the CA), octet-counted frames accepted; each input's messages to
    /// its own file (`plain.log`, `tls.log`, `mtls.log`), one line each:
    /// `PRI|TIMESTAMP|HOSTNAME|APP-NAME|MSGID|STRUCTURED-DATA|MSG`. `ports`: those of an
    /// instance to take over (a restart).
    pub fn start(dir: &Path, pem: &ListenerPem<'_>, ports: Option<[u16; 3]>) -> Self {
        let [plain_port, tls_port, mtls_port] =
            ports.unwrap_or_else(|| [free_port(), free_port(), free_port()]);
        let work = dir.join("work");
        std::fs::create_dir_all(&work).expect("rsyslog work dir");
        let conf = format!(
            r#"global(workDirectory="{work}" maxMessageSize="64k"
       defaultNetstreamDriverCAFile="{ca}"
       defaultNetstreamDriverCertFile="{cert}"
       defaultNetstreamDriverKeyFile="{key}")
module(load="imtcp" maxSessions="100")
template(name="fields" type="string"
         string="%pri%|%timereported:::date-rfc3339%|%hostname%|%app-name%|%msgid%|%structured-data%|%msg%\n")
input(type="imtcp" address="127.0.0.1" port="{plain_port}" ruleset="plain")
input(type="imtcp" address="127.0.0.1" port="{tls_port}" ruleset="tls"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imtcp" address="127.0.0.1" port="{mtls_port}" ruleset="mtls"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="x509/certvalid")
ruleset(name="plain") {{ action(type="omfile" file="{dir}/plain.log" template="fields") }}
ruleset(name="tls") {{ action(type="omfile" file="{dir}/tls.log" template="fields") }}
ruleset(name="mtls") {{ action(type="omfile" file="{dir}/mtls.log" template="fields") }}
"#,
            work = work.display(),
            dir = dir.display(),
            ca = pem.ca.display(),
            cert = pem.cert.display(),
            key = pem.key.display(),
        );
        let conf_path = dir.join("rsyslog.conf");
        std::fs::write(&conf_path, conf).expect("write rsyslog.conf");
        let mut daemon = Daemon::spawn(
            "rsyslogd",
            Command::new(RSYSLOGD)
                .arg("-n")
                .arg("-f")
                .arg(&conf_path)
                .arg("-i")
                .arg(dir.join("rsyslogd.pid")),
            dir.join("rsyslogd.log"),
        );
        daemon.wait_ready("its three listeners", |_| {
            [plain_port, tls_port, mtls_port]
                .iter()
                .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok())
        });
        Self {
            daemon,
            plain_port,
            tls_port,
            mtls_port,
            dir: dir.to_owned(),
        }
    }

    pub fn lines(&self, file: &str) -> Vec<String> {
        std::fs::read_to_string(self.dir.join(file))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// `PRI|TIMESTAMP|HOSTNAME|APP-NAME|MSGID|STRUCTURED-DATA|MSG` as rsyslog parsed it.
pub struct SyslogLine {
    pub pri: String,
    pub timestamp: String,
    pub hostname: String,
    pub app: String,
    pub msgid: String,
    pub sd: String,
    pub msg: String,
}

pub fn parse_line(line: &str) -> SyslogLine {
    let parts: Vec<&str> = line.splitn(7, '|').collect();
    assert_eq!(parts.len(), 7, "{line}");
    SyslogLine {
        pri: parts[0].into(),
        timestamp: parts[1].into(),
        hostname: parts[2].into(),
        app: parts[3].into(),
        msgid: parts[4].into(),
        sd: parts[5].into(),
        msg: parts[6].trim_start().into(),
    }
}
