//! The identity part of the fail-closed guest: fork floods, a long-running process
//! driven through a FIFO, children forked while the agent starts, and PID reuse.
//! Every operation prints one line:
//!
//! `EA-IDOP tag=TAG pid=PID op=read target=PATH rc=RC errno=E`

use std::ffi::{CStr, CString};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::{Duration, Instant};

fn usage() -> ! {
    eprintln!(
        "usage: setid-probe flood N PATH | serve FIFO | spawn-until GO PATH | reuse-pid PID TAG PATH... | idop TAG read PATH | now LABEL"
    );
    std::process::exit(2);
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn getpid() -> i32 {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() }
}

/// Opens `path` for reading and closes it: `(0, 0)` or `(-1, errno)`.
fn open_close(path: &CStr) -> (i64, i32) {
    // SAFETY: a NUL-terminated path; the descriptor is closed right away.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
    if fd < 0 {
        return (-1, errno());
    }
    // SAFETY: closes the descriptor we own.
    unsafe { libc::close(fd) };
    (0, 0)
}

fn c_path(path: &str) -> CString {
    CString::new(path).unwrap_or_else(|_| usage())
}

fn report(tag: &str, path: &str, (rc, errno): (i64, i32)) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "EA-IDOP tag={tag} pid={} op=read target={path} rc={rc} errno={errno}",
        getpid()
    );
    let _ = out.flush();
}

/// `idop TAG read PATH`: one read, reported with this process's PID.
pub fn idop(args: &[String]) {
    let (Some(tag), Some("read"), Some(path)) =
        (args.first(), args.get(1).map(String::as_str), args.get(2))
    else {
        usage()
    };
    report(tag, path, open_close(&c_path(path)));
}

/// `now LABEL`: prints `EA-NOW LABEL NS` (CLOCK_BOOTTIME), to place events in time.
pub fn now(args: &[String]) {
    let label = args.first().unwrap_or_else(|| usage());
    println!("EA-NOW {label} {}", boot_ns());
}

fn boot_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes the current time into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// The flood child: opens the path it is given and exits with 0 (opened), 1 (denied)
/// or 2 (another error). Runs on its own stack in the parent's memory (`CLONE_VM`),
/// while the parent is suspended (`CLONE_VFORK`), so it only makes syscalls.
extern "C" fn flood_child(path: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `path` is the parent's NUL-terminated path, alive while it waits.
    unsafe {
        let fd = libc::open(path as *const libc::c_char, libc::O_RDONLY);
        if fd < 0 {
            let e = *libc::__errno_location();
            libc::_exit(if e == libc::EACCES || e == libc::EPERM {
                1
            } else {
                2
            });
        }
        libc::close(fd);
        libc::_exit(0)
    }
}

/// `flood N PATH`: N new processes, one after another, each opening PATH and exiting.
/// Each is a `clone(CLONE_VM | CLONE_VFORK)`: a new process through the kernel's
/// whole fork path without copying an address space, so 50,000 stay cheap.
pub fn flood(args: &[String]) {
    let (Some(n), Some(path)) = (
        args.first().and_then(|n| n.parse::<u32>().ok()),
        args.get(1),
    ) else {
        usage()
    };
    let path = c_path(path);
    let mut stack = vec![0u8; 64 * 1024];
    // The stack grows down; 16-byte aligned top.
    let top = (stack.as_mut_ptr() as usize + stack.len()) & !15;
    let start = Instant::now();
    let (mut opened, mut denied, mut other, mut failed) = (0u32, 0u32, 0u32, 0u32);
    for _ in 0..n {
        // SAFETY: the child runs `flood_child` on `stack` and exits; with CLONE_VFORK
        // this thread does not run (or touch the stack) until it has.
        let pid = unsafe {
            libc::clone(
                flood_child,
                top as *mut libc::c_void,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                path.as_ptr() as *mut libc::c_void,
            )
        };
        if pid < 0 {
            failed += 1;
            continue;
        }
        let mut status = 0;
        // SAFETY: reaps the child we just created.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        match libc::WEXITSTATUS(status) {
            0 => opened += 1,
            1 => denied += 1,
            _ => other += 1,
        }
    }
    println!(
        "EA-FLOOD forks={n} opened={opened} denied={denied} other={other} failed={failed} elapsed_ms={}",
        start.elapsed().as_millis()
    );
}

/// Forks; the child runs `f` and exits. Returns the child's PID (or -1).
fn fork_run(f: impl FnOnce()) -> i32 {
    // SAFETY: the child runs `f` (syscalls and prints) and exits without returning.
    match unsafe { libc::fork() } {
        0 => {
            f();
            // SAFETY: ends the child.
            unsafe { libc::_exit(0) }
        }
        pid => pid,
    }
}

fn reap(pid: i32) -> i32 {
    let mut status = 0;
    // SAFETY: reaps a child we created.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    status
}

/// `serve FIFO`: prints `EA-SERVE pid=PID`, then runs the commands written to FIFO,
/// one a line: `TAG read PATH` (here), `TAG fork-read PATH` (in a forked child),
/// `TAG thread-read PATH` (in a new thread), `TAG exec-read PATH` (in a child that
/// execs this helper first), `quit`.
pub fn serve(args: &[String]) {
    let fifo = args.first().unwrap_or_else(|| usage());
    println!("EA-SERVE pid={}", getpid());
    let _ = std::io::stdout().flush();
    // Opened for reading and writing: with a write end of its own the FIFO never
    // reports end-of-file, so it is opened once. Reopening after each writer left
    // would lose a command written between the end-of-file and the close (the last
    // close of a FIFO discards what it holds).
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(fifo)
    else {
        eprintln!("setid-probe: cannot open {fifo}");
        std::process::exit(3);
    };
    for line in BufReader::new(file).lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["quit"] => return,
            [tag, "read", path] => report(tag, path, open_close(&c_path(path))),
            [tag, "fork-read", path] => {
                let pid = fork_run(|| report(tag, path, open_close(&c_path(path))));
                reap(pid);
            }
            [tag, "thread-read", path] => {
                let (tag, path) = (tag.to_string(), path.to_string());
                let _ = std::thread::spawn(move || {
                    // SAFETY: gettid cannot fail.
                    let tid = unsafe { libc::gettid() };
                    let (rc, errno) = open_close(&c_path(&path));
                    println!(
                        "EA-IDOP tag={tag} pid={} tid={tid} op=read target={path} rc={rc} errno={errno}",
                        getpid()
                    );
                })
                .join();
            }
            [tag, "exec-read", path] => {
                let (tag, path) = (c_path(tag), c_path(path));
                let pid = fork_run(|| {
                    let me = c"/usr/local/bin/setid-probe";
                    let argv = [
                        me.as_ptr(),
                        c"idop".as_ptr(),
                        tag.as_ptr(),
                        c"read".as_ptr(),
                        path.as_ptr(),
                        std::ptr::null(),
                    ];
                    // SAFETY: a NULL-terminated array of C strings.
                    unsafe { libc::execv(me.as_ptr(), argv.as_ptr()) };
                });
                reap(pid);
            }
            _ => eprintln!("setid-probe serve: unknown command {line:?}"),
        }
        let _ = std::io::stdout().flush();
    }
}

/// `spawn-until GO PATH...`: forks a child every 10 ms (at most 100) until GO exists.
/// Each child blocks on a pipe; once GO exists the spawner wakes them one at a time,
/// each reads each PATH and
/// prints `EA-SPAWNED pid=.. forked_ns=.. PATH=RC/ERRNO...` (forked_ns:
/// CLOCK_BOOTTIME when it was forked); then `EA-SPAWNER children=N`.
pub fn spawn_until(args: &[String]) {
    let Some(go) = args.first() else { usage() };
    let paths: Vec<(String, CString)> = args[1..].iter().map(|p| (p.clone(), c_path(p))).collect();
    let go = Path::new(go);
    let mut fds = [0; 2];
    // SAFETY: creates a pipe into `fds`.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        eprintln!("setid-probe: pipe: {}", std::io::Error::last_os_error());
        std::process::exit(3);
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    println!("EA-SPAWNER-START pid={}", getpid());
    let _ = std::io::stdout().flush();
    let mut children = Vec::new();
    while !go.exists() && Instant::now() < deadline {
        if children.len() < 100 {
            let forked_ns = boot_ns();
            let pid = fork_run(|| {
                let mut byte = 0u8;
                // SAFETY: closes the child's write end, then blocks until the
                // spawner writes this child's byte.
                unsafe {
                    libc::close(fds[1]);
                    libc::read(fds[0], &mut byte as *mut u8 as *mut libc::c_void, 1);
                }
                let mut line = format!("EA-SPAWNED pid={} forked_ns={forked_ns}", getpid());
                for (name, path) in &paths {
                    let (rc, errno) = open_close(path);
                    line.push_str(&format!(" {name}={rc}/{errno}"));
                }
                println!("{line}");
                let _ = std::io::stdout().flush();
            });
            if pid > 0 {
                children.push(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // One child at a time (one byte wakes one reader), so their reads do not race
    // each other: this part is about identities, not about concurrent opens.
    for _ in &children {
        // SAFETY: writes one byte from the stack to the pipe, then reaps the child
        // that took it.
        unsafe {
            libc::write(fds[1], b"g".as_ptr() as *const libc::c_void, 1);
            let mut status = 0;
            libc::waitpid(-1, &mut status, 0);
        }
    }
    println!("EA-SPAWNER children={}", children.len());
}

/// `reuse-pid PID TAG PATH [TAG PATH...]`: makes the next new process get PID (via
/// /proc/sys/kernel/ns_last_pid, retried while something else takes it first); that
/// process, a fork of this helper that does not exec, reads each PATH. Then prints
/// `EA-REUSED want=PID got=PID attempts=N` (got=-1: never).
pub fn reuse_pid(args: &[String]) {
    let Some(want) = args.first().and_then(|p| p.parse::<i32>().ok()) else {
        usage()
    };
    let reads: Vec<(&str, &str)> = args[1..]
        .chunks(2)
        .map(|c| match c {
            [tag, path] => (tag.as_str(), path.as_str()),
            _ => usage(),
        })
        .collect();
    for attempt in 1..=200 {
        if let Err(e) = std::fs::write("/proc/sys/kernel/ns_last_pid", format!("{}", want - 1)) {
            println!(
                "EA-REUSED want={want} got=-1 attempts={attempt} errno={}",
                e.raw_os_error().unwrap_or(0)
            );
            return;
        }
        let pid = fork_run(|| {
            if getpid() != want {
                // SAFETY: ends the child: not the PID wanted, nothing to do.
                unsafe { libc::_exit(99) };
            }
            for (tag, path) in &reads {
                report(tag, path, open_close(&c_path(path)));
            }
        });
        let status = reap(pid);
        if pid == want && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
            println!("EA-REUSED want={want} got={pid} attempts={attempt}");
            return;
        }
    }
    println!("EA-REUSED want={want} got=-1 attempts=200");
}
