//! The management gate: who may make a management call. It holds the key's digest and the
//! book of failures and bans per client address, and judges each call, in this order:
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
//!    `management.ban`. Bans are listed and lifted with `GET|DELETE /security/bans`
//!    (`bans.rs`), and offline with `cliproxy-server bans list|lift`.
//!
//! Refusals 2–4 come before the ban book, so none of them can ban anyone. Failures and bans
//! fall on an IPv6 client's /64, and the book holds at most `MAX_TRACKED_PEERS` addresses,
//! bans included (the ban that ends first is dropped). The gate only judges: what a refusal
//! costs the caller (the buckets) and its audit line are the call's course, in
//! `management.rs`, so this file knows nothing of the guard's limits or of the routes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use cliproxy_core::ErrorCode;
use http::HeaderMap;
use http::header::{self, HeaderValue};
use ring::digest::{SHA256, digest};
use slog::{Logger, warn};
use subtle::ConstantTimeEq;
use tokio::time::Instant;

use crate::config::ManagementConfig;
use crate::error::ApiError;
use crate::guard::ban_key;

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

    /// Makes the bans in force those of `stored` (what a state store shared with other
    /// instances holds now, this instance's own bans written first): a ban another instance
    /// made starts here, one it lifted ends here. Failures counted here that have not banned yet are kept. Returns how many bans
    /// were started and lifted.
    pub(crate) fn sync_bans(&self, stored: &[cliproxy_netguard::Ban]) -> (usize, usize) {
        let now_unix = crate::clock::unix_now();
        let now = Instant::now();
        let mut peers = self.peers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let in_store: HashMap<IpAddr, u64> = stored
            .iter()
            .filter(|ban| ban.until > now_unix)
            .map(|ban| (ban_key(ban.ip), ban.until))
            .collect();
        let mut lifted = 0;
        peers.retain(|ip, peer| {
            let banned = peer.banned_until.is_some_and(|until| until > now);
            let keep = !banned || in_store.contains_key(ip);
            lifted += usize::from(!keep);
            keep
        });
        let mut started = 0;
        for (ip, until) in in_store {
            let banned_until = now + Duration::from_secs(until - now_unix);
            let peer = peers.entry(ip).or_default();
            if peer.banned_until.is_none_or(|current| current <= now) {
                started += 1;
            }
            peer.failures = self.max_failures;
            peer.banned_until = Some(banned_until);
        }
        (started, lifted)
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
    pub(super) fn gate(
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
        let failures = self.count_failure(&mut peers, client, now, log);
        let reason = if failures >= self.max_failures { "ban_started" } else { "invalid_key" };
        Err((Some(reason), ApiError::new(ErrorCode::Unauthorized, "invalid management key")))
    }

    /// Counts a wrong key against `client` (its ban key), and bans it at `max_failures`;
    /// returns its failures so far. A client new to a full book makes room first: the peers
    /// that are not banned are forgotten, and if only bans are left, the one that ends first.
    fn count_failure(
        &self,
        peers: &mut HashMap<IpAddr, Peer>,
        client: IpAddr,
        now: Instant,
        log: &Logger,
    ) -> u32 {
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
        failures
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

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use cliproxy_core::Secret;

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
    async fn bans_follow_what_a_shared_store_holds() {
        let log = Logger::root(slog::Discard, slog::o!());
        let m = remote(1, MAX_TRACKED_PEERS);
        let here: IpAddr = "10.0.0.1".parse().unwrap();
        let elsewhere: IpAddr = "10.0.0.2".parse().unwrap();
        let failing: IpAddr = "10.0.0.3".parse().unwrap();
        assert_eq!(code(m.gate(&headers("wrong"), here, &log)), Some(ErrorCode::Unauthorized));
        // A failure that has not banned yet is this instance's own count and is kept.
        let m2 = remote(3, MAX_TRACKED_PEERS);
        assert_eq!(code(m2.gate(&headers("wrong"), failing, &log)), Some(ErrorCode::Unauthorized));
        let until = crate::clock::unix_now() + 600;
        // Another instance banned `elsewhere`, and the store no longer holds `here` (lifted
        // there).
        let stored = [cliproxy_netguard::Ban { ip: elsewhere, until }];
        assert_eq!(m.sync_bans(&stored), (1, 1));
        assert_eq!(code(m.gate(&headers(KEY), elsewhere, &log)), Some(ErrorCode::Forbidden));
        assert_eq!(code(m.gate(&headers(KEY), here, &log)), None);
        // Again: nothing changes.
        assert_eq!(m.sync_bans(&stored), (0, 0));
        // An ended ban in the store starts nothing.
        let ended = [cliproxy_netguard::Ban { ip: here, until: 1 }];
        assert_eq!(m2.sync_bans(&ended), (0, 0));
        // The failure counted before the sync still counts: two more make the three that ban.
        let _ = m2.gate(&headers("wrong"), failing, &log);
        assert!(m2.bans().is_empty());
        let _ = m2.gate(&headers("wrong"), failing, &log);
        assert_eq!(m2.bans().len(), 1, "{:?}", m2.bans());
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
