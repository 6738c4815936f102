//! Child processes for the broker tests: output collected as it comes (so a test waits
//! for a line instead of sleeping), killed with the test (on drop, and by the kernel if
//! the test process dies first), and the binaries under test built once per process.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a test waits for anything before failing.
pub const WAIT: Duration = Duration::from_secs(90);

/// Polls `done` every 20 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`wait_until`] with [`WAIT`].
pub fn wait_for(what: &str, done: impl FnMut() -> bool) {
    wait_until(what, WAIT, done)
}

/// A spawned child: stdout and stderr collected by threads, SIGKILLed on drop.
pub struct Proc {
    name: String,
    child: Child,
    output: Arc<Mutex<String>>,
    status: Option<ExitStatus>,
    /// One message per collector that reached the end of its pipe.
    drained: std::sync::mpsc::Receiver<()>,
    collectors: usize,
}

fn collect(
    pipe: impl Read + Send + 'static,
    into: Arc<Mutex<String>>,
    done: std::sync::mpsc::Sender<()>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut all = into.lock().unwrap_or_else(|p| p.into_inner());
            all.push_str(&line);
            all.push('\n');
        }
        let _ = done.send(());
    });
}

impl Proc {
    /// Spawns `command`; `name` is how failures call it.
    pub fn spawn(name: &str, mut command: Command) -> Self {
        // SAFETY: prctl(2) in the child between fork and exec, async-signal-safe. The
        // child dies with the thread that spawned it (the test's), even if the test
        // process is killed and never runs its destructors.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {command:?}: {e}"));
        let output = Arc::new(Mutex::new(String::new()));
        let (done, drained) = std::sync::mpsc::channel();
        let mut collectors = 0;
        if let Some(out) = child.stdout.take() {
            collect(out, output.clone(), done.clone());
            collectors += 1;
        }
        if let Some(err) = child.stderr.take() {
            collect(err, output.clone(), done);
            collectors += 1;
        }
        Self {
            name: name.to_owned(),
            child,
            output,
            status: None,
            drained,
            collectors,
        }
    }

    /// After the exit: waits (at most 2 s: a grandchild may hold the pipes) until the
    /// collectors have read everything.
    fn drain(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.collectors > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.drained.recv_timeout(left).is_err() {
                return;
            }
            self.collectors -= 1;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it wrote to stdout and stderr so far, interleaved by line.
    pub fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How often `needle` occurs in the output so far.
    pub fn count(&self, needle: &str) -> usize {
        self.output().matches(needle).count()
    }

    /// Waits until the output holds `needle` `times` times; panics with the output if
    /// the process exits first or after [`WAIT`].
    pub fn wait_output_n(&mut self, needle: &str, times: usize) {
        let deadline = Instant::now() + WAIT;
        while self.count(needle) < times {
            if let Some(status) = self.exited() {
                // Its last lines may still be in the pipe.
                self.drain();
                if self.count(needle) >= times {
                    return;
                }
                panic!(
                    "{} exited ({status}) before printing {needle:?} {times} time(s):\n{}",
                    self.name,
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not print {needle:?} {times} time(s) within {WAIT:?}:\n{}",
                self.name,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait_output(&mut self, needle: &str) {
        self.wait_output_n(needle, 1);
    }

    /// The exit status, once it exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits for it to exit by itself.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.exited() {
                self.drain();
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {WAIT:?}:\n{}",
                self.name,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for a successful exit; panics with the output otherwise.
    pub fn wait_success(&mut self) {
        let status = self.wait_exit();
        assert!(
            status.success(),
            "{} failed ({status}):\n{}",
            self.name,
            self.output()
        );
    }

    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on the pid of a child we own and have not reaped.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, signal);
        }
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        if let Some(status) = self.exited() {
            return status;
        }
        self.signal(libc::SIGTERM);
        self.wait_exit()
    }

    /// SIGKILL, then reaps it.
    pub fn kill(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The agent and decoder binaries of this tree.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub agent: PathBuf,
    pub decoder: PathBuf,
}

/// Builds `edgearmor` and `edgearmor-decode` (dev profile, locked; a no-op when
/// `cargo test --workspace` built them already) once per process and returns their
/// paths as cargo reports them.
pub fn binaries() -> Binaries {
    static BUILT: OnceLock<Binaries> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = workspace_root();
            let mut command = Command::new(env!("CARGO"));
            // What cargo set for this test process (the package's name, manifest dir,
            // ...) would make build scripts that watch those variables run again, and
            // everything above them be rebuilt.
            for (name, _) in std::env::vars_os() {
                let name = name.to_string_lossy();
                if [
                    "CARGO_PKG_",
                    "CARGO_MANIFEST_",
                    "CARGO_CRATE_",
                    "CARGO_BIN_",
                ]
                .iter()
                .any(|prefix| name.starts_with(prefix))
                    || ["CARGO_TARGET_TMPDIR", "CARGO_PRIMARY_PACKAGE", "OUT_DIR"]
                        .contains(&name.as_ref())
                {
                    command.env_remove(name.as_ref());
                }
            }
            let output = command
                .current_dir(&root)
                .args([
                    "build",
                    "--locked",
                    "--message-format",
                    "json-render-diagnostics",
                    "-p",
                    "edgearmor",
                    "--bin",
                    "edgearmor",
                    "-p",
                    "edgearmor-decode",
                    "--bin",
                    "edgearmor-decode",
                ])
                .stderr(Stdio::inherit())
                .output()
                .unwrap_or_else(|e| panic!("cargo build of the binaries: {e}"));
            assert!(
                output.status.success(),
                "cargo build of edgearmor and edgearmor-decode failed"
            );
            let mut agent = None;
            let mut decoder = None;
            for line in String::from_utf8_lossy(&output.stdout).lines() {
                let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                let Some(exe) = message.get("executable").and_then(|e| e.as_str()) else {
                    continue;
                };
                let name = message["target"]["name"].as_str().unwrap_or_default();
                match name {
                    "edgearmor" => agent = Some(PathBuf::from(exe)),
                    "edgearmor-decode" => decoder = Some(PathBuf::from(exe)),
                    _ => {}
                }
            }
            Binaries {
                agent: agent.expect("cargo named the edgearmor executable"),
                decoder: decoder.expect("cargo named the edgearmor-decode executable"),
            }
        })
        .clone()
}

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fresh directory for one test, under the target directory's tmp, removed on drop
/// when the test passed.
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "edgearmor-brokers-{name}-{}-{nanos:08x}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("{}: cannot create: {e}", path.display()));
        Self { path }
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// A subdirectory, created.
    pub fn dir(&self, name: &str) -> PathBuf {
        let dir = self.path.join(name);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("{}: cannot create: {e}", dir.display()));
        dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Kept after a failure, for the brokers' logs.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Where [`free_port`] starts looking.
const FIXED_PORTS_FROM: u16 = 10_000;

/// A loopback port nobody listens on right now, below the kernel's ephemeral range
/// (as `edgearmor_vm::broker::free_port`, which this crate does not depend on).
///
/// A broker restarted, killed and started fresh, or a cluster node killed leaves its
/// port unbound for seconds. A port of the ephemeral range can in that time become
/// the local end of any loopback connection on the machine (or of the agent's own
/// attempt, a TCP self-connect), and the broker then cannot bind it again; a port
/// below the range is only ever taken by an explicit bind. Each process walks the
/// range from its own offset, so parallel tests and processes try different ports.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_from = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let span = u32::from(ephemeral_from.saturating_sub(FIXED_PORTS_FROM));
    if span < 1000 {
        // No room below the range here: any free port, as the kernel picks it.
        return std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
    }
    let offset = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIXED_PORTS_FROM + ((offset + n) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIXED_PORTS_FROM}..{ephemeral_from}");
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn accepts(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// `path` as a command-line argument.
pub fn arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
