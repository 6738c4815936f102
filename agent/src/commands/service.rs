//! Telling the service manager how the agent is (`Type=notify` in `edgearmor.service`):
//! `READY=1` once the probes are attached (or adopted), a `STATUS=` line whenever what
//! it says changes, `RELOADING=1` then `READY=1` around a reload, and `WATCHDOG=1` from
//! a task on the agent's own executor ([`ServiceNotifier::watchdog`]), so a wedged event
//! loop stops pinging and systemd restarts it (enforcement stays pinned meanwhile).
//! Without `NOTIFY_SOCKET` every call does nothing.

use std::cell::RefCell;
use std::time::Duration;

use crate::commands::session::Stopping;
use crate::host::notify::{NotifySocket, ServiceManager, monotonic_usec, service_env};

/// The notification side of the agent; one per process, shared by its tasks.
pub struct ServiceNotifier {
    manager: Option<Box<dyn ServiceManager>>,
    watchdog_every: Option<Duration>,
    /// The last `STATUS=` sent, so an unchanged one is not sent again.
    status: RefCell<String>,
    /// A failed send is logged once, not at every ping.
    failed: std::cell::Cell<bool>,
}

impl ServiceNotifier {
    /// From this process's environment (`NOTIFY_SOCKET`, `WATCHDOG_USEC`,
    /// `WATCHDOG_PID`); what cannot be used is logged and left out.
    pub fn from_env() -> Self {
        let env = service_env(|k| std::env::var_os(k), std::process::id());
        if let Some(reason) = &env.ignored {
            log::warn!("systemd watchdog not fed: {reason}");
        }
        let manager = env.socket.and_then(|spec| match NotifySocket::new(&spec) {
            Ok(socket) => Some(Box::new(socket) as Box<dyn ServiceManager>),
            Err(e) => {
                log::warn!("NOTIFY_SOCKET {spec:?} unusable, systemd is not notified: {e}");
                None
            }
        });
        Self::new(manager, env.watchdog_every)
    }

    pub fn new(manager: Option<Box<dyn ServiceManager>>, watchdog_every: Option<Duration>) -> Self {
        Self {
            watchdog_every: manager.as_ref().and(watchdog_every),
            manager,
            status: RefCell::new(String::new()),
            failed: std::cell::Cell::new(false),
        }
    }

    /// Nothing to notify (tests, commands that are not services).
    pub fn none() -> Self {
        Self::new(None, None)
    }

    fn send(&self, message: &str) {
        let Some(manager) = &self.manager else {
            return;
        };
        match manager.notify(message) {
            Ok(()) => self.failed.set(false),
            Err(e) if !self.failed.replace(true) => {
                log::warn!("cannot notify systemd ({e}); retrying at the next notification");
            }
            Err(_) => {}
        }
    }

    /// A status line may not hold a newline (it would start another assignment).
    fn status_line(status: &str) -> String {
        status.replace(['\n', '\r'], " ")
    }

    /// `READY=1` with the first status: the agent enforces (or watches) now.
    pub fn ready(&self, status: &str) {
        let line = Self::status_line(status);
        self.send(&format!("READY=1\nSTATUS={line}"));
        *self.status.borrow_mut() = line;
    }

    /// `STATUS=` when it differs from the last one sent.
    pub fn status(&self, status: &str) {
        let line = Self::status_line(status);
        if *self.status.borrow() == line {
            return;
        }
        self.send(&format!("STATUS={line}"));
        *self.status.borrow_mut() = line;
    }

    /// `RELOADING=1` (with the `MONOTONIC_USEC=` systemd 253 wants for
    /// `Type=notify-reload`, harmless before): a reload starts.
    pub fn reloading(&self) {
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading policies",
            monotonic_usec()
        ));
        *self.status.borrow_mut() = "reloading policies".into();
    }

    /// `READY=1` after a reload, applied or refused, with the status that holds now.
    pub fn reloaded(&self, status: &str) {
        self.ready(status);
    }

    /// `STOPPING=1`: the agent stops (enforcement stays pinned if pinning is on).
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }

    /// Half of `WATCHDOG_USEC`, when systemd watches this process.
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog_every
    }

    /// `WATCHDOG=1` every [`Self::watchdog_every`] until the stop. Spawned on the
    /// agent's executor: while any task blocks it, this one cannot run, the pings stop
    /// and systemd restarts the agent after `WatchdogSec=`.
    pub async fn watchdog(&self, stopping: &Stopping) {
        use futures_lite::FutureExt;
        let Some(every) = self.watchdog_every else {
            return;
        };
        loop {
            self.send("WATCHDOG=1");
            let stop = async {
                stopping.wait().await;
                true
            }
            .or(async {
                async_io::Timer::after(every).await;
                false
            })
            .await;
            if stop {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    /// Records every datagram, or refuses them all.
    #[derive(Clone, Default)]
    struct Recorder(Rc<RefCell<Vec<String>>>, bool);

    impl ServiceManager for Recorder {
        fn notify(&self, message: &str) -> std::io::Result<()> {
            if self.1 {
                return Err(std::io::ErrorKind::ConnectionRefused.into());
            }
            self.0.borrow_mut().push(message.to_owned());
            Ok(())
        }
    }

    fn notifier(every: Option<Duration>) -> (ServiceNotifier, Recorder) {
        let recorder = Recorder::default();
        let n = ServiceNotifier::new(Some(Box::new(recorder.clone())), every);
        (n, recorder)
    }

    #[test]
    fn ready_status_and_reload_are_the_protocol_lines() {
        let (n, sent) = notifier(None);
        n.ready("enforcing process; broker connecting");
        n.status("enforcing process; broker connecting");
        n.status("enforcing process;\nbroker connected");
        n.reloading();
        n.reloaded("enforcing process, file; broker connected");
        n.stopping();
        let sent = sent.0.borrow();
        assert_eq!(
            sent.len(),
            5,
            "an unchanged status is not sent again: {sent:?}"
        );
        assert_eq!(
            sent[0],
            "READY=1\nSTATUS=enforcing process; broker connecting"
        );
        assert_eq!(sent[1], "STATUS=enforcing process; broker connected");
        let reload: Vec<&str> = sent[2].split('\n').collect();
        assert_eq!(reload[0], "RELOADING=1");
        let usec: u64 = reload[1]
            .strip_prefix("MONOTONIC_USEC=")
            .and_then(|u| u.parse().ok())
            .expect("MONOTONIC_USEC=<number>");
        assert!(usec > 0 && usec <= monotonic_usec(), "{usec}");
        assert_eq!(
            sent[3],
            "READY=1\nSTATUS=enforcing process, file; broker connected"
        );
        assert_eq!(sent[4], "STOPPING=1\nSTATUS=stopping");
    }

    #[test]
    fn the_watchdog_pings_until_the_stop_and_not_without_a_deadline() {
        let (n, sent) = notifier(Some(Duration::from_millis(5)));
        let (announcer, stopping) = crate::commands::session::stop_channel();
        let executor = smol::LocalExecutor::new();
        let pings = executor.spawn(n.watchdog(&stopping));
        smol::block_on(executor.run(async {
            // Wait on the pings themselves, then stop.
            while sent.0.borrow().len() < 3 {
                async_io::Timer::after(Duration::from_millis(1)).await;
            }
            drop(announcer);
            pings.await;
        }));
        assert!(sent.0.borrow().iter().all(|m| m == "WATCHDOG=1"));
        let (quiet, none) = notifier(None);
        let (_announcer, stopping) = crate::commands::session::stop_channel();
        smol::block_on(quiet.watchdog(&stopping));
        assert!(none.0.borrow().is_empty());
        // No socket: no watchdog either, whatever WATCHDOG_USEC said.
        let unwatched = ServiceNotifier::new(None, Some(Duration::from_secs(1)));
        assert_eq!(unwatched.watchdog_every(), None);
    }

    #[test]
    fn a_refusing_manager_does_not_stop_the_agent() {
        let refusing = Recorder(Default::default(), true);
        let n = ServiceNotifier::new(Some(Box::new(refusing)), None);
        n.ready("up");
        n.status("still up");
        assert!(n.failed.get());
    }
}
