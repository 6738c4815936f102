//! [`VmError`]: everything that can go wrong while fetching kernels, building an initramfs or
//! booting a guest. Every variant carries the offending path, command or value, so a failing
//! test says what broke without a rerun.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// An error from the VM harness.
#[derive(Debug)]
#[non_exhaustive]
pub enum VmError {
    /// An I/O operation on `path` failed.
    Io {
        /// What was being done, e.g. `"creating directory"`.
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A host command could not be started at all (typically: not installed).
    Spawn {
        /// The command line, as it would be typed in a shell.
        cmd: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A host command ran and exited unsuccessfully.
    Command {
        /// The command line, as it would be typed in a shell.
        cmd: String,
        /// Its exit status.
        status: ExitStatus,
        /// What it printed on stderr (trimmed).
        stderr: String,
    },
    /// No package in the apt lists matches `pattern`.
    NoPackage {
        /// The `apt-cache search --names-only` regular expression that found nothing.
        pattern: String,
    },
    /// A downloaded package does not have the expected layout.
    BadPackage {
        /// The package name.
        package: String,
        /// What was expected and missing.
        reason: String,
    },
    /// A guest path given to the [`Initramfs`](crate::Initramfs) builder is unusable.
    InvalidGuestPath {
        /// The path as given.
        path: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The guest did not print the done marker before the deadline; QEMU was killed.
    Timeout {
        /// The deadline that passed.
        timeout: Duration,
        /// The full console log.
        log_path: PathBuf,
        /// The last console lines (and QEMU's stderr, if any), for the error message.
        last_lines: Vec<String>,
    },
    /// QEMU exited before the guest printed the done marker (guest panic, poweroff, or a
    /// QEMU start-up failure such as an unreadable kernel).
    GuestExited {
        /// QEMU's exit status.
        status: ExitStatus,
        /// The full console log.
        log_path: PathBuf,
        /// The last console lines (and QEMU's stderr, if any), for the error message.
        last_lines: Vec<String>,
    },
}

impl VmError {
    /// Shorthand for [`VmError::Io`].
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        VmError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

fn write_tail(
    f: &mut fmt::Formatter<'_>,
    log_path: &std::path::Path,
    lines: &[String],
) -> fmt::Result {
    write!(f, "; full log: {}", log_path.display())?;
    if lines.is_empty() {
        write!(f, "; the console printed nothing")
    } else {
        write!(f, "; last console lines:")?;
        for line in lines {
            write!(f, "\n  | {line}")?;
        }
        Ok(())
    }
}

impl fmt::Display for VmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmError::Io {
                action,
                path,
                source,
            } => write!(f, "{action} {}: {source}", path.display()),
            VmError::Spawn { cmd, source } => write!(f, "cannot run `{cmd}`: {source}"),
            VmError::Command {
                cmd,
                status,
                stderr,
            } => {
                write!(f, "`{cmd}` failed ({status})")?;
                if !stderr.is_empty() {
                    write!(f, ": {stderr}")?;
                }
                Ok(())
            }
            VmError::NoPackage { pattern } => write!(
                f,
                "no package matches `{pattern}` (run `apt-get update`; arm64 packages also need \
                 `dpkg --add-architecture arm64`)"
            ),
            VmError::BadPackage { package, reason } => {
                write!(f, "package {package} is unusable: {reason}")
            }
            VmError::InvalidGuestPath { path, reason } => {
                write!(f, "invalid initramfs path {path:?}: {reason}")
            }
            VmError::Timeout {
                timeout,
                log_path,
                last_lines,
            } => {
                write!(
                    f,
                    "guest did not print its done marker within {:.1}s (QEMU killed)",
                    timeout.as_secs_f64()
                )?;
                write_tail(f, log_path, last_lines)
            }
            VmError::GuestExited {
                status,
                log_path,
                last_lines,
            } => {
                write!(
                    f,
                    "QEMU exited ({status}) before the guest printed its done marker"
                )?;
                write_tail(f, log_path, last_lines)
            }
        }
    }
}

impl std::error::Error for VmError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            VmError::Io { source, .. } | VmError::Spawn { source, .. } => Some(source),
            _ => None,
        }
    }
}
