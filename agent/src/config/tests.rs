//! `agent.toml`: defaults, every key, and mistakes named by key.

use super::*;

#[test]
fn an_oversized_config_is_refused_unread_naming_the_limit() {
    let dir = std::env::temp_dir().join(format!("edgearmor-config-big-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("agent.toml");
    // Valid TOML all the way, so only the size can refuse it.
    let line = "# padding\n";
    let lines = usize::try_from(MAX_CONFIG_FILE_BYTES).expect("fits") / line.len() + 1;
    std::fs::write(&path, line.repeat(lines)).expect("write");
    let err = AgentConfig::load(&path, false).expect_err("too large");
    assert!(matches!(err, ConfigError::TooLarge { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("agent.toml") && message.contains("MAX_CONFIG_FILE_BYTES"),
        "{message}"
    );
    // At the limit it loads.
    std::fs::write(&path, line.repeat(lines - 1)).expect("write");
    AgentConfig::load(&path, true).expect("at most the limit loads");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn empty_file_means_documented_defaults() {
    let c = AgentConfig::parse(Path::new("a.toml"), "").expect("valid");
    assert_eq!(c, AgentConfig::default());
    assert_eq!(c.throttle.max_alerts_per_sec, 10);
    assert_eq!(c.offline.buffer_bytes, 1 << 20);
    assert!(c.output.stdout);
}

#[test]
fn full_file_parses() {
    let c = AgentConfig::parse(
        Path::new("a.toml"),
        r#"
            cluster = "plant-7"
            node = "gw-12"
            enforcement = "required"
            rules = ["/etc/edgearmor/rules.toml"]
            [output]
            stdout = false
            [mqtt]
            broker = "broker.local:8883"
            ca_file = "/etc/edgearmor/ca.pem"
            username = "gw-12"
            password_file = "/etc/edgearmor/mqtt.pass"
            mqtt_version = "3.1.1"
            [pipeline]
            batch_max_events = 16
            flush_interval_ms = 500
            [offline]
            buffer_bytes = 2097152
            spool_dir = "/var/lib/edgearmor/spool"
            spool_bytes = 8388608
            [throttle]
            max_alerts_per_sec = 0
            "#,
    )
    .expect("valid");
    assert_eq!(
        c.broker_address().expect("valid"),
        ("broker.local".into(), 8883)
    );
    assert_eq!(
        c.offline.spool_dir.as_deref(),
        Some(Path::new("/var/lib/edgearmor/spool"))
    );
    assert_eq!(
        c.mqtt.mqtt_version,
        VersionChoice::Fixed(edgearmor_mqtt::MqttVersion::V311)
    );
    assert_eq!(MqttConfig::default().mqtt_version, VersionChoice::Auto);
}

#[test]
fn mqtt_settings_resolve_client_id_topics_and_tls_files() {
    let mut m = MqttConfig::default();
    assert_eq!(
        m.client_id_for("plant-7", "gw-12"),
        "edgearmor-plant-7-gw-12"
    );
    assert_eq!(
        m.topics("plant-7", "gw-12").events,
        "edgearmor/plant-7/gw-12/events"
    );
    assert_eq!(m.tls_files(), None);
    m.client_id = "fixed".into();
    m.topic_prefix = "site/7".into();
    m.ca_file = Some("/ca.pem".into());
    assert_eq!(m.client_id_for("c", "n"), "fixed");
    assert_eq!(m.topics("c", "n").status, "site/7/c/n/status");
    assert_eq!(
        m.tls_files(),
        Some(TlsFiles {
            ca: "/ca.pem".into(),
            client: None
        })
    );
    m.client_cert = Some("/c.pem".into());
    m.client_key = Some("/c.key".into());
    assert_eq!(
        m.tls_files().and_then(|t| t.client),
        Some(ClientCertificate {
            cert: "/c.pem".into(),
            key: "/c.key".into()
        })
    );
}

#[test]
fn mistakes_name_the_key() {
    let cases = [
        ("colour = 1", "unknown field `colour`"),
        ("enforcement = \"maybe\"", "unknown variant `maybe`"),
        (
            "[mqtt]\nbroker = \"nohost\"",
            "mqtt.broker = \"nohost\": expected host:port",
        ),
        ("[mqtt]\nbroker = \"h:99999\"", "expected host:port"),
        (
            "[pipeline]\nbatch_max_events = 64",
            "pipeline.batch_max_events",
        ),
        ("[offline]\nbuffer_bytes = 10", "offline.buffer_bytes"),
        ("[throttle]\nmax_alerts_per_sec = -1", "max_alerts_per_sec"),
        (
            "cluster = \"a/b\"",
            "config: a.toml: cluster: \"a/b\" cannot be an MQTT topic level: it contains '/'",
        ),
        (
            "node = \"gw+1\"",
            "a.toml: node: \"gw+1\" cannot be an MQTT topic level: it contains '+' or '#'",
        ),
        (
            "cluster = \"\"",
            "a.toml: cluster: \"\" cannot be an MQTT topic level: it is empty",
        ),
        (
            "[mqtt]\ntopic_prefix = \"site/#\"",
            "mqtt.topic_prefix = \"site/#\"",
        ),
        ("[mqtt]\nclient_cert = \"/c\"", "client_key go together"),
        ("[mqtt]\npassword_file = \"/p\"", "needs a username"),
        (
            "[fleet]\nbundle_max_bytes = 16777217",
            "fleet.bundle_max_bytes = \"16777217\": must be at most 16777216 (MAX_BUNDLE_BYTES)",
        ),
        (
            "[mqtt]\nmqtt_version = \"3.1\"",
            "\"3.1\" is not an MQTT version: expected \"3.1.1\", \"5\" or \"auto\"",
        ),
    ];
    for (text, want) in cases {
        let err = AgentConfig::parse(Path::new("a.toml"), text)
            .expect_err(text)
            .to_string();
        assert!(err.contains(want), "{text:?}: {err:?} lacks {want:?}");
    }
}

#[test]
fn posture_table_goes_straight_to_the_compiler() {
    use edgearmor_policy::DefaultPosture;
    let c = AgentConfig::parse(
        Path::new("a.toml"),
        "[posture]\nfile = \"block\"\ncapabilities = \"audit\"\n",
    )
    .expect("valid");
    assert_eq!(
        c.posture,
        DefaultPostures {
            process: DefaultPosture::Audit,
            file: DefaultPosture::Block,
            network: DefaultPosture::Audit,
            capabilities: DefaultPosture::Audit,
        }
    );
    assert_eq!(c.posture, {
        let mut p = DefaultPostures::uniform(DefaultPosture::Audit);
        p.file = DefaultPosture::Block;
        p
    });
    let cases = [
        (
            "[posture]\ncolour = \"audit\"",
            "unknown field `colour`, expected one of `process`, `file`, `network`, `capabilities`",
        ),
        (
            "[posture]\nfile = \"Block\"",
            "unknown variant `Block`, expected `audit` or `block`",
        ),
        ("[posture]\nfile = 1", "wanted string or table"),
        ("posture = 1", "expected struct PostureConfig"),
    ];
    for (text, want) in cases {
        let err = AgentConfig::parse(Path::new("a.toml"), text)
            .expect_err(text)
            .to_string();
        assert!(err.contains(want), "{text:?}: {err:?} lacks {want:?}");
    }
}

#[test]
fn missing_default_file_is_defaults_but_missing_explicit_file_is_an_error() {
    let nowhere = Path::new("/nonexistent/edgearmor.toml");
    assert_eq!(
        AgentConfig::load(nowhere, false).expect("defaults"),
        AgentConfig::default()
    );
    assert!(AgentConfig::load(nowhere, true).is_err());
}

#[test]
fn labels_are_kubernetes_labels_named_with_the_file() {
    let c = AgentConfig::parse(
        Path::new("a.toml"),
        "node = \"gw-7\"\n[labels]\nsite = \"plant-7\"\nmodel = \"rpi5\"\n\"node.example/role\" = \"edge\"\n",
    )
    .expect("valid");
    assert_eq!(c.labels.len(), 3);
    assert_eq!(c.labels["site"], "plant-7");
    let identity = c.node_identity("gw-7");
    assert!(identity.has_label("kubernetes.io/hostname", "gw-7"));
    assert!(identity.has_label("node.example/role", "edge"));
    // Inline table form too.
    let inline = AgentConfig::parse(Path::new("a.toml"), "labels = { site = \"plant-7\" }\n");
    assert_eq!(inline.expect("valid").labels["site"], "plant-7");

    let err = |text: &str| {
        AgentConfig::parse(Path::new("/etc/edgearmor/agent.toml"), text)
            .expect_err("refused")
            .to_string()
    };
    let e = err("[labels]\nsite = \"plant 7\"\n");
    assert!(
        e.starts_with("config /etc/edgearmor/agent.toml: labels.\"site\": value \"plant 7\" is not a label value"),
        "{e}"
    );
    let e = err("[labels]\n\"-site\" = \"a\"\n");
    assert!(e.contains("labels.\"-site\": not a label key"), "{e}");
    let e = err("[labels]\n\"kubernetes.io/hostname\" = \"gw\"\n");
    assert!(
        e.contains("always the host name: set `node` instead"),
        "{e}"
    );
    let e = err("[labels]\n\"kubearmor.io/hostnamereg\" = \"gw\"\n");
    assert!(
        e.contains("labels.\"kubearmor.io/hostnamereg\": this label is always the host name"),
        "{e}"
    );
    let e = err("[labels]\nsite = 7\n");
    assert!(e.contains("agent.toml") && e.contains("string"), "{e}");
    let many: String = (0..33).map(|i| format!("k{i} = \"v\"\n")).collect();
    let e = err(&format!("[labels]\n{many}"));
    assert!(
        e.contains("labels: 33 labels, more than 32 (MAX_NODE_LABELS)"),
        "{e}"
    );
    let long: String = (0..20)
        .map(|i| format!("k{i:02}{} = \"{}\"\n", "x".repeat(50), "v".repeat(10)))
        .collect();
    let e = err(&format!("[labels]\n{long}"));
    assert!(e.contains("MAX_LABELS_LEN"), "{e}");
}

#[test]
fn locked_mode_is_off_unless_asked_for_and_only_takes_a_boolean() {
    assert!(!AgentConfig::default().locked);
    let c = AgentConfig::parse(Path::new("a.toml"), "locked = true\n").expect("valid");
    assert!(c.locked);
    let err = AgentConfig::parse(Path::new("a.toml"), "locked = \"yes\"\n").expect_err("bad");
    assert!(err.to_string().contains("locked"), "{err}");
}
