//! Fast loops for the `scratch` part of the fail-closed guest (no shell loops: the
//! races need the hooks hit back to back):
//!
//! - `loop-open N PATH`: opens PATH for reading N times; prints
//!   `EA-LOOP op=loop-open target=PATH pid= attempts= passed= denied= other=`.
//! - `deep-make DEPTH`: below the current directory, creates DEPTH nested
//!   directories of 200-byte names (absolute path longer than PATH_MAX once DEPTH
//!   passes ~20) and a file `target` at the bottom, working with relative paths as
//!   only they can.
//! - `deep-open DEPTH`: walks down the same directories and opens `target` (a path
//!   the kernel cannot resolve: `bpf_d_path` fails with ENAMETOOLONG); prints
//!   `EA-OP op=deep-open target=deep rc= errno=`.

use std::ffi::CString;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Runs one of the loop operations; `None` when `op` is not one.
pub fn run(op: &str, args: &[String]) -> Option<()> {
    match op {
        "loop-open" => loop_open(args),
        "deep-make" => deep(args, true),
        "deep-open" => deep(args, false),
        _ => return None,
    }
    Some(())
}

fn loop_open(args: &[String]) {
    let n: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(0);
    let path = args.get(1).cloned().unwrap_or_default();
    let Ok(c_path) = CString::new(path.as_str()) else {
        println!("EA-LOOP op=loop-open target={path} pid=0 attempts=0 passed=0 denied=0 other=1");
        return;
    };
    let (mut passed, mut denied, mut other) = (0u64, 0u64, 0u64);
    for _ in 0..n {
        // SAFETY: a NUL-terminated path; the descriptor is closed at once.
        let fd = unsafe { libc::open(c_path.as_ptr(), libc::O_RDONLY) };
        if fd >= 0 {
            passed += 1;
            // SAFETY: closes the descriptor just opened.
            unsafe { libc::close(fd) };
        } else if errno() == libc::EACCES {
            denied += 1;
        } else {
            other += 1;
        }
    }
    let pid = std::process::id();
    println!(
        "EA-LOOP op=loop-open target={path} pid={pid} attempts={n} passed={passed} denied={denied} other={other}"
    );
}

/// One 200-byte directory name.
fn component() -> CString {
    CString::new("d".repeat(200)).unwrap_or_default()
}

fn deep(args: &[String], make: bool) {
    let depth: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(0);
    let name = component();
    for _ in 0..depth {
        if make {
            // SAFETY: a NUL-terminated relative name.
            unsafe { libc::mkdir(name.as_ptr(), 0o755) };
        }
        // SAFETY: as above.
        if unsafe { libc::chdir(name.as_ptr()) } != 0 {
            println!("EA-OP op=deep target=deep rc=-1 errno={}", errno());
            return;
        }
    }
    let flags = if make {
        libc::O_WRONLY | libc::O_CREAT
    } else {
        libc::O_RDONLY
    };
    // SAFETY: a NUL-terminated relative name; the descriptor is closed at once.
    let fd = unsafe { libc::open(c"target".as_ptr(), flags, 0o644) };
    let (rc, e) = if fd >= 0 {
        // SAFETY: closes the descriptor just opened.
        unsafe { libc::close(fd) };
        (0, 0)
    } else {
        (-1, errno())
    };
    let op = if make { "deep-make" } else { "deep-open" };
    println!("EA-OP op={op} target=deep rc={rc} errno={e}");
}
