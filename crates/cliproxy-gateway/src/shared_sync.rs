//! Changes another gateway instance made to a shared state store (SPEC §11), put in force
//! here: the state store's watcher ([`StateStore::watch`]) says what kind of thing changed,
//! [`SharedSignal`] gathers the kinds and wakes the server's key-refresh task, which calls
//! [`sync`] off the async workers (it reads the store). So a key revoked, an address
//! denylisted or a ban made on one instance is in force on the others within the store's
//! publish delay, not on their next beat.
//!
//! A store that only this process writes (SQLite) never calls the watcher; the key refresh
//! every second still picks up what `cliproxy-server keys` writes to it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use cliproxy_netguard::{DenyEntry, SharedChange, StateChange, StateStore};
use cliproxy_vault::CredentialStore;
use slog::{Logger, error, info, warn};

use crate::client_key_table::{ClientKeyCell, Source};
use crate::guard::Guard;
use crate::management::Management;
use crate::provider_set::ProviderSet;

/// Client keys changed.
pub(crate) const KEYS: u8 = 1;
/// The runtime denylist changed.
pub(crate) const DENYLIST: u8 = 1 << 1;
/// Management bans changed.
pub(crate) const BANS: u8 = 1 << 2;
/// The shared server lost everything (restarted empty): re-seed it from this instance.
pub(crate) const EMPTIED: u8 = 1 << 3;
/// A credential was cooled down on another instance.
pub(crate) const COOLDOWNS: u8 = 1 << 4;
/// A credential was stored or deleted in a shared vault.
pub(crate) const CREDENTIALS: u8 = 1 << 5;
/// Everything that can be re-read.
const ALL: u8 = KEYS | DENYLIST | BANS | COOLDOWNS;

/// The kinds of change seen since the last [`SharedSignal::take`], and the wake-up of the
/// task that applies them.
#[derive(Debug, Default)]
pub(crate) struct SharedSignal {
    pending: AtomicU8,
    pub(crate) notify: tokio::sync::Notify,
}

impl SharedSignal {
    /// Asks `state` to report other instances' changes to this signal.
    pub(crate) fn watch(self: &Arc<Self>, state: &dyn StateStore) {
        let signal = Arc::clone(self);
        state.watch(Arc::new(move |change| {
            let bits = match change {
                SharedChange::ClientKeys => KEYS,
                SharedChange::Denylist => DENYLIST,
                SharedChange::Bans => BANS,
                SharedChange::Cooldowns => COOLDOWNS,
                // Everything, and for a store that lost its data, re-seeding first.
                SharedChange::Everything => ALL,
                SharedChange::Emptied => ALL | EMPTIED,
                // A kind this gateway does not know yet: re-read what it does know.
                _ => ALL,
            };
            signal.pending.fetch_or(bits, Ordering::AcqRel);
            signal.notify.notify_one();
        }));
    }

    /// Asks a shared vault to report credentials stored or deleted (by another instance, or
    /// by this one: taking its own write again changes nothing) to this signal. The watcher
    /// stops when the returned value is dropped; `None` for a vault no other process writes.
    pub(crate) fn watch_vault(
        self: &Arc<Self>,
        store: &dyn CredentialStore,
    ) -> Result<Option<cliproxy_vault::Watcher>, cliproxy_vault::Error> {
        let signal = Arc::clone(self);
        store.watch(Box::new(move |_id| {
            signal.pending.fetch_or(CREDENTIALS, Ordering::AcqRel);
            signal.notify.notify_one();
        }))
    }

    /// The kinds seen since the last call.
    pub(crate) fn take(&self) -> u8 {
        self.pending.swap(0, Ordering::AcqRel)
    }
}

/// Puts the changes `bits` names in force here. Blocking: it reads the state store.
pub(crate) fn sync(
    bits: u8,
    guard: &Guard,
    keys: &ClientKeyCell,
    management: &Management,
    providers: &ProviderSet,
    log: &Logger,
) {
    if bits & EMPTIED != 0 {
        reseed(guard, keys, management, log);
    }
    if bits & KEYS != 0 {
        let _ = keys.refresh(guard, log, Source::Elsewhere);
    }
    // What this instance submitted (an alert's block, a ban) is written first, so that the
    // store's lists below are the whole truth: an entry missing from them was removed
    // elsewhere, not merely not written yet.
    if bits & (DENYLIST | BANS) != 0
        && let Err(e) = guard.state.flush()
    {
        warn!(log, "could not write this instance's pending changes before re-reading the shared lists; they are re-read on the next change";
            "error" => crate::netguard_error(&e));
        return;
    }
    if bits & DENYLIST != 0 {
        match guard.state.load_denylist() {
            Ok(stored) => {
                let (added, removed) = sync_denylist(guard, stored);
                if added + removed > 0 {
                    info!(log, "runtime denylist changed by another instance";
                        "added" => added, "removed" => removed);
                }
            }
            Err(e) => warn!(log, "could not read the runtime denylist from the state store";
                "error" => crate::netguard_error(&e)),
        }
    }
    if bits & CREDENTIALS != 0 {
        providers.reconcile_with_vault(log);
    }
    if bits & COOLDOWNS != 0 {
        let now_ms = guard.clock.unix_seconds().saturating_mul(1000);
        match guard.state.load_cooldowns(now_ms) {
            Ok(cooldowns) => {
                for cooldown in cooldowns {
                    let Some(provider) = providers.find(&cooldown.provider) else { continue };
                    let pool = provider.pool.load();
                    for slot in pool.slots().iter().filter(|s| s.id == cooldown.credential) {
                        slot.rest_until(cooldown.model.as_deref(), cooldown.until_ms);
                    }
                }
            }
            Err(e) => warn!(log, "could not read the credential cool-downs from the state store";
                "error" => crate::netguard_error(&e)),
        }
    }
    if bits & BANS != 0 {
        match guard.state.load_bans() {
            Ok(stored) => {
                let (started, lifted) = management.sync_bans(&stored);
                if started + lifted > 0 {
                    info!(log, "management bans changed by another instance";
                        "started" => started, "lifted" => lifted);
                }
            }
            Err(e) => warn!(log, "could not read the management bans from the state store";
                "error" => crate::netguard_error(&e)),
        }
    }
}

/// Makes the IP filter's runtime denylist the store's (written up to date by the caller):
/// entries another instance added are added, entries it removed are removed. Returns
/// (added, removed).
fn sync_denylist(guard: &Guard, stored: Vec<DenyEntry>) -> (usize, usize) {
    let now = guard.clock.unix_seconds();
    let stored: Vec<DenyEntry> = stored.into_iter().filter(|e| e.is_active(now)).collect();
    let current = guard.ip.runtime_denylist();
    let mut added = 0;
    for entry in &stored {
        if !current.iter().any(|c| c == entry) {
            guard.ip.deny(entry.clone());
            added += 1;
        }
    }
    let mut removed = 0;
    for entry in current {
        if !stored.iter().any(|s| s.network == entry.network) {
            guard.ip.undeny(entry.network);
            removed += 1;
        }
    }
    guard.audit.metrics().set_blocked_ips(guard.ip.runtime_denylist().len());
    (added, removed)
}

/// The shared server restarted without its data: what this instance holds — the client
/// keys created at run time, the runtime denylist and the bans in force — is written back,
/// so that the state is not silently lost (quota and budget counts restart from what each
/// instance adds; the server's persistence, AOF, is what keeps them: `docs/deploy.md`).
fn reseed(guard: &Guard, keys: &ClientKeyCell, management: &Management, log: &Logger) {
    let table = keys.load();
    let stored = table.stored();
    for key in stored {
        guard.state.submit(StateChange::ClientKeyPut(key.clone()));
    }
    let denied = guard.ip.runtime_denylist();
    for entry in &denied {
        guard.state.submit(StateChange::DenyAdd(entry.clone()));
    }
    let bans = management.bans();
    for (ip, until) in &bans {
        guard.state.submit(StateChange::Ban(cliproxy_netguard::Ban { ip: *ip, until: *until }));
    }
    match guard.state.flush() {
        Ok(()) => {
            error!(log, "the shared state store restarted empty: this instance wrote back what it holds";
            "client_keys" => stored.len(), "denylist_entries" => denied.len(), "bans" => bans.len(),
            "lost" => "quota, budget and usage counts made before the restart",
            "fix" => "run Redis with appendonly yes (docs/deploy.md)")
        }
        Err(e) => {
            error!(log, "the shared state store restarted empty, and writing back this instance's state failed";
            "error" => crate::netguard_error(&e), "fix" => "run Redis with appendonly yes (docs/deploy.md)")
        }
    }
}
