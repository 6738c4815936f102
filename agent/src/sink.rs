//! Where alerts go. Producing alerts is separate from delivering them: stdout, MQTT
//! and tests are all sinks.

use std::io::{self, Write};

use edgearmor_alert::HostAlert;

pub trait AlertSink {
    fn deliver(&mut self, alert: &HostAlert) -> io::Result<()>;
    /// Called after each batch so a reader sees whole batches promptly.
    fn flush(&mut self) -> io::Result<()>;
}

/// One KubeArmor JSON object per line, as `karmor logs --json` prints them.
pub struct JsonLinesSink<W: Write> {
    out: W,
    line: String,
}

impl<W: Write> JsonLinesSink<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            line: String::with_capacity(1024),
        }
    }
}

impl<W: Write> AlertSink for JsonLinesSink<W> {
    fn deliver(&mut self, alert: &HostAlert) -> io::Result<()> {
        self.line.clear();
        alert.write_json(&mut self.line);
        self.line.push('\n');
        self.out.write_all(self.line.as_bytes())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgearmor_alert::AlertType;

    #[test]
    fn writes_one_line_per_alert() {
        let mut sink = JsonLinesSink::new(Vec::new());
        let a = HostAlert::new(AlertType::SystemEvent);
        sink.deliver(&a).expect("vec");
        sink.deliver(&a).expect("vec");
        let text = String::from_utf8(sink.out).expect("utf8");
        assert_eq!(text.lines().count(), 2);
        assert!(text.ends_with("}\n"));
    }
}
