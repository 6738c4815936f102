//! KubeArmor's alert throttling, as the batcher applies it: alerts only (never loss
//! reports), and every alert it drops is counted and reported.

use std::time::{Duration, Instant};

use edgearmor_wire::AlertThreshold;

/// KubeArmor's alert throttling: more than `max_per_sec` alerts in one second starts
/// an interval of `throttle_sec` seconds in which alerts are dropped.
pub struct AlertThrottle {
    max_per_sec: u32,
    throttle: Duration,
    window_start: Instant,
    in_window: u32,
    dropping_until: Option<Instant>,
    dropped: u64,
}

/// What the throttle decided for one alert.
#[derive(Debug, PartialEq, Eq)]
pub enum ThrottleVerdict {
    Pass,
    /// The limit was just exceeded: drop, and announce the interval.
    StartDropping,
    Drop,
}

impl AlertThrottle {
    /// `max_per_sec == 0` disables throttling.
    pub fn new(max_per_sec: u32, throttle_sec: u32, now: Instant) -> Self {
        Self {
            max_per_sec,
            throttle: Duration::from_secs(u64::from(throttle_sec)),
            window_start: now,
            in_window: 0,
            dropping_until: None,
            dropped: 0,
        }
    }

    pub fn check(&mut self, now: Instant) -> ThrottleVerdict {
        if self.max_per_sec == 0 {
            return ThrottleVerdict::Pass;
        }
        if let Some(until) = self.dropping_until {
            if now < until {
                self.dropped += 1;
                return ThrottleVerdict::Drop;
            }
            self.dropping_until = None;
            self.window_start = now;
            self.in_window = 0;
        }
        if now.duration_since(self.window_start) >= Duration::from_secs(1) {
            self.window_start = now;
            self.in_window = 0;
        }
        self.in_window += 1;
        if self.in_window > self.max_per_sec {
            self.dropping_until = Some(now + self.throttle);
            self.dropped += 1;
            return ThrottleVerdict::StartDropping;
        }
        ThrottleVerdict::Pass
    }

    /// Alerts dropped since the last call.
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    pub fn threshold_event(&self) -> AlertThreshold {
        AlertThreshold {
            max_alerts_per_sec: self.max_per_sec,
            dropping_alerts_interval: self.throttle.as_secs() as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_follows_kubearmor_semantics() {
        let t0 = Instant::now();
        let mut t = AlertThrottle::new(3, 10, t0);
        let verdicts: Vec<_> = (0..5).map(|_| t.check(t0)).collect();
        assert_eq!(
            verdicts,
            vec![
                ThrottleVerdict::Pass,
                ThrottleVerdict::Pass,
                ThrottleVerdict::Pass,
                ThrottleVerdict::StartDropping,
                ThrottleVerdict::Drop
            ]
        );
        assert_eq!(t.check(t0 + Duration::from_secs(9)), ThrottleVerdict::Drop);
        assert_eq!(t.check(t0 + Duration::from_secs(10)), ThrottleVerdict::Pass);
        assert_eq!(t.take_dropped(), 3);
        let mut off = AlertThrottle::new(0, 10, t0);
        assert!((0..1000).all(|_| off.check(t0) == ThrottleVerdict::Pass));
    }
}
