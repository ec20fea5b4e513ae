//! The OAuth state one credential slot of a pool holds: its tokens, its last refresh failure
//! and the lock the one refresh in flight holds. `refresh.rs` refreshes it; `pool.rs` keeps it
//! in the slot. It lives apart from both so that neither imports the other's internals.

use std::sync::Arc;

use arc_swap::ArcSwap;

use cliproxy_vault::{Credential, CredentialSecret, OAuthTokens};

/// Why a request could not get a fresh access token. Holds no secret.
#[derive(Debug, Clone)]
pub(crate) struct RefreshFailure {
    /// A sentence for logs and (shortened) for clients.
    pub reason: String,
}

/// The OAuth state of one slot.
#[derive(Debug)]
pub(crate) struct OAuthSlot {
    /// Read without a lock by every request; written only by the holder of `lock`, so a
    /// plain store (not a read-modify-write) is enough.
    state: ArcSwap<OAuthState>,
    /// Held by the one refresh in flight.
    pub(crate) lock: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Debug)]
pub(crate) struct OAuthState {
    /// The whole credential, to write back with new tokens.
    pub(crate) credential: Credential,
    /// Refreshes finished (successful or not); tells waiters one happened while they waited.
    pub(crate) attempts: u64,
    /// How the last refresh failed, when it did.
    pub(crate) failure: Option<RefreshFailure>,
    /// Unix seconds when this process obtained the access token, when it did: its lifetime
    /// then decides how early it is refreshed (`OAuthTokens::refresh_due`). `None` for a
    /// token read from the vault, which does not store when a token was issued.
    pub(crate) obtained: Option<u64>,
}

impl OAuthState {
    pub(crate) fn tokens(&self) -> Option<&OAuthTokens> {
        match &self.credential.secret {
            CredentialSecret::OAuth(tokens) => Some(tokens),
            _ => None,
        }
    }
}

impl OAuthSlot {
    pub(crate) fn new(credential: Credential) -> Self {
        Self {
            state: ArcSwap::from_pointee(OAuthState {
                credential,
                attempts: 0,
                failure: None,
                obtained: None,
            }),
            lock: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    pub(crate) fn snapshot(&self) -> Arc<OAuthState> {
        self.state.load_full()
    }

    /// Replaces the state. The caller holds `lock` (the refresh in flight), which is what
    /// orders the read of the previous state and this write.
    pub(crate) fn set(&self, state: OAuthState) {
        self.state.store(Arc::new(state));
    }
}
