//! The management routes over credentials: `GET /auths` (listed without secrets),
//! `POST /auths`, `DELETE /auths/{provider}[/{id}]` and `GET /auths/export` (the one answer
//! that carries secrets). Reads go to the vault; writes go through
//! [`ControlPlane::store_credential`] and [`ControlPlane::delete_credentials`], which write
//! the vault first and then swap the provider's pool, so the next request uses them; no
//! restart. Ids and provider names are checked by the vault (letters, digits, `.`, `_`, `-`,
//! not starting with `.`), so no path leaves `auth.dir`. The router calls these handlers past
//! the gate; they know nothing of paths, methods or keys.

use bytes::Bytes;
use cliproxy_core::{ErrorCode, Secret};
use cliproxy_vault::{
    Credential, CredentialMeta, CredentialSecret, ListEntry, OAuthTokens, Protection,
    UnreadableFile,
};
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use slog::{Logger, info, warn};

use super::body::read_body;
use crate::control::{ControlPlane, Note};
use crate::credentials::blocking;
use crate::error::ApiError;
use crate::http_util::{Body, json_response, truncate};
use crate::vault_errors::unreadable_detail;

/// What a handler answers: a response, or the error the call's course turns into one.
type Answer = Result<Response<Body>, ApiError>;

/// `GET /auths`: every credential, without secrets. A file that cannot be read (damaged,
/// sealed under a key not configured) is listed as such, by the id in its name and the class
/// of the problem, never its content: one bad file must not hide the others or turn the
/// listing into a 500. (A plaintext file is listed with `"stored": "plaintext"`.)
pub(super) async fn list(plane: &impl ControlPlane) -> Answer {
    let store = plane.vault().store.clone();
    plane.flush_last_used().await;
    let entries = blocking(move || store.list_entries()).await?;
    // Beside what the vault stores, each entry says whether the request path is resting
    // the credential after an upstream failure that was its fault (401/403/429, or its own
    // base URL unreachable), and for how much longer.
    let auths: Vec<Value> = entries
        .iter()
        .map(|entry| match entry {
            ListEntry::Unreadable(file) => unreadable_json(file),
            ListEntry::Readable(meta) => {
                let mut entry = meta_json(meta);
                entry["readable"] = json!(true);
                let left = plane.cooldown_left(&meta.provider, &meta.id);
                entry["cooling_down"] = json!(left.is_some());
                entry["cooldown_remaining_ms"] =
                    json!(left.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)));
                entry
            }
            // `ListEntry` may grow; an entry of an unknown kind is listed by id only.
            other => json!({"id": other.id(), "readable": false}),
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "auths": auths })))
}

/// An unreadable credential file as listed: the id from its name, the class of the problem
/// and a fixed sentence for it. The vault's error is not used: it may quote a field of the
/// damaged file.
fn unreadable_json(file: &UnreadableFile) -> Value {
    json!({
        "id": file.id,
        "readable": false,
        "reason": file.reason.as_str(),
        "detail": unreadable_detail(file.reason),
    })
}

/// What `POST /auths` accepts; also the shape of each entry of `GET /auths/export`, so an
/// export can be posted back one entry at a time.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCredential {
    provider: String,
    #[serde(rename = "type", default = "api_key")]
    kind: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    token: Option<Secret>,
    #[serde(default)]
    access_token: Option<Secret>,
    #[serde(default)]
    refresh_token: Option<Secret>,
    #[serde(default)]
    expires_at: Option<u64>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    token_url: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    base_url: Option<String>,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    created_at: Option<u64>,
}

fn api_key() -> String {
    "api_key".to_owned()
}

const ACCEPTED_FIELDS: &str = "provider, type (api_key | oauth), id, token, base_url, label; for oauth also refresh_token, expires_at or expires_in, token_url, client_id";

/// `POST /auths`: stores a credential (encrypted when encryption is on) and puts it in its
/// provider's pool at once.
pub(super) async fn add<B>(
    plane: &impl ControlPlane,
    body: B,
    log: &Logger,
    note: &mut Note,
) -> Answer
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let bad = |message: String| ApiError::new(ErrorCode::BadRequest, message);
    let body = read_body(body).await?;
    // serde's messages may quote the input (a token): only the position is reported.
    let input: NewCredential = serde_json::from_slice(&body).map_err(|e| {
        bad(format!(
            "the body is not a credential object ({} at line {} column {}); accepted fields: {ACCEPTED_FIELDS}",
            match e.classify() {
                serde_json::error::Category::Data => "wrong type, missing or unknown field",
                serde_json::error::Category::Eof => "unexpected end of input",
                _ => "syntax error",
            },
            e.line(),
            e.column()
        ))
    })?;
    let credential = build_credential(plane, input).map_err(bad)?;
    let store = &plane.vault().store;
    let stored = credential.meta(store.record_path(&credential.id), store.write_protection());
    note.credential = Some(format!("{}/{}", stored.provider, stored.id));
    plane.store_credential(credential).await?;
    info!(log, "credential added"; "event_type" => "config_change", "provider" => &stored.provider,
        "credential" => &stored.id, "type" => stored.kind);
    Ok(json_response(StatusCode::CREATED, &meta_json(&stored)))
}

fn build_credential(plane: &impl ControlPlane, input: NewCredential) -> Result<Credential, String> {
    let provider = input.provider.as_str();
    if !plane.accepts_credentials_for(provider) {
        let names = plane.upstream_provider_names();
        return Err(format!(
            "`{}` is not a configured upstream provider (configured: {})",
            truncate(provider, 64),
            if names.is_empty() {
                "none; the built-in mock takes no credentials".to_owned()
            } else {
                names.join(", ")
            }
        ));
    }
    let oauth_only = input.refresh_token.is_some()
        || input.expires_at.is_some()
        || input.expires_in.is_some()
        || input.token_url.is_some()
        || input.client_id.is_some()
        || input.access_token.is_some();
    let mut credential = match input.kind.as_str() {
        "api_key" => {
            if oauth_only {
                return Err("an api_key credential takes only `token` (the OAuth fields are for type oauth)".to_owned());
            }
            let token = input.token.ok_or("`token` is required")?;
            Credential::new_api_key(provider, token).map_err(|e| e.to_string())?
        }
        "oauth" => {
            let access_token = input
                .access_token
                .or(input.token)
                .ok_or("`access_token` (or `token`) is required for type oauth")?;
            let now = crate::clock::unix_now();
            let expires_at = match (input.expires_at, input.expires_in) {
                (Some(at), None) => at,
                (None, Some(seconds)) => now.saturating_add(seconds),
                _ => return Err(
                    "give exactly one of `expires_at` (unix seconds) and `expires_in` (seconds)"
                        .to_owned(),
                ),
            };
            let tokens = OAuthTokens {
                access_token,
                refresh_token: input
                    .refresh_token
                    .ok_or("`refresh_token` is required for type oauth")?,
                expires_at,
                token_url: input.token_url.ok_or("`token_url` is required for type oauth")?,
                client_id: input.client_id.ok_or("`client_id` is required for type oauth")?,
            };
            Credential::new_oauth(provider, tokens).map_err(|e| e.to_string())?
        }
        other => {
            return Err(format!(
                "unknown credential type `{}` (api_key or oauth)",
                truncate(other, 32)
            ));
        }
    };
    if let Some(id) = &input.id {
        credential = credential.with_id(id).map_err(|e| e.to_string())?;
    }
    if let Some(label) = input.label {
        if label.len() > 256 || label.chars().any(char::is_control) {
            return Err("`label` is at most 256 characters without control characters".to_owned());
        }
        credential.label = Some(label);
    }
    if let Some(base_url) = input.base_url {
        crate::config::BaseUrl::parse(&base_url).map_err(|e| format!("`base_url` {e}"))?;
        credential.base_url = Some(base_url);
    }
    if let Some(created_at) = input.created_at {
        credential.created_at = created_at;
    }
    Ok(credential)
}

/// `DELETE /auths/{provider}` and `DELETE /auths/{provider}/{id}`.
pub(super) async fn delete(plane: &impl ControlPlane, provider: &str, id: Option<&str>) -> Answer {
    let invalid = |e: cliproxy_vault::Error| ApiError::new(ErrorCode::BadRequest, e.to_string());
    cliproxy_vault::validate_name("provider name", provider).map_err(invalid)?;
    if let Some(id) = id {
        cliproxy_vault::validate_name("credential id", id).map_err(invalid)?;
    }
    // Revocation must not depend on the other files being readable: a delete by id reads
    // only that file, and a provider-wide delete skips what it cannot attribute.
    let store = plane.vault().store.clone();
    let (ids, left) = match id {
        Some(id) => {
            let wanted = id.to_owned();
            let ids = match blocking(move || store.entry(&wanted)).await? {
                Some(ListEntry::Readable(meta)) if meta.provider == provider => vec![meta.id],
                // Unreadable: the file names no provider we can read. The id names the file
                // exactly, so it goes, unless the pool says it is another provider's.
                Some(ListEntry::Unreadable(_))
                    if plane.pool_owner(id).is_none_or(|owner| owner == provider) =>
                {
                    vec![id.to_owned()]
                }
                _ => Vec::new(),
            };
            (ids, Vec::new())
        }
        None => {
            let entries = blocking(move || store.list_entries()).await?;
            let mut ids = Vec::new();
            let mut left = Vec::new();
            for entry in &entries {
                match entry {
                    ListEntry::Readable(meta) if meta.provider == provider => {
                        ids.push(meta.id.clone());
                    }
                    // Unreadable, but loaded before it was damaged: the pool knows whose it is.
                    ListEntry::Unreadable(file) if plane.pool_owner(&file.id) == Some(provider) => {
                        ids.push(file.id.clone());
                    }
                    // Unreadable and of no known provider: left as it is, and reported.
                    ListEntry::Unreadable(file) if plane.pool_owner(&file.id).is_none() => {
                        left.push(unreadable_json(file));
                    }
                    _ => {}
                }
            }
            (ids, left)
        }
    };
    if ids.is_empty() && (id.is_some() || !plane.knows_provider(provider)) {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            match id {
                Some(id) => format!(
                    "no credential `{}` of provider `{}`",
                    truncate(id, 128),
                    truncate(provider, 64)
                ),
                None => {
                    format!("no provider `{}` and no credentials for it", truncate(provider, 64))
                }
            },
        ));
    }
    let deleted = plane.delete_credentials(&ids).await?;
    let mut answer = json!({ "deleted": deleted });
    // Only when there is something to report, so the usual answer keeps its shape.
    if !left.is_empty() {
        answer["unreadable_left"] = json!(left);
    }
    Ok(json_response(StatusCode::OK, &answer))
}

/// `GET /auths/export`: every credential with its secrets, for moving them to another
/// plane. Never cached; logged as a credential access with the count.
pub(super) async fn export(plane: &impl ControlPlane, log: &Logger) -> Answer {
    let store = plane.vault().store.clone();
    let credentials = blocking(move || store.load_all()).await?;
    let entries: Vec<Value> = credentials.iter().map(export_json).collect();
    warn!(log, "credentials exported with their secrets"; "event_type" => "credential_access",
        "count" => entries.len());
    let mut response = json_response(
        StatusCode::OK,
        &json!({"format": "cliproxy-export", "version": 1, "credentials": entries}),
    );
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// One exported credential, in the shape `POST /auths` accepts. This is the one place a
/// token is deliberately put into a response.
fn export_json(credential: &Credential) -> Value {
    let mut entry = json!({
        "id": credential.id,
        "provider": credential.provider,
        "type": credential.kind(),
        "base_url": credential.base_url,
        "label": credential.label,
        "created_at": credential.created_at,
    });
    match &credential.secret {
        CredentialSecret::OAuth(tokens) => {
            entry["access_token"] = json!(tokens.access_token.expose());
            entry["refresh_token"] = json!(tokens.refresh_token.expose());
            entry["expires_at"] = json!(tokens.expires_at);
            entry["token_url"] = json!(tokens.token_url);
            entry["client_id"] = json!(tokens.client_id);
        }
        secret => entry["token"] = json!(secret.bearer().expose()),
    }
    entry
}

/// A credential as listed: everything but the secret.
fn meta_json(meta: &CredentialMeta) -> Value {
    let (stored, key_id) = match &meta.stored {
        Protection::Plaintext => ("plaintext", None),
        Protection::Encrypted(key_id) => ("encrypted", Some(key_id.as_str())),
    };
    json!({
        "id": meta.id,
        "provider": meta.provider,
        "type": meta.kind,
        "label": meta.label,
        "base_url": meta.base_url,
        "created_at": meta.created_at,
        "last_used": meta.last_used,
        "expires_at": meta.expires_at,
        "stored": stored,
        "key_id": key_id,
    })
}
