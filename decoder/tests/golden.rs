//! Golden tests: the two host-alert examples of the shared schema reference
//! (`shared/reference/kubearmor-alert-schema.md`), built from the same input values,
//! encoded with the agent's encoder (`edgearmor_wire::encode`), decoded and expanded,
//! must come out as those exact lines.
//!
//! The reference lines come from `karmor` releases that printed neither `EventData` nor
//! `NodeID`; the decoder reproduces them with `--no-event-data --no-node-id`
//! (`ExpandOptions { event_data: false, node_id: false }`).

mod support;

use edgearmor_alert::expand::ExpandOptions;
use edgearmor_decode::pipeline::{Decoder, DecoderConfig, Received};
use edgearmor_decode::sink::MemorySink;
use edgearmor_wire::{
    Action, Alert, Batch, Data, Event, EventBody, LsmHook, Message, Operation, Outcome, PolicyRef,
    SetIdSyscall, Source,
};
use support::{ScratchDir, agent, encode, events_topic, policies_topic, policy_table, s};

/// Reference example 1, verbatim.
const BLOCKED_SETGID: &str = r#"{"Timestamp":1692814089,"UpdatedTime":"2023-08-23T18:08:09.522743Z","ClusterName":"default","HostName":"gke-my-first-cluster-1-default-pool-9144db50-81gb","HostPPID":1791315,"HostPID":1791316,"PPID":1791315,"PID":1791316,"UID":204,"ParentProcessName":"/usr/sbin/sshd","ProcessName":"/usr/sbin/sshd","PolicyName":"DefaultPosture","Type":"MatchedHostPolicy","Source":"/usr/sbin/sshd","Operation":"Syscall","Data":"syscall=SYS_SETGID userid=0","Enforcer":"BPFLSM","Action":"Block","Result":"Operation not permitted"}"#;

/// Reference example 2, verbatim.
const BLOCKED_EXEC: &str = r#"{"Timestamp":1717259989,"UpdatedTime":"2024-06-01T16:39:49.360067Z","HostName":"kubearmor-dev","HostPPID":1582,"HostPID":2420,"PPID":1582,"PID":2420,"UID":1000,"ParentProcessName":"/usr/bin/bash","ProcessName":"/usr/bin/sleep","PolicyName":"hsp-kubearmor-dev-proc-path-block","Severity":"1","Type":"MatchedHostPolicy","Source":"/usr/bin/bash","Operation":"Process","Resource":"/usr/bin/sleep","Data":"lsm=SECURITY_BPRM_CHECK","Enforcer":"BPFLSM","Action":"Block","Result":"Permission denied","Cwd":"/"}"#;

const REFERENCE_FIELDS: ExpandOptions = ExpandOptions {
    event_data: false,
    node_id: false,
};

fn blocked_setgid() -> (edgearmor_wire::AgentId, Message) {
    let agent = agent(
        "default",
        "gke-my-first-cluster-1-default-pool-9144db50-81gb",
        1,
    );
    let event = Event {
        time_us: 1_692_814_089_522_743,
        body: EventBody::Alert(Alert {
            pid: 1_791_316,
            ppid: 1_791_315,
            uid: 204,
            process: s("/usr/sbin/sshd"),
            parent_process: s("/usr/sbin/sshd"),
            source: Source::Process,
            policy: PolicyRef::DefaultPosture,
            operation: Operation::Syscall,
            resource: s(""),
            data: Data::SetId {
                syscall: SetIdSyscall::Setgid,
                id: 0,
            },
            action: Action::Block,
            result: Outcome::OperationNotPermitted,
            cwd: Default::default(),
        }),
    };
    let batch = Message::Batch(Batch {
        agent: agent.clone(),
        policy_set: 0,
        first_seq: 1,
        events: [event].into_iter().collect(),
    });
    (agent, batch)
}

/// Example 2 has no ClusterName: the agent's cluster is the empty string.
fn blocked_exec() -> (edgearmor_wire::AgentId, Message, Message) {
    let agent = agent("", "kubearmor-dev", 2);
    let table = policy_table(
        &agent,
        0x5eed,
        &[("hsp-kubearmor-dev-proc-path-block", 1, "", "")],
    );
    let event = Event {
        time_us: 1_717_259_989_360_067,
        body: EventBody::Alert(Alert {
            pid: 2420,
            ppid: 1582,
            uid: 1000,
            process: s("/usr/bin/sleep"),
            parent_process: s("/usr/bin/bash"),
            source: Source::ParentProcess,
            policy: PolicyRef::Id(0),
            operation: Operation::Process,
            resource: s("/usr/bin/sleep"),
            data: Data::Lsm(LsmHook::BprmCheckSecurity),
            action: Action::Block,
            result: Outcome::PermissionDenied,
            cwd: s("/"),
        }),
    };
    let batch = Message::Batch(Batch {
        agent: agent.clone(),
        policy_set: 0x5eed,
        first_seq: 1,
        events: [event].into_iter().collect(),
    });
    (agent, table, batch)
}

fn decode_in_process(messages: &[(String, Vec<u8>)]) -> Vec<String> {
    let mut decoder = Decoder::new(DecoderConfig {
        expand: REFERENCE_FIELDS,
        ..DecoderConfig::default()
    });
    let mut sink = MemorySink::default();
    for (topic, payload) in messages {
        decoder
            .handle(
                &Received {
                    topic,
                    payload,
                    retained: false,
                    now_us: 0,
                },
                &mut sink,
            )
            .expect("accepted");
    }
    decoder.finish(&mut sink).expect("memory sink");
    sink.lines
}

#[test]
fn blocked_setgid_is_the_reference_line_byte_for_byte() {
    let (agent, batch) = blocked_setgid();
    let lines = decode_in_process(&[(events_topic(&agent), encode(&batch))]);
    assert_eq!(lines, vec![BLOCKED_SETGID.to_owned()]);
}

#[test]
fn blocked_exec_is_the_reference_line_byte_for_byte() {
    let (agent, table, batch) = blocked_exec();
    let lines = decode_in_process(&[
        (policies_topic(&agent, 0), encode(&table)),
        (events_topic(&agent), encode(&batch)),
    ]);
    assert_eq!(lines, vec![BLOCKED_EXEC.to_owned()]);
}

/// The same through the binary: a capture file of the agent's payloads, decoded with
/// `--input --no-event-data --no-node-id`, prints the reference lines on stdout.
#[test]
fn the_binary_prints_the_reference_lines() {
    let dir = ScratchDir::new("golden");
    let capture = dir.path("golden.cap");
    let (agent1, batch1) = blocked_setgid();
    let (agent2, table2, batch2) = blocked_exec();
    let payloads = [
        (events_topic(&agent1), encode(&batch1)),
        (policies_topic(&agent2, 0), encode(&table2)),
        (events_topic(&agent2), encode(&batch2)),
    ];
    let records: Vec<(&str, &[u8])> = payloads
        .iter()
        .map(|(t, p)| (t.as_str(), p.as_slice()))
        .collect();
    support::write_capture(&capture, &records);
    let capture_arg = capture.to_str().expect("utf-8 temp path");
    let output = std::process::Command::new(support::DECODER)
        .args(["--input", capture_arg, "--no-event-data", "--no-node-id"])
        .output()
        .expect("run edgearmor-decode");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    assert_eq!(stdout, format!("{BLOCKED_SETGID}\n{BLOCKED_EXEC}\n"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(support::counter(&stderr, "lines"), Some(2), "{stderr}");
    assert_eq!(support::counter(&stderr, "rejected"), Some(0), "{stderr}");
}

/// Without the options, the current schema: EventData and NodeID are added, nothing
/// else changes.
#[test]
fn the_default_adds_event_data_and_node_id_only() {
    let (agent, batch) = blocked_setgid();
    let mut decoder = Decoder::new(DecoderConfig::default());
    let mut sink = MemorySink::default();
    decoder
        .handle(
            &Received {
                topic: &events_topic(&agent),
                payload: &encode(&batch),
                retained: false,
                now_us: 0,
            },
            &mut sink,
        )
        .expect("accepted");
    let expected = BLOCKED_SETGID
        .replace(
            r#""Data":"syscall=SYS_SETGID userid=0","#,
            r#""Data":"syscall=SYS_SETGID userid=0","EventData":{"Syscall":"SYS_SETGID","Userid":"0"},"#,
        )
        .replace(
            r#""Result":"Operation not permitted"}"#,
            r#""Result":"Operation not permitted","NodeID":"gke-my-first-cluster-1-default-pool-9144db50-81gb"}"#,
        );
    assert_eq!(sink.lines, vec![expected]);
}
