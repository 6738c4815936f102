//! Reconnect backoff: exponential from 250 ms to 30 s, with jitter, so a fleet that
//! lost its broker does not reconnect in lockstep.
//!
//! The n-th delay after a failure (n = 0, 1, ...) is drawn uniformly from
//! `[d/2, d]` with `d = min(250 ms * 2^n, 30 s)`: never above the cap, and both bounds
//! grow with every failure until the cap. A successful connection resets it.

use std::time::Duration;

/// `d` of the first delay.
pub const INITIAL_DELAY: Duration = Duration::from_millis(250);
/// No delay is longer.
pub const MAX_DELAY: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct Backoff {
    attempt: u32,
    rng: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    /// Seeded from the clock and the process id: processes started together still
    /// draw different delays.
    pub fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Self::with_seed(nanos ^ (u64::from(std::process::id()) << 32))
    }

    /// A reproducible sequence of delays.
    pub fn with_seed(seed: u64) -> Self {
        Self {
            attempt: 0,
            // xorshift must not start at 0.
            rng: seed | 1,
        }
    }

    /// After a successful connection: the next delay starts from the bottom again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// How long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let (low, high) = Self::bounds(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        // xorshift64: jitter only, not security.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let low_ms = low.as_millis() as u64;
        let spread = high.as_millis() as u64 - low_ms;
        Duration::from_millis(low_ms + self.rng % (spread + 1))
    }

    /// The range the delay after `attempt` earlier failures is drawn from.
    pub fn bounds(attempt: u32) -> (Duration, Duration) {
        let initial = INITIAL_DELAY.as_millis() as u64;
        let cap = MAX_DELAY.as_millis() as u64;
        // 250 ms << 7 is over the cap already; the shift stays far from overflowing.
        let high = (initial << attempt.min(16)).min(cap);
        (Duration::from_millis(high / 2), Duration::from_millis(high))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let mut b = Backoff::new();
        let delays: Vec<Duration> = (0..12).map(|_| b.next_delay()).collect();
        assert!(delays[0] <= Duration::from_millis(375) && delays[0] >= Duration::from_millis(125));
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(45_000)));
        assert!(
            delays[11] >= Duration::from_secs(15),
            "capped near 30 s: {:?}",
            delays[11]
        );
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(375));
    }

    #[test]
    fn the_envelope_is_monotone_from_250_ms_to_the_30_s_cap() {
        assert_eq!(
            Backoff::bounds(0),
            (Duration::from_millis(125), INITIAL_DELAY)
        );
        assert_eq!(Backoff::bounds(7), (MAX_DELAY / 2, MAX_DELAY));
        assert_eq!(Backoff::bounds(u32::MAX), (MAX_DELAY / 2, MAX_DELAY));
        let mut previous = Backoff::bounds(0);
        for attempt in 1..200 {
            let (low, high) = Backoff::bounds(attempt);
            assert!(low <= high && high <= MAX_DELAY, "{attempt}");
            assert!(
                low >= previous.0 && high >= previous.1,
                "{attempt}: {previous:?} then {:?}",
                (low, high)
            );
            previous = (low, high);
        }
    }

    #[test]
    fn every_delay_is_inside_its_bounds_and_never_above_the_cap() {
        for seed in 0..64u64 {
            let mut b = Backoff::with_seed(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            for attempt in 0..40 {
                let (low, high) = Backoff::bounds(attempt);
                let d = b.next_delay();
                assert!(
                    low <= d && d <= high,
                    "seed {seed} attempt {attempt}: {d:?}"
                );
                assert!(d <= MAX_DELAY);
            }
        }
    }

    #[test]
    fn delays_are_jittered() {
        // Many agents failing at once: their first delays spread over the range.
        let firsts: std::collections::BTreeSet<Duration> = (0..32u64)
            .map(|seed| Backoff::with_seed(seed.wrapping_mul(0x2545_f491_4f6c_dd1d)).next_delay())
            .collect();
        assert!(firsts.len() > 16, "{firsts:?}");
        let mut b = Backoff::with_seed(7);
        let capped: std::collections::BTreeSet<Duration> =
            (0..40).map(|_| b.next_delay()).skip(10).collect();
        assert!(capped.len() > 10, "still jittered at the cap: {capped:?}");
    }
}
