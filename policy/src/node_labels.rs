//! Node labels and the selectors that match them, as Kubernetes matches a node
//! selector's `matchLabels`: every listed label must be present with an equal value.
//!
//! A gateway's labels are the ones configured in `agent.toml` (`[labels]`) plus the
//! two host-name labels, which always hold the host name: `kubearmor.io/hostname`
//! (KubeArmor's) and `kubernetes.io/hostname` (Kubernetes'), compared ASCII-case-
//! insensitively like host names. That is why configured labels may not use them.
//!
//! The same selectors name the nodes of a signed bundle (`k=v,k2=v2` targets): this
//! module is the one home of the syntax and of the matching for policies, bundles
//! and `policy check --label`.

use std::collections::BTreeMap;
use std::fmt;

/// The node label that selects hosts; `"*"` selects every host.
pub const HOSTNAME_LABEL: &str = "kubearmor.io/hostname";
/// Kubernetes' own host-name label, which KubeArmor's examples also use.
pub const KUBERNETES_HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// KubeArmor's host-name pattern (`gw-*`: `*` is any run of characters), in both
/// spellings like the host-name labels.
pub const HOSTNAME_PATTERN_LABEL: &str = "kubearmor.io/hostnamereg";
pub const KUBERNETES_HOSTNAME_PATTERN_LABEL: &str = "kubernetes.io/hostnamereg";
/// Kubernetes' limits on a label name (the part after `/`) and value.
pub const MAX_LABEL_NAME_BYTES: usize = 63;
/// Of a label key's prefix (a DNS subdomain).
pub const MAX_LABEL_PREFIX_BYTES: usize = 253;

/// Labels a gateway may configure: they all go into its birth message.
pub const MAX_NODE_LABELS: usize = 32;

/// Label key -> value, ordered so the birth message lists them the same way each time.
pub type NodeLabels = BTreeMap<String, String>;

/// Whether `key` is one of the two host-name labels.
pub fn is_hostname_label(key: &str) -> bool {
    key == HOSTNAME_LABEL || key == KUBERNETES_HOSTNAME_LABEL
}

/// Whether `key` is one of the two host-name pattern labels.
pub fn is_hostname_pattern_label(key: &str) -> bool {
    key == HOSTNAME_PATTERN_LABEL || key == KUBERNETES_HOSTNAME_PATTERN_LABEL
}

/// Whether `key` follows from the host name (so a gateway may not configure it).
pub fn is_reserved_label(key: &str) -> bool {
    is_hostname_label(key) || is_hostname_pattern_label(key)
}

/// Whether `host` matches the host-name pattern `pattern` as a whole, `*` matching
/// any run of characters, ASCII-case-insensitively like host names.
pub fn host_pattern_matches(pattern: &str, host: &str) -> bool {
    let (p, h) = (pattern.as_bytes(), host.as_bytes());
    let (mut pi, mut hi) = (0, 0);
    // Where the last `*` was, and how much of `host` it has taken.
    let mut star: Option<(usize, usize)> = None;
    while hi < h.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, hi));
            pi += 1;
        } else if pi < p.len() && p[pi].eq_ignore_ascii_case(&h[hi]) {
            pi += 1;
            hi += 1;
        } else if let Some((star_pi, star_hi)) = star {
            pi = star_pi + 1;
            hi = star_hi + 1;
            star = Some((star_pi, star_hi + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// A label key as Kubernetes accepts it: `[prefix/]name`, the prefix a DNS
/// subdomain, the name 1..=63 of `[A-Za-z0-9._-]` starting and ending alphanumeric.
/// `Err` says what is wrong.
pub fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() || prefix.len() > MAX_LABEL_PREFIX_BYTES {
            return Err(format!(
                "the prefix before '/' must be 1 to {MAX_LABEL_PREFIX_BYTES} bytes"
            ));
        }
        let label_ok = |part: &str| {
            let b = part.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        };
        if !prefix.split('.').all(label_ok) {
            return Err(format!(
                "the prefix {prefix:?} must be a DNS subdomain (lower-case letters, digits, '-' and '.')"
            ));
        }
    }
    if name.is_empty() {
        return Err("the name (after any prefix/) is empty".into());
    }
    check_name_syntax(name).map_err(|e| format!("the name {name:?} {e}"))
}

/// A label value as Kubernetes accepts it: empty, or like a key's name part.
pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    check_name_syntax(value)
}

fn check_name_syntax(text: &str) -> Result<(), String> {
    let b = text.as_bytes();
    if b.len() > MAX_LABEL_NAME_BYTES {
        return Err(format!(
            "is {} bytes, more than {MAX_LABEL_NAME_BYTES} (MAX_LABEL_NAME_BYTES)",
            b.len()
        ));
    }
    let inner_ok = b
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    let edges_ok = b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric);
    if inner_ok && edges_ok {
        Ok(())
    } else {
        Err(
            "must be letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
                .into(),
        )
    }
}

/// `key=value`, both checked (`--label` and bundle targets).
pub fn parse_label_assignment(text: &str) -> Result<(String, String), String> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(format!("{text:?}: expected key=value"));
    };
    check_label_key(key).map_err(|e| format!("label key {key:?}: {e}"))?;
    check_label_value(value).map_err(|e| format!("label {key:?}: value {value:?} {e}"))?;
    Ok((key.to_owned(), value.to_owned()))
}

/// What a selector is matched against: a host name and its configured labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeIdentity {
    pub hostname: String,
    /// `None` stands for "whatever labels": every label requirement is taken as met.
    /// `policy check` uses it to bound the set any node with this host name can get.
    labels: Option<NodeLabels>,
}

impl NodeIdentity {
    /// A node whose labels are `labels` (without the host-name labels, which follow
    /// from `hostname`).
    pub fn new(hostname: impl Into<String>, labels: NodeLabels) -> Self {
        Self {
            hostname: hostname.into(),
            labels: Some(labels),
        }
    }

    /// A node named `hostname` with no configured labels.
    pub fn named(hostname: impl Into<String>) -> Self {
        Self::new(hostname, NodeLabels::new())
    }

    /// Any node named `hostname`, whatever its labels (the worst case of a set).
    pub fn with_any_labels(hostname: impl Into<String>) -> Self {
        Self {
            hostname: hostname.into(),
            labels: None,
        }
    }

    /// The configured labels (empty for [`NodeIdentity::with_any_labels`]).
    pub fn labels(&self) -> impl Iterator<Item = (&str, &str)> {
        self.labels
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether this node has label `key` with value `value`. The host-name labels
    /// compare with the host name: the value is one name, or several separated by
    /// commas (any one matches), `"*"` matching every host; the host-name pattern
    /// labels match it as a pattern (taken as met when the labels are "whatever":
    /// the pattern may select any host).
    pub fn has_label(&self, key: &str, value: &str) -> bool {
        if is_hostname_label(key) {
            return value
                .split(',')
                .any(|name| name == "*" || name.eq_ignore_ascii_case(&self.hostname));
        }
        if is_hostname_pattern_label(key) {
            return self.labels.is_none() || host_pattern_matches(value, &self.hostname);
        }
        match &self.labels {
            None => true,
            Some(labels) => labels.get(key).is_some_and(|v| v == value),
        }
    }
}

impl From<&str> for NodeIdentity {
    fn from(hostname: &str) -> Self {
        Self::named(hostname)
    }
}

impl From<&NodeIdentity> for NodeIdentity {
    fn from(node: &NodeIdentity) -> Self {
        node.clone()
    }
}

impl fmt::Display for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "host {:?}", self.hostname)?;
        match &self.labels {
            None => write!(f, " (any labels)"),
            Some(labels) if labels.is_empty() => write!(f, " (no labels)"),
            Some(labels) => {
                let joined: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(f, " (labels {})", joined.join(","))
            }
        }
    }
}

/// A bundle target naming labels: `key=value[,key=value...]`, all of which must
/// hold (the host-name labels compare with the host name). `None` when `target`
/// is not a label target (it has no `=`); `Some(Err)` when its syntax is wrong.
pub fn parse_label_target(target: &str) -> Option<Result<NodeLabels, String>> {
    if !target.contains('=') {
        return None;
    }
    let mut labels = NodeLabels::new();
    for part in target.split(',') {
        let (key, value) = match parse_label_assignment(part) {
            Ok(pair) => pair,
            Err(e) => return Some(Err(format!("target {target:?}: {e}"))),
        };
        if labels.insert(key.clone(), value).is_some() {
            return Some(Err(format!("target {target:?}: label {key:?} is repeated")));
        }
    }
    Some(Ok(labels))
}

/// Whether `node` has every label of `labels`.
pub fn labels_select(labels: &NodeLabels, node: &NodeIdentity) -> bool {
    labels.iter().all(|(k, v)| node.has_label(k, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(pairs: &[(&str, &str)]) -> NodeIdentity {
        let labels = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        NodeIdentity::new("GW-7", labels)
    }

    #[test]
    fn label_keys_and_values_follow_kubernetes() {
        for key in [
            "site",
            "node.kubernetes.io/instance-type",
            "a_b.c-d",
            "x/Y9",
        ] {
            assert_eq!(check_label_key(key), Ok(()), "{key}");
        }
        for key in ["", "/x", "a/", "-site", "site-", "Ex.com/x", "a b", "a/b/c"] {
            assert!(check_label_key(key).is_err(), "{key}");
        }
        assert!(check_label_key(&"a".repeat(64)).unwrap_err().contains("63"));
        assert_eq!(check_label_value(""), Ok(()));
        assert_eq!(check_label_value("plant-7"), Ok(()));
        assert!(check_label_value("plant 7").is_err());
        assert!(check_label_value("-x").is_err());
        let err = parse_label_assignment("site").unwrap_err();
        assert!(err.contains("key=value"), "{err}");
        let err = parse_label_assignment("site=a b").unwrap_err();
        assert!(err.contains("\"site\"") && err.contains("\"a b\""), "{err}");
    }

    #[test]
    fn hostname_labels_compare_with_the_host_name() {
        let gw = node(&[("site", "plant-7")]);
        for key in [HOSTNAME_LABEL, KUBERNETES_HOSTNAME_LABEL] {
            assert!(gw.has_label(key, "gw-7"));
            assert!(gw.has_label(key, "*"));
            assert!(!gw.has_label(key, "gw-8"));
        }
    }

    #[test]
    fn host_name_lists_and_patterns() {
        let gw = node(&[]);
        assert!(gw.has_label(HOSTNAME_LABEL, "gw-6,gw-7"));
        assert!(gw.has_label(KUBERNETES_HOSTNAME_LABEL, "gw-6,*"));
        assert!(!gw.has_label(HOSTNAME_LABEL, "gw-6,gw-8"));
        for (pattern, matches) in [
            ("gw-*", true),
            ("GW-?", false),
            ("*-7", true),
            ("g*7", true),
            ("gw-", false),
            ("gw", false),
            ("*", true),
            ("gw-7*", true),
            ("gw-70", false),
            ("**7", true),
            ("x*", false),
        ] {
            assert_eq!(
                gw.has_label(HOSTNAME_PATTERN_LABEL, pattern),
                matches,
                "{pattern}"
            );
            assert_eq!(
                gw.has_label(KUBERNETES_HOSTNAME_PATTERN_LABEL, pattern),
                matches,
                "{pattern}"
            );
        }
        assert!(host_pattern_matches("a*b*c", "axxbyyc"));
        assert!(!host_pattern_matches("a*b*c", "axxbyy"));
        assert!(NodeIdentity::with_any_labels("").has_label(HOSTNAME_PATTERN_LABEL, "gw-*"));
    }

    #[test]
    fn every_label_must_match() {
        let gw = node(&[("site", "plant-7"), ("role", "edge")]);
        let sel = |t: &str| parse_label_target(t).unwrap().unwrap();
        assert!(labels_select(&sel("site=plant-7"), &gw));
        assert!(labels_select(&sel("site=plant-7,role=edge"), &gw));
        assert!(labels_select(
            &sel("site=plant-7,kubernetes.io/hostname=gw-7"),
            &gw
        ));
        assert!(!labels_select(&sel("site=plant-7,role=core"), &gw));
        assert!(!labels_select(&sel("model=rpi5"), &gw), "missing label");
        assert!(
            !labels_select(&sel("site=Plant-7"), &gw),
            "values are case-sensitive"
        );
        assert!(labels_select(
            &sel("model=rpi5"),
            &NodeIdentity::with_any_labels("x")
        ));
        assert!(parse_label_target("gw-*").is_none());
        let err = parse_label_target("site=a,site=b").unwrap().unwrap_err();
        assert!(err.contains("repeated"), "{err}");
        assert!(parse_label_target("site=a,bad key=b").unwrap().is_err());
    }
}
