//! `setid-probe [wait FILE] [fork] [repeat N] OP ID`: calls one setuid/setgid-family
//! syscall (N times with `repeat`) and prints a machine-readable line the VM suite parses:
//!
//! `EA-SETID op=setgid id=0 pid=123 ppid=45 rc=-1 errno=1 calls=1 denied=1`
//!
//! `wait FILE` first waits (bounded) until FILE exists, so the process can be started
//! before the agent and act after it. `fork` makes a child do the call, the way a
//! daemon's forked worker drops privileges.
//!
//! The VM suite installs copies of this binary under the paths rules name
//! (`/usr/sbin/sshd`, `/usr/bin/sshd-other`, ...), so it must be static.

use std::time::{Duration, Instant};

fn usage() -> ! {
    eprintln!(
        "usage: setid-probe [wait FILE] [fork] setuid|setgid|setreuid|setregid|setresuid|setresgid|setfsuid|setfsgid ID"
    );
    std::process::exit(2);
}

fn main() {
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
