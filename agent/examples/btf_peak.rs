//! Peak memory (VmHWM) of the agent's start-up reads of the running kernel's BTF,
//! each in a fresh process, without loading anything (no BPF needed):
//! `cargo run --release -p edgearmor --example btf_peak`.
//!
//! Modes (first argument; without one, all of them as child processes):
//! - `ours`: edgearmor's own reader ([`KernelBtf::parse`]: the probes' offsets and
//!   the `bpf_lsm_*` functions), the blob dropped after it;
//! - `aya`: one full parse by aya (`Btf::from_sys_fs`), as attaching needs;
//! - `start`: the start-up's order: ours, then aya's loader (`EbpfLoader::new`, which
//!   parses the BTF itself) dropped before the parse attaching uses;
//! - `start-before`: the order before issue #21: our reader's result and the loader's
//!   parse still held while the second aya parse is made.

use std::process::Command;

use aya::{Btf, EbpfLoader};
use edgearmor::kernel::btf::KernelBtf;

fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn ours() -> KernelBtf {
    let blob = std::fs::read(edgearmor::host::KERNEL_BTF).expect("kernel BTF readable");
    let btf = KernelBtf::parse(&blob).expect("parses");
    assert!(btf.kernel_offsets().is_ok() && btf.has_func("bpf_lsm_task_fix_setgid"));
    btf
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let before = status_kb("VmHWM:");
    match mode.as_str() {
        "ours" => drop(ours()),
        "aya" => drop(Btf::from_sys_fs().expect("aya parses")),
        "start" => {
            let btf = ours();
            let loader = EbpfLoader::new();
            drop(loader);
            let attach = Btf::from_sys_fs().expect("aya parses");
            drop((btf, attach));
        }
        "start-before" => {
            let btf = ours();
            let loader = EbpfLoader::new();
            let attach = Btf::from_sys_fs().expect("aya parses");
            drop((btf, loader, attach));
        }
        _ => {
            let me = std::env::current_exe().expect("own path");
            println!("mode           VmHWM before -> after (kB)");
            for m in ["ours", "aya", "start", "start-before"] {
                let out = Command::new(&me).arg(m).output().expect("runs");
                print!("{}", String::from_utf8_lossy(&out.stdout));
            }
            return;
        }
    }
    println!("{mode:<14} {before:>6} -> {:>6}", status_kb("VmHWM:"));
}
