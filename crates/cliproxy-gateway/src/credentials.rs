//! The management plane's credential writes, and what it reads of the pools: a credential
//! written to the vault and then swapped into its provider's pool (so the next request can
//! use it, no restart), deleted from the pools and then the vault, whose pool holds an id,
//! how long a credential still rests, and the last-use times written back for `vault list`.
//! One `Vault` write lock orders these writes with the refreshes' (`refresh.rs`).

use std::sync::Arc;
use std::time::Duration;

use cliproxy_core::ErrorCode;
use cliproxy_vault::Credential;
use slog::warn;

use crate::config::ProviderKind;
use crate::error::ApiError;
use crate::pool::Slot;
use crate::provider_set::{ProviderSet, credential_base_url};

impl ProviderSet {
    /// Whether `name` is a configured provider.
    pub(crate) fn knows_provider(&self, name: &str) -> bool {
        self.find(name).is_some()
    }

    /// Whether `name` is a configured provider that uses vault credentials (not the mock).
    pub(crate) fn accepts_credentials_for(&self, name: &str) -> bool {
        self.providers.iter().any(|p| p.name == name && p.kind != ProviderKind::Mock)
    }

    /// The providers that take credentials, for messages.
    pub(crate) fn upstream_provider_names(&self) -> Vec<&str> {
        self.providers
            .iter()
            .filter(|p| p.kind != ProviderKind::Mock)
            .map(|p| p.name.as_str())
            .collect()
    }

    /// Writes `credential` to the vault, then puts it into its provider's pool (replacing a
    /// credential with the same id wherever it was): the next request can use it.
    pub(crate) async fn store_credential(&self, credential: Credential) -> Result<(), ApiError> {
        let target = self.find(&credential.provider);
        let allow_insecure = target.is_some_and(|p| p.allow_insecure);
        let egress = target.map(|p| p.egress.clone()).unwrap_or_default();
        let base_url = credential_base_url(&credential, allow_insecure, &egress)
            .map_err(|e| ApiError::new(ErrorCode::BadRequest, e))?;
        let vault = self.vault.clone();
        let _order = vault.writes.lock().await;
        let store = vault.store.clone();
        let stored = credential.clone();
        blocking(move || store.put(&stored)).await?;
        for provider in &self.providers {
            let is_target = provider.name == credential.provider;
            let slot = is_target.then(|| {
                Arc::new(
                    Slot::new(credential.clone(), base_url.clone(), provider.pool.epoch())
                        .shared(provider.pool.share()),
                )
            });
            provider.pool.update(|slots| {
                let mut next: Vec<Arc<Slot>> = Vec::with_capacity(slots.len() + 1);
                for existing in slots {
                    if existing.id == credential.id {
                        existing.remove();
                    } else {
                        next.push(existing.clone());
                    }
                }
                next.extend(slot);
                next
            });
        }
        Ok(())
    }

    /// Makes the pools what a vault shared with other instances holds now: a credential
    /// another instance stored is used here too, one it deleted is no longer used, and OAuth
    /// tokens it refreshed are taken by the slot that has them (its cool-down and waiters
    /// kept). A slot whose credential did not change is kept as it is. Blocking (it reads
    /// the vault, under the vault's write lock): called off the async workers.
    pub(crate) fn reconcile_with_vault(&self, log: &slog::Logger) {
        let _order = self.vault.writes.blocking_lock();
        let stored = match self.vault.store.load_all() {
            Ok(stored) => stored,
            Err(error) => {
                warn!(log, "could not re-read the shared credential store; the pools stay as they are";
                    "error" => crate::vault_error_message(&error));
                return;
            }
        };
        let (mut added, mut changed, mut removed) = (0, 0, 0);
        for provider in &self.providers {
            if provider.kind == ProviderKind::Mock {
                continue;
            }
            provider.pool.update(|slots| {
                let mut next: Vec<Arc<Slot>> = Vec::with_capacity(slots.len());
                for credential in stored.iter().filter(|c| c.provider == provider.name) {
                    let existing = slots.iter().find(|slot| slot.id == credential.id);
                    if let Some(existing) = existing {
                        if existing.take_credential(credential) {
                            next.push(existing.clone());
                            continue;
                        }
                        existing.remove();
                        changed += 1;
                    } else {
                        added += 1;
                    }
                    match credential_base_url(credential, provider.allow_insecure, &provider.egress) {
                        Ok(base_url) => next.push(Arc::new(
                            Slot::new(credential.clone(), base_url, provider.pool.epoch())
                                .shared(provider.pool.share()),
                        )),
                        Err(e) => warn!(log, "a credential stored by another instance is not used here";
                            "provider" => &provider.name, "credential" => &credential.id, "error" => e),
                    }
                }
                for gone in slots.iter().filter(|slot| !stored.iter().any(|c| c.id == slot.id)) {
                    gone.remove();
                    removed += 1;
                }
                next
            });
        }
        if added + changed + removed > 0 {
            slog::info!(log, "credentials changed in the shared vault, pools updated";
                "added" => added, "changed" => changed, "removed" => removed);
        }
    }

    /// Deletes credentials from the vault and from the pools; returns the ids deleted.
    pub(crate) async fn delete_credentials(&self, ids: &[String]) -> Result<Vec<String>, ApiError> {
        let vault = self.vault.clone();
        let _order = vault.writes.lock().await;
        // Out of the pools first: no new request picks them while the files go.
        for provider in &self.providers {
            provider.pool.update(|slots| {
                slots
                    .iter()
                    .filter(|slot| {
                        let gone = ids.contains(&slot.id);
                        if gone {
                            slot.remove();
                        }
                        !gone
                    })
                    .cloned()
                    .collect()
            });
        }
        let store = vault.store.clone();
        let ids = ids.to_vec();
        blocking(move || {
            let mut deleted = Vec::with_capacity(ids.len());
            for id in ids {
                if store.delete(&id)? {
                    deleted.push(id);
                }
            }
            Ok(deleted)
        })
        .await
    }

    /// The provider whose pool holds the credential `id`: how a delete knows whose a
    /// credential is when its file can no longer be read.
    pub(crate) fn pool_owner(&self, id: &str) -> Option<&str> {
        let provider = self
            .providers
            .iter()
            .find(|p| p.pool.load().slots().iter().any(|slot| slot.id == id))?;
        Some(provider.name.as_str())
    }

    /// How long the credential `id` of `provider` still rests after an upstream failure
    /// that was its fault; `None` when it is healthy or unknown.
    pub(crate) fn cooldown_left(&self, provider: &str, id: &str) -> Option<Duration> {
        let provider = self.find(provider)?;
        let pool = provider.pool.load();
        pool.slots().iter().find(|slot| slot.id == id)?.cooldown_left()
    }

    /// Writes the last-use times gathered since the previous flush to the vault (for
    /// `vault list`).
    pub(crate) async fn flush_last_used(&self) {
        let used: Vec<(String, u64)> = self
            .providers
            .iter()
            .flat_map(|p| p.pool.load().slots().to_vec())
            .filter_map(|slot| slot.take_last_used().map(|at| (slot.id.clone(), at)))
            .collect();
        if used.is_empty() {
            return;
        }
        let store = self.vault.store.clone();
        let result = tokio::task::spawn_blocking(move || store.record_use(&used)).await;
        if let Ok(Err(error)) = result {
            warn!(self.log, "could not record when credentials were last used"; "error" => crate::vault_error_message(&error));
        }
    }
}

/// Runs a vault call off the async threads; its error becomes a 500 that names the file
/// (vault errors never hold a secret).
pub(crate) async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> cliproxy_vault::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error @ cliproxy_vault::Error::InvalidName { .. })) => {
            Err(ApiError::new(ErrorCode::BadRequest, error.to_string()))
        }
        // The directory cannot be written or read (a read-only mount, a full disk): nothing
        // is wrong with the request, and it may work once the operator has fixed the disk.
        Ok(Err(error @ cliproxy_vault::Error::Io { .. })) => Err(ApiError::new(
            ErrorCode::Unavailable,
            format!("credential vault (auth.dir): {}", crate::vault_error_message(&error)),
        )),
        Ok(Err(error)) => Err(ApiError::new(
            ErrorCode::Internal,
            format!("credential vault: {}", crate::vault_error_message(&error)),
        )),
        Err(_) => Err(ApiError::new(ErrorCode::Internal, "the vault operation was interrupted")),
    }
}
