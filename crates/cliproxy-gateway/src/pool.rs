//! The credentials of one provider: round-robin over the healthy ones, with cool-downs.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use cliproxy_core::Secret;
use tokio::time::Instant;

use crate::config::BaseUrl;

/// One credential as the request path uses it.
#[derive(Debug)]
pub(crate) struct Slot {
    /// The vault id; safe to log.
    pub id: String,
    /// The secret sent upstream.
    pub token: Secret,
    /// Overrides the provider's base URL for this credential.
    pub base_url: Option<BaseUrl>,
    /// Milliseconds since the pool's epoch until which the credential rests; 0 when healthy.
    cooldown_until_ms: AtomicU64,
}

impl Slot {
    /// A healthy slot.
    pub(crate) fn new(id: String, token: Secret, base_url: Option<BaseUrl>) -> Self {
        Self { id, token, base_url, cooldown_until_ms: AtomicU64::new(0) }
    }
}

/// Round-robin over a provider's credentials, skipping those cooling down.
#[derive(Debug)]
pub(crate) struct CredentialPool {
    slots: Vec<Slot>,
    next: AtomicUsize,
    epoch: Instant,
}

impl CredentialPool {
    /// A pool of `slots`.
    pub(crate) fn new(slots: Vec<Slot>) -> Self {
        Self { slots, next: AtomicUsize::new(0), epoch: Instant::now() }
    }

    /// The slot at `index`.
    pub(crate) fn slot(&self, index: usize) -> &Slot {
        &self.slots[index % self.slots.len().max(1)]
    }

    /// The next healthy credential not in `tried`, or, when none is left, how long until the
    /// first one recovers (`None` when all have been tried).
    pub(crate) fn pick(&self, tried: &[usize]) -> Result<usize, Option<Duration>> {
        let count = self.slots.len();
        if count == 0 {
            return Err(None);
        }
        let now = self.now_ms();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut soonest: Option<u64> = None;
        for offset in 0..count {
            let index = (start + offset) % count;
            if tried.contains(&index) {
                continue;
            }
            let until = self.slots[index].cooldown_until_ms.load(Ordering::Relaxed);
            if until <= now {
                return Ok(index);
            }
            soonest = Some(soonest.map_or(until, |s| s.min(until)));
        }
        Err(soonest.map(|until| Duration::from_millis(until - now)))
    }

    /// Rests the credential at `index` for `duration`.
    pub(crate) fn cool_down(&self, index: usize, duration: Duration) {
        if let Some(slot) = self.slots.get(index) {
            let until =
                self.now_ms().saturating_add(duration.as_millis().try_into().unwrap_or(u64::MAX));
            slot.cooldown_until_ms.fetch_max(until, Ordering::Relaxed);
        }
    }

    fn now_ms(&self) -> u64 {
        // Starts at 1 so that 0 always means "healthy".
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX).saturating_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> CredentialPool {
        CredentialPool::new(
            (0..n)
                .map(|i| Slot::new(format!("c{i}"), Secret::from(format!("t{i}")), None))
                .collect(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn round_robin_over_healthy_credentials() {
        let pool = pool(3);
        let picks: Vec<usize> = (0..6).map(|_| pool.pick(&[]).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        pool.cool_down(1, Duration::from_secs(10));
        let picks: Vec<usize> = (0..4).map(|_| pool.pick(&[]).unwrap()).collect();
        assert!(!picks.contains(&1), "{picks:?}");
        assert_eq!(pool.pick(&[0, 2]), Err(Some(Duration::from_secs(10))));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!((0..3).map(|_| pool.pick(&[]).unwrap()).any(|i| i == 1), "recovered");
    }

    #[tokio::test(start_paused = true)]
    async fn exhausted_and_empty_pools() {
        assert_eq!(pool(0).pick(&[]), Err(None));
        let pool = pool(2);
        assert_eq!(pool.pick(&[0, 1]), Err(None));
        pool.cool_down(0, Duration::from_secs(5));
        pool.cool_down(1, Duration::from_secs(3));
        assert_eq!(pool.pick(&[]), Err(Some(Duration::from_secs(3))));
        // A shorter cool-down never shortens a longer one already running.
        pool.cool_down(0, Duration::from_secs(1));
        assert_eq!(pool.pick(&[1]), Err(Some(Duration::from_secs(5))));
    }
}
