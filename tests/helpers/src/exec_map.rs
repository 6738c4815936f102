//! `mmap-exec PATH`: opens PATH read-only and maps its first page `PROT_READ |
//! PROT_EXEC`, as a loader maps a program's text; `mprotect-exec PATH`: maps it
//! `PROT_READ` and then asks `mprotect` for `PROT_EXEC`. Each prints `EA-OP op=OP
//! target=PATH rc= errno=` (of the open, or of the call that made it executable).

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Runs `mmap-exec` / `mprotect-exec`; `None` when `op` is another operation.
pub fn run(op: &str, args: &[String]) -> Option<()> {
    let late = match op {
        "mmap-exec" => false,
        "mprotect-exec" => true,
        _ => return None,
    };
    let target = args.first().map(String::as_str).unwrap_or("");
    let (rc, errno) = map_exec(target, late);
    println!("EA-OP op={op} target={target} rc={rc} errno={errno}");
    Some(())
}

fn map_exec(path: &str, late: bool) -> (i64, i32) {
    use std::os::fd::AsRawFd;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) => return (-1, e.raw_os_error().unwrap_or(0)),
    };
    const LEN: usize = 4096;
    let first = if late {
        libc::PROT_READ
    } else {
        libc::PROT_READ | libc::PROT_EXEC
    };
    // SAFETY: a fresh private mapping of the open file; no Rust reference points into it.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            LEN,
            first,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        )
    };
    if map == libc::MAP_FAILED {
        return (-1, errno());
    }
    let outcome = if late {
        // SAFETY: `map` is the LEN-byte mapping made above.
        match unsafe { libc::mprotect(map, LEN, libc::PROT_READ | libc::PROT_EXEC) } {
            0 => (0, 0),
            _ => (-1, errno()),
        }
    } else {
        (0, 0)
    };
    // SAFETY: unmaps what was mapped above.
    unsafe { libc::munmap(map, LEN) };
    outcome
}
