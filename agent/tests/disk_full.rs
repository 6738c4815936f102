//! A spool that cannot grow: the real agent (`send-test-alerts`) spools to a 64 KiB
//! tmpfs while the broker is down; the disk fills up mid-stream, every batch the spool
//! could not persist is reported as a `Loss` (source `Spool`) and kept in memory, the
//! stream goes on, and once space is freed persistence resumes. Needs root (mount).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::Agent;

use edgearmor::sinks::offline::Spool;
use edgearmor_vm::broker::{Broker, Subscriber, free_port, wait_for};
use edgearmor_wire::{EventBody, LossSource};

/// A tmpfs mounted for one test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Self {
        std::fs::create_dir_all(path).expect("mount point");
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mount -t tmpfs {} failed ({status}): this test needs root",
            path.display()
        );
        Self(path.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn spool_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn a_full_spool_keeps_the_stream_going_counts_every_unpersisted_batch_and_recovers() {
    let dir = edgearmor_vm::broker::scratch(Path::new(env!("CARGO_TARGET_TMPDIR")), "disk-full");
    // Declared first, so unmounted last (after the agent is gone).
    let disk = Tmpfs::mount(&dir.join("disk"), "64k");
    let filler = disk.0.join("filler");
    std::fs::write(&filler, vec![0u8; 32 * 1024]).expect("32 KiB of the 64 taken");
    let spool = disk.0.join("spool");
    let spool_arg = spool.to_string_lossy().into_owned();

    // A persistent subscriber, then the broker goes down: everything waits in the agent.
    let port = free_port();
    let mut broker = Broker::start(&dir, port, "");
    let sub = Subscriber::connect(port, "full-sub");
    broker.stop();
    let broker_addr = format!("127.0.0.1:{port}");
    let mut agent = Agent::start(
        &[("RUST_LOG", "info,edgearmor::sinks::offline=debug")],
        &[
            "--broker",
            &broker_addr,
            "--count",
            "1000000",
            "--interval-ms",
            "2",
            "--buffer-bytes",
            "16000000",
            "--spool-dir",
            &spool_arg,
            "--host-name",
            "gw-full",
            "--shutdown-grace-secs",
            "60",
        ],
    );

    // The disk fills up; several batches in a row cannot be persisted.
    agent.wait_stderr("the spool to fill the disk", |e| {
        e.contains("until the spool can grow")
    });
    agent.wait_stderr("three unpersisted batches", |e| {
        e.matches("not persisted (kept in memory)").count() >= 3
    });
    let first_failure = agent.stderr();
    assert!(
        first_failure.contains("No space left on device"),
        "{first_failure}"
    );

    // Space returns: persistence resumes, and the spool grows again.
    std::fs::remove_file(&filler).expect("frees 32 KiB");
    agent.wait_stderr("persistence to resume", |e| e.contains("persisting again"));
    let resumed_at = spool_bytes(&spool);
    wait_for("the spool to grow again", || {
        spool_bytes(&spool) > resumed_at + 8 * 1024
    });
    // What is on disk now, read with the spool's own parser (a record being written
    // right now is a torn tail and ignored).
    let snapshot = dir.join("snapshot");
    std::fs::create_dir(&snapshot).expect("creates");
    for entry in std::fs::read_dir(&spool)
        .expect("lists")
        .filter_map(Result::ok)
    {
        std::fs::copy(entry.path(), snapshot.join(entry.file_name())).expect("copies");
    }
    let (_, persisted) = Spool::open(&snapshot, 1 << 30).expect("the snapshot parses");

    // The broker returns; the agent delivers everything and stops cleanly.
    broker.resume();
    agent.wait_stderr("the connection", |e| e.contains("MQTT: connected"));
    agent.stop();
    let log = agent.stderr();
    // The agent exits only once the broker acknowledged every batch; the barrier then
    // makes sure all of them reached the subscriber. (Waiting for "no gap below the
    // highest number" would end at the first batch: they arrive in order.)
    sub.barrier();
    let events = sub.events();
    let highest = events.keys().map(|(_, s)| *s).max().unwrap_or(0);
    // Nothing was lost: every number from 1 arrived (the stream went on while the
    // disk was full, from memory).
    let seqs: Vec<u64> = events.keys().map(|(_, s)| *s).collect();
    assert_eq!(seqs, (1..=highest).collect::<Vec<_>>());
    assert!(
        !events
            .values()
            .any(|b| matches!(b, EventBody::Loss(l) if l.source != LossSource::Spool)),
        "no other loss"
    );

    // Every batch the spool could not persist was reported, with its numbers.
    let mut unpersisted = BTreeSet::new();
    let mut reported = 0;
    for body in events.values() {
        if let EventBody::Loss(l) = body
            && l.source == LossSource::Spool
        {
            reported += l.count;
            unpersisted.extend(l.first_seq..=l.last_seq);
        }
    }
    assert!(reported >= 3, "{reported} events reported unpersisted");
    assert_eq!(reported, unpersisted.len() as u64, "ranges do not overlap");
    let totals = log
        .lines()
        .find(|l| l.contains("could not be persisted since the start"))
        .unwrap_or_else(|| panic!("no totals line:\n{log}"));
    assert!(
        totals.contains(&format!("({reported} events)")),
        "the log's total matches the reports: {totals}"
    );
    // Exactly: up to the last batch on disk, each event is either persisted or
    // reported unpersisted, never both, never neither. (The broker was down until
    // then, so nothing had been acknowledged and removed.) Batches persisted after
    // the failures are readable: a failed append left no partial record behind.
    let mut on_disk = BTreeSet::new();
    for batch in &persisted {
        on_disk.extend(batch.key.first_seq..batch.key.first_seq + u64::from(batch.events));
    }
    let last_on_disk = on_disk.last().copied().expect("batches on disk");
    let first_unpersisted = unpersisted.first().copied().expect("some");
    assert!(
        first_unpersisted < last_on_disk,
        "persisted batches after the first failures"
    );
    assert!(on_disk.is_disjoint(&unpersisted), "persisted and reported");
    // (The disk may fill up again after the snapshot: those come later.)
    let accounted: BTreeSet<u64> = on_disk
        .iter()
        .chain(unpersisted.range(..=last_on_disk))
        .copied()
        .collect();
    assert_eq!(
        accounted,
        (1..=last_on_disk).collect::<BTreeSet<_>>(),
        "every batch persisted or reported"
    );
    drop(agent);
    drop(disk);
}
