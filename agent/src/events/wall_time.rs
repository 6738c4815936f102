//! Kernel stamps to wall-clock time across clock steps.
//!
//! The kernel stamps events with `CLOCK_BOOTTIME`, which never steps; alerts carry
//! wall-clock time, which does (NTP at boot, an operator, a gateway without a
//! real-time clock starting in 1970). The offset between the two is sampled at every
//! drain of the ring buffer and whenever the host says the wall clock was set
//! ([`crate::host::ClockSteps`]); each stamp is converted with the newest sample taken
//! at or before it, that is with the offset in force when the event happened. So
//! events from before a step keep their early times and later ones get the new time,
//! even when both are read in the same drain.

use std::collections::VecDeque;

/// Offsets kept (a step each, at most): older stamps than the oldest use it.
const MAX_SAMPLES: usize = 16;

/// Changes of the offset up to this size are slewing (NTP adjusting the rate), not a
/// step: no new sample.
const SLEW_NS: i128 = 1_000_000;

/// Samples of `wall - boottime`, oldest first, each with the boot time it was taken at.
#[derive(Clone, Debug)]
pub struct BootToWall {
    samples: VecDeque<(i128, i128)>,
}

impl BootToWall {
    /// Starts with the offset `offset_ns` sampled at boot time `boot_ns`.
    pub fn new(boot_ns: i128, offset_ns: i128) -> Self {
        Self {
            samples: VecDeque::from([(boot_ns, offset_ns)]),
        }
    }

    /// Records the offset sampled at `boot_ns`; returns the step (new minus old
    /// offset, ns) when it moved by more than slewing could.
    pub fn observe(&mut self, boot_ns: i128, offset_ns: i128) -> Option<i128> {
        let &(last_boot, last_offset) = self.samples.back()?;
        let step = offset_ns - last_offset;
        if step.abs() <= SLEW_NS || boot_ns < last_boot {
            return None;
        }
        if self.samples.len() == MAX_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back((boot_ns, offset_ns));
        Some(step)
    }

    /// The offset in force at kernel stamp `stamp_ns`: the newest sample taken at or
    /// before it (the oldest one for stamps older than every sample).
    pub fn offset_at(&self, stamp_ns: i128) -> i128 {
        self.samples
            .iter()
            .rev()
            .find(|(boot, _)| *boot <= stamp_ns)
            .or(self.samples.front())
            .map_or(0, |(_, offset)| *offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i128 = 1_000_000_000;

    #[test]
    fn stamps_keep_the_offset_in_force_when_they_were_made() {
        // Booted with the clock at 1970 (offset 0); NTP steps it to 2026 at boot
        // time 100 s; an operator sets it back an hour at 200 s.
        let now_2026 = 1_790_000_000 * S;
        let mut clock = BootToWall::new(10 * S, 0);
        assert_eq!(clock.observe(50 * S, 300), None, "slewing is no step");
        assert_eq!(clock.observe(100 * S, now_2026), Some(now_2026));
        assert_eq!(clock.observe(200 * S, now_2026 - 3600 * S), Some(-3600 * S));
        // An event at 99 s read after the step keeps its 1970 time.
        assert_eq!(99 * S + clock.offset_at(99 * S), 99 * S);
        assert_eq!(clock.offset_at(5 * S), 0, "older than every sample");
        assert_eq!(clock.offset_at(150 * S), now_2026);
        assert_eq!(clock.offset_at(250 * S), now_2026 - 3600 * S);
        // Bounded: the oldest samples go.
        for i in 0..40 {
            clock.observe((300 + i) * S, i * 10 * S);
        }
        assert_eq!(clock.samples.len(), MAX_SAMPLES);
        assert_eq!(clock.offset_at(339 * S), 390 * S);
    }
}
