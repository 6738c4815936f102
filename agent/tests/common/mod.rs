//! What several integration tests share: the real agent in `send-test-alerts` mode
//! with its stderr collected as it comes (tests wait for lines, never sleep) and a
//! SIGTERM for a clean stop (it then delivers what is pending and exits 0).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use edgearmor_vm::broker::WAIT;

/// The agent, with stderr collected line by line and a SIGTERM for a clean stop.
pub struct Agent {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Agent {
    /// `send-test-alerts` without a configuration file or stdout, unthrottled unless
    /// `args` (which come later and win) say otherwise.
    pub fn start(env: &[(&str, &str)], args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_edgearmor"))
            .args(["send-test-alerts", "--config", "/dev/null", "--no-stdout"])
            .args(["--max-alerts-per-sec", "0"])
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the agent runs");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let pipe = child.stderr.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap_or_else(|p| p.into_inner());
                s.push_str(&line);
                s.push('\n');
            }
        });
        Self { child, stderr }
    }

    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn wait_stderr(&self, what: &str, mut done: impl FnMut(&str) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(&self.stderr()) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}:\n{}",
                self.stderr()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// SIGTERM (deliver what is pending, then exit 0) and wait.
    pub fn stop(&mut self) {
        // SAFETY: kill(2) on our own, not yet reaped child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "{status}\n{}", self.stderr());
                return;
            }
            assert!(Instant::now() < deadline, "no exit:\n{}", self.stderr());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
