//! Time for the poll loop without system calls: milliseconds since start derived from the TSC, and the one
//! conversion to wall-clock time the management side needs for events it reports.

use std::time::{Duration, SystemTime};

/// Converts TSC readings to milliseconds since the clock was made. Cheap (`rdtsc` and a multiply-shift) and
/// shareable: every worker reads the same monotonic scale.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    tsc0: u64,
    /// ms = (tsc - tsc0) * mul >> SHIFT; precomputed so the loop never divides.
    mul: u128,
    wall0: SystemTime,
}

/// 52 bits of fraction: the conversion error stays below a microsecond per hour at any TSC frequency.
const SHIFT: u32 = 52;

impl Clock {
    pub fn new(tsc_now: u64, tsc_hz: u64) -> Self {
        let hz = tsc_hz.max(1);
        // Rounded up, so a whole second of cycles is never 999 ms.
        let mul = (1000u128 << SHIFT).div_ceil(u128::from(hz));
        Clock {
            tsc0: tsc_now,
            mul,
            wall0: SystemTime::now(),
        }
    }

    /// Milliseconds since the clock was made, for a TSC reading.
    #[inline]
    pub fn ms(&self, tsc_now: u64) -> u64 {
        ((u128::from(tsc_now.saturating_sub(self.tsc0)) * self.mul) >> SHIFT) as u64
    }

    /// Wall-clock time of a [`Clock::ms`] value.
    pub fn wall(&self, ms: u64) -> SystemTime {
        self.wall0 + Duration::from_millis(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_cycles_to_milliseconds() {
        let c = Clock::new(1_000, 2_500_000_000);
        assert_eq!(c.ms(1_000), 0);
        assert_eq!(c.ms(1_000 + 2_500_000_000), 1000);
        assert_eq!(c.ms(1_000 + 2_500_000_000 * 3600), 3_600_000);
        // A reading from before the clock was made is not negative time.
        assert_eq!(c.ms(0), 0);
        // An hour-long uptime at a high TSC frequency stays within a millisecond.
        let c = Clock::new(0, 3_999_999_999);
        assert!(c.ms(3_999_999_999 * 3600).abs_diff(3_600_000) <= 1);
    }
}
