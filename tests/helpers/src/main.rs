//! `setid-probe [wait FILE] [fork] [repeat N] OP ID`: calls one setuid/setgid-family
//! syscall (N times with `repeat`) and prints a machine-readable line the VM suite parses:
//!
//! `EA-SETID op=setgid id=0 pid=123 ppid=45 rc=-1 errno=1 calls=1 denied=1`
//!
//! `wait FILE` first waits (bounded) until FILE exists, so the process can be started
//! before the agent and act after it. `fork` makes a child do the call, the way a
//! daemon's forked worker drops privileges.
//!
//! The policy-engine scenarios use the other operations, each printing
//! `EA-OP op=OP target=T rc=RC errno=E`:
//!
//! - `noop`: exit 0 (what a copy under a rule's path does when exec'd);
//! - `exec PATH`: fork, exec `PATH noop`, report how the exec ended;
//! - `read PATH`, `write PATH`, `unlink PATH`: open for reading / for writing
//!   (creating it), remove;
//! - `socket tcp|udp|raw|icmp`: create an IPv4 socket of that kind;
//! - `socket FAMILY TYPE PROTOCOL`: `socket(2)` with exactly these arguments (FAMILY
//!   `inet|inet6|packet|unix` or a number, TYPE `stream|dgram|raw|seqpacket` or a
//!   number, PROTOCOL a number); the target printed is `FAMILY/TYPE/PROTOCOL`;
//! - `pin-rules-map PATH MAX_ENTRIES`: creates a hash map shaped like the probes'
//!   `RULES` (its key and value sizes from the ABI crate) holding at most MAX_ENTRIES
//!   entries and pins it at PATH, as a build with a smaller table would have left it;
//!   prints `EA-OP op=pin-rules-map target=PATH rc= errno=`;
//! - `loop-exec N STOPFILE PATH`: exec `PATH noop` until N attempts or until STOPFILE
//!   exists, then print `EA-LOOP attempts= passed= denied= other= last_denied= first_passed=`
//!   (attempt numbers, 0 = none) so a test can see that a policy switch happened at
//!   one instant.
//! - `link`, `rename`, `exchange`, `truncate`, `chmod`, `chown`, `mknod`, `mkdir`,
//!   `rmdir`, `symlink`, `create`, `create-excl`, `append`, `read-fd`, `write-fd`,
//!   `ftruncate`, `mmap-write`, `mmap-private`, `mmap-read`, `fstate`: the `files` part of the
//!   fail-closed guest (see `files.rs`).
//! - `flood`, `serve`, `spawn-until`, `reuse-pid`, `idop`, `now`: the identity part of
//!   the fail-closed guest (see `identity.rs`).
//! - `alias-add PIN_DIR PATH CANONICAL`: a `FILE_ALIASES` entry for PATH's inode;
//!   `prog-stats`: each loaded program's verifier instruction count (see `alias.rs`).
//! - `mprotect-write FD`: a shared read-only mapping made writable (see `mprotect.rs`).
//! - `mmap-exec PATH`, `mprotect-exec PATH`: a file mapped executable, at once or
//!   afterwards, as a loader maps a program; `exec-alias PIN_DIR INO ST_DEV`: the
//!   pinned `EXEC_ALIASES` entry of an inode (see `exec_map.rs`).
//! - `notify-listen PATH SILENCE_MS`, `notify-send PATH MSG`: systemd's `NOTIFY_SOCKET`
//!   side, and marks in its timeline (see `notify.rs`).
//! - `bpf-map`, `bpf-link-detach`, `bpf-link-detach-pin`, `bpf-prog-fd`, `obj-get`,
//!   `ptrace`, `mem-write`, `vm-write`, `kill`: the `locked` part (see `tamper.rs`).
//!
//! The VM suite installs copies of this binary under the paths rules name
//! (`/usr/sbin/sshd`, `/usr/bin/sshd-other`, ...), so it must be static.

use std::time::{Duration, Instant};

mod alias;
mod exec_map;
mod files;
mod identity;
mod loops;
mod mprotect;
mod notify;
mod tamper;

fn usage() -> ! {
    eprintln!(
        "usage: setid-probe [wait FILE] [fork] setuid|setgid|setreuid|setregid|setresuid|setresgid|setfsuid|setfsgid ID"
    );
    std::process::exit(2);
}

fn main() {
    let all: Vec<String> = std::env::args().skip(1).collect();
    if let Some(op) = all.first() {
        if let [_, family, ty, proto] = all.as_slice()
            && op == "socket"
        {
            let (rc, errno) = socket_explicit(family, ty, proto);
            println!("EA-OP op=socket target={family}/{ty}/{proto} rc={rc} errno={errno}");
            return;
        }
        let target = all.get(1).map(String::as_str).unwrap_or("");
        let report = |(rc, errno): (i64, i32)| {
            println!("EA-OP op={op} target={target} rc={rc} errno={errno}");
        };
        match op.as_str() {
            "noop" => return,
            "exec" => return report(exec_noop(target, target)),
            // exec-as PATH ARGV0: as exec, with another argv[0] (`exec -a`).
            "exec-as" => {
                return report(exec_noop(target, all.get(2).map_or(target, String::as_str)));
            }
            "read" => return report(open_file(target, false)),
            "write" => return report(open_file(target, true)),
            "unlink" => return report(unlink(target)),
            "socket" => return report(socket(target)),
            "loop-exec" => return loop_exec(&all[1..]),
            "pin-rules-map" => {
                let max: u32 = all
                    .get(2)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| usage());
                return report(pin_rules_map(target, max));
            }
            "flood" => return identity::flood(&all[1..]),
            "serve" => return identity::serve(&all[1..]),
            "spawn-until" => return identity::spawn_until(&all[1..]),
            "reuse-pid" => return identity::reuse_pid(&all[1..]),
            "idop" => return identity::idop(&all[1..]),
            "now" => return identity::now(&all[1..]),
            "alias-add" => return alias::run(&all[1..]),
            "prog-stats" => return alias::prog_stats(),
            "exec-alias" => return exec_map::alias(&all[1..]),
            "notify-listen" => return notify::listen(&all[1..]),
            "notify-send" => return notify::send(&all[1..]),
            _ => {
                if loops::run(op, &all[1..]).is_some()
                    || files::run(op, &all[1..]).is_some()
                    || mprotect::run(op, &all[1..]).is_some()
                    || exec_map::run(op, &all[1..]).is_some()
                    || tamper::run(op, &all[1..]).is_some()
                {
                    return;
                }
            }
        }
    }
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("wait") {
        args.next();
        let file = args.next().unwrap_or_else(|| usage());
        let deadline = Instant::now() + Duration::from_secs(300);
        while !std::path::Path::new(&file).exists() {
            if Instant::now() > deadline {
                eprintln!("setid-probe: {file} never appeared");
                std::process::exit(3);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let fork = args.peek().map(String::as_str) == Some("fork");
    if fork {
        args.next();
    }
    let mut calls = 1u32;
    if args.peek().map(String::as_str) == Some("repeat") {
        args.next();
        calls = args
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| usage());
    }
    let op = args.next().unwrap_or_else(|| usage());
    let id: u32 = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| usage());
    if fork {
        // SAFETY: single-threaded program; the child only makes syscalls and prints.
        match unsafe { libc::fork() } {
            -1 => {
                eprintln!(
                    "setid-probe: fork failed: {}",
                    std::io::Error::last_os_error()
                );
                std::process::exit(3);
            }
            0 => {}
            child => {
                let mut status = 0;
                // SAFETY: waits for the child we just created.
                unsafe { libc::waitpid(child, &mut status, 0) };
                return;
            }
        }
    }
    let (mut rc, mut errno, mut denied) = (0, 0, 0);
    for _ in 0..calls {
        (rc, errno) = call(&op, id);
        if errno == libc::EPERM {
            denied += 1;
        }
    }
    // SAFETY: getpid/getppid cannot fail.
    let (pid, ppid) = unsafe { (libc::getpid(), libc::getppid()) };
    println!(
        "EA-SETID op={op} id={id} pid={pid} ppid={ppid} rc={rc} errno={errno} calls={calls} denied={denied}"
    );
}

/// Makes the call; returns its result and errno (0 on success).
fn call(op: &str, id: u32) -> (i32, i32) {
    // SAFETY: plain syscalls on integer arguments; none touch memory we own.
    let rc = unsafe {
        match op {
            "setuid" => libc::setuid(id),
            "setgid" => libc::setgid(id),
            "setreuid" => libc::setreuid(u32::MAX, id),
            "setregid" => libc::setregid(u32::MAX, id),
            "setresuid" => libc::setresuid(u32::MAX, id, u32::MAX),
            "setresgid" => libc::setresgid(u32::MAX, id, u32::MAX),
            // setfs* return the previous id, never an error code.
            "setfsuid" => libc::setfsuid(id),
            "setfsgid" => libc::setfsgid(id),
            _ => usage(),
        }
    };
    let errno = if rc == -1 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    } else {
        0
    };
    (rc, errno)
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Forks and execs `path` as `argv0 noop`; `(status, 0)` when it ran, `(-1, errno)`
/// when the exec was refused (the child reports the errno as its exit status),
/// `(-signal, 0)` when it was killed.
fn exec_noop(path: &str, argv0: &str) -> (i64, i32) {
    let (Ok(c_path), Ok(c_argv0)) = (std::ffi::CString::new(path), std::ffi::CString::new(argv0))
    else {
        return (-1, libc::EINVAL);
    };
    let noop = c"noop";
    // SAFETY: the child only calls execv and _exit.
    match unsafe { libc::fork() } {
        -1 => (-1, last_errno()),
        0 => {
            let argv = [c_argv0.as_ptr(), noop.as_ptr(), std::ptr::null()];
            // SAFETY: argv is a NULL-terminated array of valid C strings.
            unsafe {
                libc::execv(c_path.as_ptr(), argv.as_ptr());
                libc::_exit(100 + last_errno());
            }
        }
        child => {
            let mut status = 0;
            // SAFETY: waits for the child we just created.
            unsafe { libc::waitpid(child, &mut status, 0) };
            if libc::WIFSIGNALED(status) {
                // Killed (a multi-call applet stopped after its exec): -signal.
                return (-i64::from(libc::WTERMSIG(status)), 0);
            }
            let code = libc::WEXITSTATUS(status);
            if code >= 100 {
                (-1, code - 100)
            } else {
                (i64::from(code), 0)
            }
        }
    }
}

fn open_file(path: &str, write: bool) -> (i64, i32) {
    let result = if write {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
    } else {
        std::fs::File::open(path)
    };
    match result {
        Ok(_) => (0, 0),
        Err(e) => (-1, e.raw_os_error().unwrap_or(0)),
    }
}

fn unlink(path: &str) -> (i64, i32) {
    match std::fs::remove_file(path) {
        Ok(()) => (0, 0),
        Err(e) => (-1, e.raw_os_error().unwrap_or(0)),
    }
}

fn socket(kind: &str) -> (i64, i32) {
    let (ty, proto) = match kind {
        "tcp" => (libc::SOCK_STREAM, 0),
        "udp" => (libc::SOCK_DGRAM, 0),
        "raw" => (libc::SOCK_RAW, libc::IPPROTO_ICMP),
        "icmp" => (libc::SOCK_DGRAM, libc::IPPROTO_ICMP),
        _ => usage(),
    };
    // SAFETY: plain syscall; the descriptor is closed right away.
    let fd = unsafe { libc::socket(libc::AF_INET, ty, proto) };
    if fd < 0 {
        return (-1, last_errno());
    }
    // SAFETY: closes the descriptor we own.
    unsafe { libc::close(fd) };
    (0, 0)
}

/// `socket(family, type, protocol)` from names or numbers; the descriptor is closed.
fn socket_explicit(family: &str, ty: &str, proto: &str) -> (i64, i32) {
    let family = match family {
        "inet" => libc::AF_INET,
        "inet6" => libc::AF_INET6,
        "packet" => libc::AF_PACKET,
        "unix" => libc::AF_UNIX,
        n => n.parse().unwrap_or_else(|_| usage()),
    };
    let ty = match ty {
        "stream" => libc::SOCK_STREAM,
        "dgram" => libc::SOCK_DGRAM,
        "raw" => libc::SOCK_RAW,
        "seqpacket" => libc::SOCK_SEQPACKET,
        n => n.parse().unwrap_or_else(|_| usage()),
    };
    let proto: i32 = proto.parse().unwrap_or_else(|_| usage());
    // SAFETY: plain syscall; the descriptor is closed right away.
    let fd = unsafe { libc::socket(family, ty, proto) };
    if fd < 0 {
        return (-1, last_errno());
    }
    // SAFETY: closes the descriptor we own.
    unsafe { libc::close(fd) };
    (0, 0)
}

/// `bpf(BPF_MAP_CREATE)` of a `RULES`-shaped hash map, then `bpf(BPF_OBJ_PIN)` at
/// `path`. Attributes are written into a zeroed `union bpf_attr` by offset.
fn pin_rules_map(path: &str, max_entries: u32) -> (i64, i32) {
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_OBJ_PIN: libc::c_long = 6;
    const BPF_MAP_TYPE_HASH: u32 = 1;
    const BPF_F_NO_PREALLOC: u32 = 1;
    let bpf = |cmd: libc::c_long, attr: &mut [u8; 128]| {
        // SAFETY: `attr` is a zero-filled buffer at least as large as the part of
        // `union bpf_attr` these commands read; the kernel checks the rest is zero.
        unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) }
    };
    let mut create = [0u8; 128];
    let key = std::mem::size_of::<edgearmor_probe_abi::RuleKey>() as u32;
    let value = std::mem::size_of::<edgearmor_probe_abi::RuleValue>() as u32;
    for (offset, field) in [
        (0, BPF_MAP_TYPE_HASH),
        (4, key),
        (8, value),
        (12, max_entries),
        (16, BPF_F_NO_PREALLOC),
    ] {
        create[offset..offset + 4].copy_from_slice(&field.to_ne_bytes());
    }
    create[28..33].copy_from_slice(b"RULES");
    let fd = bpf(BPF_MAP_CREATE, &mut create);
    if fd < 0 {
        return (-1, last_errno());
    }
    let Ok(c_path) = std::ffi::CString::new(path) else {
        usage()
    };
    let mut pin = [0u8; 128];
    pin[0..8].copy_from_slice(&(c_path.as_ptr() as u64).to_ne_bytes());
    pin[8..12].copy_from_slice(&(fd as u32).to_ne_bytes());
    let rc = bpf(BPF_OBJ_PIN, &mut pin);
    let result = if rc < 0 { (-1, last_errno()) } else { (0, 0) };
    // SAFETY: closes the descriptor we own; the pin keeps the map.
    unsafe { libc::close(fd as i32) };
    result
}

fn loop_exec(args: &[String]) {
    let (Some(n), Some(stop), Some(path)) = (
        args.first().and_then(|n| n.parse::<u32>().ok()),
        args.get(1),
        args.get(2),
    ) else {
        usage()
    };
    let (mut passed, mut denied, mut other) = (0u32, 0u32, 0u32);
    let (mut last_denied, mut first_passed) = (0u32, 0u32);
    // EA_PROGRESS=FILE: the attempt count, replaced after each attempt, so a test
    // can wait for attempts to happen (for example while no agent runs). Written
    // to a temporary file and renamed over FILE, so a reader never sees it empty
    // or half-written.
    let progress = std::env::var_os("EA_PROGRESS").map(|file| {
        let mut staged = file.clone();
        staged.push(".new");
        (
            std::path::PathBuf::from(file),
            std::path::PathBuf::from(staged),
        )
    });
    let mut attempts = 0;
    while attempts < n && !std::path::Path::new(stop).exists() {
        attempts += 1;
        if let Some((file, staged)) = &progress
            && std::fs::write(staged, attempts.to_string()).is_ok()
        {
            let _ = std::fs::rename(staged, file);
        }
        match exec_noop(path, path) {
            (0, 0) => {
                passed += 1;
                if first_passed == 0 {
                    first_passed = attempts;
                }
            }
            (-1, libc::EACCES) => {
                denied += 1;
                last_denied = attempts;
            }
            _ => other += 1,
        }
    }
    println!(
        "EA-LOOP attempts={attempts} passed={passed} denied={denied} other={other} last_denied={last_denied} first_passed={first_passed}"
    );
}
