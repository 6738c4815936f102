//! edgearmor's wire format: what an agent publishes over MQTT and a decoder reads.
//!
//! Every payload is one version byte ([`WIRE_VERSION`]) followed by a postcard-encoded
//! [`Message`]. Events carry only what the decoder cannot reconstruct: no cluster or
//! host names per event (they are in the batch), policy metadata by id (a
//! [`PolicyTable`] travels separately, retained), `Data` strings as enums.
//!
//! Postcard is not self-describing, so this format only grows: fields and enum
//! variants are never reordered or removed, new variants go at the end of their enum,
//! and a change that cannot be expressed that way bumps [`WIRE_VERSION`]. The rules and
//! a byte-level example are in `docs/wire-format.md`.
//!
//! `no_std`, heapless: every type has a bounded encoded size known at compile time
//! ([`Message::MAX_ENCODED_LEN`]), so buffers are sized once and never grow.
#![no_std]
// Inline, fixed-capacity variants are the point of a no_std heapless format: no boxing.
#![allow(clippy::large_enum_variant)]

use edgearmor_probe_abi::{
    FILE_HOOK_CHMOD, FILE_HOOK_CHOWN, FILE_HOOK_FILE_TRUNCATE, FILE_HOOK_LINK, FILE_HOOK_MKDIR,
    FILE_HOOK_MKNOD, FILE_HOOK_MMAP, FILE_HOOK_MPROTECT, FILE_HOOK_OPEN, FILE_HOOK_PERMISSION,
    FILE_HOOK_RENAME, FILE_HOOK_RMDIR, FILE_HOOK_SYMLINK, FILE_HOOK_TRUNCATE, FILE_HOOK_UNLINK,
    FILE_HOOKS,
};
use heapless::{String, Vec};
use postcard::experimental::max_size::MaxSize;
use serde::{Deserialize, Serialize};

pub mod batch;
pub mod setid;

pub use batch::{BatchEncoder, BatchFull, EncodedBatch};
pub use setid::{SetIdSyscall, SetidFlavour, SetidKind};

/// The first byte of every payload.
pub const WIRE_VERSION: u8 = 1;
/// Events per [`Batch`]. Bounds keep every message small enough to decode on a
/// thread's stack (the largest message is a few tens of KiB).
pub const MAX_BATCH_EVENTS: usize = 32;
/// Policies per [`PolicyTable`] message; larger sets are sent in several parts.
pub const MAX_POLICIES_PER_TABLE: usize = 16;
/// Bytes of a path (executables, files). A wire bound (it only grows with a version
/// bump), not the probes' limit, which it must cover.
pub const PATH_LEN: usize = 256;
const _: () = assert!(PATH_LEN > edgearmor_probe_abi::MAX_REPORTED_PATH_BYTES);

pub type Path = String<PATH_LEN>;

/// Who sent a message: one boot of one agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct AgentId {
    pub cluster: String<64>,
    pub node: String<64>,
    /// Random per agent start; sequence numbers restart with it.
    pub boot_id: [u8; 16],
}

/// A payload. Append-only: new kinds of message go at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub enum Message {
    Batch(Batch),
    PolicyTable(PolicyTable),
}

/// Consecutive events of one agent boot. Event `i` has sequence number `first_seq + i`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct Batch {
    pub agent: AgentId,
    /// The [`PolicyTable::policy_set`] the policy ids in this batch refer to.
    pub policy_set: u64,
    pub first_seq: u64,
    pub events: Vec<Event, MAX_BATCH_EVENTS>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct Event {
    /// Unix time in microseconds.
    pub time_us: u64,
    pub body: EventBody,
}

/// Append-only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub enum EventBody {
    /// A policy decision (`Type: MatchedHostPolicy`).
    Alert(Alert),
    /// Events lost before they could be sent (`Type: SystemEvent`).
    Loss(Loss),
    /// Alerts are being dropped by the rate limit (`Operation: AlertThreshold`).
    AlertThreshold(AlertThreshold),
    /// Seen, not enforced: the kernel cannot run BPF-LSM and the agent watches in
    /// monitor-only mode (`Enforcer: eBPF Monitor`).
    MonitorAlert(Alert),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct Alert {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub process: Path,
    pub parent_process: Path,
    pub source: Source,
    pub policy: PolicyRef,
    pub operation: Operation,
    pub resource: String<PATH_LEN>,
    pub data: Data,
    pub action: Action,
    pub result: Outcome,
    /// Working directory of the acting process (`Cwd`); empty when unknown.
    pub cwd: Path,
}

/// KubeArmor's `Source`, without repeating a path the alert already carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub enum Source {
    Process,
    ParentProcess,
    Other(Path),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub enum PolicyRef {
    /// Index into the [`PolicyTable`] of the batch's `policy_set`.
    Id(u32),
    /// `PolicyName: DefaultPosture`.
    DefaultPosture,
}

/// KubeArmor's `Operation`. Append-only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub enum Operation {
    Process,
    File,
    Network,
    Capabilities,
    Syscall,
}

/// KubeArmor's `Data`, as the fields it is printed from. Append-only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub enum Data {
    /// `syscall=SYS_SETGID userid=0`.
    SetId { syscall: SetIdSyscall, id: u32 },
    /// `lsm=SECURITY_BPRM_CHECK`.
    Lsm(LsmHook),
    /// `syscall=SYS_EXECVE`.
    Execve,
    /// `lsm=SECURITY_BPRM_CHECK binary=/bin/busybox`: an exec of a multi-call binary,
    /// decided by the applet it runs (the alert's `Resource`): at `hook`, by the
    /// invoked name (`BprmCheckSecurity`) or by the arguments
    /// (`BprmCommittedCreds`, where a Block kills the process: `signal=SIGKILL`).
    MultiCall {
        hook: LsmHook,
        binary: Path,
        killed: bool,
    },
}

/// Append-only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub enum LsmHook {
    BprmCheckSecurity,
    FileOpen,
    FilePermission,
    SocketCreate,
    Capable,
    TaskFixSetuid,
    TaskFixSetgid,
    PathUnlink,
    BprmCommittedCreds,
    PathRmdir,
    PathMkdir,
    PathMknod,
    PathSymlink,
    PathLink,
    PathRename,
    PathTruncate,
    FileTruncate,
    PathChmod,
    PathChown,
    MmapFile,
    FileMprotect,
    /// Locked mode's self-protection hooks.
    Bpf,
    InodePermission,
    SbUmount,
    SbMount,
    MoveMount,
    PtraceAccessCheck,
    TaskKill,
    FileSendSigiotask,
}

impl LsmHook {
    /// The file hooks by the probes' `FILE_HOOK_*` id (`DecisionEvent::detail[1]`).
    pub const FILE_HOOKS: [(u32, LsmHook); FILE_HOOKS.len()] = [
        (FILE_HOOK_OPEN, LsmHook::FileOpen),
        (FILE_HOOK_UNLINK, LsmHook::PathUnlink),
        (FILE_HOOK_RMDIR, LsmHook::PathRmdir),
        (FILE_HOOK_MKDIR, LsmHook::PathMkdir),
        (FILE_HOOK_MKNOD, LsmHook::PathMknod),
        (FILE_HOOK_SYMLINK, LsmHook::PathSymlink),
        (FILE_HOOK_LINK, LsmHook::PathLink),
        (FILE_HOOK_RENAME, LsmHook::PathRename),
        (FILE_HOOK_TRUNCATE, LsmHook::PathTruncate),
        (FILE_HOOK_FILE_TRUNCATE, LsmHook::FileTruncate),
        (FILE_HOOK_CHMOD, LsmHook::PathChmod),
        (FILE_HOOK_CHOWN, LsmHook::PathChown),
        (FILE_HOOK_PERMISSION, LsmHook::FilePermission),
        (FILE_HOOK_MMAP, LsmHook::MmapFile),
        (FILE_HOOK_MPROTECT, LsmHook::FileMprotect),
    ];

    /// The file hook a probe's `FILE_HOOK_*` id names.
    pub fn from_file_hook(id: u32) -> Option<Self> {
        Self::FILE_HOOKS
            .iter()
            .find(|(hook_id, _)| *hook_id == id)
            .map(|(_, hook)| *hook)
    }

    /// KubeArmor's name, e.g. `SECURITY_BPRM_CHECK`; a file hook's is the ABI's
    /// (`FILE_HOOKS`), which names every file hook once.
    pub fn kubearmor_name(self) -> &'static str {
        match self {
            LsmHook::BprmCheckSecurity => "SECURITY_BPRM_CHECK",
            LsmHook::SocketCreate => "SECURITY_SOCKET_CREATE",
            LsmHook::Capable => "SECURITY_CAPABLE",
            LsmHook::TaskFixSetuid => "SECURITY_TASK_FIX_SETUID",
            LsmHook::TaskFixSetgid => "SECURITY_TASK_FIX_SETGID",
            LsmHook::BprmCommittedCreds => "SECURITY_BPRM_COMMITTED_CREDS",
            LsmHook::Bpf => "SECURITY_BPF",
            LsmHook::InodePermission => "SECURITY_INODE_PERMISSION",
            LsmHook::SbUmount => "SECURITY_SB_UMOUNT",
            LsmHook::SbMount => "SECURITY_SB_MOUNT",
            LsmHook::MoveMount => "SECURITY_MOVE_MOUNT",
            LsmHook::PtraceAccessCheck => "SECURITY_PTRACE_ACCESS_CHECK",
            LsmHook::TaskKill => "SECURITY_TASK_KILL",
            LsmHook::FileSendSigiotask => "SECURITY_FILE_SEND_SIGIOTASK",
            file => Self::FILE_HOOKS
                .iter()
                .find(|(_, hook)| *hook == file)
                .and_then(|(id, _)| FILE_HOOKS.iter().find(|(abi_id, _)| abi_id == id))
                .map_or("SECURITY_FILE_OPEN", |(_, name)| name),
        }
    }
}

/// KubeArmor's `Action`. Append-only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub enum Action {
    Allow,
    Audit,
    Block,
}

/// KubeArmor's `Result`. Append-only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub enum Outcome {
    Passed,
    PermissionDenied,
    OperationNotPermitted,
}

impl Outcome {
    pub fn kubearmor_name(self) -> &'static str {
        match self {
            Outcome::Passed => "Passed",
            Outcome::PermissionDenied => "Permission denied",
            Outcome::OperationNotPermitted => "Operation not permitted",
        }
    }
}

/// Where events were lost. Append-only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub enum LossSource {
    /// The kernel's ring buffer was full.
    KernelRingBuffer,
    /// The agent's internal channel was full.
    Channel,
    /// The offline buffer (broker unreachable) was full; the oldest batches went.
    OfflineBuffer,
    /// The rate limit (`max_alerts_per_sec`) dropped them.
    Throttle,
    /// The spool could not persist their batches (disk full, or not writable): they
    /// were kept in memory only and are gone if the agent stops before the broker
    /// acknowledges them. `first_seq..=last_seq` are the numbers concerned.
    Spool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct Loss {
    pub source: LossSource,
    pub count: u64,
    /// For [`LossSource::OfflineBuffer`] and [`LossSource::Spool`]: the sequence
    /// numbers concerned, `first..=last` (0, 0 otherwise).
    pub first_seq: u64,
    pub last_seq: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct AlertThreshold {
    pub max_alerts_per_sec: u32,
    pub dropping_alerts_interval: u32,
}

/// The metadata behind policy ids, for one policy set: policies `first_id..` of
/// `total`. Published (retained) whenever the set changes, in as many parts as needed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct PolicyTable {
    pub agent: AgentId,
    pub policy_set: u64,
    pub total: u32,
    pub first_id: u32,
    pub policies: Vec<PolicyMeta, MAX_POLICIES_PER_TABLE>,
}

/// Bytes of [`PolicyMeta::name`]; policies and rules with longer names are refused.
pub const MAX_POLICY_NAME_BYTES: usize = 128;
/// Bytes of [`PolicyMeta::tags`], the tags joined with commas.
pub const MAX_TAGS_BYTES: usize = 256;
/// Bytes of [`PolicyMeta::message`].
pub const MAX_MESSAGE_BYTES: usize = 256;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct PolicyMeta {
    pub name: String<MAX_POLICY_NAME_BYTES>,
    /// 1..10, 0 when unset.
    pub severity: u8,
    /// Comma-separated, as KubeArmor's `Tags`.
    pub tags: String<MAX_TAGS_BYTES>,
    pub message: String<MAX_MESSAGE_BYTES>,
}

impl Message {
    /// Upper bound of an encoded payload, version byte included.
    pub const MAX_ENCODED_LEN: usize = 1 + <Message as MaxSize>::POSTCARD_MAX_SIZE;
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("empty payload")]
    Empty,
    /// The payload's version byte is not one this decoder knows.
    #[error("unknown wire version {0} (this decoder reads {WIRE_VERSION})")]
    UnknownVersion(u8),
    /// The body is not a valid message (truncated, garbage, or a field over its bound).
    #[error("malformed payload: {0}")]
    Malformed(#[source] postcard::Error),
    /// A valid message followed by this many unexpected bytes.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    /// The output buffer is too small (encoding only).
    #[error("encode buffer too small")]
    BufferTooSmall,
}

/// Writes `[WIRE_VERSION][postcard(message)]` into `buf`; returns the used prefix.
pub fn encode<'a>(message: &Message, buf: &'a mut [u8]) -> Result<&'a mut [u8], WireError> {
    let (version, body) = buf.split_first_mut().ok_or(WireError::BufferTooSmall)?;
    *version = WIRE_VERSION;
    let used = postcard::to_slice(message, body)
        .map_err(|e| match e {
            postcard::Error::SerializeBufferFull => WireError::BufferTooSmall,
            other => WireError::Malformed(other),
        })?
        .len();
    Ok(&mut buf[..1 + used])
}

/// Reads one payload. Never panics, whatever the bytes.
pub fn decode(payload: &[u8]) -> Result<Message, WireError> {
    let (&version, body) = payload.split_first().ok_or(WireError::Empty)?;
    if version != WIRE_VERSION {
        return Err(WireError::UnknownVersion(version));
    }
    let (message, rest) =
        postcard::take_from_bytes::<Message>(body).map_err(WireError::Malformed)?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes(rest.len()));
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    fn s<const N: usize>(v: &str) -> String<N> {
        String::try_from(v).expect("fits")
    }

    #[test]
    fn every_file_hook_has_its_abi_name_and_id() {
        assert_eq!(LsmHook::FILE_HOOKS.len(), FILE_HOOKS.len());
        for (id, name) in FILE_HOOKS {
            let hook = LsmHook::from_file_hook(id).expect("every ABI file hook is a wire hook");
            assert_eq!(hook.kubearmor_name(), name, "hook {id}");
        }
        assert_eq!(
            LsmHook::from_file_hook(FILE_HOOK_RENAME).map(LsmHook::kubearmor_name),
            Some("SECURITY_PATH_RENAME")
        );
        assert_eq!(LsmHook::from_file_hook(FILE_HOOKS.len() as u32), None);
        assert_eq!(LsmHook::PathUnlink.kubearmor_name(), "SECURITY_PATH_UNLINK");
        assert_eq!(
            LsmHook::FilePermission.kubearmor_name(),
            "SECURITY_FILE_PERMISSION"
        );
    }

    pub(crate) fn sample_batch() -> Message {
        let mut events = Vec::new();
        let alert = Event {
            time_us: 1_692_814_089_522_743,
            body: EventBody::Alert(Alert {
                pid: 1791316,
                ppid: 1791315,
                uid: 204,
                process: s("/usr/sbin/sshd"),
                parent_process: s("/usr/sbin/sshd"),
                source: Source::Process,
                policy: PolicyRef::DefaultPosture,
                operation: Operation::Syscall,
                resource: String::new(),
                data: Data::SetId {
                    syscall: SetIdSyscall::Setgid,
                    id: 0,
                },
                action: Action::Block,
                result: Outcome::OperationNotPermitted,
                cwd: Default::default(),
            }),
        };
        events.push(alert).expect("room");
        Message::Batch(Batch {
            agent: AgentId {
                cluster: s("default"),
                node: s("gw1"),
                boot_id: [0xab; 16],
            },
            policy_set: 7,
            first_seq: 1,
            events,
        })
    }

    #[test]
    fn round_trips_and_starts_with_the_version() {
        let msg = sample_batch();
        let mut buf = [0u8; 512];
        let bytes = encode(&msg, &mut buf).expect("fits");
        assert_eq!(bytes[0], WIRE_VERSION);
        assert_eq!(decode(bytes), Ok(msg));
    }

    /// The byte-level example of docs/wire-format.md: if this changes, the format changed.
    #[test]
    fn documented_example_bytes() {
        let mut buf = [0u8; 512];
        let bytes = encode(&sample_batch(), &mut buf).expect("fits");
        let hex: std::string::String = bytes.iter().map(|b| std::format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            concat!(
                "01",
                "00", // version 1, Message::Batch
                "0764656661756c74",
                "03677731",
                "abababababababababababababababab", // agent
                "07",
                "01",
                "01", // policy_set 7, first_seq 1, one event
                "b79ce8f3aff38003",
                "00", // time_us (varint), EventBody::Alert
                "d4aa6d",
                "d3aa6d",
                "cc01", // pid, ppid, uid
                "0e2f7573722f7362696e2f73736864",
                "0e2f7573722f7362696e2f73736864", // process, parent
                "00",
                "01",
                "04",
                "00", // Source::Process, DefaultPosture, Syscall, resource ""
                "00",
                "01",
                "00", // Data::SetId { Setgid, 0 }
                "02",
                "02", // Block, OperationNotPermitted
                "00"  // cwd ""
            )
        );
    }

    #[test]
    fn hostile_payloads_are_errors() {
        let mut buf = [0u8; 512];
        let good = encode(&sample_batch(), &mut buf).expect("fits").to_vec();
        assert_eq!(decode(&[]), Err(WireError::Empty));
        assert_eq!(decode(&[9, 0]), Err(WireError::UnknownVersion(9)));
        for cut in 1..good.len() {
            assert!(decode(&good[..cut]).is_err(), "truncated at {cut}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert_eq!(decode(&longer), Err(WireError::TrailingBytes(1)));
        // A string length far over its bound.
        let mut overlong = good.clone();
        overlong[3] = 0xff;
        overlong.insert(4, 0x7f);
        assert!(decode(&overlong).is_err());
    }

    #[test]
    fn max_encoded_len_bounds_a_full_batch() {
        let Message::Batch(mut batch) = sample_batch() else {
            unreachable!()
        };
        let one = batch.events[0].clone();
        while batch.events.push(one.clone()).is_ok() {}
        let mut buf = std::vec![0u8; Message::MAX_ENCODED_LEN];
        let used = encode(&Message::Batch(batch), &mut buf)
            .expect("fits the bound")
            .len();
        assert!(used <= Message::MAX_ENCODED_LEN);
    }
}
