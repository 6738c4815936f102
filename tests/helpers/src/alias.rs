//! `alias-add PIN_DIR PATH CANONICAL`: writes the `FILE_ALIASES` entry the agent
//! would write for a protected inode: the inode of PATH (followed), under the
//! generation in force (`ACTIVE`), named CANONICAL. Both maps are opened from the
//! agent's pins in PIN_DIR. Lets the VM suite check the probes' path walk on
//! aliases (hard links, bind mounts, chroots) independently of how the agent finds
//! the inodes. Prints `EA-OP op=alias-add target=PATH rc= errno=` and, on success,
//! `EA-ALIAS path= ino= dev= generation=`.
//!
//! `prog-stats`: for every loaded BPF program, `EA-PROG name= verified_insns=` (the
//! instructions the verifier processed to accept it: how close a program is to the
//! verifier's limits on this kernel).

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;

use edgearmor_probe_abi::{ALIAS_PATH_CAP, ActivePolicy, AliasKey, AliasValue, names};

pub(crate) const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_OBJ_GET: libc::c_long = 7;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> i64 {
    // SAFETY: `attr` is a zero-filled buffer at least as large as the part of
    // `union bpf_attr` these commands read; the kernel checks the rest is zero.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) }
}

/// A descriptor of the map pinned at `dir/name`.
pub(crate) fn pinned(dir: &str, name: &str) -> Result<i32, i32> {
    let path = CString::new(format!("{dir}/{name}")).map_err(|_| libc::EINVAL)?;
    let mut attr = [0u8; 128];
    attr[0..8].copy_from_slice(&(path.as_ptr() as u64).to_ne_bytes());
    let fd = bpf(BPF_OBJ_GET, &mut attr);
    if fd < 0 { Err(errno()) } else { Ok(fd as i32) }
}

/// `BPF_MAP_LOOKUP_ELEM` (`cmd` 1) or `BPF_MAP_UPDATE_ELEM` (`cmd` 2, `BPF_ANY`).
pub(crate) fn elem(cmd: libc::c_long, fd: i32, key: *const u8, value: *mut u8) -> Result<(), i32> {
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&(fd as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(key as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(value as u64).to_ne_bytes());
    if bpf(cmd, &mut attr) < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

fn add(pin_dir: &str, path: &str, canonical: &str) -> Result<(AliasKey, u32), i32> {
    let meta = std::fs::metadata(path).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    let rdev = meta.dev();
    // The kernel's own encoding of `sb->s_dev` (major << 20 | minor); `st_dev` is
    // the same device in the user-space encoding.
    let dev = (libc::major(rdev) << 20) | libc::minor(rdev);
    if canonical.len() >= ALIAS_PATH_CAP {
        return Err(libc::ENAMETOOLONG);
    }
    let active_fd = pinned(pin_dir, names::ACTIVE)?;
    let mut active = ActivePolicy {
        generation: 0,
        class_mask: 0,
    };
    let zero = 0u32;
    let looked = elem(
        BPF_MAP_LOOKUP_ELEM,
        active_fd,
        &zero as *const u32 as *const u8,
        &mut active as *mut ActivePolicy as *mut u8,
    );
    // SAFETY: closes a descriptor we own.
    unsafe { libc::close(active_fd) };
    looked?;
    let key = AliasKey {
        ino: meta.ino(),
        dev,
        generation: active.generation,
    };
    let mut value = AliasValue {
        len: canonical.len() as u32,
        _pad: 0,
        path: [0; ALIAS_PATH_CAP],
    };
    value.path[..canonical.len()].copy_from_slice(canonical.as_bytes());
    let fd = pinned(pin_dir, names::FILE_ALIASES)?;
    let written = elem(
        BPF_MAP_UPDATE_ELEM,
        fd,
        &key as *const AliasKey as *const u8,
        &mut value as *mut AliasValue as *mut u8,
    );
    // SAFETY: closes a descriptor we own.
    unsafe { libc::close(fd) };
    written.map(|()| (key, dev))
}

pub fn run(args: &[String]) {
    let [pin_dir, path, canonical] = args else {
        eprintln!("usage: setid-probe alias-add PIN_DIR PATH CANONICAL");
        std::process::exit(2);
    };
    match add(pin_dir, path, canonical) {
        Ok((key, dev)) => {
            println!(
                "EA-ALIAS path={path} ino={} dev={dev:#x} generation={}",
                key.ino, key.generation
            );
            println!("EA-OP op=alias-add target={path} rc=0 errno=0");
        }
        Err(e) => println!("EA-OP op=alias-add target={path} rc=-1 errno={e}"),
    }
}

const BPF_PROG_GET_NEXT_ID: libc::c_long = 11;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// `struct bpf_prog_info`: where `name` and `verified_insns` are, and its size.
const INFO_NAME: usize = 64;
const INFO_VERIFIED_INSNS: usize = 216;
const INFO_SIZE: usize = 232;

pub fn prog_stats() {
    let mut id = 0u32;
    loop {
        let mut next = [0u8; 128];
        next[0..4].copy_from_slice(&id.to_ne_bytes());
        if bpf(BPF_PROG_GET_NEXT_ID, &mut next) < 0 {
            break;
        }
        id = u32::from_ne_bytes([next[4], next[5], next[6], next[7]]);
        let mut by_id = [0u8; 128];
        by_id[0..4].copy_from_slice(&id.to_ne_bytes());
        let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut by_id);
        if fd < 0 {
            continue;
        }
        let mut info = [0u8; INFO_SIZE];
        let mut get = [0u8; 128];
        get[0..4].copy_from_slice(&(fd as u32).to_ne_bytes());
        get[4..8].copy_from_slice(&(INFO_SIZE as u32).to_ne_bytes());
        get[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_ne_bytes());
        let rc = bpf(BPF_OBJ_GET_INFO_BY_FD, &mut get);
        // SAFETY: closes a descriptor we own.
        unsafe { libc::close(fd as i32) };
        if rc < 0 {
            continue;
        }
        let name = &info[INFO_NAME..INFO_NAME + 16];
        let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
        let v = &info[INFO_VERIFIED_INSNS..INFO_VERIFIED_INSNS + 4];
        println!(
            "EA-PROG name={} verified_insns={}",
            String::from_utf8_lossy(&name[..end]),
            u32::from_ne_bytes([v[0], v[1], v[2], v[3]])
        );
    }
}
