//! The `network` part of the fail-closed guest (`guest/failclosed/30-network.sh`):
//! sockets are decided by what they are. MPTCP is tcp and UDP-Lite is udp (issue 13:
//! both passed tcp/udp Block rules), SCTP, ping and packet sockets have their classes,
//! and an Internet protocol the table does not know (DCCP) is denied wherever a rule
//! covers the family; the same protocols stay permitted for processes no rule covers.

use edgearmor_vm::scenarios::{Alert, about, alerts, field, outcomes};

use crate::Run;

const EACCES: i64 = 13;
/// SCTP streams without the module (the guest loads none): `inet_create` knows the
/// type but not the protocol.
const EPROTONOSUPPORT: i64 = 93;
/// SCTP seqpackets and DCCP without their modules: no protocol registered for the type.
const ESOCKTNOSUPPORT: i64 = 94;

const PROBE: &str = "/usr/local/bin/setid-probe";

/// (scenario, resource, process, policy) of every denial.
fn denials() -> Vec<(String, String, &'static str, &'static str)> {
    let mut out = Vec::new();
    let both = [("4", "AF_INET"), ("6", "AF_INET6")];
    let per_family: [(&str, &str, &str, &str); 6] = [
        ("deny-tcp", "SOCK_STREAM protocol=0", PROBE, "ea-net-tcp"),
        (
            "deny-mptcp",
            "SOCK_STREAM protocol=262",
            PROBE,
            "ea-net-tcp",
        ),
        (
            "deny-udp",
            "SOCK_DGRAM protocol=0",
            "/usr/bin/net-udp",
            "ea-net-udp",
        ),
        (
            "deny-udplite",
            "SOCK_DGRAM protocol=136",
            "/usr/bin/net-udp",
            "ea-net-udp",
        ),
        (
            "deny-sctp",
            "SOCK_STREAM protocol=132",
            "/usr/bin/net-sctp",
            "ea-net-sctp",
        ),
        ("deny-dccp", "SOCK_DCCP protocol=33", PROBE, "ea-net-tcp"),
    ];
    for (name, rest, process, policy) in per_family {
        for (suffix, domain) in both {
            out.push((
                format!("{name}-{suffix}"),
                format!("domain={domain} type={rest}"),
                process,
                policy,
            ));
        }
    }
    let single = [
        (
            "deny-sctp-seq-4",
            "domain=AF_INET type=SOCK_SEQPACKET protocol=0",
            "/usr/bin/net-sctp",
            "ea-net-sctp",
        ),
        (
            "deny-sctp-seq-6",
            "domain=AF_INET6 type=SOCK_SEQPACKET protocol=0",
            "/usr/bin/net-sctp",
            "ea-net-sctp",
        ),
        (
            "deny-ping-4",
            "domain=AF_INET type=SOCK_DGRAM protocol=1",
            "/usr/bin/net-icmp",
            "ea-net-icmp",
        ),
        (
            "deny-ping-6",
            "domain=AF_INET6 type=SOCK_DGRAM protocol=58",
            "/usr/bin/net-icmp",
            "ea-net-icmp",
        ),
        (
            "deny-packet",
            "domain=AF_PACKET type=SOCK_RAW protocol=768",
            "/usr/bin/net-raw",
            "ea-net-raw",
        ),
        (
            "deny-packet-dgram",
            "domain=AF_PACKET type=SOCK_DGRAM protocol=768",
            "/usr/bin/net-raw",
            "ea-net-raw",
        ),
    ];
    for (name, resource, process, policy) in single {
        out.push((name.to_owned(), resource.to_owned(), process, policy));
    }
    out
}

/// (scenario, resource) of sockets the helper itself creates, unblocked.
const PERMITTED: [(&str, &str); 13] = [
    ("allow-udp-4", "domain=AF_INET type=SOCK_DGRAM protocol=0"),
    ("allow-udp-6", "domain=AF_INET6 type=SOCK_DGRAM protocol=0"),
    (
        "allow-udplite-4",
        "domain=AF_INET type=SOCK_DGRAM protocol=136",
    ),
    (
        "allow-udplite-6",
        "domain=AF_INET6 type=SOCK_DGRAM protocol=136",
    ),
    ("allow-ping-4", "domain=AF_INET type=SOCK_DGRAM protocol=1"),
    (
        "allow-ping-6",
        "domain=AF_INET6 type=SOCK_DGRAM protocol=58",
    ),
    ("allow-raw-4", "domain=AF_INET type=SOCK_RAW protocol=255"),
    ("allow-raw-6", "domain=AF_INET6 type=SOCK_RAW protocol=255"),
    (
        "allow-packet",
        "domain=AF_PACKET type=SOCK_RAW protocol=768",
    ),
    ("allow-unix", "domain=AF_UNIX type=SOCK_STREAM protocol=0"),
    (
        "allow-sctp-4",
        "domain=AF_INET type=SOCK_STREAM protocol=132",
    ),
    (
        "allow-sctp-6",
        "domain=AF_INET6 type=SOCK_STREAM protocol=132",
    ),
    (
        "allow-udp-by-sctp",
        "domain=AF_INET type=SOCK_DGRAM protocol=136",
    ),
];

pub fn check(run: &Run) {
    let k = run.kernel();
    let out = outcomes(&run.log);
    let outcome = |name: &str| {
        *out.get(name)
            .unwrap_or_else(|| panic!("{k}: no outcome for {name}\n{}", run.agent_err("network")))
    };
    // Without an agent every bypass attempt works (so a denial below is the agent's),
    // except SCTP and DCCP where their modules are absent: that exact errno, or none.
    for family in ["4", "6"] {
        for base in ["base-tcp", "base-mptcp", "base-udplite", "base-ping"] {
            assert_eq!(
                outcome(&format!("{base}-{family}")),
                (0, 0),
                "{k}: {base}-{family}"
            );
        }
        for (base, absent) in [
            ("base-sctp", EPROTONOSUPPORT),
            ("base-sctp-seq", ESOCKTNOSUPPORT),
            ("base-dccp", ESOCKTNOSUPPORT),
        ] {
            let got = outcome(&format!("{base}-{family}"));
            assert!(
                got == (0, 0) || got == (-1, absent),
                "{k}: {base}-{family} without an agent: {got:?}, want success or errno {absent}"
            );
        }
    }
    let a = alerts(&run.log, "EA-ALERT-network ");
    for (name, resource, process, policy) in denials() {
        assert_eq!(outcome(&name), (-1, EACCES), "{k}: {name} (rc, errno)");
        let found: Vec<&Alert> = about(&a, "Network", &resource)
            .into_iter()
            .filter(|x| field(x, "ProcessName") == process)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{k}: {name}: alerts for {resource} by {process}: {found:?}"
        );
        for (key, want) in [
            ("PolicyName", policy),
            ("Type", "MatchedHostPolicy"),
            ("Data", "lsm=SECURITY_SOCKET_CREATE"),
            ("Action", "Block"),
            ("Result", "Permission denied"),
        ] {
            assert_eq!(field(found[0], key), want, "{k}: {name}: {key}");
        }
    }
    for (name, resource) in PERMITTED {
        let want = match name {
            // What the kernel itself said before the agent ran: the agent permits it.
            "allow-sctp-4" => outcome("base-sctp-4"),
            "allow-sctp-6" => outcome("base-sctp-6"),
            _ => (0, 0),
        };
        assert_eq!(outcome(name), want, "{k}: {name} (rc, errno)");
        let process = if name == "allow-udp-by-sctp" {
            "/usr/bin/net-sctp"
        } else {
            PROBE
        };
        let found: Vec<&Alert> = about(&a, "Network", resource)
            .into_iter()
            .filter(|x| field(x, "ProcessName") == process)
            .collect();
        assert!(
            found.is_empty(),
            "{k}: {name} permitted yet reported: {found:?}"
        );
    }
    for seq in ["allow-sctp-seq-4", "allow-sctp-seq-6"] {
        let base = seq.replace("allow-", "base-");
        assert_eq!(outcome(seq), outcome(&base), "{k}: {seq} (rc, errno)");
    }
    let network = a
        .iter()
        .filter(|x| field(x, "Operation") == "Network")
        .count();
    assert_eq!(
        network,
        denials().len(),
        "{k}: one Network alert per denial"
    );
    assert_eq!(
        outcome("unloaded-tcp-4"),
        (0, 0),
        "{k}: after unload nothing is enforced"
    );
    unwritable_tables_are_fatal(run);
}

/// The agent adopting a pinned RULES map with room for one entry: the kernel refuses
/// the second write (E2BIG), and the agent stops with exit status 2 naming the map,
/// the entry and the errno instead of running monitor-only under `auto`.
fn unwritable_tables_are_fatal(run: &Run) {
    const E2BIG: i64 = 7;
    let k = run.kernel();
    let out = outcomes(&run.log);
    assert_eq!(
        out.get("pin-small-rules"),
        Some(&(0, 0)),
        "{k}: planting the small RULES map"
    );
    let err: Vec<&str> = run.log.lines_with_prefix("EA-TABLES-ERR ").collect();
    let all = err.join("\n");
    assert!(
        run.log
            .lines_with_prefix("EA-TABLES still running")
            .next()
            .is_none(),
        "{k}: the agent kept running on tables it could not write:\n{all}"
    );
    let exit: Vec<&str> = run.log.lines_with_prefix("EA-TABLES-EXIT ").collect();
    assert_eq!(exit, ["2"], "{k}: exit status\n{all}");
    let fatal = err
        .iter()
        .find(|l| l.starts_with("edgearmor: loading the enforcing probes failed: "))
        .unwrap_or_else(|| panic!("{k}: no load failure reported:\n{all}"));
    for want in [
        "writing the rule tables failed: map RULES: writing RuleKey {",
        &format!("Argument list too long (errno {E2BIG})"),
        "does not fall back to monitor-only mode",
    ] {
        assert!(fatal.contains(want), "{k}: {want:?} in {fatal}");
    }
    assert!(
        !err.iter()
            .any(|l| l.contains("edgearmor: ready") || l.contains("falling back")),
        "{k}: a broken load passed for a kernel without BPF-LSM:\n{all}"
    );
    // The failed agent attached nothing that outlives it (its maps' pins are unloaded).
    assert_eq!(
        out.get("after-tables-tcp-4"),
        Some(&(0, 0)),
        "{k}: tcp after the failed load"
    );
}
