//! The Prometheus text exposition (format 0.0.4) of everything the decoder knows:
//!
//! - its own counters ([`crate::counters::Counters`], the connection's and the outputs'),
//!   as `edgearmor_decode_<name>_total`; rejected payloads as one family with a `reason`
//!   label; the rate of decoding is `rate(edgearmor_decode_alerts_total[1m])`;
//! - per node (`cluster`, `node` labels): online or offline, the agent's counters from its
//!   latest status message (names and `# HELP` from [`edgearmor_mqtt::status::COUNTERS`]),
//!   and what the decoder counted for it (alert lines, delivery gaps, events they lost).
//!
//! [`render`] is pure; the HTTP side is [`crate::http`].

use std::fmt::Write as _;

use edgearmor_mqtt::status::COUNTERS as AGENT_COUNTERS;

use crate::fleet::Fleet;

/// How Prometheus should read a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// Every name the decoder's `name=value` pairs use (its counters, the connection's, the
/// outputs'), with its kind and help text. A name missing here is a test failure.
pub const DECODER_METRICS: &[(&str, Kind, &str)] = &[
    ("messages", Kind::Counter, "MQTT messages received."),
    ("payload_bytes", Kind::Counter, "Payload bytes received."),
    ("batches", Kind::Counter, "Event batches accepted."),
    (
        "events",
        Kind::Counter,
        "Events in accepted batches, duplicates included.",
    ),
    (
        "alerts",
        Kind::Counter,
        "Alert lines decoded and written (rate() of it is the decode rate).",
    ),
    (
        "lines",
        Kind::Counter,
        "Lines written: alerts, agent statuses and delivery-gap SystemEvents.",
    ),
    (
        "lines_not_written",
        Kind::Counter,
        "Lines an output failed to take.",
    ),
    (
        "duplicates",
        Kind::Counter,
        "Events dropped as duplicates (redelivered).",
    ),
    (
        "stale",
        Kind::Counter,
        "Events dropped as older than the tracked sequence window.",
    ),
    (
        "late_accepted",
        Kind::Counter,
        "Events that filled a pending gap within the reorder window.",
    ),
    (
        "unchecked_accepted",
        Kind::Counter,
        "Events accepted without a sequence check (stream state forgotten).",
    ),
    ("gaps", Kind::Counter, "Delivery gaps reported."),
    (
        "gap_lost_events",
        Kind::Counter,
        "Events the delivery gaps lost.",
    ),
    (
        "agent_reported_lost_events",
        Kind::Counter,
        "Events the agents reported lost themselves (Loss events).",
    ),
    (
        "unknown_policy_ids",
        Kind::Counter,
        "Alerts whose policy id had no policy table entry (PolicyName left empty).",
    ),
    (
        "policy_parts",
        Kind::Counter,
        "Policy table parts accepted.",
    ),
    (
        "policy_tables_completed",
        Kind::Counter,
        "Policy tables completed.",
    ),
    (
        "policy_tables_evicted",
        Kind::Counter,
        "Policy tables forgotten (over --max-agents).",
    ),
    (
        "streams_evicted",
        Kind::Counter,
        "Agent boots whose sequence state was forgotten (over --max-agents).",
    ),
    ("statuses", Kind::Counter, "Agent status messages accepted."),
    (
        "retained_cleared",
        Kind::Counter,
        "Retained status or policy messages cleared (empty payloads).",
    ),
    (
        "agents_evicted",
        Kind::Counter,
        "Nodes whose health was forgotten (over --max-agents).",
    ),
    ("connections", Kind::Counter, "Connections to the broker."),
    (
        "connection_errors",
        Kind::Counter,
        "Broker connection errors.",
    ),
    (
        "ack_retries",
        Kind::Counter,
        "Acknowledgements sent on a later try (request queue was full).",
    ),
    (
        "acks_dropped",
        Kind::Counter,
        "Acknowledgements given up (the broker redelivers).",
    ),
    (
        "republished",
        Kind::Counter,
        "Lines republished as JSON over MQTT.",
    ),
    (
        "republish_dropped",
        Kind::Counter,
        "Lines not republished: the MQTT request queue was full.",
    ),
    (
        "republish_bad_topic",
        Kind::Counter,
        "Lines not republished: cluster or node cannot be a topic level.",
    ),
    ("file_rotations", Kind::Counter, "Output file rotations."),
    (
        "forward_queued",
        Kind::Counter,
        "Lines queued for the syslog receiver.",
    ),
    (
        "forward_sent",
        Kind::Counter,
        "Lines written to the syslog receiver's connection.",
    ),
    (
        "forward_dropped_queue_full",
        Kind::Counter,
        "Lines dropped because the syslog send queue was full (receiver slow or away).",
    ),
    (
        "forward_dropped_too_large",
        Kind::Counter,
        "Lines dropped because they exceed the syslog message limit.",
    ),
    (
        "forward_resent",
        Kind::Counter,
        "Lines put back in the queue because their connection ended before or while they were written (sent on the next one).",
    ),
    (
        "forward_unsent_at_exit",
        Kind::Counter,
        "Lines still queued when the decoder stopped (not delivered).",
    ),
    (
        "forward_connections",
        Kind::Counter,
        "Connections made to the syslog receiver.",
    ),
    (
        "forward_connect_errors",
        Kind::Counter,
        "Failed connection attempts to the syslog receiver (TCP or TLS).",
    ),
    (
        "forward_queue_lines",
        Kind::Gauge,
        "Lines waiting in the syslog send queue.",
    ),
    (
        "forward_connected",
        Kind::Gauge,
        "1 while connected to the syslog receiver.",
    ),
    (
        "metrics_requests",
        Kind::Counter,
        "Metrics scrapes answered.",
    ),
    (
        "metrics_connections_refused",
        Kind::Counter,
        "Metrics connections closed at once: too many open.",
    ),
];

/// The `rejected_<reason>` pairs become `edgearmor_decode_rejected_payloads_total{reason}`.
const REJECTED_PREFIX: &str = "rejected_";

pub fn describe(name: &str) -> Option<(Kind, &'static str)> {
    DECODER_METRICS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, kind, help)| (*kind, *help))
}

/// Escapes a label value: backslash, double quote and newline.
fn label(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    // HELP text escapes backslash and newline only.
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn node_sample(out: &mut String, name: &str, cluster: &str, node: &str, value: u64) {
    out.push_str(name);
    out.push_str("{cluster=\"");
    label(out, cluster);
    out.push_str("\",node=\"");
    label(out, node);
    let _ = writeln!(out, "\"}} {value}");
}

/// The whole exposition. `pairs` are the decoder's `name=value` counters (as printed at
/// exit); names without a description are left out (a test keeps them described).
pub fn render(pairs: &[(&'static str, u64)], fleet: &Fleet) -> String {
    let mut out = String::with_capacity(4096 + fleet.len() * 1024);
    let mut rejected = Vec::new();
    for &(name, value) in pairs {
        if let Some(reason) = name.strip_prefix(REJECTED_PREFIX) {
            rejected.push((reason, value));
            continue;
        }
        let Some((kind, help)) = describe(name) else {
            continue;
        };
        let (kind, suffix) = match kind {
            Kind::Counter => ("counter", "_total"),
            Kind::Gauge => ("gauge", ""),
        };
        let metric = format!("edgearmor_decode_{name}{suffix}");
        family(&mut out, &metric, kind, help);
        let _ = writeln!(out, "{metric} {value}");
    }
    if !rejected.is_empty() {
        let metric = "edgearmor_decode_rejected_payloads_total";
        family(
            &mut out,
            metric,
            "counter",
            "Payloads skipped, by reason (each received message is accepted or rejected under one reason).",
        );
        for (reason, value) in rejected {
            let _ = writeln!(out, "{metric}{{reason=\"{reason}\"}} {value}");
        }
    }
    render_fleet(&mut out, fleet);
    out
}

fn render_fleet(out: &mut String, fleet: &Fleet) {
    let agents = fleet.sorted();
    let _ = writeln!(
        out,
        "# HELP edgearmor_decode_agents Nodes tracked.\n# TYPE edgearmor_decode_agents gauge\nedgearmor_decode_agents {}",
        agents.len()
    );
    family(
        out,
        "edgearmor_agent_up",
        "gauge",
        "1 when the node's latest status is online, 0 after its last will (offline).",
    );
    for ((cluster, node), agent) in &agents {
        if let Some(online) = agent.online {
            node_sample(out, "edgearmor_agent_up", cluster, node, u64::from(online));
        }
    }
    family(
        out,
        "edgearmor_agent_info",
        "gauge",
        "Always 1: the node's agent version, kernel release and enforcement (available or unavailable) as labels.",
    );
    for ((cluster, node), agent) in &agents {
        if agent.online.is_none() {
            continue;
        }
        out.push_str("edgearmor_agent_info{cluster=\"");
        label(out, cluster);
        out.push_str("\",node=\"");
        label(out, node);
        out.push_str("\",agent_version=\"");
        label(out, &agent.agent_version);
        out.push_str("\",kernel=\"");
        label(out, &agent.kernel);
        out.push_str("\",enforcement=\"");
        label(out, agent.enforcement);
        out.push_str("\"} 1\n");
    }
    family(
        out,
        "edgearmor_agent_status_time_seconds",
        "gauge",
        "Unix time the node's latest status was taken.",
    );
    for ((cluster, node), agent) in &agents {
        if let Some(time) = agent.status_time {
            node_sample(
                out,
                "edgearmor_agent_status_time_seconds",
                cluster,
                node,
                time,
            );
        }
    }
    // Counters and gauges mixed in one table that does not say which: untyped.
    for (name, help) in AGENT_COUNTERS {
        let metric = format!("edgearmor_agent_{name}");
        let mut wrote_family = false;
        for ((cluster, node), agent) in &agents {
            if let Some(value) = agent.counters.get(name) {
                if !wrote_family {
                    family(out, &metric, "untyped", help);
                    wrote_family = true;
                }
                node_sample(out, &metric, cluster, node, value);
            }
        }
    }
    type Per = fn(&crate::fleet::AgentHealth) -> u64;
    let per_node: [(&str, &str, Per); 3] = [
        (
            "edgearmor_decode_agent_alerts_total",
            "Alert lines the decoder wrote for the node.",
            |a| a.alerts,
        ),
        (
            "edgearmor_decode_agent_gaps_total",
            "Delivery gaps (missing sequence ranges) the decoder reported for the node.",
            |a| a.gaps,
        ),
        (
            "edgearmor_decode_agent_gap_lost_events_total",
            "Events the node's delivery gaps lost.",
            |a| a.gap_lost,
        ),
    ];
    for (metric, help, value) in per_node {
        family(out, metric, "counter", help);
        for ((cluster, node), agent) in &agents {
            node_sample(out, metric, cluster, node, value(agent));
        }
    }
}

#[cfg(test)]
mod tests {
    use edgearmor_mqtt::status::StatusMessage;

    use super::*;
    use crate::counters::Counters;

    #[test]
    fn every_counter_printed_at_exit_is_described() {
        let mut names: Vec<&str> = Counters::default()
            .pairs()
            .iter()
            .map(|(n, _)| *n)
            .collect();
        #[cfg(feature = "mqtt")]
        names.extend(
            crate::mqtt::LiveStats::default()
                .pairs()
                .iter()
                .map(|(n, _)| *n),
        );
        #[cfg(feature = "mqtt")]
        names.extend(
            crate::forward::ForwardStats::default()
                .pairs()
                .iter()
                .map(|(n, _)| *n),
        );
        for name in names {
            if name == "rejected" || name.starts_with(REJECTED_PREFIX) {
                continue;
            }
            assert!(describe(name).is_some(), "{name} has no help text");
        }
    }

    #[test]
    fn exposition_has_help_types_labels_and_escapes() {
        let mut fleet = Fleet::new(10);
        let status = StatusMessage::from_json(
            br#"{"state":"online","agent_version":"0.1.0","boot_id":"0123456789abcdef0123456789abcdef","time":1795932048,"counters":{"alerts_sent":12,"ringbuf_used_bytes":4096}}"#,
        )
        .expect("valid");
        fleet.record_status("default", "gw\"1", &status);
        fleet.entry("default", "gw\"1").gaps = 2;
        let text = render(
            &[("alerts", 7), ("rejected", 3), ("rejected_malformed", 3)],
            &fleet,
        );
        for expected in [
            "# HELP edgearmor_decode_alerts_total Alert lines decoded and written (rate() of it is the decode rate).\n# TYPE edgearmor_decode_alerts_total counter\nedgearmor_decode_alerts_total 7\n",
            "edgearmor_decode_rejected_payloads_total{reason=\"malformed\"} 3\n",
            "edgearmor_agent_up{cluster=\"default\",node=\"gw\\\"1\"} 1\n",
            "edgearmor_agent_info{cluster=\"default\",node=\"gw\\\"1\",agent_version=\"0.1.0\",kernel=\"\",enforcement=\"\"} 1\n",
            "edgearmor_agent_status_time_seconds{cluster=\"default\",node=\"gw\\\"1\"} 1795932048\n",
            "# HELP edgearmor_agent_alerts_sent Alerts the agent handed to its outputs (after the rate limit), since it started.\n# TYPE edgearmor_agent_alerts_sent untyped\nedgearmor_agent_alerts_sent{cluster=\"default\",node=\"gw\\\"1\"} 12\n",
            "edgearmor_agent_ringbuf_used_bytes{cluster=\"default\",node=\"gw\\\"1\"} 4096\n",
            "edgearmor_decode_agent_gaps_total{cluster=\"default\",node=\"gw\\\"1\"} 2\n",
        ] {
            assert!(text.contains(expected), "{expected}\nnot in\n{text}");
        }
        assert!(!text.contains("edgearmor_decode_rejected_total"), "{text}");
        assert!(
            !text.contains("edgearmor_agent_alerts_lost_ring"),
            "absent counters have no family: {text}"
        );
    }
}
