//! The `unlock` part of the fail-closed guest (`guest/failclosed/75-unlock.sh`): in
//! locked mode `edgearmor unload` needs an unlock token signed with a fleet key for
//! this node, unexpired and unused; every refusal removes nothing, exits 3 and is one
//! self-protection alert, from the running agent or (made while none runs) the next.
//!
//! The fleet key is made here, for this boot; the tokens are signed here with it (and
//! one with another key), against the host's clock, which the guest's starts from.

use std::collections::HashMap;

use edgearmor_bundle::SigningKey;
use edgearmor_bundle::unlock::{UnlockClaims, create_unlock_token, new_unlock_claims};
use edgearmor_vm::Initramfs;
use edgearmor_vm::scenarios::{alerts, field, outcomes};

use crate::Run;

const EACCES: i64 = 13;
const DIR: &str = "/etc/edgearmor/failclosed/unlock";
/// `node` of the part's agent.toml.
const NODE: &str = "gw-vm";

/// The fleet's public key and the part's tokens, into the guest.
pub fn add_files(initramfs: &mut Initramfs) {
    let key = SigningKey::generate().expect("fleet key");
    let other = SigningKey::generate().expect("another key");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let claims = |node: &str, issued: u64, secs: u64| -> UnlockClaims {
        new_unlock_claims(node, issued, secs).expect("claims")
    };
    let tokens = [
        ("valid.unlock", &key, claims(NODE, now - 60, 3600)),
        // The locked part's last step (70-locked.sh) unlocks with this one.
        ("locked.unlock", &key, claims(NODE, now - 60, 3600)),
        ("second.unlock", &key, claims(NODE, now - 60, 3600)),
        ("expired.unlock", &key, claims(NODE, now - 7200, 3600)),
        ("foreign.unlock", &key, claims("gw-other", now - 60, 3600)),
        ("badsig.unlock", &other, claims(NODE, now - 60, 3600)),
    ];
    for (name, signer, claims) in tokens {
        let bytes = create_unlock_token(signer, &claims).expect("signs");
        initramfs.file_bytes(&format!("{DIR}/{name}"), bytes, 0o600);
    }
    let public = key.verifying_key().to_text();
    initramfs.file_bytes(
        &format!("{DIR}/fleet.pub"),
        public.as_str().as_bytes().to_vec(),
        0o644,
    );
}

/// `EA-<what> <scenario> <value>` lines: scenario -> value.
fn by_scenario<'a>(run: &'a Run, what: &str) -> HashMap<&'a str, &'a str> {
    let prefix = format!("EA-{what} ");
    run.log
        .lines
        .iter()
        .filter_map(|l| l.trim().strip_prefix(prefix.as_str())?.split_once(' '))
        .collect()
}

/// The `unload` alerts agent `name` delivered: their `Resource`s, after checking
/// everything else they say.
fn unload_alerts(run: &Run, name: &str) -> Vec<String> {
    let all = alerts(&run.log, &format!("EA-ALERT-{name} "));
    let unloads: Vec<_> = all
        .iter()
        .filter(|a| field(a, "Resource").starts_with("edgearmor unload"))
        .collect();
    for a in &unloads {
        for (key, want) in [
            ("PolicyName", "edgearmor-self-protection"),
            ("Action", "Block"),
            ("Operation", "Process"),
            ("Result", "Permission denied"),
            ("HostName", NODE),
        ] {
            assert_eq!(
                field(a, key),
                want,
                "{}: {name}: {key} of {a:?}",
                run.kernel()
            );
        }
    }
    unloads
        .iter()
        .map(|a| field(a, "Resource").to_owned())
        .collect()
}

pub fn check(run: &Run) {
    let kernel = run.kernel();
    let rc = by_scenario(run, "UNLOAD-RC");
    let out: Vec<&str> = run.log.lines_with_prefix("EA-UNLOAD-OUT ").collect();
    let said = |scenario: &str| -> String {
        out.iter()
            .filter_map(|l| l.strip_prefix(scenario)?.strip_prefix(' '))
            .collect::<Vec<_>>()
            .join("\n")
    };
    for (scenario, want, words) in [
        ("ul-no-token", "3", "needs --token FILE"),
        ("ul-expired", "3", "unlock token expired at"),
        (
            "ul-foreign",
            "3",
            "is for node \"gw-other\", this node is \"gw-vm\"",
        ),
        ("ul-badsig", "3", "signature is not valid"),
        ("ul-notatoken", "3", "not an edgearmor unlock token"),
        ("ul-valid", "0", "accepted for node gw-vm"),
        ("ul-replayed", "3", "was used already on this node"),
        ("ul-no-agent", "3", "needs --token FILE"),
        (
            "ul-second-valid",
            "0",
            "nothing is enforced until the next run",
        ),
    ] {
        assert_eq!(
            rc.get(scenario).copied(),
            Some(want),
            "{kernel}: {scenario}: {}",
            said(scenario)
        );
        assert!(
            said(scenario).contains(words),
            "{kernel}: {scenario}: {}",
            said(scenario)
        );
        if want == "3" {
            assert!(
                said(scenario).contains("nothing removed"),
                "{kernel}: {scenario}"
            );
        }
    }
    let pins = by_scenario(run, "UL-PINS");
    let left = |s: &str| -> u64 {
        pins.get(s)
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("{kernel}: {s}"))
    };
    assert!(
        left("ul-after-refusals") > 0,
        "{kernel}: refusals removed pins"
    );
    assert_eq!(
        (left("ul-after-valid"), left("ul-end")),
        (0, 0),
        "{kernel}: pins left"
    );

    let ops = outcomes(&run.log);
    for (scenario, want) in [
        ("ul-victim-locked", (-1, EACCES)),
        ("ul-victim-after-refusals", (-1, EACCES)),
        ("ul-victim-no-agent", (-1, EACCES)),
        ("ul-victim-unlocked", (0, 0)),
        ("ul-victim-end", (0, 0)),
    ] {
        assert_eq!(
            ops.get(scenario).copied(),
            Some(want),
            "{kernel}: {scenario}"
        );
    }

    let why = |resources: &[String]| -> Vec<String> {
        resources
            .iter()
            .map(|r| r.rsplit(": ").next().unwrap_or("").to_owned())
            .collect()
    };
    let first = unload_alerts(run, "unlock");
    assert_eq!(
        why(&first),
        [
            "no unlock token",
            "unlock token expired",
            "unlock token for another node",
            "unlock token badly signed",
            "not an unlock token",
        ],
        "{kernel}: {first:?}\n{}",
        run.agent_err("unlock")
    );
    assert!(
        first[0].starts_with("edgearmor unload /sys/fs/bpf/edgearmor: "),
        "{first:?}"
    );
    assert_eq!(
        why(&unload_alerts(run, "unlock-b")),
        ["unlock token replayed"],
        "{kernel}"
    );
    // Refused while no agent ran: delivered by the next one, once.
    assert_eq!(
        why(&unload_alerts(run, "unlock-c")),
        ["no unlock token"],
        "{kernel}"
    );
}
