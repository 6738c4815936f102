//! A child process for integration tests whose stderr is collected as it comes, so a
//! test can wait for a line (a readiness signal) instead of sleeping. Killed on drop.
//! Test support: failures panic with the process's stderr.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::broker::{WAIT, wait_for};

/// A spawned child with its stderr collected in the background.
pub struct WatchedProcess {
    child: Child,
    stderr: Arc<Mutex<String>>,
    /// The thread copying stderr; it ends at EOF, when the process (and whatever
    /// inherited its stderr) has exited.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl WatchedProcess {
    /// Spawns `command` with stdout discarded and stderr collected.
    pub fn spawn(mut command: Command) -> Self {
        let program = format!("{command:?}");
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{program} runs: {e}"));
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let reader = child.stderr.take().map(|pipe| {
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut s = sink.lock().unwrap_or_else(|p| p.into_inner());
                    s.push_str(&line);
                    s.push('\n');
                }
            })
        });
        Self {
            child,
            stderr,
            reader,
        }
    }

    /// Everything it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until stderr contains `needle`.
    pub fn wait_stderr(&self, needle: &str) {
        wait_for(needle, || self.stderr().contains(needle));
    }

    /// Waits for a successful exit; panics with stderr on failure or after [`WAIT`].
    /// On return [`stderr`](Self::stderr) holds everything the process wrote: the
    /// collecting thread has read to the end of the pipe.
    pub fn wait_success(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.finish_stderr(deadline);
                assert!(
                    status.success(),
                    "process failed: {status}\n{}",
                    self.stderr()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "process did not finish:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (until `deadline`) for the stderr thread to reach the end of the pipe.
    fn finish_stderr(&mut self, deadline: Instant) {
        let Some(reader) = self.reader.take() else {
            return;
        };
        while !reader.is_finished() {
            assert!(
                Instant::now() < deadline,
                "stderr still open after the process exited:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = reader.join();
    }

    /// SIGTERM (the agent's "stop after delivering" signal); see [`wait_success`](Self::wait_success).
    pub fn terminate(&self) {
        // SAFETY: kill(2) on the pid of a child we own and have not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WatchedProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
