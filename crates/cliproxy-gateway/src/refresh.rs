//! OAuth access tokens, refreshed before they expire: isolated, single-flight, persisted.
//!
//! When a request picks an OAuth credential whose access token expires within
//! `auth.refresh.ahead` (or within half its lifetime, when that is shorter and known: a token
//! this process obtained itself), it takes the credential's refresh lock. The first to get it spawns the
//! refresh as a task of its own (so a client that hangs up does not cancel it half-way) with
//! `auth.refresh.timeout`; everyone else waiting on the lock then uses that refresh's outcome
//! instead of starting another. The new tokens are written to the vault (encrypted when
//! encryption is on) before they are used, and the old ones are zeroized when the last
//! request holding them ends. A failed refresh cools the credential down — for long when the
//! endpoint refused the refresh token, briefly when it was unreachable — and is logged.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cliproxy_core::Secret;
use cliproxy_vault::{
    Credential, CredentialSecret, CredentialStore, MAX_TOKEN_RESPONSE_BYTES, OAuthTokens,
    RefreshConfig, RefreshError, parse_token_response,
};
use http::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use http::{Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use slog::{Logger, error, info, warn};

use crate::clock::unix_now;
use crate::oauth_slot::{OAuthState, RefreshFailure};
use crate::pool::{Slot, SlotAuth};
use crate::upstream::HttpClient;

/// How long a credential rests after its refresh token was refused (an operator must act).
const COOLDOWN_REFUSED: Duration = Duration::from_secs(300);
/// How long a credential rests after the token endpoint failed or did not answer.
const COOLDOWN_UNAVAILABLE: Duration = Duration::from_secs(30);

/// The vault as the running gateway writes to it: the store, one lock that orders every
/// write (refreshes and management changes), and the refresh settings.
#[derive(Debug)]
pub(crate) struct Vault {
    pub store: Arc<dyn CredentialStore>,
    pub writes: tokio::sync::Mutex<()>,
    pub refresh: RefreshConfig,
    pub log: Logger,
    /// Where each refresh is recorded (`token_refresh`).
    pub audit: Arc<cliproxy_audit::Audit>,
}

impl Vault {
    fn audit_refresh(&self, provider: &str, credential: &str, outcome: Result<(), String>) {
        let what =
            cliproxy_audit::What::TokenRefresh { credential: credential.to_owned(), outcome };
        // A refresh fires no alert rule.
        let _ = self.audit.emit(cliproxy_audit::Event::new(what).provider(provider));
    }
}

impl Vault {
    /// Stores `credential` unless `slot` was deleted or replaced meanwhile.
    async fn persist(&self, slot: &Slot, credential: Credential) -> Result<bool, String> {
        let _order = self.writes.lock().await;
        if slot.is_removed() {
            return Ok(false);
        }
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.put(&credential)).await {
            Ok(Ok(())) => Ok(true),
            Ok(Err(error)) => Err(crate::vault_error_message(&error)),
            Err(_) => Err("the vault write was interrupted".to_owned()),
        }
    }
}

/// The token to send upstream with `slot`: its API key, or its access token, refreshed first
/// when it is due.
pub(crate) async fn bearer(
    slot: &Arc<Slot>,
    provider: &str,
    client: &HttpClient,
    vault: &Arc<Vault>,
) -> Result<Secret, RefreshFailure> {
    let oauth = match &slot.auth {
        SlotAuth::Static(token) => return Ok(token.clone()),
        SlotAuth::OAuth(oauth) => oauth,
    };
    let ahead = vault.refresh.ahead.as_secs();
    let seen = oauth.snapshot();
    let tokens = seen.tokens().ok_or_else(not_oauth)?;
    if !tokens.refresh_due(unix_now(), ahead, seen.obtained) {
        return Ok(tokens.access_token.clone());
    }
    let guard = oauth.lock.clone().lock_owned().await;
    let latest = oauth.snapshot();
    if latest.attempts != seen.attempts {
        // A refresh finished while this request waited: use its outcome.
        drop(guard);
        return match &latest.failure {
            Some(failure) => Err(failure.clone()),
            None => Ok(latest.tokens().ok_or_else(not_oauth)?.access_token.clone()),
        };
    }
    let task = {
        let (slot, provider, client, vault) =
            (slot.clone(), provider.to_owned(), client.clone(), vault.clone());
        tokio::spawn(async move {
            let outcome = refresh(&slot, &provider, &client, &vault).await;
            drop(guard);
            outcome
        })
    };
    task.await.unwrap_or_else(|_| {
        Err(RefreshFailure { reason: "the token refresh task ended abnormally".to_owned() })
    })
}

/// One refresh, start to end: the vault's refresh lease (several instances sharing the vault:
/// one refreshes, the others take its tokens), the call with its timeout, the vault write,
/// the new state.
async fn refresh(
    slot: &Slot,
    provider: &str,
    client: &HttpClient,
    vault: &Vault,
) -> Result<Secret, RefreshFailure> {
    let SlotAuth::OAuth(oauth) = &slot.auth else { return Err(not_oauth()) };
    let current = oauth.snapshot();
    let tokens = current.tokens().ok_or_else(not_oauth)?;
    let lease_time = vault.refresh.timeout + LEASE_MARGIN;
    let lease = match blocking_store(vault, {
        let id = slot.id.clone();
        move |store| store.refresh_lock(&id, lease_time)
    })
    .await
    {
        Ok(Some(lease)) => Some(lease),
        // Another instance is refreshing this credential: its tokens reach the vault.
        Ok(None) => return wait_for_refresh(slot, provider, vault, tokens, lease_time).await,
        // The shared store cannot be asked: refreshing here keeps this instance serving; at
        // worst two instances refresh once each.
        Err(reason) => {
            warn!(vault.log, "could not take the credential's shared refresh lease; refreshing from this instance";
                "provider" => provider, "credential" => &slot.id, "error" => reason);
            None
        }
    };
    // The lease may come right after another instance's refresh ended: its tokens are then
    // in the vault already, and are taken instead of refreshing again.
    if let Some(access) = adopt_stored(slot, vault, tokens).await {
        release(lease, vault, slot).await;
        return Ok(access);
    }
    let outcome = refresh_now(slot, provider, client, vault, oauth, &current, tokens).await;
    release(lease, vault, slot).await;
    outcome
}

/// How much longer than `auth.refresh.timeout` a refresh lease is held: the vault write and
/// the lease's own round trips after the token endpoint answered.
const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// How often an instance waiting for another's refresh re-reads the credential.
const LEASE_POLL: Duration = Duration::from_millis(100);

/// Runs `call` on the vault's store off the async workers; the error worded for the log.
async fn blocking_store<T: Send + 'static>(
    vault: &Vault,
    call: impl FnOnce(&dyn CredentialStore) -> cliproxy_vault::Result<T> + Send + 'static,
) -> Result<T, String> {
    let store = vault.store.clone();
    match tokio::task::spawn_blocking(move || call(&*store)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(crate::vault_error_message(&error)),
        Err(_) => Err("the vault call was interrupted".to_owned()),
    }
}

/// Gives the refresh lease back, so that instances waiting for it stop waiting.
async fn release(lease: Option<cliproxy_vault::RefreshLease>, vault: &Vault, slot: &Slot) {
    let Some(lease) = lease else { return };
    let outcome = tokio::task::spawn_blocking(move || lease.release()).await;
    if let Ok(Err(error)) = outcome {
        warn!(vault.log, "could not give the credential's refresh lease back; it lapses on its own";
            "credential" => &slot.id, "error" => crate::vault_error_message(&error));
    }
}

/// Newer tokens than `stale` (the slot's when this refresh began) that are not due: the
/// slot's own, when the shared vault's watcher gave it another instance's refresh already,
/// or the vault's, which are then taken into the slot. Returns the access token.
async fn adopt_stored(slot: &Slot, vault: &Vault, stale: &OAuthTokens) -> Option<Secret> {
    let SlotAuth::OAuth(oauth) = &slot.auth else { return None };
    let ahead = vault.refresh.ahead.as_secs();
    let fresh = |tokens: &OAuthTokens, obtained: Option<u64>| {
        tokens.access_token.expose() != stale.access_token.expose()
            && tokens.expires_at >= stale.expires_at
            && !tokens.refresh_due(unix_now(), ahead, obtained)
    };
    let current = oauth.snapshot();
    if let Some(tokens) = current.tokens().filter(|t| fresh(t, current.obtained)) {
        return Some(tokens.access_token.clone());
    }
    let id = slot.id.clone();
    let stored = blocking_store(vault, move |store| store.get(&id)).await.ok()??;
    let CredentialSecret::OAuth(theirs) = &stored.secret else { return None };
    if !fresh(theirs, None) {
        return None;
    }
    let access = theirs.access_token.clone();
    oauth.set(OAuthState {
        credential: stored,
        attempts: current.attempts + 1,
        failure: None,
        obtained: None,
    });
    Some(access)
}

/// Another instance holds the refresh lease: waits (re-reading the vault) for the tokens it
/// writes, at most `lease_time`.
async fn wait_for_refresh(
    slot: &Slot,
    provider: &str,
    vault: &Vault,
    stale: &OAuthTokens,
    lease_time: Duration,
) -> Result<Secret, RefreshFailure> {
    let deadline = tokio::time::Instant::now() + lease_time;
    while tokio::time::Instant::now() < deadline {
        if let Some(access) = adopt_stored(slot, vault, stale).await {
            info!(vault.log, "OAuth token refreshed by another instance, taken from the vault";
                "event_type" => "token_refresh", "result" => "success", "provider" => provider,
                "credential" => &slot.id);
            return Ok(access);
        }
        tokio::time::sleep(LEASE_POLL).await;
    }
    Err(RefreshFailure {
        reason: format!(
            "another gateway instance holds this credential's refresh lease and stored no new token within {lease_time:?}"
        ),
    })
}

/// The refresh itself: the call with its timeout, the vault write, the new state.
async fn refresh_now(
    slot: &Slot,
    provider: &str,
    client: &HttpClient,
    vault: &Vault,
    oauth: &crate::oauth_slot::OAuthSlot,
    current: &OAuthState,
    tokens: &OAuthTokens,
) -> Result<Secret, RefreshFailure> {
    let timeout = vault.refresh.timeout;
    let outcome = match tokio::time::timeout(timeout, call(client, tokens)).await {
        Ok(outcome) => outcome,
        Err(_) => Err((
            false,
            format!("the token endpoint did not answer within {timeout:?} (auth.refresh.timeout)"),
        )),
    };
    let log = vault.log.clone();
    match outcome {
        Ok(refreshed) => {
            let next = tokens.refreshed(refreshed);
            let access = next.access_token.clone();
            let expires_in = next.expires_at.saturating_sub(unix_now());
            let mut credential = current.credential.clone();
            credential.secret = CredentialSecret::OAuth(next);
            match vault.persist(slot, credential.clone()).await {
                Ok(_) => {}
                Err(reason) => {
                    error!(log, "refreshed OAuth tokens could not be saved; they are used from memory and are lost on restart";
                    "event_type" => "token_refresh", "provider" => provider, "credential" => &slot.id, "error" => reason)
                }
            }
            oauth.set(OAuthState {
                credential,
                attempts: current.attempts + 1,
                failure: None,
                obtained: Some(unix_now()),
            });
            info!(log, "OAuth token refreshed"; "event_type" => "token_refresh", "result" => "success",
                "provider" => provider, "credential" => &slot.id, "expires_in_s" => expires_in);
            vault.audit_refresh(provider, &slot.id, Ok(()));
            Ok(access)
        }
        Err((permanent, reason)) => {
            let cooldown = if permanent { COOLDOWN_REFUSED } else { COOLDOWN_UNAVAILABLE };
            slot.cool_down(cooldown);
            let fix = if permanent {
                "store new tokens for this credential (POST /v0/management/auths)"
            } else {
                "retried after the cool-down"
            };
            warn!(log, "OAuth token refresh failed; cooling the credential down";
                "event_type" => "token_refresh", "result" => "failure", "provider" => provider,
                "credential" => &slot.id, "error" => &reason, "cooldown_s" => cooldown.as_secs(), "next" => fix);
            vault.audit_refresh(provider, &slot.id, Err(reason.clone()));
            let failure = RefreshFailure { reason };
            oauth.set(OAuthState {
                credential: current.credential.clone(),
                attempts: current.attempts + 1,
                failure: Some(failure.clone()),
                obtained: current.obtained,
            });
            Err(failure)
        }
    }
}

/// POSTs the refresh to the token endpoint and reads the reply. `Err((permanent, reason))`.
async fn call(
    client: &HttpClient,
    tokens: &OAuthTokens,
) -> Result<cliproxy_vault::Refreshed, (bool, String)> {
    let uri: http::Uri = tokens
        .token_url
        .parse()
        .map_err(|_| (true, "the credential's token_url is not a valid URL".to_owned()))?;
    let form = tokens.refresh_form();
    let mut request = Request::new(Full::new(Bytes::copy_from_slice(form.as_bytes())));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri;
    request
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
    request.headers_mut().insert(ACCEPT, HeaderValue::from_static("application/json"));
    let response = client
        .request(request)
        .await
        .map_err(|e| (false, format!("cannot reach the token endpoint ({e})")))?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_TOKEN_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|_| {
            (false, "the token endpoint's reply could not be read or is too large".to_owned())
        })?
        .to_bytes();
    parse_token_response(status, &body, unix_now())
        .map_err(|e: RefreshError| (e.is_permanent(), e.to_string()))
}

fn not_oauth() -> RefreshFailure {
    RefreshFailure { reason: "the credential holds no OAuth tokens".to_owned() }
}
