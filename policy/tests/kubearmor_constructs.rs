//! KubeArmor constructs edgearmor does not enforce yet: each is refused with one
//! diagnostic naming it as not supported (not as an unknown key, and with no
//! follow-on "no rules" error), at its YAML path.

use std::path::Path;

use edgearmor_policy::parse_policy_text;

fn problems(spec: &str) -> Vec<String> {
    let text = format!(
        "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorHostPolicy\nmetadata:\n  name: p\nspec:\n  nodeSelector:\n    matchLabels:\n      kubearmor.io/hostname: \"*\"\n{spec}  action: Block\n"
    );
    match parse_policy_text(Path::new("p.yaml"), &text) {
        Ok(_) => Vec::new(),
        Err(ds) => ds.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn each_construct_not_enforced_yet_gets_one_precise_error() {
    let cases = [
        (
            "  device:\n    matchDevice:\n      - class: MASS-STORAGE\n",
            "p.yaml:9: spec.device: device (matchDevice) is not supported yet",
        ),
        (
            "  network:\n    matchDNSQueries:\n      - domain: example.com\n",
            "p.yaml:10: spec.network.matchDNSQueries: matchDNSQueries is not supported yet",
        ),
        (
            "  process:\n    matchPaths:\n      - path: /usr/bin/curl\n        execname: curl\n",
            "p.yaml:12: spec.process.matchPaths[0].execname: execname is not supported yet",
        ),
        (
            "  process:\n    matchPaths:\n      - path: /usr/bin/curl\n        allowedArgs: [\"-s\"]\n",
            "p.yaml:12: spec.process.matchPaths[0].allowedArgs: allowedArgs is not supported yet",
        ),
        (
            "  file:\n    matchDirectories:\n      - dir: /etc/\n        pts: true\n",
            "p.yaml:12: spec.file.matchDirectories[0].pts: pts is not supported yet",
        ),
        (
            "  network:\n    matchProtocols:\n      - protocol: ICMPV6\n",
            "p.yaml:11: spec.network.matchProtocols[0].protocol: protocol \"ICMPV6\" is not supported yet",
        ),
        (
            "  apparmor: \"deny /etc/shadow r,\"\n",
            "p.yaml:9: spec.apparmor: apparmor profiles are not supported",
        ),
    ];
    for (spec, expected) in cases {
        let found = problems(spec);
        assert_eq!(found.len(), 1, "{spec}: {found:?}");
        assert!(found[0].starts_with(expected), "{spec}: {found:?}");
    }
}

#[test]
fn the_same_keys_elsewhere_are_unknown() {
    // Where KubeArmor's CRD does not have them, they are typos like any other key.
    for spec in [
        "  file:\n    matchPatterns:\n      - pattern: /etc/*.conf\n        pts: true\n",
        "  file:\n    matchPaths:\n      - path: /etc/passwd\n        execname: x\n",
        "  process:\n    matchPaths:\n      - path: /usr/bin/curl\n    device: x\n",
    ] {
        let found = problems(spec);
        assert_eq!(found.len(), 1, "{spec}: {found:?}");
        assert!(found[0].contains("unknown key"), "{spec}: {found:?}");
    }
}
