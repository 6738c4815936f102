//! Node selection: the host-name labels (both spellings), other node labels matched
//! as Kubernetes matches `matchLabels`, and `metadata.namespace` accepted with a
//! warning.

use std::path::Path;

use edgearmor_policy::{HostPolicy, NodeIdentity, NodeLabels, parse_policy_text};

fn policy(metadata_extra: &str, labels: &str) -> Result<Vec<HostPolicy>, Vec<String>> {
    let text = format!(
        "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorHostPolicy\nmetadata:\n  name: p\n{metadata_extra}spec:\n  nodeSelector:\n    matchLabels:\n{labels}  process:\n    matchPaths:\n      - path: /usr/bin/apt\n"
    );
    parse_policy_text(Path::new("p.yaml"), &text)
        .map_err(|ds| ds.iter().map(ToString::to_string).collect())
}

fn node(host: &str, pairs: &[(&str, &str)]) -> NodeIdentity {
    let labels: NodeLabels = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    NodeIdentity::new(host, labels)
}

fn selects(labels: &str, on: &NodeIdentity) -> bool {
    let policies = policy("", labels).expect("valid");
    policies[0].host_selector.selects(on)
}

#[test]
fn kubernetes_hostname_is_a_synonym() {
    let gw = node("gw-7", &[]);
    for key in ["kubearmor.io/hostname", "kubernetes.io/hostname"] {
        assert!(selects(&format!("      {key}: gw-7\n"), &gw), "{key}");
        assert!(selects(&format!("      {key}: GW-7\n"), &gw), "{key}");
        assert!(!selects(&format!("      {key}: gw-8\n"), &gw), "{key}");
        assert!(selects(&format!("      {key}: \"*\"\n"), &gw), "{key}");
    }
    let both = "      kubearmor.io/hostname: gw-7\n      kubernetes.io/hostname: gw-7\n";
    assert!(selects(both, &gw));
    let conflict = "      kubearmor.io/hostname: gw-7\n      kubernetes.io/hostname: gw-8\n";
    let err = policy("", conflict).unwrap_err();
    assert!(err[0].contains("contradicts"), "{err:?}");
}

#[test]
fn every_label_must_be_present_and_equal() {
    let labels = "      site: plant-7\n      role: edge\n";
    assert!(selects(
        labels,
        &node(
            "gw",
            &[("site", "plant-7"), ("role", "edge"), ("model", "rpi5")]
        )
    ));
    assert!(
        !selects(
            labels,
            &node("gw", &[("site", "plant-7"), ("role", "core")])
        ),
        "mismatch"
    );
    assert!(
        !selects(labels, &node("gw", &[("site", "plant-7")])),
        "missing label"
    );
    assert!(!selects(labels, &node("gw", &[])), "no labels");
    let with_host = "      kubernetes.io/hostname: gw-7\n      site: plant-7\n";
    assert!(selects(with_host, &node("gw-7", &[("site", "plant-7")])));
    assert!(!selects(with_host, &node("gw-8", &[("site", "plant-7")])));
    assert!(!selects(with_host, &node("gw-7", &[("site", "plant-8")])));
    // Prefixed keys, as Kubernetes' well-known labels are.
    let arch = "      kubernetes.io/arch: arm64\n";
    assert!(selects(
        arch,
        &node("gw", &[("kubernetes.io/arch", "arm64")])
    ));
}

#[test]
fn bad_label_syntax_is_refused_with_key_and_value() {
    let err = policy("", "      \"-site\": a\n").unwrap_err();
    assert_eq!(err.len(), 1, "{err:?}");
    assert!(err[0].contains("node label key \"-site\""), "{err:?}");
    let err = policy("", &format!("      site: {}\n", "x".repeat(64))).unwrap_err();
    assert!(err[0].contains("64 bytes, more than 63"), "{err:?}");
    let err = policy("", "      {}\n").unwrap_err();
    assert!(err[0].contains("matchLabels is empty"), "{err:?}");
}

#[test]
fn metadata_namespace_is_accepted_with_a_warning() {
    let policies = policy(
        "  namespace: kube-system\n",
        "      kubearmor.io/hostname: \"*\"\n",
    )
    .expect("namespace accepted");
    let warnings: Vec<String> = policies[0]
        .warnings
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        warnings,
        [
            "p.yaml:5: metadata.namespace: metadata.namespace \"kube-system\" is ignored: a KubeArmorHostPolicy is cluster-scoped"
        ]
    );
    let plain = policy("", "      kubearmor.io/hostname: \"*\"\n").expect("valid");
    assert!(plain[0].warnings.is_empty());
    // Still a string, like the other metadata.
    assert!(policy("  namespace: [a]\n", "      kubearmor.io/hostname: \"*\"\n").is_err());
}

/// KubeArmor's host-name forms: several names separated by commas (any one), and
/// `hostnamereg` patterns (`*` any run of characters, the whole name).
#[test]
fn host_name_lists_and_patterns_select_as_kubearmor_does() {
    let (gw7, gw8, core) = (node("gw-7", &[]), node("gw-8", &[]), node("core-1", &[]));
    for key in ["kubearmor.io/hostname", "kubernetes.io/hostname"] {
        let list = format!("      {key}: gw-7,GW-9\n");
        assert!(selects(&list, &gw7), "{key}");
        assert!(!selects(&list, &gw8), "{key}");
        assert!(
            selects(&format!("      {key}: \"gw-9,*\"\n"), &core),
            "{key}"
        );
    }
    for key in ["kubearmor.io/hostnamereg", "kubernetes.io/hostnamereg"] {
        let pattern = format!("      {key}: gw-*\n");
        assert!(selects(&pattern, &gw7) && selects(&pattern, &gw8), "{key}");
        assert!(!selects(&pattern, &core), "{key}");
        let with_label = format!("      {key}: \"*-7\"\n      site: plant-7\n");
        assert!(selects(&with_label, &node("gw-7", &[("site", "plant-7")])));
        assert!(!selects(&with_label, &gw7), "every label must match");
    }
    // Lists combine with AND: some host must be in both.
    let both = "      kubearmor.io/hostname: gw-7,gw-8\n      kubernetes.io/hostname: gw-8,gw-9\n";
    assert!(selects(both, &gw8) && !selects(both, &gw7));
    let disjoint = "      kubearmor.io/hostname: gw-7,gw-8\n      kubernetes.io/hostname: gw-9\n";
    let err = policy("", disjoint).unwrap_err();
    assert!(err[0].contains("contradicts"), "{err:?}");
    let err = policy("", "      kubearmor.io/hostname: gw-7,,gw-8\n").unwrap_err();
    assert!(err[0].contains("\"\" is neither"), "{err:?}");
    let err = policy("", "      kubearmor.io/hostnamereg: \"gw 7*\"\n").unwrap_err();
    assert_eq!(err.len(), 1, "{err:?}");
    assert!(
        err[0].contains("spec.nodeSelector.matchLabels[\"kubearmor.io/hostnamereg\"]")
            && err[0].contains("\"gw 7*\" is not a host-name pattern"),
        "{err:?}"
    );
}
