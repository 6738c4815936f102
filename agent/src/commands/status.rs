//! `edgearmor status`: what this gateway enforces right now, from two places. The pins
//! in `pin_dir` say what the kernel enforces whether or not an agent runs (links keep the
//! programs attached; `ACTIVE` holds the generation and classes). The running agent's
//! status file (`[status] file`, rewritten every `interval_sec`) adds the policy set,
//! the broker and the counters; a file whose process is gone, or that stopped being
//! rewritten (a wedged or stopped agent), is reported as such, not believed.

use std::path::Path;
use std::process::ExitCode;

use serde::Serialize;

use crate::commands::run::report::class_names;
use crate::config::AgentConfig;
use crate::events::pipeline::unix_micros;
use crate::kernel::pins::{PinnedEnforcement, lock_state, pinned_enforcement};
use crate::status::AgentReport;
use edgearmor_probe_abi::LOCKED;

/// Exit status when nothing is enforced (no agent, no pins).
pub const NOTHING_ENFORCED: u8 = 3;

/// A status file older than this many refresh intervals is stale.
const STALE_INTERVALS: u64 = 3;

/// Everything `status` prints.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct GatewayStatus {
    /// `enforcing`, `monitor-only`, `pinned` (no agent, the pins enforce) or `none`.
    pub enforcement: String,
    pub pins: PinsView,
    /// The running agent's own report, when it is fresh.
    pub agent: Option<AgentReport>,
    /// Why there is no agent report (no file, a dead process, a stale file).
    pub agent_note: String,
    pub locked: LockView,
}

/// Locked mode: what the pinned `LOCK_STATE` says (the kernel's truth) and what
/// `agent.toml` asks for (the next agent's).
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct LockView {
    /// `None` when nothing is pinned, or the pin could not be read (`error` says why).
    pub pinned: Option<bool>,
    pub configured: bool,
    pub error: Option<String>,
}

impl LockView {
    fn read(config: &AgentConfig) -> Self {
        let (pinned, error) = if config.pin_dir.as_os_str().is_empty() {
            (None, None)
        } else {
            match lock_state(&config.pin_dir) {
                Ok(state) => (state.map(|s| s.locked == LOCKED), None),
                Err(e) => (None, Some(e.to_string())),
            }
        };
        Self {
            pinned,
            configured: config.locked,
            error,
        }
    }

    fn describe(&self) -> String {
        let now = match (&self.error, self.pinned) {
            // Unreadable is never reported as unlocked.
            (Some(e), _) => format!("unknown ({e})"),
            (None, Some(true)) => "yes: the kernel denies tampering with edgearmor".into(),
            (None, Some(false)) => "no".into(),
            (None, None) => "no (nothing pinned)".into(),
        };
        // Said when the next agent would change it (or it cannot be told).
        if self.error.is_none() && self.pinned.unwrap_or(false) == self.configured {
            now
        } else {
            format!("{now}; agent.toml says locked = {}", self.configured)
        }
    }
}

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct PinsView {
    pub dir: String,
    pub links: Vec<String>,
    pub generation: Option<u32>,
    pub classes: Vec<String>,
    pub unreadable: Option<String>,
}

/// `edgearmor status [--json]`.
pub fn status(config: &AgentConfig, json: bool) -> ExitCode {
    let pins = if config.pin_dir.as_os_str().is_empty() {
        PinnedEnforcement::default()
    } else {
        pinned_enforcement(&config.pin_dir)
    };
    let (agent, note) = read_agent(&config.status.file, unix_micros() / 1_000_000, |pid| {
        Path::new(&format!("/proc/{pid}")).exists()
    });
    let mut status = gather(config, pins, agent, note);
    status.locked = LockView::read(config);
    if json {
        match serde_json::to_string(&status) {
            Ok(text) => println!("{text}"),
            Err(e) => return super::fail(1, e),
        }
    } else {
        print!("{}", render(&status));
    }
    if status.enforcement == "none" {
        ExitCode::from(NOTHING_ENFORCED)
    } else {
        ExitCode::SUCCESS
    }
}

/// The agent's report if `file` holds a fresh one of a live process, else why not.
pub fn read_agent(
    file: &Path,
    now: u64,
    alive: impl Fn(u32) -> bool,
) -> (Option<AgentReport>, String) {
    if file.as_os_str().is_empty() {
        return (
            None,
            "no status file configured ([status] file = \"\")".into(),
        );
    }
    let text = match std::fs::read(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return (None, format!("no agent runs (no {})", file.display()));
        }
        Err(e) => return (None, format!("cannot read {}: {e}", file.display())),
    };
    let report: AgentReport = match serde_json::from_slice(&text) {
        Ok(r) => r,
        Err(e) => {
            return (
                None,
                format!("{} is not a status file: {e}", file.display()),
            );
        }
    };
    if !alive(report.pid) {
        let note = format!(
            "no agent runs (pid {} of {} is gone)",
            report.pid,
            file.display()
        );
        return (None, note);
    }
    let age = now.saturating_sub(report.time);
    if age > STALE_INTERVALS * report.interval_sec.max(1) {
        let note = format!(
            "agent pid {} has not reported for {age} s (every {} s expected): wedged or stopped",
            report.pid, report.interval_sec
        );
        return (None, note);
    }
    (Some(report), String::new())
}

fn gather(
    config: &AgentConfig,
    pins: PinnedEnforcement,
    agent: Option<AgentReport>,
    agent_note: String,
) -> GatewayStatus {
    let enforcement = match (&agent, pins.links.is_empty()) {
        (Some(a), _) => a.mode.clone(),
        (None, false) => "pinned".to_owned(),
        (None, true) => "none".to_owned(),
    };
    GatewayStatus {
        enforcement,
        pins: PinsView {
            dir: config.pin_dir.display().to_string(),
            generation: pins.active.map(|a| a.generation),
            classes: pins
                .active
                .map(|a| class_names(a.class_mask))
                .unwrap_or_default(),
            links: pins.links,
            unreadable: pins.unreadable,
        },
        agent,
        agent_note,
        locked: LockView::default(),
    }
}

/// The human-readable form.
pub fn render(s: &GatewayStatus) -> String {
    let mut out = String::new();
    let mut line = |key: &str, value: String| out.push_str(&format!("{key:<12} {value}\n"));
    let pinned = if s.pins.links.is_empty() {
        format!("nothing pinned in {}", s.pins.dir)
    } else {
        let classes = match s.pins.classes.as_slice() {
            [] => "no rules".to_owned(),
            c => c.join(", "),
        };
        let generation = s
            .pins
            .generation
            .map_or(String::new(), |g| format!(", generation {g}"));
        format!(
            "{} program(s) attached from {} ({classes}{generation}): enforced with or without an agent",
            s.pins.links.len(),
            s.pins.dir
        )
    };
    line("enforcement", s.enforcement.clone());
    line("pins", pinned);
    if let Some(why) = &s.pins.unreadable {
        line("", format!("cannot read the pinned generation: {why}"));
    }
    line("locked", s.locked.describe());
    let Some(a) = &s.agent else {
        line("agent", s.agent_note.clone());
        return out;
    };
    let uptime = a.counters.get("uptime_seconds").copied().unwrap_or(0);
    line("agent", format!("running (pid {}, up {uptime} s)", a.pid));
    line("status", a.status_line());
    line("policy set", a.policy_set.clone());
    if let Some(g) = a.generation {
        line("generation", g.to_string());
    }
    let pin = match (a.pin_dir.as_str(), a.adopted) {
        ("", _) => "not pinned: enforcement stops with the agent".to_owned(),
        (dir, true) => format!("{dir} (adopted from an earlier agent)"),
        (dir, false) => dir.to_owned(),
    };
    line("pinned in", pin);
    if let Some(b) = &a.broker {
        let state = match (b.connected, b.last_error.as_str()) {
            (true, _) => "connected".to_owned(),
            (false, "") => "connecting".to_owned(),
            (false, e) => format!("unreachable: {e}"),
        };
        line("broker", format!("{} {state}", b.address));
    } else {
        line("broker", "none configured".into());
    }
    out.push_str("counters\n");
    // In the contract's order, so the losses sit together.
    for (name, _) in edgearmor_mqtt::COUNTERS {
        if let Some(value) = a.counters.get(*name) {
            out.push_str(&format!("  {name:<26} {value}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests;
