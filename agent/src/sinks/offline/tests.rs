//! The offline buffer and the spool: bounds, losses, crash recovery, private files.

use super::*;

fn batch(first_seq: u64, events: u32, size: usize) -> PendingBatch {
    PendingBatch {
        key: BatchKey {
            boot_id: [7; 16],
            first_seq,
        },
        events,
        payload: vec![first_seq as u8; size],
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("edgearmor-spool-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn full_buffer_drops_oldest_and_reports_their_sequence_numbers() {
    let ledger = LossLedger::default();
    let mut buf = OfflineBuffer::new(250, None);
    buf.push(batch(1, 10, 100), &ledger);
    buf.push(batch(11, 10, 100), &ledger);
    buf.push(batch(21, 10, 100), &ledger);
    assert_eq!(buf.len(), 2);
    assert_eq!(buf.get(0).map(|b| b.key.first_seq), Some(11));
    assert_eq!(buf.dropped_batches, 1);
    let mut sink_batcher = crate::events::pipeline::Batcher::new(
        edgearmor_wire::AgentId {
            cluster: heapless::String::new(),
            node: heapless::String::new(),
            boot_id: [0; 16],
        },
        0,
        Default::default(),
    );
    struct Keep(Vec<edgearmor_wire::Batch>);
    impl crate::events::pipeline::BatchSink for Keep {
        fn deliver(&mut self, b: &edgearmor_wire::EncodedBatch<'_>) {
            self.0.push(b.to_batch());
        }
    }
    let mut keep = Keep(Vec::new());
    let q: crate::events::pipeline::EventQueue<1> = Default::default();
    sink_batcher.collect_losses(&q, &ledger, 0);
    sink_batcher.flush(&mut keep);
    match &keep.0[0].events[0].body {
        edgearmor_wire::EventBody::Loss(l) => {
            assert_eq!((l.count, l.first_seq, l.last_seq), (10, 1, 10))
        }
        other => panic!("expected a loss, got {other:?}"),
    }
}

#[test]
fn spool_survives_a_restart_and_forgets_acknowledged_batches() {
    let dir = temp_dir("restart");
    let ledger = LossLedger::default();
    {
        let mut buf = OfflineBuffer::new(1 << 20, Some(Spool::open(&dir, 1 << 20).expect("open")));
        for i in 0..5 {
            buf.push(batch(1 + i * 10, 10, 50), &ledger);
        }
        buf.acknowledge(&BatchKey {
            boot_id: [7; 16],
            first_seq: 1,
        });
        // No sync: a killed process leaves its writes in the page cache.
    }
    let (_, recovered) = Spool::open(&dir, 1 << 20).expect("reopen");
    let firsts: Vec<u64> = recovered.iter().map(|b| b.key.first_seq).collect();
    assert_eq!(firsts, vec![11, 21, 31, 41]);
    assert!(recovered.iter().all(|b| b.payload.len() == 50));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_torn_tail_is_ignored_not_fatal() {
    let dir = temp_dir("torn");
    {
        let (mut spool, _) = Spool::open(&dir, 1 << 20).expect("open");
        spool.store(&batch(1, 1, 30)).expect("store");
        spool.store(&batch(2, 1, 30)).expect("store");
    }
    let seg = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .next()
        .expect("one segment");
    let len = std::fs::metadata(&seg).expect("meta").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .and_then(|f| f.set_len(len - 7))
        .expect("truncate");
    let (_, recovered) = Spool::open(&dir, 1 << 20).expect("reopen despite the torn record");
    assert_eq!(recovered.len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn spool_size_cap_evicts_oldest_segments_and_counts_them() {
    let dir = temp_dir("cap");
    let ledger = LossLedger::default();
    let mut buf = OfflineBuffer::new(1 << 20, Some(Spool::open(&dir, 8192).expect("open")));
    for i in 0..40 {
        buf.push(batch(1 + i, 1, 500), &ledger);
    }
    let on_disk: u64 = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum();
    assert!(on_disk <= 8192, "spool holds {on_disk} bytes");
    assert!(buf.dropped_batches > 0);
    assert_eq!(
        buf.len() as u64 + buf.dropped_batches,
        40,
        "every batch kept or counted"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_symlink_planted_in_the_spool_is_refused_not_followed() {
    let dir = temp_dir("symlink");
    let target = std::env::temp_dir().join(format!(
        "edgearmor-spool-symlink-target-{}",
        std::process::id()
    ));
    std::fs::write(&target, b"precious").expect("writes");
    let ledger = LossLedger::default();
    // Planted where the next segment will be written.
    let mut buf = OfflineBuffer::new(1 << 20, Some(Spool::open(&dir, 1 << 20).expect("open")));
    let planted = dir.join("segment-000000000001.log");
    std::os::unix::fs::symlink(&target, &planted).expect("links");
    buf.push(batch(1, 3, 40), &ledger);
    assert_eq!(buf.len(), 1, "kept in memory");
    assert_eq!(buf.unpersisted_batches, 1, "and counted");
    assert_eq!(std::fs::read(&target).expect("reads"), b"precious");
    let batcher_losses = ledger.take_offline();
    assert_eq!(
        batcher_losses
            .iter()
            .map(|l| (l.source, l.count, l.first_seq, l.last_seq))
            .collect::<Vec<_>>(),
        [(edgearmor_wire::LossSource::Spool, 3, 1, 3)]
    );
    drop(buf);
    // Found at the next start: refused with an error naming it and its target.
    let err = Spool::open(&dir, 1 << 20).err().expect("refused");
    let message = err.to_string();
    assert!(
        message.contains(&planted.display().to_string())
            && message.contains(&target.display().to_string())
            && message.contains("symbolic link"),
        "{message}"
    );
    assert_eq!(std::fs::read(&target).expect("reads"), b"precious");
    // A link in place of the spool directory itself.
    let _ = std::fs::remove_dir_all(&dir);
    std::os::unix::fs::symlink(std::env::temp_dir(), &dir).expect("links");
    let err = Spool::open(&dir, 1 << 20).err().expect("refused");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    let _ = std::fs::remove_file(&dir);
    let _ = std::fs::remove_file(&target);
}
