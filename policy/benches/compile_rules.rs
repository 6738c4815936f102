//! Benchmark: check and compile a 1,000-rule policy set (issue 3's target: under
//! 100 ms) and measure the memory the compiled form keeps per rule.
//!
//! `cargo bench -p edgearmor-policy` prints the figures; it asserts nothing.
//! Memory is measured with a counting global allocator: the bytes still held
//! after compilation, divided by the number of rules.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use edgearmor_policy::{DefaultPosture, DefaultPostures, compile, parse_policy_text};

/// Counts live heap bytes.
struct CountingAllocator;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Policies per file: 1,000 rules, 70 KiB, well within the per-file parse budget
/// (`MAX_YAML_NODES`); a larger set is several files, as a policy directory holds it.
const POLICIES_PER_FILE: usize = 10;

/// A realistic mix: policies `range` of 100 rules each, every class used, a third
/// of the rules limited by `fromSource`, metadata at every level.
fn policy_set_yaml(range: std::ops::Range<usize>) -> String {
    let mut yaml = String::new();
    for p in range {
        yaml.push_str(&format!(
            "---\napiVersion: security.kubearmor.com/v1\nkind: KubeArmorHostPolicy\n\
             metadata:\n  name: bench-policy-{p}\nspec:\n  nodeSelector:\n    matchLabels:\n\
             \x20     kubearmor.io/hostname: \"*\"\n  severity: {sev}\n  tags: [NIST, NIST_800-53_CM-7, MITRE]\n\
             \x20 message: \"bench policy {p}\"\n  action: Block\n",
            sev = p % 10 + 1
        ));
        // 40 process rules: 25 paths, 10 directories, 5 patterns.
        yaml.push_str("  process:\n    severity: 7\n    matchPaths:\n");
        for r in 0..25 {
            yaml.push_str(&format!("      - path: /usr/bin/tool-{p}-{r}\n"));
            if r % 3 == 0 {
                yaml.push_str("        fromSource:\n          - path: /usr/bin/bash\n");
            }
            if r % 5 == 0 {
                yaml.push_str(&format!(
                    "        action: Audit\n        message: \"rule {r}\"\n        tags: [RULE]\n"
                ));
            }
        }
        yaml.push_str("    matchDirectories:\n");
        for r in 0..10 {
            yaml.push_str(&format!(
                "      - dir: /opt/app-{p}-{r}/\n        recursive: {}\n",
                r % 2 == 0
            ));
        }
        yaml.push_str("    matchPatterns:\n");
        for r in 0..5 {
            yaml.push_str(&format!("      - pattern: /usr/local/bin/x{p}-{r}-*\n"));
        }
        // 40 file rules.
        yaml.push_str("  file:\n    matchPaths:\n");
        for r in 0..30 {
            yaml.push_str(&format!(
                "      - path: /etc/app-{p}/conf-{r}\n        readOnly: true\n"
            ));
            if r % 3 == 0 {
                yaml.push_str("        fromSource:\n          - path: /usr/sbin/app\n");
            }
        }
        yaml.push_str("    matchDirectories:\n");
        for r in 0..10 {
            yaml.push_str(&format!(
                "      - dir: /var/lib/app-{p}-{r}/\n        recursive: true\n"
            ));
        }
        // 10 network, 8 capabilities, 2 x setid (one rule naming 1 syscall each).
        yaml.push_str("  network:\n    matchProtocols:\n");
        for r in 0..10 {
            let protocol = ["tcp", "udp", "icmp", "raw"][r % 4];
            yaml.push_str(&format!(
                "      - protocol: {protocol}\n        fromSource:\n          - path: /usr/bin/net-{p}-{r}\n"
            ));
        }
        yaml.push_str("  capabilities:\n    matchCapabilities:\n");
        for r in 0..8 {
            let capability = ["net_raw", "sys_admin", "setuid", "setgid"][r % 4];
            yaml.push_str(&format!(
                "      - capability: {capability}\n        fromSource:\n          - path: /usr/bin/cap-{p}-{r}\n"
            ));
        }
        yaml.push_str("  syscalls:\n    matchSyscalls:\n");
        for r in 0..2 {
            let syscall = ["setuid", "setgid"][r];
            yaml.push_str(&format!(
                "      - syscall: [{syscall}]\n        fromSource:\n          - path: /usr/sbin/daemon-{p}\n"
            ));
        }
    }
    yaml
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn measure(rules_wanted: usize) {
    let policies = rules_wanted / 100;
    let files: Vec<String> = (0..policies)
        .step_by(POLICIES_PER_FILE)
        .map(|first| policy_set_yaml(first..(first + POLICIES_PER_FILE).min(policies)))
        .collect();
    let yaml_bytes: usize = files.iter().map(String::len).sum();
    let file = Path::new("bench.yaml");
    let parse_all = |files: &[String]| {
        let mut all = Vec::new();
        for yaml in files {
            all.extend(parse_policy_text(file, black_box(yaml))?);
        }
        Ok::<_, Vec<edgearmor_policy::Diagnostic>>(all)
    };
    let postures = DefaultPostures::uniform(DefaultPosture::Audit);

    let iterations = if rules_wanted > 2_000 { 5 } else { 21 };
    let mut check_times = Vec::new();
    let mut compile_times = Vec::new();
    let mut total_times = Vec::new();
    let mut rule_count = 0;
    for _ in 0..iterations {
        let start = Instant::now();
        let parsed = match parse_all(&files) {
            Ok(parsed) => parsed,
            Err(diagnostics) => {
                for d in diagnostics.iter().take(5) {
                    eprintln!("{d}");
                }
                panic!("benchmark policy set is invalid");
            }
        };
        let checked = Instant::now();
        let set = compile(black_box(&parsed), postures);
        let done = Instant::now();
        rule_count = set.rule_count();
        black_box(&set);
        check_times.push(checked - start);
        compile_times.push(done - checked);
        total_times.push(done - start);
    }

    // Memory the compiled form keeps: live bytes with the set, minus without it.
    let parsed = parse_all(&files).unwrap_or_default();
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let set = compile(&parsed, postures);
    let after = LIVE_BYTES.load(Ordering::Relaxed);
    let set_heap = after.saturating_sub(before);
    let set_total = set_heap + std::mem::size_of_val(&set);
    drop(set);
    let before_model = LIVE_BYTES.load(Ordering::Relaxed);
    drop(parsed);
    let model_heap = before_model.saturating_sub(LIVE_BYTES.load(Ordering::Relaxed));

    println!(
        "{rule_count} rules ({} policies, {} KiB of YAML in {} file(s)), median of {iterations} runs:",
        policies,
        yaml_bytes / 1024,
        files.len()
    );
    println!(
        "  check (YAML -> validated policies) {:>8.2} ms",
        median(check_times).as_secs_f64() * 1e3
    );
    println!(
        "  compile (policies -> rule tables)  {:>8.2} ms",
        median(compile_times).as_secs_f64() * 1e3
    );
    println!(
        "  total                              {:>8.2} ms{}",
        median(total_times).as_secs_f64() * 1e3,
        if rules_wanted == 1_000 {
            "   (target: < 100 ms)"
        } else {
            ""
        }
    );
    println!(
        "  compiled set: {} bytes = {:.0} bytes/rule (validated model: {:.0} bytes/rule)",
        set_total,
        set_total as f64 / rule_count as f64,
        model_heap as f64 / rule_count as f64
    );
}

fn main() {
    // `cargo test --benches` runs bench targets with `--bench`-less args; keep it quick.
    let quick = std::env::args().all(|a| a != "--bench");
    if quick {
        measure(1_000);
        return;
    }
    measure(1_000);
    measure(10_000);
}
