//! The management API under `/v0/management` (SPEC §3).
//!
//! Every call is judged by its client address: the TCP peer, or behind a peer in
//! `server.trusted_proxies` the client its forwarding header names (the same address the
//! network guard uses). Every call goes through the same gate, in this order:
//! 1. no `management.secret_key` configured → 404 for every route (the API does not exist);
//! 2. without `management.allow_remote`, a forwarded call — one that carries a header a proxy
//!    adds (`X-Forwarded-For`, `Forwarded`, `X-Real-IP`, `X-Forwarded-Host`,
//!    `X-Forwarded-Proto`, `Via`), whoever the peer — → 403: behind a reverse proxy on the
//!    same machine every remote caller arrives from loopback, so "loopback only" would mean
//!    nothing;
//! 3. a non-loopback client without `management.allow_remote` → 403;
//! 4. a request with an `Origin` header (a browser: a web page's `fetch` or form) → 403;
//! 5. a banned client → 403 with `Retry-After`;
//! 6. the key, from `Authorization: Bearer` or `X-Management-Key`, compared in constant time
//!    (SHA-256 digests, so the length leaks nothing either). A missing key is 401 and counts
//!    nothing: a web page can make a browser send a header-less GET (`<img>`, a no-cors
//!    `fetch`), and it must not be able to ban loopback. A wrong key is 401 and counts a
//!    failure against the client's address; `management.max_failures` failures ban it for
//!    `management.ban`. Bans are listed and lifted with `GET|DELETE /security/bans`, and
//!    offline with `cliproxy-server bans list|lift`.
//!
//! Refusals 2–4 come before the ban book, so none of them can ban anyone. Every refusal but
//! 1 is then charged to the per-IP and global buckets (429 past the limit); a call with the
//! right key is not, so that the operator is never locked out by a local client's traffic.
//! Refusals are audited at most once per address and second, and at most 20 a second across
//! addresses; the rest in summary lines (`Guard::auth_failure`).
//! Failures and bans fall on an IPv6 client's /64, and the book holds at most
//! `MAX_TRACKED_PEERS` addresses, bans included (the ban that ends first is dropped).
//!
//! Credential changes are written to the vault first and then swapped into the provider's
//! pool, so the next request uses them; no restart. Ids and provider names are checked by the
//! vault (letters, digits, `.`, `_`, `-`, not starting with `.`), so no path leaves `auth.dir`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use cliproxy_core::{ErrorCode, Secret};
use cliproxy_vault::{
    Credential, CredentialMeta, CredentialSecret, ListEntry, OAuthTokens, Protection,
    UnreadableFile,
};
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use ring::digest::{SHA256, digest};
use serde::Deserialize;
use serde_json::{Value, json};
use slog::{Logger, info, warn};
use subtle::ConstantTimeEq;
use tokio::time::Instant;

use cliproxy_audit::{Event, Plane, What};

use crate::api::ApiFormat;
use crate::config::ManagementConfig;
use crate::control::{ControlPlane, Note};
use crate::credentials::blocking;
use crate::error::ApiError;
use crate::guard::{Guard, ban_key};
use crate::guard_api;
use crate::http_util::Body;
use crate::http_util::{json_response, truncate};

/// The path prefix of the management API.
pub(crate) const PREFIX: &str = crate::api::MANAGEMENT_PREFIX;
/// The largest management request body.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Peers tracked for failures and bans; beyond it, peers that are not banned are forgotten.
const MAX_TRACKED_PEERS: usize = 10_000;

/// The management gate: the key digest and the failure/ban book per peer address.
#[derive(Debug)]
pub(crate) struct Management {
    key_digest: Option<[u8; 32]>,
    allow_remote: bool,
    max_failures: u32,
    ban: Duration,
    peers: Mutex<HashMap<IpAddr, Peer>>,
    /// The most peers `peers` holds, bans included (`MAX_TRACKED_PEERS`; smaller in tests).
    max_peers: usize,
    /// Bans dropped to keep the table within `max_peers`.
    evicted: std::sync::atomic::AtomicU64,
    /// Where bans are kept across restarts (the network guard's state store).
    state: Option<std::sync::Arc<dyn cliproxy_netguard::StateStore>>,
}

#[derive(Debug, Default)]
struct Peer {
    failures: u32,
    banned_until: Option<Instant>,
}

impl Management {
    pub(crate) fn new(config: &ManagementConfig) -> Self {
        Self {
            key_digest: config.key().map(|key| sha256(key.expose().trim().as_bytes())),
            allow_remote: config.allow_remote,
            max_failures: config.max_failures.get(),
            ban: config.ban,
            peers: Mutex::new(HashMap::new()),
            max_peers: MAX_TRACKED_PEERS,
            evicted: std::sync::atomic::AtomicU64::new(0),
            state: None,
        }
    }

    /// Keeps bans in `state` from now on, and takes back the bans stored there that have not
    /// ended: a restart does not lift a ban.
    pub(crate) fn persist_bans(
        &mut self,
        state: std::sync::Arc<dyn cliproxy_netguard::StateStore>,
        stored: Vec<cliproxy_netguard::Ban>,
    ) -> usize {
        let now_unix = crate::clock::unix_now();
        let now = Instant::now();
        let mut restored = 0;
        let peers = self.peers.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        // As many as the live table holds; the latest-ending ones are kept, and the others
        // leave the store too (an older version did not bound it).
        let mut stored = stored;
        stored.sort_by_key(|ban| std::cmp::Reverse(ban.until));
        for dropped in stored.split_off(self.max_peers.min(stored.len())) {
            state.submit(cliproxy_netguard::StateChange::Unban(dropped.ip));
        }
        for ban in stored {
            if ban.until > now_unix {
                let left = Duration::from_secs(ban.until - now_unix);
                peers.insert(
                    ban.ip,
                    Peer { failures: self.max_failures, banned_until: Some(now + left) },
                );
                restored += 1;
            }
        }
        self.state = Some(state);
        restored
    }

    /// How many bans were dropped since the start to keep the ban table bounded.
    pub(crate) fn evicted(&self) -> u64 {
        self.evicted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `management.ban`.
    pub(crate) fn ban_duration(&self) -> Duration {
        self.ban
    }

    /// `management.max_failures`.
    pub(crate) fn max_failures(&self) -> u32 {
        self.max_failures
    }

    /// Whether the management API exists at all.
    pub(crate) fn enabled(&self) -> bool {
        self.key_digest.is_some()
    }

    /// The bans in force, by address: each with when it ends (Unix seconds, rounded up).
    pub(crate) fn bans(&self) -> Vec<(IpAddr, u64)> {
        let now = Instant::now();
        let now_unix = crate::clock::unix_now();
        let peers = self.peers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut bans: Vec<(IpAddr, u64)> = peers
            .iter()
            .filter_map(|(ip, p)| {
                let left = p.banned_until.filter(|until| *until > now)? - now;
                let left = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                Some((*ip, now_unix.saturating_add(left)))
            })
            .collect();
        bans.sort_unstable();
        bans
    }

    /// Lifts the ban of `ip` (and forgets its failures); whether one was in force. The caller
    /// removes it from the state store.
    pub(crate) fn lift(&self, ip: IpAddr) -> bool {
        let ip = ban_key(ip);
        let now = Instant::now();
        let mut peers = self.peers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let banned = peers.get(&ip).and_then(|p| p.banned_until).is_some_and(|until| until > now);
        if banned {
            peers.remove(&ip);
        }
        banned
    }

    /// Steps 1–6 of the gate for a call from `client` (the resolved client address);
    /// `Ok` when the call may proceed. On refusal, the audit reason (`None` when the API does
    /// not exist) and the answer; the reason is `ban_started` for the failure that bans the
    /// client.
    fn gate(
        &self,
        headers: &HeaderMap,
        client: IpAddr,
        log: &Logger,
    ) -> Result<(), (Option<&'static str>, ApiError)> {
        let Some(expected) = &self.key_digest else {
            return Err((None, ApiError::new(ErrorCode::NotFound, "no such route")));
        };
        if !self.allow_remote && is_forwarded(headers) {
            return Err((
                Some("forwarded"),
                ApiError::new(
                    ErrorCode::Forbidden,
                    "the management API does not answer calls forwarded by a proxy (X-Forwarded-For, Forwarded, X-Real-IP, Via) unless management.allow_remote is on; call it on the gateway's own machine",
                ),
            ));
        }
        if !client.is_loopback() && !self.allow_remote {
            return Err((
                Some("remote_peer"),
                ApiError::new(
                    ErrorCode::Forbidden,
                    "the management API only answers loopback peers (management.allow_remote)",
                ),
            ));
        }
        if headers.contains_key(header::ORIGIN) {
            return Err((
                Some("browser_origin"),
                ApiError::new(
                    ErrorCode::Forbidden,
                    "the management API does not answer requests with an Origin header (a browser or a web page); use curl or the command line",
                ),
            ));
        }
        let now = Instant::now();
        // Failures and bans fall on the client's network: an IPv6 client holds its /64.
        let client = ban_key(client);
        let mut peers = self.peers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(until) = peers.get(&client).and_then(|p| p.banned_until)
            && until > now
        {
            return Err((
                Some("banned"),
                ApiError::new(
                    ErrorCode::Forbidden,
                    "this address is banned from the management API after repeated authentication failures",
                )
                .retry_after(until - now),
            ));
        }
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .or_else(|| headers.get("x-management-key").map(HeaderValue::as_bytes))
            .map(<[u8]>::trim_ascii);
        // An empty value is no key: `Authorization: Bearer ` is what a client with an unset
        // variable sends.
        let presented = presented.filter(|key| !key.is_empty());
        let Some(presented) = presented else {
            // No key at all: refused, but not counted. A web page can make a browser send
            // such a request to loopback, and must not be able to ban the operator with it.
            return Err((
                Some("missing_key"),
                ApiError::new(
                    ErrorCode::Unauthorized,
                    "no management key: send `Authorization: Bearer <key>` or `X-Management-Key: <key>`",
                ),
            ));
        };
        if bool::from(sha256(presented).ct_eq(expected)) {
            peers.remove(&client);
            return Ok(());
        }
        if peers.len() >= self.max_peers && !peers.contains_key(&client) {
            peers.retain(|_, p| p.banned_until.is_some_and(|until| until > now));
            // Still full: bans only. The one that ends first goes, in memory and in the
            // store, so that neither grows with the number of addresses an attacker rotates
            // through; that address regains `max_failures` guesses, as a new one would have.
            if peers.len() >= self.max_peers
                && let Some(first) =
                    peers.iter().min_by_key(|(_, p)| p.banned_until).map(|(ip, _)| *ip)
            {
                peers.remove(&first);
                if let Some(state) = &self.state {
                    state.submit(cliproxy_netguard::StateChange::Unban(first));
                }
                let evicted = self.evicted.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                // The first eviction and every thousandth: a flood must not flood the log.
                if evicted % 1000 == 1 {
                    warn!(log, "management API: ban table full, the ban ending first was dropped";
                        "event_type" => "security_violation", "dropped" => first.to_string(),
                        "evicted_total" => evicted, "max_bans" => self.max_peers);
                }
            }
        }
        let record = peers.entry(client).or_default();
        if record.banned_until.is_some_and(|until| until <= now) {
            *record = Peer::default();
        }
        record.failures += 1;
        let failures = record.failures;
        if failures >= self.max_failures {
            record.banned_until = Some(now + self.ban);
            if let Some(state) = &self.state {
                // Written in the store's next batch; the ban is in force in memory already.
                state.submit(cliproxy_netguard::StateChange::Ban(cliproxy_netguard::Ban {
                    ip: client,
                    until: crate::clock::unix_now().saturating_add(self.ban.as_secs()),
                }));
            }
            warn!(log, "management API: address banned after repeated authentication failures";
                "event_type" => "security_violation", "client" => client.to_string(),
                "failures" => failures, "ban_s" => self.ban.as_secs());
        }
        let reason = if failures >= self.max_failures { "ban_started" } else { "invalid_key" };
        Err((Some(reason), ApiError::new(ErrorCode::Unauthorized, "invalid management key")))
    }
}

/// The headers a proxy adds to what it forwards. A client calling the gateway directly has
/// no reason to send any of them.
const FORWARDING_HEADERS: [&str; 6] =
    ["forwarded", "x-forwarded-for", "x-real-ip", "x-forwarded-host", "x-forwarded-proto", "via"];

/// Whether a call came through a proxy. Every peer is asked, not only trusted proxies: a local
/// proxy that is missing from `server.trusted_proxies` also makes remote callers loopback.
fn is_forwarded(headers: &HeaderMap) -> bool {
    FORWARDING_HEADERS.iter().any(|name| headers.contains_key(*name))
}

/// Answers one management call.
pub(crate) async fn handle<B>(
    plane: &impl ControlPlane,
    gate: &Management,
    parts: &http::request::Parts,
    body: B,
    peer: SocketAddr,
    request_id: &str,
    log: &Logger,
) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let path = parts.uri.path();
    let guard = plane.guard();
    // The client the network guard sees: behind a trusted proxy, the address its header
    // names, so that a ban falls on the caller and not on the proxy every caller shares.
    let client = guard.ip.client_ip(peer.ip(), &parts.headers).to_canonical();
    let (event, outcome) = match gate.gate(&parts.headers, client, log) {
        Err((reason, error)) => {
            if let Some(reason) = reason {
                // At most one line per address and second; the rest are counted.
                guard.auth_failure(
                    Event::new(What::AuthFailure { plane: Plane::Management, reason, repeats: 0 })
                        .ip(client)
                        .request_id(request_id)
                        .provider("management"),
                );
            }
            if reason == Some("ban_started") {
                let config = gate;
                // Under the violations' line budget: one ban per rotated address must not
                // write a line each.
                guard.violation(
                    Event::new(What::SecurityViolation {
                        rule: crate::guard::MANAGEMENT_BAN_RULE,
                        rate_limit: false,
                        detail: format!(
                            "banned from the management API for {} after {} failed keys (management.max_failures, management.ban)",
                            humantime::format_duration(config.ban_duration()),
                            config.max_failures()
                        ),
                        repeats: 0,
                    })
                    .ip(client)
                    .request_id(request_id),
                );
            }
            // A refused call is charged to the per-IP bucket and then the strangers' global
            // bucket, like a client request without a valid key: a flood of them trips the per-IP
            // limit (429, its summarised violation line, the `rate_limit_violations` alert rules)
            // and spends the address's budget for the client API too. A call with the right key is
            // not charged: the operator, and a monitor polling `/status`, must get in while a
            // local client uses up the address's bucket. The key is compared before the bucket is
            // asked (one SHA-256), so a refused guess is counted toward a ban whatever the bucket
            // answers.
            let charged = reason.map(|_| {
                guard
                    .admit(client, request_id)
                    .and_then(|_| guard.admit_global(client, request_id, false))
            });
            let error = match charged {
                Some(Err(limited)) => ApiError::limited(&limited),
                _ => error,
            };
            ("auth_failure", Err(error))
        }
        Ok(()) => {
            let mut note = Note::default();
            let outcome = route(plane, gate, &parts.method, path, body, log, &mut note).await;
            let result = match &outcome {
                Ok(response) if response.status().is_success() => Ok(()),
                Ok(response) => Err(format!("status {}", response.status().as_u16())),
                Err(error) => Err(error.message.clone()),
            };
            let (event_type, what) = describe(&parts.method, path, note, result);
            guard.emit(Event::new(what).ip(client).user("management").request_id(request_id));
            (event_type, outcome)
        }
    };
    let response = outcome.unwrap_or_else(|error| error.into_response(ApiFormat::OpenAi));
    if gate.enabled() {
        // The request's logger already carries the method, path and peer.
        info!(log, "management call"; "event_type" => event, "status" => response.status().as_u16());
    }
    response
}

/// Every call is audited: calls on credentials as `credential_access`, the rest as
/// `config_change` (reads included: who looked at the gateway's state is worth knowing).
fn describe(
    method: &Method,
    path: &str,
    note: Note,
    outcome: Result<(), String>,
) -> (&'static str, What) {
    let rest = path.strip_prefix(PREFIX).unwrap_or("").trim_start_matches('/');
    let segments: Vec<&str> = rest.split('/').collect();
    if segments.first() == Some(&"auths") {
        let action = match (method, segments.as_slice()) {
            (&Method::GET, ["auths", "export"]) => "export",
            (&Method::GET, _) => "list",
            (&Method::POST, _) => "add",
            (&Method::DELETE, _) => "delete",
            _ => "other",
        };
        let credential = note.credential.or_else(|| match segments.as_slice() {
            ["auths", provider, id] => Some(format!("{provider}/{id}")),
            ["auths", provider] if action == "delete" => Some(format!("{provider}/*")),
            _ => None,
        });
        let credential = credential.map(|c| truncate(&c, 200));
        return ("credential_access", What::CredentialAccess { action, credential, outcome });
    }
    let action = match (method, segments.as_slice()) {
        (&Method::GET, ["status"]) => "status_read",
        (&Method::GET, ["maintenance"]) => "maintenance_read",
        (&Method::PUT, ["maintenance"]) => "maintenance",
        (&Method::GET, ["security", "ip-denylist"]) => "ip_denylist_read",
        (&Method::POST, ["security", "ip-denylist"]) => "ip_deny",
        (&Method::DELETE, ["security", "ip-denylist", ..]) => "ip_undeny",
        (&Method::GET, ["security", "bans"]) => "bans_read",
        (&Method::DELETE, ["security", "bans", ..]) => "ban_lift",
        (&Method::POST, ["config", "reload"]) => "reload",
        _ => "other",
    };
    let mut details = note.details;
    details.insert("path".to_owned(), Value::String(truncate(path, 200)));
    ("config_change", What::ConfigChange { action, changed: note.changed, details, outcome })
}

type Answer = Result<Response<Body>, ApiError>;

/// What a management route does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    ListAuths,
    AddAuth,
    ExportAuths,
    DeleteProvider,
    DeleteCredential,
    ReadDenylist,
    Deny,
    Undeny,
    ReadBans,
    LiftBan,
    ReadMaintenance,
    SetMaintenance,
    Reload,
    Status,
}

/// One management route: a method and a path under `/v0/management`, in which `{name}`
/// matches one segment and `{name..}` one or more.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// `GET`, `POST`, ...
    pub method: &'static str,
    /// The path after `/v0/management`.
    pub path: &'static str,
    action: Action,
}

/// Every management route. The router dispatches from this table, so a route exists only
/// here; the authorisation tests walk it, so a new route cannot go untested.
pub const ROUTES: &[Route] = &[
    Route { method: "GET", path: "/auths", action: Action::ListAuths },
    Route { method: "POST", path: "/auths", action: Action::AddAuth },
    Route { method: "GET", path: "/auths/export", action: Action::ExportAuths },
    Route { method: "DELETE", path: "/auths/{provider}", action: Action::DeleteProvider },
    Route { method: "DELETE", path: "/auths/{provider}/{id}", action: Action::DeleteCredential },
    Route { method: "GET", path: "/security/ip-denylist", action: Action::ReadDenylist },
    Route { method: "POST", path: "/security/ip-denylist", action: Action::Deny },
    Route { method: "DELETE", path: "/security/ip-denylist/{network..}", action: Action::Undeny },
    Route { method: "GET", path: "/security/bans", action: Action::ReadBans },
    Route { method: "DELETE", path: "/security/bans/{ip}", action: Action::LiftBan },
    Route { method: "GET", path: "/maintenance", action: Action::ReadMaintenance },
    Route { method: "PUT", path: "/maintenance", action: Action::SetMaintenance },
    Route { method: "POST", path: "/config/reload", action: Action::Reload },
    Route { method: "GET", path: "/status", action: Action::Status },
];

impl Route {
    /// The captured segments when `segments` match this route's path (a `{name..}` capture
    /// is its segments joined by `/`).
    fn captures(&self, segments: &[&str]) -> Option<Vec<String>> {
        let pattern: Vec<&str> = self.path.trim_start_matches('/').split('/').collect();
        let mut captures = Vec::new();
        for (i, part) in pattern.iter().enumerate() {
            if part.starts_with('{') && part.ends_with("..}") {
                let rest = segments.get(i..).filter(|rest| !rest.is_empty())?;
                captures.push(rest.join("/"));
                return Some(captures);
            }
            let segment = segments.get(i)?;
            if part.starts_with('{') {
                captures.push((*segment).to_owned());
            } else if part != segment {
                return None;
            }
        }
        (segments.len() == pattern.len()).then_some(captures)
    }
}

async fn route<B>(
    plane: &impl ControlPlane,
    gate: &Management,
    method: &Method,
    path: &str,
    body: B,
    log: &Logger,
    note: &mut Note,
) -> Answer
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let rest = path.strip_prefix(PREFIX).unwrap_or("");
    let segments: Vec<&str> = rest.strip_prefix('/').unwrap_or(rest).split('/').collect();
    let matching: Vec<(&Route, Vec<String>)> = ROUTES
        .iter()
        .filter_map(|route| route.captures(&segments).map(|captures| (route, captures)))
        .collect();
    let Some((route, captures)) =
        matching.iter().find(|(route, _)| route.method == method.as_str())
    else {
        if matching.is_empty() {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no management route {method} {path}"),
            ));
        }
        let mut allow: Vec<&str> = matching.iter().map(|(route, _)| route.method).collect();
        allow.dedup();
        let allow = allow.join(", ");
        let mut error = ApiError::new(
            ErrorCode::MethodNotAllowed,
            format!("{path} does not accept {method}; use {allow}"),
        );
        error.allow = Some(allow.into());
        return Err(error);
    };
    let capture = |i: usize| captures.get(i).map(String::as_str).unwrap_or_default();
    let guard = plane.guard();
    match route.action {
        Action::ListAuths => list(plane).await,
        Action::AddAuth => add(plane, body, log, note).await,
        Action::ExportAuths => export(plane, log).await,
        Action::DeleteProvider => delete(plane, capture(0), None).await,
        Action::DeleteCredential => delete(plane, capture(0), Some(capture(1))).await,
        Action::ReadDenylist => Ok(guard_api::denylist(guard)),
        Action::Deny => guard_api::deny(guard, read_body(body).await?, log, note).await,
        Action::Undeny => guard_api::undeny(guard, capture(0), log, note).await,
        Action::ReadBans => Ok(bans(gate)),
        Action::LiftBan => lift(gate, guard, capture(0), log, note).await,
        Action::ReadMaintenance => Ok(guard_api::maintenance(guard)),
        Action::SetMaintenance => {
            guard_api::set_maintenance(guard, read_body(body).await?, log, note)
        }
        Action::Reload => plane.reload_config("management API", note).await,
        Action::Status => Ok(status(plane)),
    }
}

/// `GET /security/bans`: the addresses banned from the management API after failed keys,
/// with when each ban ends (an IPv6 ban covers the address's /64, named in `network`), and
/// how many bans were dropped since the start to keep the table within its bound.
fn bans(gate: &Management) -> Response<Body> {
    let now = crate::clock::unix_now();
    let bans: Vec<Value> = gate
        .bans()
        .into_iter()
        .map(|(ip, until)| {
            let mut ban = json!({"ip": ip.to_string(), "until": until, "remaining_s": until.saturating_sub(now)});
            if ip.is_ipv6() {
                ban["network"] = json!(format!("{ip}/64"));
            }
            ban
        })
        .collect();
    let evicted = gate.evicted();
    json_response(StatusCode::OK, &json!({ "bans": bans, "evicted": evicted }))
}

/// `DELETE /security/bans/{ip}`: lifts a ban at once and removes it from the state store
/// before answering, so that a restart does not bring it back.
async fn lift(
    gate: &Management,
    guard: &Guard,
    text: &str,
    log: &Logger,
    note: &mut Note,
) -> Answer {
    // An IPv6 address may arrive with its colons percent-encoded.
    let decoded = text.replace("%3A", ":").replace("%3a", ":");
    let ip = decoded.parse::<IpAddr>().map_err(|_| {
        ApiError::new(
            ErrorCode::BadRequest,
            "the path must end with an IP address (e.g. /security/bans/127.0.0.1)",
        )
    })?;
    // A ban on IPv6 covers its /64: any address of it names the ban.
    let ip = ban_key(ip);
    note.changed.push("management.bans".to_owned());
    note.details.insert("ip".to_owned(), json!(ip.to_string()));
    if !gate.lift(ip) {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("{ip} is not banned from the management API"),
        ));
    }
    guard.persist(cliproxy_netguard::StateChange::Unban(ip)).await?;
    info!(log, "management API ban lifted"; "event_type" => "config_change", "ip" => ip.to_string());
    Ok(json_response(StatusCode::OK, &json!({ "lifted": ip.to_string() })))
}

/// `GET /status`: version, uptime, the state of each layer and the sandbox posture read
/// from `/proc/self` now.
fn status(plane: &impl ControlPlane) -> Response<Body> {
    let posture = cliproxy_container::posture::Posture::read()
        .ok()
        .and_then(|p| serde_json::to_value(p).ok())
        .unwrap_or(Value::Null);
    let store = &plane.vault().store;
    let gateway = plane.status();
    let encryption = match store.write_protection() {
        Protection::Plaintext => json!({"enabled": false}),
        Protection::Encrypted(key_id) => json!({"enabled": true, "key_id": key_id}),
    };
    json_response(
        StatusCode::OK,
        &json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": gateway.uptime.as_secs(),
            // What `/readyz` says without a key, with the errors (files, keys) it leaves out.
            "readiness": gateway.readiness,
            // Tasks alive on the runtime (connections, bodies in flight, background work):
            // a figure that returns to its idle value when nothing leaks.
            "runtime": {
                "tasks": tokio::runtime::Handle::try_current()
                    .map(|handle| handle.metrics().num_alive_tasks())
                    .ok(),
            },
            "layers": {
                "vault": {"dir": store.location().display().to_string(), "encryption": encryption},
                "management": {"enabled": true},
                "netguard": plane.guard().status(),
                "audit": plane.guard().audit_status(),
                "metrics": {
                    "listener": gateway.metrics.enabled,
                    "path": gateway.metrics.path,
                },
                "sandbox": {"applied": gateway.sandbox, "posture": posture},
            },
        }),
    )
}

/// `GET /auths`: every credential, without secrets. A file that cannot be read (damaged,
/// sealed under a key not configured) is listed as such, by the id in its name and the class
/// of the problem, never its content: one bad file must not hide the others or turn the
/// listing into a 500. (A plaintext file is listed with `"stored": "plaintext"`.)
async fn list(plane: &impl ControlPlane) -> Answer {
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
        "detail": crate::unreadable_detail(file.reason),
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
async fn add<B>(plane: &impl ControlPlane, body: B, log: &Logger, note: &mut Note) -> Answer
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
    let stored = credential
        .meta(store.location().join(format!("{}.json", credential.id)), store.write_protection());
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
async fn delete(plane: &impl ControlPlane, provider: &str, id: Option<&str>) -> Answer {
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
async fn export(plane: &impl ControlPlane, log: &Logger) -> Answer {
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
pub(crate) fn meta_json(meta: &CredentialMeta) -> Value {
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

/// Reads a management request body, at most [`MAX_BODY_BYTES`].
pub(crate) async fn read_body<B>(body: B) -> Result<Bytes, ApiError>
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("a management request body is at most {MAX_BODY_BYTES} bytes"),
        )),
        Err(_) => Err(ApiError::new(ErrorCode::BadRequest, "the request body could not be read")),
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    fn management(key: Option<&str>) -> Management {
        Management::new(&ManagementConfig {
            secret_key: key.map(|k| Secret::from(k.to_owned())),
            max_failures: NonZeroU32::new(3).unwrap(),
            ban: Duration::from_secs(60),
            ..ManagementConfig::default()
        })
    }

    fn headers(key: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-management-key", HeaderValue::from_str(key).unwrap());
        headers
    }

    fn code(result: Result<(), (Option<&'static str>, ApiError)>) -> Option<ErrorCode> {
        result.err().map(|(_, e)| e.code)
    }

    const KEY: &str = "mgmt-0123456789abcdef";

    #[tokio::test(start_paused = true)]
    async fn the_gate_bans_after_max_failures_per_peer_and_lifts_the_ban() {
        let log = Logger::root(slog::Discard, slog::o!());
        let m = management(Some(KEY));
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(code(m.gate(&headers(KEY), local, &log)), None);
        let mut bearer = HeaderMap::new();
        bearer.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {KEY}")).unwrap(),
        );
        assert_eq!(code(m.gate(&bearer, local, &log)), None);
        // No key at all (what a web page can make a browser send) is refused and not counted,
        // however often.
        for _ in 0..10 {
            assert_eq!(code(m.gate(&HeaderMap::new(), local, &log)), Some(ErrorCode::Unauthorized));
            assert_eq!(code(m.gate(&headers(""), local, &log)), Some(ErrorCode::Unauthorized));
        }
        assert!(m.bans().is_empty());
        for _ in 0..3 {
            assert_eq!(code(m.gate(&headers("wrong"), local, &log)), Some(ErrorCode::Unauthorized));
        }
        // Banned now: even the right key is refused, and it says for how long.
        let (reason, banned) = m.gate(&headers(KEY), local, &log).unwrap_err();
        assert_eq!(reason, Some("banned"));
        assert_eq!(banned.code, ErrorCode::Forbidden);
        assert_eq!(banned.retry_after, Some(Duration::from_secs(60)));
        // Another address is not affected.
        assert_eq!(code(m.gate(&headers(KEY), other, &log)), None);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(code(m.gate(&headers(KEY), local, &log)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn bans_are_listed_and_lifted() {
        let log = Logger::root(slog::Discard, slog::o!());
        let m = management(Some(KEY));
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..3 {
            let _ = m.gate(&headers("wrong"), local, &log);
        }
        let bans = m.bans();
        assert_eq!(bans.len(), 1);
        assert_eq!(bans[0].0, local);
        let now = crate::clock::unix_now();
        assert!((now + 59..=now + 61).contains(&bans[0].1), "{bans:?}");
        assert!(!m.lift("127.0.0.2".parse().unwrap()));
        assert!(m.lift(local));
        assert!(m.bans().is_empty());
        assert_eq!(code(m.gate(&headers(KEY), local, &log)), None);
        assert!(!m.lift(local));
    }

    #[test]
    fn forwarded_and_browser_calls_are_refused_before_they_can_count() {
        let log = Logger::root(slog::Discard, slog::o!());
        let m = management(Some(KEY));
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        for name in FORWARDING_HEADERS {
            let mut forwarded = headers(KEY);
            forwarded.insert(name, HeaderValue::from_static("203.0.113.9"));
            let (reason, error) = m.gate(&forwarded, local, &log).unwrap_err();
            assert_eq!((reason, error.code), (Some("forwarded"), ErrorCode::Forbidden), "{name}");
            forwarded.insert("x-management-key", HeaderValue::from_static("wrong"));
            for _ in 0..5 {
                assert_eq!(code(m.gate(&forwarded, local, &log)), Some(ErrorCode::Forbidden));
            }
        }
        let mut browser = headers("wrong");
        browser.insert(header::ORIGIN, HeaderValue::from_static("https://evil.example"));
        for _ in 0..5 {
            let (reason, error) = m.gate(&browser, local, &log).unwrap_err();
            assert_eq!((reason, error.code), (Some("browser_origin"), ErrorCode::Forbidden));
        }
        assert!(m.bans().is_empty());
        assert_eq!(code(m.gate(&headers(KEY), local, &log)), None);
        // With allow_remote, a forwarded call is judged by its (resolved) client like any other.
        let remote = Management::new(&ManagementConfig {
            secret_key: Some(Secret::from(KEY.to_owned())),
            allow_remote: true,
            ..ManagementConfig::default()
        });
        let mut forwarded = headers(KEY);
        forwarded.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        assert_eq!(code(remote.gate(&forwarded, "203.0.113.9".parse().unwrap(), &log)), None);
    }

    #[test]
    fn no_key_means_no_api_and_remote_peers_are_refused() {
        let log = Logger::root(slog::Discard, slog::o!());
        let off = management(None);
        assert!(!off.enabled());
        assert_eq!(
            code(off.gate(&headers(KEY), "127.0.0.1".parse().unwrap(), &log)),
            Some(ErrorCode::NotFound)
        );
        let m = management(Some(KEY));
        for remote in ["10.0.0.1", "192.168.1.5", "2001:db8::1"] {
            assert_eq!(
                code(m.gate(&headers(KEY), remote.parse().unwrap(), &log)),
                Some(ErrorCode::Forbidden)
            );
        }
        assert_eq!(code(m.gate(&headers(KEY), "::1".parse().unwrap(), &log)), None);
    }

    #[test]
    fn the_tracking_table_is_bounded() {
        let log = Logger::root(slog::Discard, slog::o!());
        let m = Management::new(&ManagementConfig {
            secret_key: Some(Secret::from(KEY.to_owned())),
            allow_remote: true,
            ..ManagementConfig::default()
        });
        for i in 0..(MAX_TRACKED_PEERS as u32 + 500) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 | i));
            let _ = m.gate(&headers("x"), ip, &log);
        }
        assert!(m.peers.lock().unwrap().len() <= MAX_TRACKED_PEERS);
    }

    /// A gate that answers remote peers (so that bans on any address can be tested), bans
    /// after `max_failures` wrong keys for a minute, and tracks at most `max_peers` peers.
    fn remote(max_failures: u32, max_peers: usize) -> Management {
        let mut m = Management::new(&ManagementConfig {
            secret_key: Some(Secret::from(KEY.to_owned())),
            allow_remote: true,
            max_failures: NonZeroU32::new(max_failures).unwrap(),
            ban: Duration::from_secs(60),
            ..ManagementConfig::default()
        });
        m.max_peers = max_peers;
        m
    }

    #[tokio::test(start_paused = true)]
    async fn ipv6_failures_and_bans_count_per_64() {
        let log = Logger::root(slog::Discard, slog::o!());
        let m = remote(3, MAX_TRACKED_PEERS);
        // One wrong key from each of three addresses of the same /64: an IPv6 client holds
        // the whole /64, and rotating within it must not buy more guesses.
        for ip in ["2001:db8::1", "2001:db8::2", "2001:db8::ffff:3"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(code(m.gate(&headers("wrong"), ip, &log)), Some(ErrorCode::Unauthorized));
        }
        let same: IpAddr = "2001:db8::abcd".parse().unwrap();
        assert_eq!(code(m.gate(&headers(KEY), same, &log)), Some(ErrorCode::Forbidden));
        assert_eq!(m.bans().len(), 1, "{:?}", m.bans());
        assert_eq!(m.bans()[0].0, "2001:db8::".parse::<IpAddr>().unwrap());
        // The next /64 is someone else.
        let next: IpAddr = "2001:db8:0:1::1".parse().unwrap();
        assert_eq!(code(m.gate(&headers(KEY), next, &log)), None);
        // Lifting any address of the /64 lifts the ban.
        assert!(m.lift("2001:db8::7".parse().unwrap()));
        assert_eq!(code(m.gate(&headers(KEY), same, &log)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_ban_table_is_bounded_and_evicts_the_ban_that_ends_first_in_memory_and_on_disk() {
        let log = Logger::root(slog::Discard, slog::o!());
        let dir = tempfile::tempdir().unwrap();
        let mut config = cliproxy_netguard::StateConfig::default();
        config.path = Some(dir.path().join("state.db"));
        let store: std::sync::Arc<dyn cliproxy_netguard::StateStore> =
            std::sync::Arc::new(cliproxy_netguard::SqliteStore::open(&config).unwrap());
        let mut m = remote(1, 4);
        m.persist_bans(store.clone(), Vec::new());
        // Ten addresses banned one second apart: the first ones end first.
        for n in 1..=10u8 {
            let ip = IpAddr::from([10, 0, 0, n]);
            assert_eq!(code(m.gate(&headers("wrong"), ip, &log)), Some(ErrorCode::Unauthorized));
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        let kept: Vec<IpAddr> = m.bans().into_iter().map(|(ip, _)| ip).collect();
        let latest: Vec<IpAddr> = (7..=10u8).map(|n| IpAddr::from([10, 0, 0, n])).collect();
        assert_eq!(kept, latest);
        assert_eq!(m.evicted(), 6);
        // The store holds no more than the table: an evicted ban is removed from it too.
        store.flush().unwrap();
        let mut stored: Vec<IpAddr> =
            store.load_bans().unwrap().into_iter().map(|b| b.ip).collect();
        stored.sort_unstable();
        assert_eq!(stored, latest);
        // A store holding more (written by an older version) is cut to the table's size at
        // start, the latest-ending kept.
        let now = crate::clock::unix_now();
        for (n, ip) in latest.iter().enumerate() {
            let until = now + 100 * (n as u64 + 1);
            store.submit(cliproxy_netguard::StateChange::Ban(cliproxy_netguard::Ban {
                ip: *ip,
                until,
            }));
        }
        store.flush().unwrap();
        let mut m = remote(1, 2);
        assert_eq!(m.persist_bans(store.clone(), store.load_bans().unwrap()), 2);
        store.flush().unwrap();
        let mut stored: Vec<IpAddr> =
            store.load_bans().unwrap().into_iter().map(|b| b.ip).collect();
        stored.sort_unstable();
        assert_eq!(stored, latest[2..]);
    }

    /// An attacker who rotates through addresses until its first bans are evicted from a full
    /// table gets back `max_failures` guesses for each evicted address: what a fresh address
    /// would give it, never more, so filling the table cannot unban it for good. The bans
    /// that stay are those that end last; the operator's own denylist is another table.
    #[tokio::test(start_paused = true)]
    async fn an_evicted_ban_gives_back_only_max_failures_guesses() {
        let log = Logger::root(slog::Discard, slog::o!());
        let m = remote(3, 2);
        let ip = |n: u8| IpAddr::from([127, 0, 0, n]);
        let guess = |n: u8| code(m.gate(&headers("wrong"), ip(n), &log));
        for n in [2, 3] {
            for _ in 0..3 {
                assert_eq!(guess(n), Some(ErrorCode::Unauthorized));
            }
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert_eq!(m.bans().len(), 2);
        // A third address's first guess finds the table full of bans: the one ending first
        // (127.0.0.2's) goes.
        assert_eq!(guess(4), Some(ErrorCode::Unauthorized));
        assert_eq!(m.evicted(), 1);
        assert_eq!(m.bans().iter().map(|(ip, _)| *ip).collect::<Vec<_>>(), [ip(3)]);
        // 127.0.0.2 has three guesses again, and is banned at the third: the fourth call is
        // refused before its key is looked at, the right key included.
        for _ in 0..3 {
            assert_eq!(guess(2), Some(ErrorCode::Unauthorized));
        }
        assert_eq!(code(m.gate(&headers(KEY), ip(2), &log)), Some(ErrorCode::Forbidden));
        // The table never holds more than its bound.
        assert!(m.peers.lock().unwrap().len() <= 2);
    }
}
