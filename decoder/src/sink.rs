//! Where JSON lines go: stdout, a size-rotated file, MQTT, or a test's memory.
//!
//! Every output is an [`AlertSink`]; the decoder writes each line to one sink (usually
//! a [`FanOut`] of the configured ones) and flushes after every received message, before
//! that message is acknowledged to the broker: a line is durable before the broker
//! forgets the message it came from.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use edgearmor_alert::HostAlert;

/// Whose line this is: the MQTT sink publishes it under this node's topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineOrigin<'a> {
    pub cluster: &'a str,
    pub node: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("writing to stdout: {0}")]
    Stdout(#[source] io::Error),
    #[error("writing to {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("opening {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("rotating {} to {}: {source}", from.display(), to.display())]
    Rotate {
        from: PathBuf,
        to: PathBuf,
        source: io::Error,
    },
}

impl SinkError {
    /// Whether the decoder must stop: its reader is gone (stdout closed), so every
    /// further line would be lost.
    pub fn is_fatal(&self) -> bool {
        matches!(self, SinkError::Stdout(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}

pub trait AlertSink {
    /// One JSON object, without its newline.
    fn write_line(&mut self, origin: &LineOrigin<'_>, line: &str) -> Result<(), SinkError>;
    /// One alert, with its JSON line: what the decoder calls. Sinks that print other
    /// formats (CEF, syslog structured data) read the alert's fields; the rest write
    /// the line.
    fn write_alert(
        &mut self,
        origin: &LineOrigin<'_>,
        alert: &HostAlert,
        line: &str,
    ) -> Result<(), SinkError> {
        let _ = alert;
        self.write_line(origin, line)
    }
    /// Makes every line written so far durable (or handed over, for MQTT).
    fn flush(&mut self) -> Result<(), SinkError>;
    /// Counters to print at exit, as `name=value` pairs (also served as metrics).
    fn stats(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
    /// At exit, after the last flush: hands over what is still queued (bounded in time).
    fn close(&mut self) {}
}

impl<S: AlertSink + ?Sized> AlertSink for Box<S> {
    fn write_line(&mut self, origin: &LineOrigin<'_>, line: &str) -> Result<(), SinkError> {
        (**self).write_line(origin, line)
    }
    fn write_alert(
        &mut self,
        origin: &LineOrigin<'_>,
        alert: &HostAlert,
        line: &str,
    ) -> Result<(), SinkError> {
        (**self).write_alert(origin, alert, line)
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        (**self).flush()
    }
    fn stats(&self) -> Vec<(&'static str, u64)> {
        (**self).stats()
    }
    fn close(&mut self) {
        (**self).close()
    }
}

/// Lines to stdout, buffered; flushed per received message.
pub struct StdoutSink {
    out: BufWriter<io::Stdout>,
}

impl StdoutSink {
    pub fn new() -> Self {
        Self {
            out: BufWriter::with_capacity(64 << 10, io::stdout()),
        }
    }
}

impl Default for StdoutSink {
    fn default() -> Self {
        Self::new()
    }
}

impl AlertSink for StdoutSink {
    fn write_line(&mut self, _: &LineOrigin<'_>, line: &str) -> Result<(), SinkError> {
        self.out
            .write_all(line.as_bytes())
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(SinkError::Stdout)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(SinkError::Stdout)
    }
}

/// Lines appended to a file; with a size limit, `FILE` is rotated to `FILE.1`, `FILE.1`
/// to `FILE.2` ... up to `FILE.<keep>` (the oldest is removed) before a line would take
/// it over the limit. A line longer than the limit still goes whole into a fresh file.
pub struct RotatingFileSink {
    path: PathBuf,
    rotate_bytes: Option<u64>,
    keep: u32,
    file: Option<BufWriter<File>>,
    size: u64,
    rotations: u64,
}

impl RotatingFileSink {
    pub fn open(path: &Path, rotate_bytes: Option<u64>, keep: u32) -> Result<Self, SinkError> {
        let mut sink = Self {
            path: path.to_owned(),
            rotate_bytes,
            keep,
            file: None,
            size: 0,
            rotations: 0,
        };
        sink.reopen(false)?;
        Ok(sink)
    }

    fn reopen(&mut self, truncate: bool) -> Result<(), SinkError> {
        let open_error = |source| SinkError::Open {
            path: self.path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .append(!truncate)
            .write(true)
            .truncate(truncate)
            .open(&self.path)
            .map_err(open_error)?;
        self.size = file.metadata().map_err(open_error)?.len();
        self.file = Some(BufWriter::with_capacity(64 << 10, file));
        Ok(())
    }

    fn numbered(&self, n: u32) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> Result<(), SinkError> {
        self.flush()?;
        self.file = None;
        if self.keep > 0 {
            for n in (1..self.keep).rev() {
                let from = self.numbered(n);
                if from.exists() {
                    let to = self.numbered(n + 1);
                    std::fs::rename(&from, &to).map_err(|source| SinkError::Rotate {
                        from,
                        to,
                        source,
                    })?;
                }
            }
            let to = self.numbered(1);
            std::fs::rename(&self.path, &to).map_err(|source| SinkError::Rotate {
                from: self.path.clone(),
                to,
                source,
            })?;
        }
        self.rotations += 1;
        // With keep = 0 there is no backup: the file starts over.
        self.reopen(true)
    }
}

impl AlertSink for RotatingFileSink {
    fn write_line(&mut self, _: &LineOrigin<'_>, line: &str) -> Result<(), SinkError> {
        let len = line.len() as u64 + 1;
        if let Some(limit) = self.rotate_bytes
            && self.size > 0
            && self.size + len > limit
        {
            self.rotate()?;
        }
        if self.file.is_none() {
            // A failed rotation or open left no file: try again for this line.
            self.reopen(false)?;
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        file.write_all(line.as_bytes())
            .and_then(|()| file.write_all(b"\n"))
            .map_err(|source| SinkError::Write {
                path: self.path.clone(),
                source,
            })?;
        self.size += len;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        match self.file.as_mut() {
            Some(file) => file.flush().map_err(|source| SinkError::Write {
                path: self.path.clone(),
                source,
            }),
            None => Ok(()),
        }
    }

    fn stats(&self) -> Vec<(&'static str, u64)> {
        vec![("file_rotations", self.rotations)]
    }
}

/// Lines kept in memory (tests, benchmarks, the fuzz target).
#[derive(Default)]
pub struct MemorySink {
    pub lines: Vec<String>,
    pub origins: Vec<(String, String)>,
}

impl AlertSink for MemorySink {
    fn write_line(&mut self, origin: &LineOrigin<'_>, line: &str) -> Result<(), SinkError> {
        self.lines.push(line.to_owned());
        self.origins
            .push((origin.cluster.to_owned(), origin.node.to_owned()));
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Every line to every sink. A failing sink does not keep the line from the others;
/// the first error is returned after all were tried.
#[derive(Default)]
pub struct FanOut {
    pub sinks: Vec<Box<dyn AlertSink>>,
}

impl AlertSink for FanOut {
    fn write_line(&mut self, origin: &LineOrigin<'_>, line: &str) -> Result<(), SinkError> {
        let mut first_error = None;
        for sink in &mut self.sinks {
            if let Err(e) = sink.write_line(origin, line) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn write_alert(
        &mut self,
        origin: &LineOrigin<'_>,
        alert: &HostAlert,
        line: &str,
    ) -> Result<(), SinkError> {
        let mut first_error = None;
        for sink in &mut self.sinks {
            if let Err(e) = sink.write_alert(origin, alert, line) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        let mut first_error = None;
        for sink in &mut self.sinks {
            if let Err(e) = sink.flush() {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn stats(&self) -> Vec<(&'static str, u64)> {
        self.sinks.iter().flat_map(|s| s.stats()).collect()
    }

    fn close(&mut self) {
        for sink in &mut self.sinks {
            sink.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: LineOrigin<'static> = LineOrigin {
        cluster: "c",
        node: "n",
    };

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "edgearmor-decode-sink-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }

    #[test]
    fn rotation_keeps_k_files_and_never_splits_a_line() {
        let dir = scratch_dir("rotate");
        let path = dir.join("alerts.json");
        let mut sink = RotatingFileSink::open(&path, Some(10), 2).expect("opens");
        for line in ["aaaa", "bbbb", "cccc", "dddd", "eeeeeeeeeeeeeeee"] {
            sink.write_line(&ORIGIN, line).expect("writes");
        }
        sink.flush().expect("flushes");
        assert_eq!(
            read(&path),
            "eeeeeeeeeeeeeeee\n",
            "an over-long line gets a file"
        );
        assert_eq!(read(&dir.join("alerts.json.1")), "cccc\ndddd\n");
        assert_eq!(read(&dir.join("alerts.json.2")), "aaaa\nbbbb\n");
        assert!(!dir.join("alerts.json.3").exists());
        assert_eq!(sink.stats(), vec![("file_rotations", 2)]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_existing_file_is_appended_to_and_counted_toward_the_limit() {
        let dir = scratch_dir("append");
        let path = dir.join("a.json");
        std::fs::write(&path, "old-line\n").expect("writes");
        let mut sink = RotatingFileSink::open(&path, Some(12), 0).expect("opens");
        sink.write_line(&ORIGIN, "new").expect("writes");
        sink.flush().expect("flushes");
        assert_eq!(read(&path), "new\n", "keep=0 starts the file over");
        let mut sink = RotatingFileSink::open(&path, None, 0).expect("opens");
        sink.write_line(&ORIGIN, "more").expect("writes");
        sink.flush().expect("flushes");
        assert_eq!(read(&path), "new\nmore\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
