//! What the broker has not acknowledged yet: encoded batches in a memory buffer bounded
//! in bytes, optionally backed by an append-only spool directory so a restart during
//! an outage loses nothing that fit.
//!
//! When the buffer is full the oldest batches go, and their events are reported to the
//! [`LossLedger`] with their sequence numbers. The spool is a series of segment files
//! of records (`B`atch or `D`one), each with a CRC: appends only, whole files deleted
//! once every batch in them is done, a torn tail after a crash is detected and ignored.
//!
//! The spool directory is created with mode 0700 and its files with 0600 whatever the
//! umask, each new segment with `O_EXCL | O_NOFOLLOW`: a symbolic link planted in the
//! spool is refused with an error naming it, never followed. A spool that cannot grow
//! (disk full) leaves the memory buffer working: each batch it could not persist is
//! reported as a `Loss` (source `Spool`, its sequence numbers), a failed append is cut
//! back so what was persisted before stays readable, and the next batch tries again,
//! so persistence resumes as soon as there is room.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use edgearmor_bundle::files::{self, FileError};

use crate::events::pipeline::LossLedger;

/// Identifies a batch across restarts: the agent boot that made it and its first
/// sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BatchKey {
    pub boot_id: [u8; 16],
    pub first_seq: u64,
}

/// One encoded batch waiting for the broker's acknowledgement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingBatch {
    pub key: BatchKey,
    pub events: u32,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// A file or directory of the spool cannot be used safely (a symbolic link, a
    /// directory others may write to) or could not be created.
    #[error("spool: {0}")]
    File(#[from] FileError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

const RECORD_BATCH: u8 = b'B';
const RECORD_DONE: u8 = b'D';
/// kind + boot_id + first_seq + events + len + crc.
const HEADER_LEN: usize = 1 + 16 + 8 + 4 + 4 + 4;
/// A payload larger than this in a spool file is corruption, not data.
const MAX_RECORD_PAYLOAD: usize = 1 << 20;

struct Segment {
    number: u64,
    path: PathBuf,
    bytes: u64,
    live: u32,
}

/// The on-disk half of the offline buffer.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    writer: Option<File>,
    /// Which segment holds each live batch.
    located: std::collections::HashMap<BatchKey, u64>,
    last_sync: Instant,
    dirty: bool,
    /// The number of the next new segment (numbers are never reused: a segment that
    /// could not be deleted must not be appended to as a new one).
    next_number: u64,
    /// The last append failed (disk full): an emptied segment is deleted at once to
    /// give the space back.
    append_failed: bool,
}

/// A segment whose batches are all done is deleted, even while it is the one written
/// to, once it holds this much (so an idle spool does not keep growing with `D`
/// records, and a small disk gets its space back).
const ROTATE_EMPTY_BYTES: u64 = 16 * 1024;

/// How often appended records are flushed to stable storage. A killed agent loses
/// nothing (the page cache survives it); a power cut loses at most this much.
const SYNC_INTERVAL: Duration = Duration::from_secs(1);

impl Spool {
    /// Opens (creating) the spool and returns it with the batches it still holds,
    /// oldest first.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<(Self, Vec<PendingBatch>), SpoolError> {
        files::create_private_dir_all(dir)?;
        let mut numbers: Vec<u64> = std::fs::read_dir(dir)
            .map_err(io_err(dir))?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name();
                let name = name.to_str()?;
                name.strip_prefix("segment-")?
                    .strip_suffix(".log")?
                    .parse()
                    .ok()
            })
            .collect();
        numbers.sort_unstable();
        let mut spool = Self {
            dir: dir.to_owned(),
            max_bytes: max_bytes.max(4096),
            segment_bytes: (max_bytes / 8).clamp(4096, 4 << 20),
            segments: VecDeque::new(),
            writer: None,
            located: Default::default(),
            last_sync: Instant::now(),
            dirty: false,
            next_number: numbers.last().map_or(1, |n| n + 1),
            append_failed: false,
        };
        let mut live: Vec<(u64, PendingBatch)> = Vec::new();
        for number in numbers {
            let path = spool.segment_path(number);
            // Never through a symbolic link; gone since the listing is nothing.
            let bytes = files::read(&path)?.unwrap_or_default();
            let (records, valid_len) = parse_records(&bytes);
            if valid_len < bytes.len() {
                log::warn!(
                    "spool {}: ignoring {} bytes of a torn record at the end",
                    path.display(),
                    bytes.len() - valid_len
                );
            }
            for record in records {
                match record {
                    Record::Batch(b) => live.push((number, b)),
                    Record::Done(key) => live.retain(|(_, b)| b.key != key),
                }
            }
            spool.segments.push_back(Segment {
                number,
                path,
                bytes: valid_len as u64,
                live: 0,
            });
        }
        for (number, b) in &live {
            spool.located.insert(b.key, *number);
            if let Some(seg) = spool.segments.iter_mut().find(|s| s.number == *number) {
                seg.live += 1;
            }
        }
        spool.delete_dead_segments();
        Ok((spool, live.into_iter().map(|(_, b)| b).collect()))
    }

    fn segment_path(&self, number: u64) -> PathBuf {
        self.dir.join(format!("segment-{number:012}.log"))
    }

    /// Total bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    fn append(&mut self, record: &[u8]) -> Result<u64, SpoolError> {
        let needs_new = match self.segments.back() {
            None => true,
            Some(seg) => {
                self.writer.is_none() || seg.bytes + record.len() as u64 > self.segment_bytes
            }
        };
        if needs_new {
            let number = self.next_number;
            self.next_number += 1;
            let path = self.segment_path(number);
            // O_EXCL | O_NOFOLLOW: whatever is already there (a planted link) is refused.
            let file = files::create_new(&path, true).inspect_err(|_| self.append_failed = true)?;
            self.writer = Some(file);
            self.segments.push_back(Segment {
                number,
                path,
                bytes: 0,
                live: 0,
            });
        }
        let Some(seg) = self.segments.back_mut() else {
            return Err(io_err(&self.dir)(io::Error::other("no segment")));
        };
        let Some(writer) = self.writer.as_mut() else {
            return Err(io_err(&seg.path)(io::Error::other("no writer")));
        };
        self.append_failed = false;
        if let Err(e) = writer.write_all(record) {
            self.append_failed = true;
            // A partial record would hide every record after it from the next start:
            // cut it off, or (if even that fails) write to a new segment from now on.
            if let Err(cut) = writer.set_len(seg.bytes) {
                log::warn!(
                    "spool {}: cannot cut off a partial record ({cut}); continuing in a new segment",
                    seg.path.display()
                );
                self.writer = None;
            }
            return Err(io_err(&seg.path)(e));
        }
        seg.bytes += record.len() as u64;
        let number = seg.number;
        self.dirty = true;
        if self.last_sync.elapsed() >= SYNC_INTERVAL {
            self.sync()?;
        }
        Ok(number)
    }

    /// Flushes appended records to stable storage.
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        if let (true, Some(w), Some(seg)) = (self.dirty, self.writer.as_ref(), self.segments.back())
        {
            w.sync_data().map_err(io_err(&seg.path))?;
        }
        self.dirty = false;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Persists a batch. Returns the keys of batches evicted to stay within the size cap.
    pub fn store(&mut self, batch: &PendingBatch) -> Result<Vec<BatchKey>, SpoolError> {
        let record = encode_record(RECORD_BATCH, &batch.key, batch.events, &batch.payload);
        let mut evicted = Vec::new();
        // Keep the newest data: drop whole old segments until the new record fits.
        while self.bytes() + record.len() as u64 > self.max_bytes && self.segments.len() > 1 {
            evicted.extend(self.drop_oldest_segment());
        }
        let number = self.append(&record)?;
        self.located.insert(batch.key, number);
        if let Some(seg) = self.segments.back_mut() {
            seg.live += 1;
        }
        Ok(evicted)
    }

    fn drop_oldest_segment(&mut self) -> Vec<BatchKey> {
        let Some(seg) = self.segments.pop_front() else {
            return Vec::new();
        };
        if self.segments.is_empty() {
            self.writer = None;
        }
        let gone: Vec<BatchKey> = self
            .located
            .iter()
            .filter(|(_, n)| **n == seg.number)
            .map(|(k, _)| *k)
            .collect();
        for key in &gone {
            self.located.remove(key);
        }
        if let Err(e) = std::fs::remove_file(&seg.path) {
            log::warn!("spool: cannot remove {}: {e}", seg.path.display());
        }
        gone
    }

    /// Marks a batch delivered (or dropped): it will not come back after a restart.
    pub fn done(&mut self, key: &BatchKey) -> Result<(), SpoolError> {
        let Some(number) = self.located.remove(key) else {
            return Ok(());
        };
        if let Some(seg) = self.segments.iter_mut().find(|s| s.number == number) {
            seg.live = seg.live.saturating_sub(1);
        }
        let appended = self.append(&encode_record(RECORD_DONE, key, 0, &[]));
        // Even when the record could not be written: a segment with nothing live
        // left can go, and with it the need for the record.
        self.delete_dead_segments();
        appended.map(|_| ())
    }

    /// Deletes leading segments with no live batch, except the one being written.
    fn delete_dead_segments(&mut self) {
        while self.segments.len() > 1 && self.segments.front().is_some_and(|s| s.live == 0) {
            self.drop_oldest_segment();
        }
        let rotate = self.append_failed
            || self
                .segments
                .front()
                .is_some_and(|s| s.bytes >= ROTATE_EMPTY_BYTES);
        if self.segments.len() == 1
            && self.segments.front().is_some_and(|s| s.live == 0)
            && (self.writer.is_none() || rotate)
        {
            self.writer = None;
            self.drop_oldest_segment();
        }
    }
}

fn encode_record(kind: u8, key: &BatchKey, events: u32, payload: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(HEADER_LEN + payload.len());
    r.push(kind);
    r.extend_from_slice(&key.boot_id);
    r.extend_from_slice(&key.first_seq.to_le_bytes());
    r.extend_from_slice(&events.to_le_bytes());
    r.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&r);
    crc.update(payload);
    r.extend_from_slice(&crc.finalize().to_le_bytes());
    r.extend_from_slice(payload);
    r
}

enum Record {
    Batch(PendingBatch),
    Done(BatchKey),
}

/// Parses records until the first invalid one; returns them and the valid length.
fn parse_records(bytes: &[u8]) -> (Vec<Record>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(header) = bytes.get(pos..pos + HEADER_LEN) {
        let kind = header[0];
        let mut boot_id = [0u8; 16];
        boot_id.copy_from_slice(&header[1..17]);
        let word = |at: usize| {
            u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
        };
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&header[17..25]);
        let key = BatchKey {
            boot_id,
            first_seq: u64::from_le_bytes(seq),
        };
        let events = word(25);
        let len = word(29) as usize;
        let crc = word(33);
        if len > MAX_RECORD_PAYLOAD || !matches!(kind, RECORD_BATCH | RECORD_DONE) {
            break;
        }
        let Some(payload) = bytes.get(pos + HEADER_LEN..pos + HEADER_LEN + len) else {
            break;
        };
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header[..HEADER_LEN - 4]);
        hasher.update(payload);
        if hasher.finalize() != crc {
            break;
        }
        out.push(if kind == RECORD_BATCH {
            Record::Batch(PendingBatch {
                key,
                events,
                payload: payload.to_vec(),
            })
        } else {
            Record::Done(key)
        });
        pos += HEADER_LEN + len;
    }
    (out, pos)
}

/// Batches not yet acknowledged, oldest first, bounded in bytes.
pub struct OfflineBuffer {
    max_bytes: usize,
    bytes: usize,
    batches: VecDeque<PendingBatch>,
    spool: Option<Spool>,
    /// Batches dropped (memory full or spool evicted), since start.
    pub dropped_batches: u64,
    /// Batches the spool could not persist (kept in memory, reported), since start.
    pub unpersisted_batches: u64,
    /// Their events.
    pub unpersisted_events: u64,
    /// The current run of spool failures: batches and events, for the log line that
    /// says persistence resumed.
    failing: Option<(u64, u64)>,
}

impl OfflineBuffer {
    pub fn new(max_bytes: usize, spool: Option<(Spool, Vec<PendingBatch>)>) -> Self {
        let mut buffer = Self {
            max_bytes,
            bytes: 0,
            batches: VecDeque::new(),
            spool: None,
            dropped_batches: 0,
            unpersisted_batches: 0,
            unpersisted_events: 0,
            failing: None,
        };
        if let Some((spool, recovered)) = spool {
            buffer.spool = Some(spool);
            for b in recovered {
                buffer.bytes += b.payload.len();
                buffer.batches.push_back(b);
            }
            if !buffer.batches.is_empty() {
                log::info!(
                    "spool: {} batches from before the restart await delivery",
                    buffer.batches.len()
                );
            }
        }
        buffer
    }

    pub fn len(&self) -> usize {
        self.batches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    pub fn get(&self, index: usize) -> Option<&PendingBatch> {
        self.batches.get(index)
    }

    /// Adds a batch; drops the oldest (reporting their events as lost) to make room.
    pub fn push(&mut self, batch: PendingBatch, ledger: &LossLedger) {
        while self.bytes + batch.payload.len() > self.max_bytes {
            let Some(old) = self.batches.pop_front() else {
                break;
            };
            self.lose(old, ledger);
        }
        if batch.payload.len() > self.max_bytes {
            self.lose(batch, ledger);
            return;
        }
        if let Some(spool) = self.spool.as_mut() {
            match spool.store(&batch) {
                Ok(evicted) => {
                    if let Some((batches, events)) = self.failing.take() {
                        log::warn!(
                            "spool {}: persisting again; {batches} batch(es) ({events} events) could not be persisted meanwhile and were reported (Loss, source spool)",
                            spool.dir.display()
                        );
                    }
                    for key in evicted {
                        if let Some(i) = self.batches.iter().position(|b| b.key == key)
                            && let Some(old) = self.batches.remove(i)
                        {
                            self.bytes -= old.payload.len();
                            self.dropped_batches += 1;
                            report_loss(&old, ledger);
                        }
                    }
                }
                Err(e) => self.unpersisted(&batch, &e, ledger),
            }
        }
        self.bytes += batch.payload.len();
        self.batches.push_back(batch);
    }

    /// The spool refused `batch`: kept in memory, counted and reported; logged once
    /// per run of failures (the line that ends the run has the totals).
    fn unpersisted(&mut self, batch: &PendingBatch, error: &SpoolError, ledger: &LossLedger) {
        self.unpersisted_batches += 1;
        let events = u64::from(batch.events);
        self.unpersisted_events += events;
        log::debug!(
            "spool: batch {} ({events} events) not persisted (kept in memory): {error}",
            batch.key.first_seq
        );
        if events > 0 {
            ledger.spool_unpersisted(
                events,
                batch.key.first_seq,
                batch.key.first_seq + events - 1,
            );
        }
        match self.failing.as_mut() {
            Some((batches, total)) => {
                *batches += 1;
                *total += events;
            }
            None => {
                log::error!(
                    "{error}: batch {} ({events} events) kept in memory only; until the spool can grow, every batch it cannot persist is reported (Loss, source spool)",
                    batch.key.first_seq
                );
                self.failing = Some((1, events));
            }
        }
    }

    fn lose(&mut self, batch: PendingBatch, ledger: &LossLedger) {
        self.bytes = self.bytes.saturating_sub(batch.payload.len());
        self.dropped_batches += 1;
        report_loss(&batch, ledger);
        if let Some(spool) = self.spool.as_mut()
            && let Err(e) = spool.done(&batch.key)
        {
            log::warn!("{e}");
        }
    }

    /// The broker acknowledged the batch: forget it. (If the spool cannot record
    /// that, the batch is sent again after a restart: a repeat, not a loss.)
    pub fn acknowledge(&mut self, key: &BatchKey) {
        if let Some(i) = self.batches.iter().position(|b| &b.key == key)
            && let Some(b) = self.batches.remove(i)
        {
            self.bytes -= b.payload.len();
        }
        if let Some(spool) = self.spool.as_mut()
            && let Err(e) = spool.done(key)
            && self.failing.is_none()
        {
            log::warn!(
                "{e}: batch {} may be sent again after a restart",
                key.first_seq
            );
        }
    }

    /// Flushes the spool to stable storage (on shutdown and periodically).
    pub fn sync(&mut self) {
        if let Some(spool) = self.spool.as_mut()
            && let Err(e) = spool.sync()
        {
            log::warn!("{e}");
        }
    }
}

impl Drop for OfflineBuffer {
    /// The totals, once, when the agent is done with the buffer (each batch was
    /// reported as it happened).
    fn drop(&mut self) {
        if self.unpersisted_batches > 0 {
            log::warn!(
                "spool: {} batch(es) ({} events) could not be persisted since the start, each reported (Loss, source spool)",
                self.unpersisted_batches,
                self.unpersisted_events
            );
        }
    }
}

fn report_loss(batch: &PendingBatch, ledger: &LossLedger) {
    ledger.carry_lost_reports(&batch.payload);
    let events = u64::from(batch.events);
    if events > 0 {
        ledger.offline_dropped(
            events,
            batch.key.first_seq,
            batch.key.first_seq + events - 1,
        );
    }
}

#[cfg(test)]
mod tests;
