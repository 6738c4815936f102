//! Reading what a scenario guest printed: `EA-SCENARIO name` followed by the helper's
//! `EA-OP rc=.. errno=..` line, and alerts dumped as `<PREFIX><KubeArmor JSON>` lines.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::BootLog;

/// One KubeArmor alert as JSON.
pub type Alert = Map<String, Value>;

/// Scenario name -> (rc, errno) the helper printed for it.
pub fn outcomes(log: &BootLog) -> HashMap<String, (i64, i64)> {
    let mut current = None;
    let mut out = HashMap::new();
    for line in &log.lines {
        if let Some(name) = line.strip_prefix("EA-SCENARIO ") {
            current = Some(name.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("EA-OP ") {
            let f: HashMap<&str, &str> = rest
                .split_whitespace()
                .filter_map(|f| f.split_once('='))
                .collect();
            let name = current.clone().expect("EA-OP after a scenario");
            let num = |k: &str| {
                f.get(k)
                    .and_then(|v| v.parse::<i64>().ok())
                    .unwrap_or_else(|| panic!("{k} in {rest}"))
            };
            out.insert(name, (num("rc"), num("errno")));
        }
    }
    out
}

/// The `MatchedHostPolicy` alerts on lines starting with `prefix`.
pub fn alerts(log: &BootLog, prefix: &str) -> Vec<Alert> {
    log.lines_with_prefix(prefix)
        .map(|line| match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(m)) => m,
            other => panic!("alert is not a JSON object: {line:?} ({other:?})"),
        })
        .filter(|a| a.get("Type").and_then(Value::as_str) == Some("MatchedHostPolicy"))
        .collect()
}

/// A string field of an alert ("" when absent).
pub fn field<'a>(alert: &'a Alert, key: &str) -> &'a str {
    alert.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The alerts about `resource` with `operation`.
pub fn about<'a>(alerts: &'a [Alert], operation: &str, resource: &str) -> Vec<&'a Alert> {
    alerts
        .iter()
        .filter(|a| field(a, "Operation") == operation && field(a, "Resource") == resource)
        .collect()
}
