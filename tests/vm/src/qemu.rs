//! Booting a guest: [`BootConfig`] describes the run, [`boot`] runs QEMU (software emulation,
//! no KVM) and collects the serial console into a [`BootLog`].
//!
//! The console is read line by line as the guest prints it; [`boot`] returns as soon as a line
//! ends with the done marker, or when QEMU exits, and fails with [`VmError::Timeout`] when the
//! deadline passes first. It never sleeps for a fixed time, and QEMU is killed and reaped on
//! every path out, including a panic unwinding through it.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use crate::fetch::describe;
use crate::{Arch, GuestKernel, VmError};

/// The done marker a [`BootConfig`] uses unless told otherwise.
pub const DEFAULT_DONE_MARKER: &str = "EA-DONE";

/// How many console lines an error message quotes.
const TAIL_LINES: usize = 30;

/// How long to wait for QEMU to exit after it closed its console (it is then killed).
const EXIT_GRACE: Duration = Duration::from_secs(10);

/// One guest run. Build it with [`BootConfig::new`], then adjust the public fields.
#[derive(Debug, Clone)]
pub struct BootConfig {
    /// The kernel to boot (its `arch` picks the QEMU binary, machine and console).
    pub kernel: GuestKernel,
    /// The initramfs (see [`Initramfs`](crate::Initramfs)).
    pub initrd: PathBuf,
    /// Guest memory in MiB (default: [`Arch::default_memory_mb`]).
    pub memory_mb: u32,
    /// Appended to the kernel command line after `console=<tty> panic=-1`.
    pub extra_append: String,
    /// How long the guest may take to print the done marker (default: 180 s on x86_64, 420 s
    /// on aarch64, which is emulated several times slower).
    pub timeout: Duration,
    /// Where the console log is written (created, with its parent directories, or truncated).
    /// Its first line is the QEMU command, prefixed by `# `; QEMU's own stderr lines are
    /// prefixed by `[qemu] `.
    pub log_path: PathBuf,
    /// The guest is done when a console line ends with this text; QEMU is then killed. If it is
    /// empty, [`boot`] waits for QEMU to exit instead (e.g. after the guest's `poweroff -f`).
    pub done_marker: String,
    /// Extra QEMU arguments, appended last. `-nic none` is passed unless these contain `-nic`,
    /// `-net` or `-netdev`.
    pub extra_qemu_args: Vec<String>,
    /// The QEMU binary (default: [`Arch::qemu_binary`], looked up in `PATH`).
    pub qemu_binary: PathBuf,
    /// When set, every console line is also sent here the moment it arrives, so another
    /// thread can follow the guest while it runs (e.g. the host's side of a handshake
    /// with the guest). Send errors (the receiver is gone) are ignored. The channel
    /// disconnects when this configuration (and every clone of it) is dropped.
    pub console_tap: Option<Sender<String>>,
}

impl BootConfig {
    /// A configuration with the defaults described on each field and the marker
    /// [`DEFAULT_DONE_MARKER`].
    pub fn new(
        kernel: GuestKernel,
        initrd: impl Into<PathBuf>,
        log_path: impl Into<PathBuf>,
    ) -> Self {
        let timeout = match kernel.arch {
            Arch::X86_64 => Duration::from_secs(180),
            Arch::Aarch64 => Duration::from_secs(420),
        };
        BootConfig {
            memory_mb: kernel.arch.default_memory_mb(),
            qemu_binary: PathBuf::from(kernel.arch.qemu_binary()),
            initrd: initrd.into(),
            extra_append: String::new(),
            timeout,
            log_path: log_path.into(),
            done_marker: DEFAULT_DONE_MARKER.to_owned(),
            extra_qemu_args: Vec::new(),
            console_tap: None,
            kernel,
        }
    }

    /// The kernel command line: `console=<tty> panic=-1`, then [`extra_append`](Self::extra_append).
    pub fn append_line(&self) -> String {
        let mut line = format!("console={} panic=-1", self.kernel.arch.console());
        let extra = self.extra_append.trim();
        if !extra.is_empty() {
            line.push(' ');
            line.push_str(extra);
        }
        line
    }

    /// The QEMU command this configuration runs (without stdio set up).
    pub fn command(&self) -> Command {
        let arch = self.kernel.arch;
        let mut cmd = Command::new(&self.qemu_binary);
        cmd.args(arch.qemu_machine_args())
            .args(["-accel", "tcg", "-m"])
            .arg(self.memory_mb.to_string())
            .args(["-nographic", "-no-reboot", "-kernel"])
            .arg(&self.kernel.vmlinuz)
            .arg("-initrd")
            .arg(&self.initrd)
            .arg("-append")
            .arg(self.append_line());
        let has_net = self
            .extra_qemu_args
            .iter()
            .any(|a| matches!(a.as_str(), "-nic" | "-net" | "-netdev"));
        if !has_net {
            cmd.args(["-nic", "none"]);
        }
        cmd.args(&self.extra_qemu_args);
        cmd
    }
}

/// The console output of a finished run.
#[derive(Debug, Clone)]
pub struct BootLog {
    /// Every console line, in order, with `\r` removed.
    pub lines: Vec<String>,
    /// Whether the done marker was seen (always `false` when the marker is empty).
    pub marker_seen: bool,
    /// QEMU's exit status if it exited by itself; `None` when it was killed after the marker.
    pub exit_status: Option<ExitStatus>,
    /// QEMU's stderr lines.
    pub qemu_stderr: Vec<String>,
    /// Wall-clock time from starting QEMU to the marker (or exit).
    pub elapsed: Duration,
    /// Where the full log was written.
    pub log_path: PathBuf,
}

impl BootLog {
    /// For each line that starts with `prefix` (after leading whitespace), the text after it,
    /// with trailing whitespace removed. E.g. `lines_with_prefix("EA-LSM ")`.
    pub fn lines_with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.lines
            .iter()
            .filter_map(move |line| line.trim_start().strip_prefix(prefix))
            .map(str::trim_end)
    }

    /// The text after `prefix` on the first line that starts with it.
    pub fn first_with_prefix<'a>(&'a self, prefix: &'a str) -> Option<&'a str> {
        self.lines_with_prefix(prefix).next()
    }

    /// Whether any console line contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.lines.iter().any(|line| line.contains(needle))
    }

    /// The last `n` console lines.
    pub fn tail(&self, n: usize) -> &[String] {
        &self.lines[self.lines.len().saturating_sub(n)..]
    }
}

/// What the reader threads report.
enum Event {
    Console(String),
    ConsoleClosed,
    Stderr(String),
}

/// Owns the QEMU process: kills and reaps it when dropped, whatever the path out.
struct QemuGuard {
    child: Child,
    reaped: Option<ExitStatus>,
}

impl QemuGuard {
    /// Kills QEMU (if still running) and waits for it.
    fn kill_and_reap(&mut self) -> Option<ExitStatus> {
        if self.reaped.is_none() {
            // Fails only if it already exited, which `wait` then collects.
            let _ = self.child.kill();
            self.reaped = self.child.wait().ok();
        }
        self.reaped
    }

    /// Waits for QEMU to exit by itself, for at most `limit`, polling briefly; `None` if it is
    /// still running.
    fn wait_until(&mut self, limit: Instant) -> Option<ExitStatus> {
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.reaped = Some(status);
                    return Some(status);
                }
                Ok(None) if Instant::now() < limit => thread::sleep(Duration::from_millis(20)),
                _ => return None,
            }
        }
    }
}

impl Drop for QemuGuard {
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}

/// Splits a stream into lines (lossy UTF-8, `\r` removed) and sends them.
fn forward_lines(stream: impl Read, tx: &Sender<Event>, wrap: fn(String) -> Event) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let mut line = String::from_utf8_lossy(&buf).into_owned();
                line.retain(|c| c != '\r' && c != '\n');
                if tx.send(wrap(line)).is_err() {
                    return;
                }
            }
        }
    }
}

/// Boots the guest described by `cfg` and collects its console.
///
/// Returns when a console line ends with `cfg.done_marker` (QEMU is then killed), or, when the
/// marker is empty, when QEMU exits. Fails with [`VmError::Timeout`] if the deadline passes
/// first, with [`VmError::GuestExited`] if QEMU exits before printing a non-empty marker
/// (kernel panic, early poweroff, QEMU start-up error), and with [`VmError::Spawn`] if QEMU is
/// not installed. The log file is complete on every path.
pub fn boot(cfg: &BootConfig) -> Result<BootLog, VmError> {
    let log_path = cfg.log_path.clone();
    if let Some(parent) = log_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| VmError::io("creating directory", parent, e))?;
    }
    let log_file =
        fs::File::create(&log_path).map_err(|e| VmError::io("creating", &log_path, e))?;
    let mut log = io::BufWriter::new(log_file);
    let log_err = |e| VmError::io("writing", &log_path, e);

    let mut cmd = cfg.command();
    let cmd_text = describe(&cmd);
    writeln!(log, "# {cmd_text}").map_err(log_err)?;
    log.flush().map_err(log_err)?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

    let start = Instant::now();
    let deadline = start + cfg.timeout;
    let child = cmd.spawn().map_err(|source| VmError::Spawn {
        cmd: cmd_text.clone(),
        source,
    })?;
    let mut qemu = QemuGuard {
        child,
        reaped: None,
    };
    let (tx, rx) = mpsc::channel();
    if let Some(stdout) = qemu.child.stdout.take() {
        let tx = tx.clone();
        thread::spawn(move || {
            forward_lines(stdout, &tx, Event::Console);
            let _ = tx.send(Event::ConsoleClosed);
        });
    }
    if let Some(stderr) = qemu.child.stderr.take() {
        let tx = tx.clone();
        thread::spawn(move || forward_lines(stderr, &tx, Event::Stderr));
    }
    drop(tx);

    let mut out = BootLog {
        lines: Vec::new(),
        marker_seen: false,
        exit_status: None,
        qemu_stderr: Vec::new(),
        elapsed: Duration::ZERO,
        log_path: log_path.clone(),
    };
    let marker = cfg.done_marker.as_str();
    let tap = cfg.console_tap.as_ref();
    let mut record = |out: &mut BootLog, event: Event| -> Result<bool, VmError> {
        match event {
            Event::Console(line) => {
                writeln!(log, "{line}").map_err(log_err)?;
                log.flush().map_err(log_err)?;
                if let Some(tap) = tap {
                    // The follower may have finished (or failed) already.
                    let _ = tap.send(line.clone());
                }
                let done = !marker.is_empty() && line.trim_end().ends_with(marker);
                out.lines.push(line);
                Ok(done)
            }
            Event::Stderr(line) => {
                writeln!(log, "[qemu] {line}").map_err(log_err)?;
                log.flush().map_err(log_err)?;
                out.qemu_stderr.push(line);
                Ok(false)
            }
            Event::ConsoleClosed => Ok(false),
        }
    };

    // Phase 1: console lines until the marker, console EOF, or the deadline (checked before
    // every receive, so a guest flooding the console cannot outrun it).
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let next = if left.is_zero() {
            Err(RecvTimeoutError::Timeout)
        } else {
            rx.recv_timeout(left)
        };
        match next {
            Ok(Event::ConsoleClosed) | Err(RecvTimeoutError::Disconnected) => break,
            Ok(event) => {
                if record(&mut out, event)? {
                    out.marker_seen = true;
                    break;
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                qemu.kill_and_reap();
                drain(
                    &rx,
                    &mut out,
                    &mut record,
                    Instant::now() + Duration::from_secs(1),
                )?;
                return Err(VmError::Timeout {
                    timeout: cfg.timeout,
                    log_path,
                    last_lines: error_tail(&out),
                });
            }
        }
    }

    if out.marker_seen {
        out.elapsed = start.elapsed();
        qemu.kill_and_reap();
        return Ok(out);
    }

    // Phase 2: QEMU closed its console, so it is exiting; collect its status and stderr.
    let limit = deadline.min(Instant::now() + EXIT_GRACE);
    let status = qemu.wait_until(limit).or_else(|| qemu.kill_and_reap());
    drain(
        &rx,
        &mut out,
        &mut record,
        Instant::now() + Duration::from_secs(2),
    )?;
    out.elapsed = start.elapsed();
    out.exit_status = status;
    match status {
        Some(status) if !marker.is_empty() => Err(VmError::GuestExited {
            status,
            log_path,
            last_lines: error_tail(&out),
        }),
        _ => Ok(out),
    }
}

/// Records what the reader threads still have to say, until they finish or `limit` passes.
fn drain(
    rx: &Receiver<Event>,
    out: &mut BootLog,
    record: &mut impl FnMut(&mut BootLog, Event) -> Result<bool, VmError>,
    limit: Instant,
) -> Result<(), VmError> {
    loop {
        let left = limit.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Event::ConsoleClosed) => {}
            Ok(event) => {
                record(out, event)?;
            }
            Err(_) => return Ok(()),
        }
    }
}

/// The lines an error message quotes: the console's last lines, then QEMU's stderr.
fn error_tail(out: &BootLog) -> Vec<String> {
    let mut tail = out.tail(TAIL_LINES).to_vec();
    tail.extend(out.qemu_stderr.iter().map(|l| format!("[qemu] {l}")));
    tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn kernel(arch: Arch) -> GuestKernel {
        GuestKernel {
            arch,
            series: "6.12".into(),
            flavour: crate::Flavour::Standard,
            package: "linux-image-6.12.1+deb12-x-unsigned".into(),
            release: "6.12.1+deb12-x".into(),
            vmlinuz: PathBuf::from("/k/vmlinuz"),
            modules_dir: PathBuf::from("/k/modules"),
            config: PathBuf::from("/k/config"),
        }
    }

    fn args(cmd: &Command) -> Vec<String> {
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn x86_command_line() {
        let mut cfg = BootConfig::new(kernel(Arch::X86_64), "/i.cpio", "/tmp/log");
        cfg.extra_append = "quiet".into();
        let cmd = cfg.command();
        assert_eq!(cmd.get_program(), "qemu-system-x86_64");
        assert_eq!(
            args(&cmd),
            [
                "-accel",
                "tcg",
                "-m",
                "512",
                "-nographic",
                "-no-reboot",
                "-kernel",
                "/k/vmlinuz",
                "-initrd",
                "/i.cpio",
                "-append",
                "console=ttyS0 panic=-1 quiet",
                "-nic",
                "none"
            ]
        );
    }

    #[test]
    fn aarch64_command_line_with_network() {
        let mut cfg = BootConfig::new(kernel(Arch::Aarch64), Path::new("/i"), "/tmp/log");
        cfg.extra_qemu_args = vec!["-nic".into(), "user,restrict=on".into()];
        let cmd = cfg.command();
        assert_eq!(cmd.get_program(), "qemu-system-aarch64");
        let a = args(&cmd);
        assert_eq!(
            &a[..8],
            [
                "-M",
                "virt",
                "-cpu",
                "max,pauth-impdef=on",
                "-accel",
                "tcg",
                "-m",
                "1024"
            ]
        );
        assert!(a.contains(&"console=ttyAMA0 panic=-1".to_owned()));
        assert_eq!(a.iter().filter(|x| *x == "-nic").count(), 1);
        assert_eq!(a.last().map(String::as_str), Some("user,restrict=on"));
    }

    #[test]
    fn prefixes() {
        let log = BootLog {
            lines: vec![
                "[    1.0] something".into(),
                "EA-LSM lockdown,capability,bpf  ".into(),
                "  EA-KERNEL 6.12.1".into(),
                "EA-LSM second".into(),
            ],
            marker_seen: true,
            exit_status: None,
            qemu_stderr: Vec::new(),
            elapsed: Duration::ZERO,
            log_path: PathBuf::new(),
        };
        let lsm: Vec<&str> = log.lines_with_prefix("EA-LSM ").collect();
        assert_eq!(lsm, ["lockdown,capability,bpf", "second"]);
        assert_eq!(log.first_with_prefix("EA-KERNEL "), Some("6.12.1"));
        assert_eq!(log.first_with_prefix("EA-NONE"), None);
        assert!(log.contains("something"));
        assert_eq!(log.tail(1), ["EA-LSM second".to_owned()]);
        assert_eq!(log.tail(10).len(), 4);
    }

    /// A stand-in for QEMU: a shell script that ignores its arguments.
    fn fake_qemu(name: &str, script: &str) -> (PathBuf, BootConfig) {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("edgearmor-vm-{name}-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let bin = dir.join("fake-qemu");
        fs::write(&bin, format!("#!/bin/sh\n{script}\n")).expect("script");
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut cfg = BootConfig::new(kernel(Arch::X86_64), "/i", dir.join("logs/console.log"));
        cfg.qemu_binary = bin;
        cfg.timeout = Duration::from_secs(20);
        (dir, cfg)
    }

    #[test]
    fn marker_ends_the_run_and_kills_qemu() {
        let (dir, cfg) = fake_qemu(
            "marker",
            "printf 'one\\r\\nEA-X hello\\n[ 1.0] x EA-DONE\\n'; exec sleep 30",
        );
        let log = boot(&cfg).expect("boot");
        assert!(log.marker_seen);
        assert!(log.elapsed < Duration::from_secs(10), "{:?}", log.elapsed);
        assert_eq!(log.lines, ["one", "EA-X hello", "[ 1.0] x EA-DONE"]);
        assert_eq!(log.first_with_prefix("EA-X "), Some("hello"));
        let text = fs::read_to_string(&cfg.log_path).expect("log");
        assert!(text.starts_with("# "), "{text}");
        assert!(
            text.ends_with("one\nEA-X hello\n[ 1.0] x EA-DONE\n"),
            "{text}"
        );
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn the_console_tap_sees_each_line_while_the_guest_runs() {
        // The guest waits for a file the test creates only after the tap has shown it
        // the first line: a handshake, the way a test drives a guest step by step.
        let (dir, mut cfg) = fake_qemu("tap", "");
        let go = dir.join("go");
        let script = format!(
            "#!/bin/sh\necho EA-READY\nwhile [ ! -e {go} ]; do sleep 0.02; done\necho EA-DONE\nexec sleep 30\n",
            go = go.display()
        );
        fs::write(&cfg.qemu_binary, script).expect("script");
        let (tx, rx) = mpsc::channel();
        cfg.console_tap = Some(tx);
        let follower = thread::spawn(move || {
            let first = rx.recv_timeout(Duration::from_secs(10));
            fs::write(&go, b"").expect("go file");
            let rest: Vec<String> = rx.iter().collect();
            (first, rest)
        });
        let log = boot(&cfg).expect("boot");
        drop(cfg);
        let (first, rest) = follower.join().expect("follower");
        assert_eq!(first.as_deref(), Ok("EA-READY"));
        assert_eq!(rest, ["EA-DONE"]);
        assert_eq!(log.lines, ["EA-READY", "EA-DONE"]);
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn deadline_gives_timeout_with_tail() {
        let (dir, mut cfg) = fake_qemu("timeout", "echo booting; echo oops >&2; exec sleep 30");
        cfg.timeout = Duration::from_millis(1500);
        let start = Instant::now();
        match boot(&cfg) {
            Err(VmError::Timeout {
                timeout,
                log_path,
                last_lines,
            }) => {
                assert_eq!(timeout, cfg.timeout);
                assert_eq!(log_path, cfg.log_path);
                assert!(last_lines.contains(&"booting".to_owned()), "{last_lines:?}");
                assert!(
                    last_lines.contains(&"[qemu] oops".to_owned()),
                    "{last_lines:?}"
                );
            }
            other => panic!("expected Timeout, got {other:?}"),
        }
        assert!(start.elapsed() < Duration::from_secs(10));
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn early_exit_is_reported() {
        let (dir, cfg) = fake_qemu("exit", "echo panic; echo 'bad kernel' >&2; exit 3");
        match boot(&cfg) {
            Err(e @ VmError::GuestExited { .. }) => {
                let text = e.to_string();
                assert!(text.contains("exit status: 3"), "{text}");
                assert!(
                    text.contains("| panic") && text.contains("[qemu] bad kernel"),
                    "{text}"
                );
            }
            other => panic!("expected GuestExited, got {other:?}"),
        }
        // Without a marker, exiting is the normal end.
        let mut cfg = cfg;
        cfg.done_marker.clear();
        let log = boot(&cfg).expect("boot");
        assert_eq!(log.lines, ["panic"]);
        assert_eq!(log.qemu_stderr, ["bad kernel"]);
        assert_eq!(log.exit_status.and_then(|s| s.code()), Some(3));
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn missing_qemu_is_a_spawn_error() {
        let (dir, mut cfg) = fake_qemu("spawn", "true");
        cfg.qemu_binary = dir.join("no-such-qemu");
        match boot(&cfg) {
            Err(e @ VmError::Spawn { .. }) => assert!(e.to_string().contains("no-such-qemu")),
            other => panic!("expected Spawn, got {other:?}"),
        }
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
