//! Batches encoded event by event, in place: [`BatchEncoder`] writes each event's
//! postcard bytes as it is added, behind room kept for the batch's header, and writes
//! the header (agent, policy set, first sequence number, count) in front of them when
//! the batch is finished. The payload is the same bytes as
//! [`crate::encode`] of the equivalent [`Message::Batch`], without ever holding the
//! events themselves (a [`crate::Event`] is over a kilobyte in memory, fixed-capacity
//! paths; encoded it is typically under a hundred bytes).

use postcard::experimental::max_size::MaxSize;
use serde::Serialize;

use crate::{AgentId, Batch, Event, MAX_BATCH_EVENTS, Message, WIRE_VERSION, WireError};

/// The event count of a batch is one varint byte.
const _: () = assert!(MAX_BATCH_EVENTS < 128);

/// Room for the header: version byte, message kind, agent, two u64 varints (10 bytes
/// each at most), the event count.
const HEADER_MAX: usize = 1 + 1 + AgentId::POSTCARD_MAX_SIZE + 10 + 10 + 1;
const BUF_LEN: usize = HEADER_MAX + MAX_BATCH_EVENTS * Event::POSTCARD_MAX_SIZE;
const _: () = assert!(BUF_LEN - HEADER_MAX <= Message::MAX_ENCODED_LEN);

/// The header of a [`Message::Batch`], serialised as the owned message's first fields
/// are (postcard writes a sequence's length as a varint, as it does a `usize`).
#[derive(Serialize)]
enum MessageHead<'a> {
    /// Variant 0, as [`Message::Batch`].
    Batch(BatchHead<'a>),
}

#[derive(Serialize)]
struct BatchHead<'a> {
    agent: &'a AgentId,
    policy_set: u64,
    first_seq: u64,
    events: usize,
}

/// The batch was full ([`MAX_BATCH_EVENTS`]): the event was not added.
#[derive(Debug, PartialEq, Eq)]
pub struct BatchFull;

/// Up to [`MAX_BATCH_EVENTS`] events, encoded as they come.
pub struct BatchEncoder {
    buf: [u8; BUF_LEN],
    /// End of the encoded events; they start at `HEADER_MAX`.
    end: usize,
    count: usize,
}

impl Default for BatchEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchEncoder {
    pub const fn new() -> Self {
        Self {
            buf: [0; BUF_LEN],
            end: HEADER_MAX,
            count: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn is_full(&self) -> bool {
        self.count >= MAX_BATCH_EVENTS
    }

    /// Encodes `event` at the end of the batch.
    pub fn push(&mut self, event: &Event) -> Result<(), BatchFull> {
        if self.is_full() {
            return Err(BatchFull);
        }
        // Room for the largest event is reserved per slot, so this cannot run out.
        let used = postcard::to_slice(event, &mut self.buf[self.end..])
            .map_err(|_| BatchFull)?
            .len();
        self.end += used;
        self.count += 1;
        Ok(())
    }

    /// Writes the header in front of the events and returns the whole batch; the
    /// events stay until [`Self::clear`].
    pub fn finish<'a>(
        &'a mut self,
        agent: &'a AgentId,
        policy_set: u64,
        first_seq: u64,
    ) -> Result<EncodedBatch<'a>, WireError> {
        let mut head = [0u8; HEADER_MAX];
        head[0] = WIRE_VERSION;
        let head_len = 1 + postcard::to_slice(
            &MessageHead::Batch(BatchHead {
                agent,
                policy_set,
                first_seq,
                events: self.count,
            }),
            &mut head[1..],
        )
        .map_err(|e| match e {
            postcard::Error::SerializeBufferFull => WireError::BufferTooSmall,
            other => WireError::Malformed(other),
        })?
        .len();
        let start = HEADER_MAX - head_len;
        self.buf[start..HEADER_MAX].copy_from_slice(&head[..head_len]);
        Ok(EncodedBatch {
            agent,
            policy_set,
            first_seq,
            len: self.count,
            payload: &self.buf[start..self.end],
            events: &self.buf[HEADER_MAX..self.end],
        })
    }

    /// Empties the batch for the next one.
    pub fn clear(&mut self) {
        self.end = HEADER_MAX;
        self.count = 0;
    }
}

/// A finished batch: its wire payload, and what it says.
#[derive(Clone, Copy, Debug)]
pub struct EncodedBatch<'a> {
    pub agent: &'a AgentId,
    pub policy_set: u64,
    pub first_seq: u64,
    /// Events in the batch, numbered `first_seq..first_seq + len`.
    pub len: usize,
    /// `[WIRE_VERSION][postcard(Message::Batch)]`, ready to publish.
    pub payload: &'a [u8],
    events: &'a [u8],
}

impl<'a> EncodedBatch<'a> {
    /// The events, decoded one at a time (for sinks that print them).
    pub fn events(&self) -> Events<'a> {
        Events {
            rest: self.events,
            left: self.len,
        }
    }

    /// The owned batch (decoded): for tests and tools, not the hot path.
    pub fn to_batch(&self) -> Batch {
        let mut events = heapless::Vec::new();
        for e in self.events() {
            // At most MAX_BATCH_EVENTS were encoded.
            let _ = events.push(e);
        }
        Batch {
            agent: self.agent.clone(),
            policy_set: self.policy_set,
            first_seq: self.first_seq,
            events,
        }
    }
}

/// Decodes an [`EncodedBatch`]'s events in order.
pub struct Events<'a> {
    rest: &'a [u8],
    left: usize,
}

impl Iterator for Events<'_> {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        if self.left == 0 {
            return None;
        }
        // Bytes this encoder wrote from valid events: decoding them cannot fail; if it
        // ever did, the iteration ends rather than yield garbage.
        let (event, rest) = postcard::take_from_bytes::<Event>(self.rest).ok()?;
        self.rest = rest;
        self.left -= 1;
        Some(event)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::tests::sample_batch;
    use crate::{EventBody, Loss, LossSource, encode};

    #[test]
    fn the_payload_is_the_owned_message_s_encoding() {
        let Message::Batch(mut batch) = sample_batch() else {
            unreachable!()
        };
        let first = batch.events[0].clone();
        batch.events.clear();
        let loss = Event {
            time_us: 3,
            body: EventBody::Loss(Loss {
                source: LossSource::Spool,
                count: 300,
                first_seq: u64::MAX - 1,
                last_seq: u64::MAX,
            }),
        };
        let mut enc = BatchEncoder::new();
        for n in 0..=MAX_BATCH_EVENTS {
            let mut owned = std::vec![0u8; Message::MAX_ENCODED_LEN];
            batch.policy_set = u64::MAX - n as u64;
            batch.first_seq = 1u64 << (2 * n).min(63);
            let expected = encode(&Message::Batch(batch.clone()), &mut owned)
                .expect("fits")
                .to_vec();
            let got = enc
                .finish(&batch.agent, batch.policy_set, batch.first_seq)
                .expect("header fits");
            assert_eq!(got.payload, &expected[..], "{n} events");
            assert_eq!(got.to_batch(), batch);
            if n < MAX_BATCH_EVENTS {
                let next = if n % 2 == 0 {
                    loss.clone()
                } else {
                    first.clone()
                };
                enc.push(&next).expect("room");
                batch.events.push(next).expect("room");
            }
        }
        assert!(enc.is_full());
        assert_eq!(enc.push(&loss), Err(BatchFull));
        enc.clear();
        assert!(enc.is_empty());
    }
}
