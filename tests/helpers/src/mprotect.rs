//! `mprotect-write FD`: maps FD shared and read-only, then asks `mprotect` for
//! `PROT_WRITE` and, when granted, stores `P` at offset 0 and `msync`s: the way to
//! write a file through a descriptor without `write` or a writable `mmap`. Prints
//! `EA-OP op=mprotect-write target=FD rc= errno=` (the mprotect's).

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Runs `mprotect-write`; `None` when `op` is another operation.
pub fn run(op: &str, args: &[String]) -> Option<()> {
    if op != "mprotect-write" {
        return None;
    }
    let target = args.first().map(String::as_str).unwrap_or("");
    let (rc, errno) = match target.parse::<libc::c_int>() {
        Ok(fd) => mprotect_store(fd),
        Err(_) => (-1, libc::EINVAL),
    };
    println!("EA-OP op={op} target={target} rc={rc} errno={errno}");
    Some(())
}

fn mprotect_store(fd: libc::c_int) -> (i64, i32) {
    const LEN: usize = 1;
    // SAFETY: a fresh mapping of one page of `fd`; no Rust reference points into it.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            LEN,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if map == libc::MAP_FAILED {
        return (-1, errno());
    }
    // SAFETY: `map` is the mapping made above, LEN bytes.
    let rc = unsafe { libc::mprotect(map, LEN, libc::PROT_READ | libc::PROT_WRITE) };
    let outcome = if rc < 0 {
        (-1, errno())
    } else {
        // SAFETY: the mapping is now writable, at least LEN bytes.
        unsafe {
            *(map as *mut u8) = b'P';
            libc::msync(map, LEN, libc::MS_SYNC);
        }
        (0, 0)
    };
    // SAFETY: unmaps what was mapped above.
    unsafe { libc::munmap(map, LEN) };
    outcome
}
