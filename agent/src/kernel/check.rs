//! `edgearmor check`: can this kernel (or a `.config` before an image is built) enforce?
//! One line per requirement, each failing line with the exact fix. Probes, not version
//! numbers: the live check reads BTF and securityfs and really loads and attaches the
//! probes (then detaches them).

use std::fmt::Write as _;
use std::path::Path;

use crate::host::{HostKernel, KERNEL_BTF};
use crate::kernel::readiness::{self, EnforcementUnavailable};
use crate::kernel::ring_sizes::check_ring_buffers;
use edgearmor_probe_abi::RING_BUFFERS;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckStatus {
    Ok,
    /// Works, but needs attention (e.g. a boot argument).
    Warn,
    /// Enforcement is impossible until fixed.
    Fail,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckLine {
    pub name: &'static str,
    pub status: CheckStatus,
    pub detail: String,
    /// What to change; empty when nothing needs to.
    pub fix: String,
}

fn line(
    name: &'static str,
    status: CheckStatus,
    detail: impl Into<String>,
    fix: impl Into<String>,
) -> CheckLine {
    CheckLine {
        name,
        status,
        detail: detail.into(),
        fix: fix.into(),
    }
}

/// Whether no line failed.
pub fn enforcement_possible(lines: &[CheckLine]) -> bool {
    lines.iter().all(|l| l.status != CheckStatus::Fail)
}

/// The table an operator reads.
pub fn render(lines: &[CheckLine]) -> String {
    let width = lines.iter().map(|l| l.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for l in lines {
        let status = match l.status {
            CheckStatus::Ok => "ok  ",
            CheckStatus::Warn => "WARN",
            CheckStatus::Fail => "FAIL",
        };
        let _ = write!(out, "{status}  {:width$}  {}", l.name, l.detail);
        if !l.fix.is_empty() {
            let _ = write!(out, "\n      {:width$}  fix: {}", "", l.fix);
        }
        out.push('\n');
    }
    out.push_str(if enforcement_possible(lines) {
        "=> this kernel can enforce edgearmor policies\n"
    } else {
        "=> enforcement is impossible here until the FAIL lines are fixed\n"
    });
    out
}

/// Options a `.config` must set to `y`, and why.
const REQUIRED_OPTIONS: &[(&str, &str)] = &[
    ("CONFIG_BPF", "BPF"),
    ("CONFIG_BPF_SYSCALL", "the bpf() system call"),
    ("CONFIG_BPF_JIT", "JIT (BPF trampolines are JIT code)"),
    ("CONFIG_SECURITY", "the LSM framework"),
    ("CONFIG_BPF_LSM", "BPF-LSM hooks"),
    (
        "CONFIG_BPF_EVENTS",
        "BPF on tracepoints (identity tracking, monitor-only mode)",
    ),
    (
        "CONFIG_DEBUG_INFO_BTF",
        "kernel BTF (struct offsets, attach points); needs pahole on the build host",
    ),
    ("CONFIG_FTRACE", "ftrace, on which BPF trampolines attach"),
    ("CONFIG_FUNCTION_TRACER", "function tracing"),
    ("CONFIG_DYNAMIC_FTRACE", "dynamic ftrace"),
    (
        "CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS",
        "BPF trampolines (on arm64 this needs a kernel that supports it; without it attaching fails with errno 524)",
    ),
];

/// Value of `CONFIG_X` in a `.config` (`None` when absent or `# ... is not set`).
fn config_value<'a>(config: &'a str, option: &str) -> Option<&'a str> {
    config
        .lines()
        .rev()
        .find_map(|l| {
            let l = l.trim();
            if l == format!("# {option} is not set") {
                return Some("");
            }
            l.strip_prefix(option)?.strip_prefix('=')
        })
        .filter(|v| !v.is_empty())
}

/// Checks a kernel `.config` before the image is built.
pub fn check_config(config: &str) -> Vec<CheckLine> {
    let mut lines = Vec::new();
    for (option, why) in REQUIRED_OPTIONS {
        let name: &'static str = option;
        match config_value(config, option) {
            Some("y") => lines.push(line(name, CheckStatus::Ok, format!("=y ({why})"), "")),
            Some(other) => lines.push(line(
                name,
                CheckStatus::Fail,
                format!("={other}, must be built in ({why})"),
                format!("{option}=y"),
            )),
            None => lines.push(line(
                name,
                CheckStatus::Fail,
                format!("not set ({why})"),
                format!("{option}=y"),
            )),
        }
    }
    match config_value(config, "CONFIG_LSM") {
        Some(list) => {
            let list = list.trim_matches('"');
            if list.split(',').any(|l| l == "bpf") {
                lines.push(line(
                    "CONFIG_LSM",
                    CheckStatus::Ok,
                    format!("\"{list}\" includes bpf"),
                    "",
                ));
            } else {
                lines.push(line(
                    "CONFIG_LSM",
                    CheckStatus::Warn,
                    format!("\"{list}\" lacks bpf: the bpf LSM stays inactive unless the boot arguments add it"),
                    format!("CONFIG_LSM=\"{list},bpf\" or boot with lsm={list},bpf"),
                ));
            }
        }
        None => lines.push(line(
            "CONFIG_LSM",
            CheckStatus::Warn,
            "not set: the kernel's default LSM order applies",
            "set CONFIG_LSM to a list that ends with bpf, or boot with lsm=...,bpf",
        )),
    }
    if config_value(config, "CONFIG_DEBUG_INFO_REDUCED") == Some("y") {
        lines.push(line(
            "CONFIG_DEBUG_INFO_REDUCED",
            CheckStatus::Fail,
            "=y: BTF would lack struct members",
            "# CONFIG_DEBUG_INFO_REDUCED is not set",
        ));
    }
    lines
}

/// Checks the running kernel, up to really loading and attaching the probes.
pub fn check_live(host: &dyn HostKernel) -> Vec<CheckLine> {
    let mut lines = vec![line("kernel", CheckStatus::Ok, host.release(), "")];
    // The same sequence `run` goes through, so `check` never disagrees with it.
    match readiness::check_kernel(host) {
        Err(e) => {
            lines.push(failure_line(&e));
            return lines;
        }
        Ok(btf) => {
            lines.push(line(
                "BTF",
                CheckStatus::Ok,
                format!("{KERNEL_BTF} present"),
                "",
            ));
            lines.push(line(
                "BPF-LSM built in",
                CheckStatus::Ok,
                "bpf_lsm_* hooks in BTF",
                "",
            ));
            lines.push(line("active LSMs", CheckStatus::Ok, "bpf is active", ""));
            lines.push(lockdown_line(host));
            lines.push(match crate::kernel::lock::can_hold(&btf, host) {
                Ok(holds) => line("locked mode", CheckStatus::Ok, holds, ""),
                Err(why) => line(
                    "locked mode",
                    CheckStatus::Warn,
                    why,
                    "locked = true needs this for tamper protection to hold",
                ),
            });
            lines.push(ring_buffer_line(host));
            lines.push(
                // Nothing pinned: `check` must not touch a running agent's state.
                match crate::kernel::loader::load(
                    host,
                    &btf,
                    [0, 0],
                    Default::default(),
                    None,
                    None,
                ) {
                    Ok(probes) => {
                        let facts = probes
                            .covered_elsewhere
                            .iter()
                            .map(|fact| format!("; {fact}"))
                            .collect::<String>();
                        drop(probes); // detaches
                        line(
                            "attach",
                            CheckStatus::Ok,
                            format!("probes load, attach and detach{facts}"),
                            "",
                        )
                    }
                    Err(e) => failure_line(&e),
                },
            );
        }
    }
    lines
}

fn lockdown_line(host: &dyn HostKernel) -> CheckLine {
    match host.read(Path::new("/sys/kernel/security/lockdown")) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let active = text
                .split_whitespace()
                .find(|w| w.starts_with('['))
                .map(|w| w.trim_matches(['[', ']']).to_owned())
                .unwrap_or_else(|| text.trim().to_owned());
            if active == "confidentiality" {
                line(
                    "lockdown",
                    CheckStatus::Fail,
                    "confidentiality: BPF may not read kernel memory",
                    "boot with lockdown=integrity (or none)",
                )
            } else {
                line("lockdown", CheckStatus::Ok, active, "")
            }
        }
        Err(_) => line("lockdown", CheckStatus::Ok, "no lockdown LSM", ""),
    }
}

/// Whether this kernel has ring buffers, and can create the object's on its pages.
fn ring_buffer_line(host: &dyn HostKernel) -> CheckLine {
    match aya::sys::is_map_supported(aya::maps::MapType::RingBuf) {
        Ok(true) => match check_ring_buffers(host) {
            Ok(page_size) => line(
                "ring buffer",
                CheckStatus::Ok,
                format!(
                    "BPF_MAP_TYPE_RINGBUF supported; {} in whole {page_size}-byte pages",
                    RING_BUFFERS
                        .iter()
                        .map(|(map, bytes)| format!("{map} {bytes} B"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                "",
            ),
            Err(e) => failure_line(&e),
        },
        Ok(false) => line(
            "ring buffer",
            CheckStatus::Fail,
            "BPF_MAP_TYPE_RINGBUF unsupported",
            "a kernel of 5.8 or later",
        ),
        Err(e) => {
            let refusal = crate::kernel::permission::ProcessFacts::live().refusal();
            let fix = if refusal.root {
                refusal.reason
            } else {
                "run as root".to_owned()
            };
            line(
                "ring buffer",
                CheckStatus::Fail,
                format!("cannot probe: {e}"),
                fix,
            )
        }
    }
}

fn failure_line(e: &EnforcementUnavailable) -> CheckLine {
    use EnforcementUnavailable::*;
    let (name, fix) = match e {
        NoBtf { .. } | BadBtf(_) => ("BTF", "CONFIG_DEBUG_INFO_BTF=y (pahole on the build host)"),
        BpfLsmNotBuiltIn => ("BPF-LSM built in", "CONFIG_BPF_LSM=y"),
        LsmListUnreadable { .. } => (
            "active LSMs",
            "mount -t securityfs securityfs /sys/kernel/security",
        ),
        BpfLsmInactive { .. } => ("active LSMs", "add bpf to the lsm= boot argument"),
        NoTrampoline { .. } => (
            "attach",
            "a kernel with BPF trampolines for LSM programs (CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS; arm64: Debian 6.12 works, 6.1 does not)",
        ),
        // Root is told what refused it instead (in the detail), not to be root.
        NotPermitted { refusal, .. } if refusal.root => {
            ("attach", "lift the restriction named above")
        }
        NotPermitted { .. } => ("attach", "run as root"),
        RingBufferSize { .. } | PageSizeUnknown { .. } => (
            "ring buffer",
            "probes built with ring buffers of whole pages for this kernel",
        ),
        RuleTables(_) => ("rule tables", "report this with the detail above"),
        Verifier { .. } | Failed { .. } => ("attach", "report this with the detail above"),
    };
    line(name, CheckStatus::Fail, e.to_string(), fix)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "CONFIG_BPF=y\nCONFIG_BPF_SYSCALL=y\nCONFIG_BPF_JIT=y\nCONFIG_SECURITY=y\nCONFIG_BPF_LSM=y\nCONFIG_BPF_EVENTS=y\n\
        CONFIG_DEBUG_INFO_BTF=y\nCONFIG_FTRACE=y\nCONFIG_FUNCTION_TRACER=y\nCONFIG_DYNAMIC_FTRACE=y\n\
        CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS=y\nCONFIG_LSM=\"landlock,lockdown,yama,bpf\"\n";

    #[test]
    fn a_complete_config_passes() {
        let lines = check_config(GOOD);
        assert!(enforcement_possible(&lines), "{}", render(&lines));
        assert!(lines.iter().all(|l| l.status == CheckStatus::Ok));
    }

    #[test]
    fn each_missing_option_fails_with_its_exact_fix() {
        for (option, _) in REQUIRED_OPTIONS {
            let config = GOOD.replace(
                &format!("{option}=y\n"),
                &format!("# {option} is not set\n"),
            );
            let lines = check_config(&config);
            let failed: Vec<_> = lines
                .iter()
                .filter(|l| l.status == CheckStatus::Fail)
                .collect();
            assert_eq!(failed.len(), 1, "{option}: {}", render(&lines));
            assert_eq!(failed[0].fix, format!("{option}=y"));
        }
        let lines = check_config(&GOOD.replace("CONFIG_BPF_LSM=y", "CONFIG_BPF_LSM=m"));
        assert!(!enforcement_possible(&lines));
    }

    #[test]
    fn an_lsm_list_without_bpf_is_a_warning_with_the_boot_argument() {
        let lines = check_config(&GOOD.replace(",bpf\"", "\""));
        assert!(enforcement_possible(&lines));
        let lsm = lines.iter().find(|l| l.name == "CONFIG_LSM").expect("line");
        assert_eq!(lsm.status, CheckStatus::Warn);
        assert!(
            lsm.fix.contains("lsm=landlock,lockdown,yama,bpf"),
            "{}",
            lsm.fix
        );
    }

    #[test]
    fn later_lines_win_like_merged_fragments() {
        let merged = format!("{GOOD}# CONFIG_BPF_JIT is not set\n");
        assert!(!enforcement_possible(&check_config(&merged)));
        let fixed = format!("{merged}CONFIG_BPF_JIT=y\n");
        assert!(enforcement_possible(&check_config(&fixed)));
    }
}
