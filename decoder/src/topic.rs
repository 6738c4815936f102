//! The MQTT topic convention: `<prefix>/<cluster>/<node>/<kind>`, prefix `edgearmor` by
//! default.
//!
//! Agents publish postcard batches on `.../events`, retained policy-table parts on
//! `.../policies/<part>` and retained JSON status on `.../status`; the decoder
//! re-publishes JSON lines on `.../alerts/json`. The cluster and node levels of a topic
//! are what the broker's ACLs authenticate, so the decoder checks that a payload's own
//! agent identity matches them.

/// The first level(s) of every topic, unless configured otherwise (`--topic-prefix`,
/// the agent's `topic_prefix`).
pub const DEFAULT_PREFIX: &str = "edgearmor";

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

/// `<prefix>/<cluster>/<node>/alerts/json`, or `None` when a name cannot be one topic
/// level (it holds `/`, `+`, `#` or NUL): publishing it would land on another topic.
pub fn alerts_json_topic(prefix: &str, cluster: &str, node: &str) -> Option<String> {
    if !is_topic_level(cluster) || !is_topic_level(node) {
        return None;
    }
    Some(format!("{prefix}/{cluster}/{node}/alerts/json"))
}

fn is_topic_level(name: &str) -> bool {
    !name.contains(['/', '+', '#', '\0'])
}

/// Why a topic prefix is invalid, or `Ok`: one or more literal levels.
pub fn validate_prefix(prefix: &str) -> Result<(), &'static str> {
    if prefix.is_empty() || prefix.starts_with('/') || prefix.ends_with('/') {
        return Err("a topic prefix is one or more levels, without a leading or trailing '/'");
    }
    if prefix.contains(['+', '#', '\0']) || prefix.starts_with('$') {
        return Err("a topic prefix cannot hold wildcards or NUL, nor start with '$'");
    }
    Ok(())
}

/// `$share/<group>/<filter>`: the broker hands each message to one member of the group.
pub fn shared_filter(group: &str, filter: &str) -> String {
    format!("$share/{group}/{filter}")
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
