//! The `/client-keys` routes: client keys created at run time (SPEC §10), beside the config
//! file's keys, which they list but never change.
//!
//! Every write is stored and flushed to the state store before it is answered, then the key
//! table is re-read from the store and swapped in: a change is acknowledged only once it is
//! durable, and is in force on this gateway from the answer on (other gateways and the
//! server of another process sharing the store pick it up within a second). A write that
//! could not be flushed is answered 503 and not put in force here.
//!
//! Bodies are hostile input: they are read under the management cap, checked field by field
//! with messages that name the field but never repeat a value (a key pasted into the wrong
//! field must not come back in an error, a log or an audit line).

use std::num::NonZeroU64;
use std::sync::Arc;

use bytes::Bytes;
use cliproxy_core::money::{MICROS_PER_USD, UsdAmount};
use cliproxy_core::{Budget, ErrorCode, Quota, QuotaPeriod, RateLimit};
use cliproxy_netguard::{StateChange, StoredClientKey};
use cliproxy_vault::{ClientKeyRecord, ClientKeySpec};
use http::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use slog::{Logger, info};

use super::body::read_body;
use crate::client_key_table::{Source, client_key_view, config_key_view};
use crate::control::{ControlPlane, Note};
use crate::error::ApiError;
use crate::http_util::{Body, json_response};

type Answer = Result<Response<Body>, ApiError>;

/// The largest budget accepted: a million dollars per period, far above any real one, low
/// enough that sums of micro-dollars never overflow.
const MAX_BUDGET_MICROS: u64 = 1_000_000 * MICROS_PER_USD;

/// The fields `POST /client-keys` takes.
const CREATE_FIELDS: &str = "name, models, rate_limit, quota, budget, expires_at, disabled";
/// The fields `PATCH /client-keys/{name}` takes.
const PATCH_FIELDS: &str = "models, rate_limit, quota, budget, expires_at, disabled";

/// `GET /client-keys`: the config file's keys (`"source": "config"`) and the run-time ones
/// (`"source": "store"`), never a key or a digest.
pub(super) async fn list(plane: &impl ControlPlane) -> Answer {
    refreshed(plane).await;
    let table = plane.client_keys().load();
    let mut keys: Vec<Value> = table.config().identities().map(|id| config_key_view(id)).collect();
    keys.extend(table.records().map(client_key_view));
    Ok(json_response(StatusCode::OK, &json!({ "client_keys": keys })))
}

/// `GET /client-keys/{name}`.
pub(super) async fn get(plane: &impl ControlPlane, name: &str) -> Answer {
    path_name(name)?;
    refreshed(plane).await;
    let table = plane.client_keys().load();
    if let Some(record) = table.record(name) {
        return Ok(json_response(StatusCode::OK, &client_key_view(record)));
    }
    match table.config().identities().find(|identity| identity.name == name) {
        Some(identity) => Ok(json_response(StatusCode::OK, &config_key_view(identity))),
        None => Err(not_found(name)),
    }
}

/// `POST /client-keys`: creates a key, stores its record durably, puts it in force, and
/// answers 201 with the key, shown this once.
pub(super) async fn create<B>(
    plane: &impl ControlPlane,
    body: B,
    log: &Logger,
    note: &mut Note,
) -> Answer
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let now = plane.guard().clock.unix_seconds();
    let spec = create_body(&read_body(body).await?, now)?;
    let cell = plane.client_keys();
    let _turn = cell.writes.lock().await;
    refreshed(plane).await;
    let table = cell.load();
    if table.is_config_key(&spec.name) || table.record(&spec.name).is_some() {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "a client key named `{}` exists already; names are unique across auth.api_keys and the keys created at run time",
                spec.name
            ),
        ));
    }
    let created = ClientKeyRecord::create(spec, now).map_err(|e| bad(record_error(&e)))?;
    let record = created.record;
    note.changed.push("client_keys".to_owned());
    note.details.insert("client_key".to_owned(), json!(record.name));
    note.details.insert("client_key_id".to_owned(), json!(record.id));
    store(plane, put(&record)?, "created").await?;
    info!(log, "client key created"; "event_type" => "config_change", "client_key" => &record.name,
        "id" => &record.id);
    let mut answer = client_key_view(&record);
    answer["key"] = json!(created.key.expose());
    answer["usage"] = json!(
        "the key is shown this once; send it as `Authorization: Bearer <key>` (or `x-api-key`)"
    );
    Ok(json_response(StatusCode::CREATED, &answer))
}

/// `PATCH /client-keys/{name}`: changes the models, limits, budget, expiry or disabled flag
/// of a run-time key (`null` clears a setting). A config file key is read-only here.
pub(super) async fn patch<B>(
    plane: &impl ControlPlane,
    name: &str,
    body: B,
    log: &Logger,
    note: &mut Note,
) -> Answer
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    path_name(name)?;
    let fields = object(&read_body(body).await?, PATCH_FIELDS)?;
    let cell = plane.client_keys();
    let _turn = cell.writes.lock().await;
    refreshed(plane).await;
    let mut record = existing(plane, name)?;
    let now = plane.guard().clock.unix_seconds();
    let changed = patch_body(&mut record, &fields, now)?;
    record.validate().map_err(|e| bad(record_error(&e)))?;
    note.changed.push("client_keys".to_owned());
    note.details.insert("client_key".to_owned(), json!(record.name));
    note.details.insert("client_key_id".to_owned(), json!(record.id));
    note.details.insert("fields".to_owned(), json!(changed));
    store(plane, put(&record)?, "changed").await?;
    info!(log, "client key changed"; "event_type" => "config_change", "client_key" => &record.name,
        "id" => &record.id);
    Ok(json_response(StatusCode::OK, &client_key_view(&record)))
}

/// `DELETE /client-keys/{name}`: revokes a run-time key; the next request with it is
/// refused (on other gateways sharing the store, within a second).
pub(super) async fn delete(
    plane: &impl ControlPlane,
    name: &str,
    log: &Logger,
    note: &mut Note,
) -> Answer {
    path_name(name)?;
    let cell = plane.client_keys();
    let _turn = cell.writes.lock().await;
    refreshed(plane).await;
    let record = existing(plane, name)?;
    note.changed.push("client_keys".to_owned());
    note.details.insert("client_key".to_owned(), json!(record.name));
    note.details.insert("client_key_id".to_owned(), json!(record.id));
    store(plane, StateChange::ClientKeyDelete(record.id.clone()), "revoked").await?;
    info!(log, "client key revoked"; "event_type" => "config_change", "client_key" => &record.name,
        "id" => &record.id);
    let mut response = Response::new(crate::http_util::full(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}

/// Reads a `POST /client-keys` body into the settings of a new key, at `now` (Unix seconds).
/// The key's name and models are checked when the key is created
/// ([`ClientKeyRecord::create`]); everything else is checked here. A pure function of the
/// bytes, so that it can be fuzzed ([`check_client_key_body`]).
fn create_body(body: &[u8], now: u64) -> Result<ClientKeySpec, ApiError> {
    let fields = object(body, CREATE_FIELDS)?;
    let name = match fields.get("name") {
        Some(Value::String(name)) => name.clone(),
        Some(_) => return Err(bad("`name` must be a string")),
        None => return Err(bad(format!("`name` is required; accepted fields: {CREATE_FIELDS}"))),
    };
    let mut spec = ClientKeySpec::new(name);
    for (field, value) in &fields {
        match field.as_str() {
            "name" => {}
            "models" => spec.models = models(value)?,
            "rate_limit" => spec.rate_limit = rate_limit(value)?,
            "quota" => spec.quota = quota(value)?,
            "budget" => spec.budget = budget(value)?,
            "expires_at" => spec.expires_at = expires_at(value, now)?,
            "disabled" => spec.disabled = flag(value)?,
            other => return Err(unknown_field(other, CREATE_FIELDS)),
        }
    }
    Ok(spec)
}

/// Applies the fields of a `PATCH /client-keys/{name}` body to `record`; the names of the
/// fields changed. The caller validates the record afterwards.
fn patch_body(
    record: &mut ClientKeyRecord,
    fields: &Map<String, Value>,
    now: u64,
) -> Result<Vec<String>, ApiError> {
    for (field, value) in fields {
        match field.as_str() {
            "models" => record.models = models(value)?,
            "rate_limit" => record.rate_limit = rate_limit(value)?,
            "quota" => record.quota = quota(value)?,
            "budget" => record.budget = budget(value)?,
            "expires_at" => record.expires_at = expires_at(value, now)?,
            "disabled" => record.disabled = flag(value)?,
            "name" => {
                return Err(bad("`name` cannot be changed; create a new key and revoke this one"));
            }
            other => return Err(unknown_field(other, PATCH_FIELDS)),
        }
    }
    Ok(fields.keys().cloned().collect())
}

/// What the `/client-keys` routes make of a request body, without a gateway: for fuzzing and
/// for tests. `POST`'s body (`patch: false`) gives the record a key created at `now` would
/// get; `PATCH`'s (`patch: true`) is applied to a fresh record named `patched` and validated.
/// A refusal is the message the client would get.
pub fn check_client_key_body(
    body: &[u8],
    now: u64,
    patch: bool,
) -> Result<ClientKeyRecord, String> {
    let message = |e: ApiError| e.message;
    if patch {
        let fields = object(body, PATCH_FIELDS).map_err(message)?;
        let mut record = ClientKeyRecord::create(ClientKeySpec::new("patched"), now)
            .map_err(|e| record_error(&e))?
            .record;
        patch_body(&mut record, &fields, now).map_err(message)?;
        record.validate().map_err(|e| record_error(&e))?;
        Ok(record)
    } else {
        let spec = create_body(body, now).map_err(message)?;
        Ok(ClientKeyRecord::create(spec, now).map_err(|e| record_error(&e))?.record)
    }
}

/// The run-time record named `name`; 409 for a config file key, 404 for no key.
fn existing(plane: &impl ControlPlane, name: &str) -> Result<ClientKeyRecord, ApiError> {
    let table = plane.client_keys().load();
    if let Some(record) = table.record(name) {
        return Ok(record.clone());
    }
    if table.is_config_key(name) {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "`{name}` is a key of the config file (auth.api_keys), read-only at run time; change it there and reload"
            ),
        ));
    }
    Err(not_found(name))
}

/// Re-reads the store so that a route sees what another process wrote (a failed read keeps
/// the table in force, which the route then works from).
async fn refreshed(plane: &impl ControlPlane) {
    let cell = plane.client_keys().clone();
    let guard = plane.guard().clone();
    let log = guard.log.clone();
    let _ =
        tokio::task::spawn_blocking(move || cell.refresh(&guard, &log, Source::Elsewhere)).await;
}

/// Submits `change` to the state store and waits until it is durable, then puts the store's
/// keys in force. A flush that fails is a 503 and the change is not put in force here.
async fn store(plane: &impl ControlPlane, change: StateChange, done: &str) -> Result<(), ApiError> {
    let guard = plane.guard().clone();
    let cell = Arc::clone(plane.client_keys());
    let written = tokio::task::spawn_blocking(move || {
        guard.state.submit(change);
        guard.state.flush().map_err(|e| crate::netguard_error(&e))?;
        // Read back at once, so that the change is in force when it is answered.
        cell.refresh(&guard, &guard.log, Source::ThisGateway)
    })
    .await
    .map_err(|_| ApiError::new(ErrorCode::Internal, "the state store writer failed"))?;
    written.map_err(|why| {
        ApiError::new(
            ErrorCode::Unavailable,
            format!("the client key was not {done}: the state store could not write it ({why}); the change is not in force (it may still be written once the store recovers: check GET /client-keys)"),
        )
    })
}

/// The stored row of `record`.
fn put(record: &ClientKeyRecord) -> Result<StateChange, ApiError> {
    Ok(StateChange::ClientKeyPut(StoredClientKey {
        id: record.id.clone(),
        digest: record.digest.clone(),
        record_json: record
            .to_stored_json()
            .map_err(|e| ApiError::new(ErrorCode::Internal, crate::vault_error_message(&e)))?,
    }))
}

/// The body as a JSON object. serde's messages may quote the input, so only the kind and
/// position of a problem are reported.
fn object(body: &[u8], accepted: &str) -> Result<Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "the body is not JSON ({} at line {} column {}); send an object with: {accepted}",
            match e.classify() {
                serde_json::error::Category::Eof => "unexpected end of input",
                _ => "syntax error",
            },
            e.line(),
            e.column()
        ))
    })?;
    match value {
        Value::Object(fields) => Ok(fields),
        _ => Err(bad(format!("the body must be a JSON object with: {accepted}"))),
    }
}

/// `models`: a list of model name patterns; `null` or `[]` for every model.
fn models(value: &Value) -> Result<Vec<String>, ApiError> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(pattern) => Ok(pattern.clone()),
                _ => Err(bad("`models` must be a list of model name patterns (strings)")),
            })
            .collect(),
        _ => Err(bad("`models` must be a list of model name patterns (strings)")),
    }
}

/// `rate_limit`: `{requests_per_minute, tokens_per_minute}` (positive integers, either
/// optional); `null` clears it.
fn rate_limit(value: &Value) -> Result<Option<RateLimit>, ApiError> {
    if value.is_null() {
        return Ok(None);
    }
    let limit: RateLimit = RateLimit::deserialize(value).map_err(|_| {
        bad("`rate_limit` must be an object {requests_per_minute, tokens_per_minute} of positive integers")
    })?;
    Ok(Some(limit))
}

/// `quota`: `{limit, reset}` (tokens per `daily`, `weekly` or `monthly` period); `null`
/// clears it.
fn quota(value: &Value) -> Result<Option<Quota>, ApiError> {
    if value.is_null() {
        return Ok(None);
    }
    let quota: Quota = Quota::deserialize(value).map_err(|_| {
        bad("`quota` must be an object {limit: positive integer of tokens, reset: daily | weekly | monthly}")
    })?;
    Ok(Some(quota))
}

/// `budget`'s human form: dollars as a number or a decimal string, and the period.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetBody {
    usd: UsdAmount,
    period: QuotaPeriod,
}

/// `budget`: `{usd, period}` (dollars with at most six decimals, `daily`, `weekly` or
/// `monthly`); `null` clears it.
fn budget(value: &Value) -> Result<Option<Budget>, ApiError> {
    if value.is_null() {
        return Ok(None);
    }
    let body = BudgetBody::deserialize(value).map_err(|_| {
        bad("`budget` must be an object {usd: dollars as a number or decimal string, period: daily | weekly | monthly}")
    })?;
    let micros =
        body.usd.micros(MAX_BUDGET_MICROS).map_err(|e| bad(format!("`budget.usd`: {e}")))?;
    let micros = NonZeroU64::new(micros)
        .ok_or_else(|| bad("`budget.usd` must be more than 0 (leave `budget` out for none)"))?;
    Ok(Some(Budget::new(body.period, micros)))
}

/// `expires_at`: an RFC 3339 time in UTC after `now`; `null` for never.
fn expires_at(value: &Value, now: u64) -> Result<Option<u64>, ApiError> {
    let at = match value {
        Value::Null => return Ok(None),
        Value::String(text) => cliproxy_core::parse_utc(text).ok_or_else(|| {
            bad("`expires_at` must be an RFC 3339 time in UTC, such as 2030-01-31T00:00:00Z")
        })?,
        _ => return Err(bad("`expires_at` must be an RFC 3339 time in UTC or null")),
    };
    if at <= now {
        return Err(bad(format!(
            "`expires_at` must be in the future (it is now {}); set `disabled: true` to stop a key at once",
            cliproxy_core::format_utc(now)
        )));
    }
    Ok(Some(at))
}

/// `disabled`: true or false.
fn flag(value: &Value) -> Result<bool, ApiError> {
    value.as_bool().ok_or_else(|| bad("`disabled` must be true or false"))
}

/// An unknown field, named only when it looks like a field name (a pasted key is not).
fn unknown_field(field: &str, accepted: &str) -> ApiError {
    let plain = field.len() <= 32 && field.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    if plain {
        bad(format!("unknown field `{field}`; accepted fields: {accepted}"))
    } else {
        bad(format!("unknown field (not repeated); accepted fields: {accepted}"))
    }
}

/// A record's problem as a message: the vault's, which never repeats a key or a name that
/// may be one.
fn record_error(error: &cliproxy_vault::Error) -> String {
    crate::vault_error_message(error)
}

/// Refuses a path segment that cannot be a key's name before it is repeated anywhere: a key
/// pasted where its name goes (`cpk-…`), or characters no name has.
fn path_name(name: &str) -> Result<(), ApiError> {
    if name.contains(cliproxy_vault::CLIENT_KEY_PREFIX) {
        return Err(bad(
            "the path names a key itself, not a key's name (not repeated); use the name given at creation (GET /client-keys lists them)",
        ));
    }
    let valid = !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(bad(
            "the path does not end with a key name (ASCII letters, digits, `-`, `_`, `.`; 1 to 128 of them)",
        ))
    }
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no client key named `{name}`"))
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::BadRequest, message)
}
