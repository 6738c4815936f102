//! `ea-bench`: the guest side of `edgearmor-vm-bench`. Static, so it runs in the busybox
//! guest. Every command prints machine-readable `EA-*` lines on stdout:
//!
//! - `ea-bench noop`: exit 0 at once (the program the exec benchmark runs).
//! - `ea-bench ops PHASE ROUND EXECS OPS [FILE]`: times, one call at a time, `EXECS` rounds
//!   of fork + execve(`ea-bench noop`) + waitpid, and `OPS` rounds each of
//!   open + read + close of FILE (default `/tmp/bench/small`, created if missing),
//!   `setgid(getgid())`, `socket(AF_INET, SOCK_DGRAM)` + close, and in FILE's directory
//!   a 64-byte `pwrite` on an open descriptor, a rename, a chmod and a mkdir + rmdir;
//!   after a tenth as many unmeasured warm-up rounds, prints per operation
//!   `EA-BENCH phase=PHASE round=ROUND op=exec|open|setgid|socket|write|rename|chmod|mkdir
//!   median_ns= p90_ns= min_ns= mean_ns= n=`.
//!   Times come from `Instant`, which is `clock_gettime(CLOCK_MONOTONIC)` on Linux.
//!   `setgid` to the current gid is not a no-op for the kernel: `__sys_setgid` has no
//!   early return, so it always runs the `capable` (as root) and `task_fix_setgid` LSM
//!   hooks (unlike `setres*id`, which returns early when nothing changes).
//! - `ea-bench proc LABEL PID`: `EA-PROC label= pid= vmrss_kb= vmhwm_kb= rss_anon_kb=
//!   rss_file_kb= threads= utime_ticks= stime_ticks= clk_tck=` from `/proc/PID/status`
//!   and `/proc/PID/stat`.
//! - `ea-bench bpf LABEL PID`: one `EA-BPF-MAP label=LABEL` line per BPF map PID holds a descriptor of
//!   (map_id, name, map_type, key/value sizes, max_entries, memlock bytes), one
//!   `EA-BPF-PROG` per program (prog_id, name, prog_type, memlock, and run_cnt/run_time_ns when
//!   `kernel.bpf_stats_enabled` is on), then `EA-BPF-TOTAL label=LABEL maps= map_memlock=
//!   progs= prog_memlock=`, all from `/proc/PID/fdinfo`. A map or program held through
//!   several descriptors is counted once.
//! - `ea-bench attached LABEL`: `EA-ATTACHED label= programs= names=`, edgearmor's
//!   programs loaded in the kernel (by name, over every program id).
//! - `ea-bench stream PID RATE SECONDS FILE`: opens, reads and closes FILE `RATE` times
//!   a second for `SECONDS` seconds (each open due at `start + i / RATE`; a late one
//!   is not skipped), sampling PID's VmRSS every 100 ms, and prints
//!   `EA-STREAM opens= errors= elapsed_ms= max_late_us= agent_cpu_ticks= agent_cpu_ms=
//!   agent_cpu_pct= agent_rss_start_kb= agent_rss_max_kb= agent_rss_end_kb=
//!   agent_hwm_kb= clk_tck=`.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Read;
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["noop"] => Ok(()),
        ["ops", phase, round, execs, ops, rest @ ..] if rest.len() <= 1 => {
            let file = rest.first().copied().unwrap_or("/tmp/bench/small");
            match (round.parse::<u32>(), execs.parse(), ops.parse()) {
                (Ok(round), Ok(execs), Ok(ops)) => {
                    run_ops(&format!("phase={phase} round={round}"), execs, ops, file)
                }
                _ => Err("ROUND, EXECS and OPS are counts".to_owned()),
            }
        }
        ["proc", label, pid] => parse_pid(pid).and_then(|pid| {
            let p = ProcSample::read(pid)?;
            println!(
                "EA-PROC label={label} pid={pid} vmrss_kb={} vmhwm_kb={} rss_anon_kb={} rss_file_kb={} threads={} utime_ticks={} stime_ticks={} clk_tck={}",
                p.vmrss_kb,
                p.vmhwm_kb,
                p.rss_anon_kb,
                p.rss_file_kb,
                p.threads,
                p.utime,
                p.stime,
                clk_tck()
            );
            Ok(())
        }),
        ["bpf", label, pid] => parse_pid(pid).and_then(|pid| bpf_objects(label, pid)),
        ["attached", label] => attached(label),
        ["stream", pid, rate, seconds, file] => {
            match (parse_pid(pid), rate.parse::<u32>(), seconds.parse::<u32>()) {
                (Ok(pid), Ok(rate), Ok(seconds)) if rate > 0 => stream(pid, rate, seconds, file),
                _ => Err("stream PID RATE SECONDS FILE: numbers, RATE > 0".to_owned()),
            }
        }
        _ => Err(
            "usage: ea-bench noop | ops PHASE ROUND EXECS OPS [FILE] | proc LABEL PID | bpf LABEL PID | attached LABEL | stream PID RATE SECONDS FILE"
                .to_owned(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ea-bench: {e}");
            println!("EA-BENCH-ERROR {e}");
            ExitCode::from(1)
        }
    }
}

fn parse_pid(pid: &str) -> Result<u32, String> {
    pid.parse().map_err(|_| format!("bad pid {pid:?}"))
}

fn last_os_error(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// Times `n` calls of `op` (after `n / 10` unmeasured ones) and prints their figures.
fn time_op(
    label: &str,
    name: &str,
    n: usize,
    mut op: impl FnMut() -> Result<(), String>,
) -> Result<(), String> {
    for _ in 0..n / 10 {
        op()?;
    }
    let mut ns = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        op()?;
        ns.push(start.elapsed().as_nanos() as u64);
    }
    ns.sort_unstable();
    let at = |q: usize| ns[(ns.len() * q / 100).min(ns.len() - 1)];
    let mean = ns.iter().sum::<u64>() / ns.len() as u64;
    println!(
        "EA-BENCH {label} op={name} median_ns={} p90_ns={} min_ns={} mean_ns={mean} n={}",
        at(50),
        at(90),
        ns[0],
        ns.len()
    );
    Ok(())
}

/// `label`: the `phase=.. round=..` words of the output lines.
fn run_ops(label: &str, execs: usize, ops: usize, file: &str) -> Result<(), String> {
    if execs == 0 || ops == 0 {
        return Err("EXECS and OPS must be at least 1".to_owned());
    }
    if std::fs::metadata(file).is_err() {
        if let Some(dir) = std::path::Path::new(file).parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        std::fs::write(file, b"a small file the open benchmark reads\n")
            .map_err(|e| format!("{file}: {e}"))?;
    }
    let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    let exe = CString::new(exe.as_os_str().as_encoded_bytes())
        .map_err(|_| "own path has a NUL byte".to_owned())?;
    let file_c = CString::new(file).map_err(|_| "FILE has a NUL byte".to_owned())?;

    time_op(label, "exec", execs, || exec_noop(&exe))?;
    time_op(label, "open", ops, || open_read_close(&file_c))?;
    // SAFETY: getgid cannot fail and touches no memory.
    let gid = unsafe { libc::getgid() };
    time_op(label, "setgid", ops, || {
        // SAFETY: plain syscall on an integer argument.
        if unsafe { libc::setgid(gid) } == 0 {
            Ok(())
        } else {
            Err(last_os_error("setgid"))
        }
    })?;
    time_op(label, "socket", ops, || {
        // SAFETY: plain syscall; the descriptor is closed right away.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
        if fd < 0 {
            return Err(last_os_error("socket"));
        }
        // SAFETY: closes the descriptor we own.
        unsafe { libc::close(fd) };
        Ok(())
    })?;
    run_path_ops(label, ops, file)
}

/// The file hooks besides `file_open`: a write through an open descriptor
/// (`file_permission`), a rename (`path_rename`), a chmod (`path_chmod`) and a mkdir +
/// rmdir pair (`path_mkdir`, `path_rmdir`), all in FILE's directory.
fn run_path_ops(label: &str, ops: usize, file: &str) -> Result<(), String> {
    let dir = std::path::Path::new(file)
        .parent()
        .ok_or_else(|| format!("{file} has no directory"))?;
    let c = |name: &str| {
        CString::new(dir.join(name).as_os_str().as_encoded_bytes())
            .map_err(|_| format!("{name}: NUL in the path"))
    };
    let (written, renamed_a, renamed_b, made) = (c("written")?, c("ra")?, c("rb")?, c("made")?);
    let flags = libc::O_RDWR | libc::O_CREAT | libc::O_CLOEXEC;
    // SAFETY: a valid C path; the descriptor is closed at the end of this function.
    let fd = unsafe { libc::open(written.as_ptr(), flags, 0o644) };
    if fd < 0 {
        return Err(last_os_error("open for write"));
    }
    let block = [b'w'; 64];
    let result = time_op(label, "write", ops, || {
        // SAFETY: writes block.len() bytes from a buffer we own to our descriptor.
        let n = unsafe { libc::pwrite(fd, block.as_ptr().cast(), block.len(), 0) };
        if n < 0 {
            Err(last_os_error("pwrite"))
        } else {
            Ok(())
        }
    });
    // SAFETY: closes the descriptor opened above.
    unsafe { libc::close(fd) };
    result?;
    std::fs::write(dir.join("ra"), b"renamed back and forth\n")
        .map_err(|e| format!("{}: {e}", dir.join("ra").display()))?;
    let mut flip = false;
    time_op(label, "rename", ops, || {
        let (from, to) = if flip {
            (&renamed_b, &renamed_a)
        } else {
            (&renamed_a, &renamed_b)
        };
        flip = !flip;
        // SAFETY: two valid C paths.
        if unsafe { libc::rename(from.as_ptr(), to.as_ptr()) } == 0 {
            Ok(())
        } else {
            Err(last_os_error("rename"))
        }
    })?;
    let mut mode = 0o644;
    time_op(label, "chmod", ops, || {
        mode ^= 0o040;
        // SAFETY: a valid C path and a mode.
        if unsafe { libc::chmod(written.as_ptr(), mode) } == 0 {
            Ok(())
        } else {
            Err(last_os_error("chmod"))
        }
    })?;
    time_op(label, "mkdir", ops, || {
        // SAFETY: a valid C path and a mode; removed right away.
        if unsafe { libc::mkdir(made.as_ptr(), 0o755) } != 0 {
            return Err(last_os_error("mkdir"));
        }
        // SAFETY: the directory just made.
        if unsafe { libc::rmdir(made.as_ptr()) } != 0 {
            return Err(last_os_error("rmdir"));
        }
        Ok(())
    })
}

/// `EA-ATTACHED label= programs= names=`: how many of edgearmor's programs are loaded
/// anywhere in the kernel (walking every program id), so a baseline phase can prove
/// it runs without them.
fn attached(label: &str) -> Result<(), String> {
    const BPF_PROG_GET_NEXT_ID: libc::c_long = 11;
    let ours: Vec<&str> = edgearmor_probe_abi::programs::LSM
        .iter()
        .chain(edgearmor_probe_abi::programs::IDENTITY.iter())
        .chain(edgearmor_probe_abi::exec_identity::PROGRAMS.iter())
        .map(|(program, _)| *program)
        .collect();
    let mut found = Vec::new();
    let mut id = 0u32;
    loop {
        // `union bpf_attr` for *_GET_NEXT_ID: u32 start_id, u32 next_id.
        let mut attr = [0u64; 16];
        attr[0] = u64::from(id);
        // SAFETY: attr is a buffer larger than the attribute; the kernel writes next_id
        // into it.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_GET_NEXT_ID,
                attr.as_mut_ptr(),
                std::mem::size_of_val(&attr),
            )
        };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOENT) {
                break;
            }
            return Err(format!("BPF_PROG_GET_NEXT_ID after {id}: {e}"));
        }
        id = (attr[0] >> 32) as u32;
        let name = bpf_object_name(true, u64::from(id));
        // The kernel keeps 15 bytes of a program's name.
        if ours
            .iter()
            .any(|p| p.as_bytes()[..p.len().min(15)] == *name.as_bytes())
        {
            found.push(name);
        }
    }
    println!(
        "EA-ATTACHED label={label} programs={} names={}",
        found.len(),
        found.join(",")
    );
    Ok(())
}

/// fork, execve(`exe noop`), waitpid; an error unless the child ran and exited 0.
fn exec_noop(exe: &CString) -> Result<(), String> {
    let noop = c"noop";
    let argv = [exe.as_ptr(), noop.as_ptr(), std::ptr::null()];
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: the child only calls execve and _exit (async-signal-safe); argv and envp
    // are NULL-terminated arrays of valid C strings prepared before the fork.
    match unsafe { libc::fork() } {
        -1 => Err(last_os_error("fork")),
        0 => {
            // SAFETY: see above; _exit never returns.
            unsafe {
                libc::execve(exe.as_ptr(), argv.as_ptr(), envp.as_ptr());
                libc::_exit(127);
            }
        }
        child => {
            let mut status = 0;
            // SAFETY: waits for the child we just created; status is a valid out pointer.
            if unsafe { libc::waitpid(child, &mut status, 0) } != child {
                return Err(last_os_error("waitpid"));
            }
            if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
                Ok(())
            } else {
                Err(format!("exec of noop ended with status {status:#x}"))
            }
        }
    }
}

fn open_read_close(path: &CString) -> Result<(), String> {
    // SAFETY: path is a valid C string; the descriptor is closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(last_os_error("open"));
    }
    let mut buf = [0u8; 256];
    // SAFETY: reads at most buf.len() bytes into buf, which we own.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    // SAFETY: closes the descriptor we own.
    unsafe { libc::close(fd) };
    if n < 0 {
        return Err(last_os_error("read"));
    }
    Ok(())
}

fn clk_tck() -> libc::c_long {
    // SAFETY: sysconf only reads a constant of the C library.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }
}

/// A process's memory and CPU time.
struct ProcSample {
    vmrss_kb: u64,
    vmhwm_kb: u64,
    rss_anon_kb: u64,
    rss_file_kb: u64,
    threads: u64,
    utime: u64,
    stime: u64,
}

impl ProcSample {
    fn read(pid: u32) -> Result<Self, String> {
        let status_path = format!("/proc/{pid}/status");
        let status =
            std::fs::read_to_string(&status_path).map_err(|e| format!("{status_path}: {e}"))?;
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let stat_path = format!("/proc/{pid}/stat");
        let stat = std::fs::read_to_string(&stat_path).map_err(|e| format!("{stat_path}: {e}"))?;
        // Fields after the command name, which may contain spaces: state is field 3,
        // utime and stime fields 14 and 15.
        let after = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .ok_or_else(|| format!("{stat_path}: no command name"))?;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let tick = |i: usize| -> Result<u64, String> {
            fields
                .get(i)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{stat_path}: field {} unreadable", i + 3))
        };
        Ok(Self {
            vmrss_kb: field("VmRSS:"),
            vmhwm_kb: field("VmHWM:"),
            rss_anon_kb: field("RssAnon:"),
            rss_file_kb: field("RssFile:"),
            threads: field("Threads:"),
            utime: tick(11)?,
            stime: tick(12)?,
        })
    }
}

/// `key: value` lines of every fdinfo entry of `pid` that has `marker`, one map per
/// object id (`id_key`).
fn fdinfo_objects(
    pid: u32,
    marker: &str,
    id_key: &str,
) -> Result<BTreeMap<u64, BTreeMap<String, String>>, String> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut objects = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| format!("{dir}: {e}"))? {
        let Ok(entry) = entry else { continue };
        let mut text = String::new();
        // A descriptor may close while we read: skip it.
        let Ok(mut f) = std::fs::File::open(entry.path()) else {
            continue;
        };
        if f.read_to_string(&mut text).is_err() || !text.contains(marker) {
            continue;
        }
        let fields: BTreeMap<String, String> = text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let id = fields.get(id_key).and_then(|v| v.parse().ok()).unwrap_or(0);
        objects.insert(id, fields);
    }
    Ok(objects)
}

/// The name the loader gave a BPF map or program, by id (needs CAP_SYS_ADMIN; `-` when
/// it cannot be read). `prog`: a program, else a map.
fn bpf_object_name(prog: bool, id: u64) -> String {
    const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
    const BPF_MAP_GET_FD_BY_ID: libc::c_long = 14;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    // `struct bpf_prog_info` has `name[16]` at byte 64, `struct bpf_map_info` at 24.
    let name_at = if prog { 64 } else { 24 };
    let Ok(id) = u32::try_from(id) else {
        return "-".into();
    };
    // `union bpf_attr` for *_GET_FD_BY_ID: the id first, the rest zero.
    let mut attr = [0u64; 16];
    attr[0] = u64::from(id);
    let cmd = if prog {
        BPF_PROG_GET_FD_BY_ID
    } else {
        BPF_MAP_GET_FD_BY_ID
    };
    // SAFETY: attr is a zeroed buffer larger than the attribute the command reads; the
    // kernel only reads it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd < 0 {
        return "-".into();
    }
    let mut info = [0u8; 256];
    // `union bpf_attr` for OBJ_GET_INFO_BY_FD: u32 bpf_fd, u32 info_len, u64 info.
    let mut attr = [0u64; 16];
    attr[0] = (fd as u64 & 0xffff_ffff) | ((info.len() as u64) << 32);
    attr[1] = info.as_mut_ptr() as u64;
    // SAFETY: the kernel writes at most info_len (= info.len()) bytes into info, which
    // lives until after the call; attr is only read.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    // SAFETY: closes the descriptor the first call returned.
    unsafe { libc::close(fd as libc::c_int) };
    if rc < 0 {
        return "-".into();
    }
    let raw = &info[name_at..name_at + 16];
    let len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    match std::str::from_utf8(&raw[..len]) {
        Ok(name) if !name.is_empty() => name.to_owned(),
        _ => "-".into(),
    }
}

fn bpf_objects(label: &str, pid: u32) -> Result<(), String> {
    let get = |f: &BTreeMap<String, String>, k: &str| f.get(k).cloned().unwrap_or_default();
    let num = |f: &BTreeMap<String, String>, k: &str| -> u64 {
        f.get(k).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    let maps = fdinfo_objects(pid, "map_type:", "map_id")?;
    let mut map_memlock = 0;
    for (id, f) in &maps {
        map_memlock += num(f, "memlock");
        println!(
            "EA-BPF-MAP label={label} map_id={id} name={} map_type={} key_size={} value_size={} max_entries={} map_flags={} memlock={}",
            bpf_object_name(false, *id),
            get(f, "map_type"),
            get(f, "key_size"),
            get(f, "value_size"),
            get(f, "max_entries"),
            get(f, "map_flags"),
            num(f, "memlock")
        );
    }
    let progs = fdinfo_objects(pid, "prog_type:", "prog_id")?;
    let mut prog_memlock = 0;
    for (id, f) in &progs {
        prog_memlock += num(f, "memlock");
        println!(
            "EA-BPF-PROG label={label} prog_id={id} name={} prog_type={} memlock={} run_cnt={} run_time_ns={} verified_insns={}",
            bpf_object_name(true, *id),
            get(f, "prog_type"),
            num(f, "memlock"),
            num(f, "run_cnt"),
            num(f, "run_time_ns"),
            get(f, "verified_insns")
        );
    }
    println!(
        "EA-BPF-TOTAL label={label} maps={} map_memlock={map_memlock} progs={} prog_memlock={prog_memlock}",
        maps.len(),
        progs.len()
    );
    Ok(())
}

fn stream(pid: u32, rate: u32, seconds: u32, file: &str) -> Result<(), String> {
    let path = CString::new(file).map_err(|_| "FILE has a NUL byte".to_owned())?;
    let total = u64::from(rate) * u64::from(seconds);
    let sample_every = (u64::from(rate) / 10).max(1);
    let first = ProcSample::read(pid)?;
    let (mut rss_max, mut errors, mut max_late) = (first.vmrss_kb, 0u64, Duration::ZERO);
    let start = Instant::now();
    for i in 0..total {
        let due = start + Duration::from_nanos(i * 1_000_000_000 / u64::from(rate));
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else {
            max_late = max_late.max(now - due);
        }
        if open_read_close(&path).is_err() {
            errors += 1;
        }
        if i % sample_every == 0
            && let Ok(s) = ProcSample::read(pid)
        {
            rss_max = rss_max.max(s.vmrss_kb);
        }
    }
    let elapsed = start.elapsed();
    let last = ProcSample::read(pid)?;
    rss_max = rss_max.max(last.vmrss_kb);
    let ticks = (last.utime + last.stime).saturating_sub(first.utime + first.stime);
    let tck = clk_tck().max(1) as u64;
    let cpu_ms = ticks * 1000 / tck;
    println!(
        "EA-STREAM opens={total} errors={errors} elapsed_ms={} max_late_us={} agent_cpu_ticks={ticks} agent_cpu_ms={cpu_ms} agent_cpu_pct={:.2} agent_rss_start_kb={} agent_rss_max_kb={rss_max} agent_rss_end_kb={} agent_hwm_kb={} clk_tck={tck}",
        elapsed.as_millis(),
        max_late.as_micros(),
        100.0 * cpu_ms as f64 / elapsed.as_millis().max(1) as f64,
        first.vmrss_kb,
        last.vmrss_kb,
        last.vmhwm_kb
    );
    Ok(())
}
