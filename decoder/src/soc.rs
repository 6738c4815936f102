//! The formats SIEMs ingest: RFC 5424 syslog messages (octet-counted for TCP and TLS,
//! RFC 6587 / RFC 5425) and ArcSight CEF. Pure formatting; the transport is
//! [`crate::forward`].
//!
//! Syslog: `<PRI>1 TIMESTAMP HOSTNAME edgearmor - MSGID [edgearmor@32473 ...] MSG`, where
//! TIMESTAMP is the alert's `UpdatedTime`, HOSTNAME its `HostName` (the gateway the alert
//! is about), MSGID its `Type`, the structured data the fields a SIEM filters on, and MSG
//! the KubeArmor JSON line (or the CEF record). 32473 is the enterprise number RFC 5612
//! reserves for examples: edgearmor has none of its own.
//!
//! CEF: `CEF:0|edgearmor|edgearmor|VERSION|TYPE:OPERATION|NAME|SEVERITY|EXTENSION`, with
//! header `|` and `\` escaped, extension `=`, `\` and line breaks escaped, and the alert's
//! fields under CEF's own keys where one fits (`sproc`, `spid`, `suid`, `act`, `outcome`,
//! `dvchost`, `rt`, `msg`, `filePath`) and labelled custom ones otherwise.

use std::fmt::Write as _;

use edgearmor_alert::{AlertType, HostAlert};

use crate::sink::{AlertSink, LineOrigin, SinkError};

/// The SD-ID of edgearmor's structured data.
pub const SD_ID: &str = "edgearmor@32473";
pub const APP_NAME: &str = "edgearmor";
pub const CEF_VENDOR: &str = "edgearmor";
pub const CEF_PRODUCT: &str = "edgearmor";

/// What a syslog message carries as MSG, or what a line output prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Json,
    Cef,
}

impl Format {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "json" => Some(Format::Json),
            "cef" => Some(Format::Cef),
            _ => None,
        }
    }
}

/// Syslog facilities by name (RFC 5424 table 1, the names rsyslog uses).
pub const FACILITIES: &[(&str, u8)] = &[
    ("kern", 0),
    ("user", 1),
    ("daemon", 3),
    ("auth", 4),
    ("syslog", 5),
    ("authpriv", 10),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];
/// Security and authorization messages: what an LSM's verdicts are.
pub const DEFAULT_FACILITY: u8 = 10;

pub fn facility(name: &str) -> Option<u8> {
    FACILITIES.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

fn is_offline_status(alert: &HostAlert) -> bool {
    alert.operation == crate::status::OPERATION_AGENT_STATUS
        && alert.data.starts_with("state=offline")
}

/// Syslog severity: a blocked operation is a warning, an audited one a notice, lost
/// events and an agent gone offline warnings, the rest informational or notices.
pub fn syslog_severity(alert: &HostAlert) -> u8 {
    match alert.alert_type {
        AlertType::MatchedHostPolicy => match alert.action.as_str() {
            "Block" => 4,
            "Audit" => 5,
            _ => 6,
        },
        AlertType::SystemEvent if is_offline_status(alert) => 4,
        AlertType::SystemEvent
            if alert.operation == edgearmor_alert::expand::OPERATION_ALERT_LOSS =>
        {
            4
        }
        AlertType::SystemEvent => 5,
        AlertType::HostLog => 6,
    }
}

/// CEF severity 0..10: the policy's own severity (KubeArmor's 1..10) when it has one.
pub fn cef_severity(alert: &HostAlert) -> u8 {
    if let Ok(severity) = alert.severity.parse::<u8>()
        && severity <= 10
    {
        return severity;
    }
    match syslog_severity(alert) {
        4 => 7,
        5 => 5,
        _ => 3,
    }
}

/// RFC 5424 PRINTUSASCII, 1..=max characters, `-` (NILVALUE) when empty.
fn header_field(out: &mut String, value: &str, max: usize) {
    if value.is_empty() {
        out.push('-');
        return;
    }
    for c in value.chars().take(max) {
        out.push(if c.is_ascii_graphic() { c } else { '_' });
    }
}

/// An SD-PARAM value: `"`, `\` and `]` escaped with a backslash (RFC 5424 6.3.3).
fn sd_value(out: &mut String, value: &str) {
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// One RFC 5424 message (no framing) for `alert`, with `msg` as MSG.
pub fn write_syslog(out: &mut String, facility: u8, alert: &HostAlert, msg: &str) {
    let pri = u16::from(facility) * 8 + u16::from(syslog_severity(alert));
    let _ = write!(out, "<{pri}>1 ");
    alert.time.write_updated_time(out);
    out.push(' ');
    header_field(out, &alert.host_name, 255);
    let _ = write!(out, " {APP_NAME} - ");
    header_field(out, alert.alert_type.as_str(), 32);
    let _ = write!(out, " [{SD_ID}");
    // Statuses and gaps have no process: no pid, and their uid 0 would read as root.
    let pid = alert.pid.to_string();
    let uid = alert.uid.to_string();
    let params: [(&str, &str); 10] = [
        ("cluster", &alert.cluster_name),
        ("node", &alert.host_name),
        ("operation", &alert.operation),
        ("action", &alert.action),
        ("result", &alert.result),
        ("policy", &alert.policy_name),
        ("severity", &alert.severity),
        ("process", &alert.process_name),
        ("pid", if alert.pid != 0 { &pid } else { "" }),
        ("uid", if alert.pid != 0 { &uid } else { "" }),
    ];
    for (name, value) in params {
        if !value.is_empty() {
            let _ = write!(out, " {name}=\"");
            sd_value(out, value);
            out.push('"');
        }
    }
    out.push_str("] ");
    out.push_str(msg);
}

/// A syslog message for a line without its alert: every header field NILVALUE.
pub fn write_syslog_line(out: &mut String, facility: u8, msg: &str) {
    let _ = write!(
        out,
        "<{}>1 - - {APP_NAME} - - - {msg}",
        u16::from(facility) * 8 + 6
    );
}

/// Octet-counting framing (RFC 6587 3.4.1, RFC 5425 4.3): `LEN SP MESSAGE`.
pub fn frame(message: &str) -> Vec<u8> {
    let mut framed = Vec::with_capacity(message.len() + 8);
    framed.extend_from_slice(message.len().to_string().as_bytes());
    framed.push(b' ');
    framed.extend_from_slice(message.as_bytes());
    framed
}

fn cef_header(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
}

fn cef_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// One CEF record for `alert`.
pub fn write_cef(out: &mut String, alert: &HostAlert) {
    out.push_str("CEF:0|");
    cef_header(out, CEF_VENDOR);
    out.push('|');
    cef_header(out, CEF_PRODUCT);
    out.push('|');
    cef_header(out, env!("CARGO_PKG_VERSION"));
    out.push('|');
    cef_header(out, alert.alert_type.as_str());
    if !alert.operation.is_empty() {
        out.push(':');
        cef_header(out, &alert.operation);
    }
    out.push('|');
    let name = [&alert.message, &alert.policy_name]
        .into_iter()
        .find(|s| !s.is_empty())
        .map_or(alert.alert_type.as_str(), |s| s.as_str());
    cef_header(out, name);
    let _ = write!(out, "|{}|", cef_severity(alert));
    let millis = alert
        .time
        .unix_secs
        .saturating_mul(1000)
        .saturating_add(i64::from(alert.time.micros / 1000));
    let _ = write!(out, "rt={millis}");
    let numbers = [
        ("spid", alert.pid),
        ("suid", alert.uid),
        ("cn1", alert.ppid),
    ];
    let file_like = matches!(alert.operation.as_str(), "File" | "Process");
    let strings: [(&str, &str); 20] = [
        ("dvchost", &alert.host_name),
        ("cat", alert.alert_type.as_str()),
        ("act", &alert.action),
        ("outcome", &alert.result),
        ("sproc", &alert.process_name),
        ("cs1Label", "cluster"),
        ("cs1", &alert.cluster_name),
        ("cs2Label", "parentProcess"),
        ("cs2", &alert.parent_process_name),
        ("cs3Label", "policyName"),
        ("cs3", &alert.policy_name),
        ("cs4Label", "tags"),
        ("cs4", &alert.tags),
        ("cs5Label", "operation"),
        ("cs5", &alert.operation),
        ("cs6Label", "data"),
        ("cs6", &alert.data),
        ("filePath", if file_like { &alert.resource } else { "" }),
        ("flexString1", &alert.resource),
        ("msg", &alert.message),
    ];
    let has_process = alert.pid != 0;
    for (key, value) in numbers {
        if has_process {
            let _ = write!(out, " {key}={value}");
        }
    }
    if has_process {
        out.push_str(" cn1Label=ppid");
    }
    let mut i = 0;
    while i < strings.len() {
        let (key, value) = strings[i];
        // A label goes with its value: both or neither.
        if key.ends_with("Label") {
            let (value_key, real) = strings[i + 1];
            if !real.is_empty() {
                let _ = write!(out, " {key}={value} {value_key}=");
                cef_value(out, real);
            }
            i += 2;
            continue;
        }
        if key == "flexString1" && !value.is_empty() {
            out.push_str(" flexString1Label=resource");
        }
        if !value.is_empty() {
            let _ = write!(out, " {key}=");
            cef_value(out, value);
        }
        i += 1;
    }
}

/// Prints CEF records instead of JSON lines to the wrapped line output.
pub struct CefLines<S> {
    pub inner: S,
    record: String,
}

impl<S> CefLines<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            record: String::with_capacity(1024),
        }
    }
}

impl<S: AlertSink> AlertSink for CefLines<S> {
    /// Without the alert there is nothing to map: the JSON line goes through.
    fn write_line(&mut self, origin: &LineOrigin<'_>, line: &str) -> Result<(), SinkError> {
        self.inner.write_line(origin, line)
    }

    fn write_alert(
        &mut self,
        origin: &LineOrigin<'_>,
        alert: &HostAlert,
        _line: &str,
    ) -> Result<(), SinkError> {
        self.record.clear();
        write_cef(&mut self.record, alert);
        self.inner.write_line(origin, &self.record)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.inner.flush()
    }

    fn stats(&self) -> Vec<(&'static str, u64)> {
        self.inner.stats()
    }

    fn close(&mut self) {
        self.inner.close()
    }
}

#[cfg(test)]
mod tests {
    use edgearmor_alert::EventTime;

    use super::*;

    fn blocked() -> HostAlert {
        let mut a = HostAlert::new(AlertType::MatchedHostPolicy);
        a.time = EventTime::from_unix_micros(1_795_932_048_123_456);
        a.cluster_name = "default".into();
        a.host_name = "gw 1".into();
        a.pid = 4242;
        a.ppid = 1;
        a.uid = 0;
        a.process_name = "/usr/bin/apt-get".into();
        a.parent_process_name = "/bin/bash".into();
        a.policy_name = "block|pkg=mgr".into();
        a.severity = "8".into();
        a.tags = "NIST".into();
        a.message = "package managers are\nblocked".into();
        a.operation = "Process".into();
        a.resource = "/usr/bin/apt-get".into();
        a.data = "lsm=BPRM_CHECK".into();
        a.action = "Block".into();
        a.result = "Permission denied".into();
        a
    }

    #[test]
    fn syslog_header_structured_data_and_framing() {
        let mut out = String::new();
        let mut a = blocked();
        a.policy_name = "a\"b]c\\".into();
        write_syslog(&mut out, DEFAULT_FACILITY, &a, "{\"x\":1}");
        assert_eq!(
            out,
            "<84>1 2026-11-29T06:00:48.123456Z gw_1 edgearmor - MatchedHostPolicy [edgearmor@32473 \
             cluster=\"default\" node=\"gw 1\" operation=\"Process\" action=\"Block\" \
             result=\"Permission denied\" policy=\"a\\\"b\\]c\\\\\" severity=\"8\" \
             process=\"/usr/bin/apt-get\" pid=\"4242\" uid=\"0\"] {\"x\":1}"
        );
        let framed = frame("héllo");
        assert_eq!(framed, b"6 h\xc3\xa9llo", "the length counts bytes");
        a.action = "Audit".into();
        out.clear();
        write_syslog(&mut out, 16, &a, "m");
        assert!(out.starts_with("<133>1 "), "local0.notice: {out}");
    }

    #[test]
    fn cef_escapes_header_and_extension() {
        let mut out = String::new();
        write_cef(&mut out, &blocked());
        assert_eq!(
            out,
            format!(
                "CEF:0|edgearmor|edgearmor|{}|MatchedHostPolicy:Process|package managers are blocked|8|\
                 rt=1795932048123 spid=4242 suid=0 cn1=1 cn1Label=ppid dvchost=gw 1 cat=MatchedHostPolicy \
                 act=Block outcome=Permission denied sproc=/usr/bin/apt-get cs1Label=cluster cs1=default \
                 cs2Label=parentProcess cs2=/bin/bash cs3Label=policyName cs3=block|pkg\\=mgr \
                 cs4Label=tags cs4=NIST cs5Label=operation cs5=Process cs6Label=data cs6=lsm\\=BPRM_CHECK \
                 filePath=/usr/bin/apt-get flexString1Label=resource flexString1=/usr/bin/apt-get \
                 msg=package managers are\\nblocked",
                env!("CARGO_PKG_VERSION")
            )
        );
        let mut a = HostAlert::new(AlertType::SystemEvent);
        a.operation = edgearmor_alert::expand::OPERATION_ALERT_LOSS.into();
        a.message = "10 events|lost \\ here".into();
        out.clear();
        write_cef(&mut out, &a);
        assert!(
            out.contains(
                "|SystemEvent:AlertLoss|10 events\\|lost \\\\ here|7|rt=0 cat=SystemEvent"
            ),
            "{out}"
        );
    }
}
