//! KubeArmor's host alert, and its exact `karmor logs --json` encoding.
//!
//! [`HostAlert`] holds the fields of KubeArmor's protobuf `Alert` message that a host
//! (non-container) alert can carry. [`HostAlert::write_json`] writes the one-line JSON
//! that `karmor logs --json` prints: Go's `json.Marshal` of the protobuf struct, so
//! keys in protobuf declaration order, zero values omitted except `PPID` and `UID`,
//! Go's string escaping (including its HTML-safe `\u003c`-style escapes).
//!
//! The contract is `shared/reference/kubearmor-alert-schema.md`. This module knows
//! nothing about the kernel, the wire format or MQTT; [`expand`] is the one place that
//! turns wire events into [`HostAlert`]s, for the agent and the decoder alike.

use std::fmt::Write as _;

pub mod expand;

/// `Type` of an alert or log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertType {
    MatchedHostPolicy,
    SystemEvent,
    HostLog,
}

impl AlertType {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertType::MatchedHostPolicy => "MatchedHostPolicy",
            AlertType::SystemEvent => "SystemEvent",
            AlertType::HostLog => "HostLog",
        }
    }
}

/// Wall-clock time of an event: Unix seconds plus microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventTime {
    pub unix_secs: i64,
    pub micros: u32,
}

impl EventTime {
    /// From the wire format's `time_us` (Unix microseconds).
    pub fn from_unix_micros(micros: u64) -> Self {
        Self {
            unix_secs: (micros / 1_000_000) as i64,
            micros: (micros % 1_000_000) as u32,
        }
    }

    pub fn from_unix_nanos(nanos: i128) -> Self {
        Self {
            unix_secs: nanos.div_euclid(1_000_000_000) as i64,
            micros: (nanos.rem_euclid(1_000_000_000) / 1_000) as u32,
        }
    }

    /// KubeArmor's `UpdatedTime`: UTC, microseconds, `Z` suffix.
    pub fn write_updated_time(&self, out: &mut String) {
        let days = self.unix_secs.div_euclid(86_400);
        let secs_of_day = self.unix_secs.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        if !(0..=9999).contains(&year) || self.micros > 999_999 {
            // Outside what the fixed-width fast path below can print.
            let _ = write!(
                out,
                "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
                secs_of_day / 3600,
                secs_of_day / 60 % 60,
                secs_of_day % 60,
                self.micros
            );
            return;
        }
        // Hand-rolled: this runs once per line, and `format!` padding costs more than
        // the rest of the timestamp.
        let mut buf = *b"0000-00-00T00:00:00.000000Z";
        let mut put = |at: usize, width: usize, mut value: u32| {
            for slot in buf[at..at + width].iter_mut().rev() {
                *slot = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, year as u32);
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, secs_of_day / 3600);
        put(14, 2, secs_of_day / 60 % 60);
        put(17, 2, secs_of_day % 60);
        put(20, 6, self.micros);
        out.push_str(std::str::from_utf8(&buf).unwrap_or_default());
    }
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// One host alert or host log, field for field as KubeArmor names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostAlert {
    pub time: EventTime,
    pub cluster_name: String,
    pub host_name: String,
    pub host_ppid: i32,
    pub host_pid: i32,
    pub ppid: i32,
    pub pid: i32,
    pub uid: i32,
    pub parent_process_name: String,
    pub process_name: String,
    pub policy_name: String,
    /// `"1"`..`"10"`; a string in KubeArmor's schema.
    pub severity: String,
    /// Comma-separated; `ATags` is derived from it.
    pub tags: String,
    pub message: String,
    pub alert_type: AlertType,
    pub source: String,
    pub operation: String,
    pub resource: String,
    pub data: String,
    pub enforcer: String,
    pub action: String,
    pub result: String,
    pub cwd: String,
    pub tty: String,
    pub max_alerts_per_sec: i32,
    pub dropping_alerts_interval: i32,
    pub node_id: String,
    pub user_name: String,
    /// Whether [`HostAlert::write_json`] writes `EventData` (parsed from `Data`).
    /// Current KubeArmor writes it, so it is on by default; the reference lines
    /// from older `karmor` releases have no `EventData`, and turning it off
    /// reproduces them byte for byte.
    pub event_data: bool,
}

impl HostAlert {
    /// An alert with every field at its zero value.
    pub fn new(alert_type: AlertType) -> Self {
        Self {
            time: EventTime::default(),
            cluster_name: String::new(),
            host_name: String::new(),
            host_ppid: 0,
            host_pid: 0,
            ppid: 0,
            pid: 0,
            uid: 0,
            parent_process_name: String::new(),
            process_name: String::new(),
            policy_name: String::new(),
            severity: String::new(),
            tags: String::new(),
            message: String::new(),
            alert_type,
            source: String::new(),
            operation: String::new(),
            resource: String::new(),
            data: String::new(),
            enforcer: String::new(),
            action: String::new(),
            result: String::new(),
            cwd: String::new(),
            tty: String::new(),
            max_alerts_per_sec: 0,
            dropping_alerts_interval: 0,
            node_id: String::new(),
            user_name: String::new(),
            event_data: true,
        }
    }

    /// Appends the JSON object (no trailing newline) to `out`.
    pub fn write_json(&self, out: &mut String) {
        let mut obj = JsonObject::open(out);
        obj.int("Timestamp", self.time.unix_secs);
        if self.time != EventTime::default() {
            obj.key("UpdatedTime");
            obj.out.push('"');
            self.time.write_updated_time(obj.out);
            obj.out.push('"');
        }
        obj.str("ClusterName", &self.cluster_name);
        obj.str("HostName", &self.host_name);
        obj.int("HostPPID", self.host_ppid.into());
        obj.int("HostPID", self.host_pid.into());
        obj.int_always("PPID", self.ppid.into());
        obj.int("PID", self.pid.into());
        obj.int_always("UID", self.uid.into());
        obj.str("ParentProcessName", &self.parent_process_name);
        obj.str("ProcessName", &self.process_name);
        obj.str("PolicyName", &self.policy_name);
        obj.str("Severity", &self.severity);
        obj.str("Tags", &self.tags);
        if !self.tags.is_empty() {
            obj.key("ATags");
            obj.out.push('[');
            for (i, tag) in self.tags.split(',').enumerate() {
                if i > 0 {
                    obj.out.push(',');
                }
                write_go_string(obj.out, tag);
            }
            obj.out.push(']');
        }
        obj.str("Message", &self.message);
        obj.str("Type", self.alert_type.as_str());
        obj.str("Source", &self.source);
        obj.str("Operation", &self.operation);
        obj.str("Resource", &self.resource);
        obj.str("Data", &self.data);
        if self.event_data {
            obj.event_data(&self.data);
        }
        obj.str("Enforcer", &self.enforcer);
        obj.str("Action", &self.action);
        obj.str("Result", &self.result);
        obj.str("Cwd", &self.cwd);
        obj.str("TTY", &self.tty);
        obj.int("MaxAlertsPerSec", self.max_alerts_per_sec.into());
        obj.int(
            "DroppingAlertsInterval",
            self.dropping_alerts_interval.into(),
        );
        obj.str("NodeID", &self.node_id);
        obj.str("UserName", &self.user_name);
        obj.close();
    }

    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(512);
        self.write_json(&mut out);
        out
    }
}

/// Writes keys in call order, skipping zero values, with the commas between them.
struct JsonObject<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> JsonObject<'a> {
    fn open(out: &'a mut String) -> Self {
        out.push('{');
        Self { out, first: true }
    }

    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push('"');
        self.out.push_str(key);
        self.out.push_str("\":");
    }

    fn str(&mut self, key: &str, value: &str) {
        if !value.is_empty() {
            self.key(key);
            write_go_string(self.out, value);
        }
    }

    fn int(&mut self, key: &str, value: i64) {
        if value != 0 {
            self.int_always(key, value);
        }
    }

    fn int_always(&mut self, key: &str, value: i64) {
        self.key(key);
        let _ = write!(self.out, "{value}");
    }

    /// `EventData`: `Data` parsed as KubeArmor's `parseDataString` does: whitespace-separated
    /// `key=value` words (split at the first `=`), the key's first letter upper-cased, the
    /// last value winning for a repeated key; written in Go's map order (sorted by key).
    ///
    /// Allocation-free for up to [`INLINE_PAIRS`] pairs (every `Data` this project writes).
    fn event_data(&mut self, data: &str) {
        const NONE: (&str, &str) = ("", "");
        let mut inline = [NONE; INLINE_PAIRS];
        let mut spilled: Vec<(&str, &str)> = Vec::new();
        let mut count = 0;
        for pair in data.split_whitespace().filter_map(|w| w.split_once('=')) {
            if count < INLINE_PAIRS {
                inline[count] = pair;
            } else {
                if spilled.is_empty() {
                    spilled.extend_from_slice(&inline);
                }
                spilled.push(pair);
            }
            count += 1;
        }
        if count == 0 {
            return;
        }
        let pairs: &mut [(&str, &str)] = if count <= INLINE_PAIRS {
            &mut inline[..count]
        } else {
            &mut spilled
        };
        // Stable, so that among equal keys the last one given stays last.
        pairs.sort_by(|a, b| upper_first_chars(a.0).cmp(upper_first_chars(b.0)));
        self.key("EventData");
        self.out.push('{');
        let mut first = true;
        for (i, (k, v)) in pairs.iter().enumerate() {
            let next_is_same_key = pairs
                .get(i + 1)
                .is_some_and(|(next, _)| upper_first_chars(next).eq(upper_first_chars(k)));
            if next_is_same_key {
                continue;
            }
            if !first {
                self.out.push(',');
            }
            first = false;
            self.out.push('"');
            let mut chars = k.chars();
            if let Some(c) = chars.next() {
                let mut buf = [0u8; 4];
                for upper in c.to_uppercase() {
                    write_go_string_body(self.out, upper.encode_utf8(&mut buf));
                }
            }
            write_go_string_body(self.out, chars.as_str());
            self.out.push_str("\":");
            write_go_string(self.out, v);
        }
        self.out.push('}');
    }

    fn close(self) {
        self.out.push('}');
    }
}

/// `EventData` pairs kept on the stack; more spill to the heap.
const INLINE_PAIRS: usize = 8;

/// The characters of `s` with the first one upper-cased, without allocating.
fn upper_first_chars(s: &str) -> impl Iterator<Item = char> + '_ {
    let mut chars = s.chars();
    let first = chars.next().into_iter().flat_map(char::to_uppercase);
    first.chain(chars)
}

/// A JSON string exactly as Go's `encoding/json` writes it with HTML escaping on.
pub fn write_go_string(out: &mut String, s: &str) {
    out.push('"');
    write_go_string_body(out, s);
    out.push('"');
}

/// Whether an ASCII byte must be escaped: control characters, `"`, `\\`, and the
/// HTML-sensitive `<`, `>`, `&`.
const fn needs_escape(b: u8) -> bool {
    b < 0x20 || matches!(b, b'"' | b'\\' | b'<' | b'>' | b'&')
}

/// The inside of a Go JSON string. Copies unescaped runs whole: almost every byte of
/// an alert (paths, names) needs no escaping, and this runs for every field of every line.
fn write_go_string_body(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    let mut run_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        // U+2028 and U+2029 (E2 80 A8/A9) are the only non-ASCII characters Go escapes.
        let line_separator = b == 0xe2
            && bytes.get(i + 1) == Some(&0x80)
            && matches!(bytes.get(i + 2), Some(0xa8 | 0xa9));
        if !(needs_escape(b) || line_separator) {
            i += 1;
            continue;
        }
        // `i` is on a character boundary: an ASCII byte or the lead byte of U+2028/9.
        out.push_str(&s[run_start..i]);
        let (c, width) = if line_separator {
            (
                if bytes[i + 2] == 0xa8 {
                    '\u{2028}'
                } else {
                    '\u{2029}'
                },
                3,
            )
        } else {
            (char::from(b), 1)
        };
        write_escaped(out, c);
        i += width;
        run_start = i;
    }
    out.push_str(&s[run_start..]);
}

fn write_escaped(out: &mut String, c: char) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        c => {
            let v = c as u32;
            out.push_str("\\u");
            for shift in [12, 8, 4, 0] {
                out.push(HEX[((v >> shift) & 0xf) as usize] as char);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The "Blocked SETGID" host alert of the user's document, field for field.
    fn blocked_setgid() -> HostAlert {
        let mut a = HostAlert::new(AlertType::MatchedHostPolicy);
        a.time = EventTime {
            unix_secs: 1692814089,
            micros: 522743,
        };
        a.cluster_name = "default".into();
        a.host_name = "gke-my-first-cluster-1-default-pool-9144db50-81gb".into();
        a.host_ppid = 1791315;
        a.host_pid = 1791316;
        a.ppid = 1791315;
        a.pid = 1791316;
        a.uid = 204;
        a.parent_process_name = "/usr/sbin/sshd".into();
        a.process_name = "/usr/sbin/sshd".into();
        a.policy_name = "DefaultPosture".into();
        a.source = "/usr/sbin/sshd".into();
        a.operation = "Syscall".into();
        a.data = "syscall=SYS_SETGID userid=0".into();
        a.enforcer = "BPFLSM".into();
        a.action = "Block".into();
        a.result = "Operation not permitted".into();
        a
    }

    #[test]
    fn blocked_setgid_matches_the_reference_line_plus_event_data() {
        let want = concat!(
            r#"{"Timestamp":1692814089,"UpdatedTime":"2023-08-23T18:08:09.522743Z","ClusterName":"default","#,
            r#""HostName":"gke-my-first-cluster-1-default-pool-9144db50-81gb","HostPPID":1791315,"HostPID":1791316,"#,
            r#""PPID":1791315,"PID":1791316,"UID":204,"ParentProcessName":"/usr/sbin/sshd","ProcessName":"/usr/sbin/sshd","#,
            r#""PolicyName":"DefaultPosture","Type":"MatchedHostPolicy","Source":"/usr/sbin/sshd","Operation":"Syscall","#,
            r#""Data":"syscall=SYS_SETGID userid=0","EventData":{"Syscall":"SYS_SETGID","Userid":"0"},"#,
            r#""Enforcer":"BPFLSM","Action":"Block","Result":"Operation not permitted"}"#
        );
        assert_eq!(blocked_setgid().to_json(), want);
    }

    #[test]
    fn ppid_and_uid_are_always_written_other_zeroes_never() {
        let json = HostAlert::new(AlertType::SystemEvent).to_json();
        assert_eq!(
            json, r#"{"PPID":0,"UID":0,"Type":"SystemEvent"}"#,
            "zero-valued keys except PPID/UID must be omitted"
        );
    }

    #[test]
    fn tags_expand_to_atags_in_place() {
        let mut a = HostAlert::new(AlertType::MatchedHostPolicy);
        a.severity = "5".into();
        a.tags = "NIST,MITRE_T1036".into();
        a.message = "m".into();
        assert_eq!(
            a.to_json(),
            r#"{"PPID":0,"UID":0,"Severity":"5","Tags":"NIST,MITRE_T1036","ATags":["NIST","MITRE_T1036"],"Message":"m","Type":"MatchedHostPolicy"}"#
        );
    }

    #[test]
    fn strings_are_escaped_like_go() {
        let mut out = String::new();
        write_go_string(&mut out, "a\"b\\c\n<tag>&\u{1}\u{8}é");
        assert_eq!(out, r#""a\"b\\c\n\u003ctag\u003e\u0026\u0001\bé""#);
    }

    /// The escaping, character by character as Go's `encodeState.string` does it: the
    /// fast path must agree with it on every kind of character.
    fn go_string_reference(s: &str) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => write_escaped(&mut out, c),
                '<' | '>' | '&' | '\u{2028}' | '\u{2029}' | '\0'..='\u{1f}' => {
                    write_escaped(&mut out, c)
                }
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    #[test]
    fn escaping_fast_path_agrees_with_the_character_rules() {
        for s in [
            "",
            "/usr/bin/sleep",
            "a\u{2028}b\u{2029}c\u{2027}\u{202a}",
            "\u{e2}\u{80}",
            "\u{1f}\u{7f}\u{80}é€𝄞<&>\"\\",
            "\u{2028}",
            "x\u{2029}",
            "tab\there\r\n",
        ] {
            let mut fast = String::new();
            write_go_string(&mut fast, s);
            assert_eq!(fast, go_string_reference(s), "{s:?}");
        }
    }

    #[test]
    fn event_data_follows_kubearmors_parse_data_string() {
        let mut a = HostAlert::new(AlertType::SystemEvent);
        // Any whitespace separates; the first '=' splits; the last repeated key wins
        // (after upper-casing); words without '=' are ignored.
        a.data = "lost=1\tfirst_seq=a=b  noise Lost=2".into();
        assert!(
            a.to_json().contains(
                r#""Data":"lost=1\tfirst_seq=a=b  noise Lost=2","EventData":{"First_seq":"a=b","Lost":"2"}"#
            ),
            "{}",
            a.to_json()
        );
        a.data = (0..10)
            .map(|i| format!("k{i}=v{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let json = a.to_json();
        assert!(
            json.contains(r#""K0":"v0","K1":"v1","#) && json.contains(r#""K9":"v9"}"#),
            "{json}"
        );
        a.event_data = false;
        assert!(!a.to_json().contains("EventData"));
    }

    #[test]
    fn updated_time_handles_calendar_edges() {
        let mut out = String::new();
        EventTime::from_unix_nanos(951_782_400_000_001_000).write_updated_time(&mut out);
        assert_eq!(out, "2000-02-29T00:00:00.000001Z");
        out.clear();
        EventTime::from_unix_nanos(0).write_updated_time(&mut out);
        assert_eq!(out, "1970-01-01T00:00:00.000000Z");
        out.clear();
        EventTime::from_unix_micros(253_402_300_799_999_999).write_updated_time(&mut out);
        assert_eq!(out, "9999-12-31T23:59:59.999999Z");
        out.clear();
        EventTime::from_unix_micros(253_402_300_800_000_000).write_updated_time(&mut out);
        assert_eq!(
            out, "10000-01-01T00:00:00.000000Z",
            "past the fast path's width"
        );
    }
}
