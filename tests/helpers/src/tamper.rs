//! Tampering with a running edgearmor, for the `locked` part of the fail-closed
//! guest (issue 16): raw `bpf()` calls, ptrace, `/proc/PID/mem`,
//! `process_vm_writev` and signals, each one attempt printing
//! `EA-OP op=OP target=T rc=RC errno=E` (and `step=` naming the call that failed):
//!
//! - `bpf-map NAME update|delete|read`: finds the map called NAME through read-only
//!   fds (`BPF_MAP_GET_FD_BY_ID` with `BPF_F_RDONLY`), then asks for a writable fd by
//!   its id and, with one, updates (all-zero key and value) or deletes (its first
//!   key); `read` looks the first key up through the read-only fd;
//! - `bpf-link-detach`, `bpf-prog-fd`: the first link (program) id on the system,
//!   `*_GET_FD_BY_ID`, then `BPF_LINK_DETACH` on the link;
//! - `bpf-link-detach-pin PATH`: `BPF_OBJ_GET` on a pinned link, then detach;
//! - `obj-get PATH`: `BPF_OBJ_GET` (read-write);
//! - `ptrace PID` (`PTRACE_ATTACH`), `mem-write PID` (`open(/proc/PID/mem, O_RDWR)`),
//!   `vm-write PID` (`process_vm_writev` of one byte), `kill PID SIG`;
//! - `umount PATH`, `umount-lazy PATH` (`MNT_DETACH`), `mount-tmpfs PATH`;
//! - `traced-exec PATH ARG...`: exec under `PTRACE_TRACEME`, the tracer detaching at
//!   the exec stop (prints the child's pid as `EA-TRACED-PID`).

use std::ffi::CString;

const BPF_MAP_LOOKUP_ELEM: i64 = 1;
const BPF_MAP_UPDATE_ELEM: i64 = 2;
const BPF_MAP_DELETE_ELEM: i64 = 3;
const BPF_MAP_GET_NEXT_KEY: i64 = 4;
const BPF_OBJ_GET: i64 = 7;
const BPF_PROG_GET_NEXT_ID: i64 = 11;
const BPF_MAP_GET_NEXT_ID: i64 = 12;
const BPF_PROG_GET_FD_BY_ID: i64 = 13;
const BPF_MAP_GET_FD_BY_ID: i64 = 14;
const BPF_OBJ_GET_INFO_BY_FD: i64 = 15;
const BPF_LINK_GET_FD_BY_ID: i64 = 30;
const BPF_LINK_GET_NEXT_ID: i64 = 31;
const BPF_LINK_DETACH: i64 = 34;
const BPF_F_RDONLY: u32 = 1 << 3;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// `bpf(cmd, attr)` with a 128-byte attribute block; the result or `-errno`.
fn bpf(cmd: i64, attr: &mut [u64; 16]) -> i64 {
    // SAFETY: `attr` is a live, zero-padded buffer of the size passed; the kernel
    // reads and writes only within it (and through pointers the caller put in it).
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), 128usize) };
    if rc < 0 { -i64::from(errno()) } else { rc }
}

/// Sets the `u32` at byte `at` of `attr`.
fn put32(attr: &mut [u64; 16], at: usize, v: u32) {
    let word = &mut attr[at / 8];
    let shift = (at % 8) * 8;
    *word = (*word & !(0xffff_ffff << shift)) | (u64::from(v) << shift);
}

fn get32(attr: &[u64; 16], at: usize) -> u32 {
    (attr[at / 8] >> ((at % 8) * 8)) as u32
}

/// The id after `start` (`*_GET_NEXT_ID`), or `None` at the end.
fn next_id(cmd: i64, start: u32) -> Option<u32> {
    let mut attr = [0u64; 16];
    put32(&mut attr, 0, start);
    (bpf(cmd, &mut attr) == 0).then(|| get32(&attr, 4))
}

/// An fd for `id` (`*_GET_FD_BY_ID`), or `-errno`.
fn fd_by_id(cmd: i64, id: u32, flags: u32) -> i64 {
    let mut attr = [0u64; 16];
    put32(&mut attr, 0, id);
    put32(&mut attr, 8, flags);
    bpf(cmd, &mut attr)
}

/// A map's `(name, key_size, value_size)` (`bpf_map_info`).
fn map_info(fd: i64) -> Option<(String, usize, usize)> {
    let mut info = [0u8; 128];
    let mut attr = [0u64; 16];
    put32(&mut attr, 0, fd as u32);
    put32(&mut attr, 4, info.len() as u32);
    attr[1] = info.as_mut_ptr() as u64;
    if bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) != 0 {
        return None;
    }
    let word = |at: usize| u32::from_ne_bytes([info[at], info[at + 1], info[at + 2], info[at + 3]]);
    let name: Vec<u8> = info[24..40]
        .iter()
        .copied()
        .take_while(|b| *b != 0)
        .collect();
    Some((
        String::from_utf8_lossy(&name).into_owned(),
        word(8) as usize,
        word(12) as usize,
    ))
}

/// The id, key and value size of the map called `name`, found through read-only fds.
fn find_map(name: &str) -> Option<(u32, usize, usize)> {
    let mut id = 0;
    while let Some(next) = next_id(BPF_MAP_GET_NEXT_ID, id) {
        id = next;
        let fd = fd_by_id(BPF_MAP_GET_FD_BY_ID, id, BPF_F_RDONLY);
        if fd < 0 {
            continue;
        }
        let info = map_info(fd);
        // SAFETY: closing the fd just obtained.
        unsafe { libc::close(fd as i32) };
        if let Some((found, key, value)) = info
            && found == name
        {
            return Some((id, key, value));
        }
    }
    None
}

/// `(rc, errno, step)` of one element operation on the map `name`.
fn map_op(name: &str, op: &str) -> (i64, i32, &'static str) {
    let Some((id, key_size, value_size)) = find_map(name) else {
        return (-1, libc::ENOENT, "find");
    };
    let flags = if op == "read" { BPF_F_RDONLY } else { 0 };
    let fd = fd_by_id(BPF_MAP_GET_FD_BY_ID, id, flags);
    if fd < 0 {
        return (-1, -fd as i32, "fd");
    }
    let mut key = vec![0u8; key_size.max(1)];
    let mut value = vec![0u8; value_size.max(1)];
    let mut attr = [0u64; 16];
    put32(&mut attr, 0, fd as u32);
    if op != "update" {
        // The first key (NULL key pointer: the map's first).
        attr[2] = key.as_mut_ptr() as u64;
        let rc = bpf(BPF_MAP_GET_NEXT_KEY, &mut attr);
        if rc < 0 {
            return (-1, -rc as i32, "first-key");
        }
        attr[2] = 0;
    }
    attr[1] = key.as_mut_ptr() as u64;
    let cmd = match op {
        "update" => {
            attr[2] = value.as_mut_ptr() as u64;
            BPF_MAP_UPDATE_ELEM
        }
        "delete" => BPF_MAP_DELETE_ELEM,
        _ => {
            attr[2] = value.as_mut_ptr() as u64;
            BPF_MAP_LOOKUP_ELEM
        }
    };
    let rc = bpf(cmd, &mut attr);
    if rc < 0 {
        (-1, -rc as i32, "op")
    } else {
        (0, 0, "op")
    }
}

/// Detaches the link behind `fd`.
fn detach(fd: i64) -> (i64, i32, &'static str) {
    let mut attr = [0u64; 16];
    put32(&mut attr, 0, fd as u32);
    let rc = bpf(BPF_LINK_DETACH, &mut attr);
    if rc < 0 {
        (-1, -rc as i32, "detach")
    } else {
        (0, 0, "detach")
    }
}

fn obj_get(path: &str) -> i64 {
    let Ok(c) = CString::new(path) else {
        return -i64::from(libc::EINVAL);
    };
    let mut attr = [0u64; 16];
    attr[0] = c.as_ptr() as u64;
    bpf(BPF_OBJ_GET, &mut attr)
}

fn libc_result(rc: i64) -> (i64, i32, &'static str) {
    if rc < 0 {
        (-1, errno(), "call")
    } else {
        (0, 0, "call")
    }
}

fn pid_arg(args: &[String]) -> libc::pid_t {
    args.first().and_then(|p| p.parse().ok()).unwrap_or(0)
}

/// Forks a child that asks to be traced (`PTRACE_TRACEME`) and execs `args` (a path
/// and its arguments); at the exec stop the tracer detaches, as one that had
/// changed the new program would, and the child runs on untraced. Prints the
/// child's pid (`EA-TRACED-PID`); `(exit status, 0)`.
fn traced_exec(args: &[String]) -> (i64, i32, &'static str) {
    let Ok(argv) = args
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<Vec<_>, _>>()
    else {
        return (-1, libc::EINVAL, "args");
    };
    let Some(path) = argv.first() else {
        return (-1, libc::EINVAL, "args");
    };
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: the child only calls ptrace, execv and _exit.
    match unsafe { libc::fork() } {
        -1 => (-1, errno(), "fork"),
        0 => unsafe {
            // SAFETY: PTRACE_TRACEME takes no pointers; argv is NULL-terminated.
            libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0);
            libc::execv(path.as_ptr(), ptrs.as_ptr());
            libc::_exit(127);
        },
        child => {
            println!("EA-TRACED-PID {child}");
            let mut status = 0;
            // SAFETY: our child; PTRACE_DETACH after its exec stop, then its exit.
            unsafe {
                libc::waitpid(child, &mut status, 0);
                libc::ptrace(libc::PTRACE_DETACH, child, 0, 0);
                libc::waitpid(child, &mut status, 0);
            }
            (i64::from(libc::WEXITSTATUS(status)), 0, "exit")
        }
    }
}

/// Runs one tamper operation; `None` when `op` is not one.
pub fn run(op: &str, args: &[String]) -> Option<()> {
    let target = args.first().cloned().unwrap_or_default();
    let (rc, errno, step) = match op {
        "traced-exec" => traced_exec(args),
        "bpf-map" => map_op(&target, args.get(1).map_or("update", String::as_str)),
        "bpf-link-detach" | "bpf-prog-fd" => {
            let (next, get) = if op == "bpf-prog-fd" {
                (BPF_PROG_GET_NEXT_ID, BPF_PROG_GET_FD_BY_ID)
            } else {
                (BPF_LINK_GET_NEXT_ID, BPF_LINK_GET_FD_BY_ID)
            };
            match next_id(next, 0) {
                None => (-1, libc::ENOENT, "find"),
                Some(id) => match fd_by_id(get, id, 0) {
                    fd if fd < 0 => (-1, -fd as i32, "fd"),
                    fd if op == "bpf-link-detach" => detach(fd),
                    _ => (0, 0, "fd"),
                },
            }
        }
        "bpf-link-detach-pin" => match obj_get(&target) {
            fd if fd < 0 => (-1, -fd as i32, "obj-get"),
            fd => detach(fd),
        },
        "obj-get" => match obj_get(&target) {
            fd if fd < 0 => (-1, -fd as i32, "obj-get"),
            _ => (0, 0, "obj-get"),
        },
        "ptrace" => {
            let pid = pid_arg(args);
            // SAFETY: PTRACE_ATTACH takes no pointers; a success is undone at once.
            let rc = unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0) };
            if rc == 0 {
                // SAFETY: as above.
                unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0) };
            }
            libc_result(rc)
        }
        "mem-write" => {
            let Ok(path) = CString::new(format!("/proc/{}/mem", pid_arg(args))) else {
                return Some(());
            };
            // SAFETY: a NUL-terminated path; the fd is closed again.
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR) };
            if fd >= 0 {
                // SAFETY: the fd just opened.
                unsafe { libc::close(fd) };
            }
            libc_result(i64::from(fd))
        }
        "vm-write" => {
            let byte = [0u8; 1];
            let local = libc::iovec {
                iov_base: byte.as_ptr() as *mut libc::c_void,
                iov_len: 1,
            };
            // The remote address is never reached: the access check comes first.
            let remote = libc::iovec {
                iov_base: 0x1000 as *mut libc::c_void,
                iov_len: 1,
            };
            // SAFETY: one local byte and one remote iovec, both described exactly.
            let rc = unsafe { libc::process_vm_writev(pid_arg(args), &local, 1, &remote, 1, 0) };
            libc_result(rc as i64)
        }
        "umount" | "umount-lazy" => {
            let Ok(path) = CString::new(target.as_str()) else {
                return Some(());
            };
            let flags = if op == "umount-lazy" {
                libc::MNT_DETACH
            } else {
                0
            };
            // SAFETY: a NUL-terminated path.
            libc_result(i64::from(unsafe { libc::umount2(path.as_ptr(), flags) }))
        }
        "mount-tmpfs" => {
            let (Ok(path), Ok(fs)) = (CString::new(target.as_str()), CString::new("tmpfs")) else {
                return Some(());
            };
            // SAFETY: NUL-terminated strings; no data.
            let rc = unsafe {
                libc::mount(fs.as_ptr(), path.as_ptr(), fs.as_ptr(), 0, std::ptr::null())
            };
            libc_result(i64::from(rc))
        }
        "kill" => {
            let sig = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            // SAFETY: kill takes no pointers.
            libc_result(i64::from(unsafe { libc::kill(pid_arg(args), sig) }))
        }
        _ => return None,
    };
    println!("EA-OP op={op} target={target} rc={rc} errno={errno} step={step}");
    Some(())
}
