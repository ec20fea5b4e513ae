//! Time as the limiters and quotas see it: a monotonic reading for token buckets and a wall
//! clock for quota periods, behind one trait so that tests drive both with a fake clock
//! instead of sleeping.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Monotonic nanoseconds since an arbitrary origin (never goes back).
    fn monotonic_nanos(&self) -> u64;
    /// Seconds since the Unix epoch, UTC (for quota periods and expiry times).
    fn unix_seconds(&self) -> u64;
}

/// The real clock.
#[derive(Debug, Clone)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose monotonic origin is now.
    pub fn new() -> Self {
        Self { origin: Instant::now() }
    }

    /// The real clock, shared.
    pub fn shared() -> Arc<dyn Clock> {
        Arc::new(Self::new())
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn monotonic_nanos(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn unix_seconds(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
    }
}

/// A clock that moves only when told to; for tests of limiters, quotas and expiries.
#[derive(Debug, Default)]
pub struct FakeClock {
    nanos: AtomicU64,
    unix: AtomicU64,
}

impl FakeClock {
    /// A fake clock at monotonic 0 and the given Unix time.
    pub fn at_unix(unix_seconds: u64) -> Arc<Self> {
        Arc::new(Self { nanos: AtomicU64::new(0), unix: AtomicU64::new(unix_seconds) })
    }

    /// Moves both readings forward by `by`.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::SeqCst);
        // The wall clock moves in whole seconds, carrying sub-second parts in the monotonic
        // reading: quotas and expiries only need seconds.
        let before = self.nanos.load(Ordering::SeqCst) - nanos;
        let seconds = (before + nanos) / 1_000_000_000 - before / 1_000_000_000;
        self.unix.fetch_add(seconds, Ordering::SeqCst);
    }

    /// Sets the wall clock (the monotonic reading is unchanged).
    pub fn set_unix(&self, unix_seconds: u64) {
        self.unix.store(unix_seconds, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn monotonic_nanos(&self) -> u64 {
        self.nanos.load(Ordering::SeqCst)
    }

    fn unix_seconds(&self) -> u64 {
        self.unix.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_clock_moves_both_readings_together() {
        let clock = FakeClock::at_unix(1_000);
        clock.advance(Duration::from_millis(600));
        assert_eq!((clock.monotonic_nanos(), clock.unix_seconds()), (600_000_000, 1_000));
        clock.advance(Duration::from_millis(600));
        assert_eq!((clock.monotonic_nanos(), clock.unix_seconds()), (1_200_000_000, 1_001));
        clock.advance(Duration::from_secs(59));
        assert_eq!(clock.unix_seconds(), 1_060);
    }
}
