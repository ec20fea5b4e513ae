//! The credentials of one provider: round-robin over the healthy ones, with cool-downs.
//!
//! A provider's pool is replaced as a whole when credentials are added or removed at run time
//! (management API): requests in flight keep the pool they started with, and each [`Slot`]
//! is shared between the old and the new pool, so its cool-down, last use and OAuth state
//! carry over.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use cliproxy_core::Secret;
use cliproxy_vault::{Credential, CredentialSecret};
use tokio::time::Instant;

use crate::config::BaseUrl;

/// One credential as the request path uses it.
#[derive(Debug)]
pub(crate) struct Slot {
    /// The vault id; safe to log.
    pub id: String,
    /// Overrides the provider's base URL for this credential.
    pub base_url: Option<BaseUrl>,
    /// The token, static or refreshed.
    pub auth: SlotAuth,
    /// Milliseconds since the provider's epoch until which the credential rests; 0 when
    /// healthy.
    cooldown_until_ms: AtomicU64,
    /// Unix seconds of the last use not yet written to the vault; 0 when none.
    last_used: AtomicU64,
    /// Set when the credential is deleted or replaced, so a refresh in flight does not write
    /// it back.
    removed: AtomicBool,
    /// The clock of `cooldown_until_ms`.
    epoch: Epoch,
}

/// How a slot authenticates upstream.
#[derive(Debug)]
pub(crate) enum SlotAuth {
    /// An API key that never changes.
    Static(Secret),
    /// OAuth tokens refreshed before they expire (see `refresh.rs`).
    OAuth(crate::refresh::OAuthSlot),
}

impl Slot {
    /// A healthy slot for `credential`, cooling down on `epoch` (its provider's).
    pub(crate) fn new(credential: Credential, base_url: Option<BaseUrl>, epoch: Epoch) -> Self {
        let id = credential.id.clone();
        let auth = match &credential.secret {
            CredentialSecret::OAuth(_) => {
                SlotAuth::OAuth(crate::refresh::OAuthSlot::new(credential))
            }
            secret => SlotAuth::Static(secret.bearer().clone()),
        };
        Self {
            id,
            base_url,
            auth,
            cooldown_until_ms: AtomicU64::new(0),
            last_used: AtomicU64::new(0),
            removed: AtomicBool::new(false),
            epoch,
        }
    }

    /// Rests the credential for `duration` (never shortening a longer rest).
    pub(crate) fn cool_down(&self, duration: Duration) {
        let until =
            self.epoch.now_ms().saturating_add(duration.as_millis().try_into().unwrap_or(u64::MAX));
        self.cooldown_until_ms.fetch_max(until, Ordering::Relaxed);
    }

    /// How long the credential still rests, if it does.
    pub(crate) fn cooldown_left(&self) -> Option<Duration> {
        let until = self.cooldown_until_ms.load(Ordering::Relaxed);
        let now = self.epoch.now_ms();
        (until > now).then(|| Duration::from_millis(until - now))
    }

    /// Notes that the slot is being used now.
    pub(crate) fn touch(&self) {
        self.last_used.store(crate::refresh::unix_now(), Ordering::Relaxed);
    }

    /// The last use since the previous call, if any.
    pub(crate) fn take_last_used(&self) -> Option<u64> {
        match self.last_used.swap(0, Ordering::Relaxed) {
            0 => None,
            at => Some(at),
        }
    }

    /// Marks the slot as deleted from the vault.
    pub(crate) fn remove(&self) {
        self.removed.store(true, Ordering::SeqCst);
    }

    /// Whether the slot was deleted from the vault.
    pub(crate) fn is_removed(&self) -> bool {
        self.removed.load(Ordering::SeqCst)
    }
}

/// The clock cool-downs are measured on, shared by every pool of a provider.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Epoch(Instant);

impl Epoch {
    pub(crate) fn now() -> Self {
        Self(Instant::now())
    }

    fn now_ms(self) -> u64 {
        // Starts at 1 so that 0 always means "healthy".
        u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX).saturating_add(1)
    }
}

/// Round-robin over a provider's credentials, skipping those cooling down.
#[derive(Debug)]
pub(crate) struct CredentialPool {
    slots: Vec<Arc<Slot>>,
    next: AtomicUsize,
    epoch: Epoch,
}

impl CredentialPool {
    /// A pool of `slots`.
    pub(crate) fn new(slots: Vec<Arc<Slot>>, epoch: Epoch) -> Self {
        Self { slots, next: AtomicUsize::new(0), epoch }
    }

    /// The slots, in order.
    pub(crate) fn slots(&self) -> &[Arc<Slot>] {
        &self.slots
    }

    /// The slot at `index`.
    pub(crate) fn slot(&self, index: usize) -> &Arc<Slot> {
        &self.slots[index % self.slots.len().max(1)]
    }

    /// The next healthy credential not in `tried`, or, when none is left, how long until the
    /// first one recovers (`None` when all have been tried).
    pub(crate) fn pick(&self, tried: &[usize]) -> Result<usize, Option<Duration>> {
        let count = self.slots.len();
        if count == 0 {
            return Err(None);
        }
        let now = self.epoch.now_ms();
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
            slot.cool_down(duration);
        }
    }
}

/// A provider's current pool, replaced whole when credentials change.
#[derive(Debug)]
pub(crate) struct PoolCell {
    current: RwLock<Arc<CredentialPool>>,
    epoch: Epoch,
}

impl PoolCell {
    pub(crate) fn new(slots: Vec<Arc<Slot>>, epoch: Epoch) -> Self {
        Self { current: RwLock::new(Arc::new(CredentialPool::new(slots, epoch))), epoch }
    }

    /// The clock slots of this provider cool down on.
    pub(crate) fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The pool as it is now; a request keeps it for all its attempts.
    pub(crate) fn load(&self) -> Arc<CredentialPool> {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Replaces the pool with `change(current slots)`.
    pub(crate) fn update(&self, change: impl FnOnce(&[Arc<Slot>]) -> Vec<Arc<Slot>>) {
        let mut current = self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let slots = change(current.slots());
        *current = Arc::new(CredentialPool::new(slots, self.epoch));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(i: usize, epoch: Epoch) -> Arc<Slot> {
        let credential = Credential::new_api_key("openai", Secret::from(format!("token-{i}")))
            .unwrap()
            .with_id(&format!("c{i}"))
            .unwrap();
        Arc::new(Slot::new(credential, None, epoch))
    }

    fn pool(n: usize) -> CredentialPool {
        let epoch = Epoch::now();
        CredentialPool::new((0..n).map(|i| slot(i, epoch)).collect(), epoch)
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

    #[tokio::test(start_paused = true)]
    async fn a_replaced_pool_keeps_the_state_of_its_slots() {
        let epoch = Epoch::now();
        let cell = PoolCell::new((0..2).map(|i| slot(i, epoch)).collect(), epoch);
        let before = cell.load();
        before.cool_down(0, Duration::from_secs(60));
        before.slot(1).touch();
        cell.update(|slots| slots.iter().skip(1).cloned().chain([slot(0, epoch)]).collect());
        let after = cell.load();
        assert_eq!(after.slots().iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["c1", "c0"]);
        // c1 is the same slot (its last use carried over); the new c0 is healthy.
        assert!(after.slot(0).take_last_used().is_some());
        assert_eq!(after.pick(&[0]), Ok(1));
        // The old pool still works for requests that started on it.
        assert_eq!(before.pick(&[1]), Err(Some(Duration::from_secs(60))));
    }
}
