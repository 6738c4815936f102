//! The capture file format: received MQTT messages, for offline decoding (`--input`).
//!
//! `edgearmor-decode --capture FILE` appends every message it receives; any tool can
//! write the same format. All integers are little-endian.
//!
//! ```text
//! file    = magic record*
//! magic   = "EACAP01\n"                        8 bytes
//! record  = received_us  u64                   Unix microseconds when received
//!           flags        u8                    bit 0: retained; other bits 0
//!           topic_len    u16
//!           topic        topic_len bytes       UTF-8
//!           payload_len  u32                   at most MAX_PAYLOAD_LEN
//!           payload      payload_len bytes     as received
//! ```
//!
//! A file ends exactly after a record; anything else is a truncated record.

use std::io::{self, Read, Write};

pub const MAGIC: &[u8; 8] = b"EACAP01\n";
/// Larger payloads are refused: the decoder asks the broker for at most this much.
pub const MAX_PAYLOAD_LEN: u32 = 1 << 20;
const FLAG_RETAINED: u8 = 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedMessage {
    pub received_us: u64,
    pub retained: bool,
    pub topic: String,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Io(io::Error),
    #[error(
        "not a capture file: starts with {:?}, expected {:?}",
        String::from_utf8_lossy(.0),
        String::from_utf8_lossy(MAGIC)
    )]
    BadMagic([u8; 8]),
    /// The file ends inside record `record` (counted from 0), at byte `offset`.
    #[error("record {record} is truncated at byte {offset}")]
    Truncated { record: u64, offset: u64 },
    #[error("record {record} has unknown flags {flags:#04x}")]
    UnknownFlags { record: u64, flags: u8 },
    #[error("record {record} has a topic that is not UTF-8")]
    TopicNotUtf8 { record: u64 },
    #[error("record {record} claims a {len}-byte payload, over the {MAX_PAYLOAD_LEN}-byte limit")]
    PayloadTooLarge { record: u64, len: u32 },
}

pub struct CaptureReader<R> {
    input: R,
    record: u64,
    offset: u64,
    started: bool,
}

impl<R: Read> CaptureReader<R> {
    pub fn new(input: R) -> Self {
        Self {
            input,
            record: 0,
            offset: 0,
            started: false,
        }
    }

    /// The next record, `Ok(None)` at a clean end of file.
    pub fn next_message(&mut self) -> Result<Option<CapturedMessage>, CaptureError> {
        if !self.started {
            let mut magic = [0u8; 8];
            match self.fill(&mut magic, true) {
                Ok(true) => {}
                // Too short to hold the magic: not a capture file either.
                Ok(false) | Err(CaptureError::Truncated { .. }) => {
                    return Err(CaptureError::BadMagic(magic));
                }
                Err(e) => return Err(e),
            }
            if &magic != MAGIC {
                return Err(CaptureError::BadMagic(magic));
            }
            self.started = true;
        }
        let mut head = [0u8; 11];
        if !self.fill(&mut head, true)? {
            return Ok(None);
        }
        let received_us = u64::from_le_bytes([
            head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7],
        ]);
        let flags = head[8];
        if flags & !FLAG_RETAINED != 0 {
            return Err(CaptureError::UnknownFlags {
                record: self.record,
                flags,
            });
        }
        let topic_len = u16::from_le_bytes([head[9], head[10]]);
        let mut topic = vec![0u8; usize::from(topic_len)];
        self.fill(&mut topic, false)?;
        let topic = String::from_utf8(topic).map_err(|_| CaptureError::TopicNotUtf8 {
            record: self.record,
        })?;
        let mut len = [0u8; 4];
        self.fill(&mut len, false)?;
        let payload_len = u32::from_le_bytes(len);
        if payload_len > MAX_PAYLOAD_LEN {
            return Err(CaptureError::PayloadTooLarge {
                record: self.record,
                len: payload_len,
            });
        }
        let mut payload = vec![0u8; payload_len as usize];
        self.fill(&mut payload, false)?;
        self.record += 1;
        Ok(Some(CapturedMessage {
            received_us,
            retained: flags & FLAG_RETAINED != 0,
            topic,
            payload,
        }))
    }

    /// Reads exactly `buf.len()` bytes. At a record boundary (`at_boundary`), a clean
    /// end of file before the first byte returns `Ok(false)`; elsewhere it is truncation.
    fn fill(&mut self, buf: &mut [u8], at_boundary: bool) -> Result<bool, CaptureError> {
        let mut done = 0;
        while done < buf.len() {
            match self.input.read(&mut buf[done..]) {
                Ok(0) if done == 0 && at_boundary => return Ok(false),
                Ok(0) => {
                    return Err(CaptureError::Truncated {
                        record: self.record,
                        offset: self.offset,
                    });
                }
                Ok(n) => {
                    done += n;
                    self.offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(CaptureError::Io(e)),
            }
        }
        Ok(true)
    }
}

/// Writes the magic (when `with_magic`, i.e. for a new or empty file), then records.
pub struct CaptureWriter<W> {
    output: W,
}

impl<W: Write> CaptureWriter<W> {
    pub fn new(mut output: W, with_magic: bool) -> io::Result<Self> {
        if with_magic {
            output.write_all(MAGIC)?;
        }
        Ok(Self { output })
    }

    pub fn append(
        &mut self,
        received_us: u64,
        retained: bool,
        topic: &str,
        payload: &[u8],
    ) -> io::Result<()> {
        let topic_len = u16::try_from(topic.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "topic over 65535 bytes"))?;
        let payload_len = u32::try_from(payload.len())
            .ok()
            .filter(|len| *len <= MAX_PAYLOAD_LEN)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "payload too large"))?;
        self.output.write_all(&received_us.to_le_bytes())?;
        self.output
            .write_all(&[if retained { FLAG_RETAINED } else { 0 }])?;
        self.output.write_all(&topic_len.to_le_bytes())?;
        self.output.write_all(topic.as_bytes())?;
        self.output.write_all(&payload_len.to_le_bytes())?;
        self.output.write_all(payload)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.output.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(messages: &[(u64, bool, &str, &[u8])]) -> Vec<u8> {
        let mut writer = CaptureWriter::new(Vec::new(), true).expect("memory");
        for (t, r, topic, payload) in messages {
            writer.append(*t, *r, topic, payload).expect("memory");
        }
        writer.output
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<CapturedMessage>, CaptureError> {
        let mut reader = CaptureReader::new(bytes);
        let mut out = Vec::new();
        while let Some(m) = reader.next_message()? {
            out.push(m);
        }
        Ok(out)
    }

    #[test]
    fn round_trips() {
        let bytes = capture(&[
            (5, true, "edgearmor/c/n/status", b"{}"),
            (6, false, "t", b""),
        ]);
        let messages = read_all(&bytes).expect("valid");
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].topic, "edgearmor/c/n/status");
        assert!(messages[0].retained && !messages[1].retained);
        assert_eq!(messages[1].received_us, 6);
    }

    #[test]
    fn truncation_bad_magic_and_huge_lengths_are_errors() {
        let bytes = capture(&[(5, false, "topic", b"payload")]);
        for cut in 1..bytes.len() {
            let result = read_all(&bytes[..cut]);
            if cut == MAGIC.len() {
                assert!(matches!(result, Ok(ref m) if m.is_empty()));
            } else if cut < MAGIC.len() {
                assert!(
                    matches!(result, Err(CaptureError::BadMagic(_))),
                    "cut {cut}"
                );
            } else {
                assert!(
                    matches!(result, Err(CaptureError::Truncated { record: 0, .. })),
                    "cut {cut}"
                );
            }
        }
        let mut huge = capture(&[]);
        huge.extend_from_slice(&[0; 8]);
        huge.push(0);
        huge.extend_from_slice(&0u16.to_le_bytes());
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            read_all(&huge),
            Err(CaptureError::PayloadTooLarge { .. })
        ));
        assert!(matches!(
            read_all(b"GARBAGE!"),
            Err(CaptureError::BadMagic(_))
        ));
    }
}
