//! Locked mode's self-protection decisions as alerts: what was tried, in KubeArmor's
//! terms (`Operation`, `Resource`, `Data: lsm=SECURITY_...`).

use edgearmor_probe_abi::{
    TAMPER_BPF, TAMPER_MOUNT, TAMPER_MOVE_MOUNT, TAMPER_PIN, TAMPER_PTRACE, TAMPER_SIGIO,
    TAMPER_SIGNAL, TAMPER_UMOUNT,
};
use edgearmor_wire::{LsmHook, Operation};

/// `bpf()` command names, for the commands the probes deny.
fn bpf_command(cmd: u32) -> String {
    match cmd {
        13 => "BPF_PROG_GET_FD_BY_ID".into(),
        14 => "BPF_MAP_GET_FD_BY_ID".into(),
        30 => "BPF_LINK_GET_FD_BY_ID".into(),
        other => format!("bpf command {other}"),
    }
}

/// What the kernel reports as the signal's name (`SIGKILL`), or its number.
fn signal_name(sig: u32) -> String {
    let name = match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        9 => "SIGKILL",
        15 => "SIGTERM",
        19 => "SIGSTOP",
        _ => return format!("signal {sig}"),
    };
    name.into()
}

/// The alert's operation, resource and hook for a `Subject::Tamper`.
pub fn describe(kind: u32, arg: u32, target: u32) -> (Operation, String, LsmHook) {
    match kind {
        TAMPER_BPF => (
            Operation::Syscall,
            format!("bpf({}) id={target}", bpf_command(arg)),
            LsmHook::Bpf,
        ),
        TAMPER_PIN => (
            Operation::File,
            format!("edgearmor pin inode {target} (BPF_OBJ_GET)"),
            LsmHook::InodePermission,
        ),
        TAMPER_UMOUNT => (
            Operation::Syscall,
            format!("umount of the edgearmor pins' bpffs or a mount above it (flags {arg:#x})"),
            LsmHook::SbUmount,
        ),
        TAMPER_MOUNT => (
            Operation::Syscall,
            format!("mount on a protected path or the edgearmor pins' bpffs (flags {arg:#x})"),
            LsmHook::SbMount,
        ),
        TAMPER_MOVE_MOUNT => (
            Operation::Syscall,
            "move_mount of the edgearmor pins' bpffs, or onto a protected path".into(),
            LsmHook::MoveMount,
        ),
        TAMPER_PTRACE => (
            Operation::Process,
            format!("ptrace of the agent, pid {target} (mode {arg:#x})"),
            LsmHook::PtraceAccessCheck,
        ),
        TAMPER_SIGNAL => (
            Operation::Process,
            format!("{} to the agent, pid {target}", signal_name(arg)),
            LsmHook::TaskKill,
        ),
        TAMPER_SIGIO => (
            Operation::Process,
            format!("{} (F_SETOWN) to the agent, pid {target}", signal_name(arg)),
            LsmHook::FileSendSigiotask,
        ),
        other => (
            Operation::Syscall,
            format!("self-protection {other}"),
            LsmHook::Bpf,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_denial_names_what_was_tried() {
        let (op, resource, hook) = describe(TAMPER_BPF, 30, 12);
        assert_eq!(op, Operation::Syscall);
        assert_eq!(resource, "bpf(BPF_LINK_GET_FD_BY_ID) id=12");
        assert_eq!(hook.kubearmor_name(), "SECURITY_BPF");
        let (op, resource, hook) = describe(TAMPER_SIGNAL, 9, 77);
        assert_eq!(op, Operation::Process);
        assert_eq!(resource, "SIGKILL to the agent, pid 77");
        assert_eq!(hook.kubearmor_name(), "SECURITY_TASK_KILL");
        let (_, resource, hook) = describe(TAMPER_UMOUNT, 2, 0);
        assert_eq!(
            resource,
            "umount of the edgearmor pins' bpffs or a mount above it (flags 0x2)"
        );
        assert_eq!(hook.kubearmor_name(), "SECURITY_SB_UMOUNT");
        assert_eq!(
            describe(TAMPER_PTRACE, 0x12, 5).2.kubearmor_name(),
            "SECURITY_PTRACE_ACCESS_CHECK"
        );
    }
}
