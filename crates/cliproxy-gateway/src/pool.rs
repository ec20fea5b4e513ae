//! The credentials of one provider: round-robin over the healthy ones, with cool-downs.
//!
//! A provider's pool is replaced as a whole when credentials are added or removed at run time
//! (management API): requests in flight keep the pool they started with, and each [`Slot`]
//! is shared between the old and the new pool, so its cool-down, last use and OAuth state
//! carry over.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
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
    /// Rests of this credential for one model only (a 429 where the provider limits per
    /// model), beside the rest of the whole credential.
    model_cooldowns: ModelCooldowns,
    /// The clock of `cooldown_until_ms`.
    epoch: Epoch,
    /// Where its cool-downs are announced to the other instances sharing the state store
    /// (`None`: this process alone uses the credential).
    share: Option<Arc<CooldownShare>>,
}

/// Announces a provider's cool-downs through a state store shared by several gateway
/// instances (SPEC §11), so that a credential resting on one is skipped by all.
#[derive(Debug)]
pub(crate) struct CooldownShare {
    provider: String,
    state: Arc<dyn cliproxy_netguard::StateStore>,
}

impl CooldownShare {
    pub(crate) fn new(provider: &str, state: Arc<dyn cliproxy_netguard::StateStore>) -> Self {
        Self { provider: provider.to_owned(), state }
    }

    fn announce(&self, credential: &str, model: Option<&str>, rest: Duration) {
        let until_ms =
            unix_now_ms().saturating_add(rest.as_millis().try_into().unwrap_or(u64::MAX));
        self.state.submit(cliproxy_netguard::StateChange::Cooldown(cliproxy_netguard::Cooldown {
            provider: self.provider.clone(),
            credential: credential.to_owned(),
            model: model.map(str::to_owned),
            until_ms,
        }));
    }
}

/// Unix milliseconds now: the clock cool-downs travel on between instances.
fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How a slot authenticates upstream.
#[derive(Debug)]
pub(crate) enum SlotAuth {
    /// An API key that never changes.
    Static(Secret),
    /// OAuth tokens refreshed before they expire (see `refresh.rs`).
    OAuth(crate::oauth_slot::OAuthSlot),
}

impl Slot {
    /// A healthy slot for `credential`, cooling down on `epoch` (its provider's).
    pub(crate) fn new(credential: Credential, base_url: Option<BaseUrl>, epoch: Epoch) -> Self {
        let id = credential.id.clone();
        let auth = match &credential.secret {
            CredentialSecret::OAuth(_) => {
                SlotAuth::OAuth(crate::oauth_slot::OAuthSlot::new(credential))
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
            model_cooldowns: ModelCooldowns::default(),
            epoch,
            share: None,
        }
    }

    /// The slot, its cool-downs announced through `share` (when there is one).
    pub(crate) fn shared(mut self, share: Option<Arc<CooldownShare>>) -> Self {
        self.share = share;
        self
    }

    /// Rests the credential for `duration` (never shortening a longer rest), on every
    /// instance sharing the state store.
    pub(crate) fn cool_down(&self, duration: Duration) {
        self.rest_quietly(None, duration);
        if let Some(share) = &self.share {
            share.announce(&self.id, None, duration);
        }
    }

    /// Rests the credential for `model` only, for `duration` (never shortening a longer
    /// rest): the provider's other models stay usable through it. Announced like
    /// [`Slot::cool_down`].
    pub(crate) fn cool_down_model(&self, model: &str, duration: Duration) {
        self.rest_quietly(Some(model), duration);
        if let Some(share) = &self.share {
            share.announce(&self.id, Some(model), duration);
        }
    }

    /// A rest another instance announced, until `until_ms` (Unix milliseconds): taken as
    /// this instance's own, not announced again.
    pub(crate) fn rest_until(&self, model: Option<&str>, until_ms: u64) {
        let left = until_ms.saturating_sub(unix_now_ms());
        if left > 0 {
            self.rest_quietly(model, Duration::from_millis(left));
        }
    }

    fn rest_quietly(&self, model: Option<&str>, duration: Duration) {
        let now = self.epoch.now_ms();
        let until = now.saturating_add(duration.as_millis().try_into().unwrap_or(u64::MAX));
        match model {
            None => {
                self.cooldown_until_ms.fetch_max(until, Ordering::Relaxed);
            }
            Some(model) => self.model_cooldowns.rest(model, until, now),
        }
    }

    /// Until when (on the epoch's clock) the credential rests for `model`: the later of its
    /// own rest and the model's; 0 or less than `now` when usable.
    fn resting_until(&self, model: &str, now: u64) -> u64 {
        let own = self.cooldown_until_ms.load(Ordering::Relaxed);
        own.max(self.model_cooldowns.until(model, now))
    }

    /// How long the credential still rests, if it does.
    pub(crate) fn cooldown_left(&self) -> Option<Duration> {
        let until = self.cooldown_until_ms.load(Ordering::Relaxed);
        let now = self.epoch.now_ms();
        (until > now).then(|| Duration::from_millis(until - now))
    }

    /// Notes that the slot is being used now.
    pub(crate) fn touch(&self) {
        self.last_used.store(crate::clock::unix_now(), Ordering::Relaxed);
    }

    /// The last use since the previous call, if any.
    pub(crate) fn take_last_used(&self) -> Option<u64> {
        match self.last_used.swap(0, Ordering::Relaxed) {
            0 => None,
            at => Some(at),
        }
    }

    /// Takes `credential` as stored in a shared vault, when the slot can keep serving it:
    /// the same credential (nothing to do), or the same OAuth credential with tokens another
    /// instance refreshed (taken, as a refresh of this slot). `false` when the slot must be
    /// replaced (another key, another base URL, another kind).
    pub(crate) fn take_credential(&self, credential: &Credential) -> bool {
        match (&self.auth, &credential.secret) {
            (SlotAuth::Static(token), CredentialSecret::OAuth(_)) => {
                let _ = token;
                false
            }
            (SlotAuth::Static(token), secret) => {
                token.expose() == secret.bearer().expose()
                    && self.base_url.as_ref().map(ToString::to_string)
                        == credential.base_url.clone()
            }
            (SlotAuth::OAuth(oauth), CredentialSecret::OAuth(theirs)) => {
                let current = oauth.snapshot();
                let Some(ours) = current.tokens() else { return false };
                if current.credential.base_url != credential.base_url {
                    return false;
                }
                if ours.access_token.expose() != theirs.access_token.expose()
                    && theirs.expires_at >= ours.expires_at
                {
                    oauth.set(crate::oauth_slot::OAuthState {
                        credential: credential.clone(),
                        attempts: current.attempts + 1,
                        failure: None,
                        obtained: None,
                    });
                }
                true
            }
            (SlotAuth::OAuth(_), _) => false,
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

/// Models tracked per credential for per-model rests; past it, the rest that ends soonest
/// makes room (its model is tried again early, and meets its 429 again at worst). Model names
/// are the client's choice within the provider's patterns: the table must stay bounded, and
/// a full table must never rest the whole credential (which would let a client bench it by
/// naming many models).
const MAX_MODEL_COOLDOWNS: usize = 256;

/// The per-model rests of one credential. The request path reads one atomic while none is
/// running; the map behind the lock is only read when one may be.
#[derive(Debug, Default)]
struct ModelCooldowns {
    /// The latest end of any per-model rest (epoch milliseconds); 0 when there never was one.
    latest_until: AtomicU64,
    rests: Mutex<HashMap<Box<str>, u64>>,
}

impl ModelCooldowns {
    /// Until when `model` rests; 0 when it does not.
    fn until(&self, model: &str, now: u64) -> u64 {
        if self.latest_until.load(Ordering::Relaxed) <= now {
            return 0;
        }
        let rests = self.rests.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        rests.get(model).copied().unwrap_or(0)
    }

    fn rest(&self, model: &str, until: u64, now: u64) {
        let mut rests = self.rests.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(current) = rests.get_mut(model) {
            *current = (*current).max(until);
        } else {
            if rests.len() >= MAX_MODEL_COOLDOWNS {
                rests.retain(|_, end| *end > now);
            }
            if rests.len() >= MAX_MODEL_COOLDOWNS
                && let Some(soonest) =
                    rests.iter().min_by_key(|(_, end)| **end).map(|(name, _)| name.clone())
            {
                rests.remove(&soonest);
            }
            rests.insert(model.into(), until);
        }
        self.latest_until.fetch_max(until, Ordering::Relaxed);
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

    /// The next credential not in `tried` that is healthy for `model`, or, when none is left,
    /// how long until the first one recovers (`None` when all have been tried).
    pub(crate) fn pick(&self, tried: &[usize], model: &str) -> Result<usize, Option<Duration>> {
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
            let until = self.slots[index].resting_until(model, now);
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

    /// Rests the credential at `index` as `rest` says, `model` being the one asked for.
    pub(crate) fn rest(&self, index: usize, model: &str, rest: Rest) {
        let Some(slot) = self.slots.get(index) else { return };
        match rest {
            Rest::Credential(duration) => slot.cool_down(duration),
            Rest::Model(duration) => slot.cool_down_model(model, duration),
        }
    }
}

/// How a credential rests after an upstream failure that was its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rest {
    /// For every model.
    Credential(Duration),
    /// For the model of the request only (a 429 where the provider limits per model).
    Model(Duration),
}

impl Rest {
    /// How long.
    pub(crate) fn duration(self) -> Duration {
        match self {
            Self::Credential(d) | Self::Model(d) => d,
        }
    }
}

/// A provider's current pool, replaced whole when credentials change.
#[derive(Debug)]
pub(crate) struct PoolCell {
    /// Read without a lock by every request.
    current: ArcSwap<CredentialPool>,
    /// Serialises the read-modify-write of [`PoolCell::update`] (management API calls), so two
    /// changes never build on the same old pool and one lost. Readers never take it.
    writer: Mutex<()>,
    epoch: Epoch,
    /// Where the slots' cool-downs are announced, when the state store is shared.
    share: Option<Arc<CooldownShare>>,
}

impl PoolCell {
    pub(crate) fn new(slots: Vec<Arc<Slot>>, epoch: Epoch) -> Self {
        Self {
            current: ArcSwap::from_pointee(CredentialPool::new(slots, epoch)),
            writer: Mutex::new(()),
            epoch,
            share: None,
        }
    }

    /// The pool, its slots' cool-downs announced through `share`.
    pub(crate) fn shared(mut self, share: Option<Arc<CooldownShare>>) -> Self {
        self.share = share;
        self
    }

    /// The clock slots of this provider cool down on.
    pub(crate) fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Where this provider's cool-downs are announced, for a slot added at run time.
    pub(crate) fn share(&self) -> Option<Arc<CooldownShare>> {
        self.share.clone()
    }

    /// The pool as it is now; a request keeps it for all its attempts.
    pub(crate) fn load(&self) -> Arc<CredentialPool> {
        self.current.load_full()
    }

    /// Replaces the pool with `change(current slots)`.
    pub(crate) fn update(&self, change: impl FnOnce(&[Arc<Slot>]) -> Vec<Arc<Slot>>) {
        let _writer = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let slots = change(self.current.load().slots());
        self.current.store(Arc::new(CredentialPool::new(slots, self.epoch)));
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
        let picks: Vec<usize> = (0..6).map(|_| pool.pick(&[], "m").unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        pool.cool_down(1, Duration::from_secs(10));
        let picks: Vec<usize> = (0..4).map(|_| pool.pick(&[], "m").unwrap()).collect();
        assert!(!picks.contains(&1), "{picks:?}");
        assert_eq!(pool.pick(&[0, 2], "m"), Err(Some(Duration::from_secs(10))));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!((0..3).map(|_| pool.pick(&[], "m").unwrap()).any(|i| i == 1), "recovered");
    }

    #[tokio::test(start_paused = true)]
    async fn exhausted_and_empty_pools() {
        assert_eq!(pool(0).pick(&[], "m"), Err(None));
        let pool = pool(2);
        assert_eq!(pool.pick(&[0, 1], "m"), Err(None));
        pool.cool_down(0, Duration::from_secs(5));
        pool.cool_down(1, Duration::from_secs(3));
        assert_eq!(pool.pick(&[], "m"), Err(Some(Duration::from_secs(3))));
        // A shorter cool-down never shortens a longer one already running.
        pool.cool_down(0, Duration::from_secs(1));
        assert_eq!(pool.pick(&[1], "m"), Err(Some(Duration::from_secs(5))));
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
        assert_eq!(after.pick(&[0], "m"), Ok(1));
        // The old pool still works for requests that started on it.
        assert_eq!(before.pick(&[1], "m"), Err(Some(Duration::from_secs(60))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_rest_for_one_model_leaves_the_others_usable() {
        let pool = pool(2);
        pool.slot(0).cool_down_model("gpt-busy", Duration::from_secs(60));
        // The other models still go round both credentials.
        let picks: Vec<usize> = (0..4).map(|_| pool.pick(&[], "gpt-4o").unwrap()).collect();
        assert_eq!(picks, [0, 1, 0, 1]);
        // The busy model skips the resting credential, and waits for it once the other is tried.
        assert!((0..4).all(|_| pool.pick(&[], "gpt-busy") == Ok(1)));
        assert_eq!(pool.pick(&[1], "gpt-busy"), Err(Some(Duration::from_secs(60))));
        // A longer rest of the whole credential wins over a shorter one of the model.
        pool.cool_down(1, Duration::from_secs(90));
        assert_eq!(pool.pick(&[0], "gpt-busy"), Err(Some(Duration::from_secs(90))));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(pool.pick(&[1], "gpt-busy"), Ok(0), "the model's rest is over");
    }

    #[tokio::test(start_paused = true)]
    async fn the_per_model_table_is_bounded_and_never_rests_the_credential() {
        let pool = pool(1);
        let slot = pool.slot(0);
        for i in 0..(MAX_MODEL_COOLDOWNS * 4) {
            slot.cool_down_model(&format!("model-{i}"), Duration::from_secs(60 + i as u64));
        }
        let held = slot.model_cooldowns.rests.lock().unwrap().len();
        assert_eq!(held, MAX_MODEL_COOLDOWNS);
        // The latest rests are kept; other models, and the credential itself, are usable.
        assert!(pool.pick(&[], &format!("model-{}", MAX_MODEL_COOLDOWNS * 4 - 1)).is_err());
        assert_eq!(pool.pick(&[], "model-0"), Ok(0));
        assert_eq!(pool.pick(&[], "another"), Ok(0));
        assert!(slot.cooldown_left().is_none());
    }
}
