//! The topic convention: `<prefix>/<cluster>/<node>/<kind>`, prefix `edgearmor` by
//! default. Every topic the agent publishes or subscribes to and every filter the
//! decoder subscribes with is built here.
//!
//! Agents publish postcard batches on `.../events`, retained policy-table parts on
//! `.../policies/<part>`, retained JSON status on `.../status` and retained bundle
//! reports on `.../policy/reported`; they read signed policy bundles from
//! `<prefix>/<cluster>/policy` (fleet-wide) and `.../policy` (this node). The decoder
//! re-publishes JSON lines on `.../alerts/json`. The cluster and node levels of a topic
//! are what the broker's ACLs authenticate, so the decoder checks that a payload's own
//! agent identity matches them.

/// The first level(s) of every topic, unless configured otherwise (`--topic-prefix`,
/// the agent's `topic_prefix`).
pub const DEFAULT_PREFIX: &str = "edgearmor";

/// The topics of one agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentTopics {
    /// `<prefix>/<cluster>/<node>/events`: postcard batches, QoS 1.
    pub events: String,
    /// `<prefix>/<cluster>/<node>/status`: retained birth message and last will.
    pub status: String,
    /// `<prefix>/<cluster>/<node>/policies`, the parent of the retained policy-table
    /// parts ([`AgentTopics::policy_part`]).
    pub policies: String,
    /// `<prefix>/<cluster>/policy`: the signed policy bundle for every node.
    pub fleet_bundle: String,
    /// `<prefix>/<cluster>/<node>/policy`: the signed bundle for this node.
    pub node_bundle: String,
    /// `<prefix>/<cluster>/<node>/policy/reported`: the retained report of the last
    /// bundle offered.
    pub bundle_reported: String,
}

impl AgentTopics {
    pub fn new(prefix: &str, cluster: &str, node: &str) -> Self {
        let base = format!("{prefix}/{cluster}/{node}");
        Self {
            events: format!("{base}/events"),
            status: format!("{base}/status"),
            policies: format!("{base}/policies"),
            fleet_bundle: format!("{prefix}/{cluster}/policy"),
            node_bundle: format!("{base}/policy"),
            bundle_reported: format!("{base}/policy/reported"),
        }
    }

    /// `<prefix>/<cluster>/<node>/policies/<part>`.
    pub fn policy_part(&self, part: usize) -> String {
        format!("{}/{part}", self.policies)
    }
}

/// `<prefix>/+/+/events`: every agent's event batches.
pub fn events_filter(prefix: &str) -> String {
    format!("{prefix}/+/+/events")
}

/// `<prefix>/+/+/policies/+`: every agent's retained policy-table parts.
pub fn policies_filter(prefix: &str) -> String {
    format!("{prefix}/+/+/policies/+")
}

/// `<prefix>/+/+/status`: every agent's retained status.
pub fn status_filter(prefix: &str) -> String {
    format!("{prefix}/+/+/status")
}

/// `$share/<group>/<filter>`: the broker hands each message to one member of the group.
pub fn shared_filter(group: &str, filter: &str) -> String {
    format!("$share/{group}/{filter}")
}

/// `<prefix>/<cluster>/<node>/alerts/json`, or `None` when a name cannot be one topic
/// level (it holds `/`, `+`, `#` or NUL): publishing it would land on another topic.
pub fn alerts_json_topic(prefix: &str, cluster: &str, node: &str) -> Option<String> {
    if !is_topic_level(cluster) || !is_topic_level(node) {
        return None;
    }
    Some(format!("{prefix}/{cluster}/{node}/alerts/json"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopicKind {
    Events,
    Policies,
    Status,
    /// Anything else under `<prefix>/<cluster>/<node>/`.
    Other,
}

/// A topic that follows the convention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeTopic<'a> {
    pub cluster: &'a str,
    pub node: &'a str,
    pub kind: TopicKind,
}

/// `None` when `topic` does not follow the convention under `prefix` (a custom
/// `--topic` filter may match such topics; their payloads are decoded without the
/// identity check).
pub fn parse<'a>(prefix: &str, topic: &'a str) -> Option<NodeTopic<'a>> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
    let mut levels = rest.split('/');
    let cluster = levels.next()?;
    let node = levels.next()?;
    let kind_levels: [Option<&str>; 3] = [levels.next(), levels.next(), levels.next()];
    let kind = match kind_levels {
        [Some("events"), None, _] => TopicKind::Events,
        [Some("status"), None, _] => TopicKind::Status,
        [Some("policies"), Some(_), None] => TopicKind::Policies,
        [Some(_), ..] => TopicKind::Other,
        [None, ..] => return None,
    };
    Some(NodeTopic {
        cluster,
        node,
        kind,
    })
}

/// A value that cannot be one level of a topic the agent publishes on, with the
/// value and where it came from (a configuration key, a flag, `uname -n`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {value:?} cannot be an MQTT topic level: {reason}")]
pub struct TopicLevelError {
    /// Where the value came from, e.g. `--host-name` or `uname -n`.
    pub origin: String,
    /// The value (escaped when printed).
    pub value: String,
    /// Which rule it breaks.
    pub reason: &'static str,
}

/// Why `name` cannot be one topic level, an empty name aside: it would change which
/// topic is published on (`/` starts another level) or is not allowed in topic names
/// (wildcards, NUL, control characters).
fn level_problem(name: &str) -> Option<&'static str> {
    if name.contains('/') {
        Some("it contains '/', which would split it into several levels (another topic)")
    } else if name.contains(['+', '#']) {
        Some("it contains '+' or '#', MQTT wildcards, which topic names cannot hold")
    } else if name.contains('\0') {
        Some("it contains NUL, which MQTT forbids in topic names")
    } else if name.chars().any(char::is_control) {
        Some("it contains control characters")
    } else {
        None
    }
}

fn is_topic_level(name: &str) -> bool {
    level_problem(name).is_none()
}

/// Checks that `value` (from `origin`: a configuration key, a flag, `uname -n`) can be
/// one level of a topic: not empty, no `/`, no wildcard, no NUL or control character.
/// Every cluster and node name the agent builds topics from goes through here.
pub fn validate_level(value: &str, origin: &str) -> Result<(), TopicLevelError> {
    let reason = if value.is_empty() {
        Some("it is empty")
    } else {
        level_problem(value)
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(TopicLevelError {
            origin: origin.to_owned(),
            value: value.to_owned(),
            reason,
        }),
    }
}

/// Why a topic prefix is invalid, or `Ok`: one or more literal levels, each as
/// [`validate_level`] wants it, not starting with `$` (the broker's own topics).
pub fn validate_prefix(prefix: &str) -> Result<(), &'static str> {
    if prefix.is_empty() || prefix.starts_with('/') || prefix.ends_with('/') {
        return Err("a topic prefix is one or more levels, without a leading or trailing '/'");
    }
    if prefix.starts_with('$') {
        return Err("a topic prefix cannot hold wildcards or NUL, nor start with '$'");
    }
    for level in prefix.split('/') {
        if validate_level(level, "topic prefix").is_err() {
            return Err(if level.is_empty() {
                "a topic prefix cannot have an empty level ('//')"
            } else if level.contains(['+', '#', '\0']) {
                "a topic prefix cannot hold wildcards or NUL, nor start with '$'"
            } else {
                "a topic prefix cannot hold control characters"
            });
        }
    }
    Ok(())
}

/// Why a subscription filter is invalid (MQTT 5 section 4.7), or `Ok`.
pub fn validate_filter(filter: &str) -> Result<(), &'static str> {
    if filter.is_empty() {
        return Err("a topic filter cannot be empty");
    }
    if filter.contains('\0') {
        return Err("a topic filter cannot contain NUL");
    }
    if filter.starts_with("$share/") {
        return Err("give the share group with --share-group, not inside --topic");
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err("'#' must be a whole level and the last one");
        }
        if level.contains('+') && *level != "+" {
            return Err("'+' must be a whole level");
        }
    }
    Ok(())
}

/// Why a share group name is invalid, or `Ok`.
pub fn validate_share_group(group: &str) -> Result<(), &'static str> {
    if group.is_empty() {
        return Err("a share group name cannot be empty");
    }
    if !is_topic_level(group) {
        return Err("a share group name cannot contain '/', '+', '#' or NUL");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_follow_the_convention() {
        let t = AgentTopics::new("edgearmor", "plant-7", "gw-12");
        assert_eq!(t.events, "edgearmor/plant-7/gw-12/events");
        assert_eq!(t.status, "edgearmor/plant-7/gw-12/status");
        assert_eq!(t.policies, "edgearmor/plant-7/gw-12/policies");
        assert_eq!(t.policy_part(3), "edgearmor/plant-7/gw-12/policies/3");
        assert_eq!(t.fleet_bundle, "edgearmor/plant-7/policy");
        assert_eq!(t.node_bundle, "edgearmor/plant-7/gw-12/policy");
        assert_eq!(t.bundle_reported, "edgearmor/plant-7/gw-12/policy/reported");
        let custom = AgentTopics::new("site/7/ea", "c", "n");
        assert_eq!(custom.events, "site/7/ea/c/n/events");
        assert_eq!(custom.fleet_bundle, "site/7/ea/c/policy");
    }

    #[test]
    fn what_the_agent_publishes_the_decoder_subscribes_to_and_parses() {
        let prefix = "site/7";
        let t = AgentTopics::new(prefix, "c", "gw1");
        let events = parse(prefix, &t.events).expect("convention");
        assert_eq!(
            (events.cluster, events.node, events.kind),
            ("c", "gw1", TopicKind::Events)
        );
        assert_eq!(
            parse(prefix, &t.status).map(|t| t.kind),
            Some(TopicKind::Status)
        );
        assert_eq!(
            parse(prefix, &t.policy_part(0)).map(|t| t.kind),
            Some(TopicKind::Policies)
        );
        assert_eq!(
            parse(prefix, &t.bundle_reported).map(|t| t.kind),
            Some(TopicKind::Other)
        );
        assert_eq!(events_filter(prefix), "site/7/+/+/events");
        assert_eq!(policies_filter(prefix), "site/7/+/+/policies/+");
        assert_eq!(status_filter(prefix), "site/7/+/+/status");
        for filter in [
            events_filter(prefix),
            policies_filter(prefix),
            status_filter(prefix),
        ] {
            assert!(validate_filter(&filter).is_ok(), "{filter}");
        }
        assert_eq!(
            shared_filter("decoders", &events_filter(prefix)),
            "$share/decoders/site/7/+/+/events"
        );
    }

    #[test]
    fn parses_the_convention() {
        let parse = |topic| parse(DEFAULT_PREFIX, topic);
        assert_eq!(
            parse("edgearmor/default/gw1/events"),
            Some(NodeTopic {
                cluster: "default",
                node: "gw1",
                kind: TopicKind::Events
            })
        );
        assert_eq!(
            parse("edgearmor//gw1/status").map(|t| (t.cluster, t.kind)),
            Some(("", TopicKind::Status))
        );
        assert_eq!(
            parse("edgearmor/c/n/policies/3").map(|t| t.kind),
            Some(TopicKind::Policies)
        );
        assert_eq!(
            parse("edgearmor/c/n/alerts/json").map(|t| t.kind),
            Some(TopicKind::Other)
        );
        assert_eq!(parse("edgearmor/c/n"), None);
        assert_eq!(parse("other/c/n/events"), None);
        assert_eq!(parse("edgearmorx/c/n/events"), None);
        assert_eq!(
            super::parse("site/7/ea", "site/7/ea/c/n/status").map(|t| (t.cluster, t.node, t.kind)),
            Some(("c", "n", TopicKind::Status))
        );
    }

    #[test]
    fn alerts_topic_refuses_names_that_would_escape_their_level() {
        assert_eq!(
            alerts_json_topic("edgearmor", "", "gw1").as_deref(),
            Some("edgearmor//gw1/alerts/json")
        );
        assert_eq!(alerts_json_topic("edgearmor", "a/b", "gw1"), None);
        assert_eq!(alerts_json_topic("edgearmor", "c", "#"), None);
    }

    #[test]
    fn a_level_is_refused_with_its_value_origin_and_reason() {
        assert_eq!(validate_level("gw-12", "uname -n"), Ok(()));
        assert_eq!(validate_level("plant 7.örn", "--cluster"), Ok(()));
        for (value, reason) in [
            ("gw/12", "'/'"),
            ("gw+12", "wildcards"),
            ("gw#12", "wildcards"),
            ("", "empty"),
            ("gw\0", "NUL"),
            ("gw\n12", "control"),
        ] {
            let err = validate_level(value, "uname -n").expect_err(value);
            assert_eq!(
                (err.origin.as_str(), err.value.as_str()),
                ("uname -n", value)
            );
            let message = err.to_string();
            assert!(
                message.starts_with(&format!(
                    "uname -n: {value:?} cannot be an MQTT topic level: "
                )) && message.contains(reason),
                "{message}"
            );
        }
        assert!(validate_prefix("site//ea").is_err());
        assert!(validate_prefix("site/\n").is_err());
    }

    #[test]
    fn filters_and_groups_are_checked() {
        assert!(validate_filter(&events_filter(DEFAULT_PREFIX)).is_ok());
        assert!(validate_prefix("site/7/edgearmor").is_ok());
        assert!(validate_prefix("a/").is_err());
        assert!(validate_prefix("a/+").is_err());
        assert!(validate_prefix("$SYS").is_err());
        assert!(validate_filter("edgearmor/#").is_ok());
        assert!(validate_filter("edgearmor/#/events").is_err());
        assert!(validate_filter("edgearmor/a+/events").is_err());
        assert!(validate_filter("").is_err());
        assert!(validate_share_group("decoders").is_ok());
        assert!(validate_share_group("a/b").is_err());
    }
}
