//! What a store shared by several processes adds to the [`crate::CredentialStore`] trait: the
//! lease that lets one of them refresh an OAuth credential while the others wait for its new
//! token, and the watcher that tells each of them what another changed.

use std::fmt;

use crate::Result;

/// What [`crate::CredentialStore::watch`] calls: with a credential id, or with `"*"` when
/// changes may have been missed.
pub type ChangeHandler = Box<dyn Fn(&str) + Send + Sync>;

/// The right to refresh one credential's OAuth tokens, from
/// [`crate::CredentialStore::refresh_lock`]. It lapses by itself after the time it was taken
/// for; [`RefreshLease::release`] gives it back as soon as the new tokens are stored.
///
/// Dropping a lease does not release it: releasing may be a network call, which has no place
/// in a `Drop` (the lease lapses instead).
#[must_use = "a lease is released with `release`, or lapses after its time"]
pub struct RefreshLease {
    release: Option<Box<dyn FnOnce() -> Result<bool> + Send>>,
}

impl fmt::Debug for RefreshLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshLease").field("shared", &self.release.is_some()).finish()
    }
}

impl RefreshLease {
    /// The lease of a store only one process uses: nothing to give back.
    pub fn local() -> Self {
        Self { release: None }
    }

    /// A lease given back by `release`, which answers whether it still held the lease (it
    /// must not take back a lease that lapsed and that another holder took since).
    pub fn new(release: impl FnOnce() -> Result<bool> + Send + 'static) -> Self {
        Self { release: Some(Box::new(release)) }
    }

    /// Gives the lease back, so that the others stop waiting for its time to pass. `false`
    /// when it had already lapsed (another holder's lease, if any, is left alone).
    pub fn release(mut self) -> Result<bool> {
        match self.release.take() {
            Some(release) => release(),
            None => Ok(true),
        }
    }
}

/// The thread of [`crate::CredentialStore::watch`]: it stops when this is dropped (within the
/// poll interval of the store that started it).
pub struct Watcher {
    /// Dropping it disconnects the channel the thread checks.
    _stop: std::sync::mpsc::Sender<()>,
}

impl fmt::Debug for Watcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watcher").finish_non_exhaustive()
    }
}

impl Watcher {
    /// A watcher whose thread stops once `stop`'s receiver sees it disconnected.
    pub fn new(stop: std::sync::mpsc::Sender<()>) -> Self {
        Self { _stop: stop }
    }
}
