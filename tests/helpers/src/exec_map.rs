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

/// `exec-alias PIN_DIR INO ST_DEV`: whether the pinned `EXEC_ALIASES` has an entry
/// for that inode (`stat`'s number and device) under the generation in force;
/// prints `EA-XI-ALIAS ino= found=0|1 name=`.
pub fn alias(args: &[String]) {
    use edgearmor_probe_abi::{ActivePolicy, AliasKey, AliasValue, exec_identity, names};
    let [dir, ino, st_dev] = args else {
        println!("EA-XI-ALIAS usage: exec-alias PIN_DIR INO ST_DEV");
        return;
    };
    let (Ok(ino), Ok(st_dev)) = (ino.parse::<u64>(), st_dev.parse::<u64>()) else {
        println!("EA-XI-ALIAS bad number");
        return;
    };
    let dev = (libc::major(st_dev) << 20) | libc::minor(st_dev);
    let lookup = |map: &str, key: *const u8, value: *mut u8| -> Result<(), i32> {
        let fd = crate::alias::pinned(dir, map)?;
        let found = crate::alias::elem(crate::alias::BPF_MAP_LOOKUP_ELEM, fd, key, value);
        // SAFETY: closes a descriptor we own.
        unsafe { libc::close(fd) };
        found
    };
    let mut active = ActivePolicy::default();
    let zero = 0u32;
    if let Err(e) = lookup(
        names::ACTIVE,
        &zero as *const u32 as *const u8,
        &mut active as *mut ActivePolicy as *mut u8,
    ) {
        println!("EA-XI-ALIAS ino={ino} error={e}");
        return;
    }
    let key = AliasKey {
        ino,
        dev,
        generation: active.generation,
    };
    let mut value = Box::new(AliasValue {
        len: 0,
        _pad: 0,
        path: [0; edgearmor_probe_abi::ALIAS_PATH_CAP],
    });
    let found = lookup(
        exec_identity::EXEC_ALIASES,
        &key as *const AliasKey as *const u8,
        &mut *value as *mut AliasValue as *mut u8,
    );
    let name = String::from_utf8_lossy(&value.path[..(value.len as usize).min(value.path.len())]);
    println!(
        "EA-XI-ALIAS ino={ino} found={} name={name}",
        u8::from(found.is_ok())
    );
}
