//! `status` from files a test writes: fresh, stale, dead and missing agents, with and
//! without pins.

use super::*;
use crate::status::BrokerReport;

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("edgearmor-status-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn report(time: u64) -> AgentReport {
    AgentReport {
        pid: 4242,
        time,
        interval_sec: 60,
        mode: "enforcing".into(),
        detail: String::new(),
        classes: vec!["process".into(), "file".into()],
        policy_set: "00000000000000ab".into(),
        generation: Some(3),
        pin_dir: "/sys/fs/bpf/edgearmor".into(),
        adopted: true,
        broker: Some(BrokerReport {
            address: "10.0.0.1:8883".into(),
            connected: true,
            last_error: String::new(),
        }),
        counters: [
            ("alerts_sent", 12),
            ("alerts_lost_ring", 1),
            ("uptime_seconds", 90),
        ]
        .map(|(k, v)| (k.to_owned(), v))
        .into(),
    }
}

#[test]
fn a_fresh_report_of_a_live_agent_is_believed_and_others_are_explained() {
    let dir = scratch("fresh");
    let file = dir.join("status.json");
    let missing = read_agent(&file, 1000, |_| true);
    assert_eq!(missing.0, None);
    assert!(missing.1.starts_with("no agent runs (no "), "{}", missing.1);
    std::fs::write(&file, serde_json::to_vec(&report(1000)).expect("json")).expect("write");
    let (fresh, note) = read_agent(&file, 1100, |pid| pid == 4242);
    assert_eq!(fresh, Some(report(1000)), "{note}");
    let (dead, note) = read_agent(&file, 1100, |_| false);
    assert_eq!(dead, None);
    assert!(
        note.contains("pid 4242") && note.contains("is gone"),
        "{note}"
    );
    // Three intervals without a rewrite: a SIGSTOPped or wedged agent.
    let (stale, note) = read_agent(&file, 1000 + 181, |_| true);
    assert_eq!(stale, None);
    assert!(
        note.contains("has not reported for 181 s") && note.contains("wedged"),
        "{note}"
    );
    std::fs::write(&file, b"{\"pid\":").expect("write");
    assert!(
        read_agent(&file, 1000, |_| true)
            .1
            .contains("is not a status file")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_text_says_mode_pins_broker_and_counters() {
    let config = AgentConfig::default();
    let pins = PinnedEnforcement {
        links: vec!["check_exec".into(), "check_open".into()],
        active: Some(edgearmor_probe_abi::ActivePolicy {
            generation: 3,
            class_mask: edgearmor_probe_abi::class_bit(edgearmor_probe_abi::CLASS_FILE),
        }),
        unreadable: None,
    };
    let s = gather(&config, pins.clone(), Some(report(1000)), String::new());
    assert_eq!(s.enforcement, "enforcing");
    let text = render(&s);
    for expected in [
        "enforcement  enforcing\n",
        "pins         2 program(s) attached from /sys/fs/bpf/edgearmor (file, generation 3)",
        "agent        running (pid 4242, up 90 s)\n",
        "policy set   00000000000000ab\n",
        "pinned in    /sys/fs/bpf/edgearmor (adopted from an earlier agent)\n",
        "broker       10.0.0.1:8883 connected\n",
        "  alerts_sent                12\n  alerts_lost_ring           1\n",
    ] {
        assert!(text.contains(expected), "{expected:?} in\n{text}");
    }
    // No agent: the pins still say what is enforced.
    let pinned = gather(&config, pins, None, "no agent runs (no /run/x)".into());
    assert_eq!(pinned.enforcement, "pinned");
    let text = render(&pinned);
    assert!(
        text.contains("agent        no agent runs (no /run/x)\n"),
        "{text}"
    );
    assert!(!text.contains("counters"), "{text}");
    let nothing = gather(
        &config,
        PinnedEnforcement::default(),
        None,
        "no agent runs".into(),
    );
    assert_eq!(nothing.enforcement, "none");
    assert!(render(&nothing).contains("nothing pinned in /sys/fs/bpf/edgearmor"));
    let json = serde_json::to_value(&pinned).expect("json");
    assert_eq!(json["enforcement"], "pinned");
    assert_eq!(json["pins"]["generation"], 3);
    assert_eq!(json["pins"]["classes"][0], "file");
}
