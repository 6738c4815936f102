//! `edgearmor policy check` as an operator runs it: one precise line per malformed file,
//! a non-zero exit; the shipped policy set passes.

use std::path::Path;
use std::process::Command;

fn check(paths: &[&Path]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_edgearmor"))
        .args(["policy", "check"])
        .args(paths)
        .output()
        .expect("edgearmor runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn each_malformed_policy_gets_one_precise_error_and_a_failing_exit() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policy/tests/malformed");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("malformed fixtures")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "at least ten malformed fixtures");
    for file in &files {
        let (ok, stdout) = check(&[file]);
        assert!(!ok, "{} must fail", file.display());
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{}: one error, got {lines:?}",
            file.display()
        );
        let name = file.file_name().and_then(|n| n.to_str()).expect("name");
        assert!(
            lines[0].contains(name) && lines[0].contains(".yaml:"),
            "file and line named: {}",
            lines[0]
        );
    }
}

#[test]
fn the_shipped_policy_set_is_clean() {
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let (ok, stdout) = check(&[&policies]);
    assert!(ok, "shipped policies must pass: {stdout}");
}

// ------------------------------------------------------------------ kernel limits

/// A fresh directory for one test's policy files.
fn policy_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ea-policy-check-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn host_policy(name: &str, host: &str, body: &str) -> String {
    format!(
        "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorHostPolicy\nmetadata:\n  name: {name}\nspec:\n  nodeSelector:\n    matchLabels:\n      kubearmor.io/hostname: \"{host}\"\n{body}  action: Block\n"
    )
}

#[test]
fn a_network_rule_the_kernel_cannot_match_is_refused() {
    let dir = policy_dir("long-source");
    // Longer than any path the kernel hashes (MAX_HASHED_PATH_BYTES).
    let long = format!(
        "/{}",
        "s".repeat(edgearmor_probe_abi::MAX_HASHED_PATH_BYTES)
    );
    let body = format!(
        "  network:\n    matchProtocols:\n      - protocol: tcp\n        fromSource:\n          - path: {long}\n"
    );
    std::fs::write(
        dir.join("p.yaml"),
        host_policy("long-source", "gw-7", &body),
    )
    .expect("write");
    let (ok, stdout) = check(&[&dir]);
    assert!(!ok, "{stdout}");
    assert!(
        stdout.contains("fromSource[0].path")
            && stdout.contains(&format!(
                "the kernel's limit is {}",
                edgearmor_probe_abi::MAX_HASHED_PATH_BYTES
            )),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_set_larger_than_half_a_table_is_refused_with_the_limit() {
    let limit = edgearmor_probe_abi::RULES_CAPACITY as usize / 2;
    let dir = policy_dir("many");
    let paths = |n: usize| -> String {
        let mut body = String::from("  file:\n    matchPaths:\n");
        for i in 0..n {
            body.push_str(&format!("      - path: /opt/f{i}\n"));
        }
        body
    };
    // One entry of the set is the file class's undecidable entry (MATCH_UNDECIDABLE).
    std::fs::write(
        dir.join("p.yaml"),
        host_policy("many", "*", &paths(limit - 1)),
    )
    .expect("write");
    let (ok, stdout) = check(&[&dir]);
    assert!(ok, "exactly the limit fits: {stdout}");
    // One more entry, from a policy for one host only: that host's set is over.
    let extra = host_policy(
        "one-more",
        "gw-7",
        &paths(1).replace("/opt/f0", "/opt/extra"),
    );
    std::fs::write(dir.join("q.yaml"), extra).expect("write");
    let (ok, stdout) = check(&[&dir]);
    assert!(!ok, "{stdout}");
    assert_eq!(stdout.trim().lines().count(), 1, "{stdout}");
    assert!(
        stdout.contains("p.yaml: policy many")
            && stdout.contains(&format!("({} needed)", limit + 1))
            && stdout.contains(&format!("RULES_PER_SET = {limit}")),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------------ hostile input

#[path = "../../policy/tests/hostile/mod.rs"]
mod hostile;

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use edgearmor::control::policy_source::PolicySource;
use edgearmor_policy::{DefaultPosture, DefaultPostures};

/// What one `edgearmor policy check` run cost.
struct Measured {
    exit_code: Option<i32>,
    stdout: String,
    wall: Duration,
    /// User + system time of the check.
    cpu: Duration,
    /// An upper bound: Linux folds the peak of the memory the child was spawned
    /// from into it, which is why the measuring happens in a small process.
    peak_rss_kib: i64,
}

/// Set in the small process that measures one run (see [`measure_in_a_small_process`]).
const MEASURE_ENV: &str = "EDGEARMOR_TEST_MEASURE_POLICY_CHECK";
const MEASURED: &str = "EDGEARMOR-MEASURED";

/// Runs `edgearmor policy check PATH` from a fresh, small process (this test binary,
/// running only [`measure_in_a_small_process`]) and returns what that process
/// measured with `wait4`: the kernel's figures for exactly that child. Measuring
/// from this process instead would report at least this test process's own peak
/// RSS, which other tests running in parallel raise.
fn check_measured(path: &Path) -> Measured {
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "measure_in_a_small_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(MEASURE_ENV, path)
        .output()
        .expect("measuring process runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (before, figures) = text
        .split_once(&format!("{MEASURED} "))
        .unwrap_or_else(|| panic!("no measurement in {text}"));
    let stdout = before
        .split_once(&format!("{MEASURED}-STDOUT\n"))
        .map(|(_, s)| s.to_owned())
        .unwrap_or_default();
    let field = |name: &str| -> i64 {
        figures
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {figures}"))
    };
    let exit = field("exit");
    Measured {
        exit_code: (exit >= 0).then(|| i32::try_from(exit).expect("exit code")),
        stdout,
        wall: Duration::from_micros(u64::try_from(field("wall_us")).expect("positive")),
        cpu: Duration::from_micros(u64::try_from(field("cpu_us")).expect("positive")),
        peak_rss_kib: field("rss_kib"),
    }
}

/// Not a test on its own: with [`MEASURE_ENV`] set (by [`check_measured`]) it runs
/// `edgearmor policy check` once and prints what `wait4` reports for it.
#[test]
#[expect(
    clippy::zombie_processes,
    reason = "the child is reaped by wait4, which also reports its resource usage"
)]
fn measure_in_a_small_process() {
    let Some(path) = std::env::var_os(MEASURE_ENV) else {
        return;
    };
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgearmor"))
        .args(["policy", "check"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("edgearmor starts");
    let mut pipe = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        pipe.read_to_string(&mut out).map(|_| out)
    });
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits");
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our unreaped child; both pointers are to live locals.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if rc == pid {
            break;
        }
        let error = std::io::Error::last_os_error();
        assert_eq!(
            error.kind(),
            std::io::ErrorKind::Interrupted,
            "wait4: {error}"
        );
    }
    let wall = started.elapsed();
    let stdout = reader.join().expect("reader").expect("stdout is UTF-8");
    let exit = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    // Linux reports ru_maxrss in KiB.
    println!(
        "{MEASURED}-STDOUT\n{stdout}{MEASURED} exit={exit} wall_us={} cpu_us={} rss_kib={}",
        wall.as_micros(),
        timeval_us(usage.ru_utime) + timeval_us(usage.ru_stime),
        usage.ru_maxrss
    );
}

fn timeval_us(t: libc::timeval) -> i64 {
    t.tv_sec * 1_000_000 + t.tv_usec
}

/// The bounds for refusing a hostile policy file. The time bound is on the
/// CPU time the check spends (user + system, from `wait4`): wall time on a loaded
/// machine measures the machine, not the parser's budget.
const MAX_CPU: Duration = Duration::from_secs(1);
const MAX_RSS_KIB: i64 = 32 * 1024;

#[test]
fn hostile_policies_are_refused_in_under_a_second_and_32_mb() {
    let dir = hostile::scratch("agent-check");
    let mut report = Vec::new();
    for case in hostile::write_all(&dir) {
        let run = check_measured(&case.path);
        let name = case
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_owned();
        report.push(format!(
            "{name}: {:?} CPU ({:?} wall), {} KiB",
            run.cpu, run.wall, run.peak_rss_kib
        ));
        assert_eq!(run.exit_code, Some(1), "{name}: refused, not crashed");
        let lines: Vec<&str> = run.stdout.lines().collect();
        assert_eq!(lines.len(), 1, "{name}: one diagnostic: {lines:?}");
        assert!(
            lines[0].starts_with(&case.path.display().to_string()) && lines[0].contains(case.limit),
            "{name}: names the file and {}: {}",
            case.limit,
            lines[0]
        );
        // `file:LINE: message`, or `file: message` about the whole file (line 0).
        let after_path = &lines[0][case.path.display().to_string().len()..];
        let line: usize = after_path
            .strip_prefix(':')
            .and_then(|rest| rest.split(':').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(
            case.lines.contains(&line),
            "{name}: line {line}: {}",
            lines[0]
        );
        assert!(run.cpu < MAX_CPU, "{name}: {:?} CPU", run.cpu);
        assert!(
            run.peak_rss_kib < MAX_RSS_KIB,
            "{name}: peak RSS {} KiB",
            run.peak_rss_kib
        );
    }
    // Shown with --nocapture: the figures the README quotes.
    println!("{}", report.join("\n"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_policy_source_with_the_bomb_enforces_the_good_policy_next_to_it() {
    let dir = hostile::scratch("agent-source");
    let good = hostile::write_good_policy(&dir);
    let mut source = PolicySource::new(
        vec![dir.clone()],
        "gw-1".into(),
        DefaultPostures::uniform(DefaultPosture::Audit),
    );
    let first = source.load().expect("directory listed");
    assert_eq!(first.compiled.process.rules.len(), 1);

    // The bomb arrives next to it: refused, the good policy still in force.
    let (bomb, _) = hostile::write_alias_bomb(&dir);
    assert!(source.changed());
    let second = source.load().expect("directory listed");
    assert_eq!(second.policy_count, 1);
    assert_eq!(second.compiled.process.rules.len(), 1);
    let bomb_name = bomb.display().to_string();
    assert!(
        second
            .problems
            .iter()
            .any(|p| p.starts_with(&bomb_name) && p.contains("MAX_YAML_NODES")),
        "{:?}",
        second.problems
    );
    assert!(!second.problems.iter().any(|p| p.contains("good.yaml")));

    // The good file itself overwritten with the bomb: what it held stays enforced.
    std::fs::copy(&bomb, &good).expect("overwrite");
    std::fs::remove_file(&bomb).expect("remove bomb");
    assert!(source.changed());
    let third = source.load().expect("directory listed");
    assert_eq!(
        third.compiled.process.rules.len(),
        1,
        "{:?}",
        third.problems
    );
    assert!(
        third.problems.iter().any(|p| p.contains("stay in force")),
        "{:?}",
        third.problems
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two files that are each fine but together need more pattern prefixes on one path
/// than the probes try: `policy check` refuses the set, naming the limit, its value,
/// the rule, its policy and file.
#[test]
fn a_set_past_a_kernel_limit_is_refused_with_the_limit_named() {
    let dir = std::env::temp_dir().join(format!("ea-policy-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let policy = |name: &str, dirs: &[String]| {
        let mut y = format!(
            "apiVersion: security.kubearmor.com/v1\nkind: KubeArmorHostPolicy\nmetadata:\n  name: {name}\nspec:\n  nodeSelector:\n    matchLabels:\n      kubearmor.io/hostname: \"*\"\n  process:\n    matchPatterns:\n"
        );
        for d in dirs {
            y.push_str(&format!("      - pattern: {d}*.bak\n"));
        }
        y.push_str("  action: Block\n");
        y
    };
    let mut dirs = vec!["/".to_owned()];
    for i in 1..=edgearmor_probe_abi::MAX_PATTERN_PREFIXES {
        dirs.push(format!("{}d{i}/", dirs[i - 1]));
    }
    let (upper, lower) = dirs.split_at(4);
    std::fs::write(dir.join("upper.yaml"), policy("upper", upper)).expect("written");
    let (ok, _) = check(&[&dir]);
    assert!(ok, "four prefixes are fine");
    std::fs::write(dir.join("lower.yaml"), policy("lower", lower)).expect("written");
    let (ok, stdout) = check(&[&dir]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!ok, "nine nested pattern prefixes are refused: {stdout}");
    let deepest = format!("{}*.bak", dirs[dirs.len() - 1]);
    assert!(
        stdout.contains("MAX_PATTERN_PREFIXES = 8")
            && stdout.contains("policy lower")
            && stdout.contains("lower.yaml")
            && stdout.contains(&deepest),
        "{stdout}"
    );
}
