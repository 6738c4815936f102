//! `setid-probe OP ID`: calls one setuid/setgid-family syscall and prints a
//! machine-readable line the VM suite parses:
//!
//! `EA-SETID op=setgid id=0 pid=123 ppid=45 rc=-1 errno=1`
//!
//! The VM suite installs copies of this binary under the paths rules name
//! (`/usr/sbin/sshd`, `/usr/bin/sshd-other`, ...), so it must be static.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(op), Some(id)) = (args.get(1), args.get(2).and_then(|s| s.parse::<u32>().ok()))
    else {
        eprintln!(
            "usage: setid-probe setuid|setgid|setreuid|setregid|setresuid|setresgid|setfsuid|setfsgid ID"
        );
        std::process::exit(2);
    };
    // SAFETY: plain syscalls on integer arguments; none touch memory we own.
    let rc = unsafe {
        match op.as_str() {
            "setuid" => libc::setuid(id),
            "setgid" => libc::setgid(id),
            "setreuid" => libc::setreuid(u32::MAX, id),
            "setregid" => libc::setregid(u32::MAX, id),
            "setresuid" => libc::setresuid(u32::MAX, id, u32::MAX),
            "setresgid" => libc::setresgid(u32::MAX, id, u32::MAX),
            // setfs* return the previous id, never an error code.
            "setfsuid" => libc::setfsuid(id),
            "setfsgid" => libc::setfsgid(id),
            other => {
                eprintln!("setid-probe: unknown operation {other}");
                std::process::exit(2);
            }
        }
    };
    let errno = if rc == -1 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    } else {
        0
    };
    // SAFETY: getpid/getppid cannot fail.
    let (pid, ppid) = unsafe { (libc::getpid(), libc::getppid()) };
    println!("EA-SETID op={op} id={id} pid={pid} ppid={ppid} rc={rc} errno={errno}");
}
