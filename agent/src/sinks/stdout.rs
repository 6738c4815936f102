//! The stdout sink: every event of every batch as one KubeArmor JSON line, expanded by
//! the same code the gateway-side decoder uses (`edgearmor_alert::expand`).

use std::io::Write;

use edgearmor_alert::expand::{ExpandOptions, PolicyLookup, expand_event_into};
use edgearmor_alert::{AlertType, HostAlert};
use edgearmor_wire::EncodedBatch;

use crate::events::pipeline::BatchSink;

/// KubeArmor JSON lines, one per event, as `karmor logs --json` prints them.
pub struct JsonLinesSink<W: Write> {
    out: W,
    policies: Option<PolicyLookup>,
    alert: HostAlert,
    line: String,
}

impl<W: Write> JsonLinesSink<W> {
    pub fn new(out: W, policies: Option<PolicyLookup>) -> Self {
        Self {
            out,
            policies,
            alert: HostAlert::new(AlertType::MatchedHostPolicy),
            line: String::with_capacity(1024),
        }
    }

    /// Expands later batches with `policies`.
    pub fn set_policies(&mut self, policies: Option<PolicyLookup>) {
        self.policies = policies;
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write> BatchSink for JsonLinesSink<W> {
    fn deliver(&mut self, batch: &EncodedBatch<'_>) {
        for event in batch.events() {
            expand_event_into(
                batch.agent,
                &event,
                self.policies.as_ref(),
                ExpandOptions::default(),
                &mut self.alert,
            );
            self.line.clear();
            self.alert.write_json(&mut self.line);
            self.line.push('\n');
            // A closed stdout must not stop enforcement: a line that cannot be
            // written is skipped.
            let _ = self.out.write_all(self.line.as_bytes());
        }
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgearmor_wire::{AgentId, Event, EventBody, Loss, LossSource};

    #[test]
    fn writes_one_line_per_event() {
        let mut sink = JsonLinesSink::new(Vec::new(), None);
        let mut batch = edgearmor_wire::BatchEncoder::new();
        for count in [3, 4] {
            let _ = batch.push(&Event {
                time_us: 1,
                body: EventBody::Loss(Loss {
                    source: LossSource::Channel,
                    count,
                    first_seq: 0,
                    last_seq: 0,
                }),
            });
        }
        let agent = AgentId {
            cluster: heapless::String::try_from("c").expect("fits"),
            node: heapless::String::try_from("n").expect("fits"),
            boot_id: [0; 16],
        };
        sink.deliver(&batch.finish(&agent, 0, 1).expect("encodes"));
        let text = String::from_utf8(sink.into_inner()).expect("utf8");
        assert_eq!(text.lines().count(), 2);
        assert!(
            text.lines().all(|l| l.contains("\"Type\":\"SystemEvent\"")),
            "{text}"
        );
    }
}
