//! Every command's synopsis and help, in one table: `edgearmor --help` lists them,
//! `edgearmor help COMMAND` and `edgearmor COMMAND --help` print one.

/// `(name, synopsis, summary, help)`; `name` is the first word typed.
pub const COMMANDS: &[(&str, &str, &str, &str)] = &[
    (
        "run",
        "run [OPTIONS] [--deny-setgid PATH]... [--deny-setuid PATH]...",
        "enforce the policies; alerts go to stdout and/or MQTT",
        "enforce the policies; alerts go to stdout and/or MQTT. Under systemd (Type=notify) it
says READY=1 once the probes are attached, keeps a STATUS= line, feeds WatchdogSec= from
its event loop and says RELOADING=1 around SIGHUP reloads.

options (override agent.toml; the README lists every key):
  --config FILE           configuration (default /etc/edgearmor/agent.toml, optional)
  --rules FILE            TOML rules file ([[setid]] tables), repeatable
  --policies PATH         KubeArmorHostPolicy file or directory, repeatable; re-read
                          on SIGHUP and when a file changes (policy_poll_ms)
  --deny-setgid PATH      deny that executable changing its gid (repeatable)
  --deny-setuid PATH      deny that executable changing its uid (repeatable)
  --cluster NAME          ClusterName / topic level (default: default)
  --host-name NAME        HostName / topic level (default: uname -n)
  --no-stdout             no JSON lines on stdout
  --broker HOST:PORT      publish to this MQTT broker
  --ca FILE               TLS: verify the broker against this CA (PEM)
  --client-cert FILE --client-key FILE    mutual TLS
  --username NAME --password-file FILE    MQTT credentials
  --mqtt-version 3.1.1|5|auto             MQTT protocol (default auto: 5, falling back
                          to 3.1.1 when the broker refuses 5)
  --spool-dir DIR         persist unacknowledged batches here
  --buffer-bytes N        offline buffer size in memory
  --max-alerts-per-sec N  throttle (0 = off; default 10)
  --throttle-sec N        throttle interval (default 30)
  --shutdown-grace-secs N on stop, keep delivering buffered batches this long (default 5)
  --enforcement auto|required
                          where BPF-LSM cannot run: watch execs monitor-only (auto, the
                          default) or refuse to start (required, exit status 2)

exit status: 0 after SIGTERM/SIGINT; 1 usage, configuration or policy error; 2 this
kernel cannot enforce (enforcement = \"required\", or not even monitor-only works)",
    ),
    (
        "send-test-alerts",
        "send-test-alerts [OPTIONS] [--count N] [--interval-ms MS]",
        "push N synthetic audit alerts through the outputs; no kernel needed",
        "push N synthetic alerts (PolicyName edgearmor-test-alert, Action Audit) through the
pipeline and outputs `run` uses, deliver them, exit; no kernel needed. Takes the options
of `run` (the broker's among them), and:
  --count N               how many (default 10)
  --interval-ms MS        pause between two (default 10)

exit status: 0 delivered (or stopped by SIGTERM/SIGINT); 1 usage or configuration error",
    ),
    (
        "status",
        "status [--config FILE] [--json]",
        "what is enforced now (pins and the running agent), broker, counters",
        "what this gateway enforces right now: from the pins in pin_dir (works when no agent
runs) and from the running agent's status file ([status] file): mode, classes, policy
set and generation, pinned or not, locked or not (the pinned LOCK_STATE; agent.toml's
locked when it differs), the broker's state, the counters (alerts, losses by cause,
ring buffer). Human-readable; --json for tools.
  --config FILE           configuration (default /etc/edgearmor/agent.toml, optional)
  --json                  one JSON object instead of text

exit status: 0 something is enforced (an agent runs or enforcement is pinned); 1 usage
or configuration error; 3 nothing is enforced (no agent runs, nothing is pinned)",
    ),
    (
        "check",
        "check [--kernel-config FILE]",
        "can this kernel enforce? one line per requirement with its fix",
        "can this kernel enforce? One line per requirement with its fix; loads and attaches
the probes for real. With --kernel-config, checks a kernel .config instead.

exit status: 0 it can; 1 usage error or unreadable file; 2 it cannot",
    ),
    (
        "policy",
        "policy check [--host[=NAME]] [--label KEY=VALUE]... [--config FILE] FILE_OR_DIR...",
        "validate KubeArmorHostPolicy YAML offline",
        "validate KubeArmorHostPolicy YAML offline: one line per problem
(file:line: yaml.path: message). With --host, also what run would warn about on this
host (its node and labels from /etc/edgearmor/agent.toml if present; rules naming a
multi-call binary such as busybox, rules it would skip); with --host=NAME, --label or
--config (its node and [labels]), which policies select that node (host name: NAME,
else the config's node, else uname -n; --label adds to the config's labels).

exit status: 0 no problem; 1 a problem in a policy, or a usage error",
    ),
    (
        "unload",
        "unload [--config FILE] [--token FILE]",
        "detach the pinned programs and remove the pinned maps",
        "detach the pinned programs and remove the pinned maps (stop the agent first); `run`
pins them so enforcement survives agent restarts. In locked mode only with --token (an
unlock token for this node, from `unlock-token create`): else refused and reported as a
tamper alert.
  --config FILE           its pin_dir (default /etc/edgearmor/agent.toml, optional)
  --token FILE            an unlock token (locked mode)

exit status: 0 nothing is enforced any more; 1 usage error or a pin that would not go;
  3 locked mode refused (no token, or one that is expired, used, for another node or
  badly signed)",
    ),
    (
        "unlock-token",
        "unlock-token create --key KEY --node NODE --expires-in DURATION --out FILE",
        "sign an unlock token for `unload` on one locked gateway",
        "create: sign an unlock token for `unload` on one node (its node name, as in its
agent.toml or its host name) with a fleet key, valid for DURATION (30m, 2h; at most 24h)
and once; keep it secret until used. Refused on a locked gateway.

exit status: 0 written; 1 usage or I/O error, or refused",
    ),
    (
        "keygen",
        "keygen --out PREFIX",
        "an Ed25519 key pair for signing policy bundles",
        "an Ed25519 key pair for signing policy bundles: PREFIX.key (secret) and PREFIX.pub.

exit status: 0 written; 1 usage or I/O error",
    ),
    (
        "bundle",
        "bundle create --key KEY --version N [--scope fleet|node] [--targets A,B] --out FILE POLICY...
       edgearmor bundle verify --public-key FILE [--max-bytes N] BUNDLE",
        "sign policy files into a bundle, or verify one",
        "create: sign policy files into a bundle (each must pass policy check); targets: node
names, cluster/node, `*` or a prefix like `gw-*`, or node labels `key=value[,key=value]`
(all must match); scope (signed): fleet (default) for <cluster>/policy, node for
<cluster>/<node>/policy (needs --targets naming the nodes).
verify: check a bundle's signature and list what it holds.

exit status: 0 done; 1 usage error, a policy problem, a bad signature or I/O error",
    ),
    (
        "version",
        "version",
        "agent version and the SHA-256 of the embedded BPF object",
        "the agent's version and the SHA-256 of the embedded BPF object (also --version, -V).

exit status: 0",
    ),
    (
        "help",
        "help [COMMAND]",
        "this list, or one command's help",
        "this list, or one command's help (as `edgearmor COMMAND --help`).

exit status: 0; 1 for an unknown COMMAND",
    ),
];

/// The exit statuses every command shares (each command's help adds its own meaning).
const EXIT_CODES: &str = "exit status: 0 success; 1 usage, configuration, input or I/O error;
  2 this kernel cannot enforce (run, check); 3 nothing is enforced (status), or locked
  mode refused (unload)";

/// `name` as the table spells it, if it is a command.
pub fn known_command(name: &str) -> Option<&'static str> {
    COMMANDS.iter().find(|c| c.0 == name).map(|c| c.0)
}

/// `edgearmor --help`: every synopsis with its first line.
pub fn usage() -> String {
    let mut out = String::from("usage:");
    for (i, (_, synopsis, _, _)) in COMMANDS.iter().enumerate() {
        let lead = if i == 0 { " " } else { "       " };
        out.push_str(&format!("{lead}edgearmor {synopsis}\n"));
    }
    out.push('\n');
    for (name, _, summary, _) in COMMANDS {
        out.push_str(&format!("  {name:<17} {summary}\n"));
    }
    out.push_str(&format!(
        "\n`edgearmor help COMMAND` or `edgearmor COMMAND --help` for one command.\n{EXIT_CODES}"
    ));
    out
}

/// `edgearmor help COMMAND`.
pub fn command_help(name: &str) -> Option<String> {
    let (_, synopsis, _, help) = COMMANDS.iter().find(|c| c.0 == name)?;
    Some(format!("usage: edgearmor {synopsis}\n\n{help}"))
}
