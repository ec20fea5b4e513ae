//! `RedisStore` against a real `redis-server` on a loopback port: every change kind read back,
//! two instances on one server (changes announced within a second, own messages not
//! delivered, usage adding up), a killed server (nothing lost), hand-written garbage, the AOF
//! crash test, a server restarted empty, and a planted secret that stays where it was put.

#![cfg(feature = "redis")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed expectation fails the test loudly"
)]

#[path = "../../../tests/src/redis_server.rs"]
mod redis_server;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use cliproxy_core::{QuotaPeriod, Secret};
use cliproxy_netguard::{
    Ban, DenyEntry, OnUnavailable, QuotaScope, QuotaUsage, RedisLink, RedisStore,
    RedisStoreOptions, SharedChange, StateChange, StateStore, StoredClientKey, UsageCounts,
    UsageRow,
};
use redis_server::RedisServer;

const TIMEOUT: Duration = Duration::from_millis(200);
const INTERVAL: Duration = Duration::from_millis(100);

fn link(url: &str, on_unavailable: OnUnavailable) -> Arc<RedisLink> {
    Arc::new(
        RedisLink::from_values(&Secret::from(url.to_owned()), None, "t:", TIMEOUT, on_unavailable)
            .expect("a valid link"),
    )
}

fn store(server: &RedisServer, id: &str) -> RedisStore {
    open(link(&server.url(), OnUnavailable::Local), id)
}

fn open(link: Arc<RedisLink>, id: &str) -> RedisStore {
    RedisStore::open(link, RedisStoreOptions::new(id, INTERVAL)).expect("the store opens")
}

/// Registers a watcher whose changes arrive on the channel, and waits for the first
/// `Everything`, which the store sends once it is subscribed: from then on, no message is
/// missed.
fn watcher(store: &RedisStore) -> Receiver<SharedChange> {
    let (sender, receiver) = mpsc::channel();
    let sender = std::sync::Mutex::new(sender);
    store.watch(Arc::new(move |change| {
        let _ = sender.lock().unwrap().send(change);
    }));
    assert_eq!(next(&receiver, Duration::from_secs(5)), SharedChange::Everything);
    receiver
}

/// Waits until the link answers again after the server came back. The ping is the probe
/// (it skips the link's backoff); it answers `Down` at once only while another thread (the
/// store's writer) is probing, so the loop ends within that probe's timeout.
fn wait_up(link: &RedisLink) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while link.ping().is_err() {
        assert!(Instant::now() < deadline, "the link did not come back");
        std::thread::yield_now();
    }
}

fn next(receiver: &Receiver<SharedChange>, within: Duration) -> SharedChange {
    receiver.recv_timeout(within).unwrap_or_else(|_| panic!("no change within {within:?}"))
}

fn key(id: &str, digest_digit: char, record: &str) -> StoredClientKey {
    StoredClientKey {
        id: id.to_owned(),
        digest: digest_digit.to_string().repeat(64),
        record_json: record.to_owned(),
    }
}

fn usage(client: &str, hour: u64, requests: u64, cost: u64) -> UsageRow {
    UsageRow {
        hour,
        client: client.to_owned(),
        provider: "openai".to_owned(),
        model: "gpt-4o:latest".to_owned(),
        counts: UsageCounts {
            requests,
            input_tokens: 10 * requests,
            cost_micros: cost,
            ..UsageCounts::default()
        },
    }
}

fn deny(network: &str, expires_at: Option<u64>) -> DenyEntry {
    DenyEntry {
        network: network.parse().unwrap(),
        reason: "abuse".to_owned(),
        created_at: 100,
        expires_at,
    }
}

fn quota(name: &str, tokens: u64) -> QuotaUsage {
    QuotaUsage {
        scope: QuotaScope::Client,
        name: name.to_owned(),
        period: QuotaPeriod::Daily,
        period_start: 86_400,
        tokens,
    }
}

#[test]
fn every_change_kind_round_trips_through_the_loads() {
    let server = RedisServer::start();
    let store = store(&server, "gw-a");
    let ip: IpAddr = "192.0.2.7".parse().unwrap();
    for change in [
        StateChange::Quota(quota("team/a:b", 10)),
        StateChange::Quota(quota("team/a:b", 42)),
        StateChange::Quota(QuotaUsage { scope: QuotaScope::Budget, ..quota("team", 7) }),
        StateChange::DenyAdd(deny("203.0.113.0/24", None)),
        // A mapped range is the IPv4 one: the removal below undoes it.
        StateChange::DenyAdd(deny("::ffff:198.51.100.0/120", Some(5_000))),
        StateChange::DenyAdd(deny("10.0.0.1/32", Some(50))),
        StateChange::Ban(Ban { ip, until: 9_999 }),
        StateChange::Ban(Ban { ip: "192.0.2.8".parse().unwrap(), until: 40 }),
        StateChange::AuditHead { seq: 7, hash: "ab".repeat(32) },
        StateChange::ClientKeyPut(key("k1", 'a', r#"{"v":1,"name":"one"}"#)),
        StateChange::ClientKeyPut(key("k2", 'b', r#"{"v":1,"name":"two"}"#)),
        StateChange::UsageAdd(usage("alice", 3_600, 1, 5)),
        StateChange::UsageAdd(usage("alice", 3_600, 2, 7)),
        StateChange::UsageAdd(usage("bob", 7_200, 1, 1)),
        StateChange::UsageAdd(usage("old", 0, 1, 1)),
    ] {
        store.submit(change);
    }
    store.flush().expect("written");
    store.submit(StateChange::DenyRemove("198.51.100.0/24".parse().unwrap()));
    store.submit(StateChange::Unban("::ffff:192.0.2.7".parse().unwrap()));
    store.submit(StateChange::ClientKeyDelete("k2".to_owned()));
    // Ends the entries that expired at 50 and 40, keeps the one without expiry; purges run
    // after the batch's upserts, so an ended entry added in the same batch goes too.
    store.submit(StateChange::PurgeExpired { now: 60 });
    store.submit(StateChange::DenyAdd(deny("10.0.0.2/32", Some(55))));
    store.submit(StateChange::UsagePurge { before: 3_600 });

    let mut quotas = store.load_quota_usage().expect("quotas");
    quotas.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(
        quotas,
        [QuotaUsage { scope: QuotaScope::Budget, ..quota("team", 7) }, quota("team/a:b", 42)]
    );
    assert_eq!(store.load_denylist().expect("denylist"), [deny("203.0.113.0/24", None)]);
    assert_eq!(store.load_bans().expect("bans"), []);
    assert_eq!(store.load_audit_head().expect("head"), Some((7, "ab".repeat(32))));
    assert_eq!(
        store.load_client_keys().expect("keys"),
        [key("k1", 'a', r#"{"v":1,"name":"one"}"#)]
    );
    // The digest index follows the records: k2's digest went with it.
    assert_eq!(server.cli(&["HGET", "t:state:client_key_digests", &"a".repeat(64)]).trim(), "k1");
    assert_eq!(server.cli(&["HEXISTS", "t:state:client_key_digests", &"b".repeat(64)]).trim(), "0");
    let rows = store.load_usage(0, u64::MAX).expect("usage");
    assert_eq!(rows, [usage("alice", 3_600, 3, 12), usage("bob", 7_200, 1, 1)]);
    assert_eq!(store.load_usage(3_600, 7_200).expect("one hour"), [usage("alice", 3_600, 3, 12)]);
    assert_eq!(server.cli(&["EXISTS", "t:state:usage:0"]).trim(), "0", "the purged hour is gone");
    // Another instance has an audit chain of its own.
    let other = self::store(&server, "gw-b");
    assert_eq!(other.load_audit_head().expect("head"), None);
    assert!(store.take_notices().is_empty(), "{:?}", store.take_notices());
    assert_eq!(store.path(), None);
    assert!(store.describe().starts_with("Redis at 127.0.0.1:"), "{}", store.describe());
    store.check().expect("healthy");
    assert!(store.shared_health().expect("a shared store").up);
}

#[test]
fn a_change_reaches_the_other_instance_within_a_second_and_not_its_own() {
    let server = RedisServer::start();
    let a = store(&server, "gw-a");
    let b = store(&server, "gw-b");
    let seen_by_a = watcher(&a);
    let seen_by_b = watcher(&b);

    // Measured from the submit, as a management write on one instance would be.
    let submitted = Instant::now();
    a.submit(StateChange::DenyAdd(deny("203.0.113.9/32", None)));
    assert_eq!(next(&seen_by_b, Duration::from_secs(1)), SharedChange::Denylist);
    let latency = submitted.elapsed();
    println!("denylist change seen by the other instance after {latency:?}");
    assert!(latency < Duration::from_secs(1), "{latency:?}");
    assert_eq!(b.load_denylist().expect("denylist"), [deny("203.0.113.9/32", None)]);

    let submitted = Instant::now();
    a.submit(StateChange::ClientKeyDelete("k1".to_owned()));
    a.submit(StateChange::Ban(Ban { ip: "192.0.2.1".parse().unwrap(), until: 9 }));
    let mut seen =
        [next(&seen_by_b, Duration::from_secs(1)), next(&seen_by_b, Duration::from_secs(1))];
    seen.sort_by_key(|change| format!("{change:?}"));
    assert_eq!(seen, [SharedChange::Bans, SharedChange::ClientKeys]);
    assert!(submitted.elapsed() < Duration::from_secs(1), "{:?}", submitted.elapsed());

    // The channel is ordered: when b's change reaches a, a's own three messages, published
    // before it, would have arrived first had they been delivered.
    b.submit(StateChange::Unban("192.0.2.1".parse().unwrap()));
    b.flush().expect("written");
    assert_eq!(next(&seen_by_a, Duration::from_secs(1)), SharedChange::Bans);
}

#[test]
fn usage_from_two_instances_adds_up() {
    let server = RedisServer::start();
    let a = store(&server, "gw-a");
    let b = store(&server, "gw-b");
    for _ in 0..100 {
        a.submit(StateChange::UsageAdd(usage("alice", 3_600, 1, 3)));
        b.submit(StateChange::UsageAdd(usage("alice", 3_600, 2, 1)));
    }
    a.flush().expect("a written");
    b.flush().expect("b written");
    assert_eq!(a.load_usage(0, u64::MAX).expect("usage"), [usage("alice", 3_600, 300, 400)]);
    assert_eq!(b.load_usage(0, u64::MAX).expect("usage"), [usage("alice", 3_600, 300, 400)]);
}

#[test]
fn a_killed_server_loses_nothing_submit_never_waits_and_flush_fails_within_the_timeout() {
    let password = "planted-store-password-41d7";
    let mut server = RedisServer::start_with(&["--save", "", "--requirepass", password]);
    let link = link(&server.url(), OnUnavailable::Local);
    let store = open(Arc::clone(&link), "gw-a");
    store.submit(StateChange::UsageAdd(usage("alice", 3_600, 1, 1)));
    store.flush().expect("written while up");

    server.kill();
    let started = Instant::now();
    for _ in 0..1_000 {
        store.submit(StateChange::UsageAdd(usage("alice", 3_600, 1, 1)));
    }
    store.submit(StateChange::ClientKeyPut(key("k1", 'c', r#"{"v":1}"#)));
    store.submit(StateChange::DenyAdd(deny("203.0.113.0/24", None)));
    let submitting = started.elapsed();
    assert!(submitting < Duration::from_millis(100), "submit waited: {submitting:?}");

    let started = Instant::now();
    let error = store.flush().expect_err("Redis is down");
    let waited = started.elapsed();
    println!("flush failed after {waited:?}: {error}");
    assert!(waited < TIMEOUT * 3, "flush waited {waited:?}");
    let text = format!("{error} {error:?}");
    assert!(text.contains("Redis"), "{text}");
    assert!(!text.contains(password), "{text}");
    // A read while down fails as fast, naming Redis and never the password.
    let started = Instant::now();
    let error = store.load_denylist().expect_err("Redis is down").to_string();
    assert!(started.elapsed() < TIMEOUT * 3, "the read waited {:?}", started.elapsed());
    assert!(error.contains("Redis at 127.0.0.1:") && !error.contains(password), "{error}");
    // Submitted meanwhile: kept apart from the failed batch, and summed.
    store.submit(StateChange::UsageAdd(usage("alice", 3_600, 1, 1)));
    // With `local` the instance keeps serving: not a readiness failure.
    store.check().expect("local keeps serving");
    assert!(!store.shared_health().expect("shared").up);

    server.restart();
    // The restarted server is ready (the harness waited for it); the ping is the probe that
    // tells the link so at once instead of after its backoff.
    wait_up(&link);
    store.flush().expect("the kept batch and the newer changes are written");
    // The restarted server is empty (no persistence): what is there now is the kept batch
    // and the change after it, nothing twice and nothing lost.
    assert_eq!(
        store.load_usage(0, u64::MAX).expect("usage"),
        [usage("alice", 3_600, 1_001, 1_001)]
    );
    assert_eq!(store.load_client_keys().expect("keys"), [key("k1", 'c', r#"{"v":1}"#)]);
    assert_eq!(store.load_denylist().expect("denylist"), [deny("203.0.113.0/24", None)]);
    let notices = store.take_notices().join("\n");
    assert!(!notices.contains(password), "{notices}");
}

#[test]
fn deny_is_not_ready_while_redis_is_down() {
    let mut server = RedisServer::start();
    let link = link(&server.url(), OnUnavailable::Deny);
    let store = open(Arc::clone(&link), "gw-a");
    store.submit(StateChange::Ban(Ban { ip: "192.0.2.1".parse().unwrap(), until: 9 }));
    store.flush().expect("written");
    store.check().expect("up");
    server.kill();
    assert!(store.flush().is_ok(), "nothing is pending");
    store.submit(StateChange::Unban("192.0.2.1".parse().unwrap()));
    assert!(store.flush().is_err());
    let error = store.check().expect_err("deny: not ready while down").to_string();
    assert!(error.contains("unreachable") && error.contains("deny"), "{error}");
    server.restart();
    wait_up(&link);
    store.check().expect("ready again");
}

#[test]
fn malformed_values_are_skipped_with_notices() {
    let server = RedisServer::start();
    let store = store(&server, "gw-a");
    store.submit(StateChange::DenyAdd(deny("203.0.113.0/24", None)));
    store.submit(StateChange::Ban(Ban { ip: "192.0.2.1".parse().unwrap(), until: 9 }));
    store.submit(StateChange::ClientKeyPut(key("good", 'd', "{}")));
    store.submit(StateChange::Quota(quota("team", 1)));
    store.submit(StateChange::UsageAdd(usage("alice", 3_600, 1, 1)));
    store.flush().expect("written");
    // Garbage written by hand beside the good values.
    let bad_record = format!(r#"{{"digest":"{}","record":"not json"}}"#, "e".repeat(64));
    let garbage: [&[&str]; 12] = [
        &[
            "HSET",
            "t:state:denylist",
            "not-a-network",
            r#"{"reason":"x","created_at":1,"expires_at":null}"#,
        ],
        &["HSET", "t:state:denylist", "10.9.9.9/32", "garbage"],
        &["HSET", "t:state:bans", "10.0.0.2", r#"{"until":-1}"#],
        &["HSET", "t:state:bans", "nobody", r#"{"until":1}"#],
        &["HSET", "t:state:client_keys", "bad-digest", r#"{"digest":"XYZ","record":"{}"}"#],
        &["HSET", "t:state:client_keys", "bad-record", &bad_record],
        &["HSET", "t:state:client_keys", "not-even-json", "\u{1}"],
        &[
            "HSET",
            "t:state:quota",
            "client:daily:x",
            r#"{"scope":"nobody","name":"x","period":"daily","period_start":0,"tokens":1}"#,
        ],
        &["HSET", "t:state:usage:3600", "garbage", "1"],
        &["HSET", "t:state:usage:3600", r#"["a","b","c","requests"]"#, "many"],
        &["ZADD", "t:state:usage_hours", "7200", "not-an-hour"],
        &["SET", "t:state:audit_head:gw-a", "{"],
    ];
    for args in garbage {
        server.cli(args);
    }
    assert_eq!(store.load_denylist().expect("denylist"), [deny("203.0.113.0/24", None)]);
    assert_eq!(store.load_bans().expect("bans").len(), 1);
    assert_eq!(store.load_client_keys().expect("keys"), [key("good", 'd', "{}")]);
    assert_eq!(store.load_quota_usage().expect("quota"), [quota("team", 1)]);
    assert_eq!(store.load_usage(0, u64::MAX).expect("usage"), [usage("alice", 3_600, 1, 1)]);
    assert_eq!(store.load_audit_head().expect("head"), None);
    let notices = store.take_notices();
    assert_eq!(notices.len(), 12, "{notices:#?}");
    for notice in &notices {
        assert!(notice.contains("skipped"), "{notice}");
        assert!(notice.contains("Redis at 127.0.0.1:"), "{notice}");
    }
    // A key of the wrong type, written by hand, is refused by Redis: the other operations of
    // the batch stand, and the refusal is a notice (a retry would not fix the data).
    server.cli(&["DEL", "t:state:bans"]);
    server.cli(&["SET", "t:state:bans", "a string"]);
    store.submit(StateChange::Ban(Ban { ip: "192.0.2.3".parse().unwrap(), until: 9 }));
    store.submit(StateChange::DenyAdd(deny("198.51.100.1/32", None)));
    store.flush().expect("the batch was run");
    assert_eq!(store.load_denylist().expect("denylist").len(), 2);
    let notices = store.take_notices().join("\n");
    assert!(notices.contains("t:state:bans: WRONGTYPE"), "{notices}");
    let error = store.load_bans().expect_err("a hash is needed").to_string();
    assert!(error.contains("t:state:bans"), "{error}");
}

#[test]
fn with_aof_a_kill_keeps_everything_flushed() {
    let mut server =
        RedisServer::start_with(&["--save", "", "--appendonly", "yes", "--appendfsync", "always"]);
    // A long interval: only the flush writes these changes before the kill, not the writer's
    // own schedule.
    let link = link(&server.url(), OnUnavailable::Local);
    let store =
        RedisStore::open(Arc::clone(&link), RedisStoreOptions::new("gw-a", Duration::from_secs(1)))
            .expect("the store opens");
    store.submit(StateChange::Quota(quota("first-contact", 1)));
    store.flush().expect("first contact");
    store.submit(StateChange::DenyAdd(deny("203.0.113.0/24", None)));
    store.submit(StateChange::Ban(Ban { ip: "192.0.2.1".parse().unwrap(), until: 9 }));
    store.submit(StateChange::ClientKeyPut(key("k1", 'a', "{}")));
    store.submit(StateChange::Quota(quota("team", 5)));
    store.submit(StateChange::AuditHead { seq: 3, hash: "cd".repeat(32) });
    store.submit(StateChange::UsageAdd(usage("alice", 3_600, 2, 2)));
    store.flush().expect("written");
    let epoch = server.cli(&["GET", "t:meta:epoch"]);

    // Redis crashes while the gateway runs: what the flush acknowledged is in the AOF.
    server.kill();
    server.restart();
    assert_eq!(server.cli(&["GET", "t:meta:epoch"]), epoch, "the marker survived: not emptied");
    let reader = self::store(&server, "gw-a");
    assert_eq!(reader.load_denylist().expect("denylist"), [deny("203.0.113.0/24", None)]);
    assert_eq!(reader.load_bans().expect("bans").len(), 1);
    assert_eq!(reader.load_client_keys().expect("keys"), [key("k1", 'a', "{}")]);
    assert_eq!(
        reader.load_quota_usage().expect("quota"),
        [quota("first-contact", 1), quota("team", 5)]
    );
    assert_eq!(reader.load_audit_head().expect("head"), Some((3, "cd".repeat(32))));
    assert_eq!(reader.load_usage(0, u64::MAX).expect("usage"), [usage("alice", 3_600, 2, 2)]);
    // The running store's next write finds the same marker: no false alarm.
    wait_up(&link);
    store.submit(StateChange::Quota(quota("after", 1)));
    store.flush().expect("written after the restart");
    let notices = store.take_notices().join("\n");
    assert!(!notices.contains("restarted empty"), "{notices}");
}

#[test]
fn a_server_restarted_empty_is_reported_and_the_watchers_told() {
    let mut server = RedisServer::start();
    let link = link(&server.url(), OnUnavailable::Local);
    let a = open(Arc::clone(&link), "gw-a");
    let b = store(&server, "gw-b");
    let seen_by_a = watcher(&a);
    let seen_by_b = watcher(&b);
    a.submit(StateChange::ClientKeyPut(key("k1", 'a', "{}")));
    a.flush().expect("written: the epoch marker is known now");
    assert_eq!(next(&seen_by_b, Duration::from_secs(1)), SharedChange::ClientKeys);
    // b makes contact too, so that it knows the marker before the restart.
    b.submit(StateChange::Unban("192.0.2.1".parse().unwrap()));
    b.flush().expect("b written");

    server.kill();
    server.restart();
    let restarted = Instant::now();
    // Each instance finds it on its own: a subscriber reconnects (`Everything`) and the
    // writer's beat finds the marker gone or new (`Emptied`), within the link's backoff (at
    // most 2 s) and a beat (1 s).
    for (name, seen) in [("a", &seen_by_a), ("b", &seen_by_b)] {
        let deadline = restarted + Duration::from_secs(8);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match seen.recv_timeout(left) {
                Ok(SharedChange::Emptied) => break,
                Ok(_) => {}
                Err(_) => panic!("{name} was not told the server restarted empty"),
            }
        }
    }
    println!("both instances told after {:?}", restarted.elapsed());
    for store in [&a, &b] {
        let notices = store.take_notices().join("\n");
        assert!(notices.contains("Redis restarted empty"), "{notices}");
        assert!(notices.contains("appendonly yes"), "{notices}");
    }
    assert_eq!(server.cli(&["EXISTS", "t:meta:epoch"]).trim(), "1", "the marker is back");
    // Re-seeding is the caller's: what it writes back is there again.
    a.submit(StateChange::ClientKeyPut(key("k1", 'a', "{}")));
    wait_up(&link);
    a.flush().expect("re-seeded");
    assert_eq!(b.load_client_keys().expect("keys"), [key("k1", 'a', "{}")]);
}

#[test]
fn a_planted_secret_is_stored_only_as_given_and_never_in_a_text() {
    let planted = "planted-secret-0c8f2e71";
    let server = RedisServer::start();
    let store = store(&server, "gw-a");
    let record = format!(r#"{{"v":1,"note":"{planted}"}}"#);
    store.submit(StateChange::ClientKeyPut(key("k1", 'a', &record)));
    // The same secret in a record that cannot be read back, and in a value written by hand.
    store.submit(StateChange::ClientKeyPut(StoredClientKey {
        id: "k2".to_owned(),
        digest: planted.to_owned(),
        record_json: format!("not json {planted}"),
    }));
    store.flush().expect("written");
    server.cli(&["HSET", "t:state:denylist", "10.0.0.1/32", planted]);
    server.cli(&["SET", "t:state:audit_head:gw-a", planted]);

    assert_eq!(store.load_client_keys().expect("keys"), [key("k1", 'a', &record)]);
    assert!(store.load_denylist().expect("denylist").is_empty());
    assert_eq!(store.load_audit_head().expect("head"), None);
    let texts = format!("{:?} {store:?} {}", store.take_notices(), store.describe());
    assert!(!texts.contains(planted), "{texts}");
    // Where it is in Redis: the two client key records as given, the digest index (the
    // second record's "digest"), and the two values written by hand. Nowhere else.
    let mut holding = Vec::new();
    for key in server.cli(&["--scan"]).lines() {
        let kind = server.cli(&["TYPE", key]);
        let dump = match kind.trim() {
            "hash" => server.cli(&["HGETALL", key]),
            "string" => server.cli(&["GET", key]),
            "zset" => server.cli(&["ZRANGE", key, "0", "-1"]),
            other => panic!("unexpected type {other} of {key}"),
        };
        if dump.contains(planted) {
            holding.push(key.to_owned());
        }
    }
    holding.sort();
    assert_eq!(
        holding,
        [
            "t:state:audit_head:gw-a",
            "t:state:client_key_digests",
            "t:state:client_keys",
            "t:state:denylist"
        ]
    );
    assert_eq!(
        server.cli(&["HGET", "t:state:client_keys", "k1"]).trim(),
        serde_json::json!({"digest": "a".repeat(64), "record": record}).to_string()
    );
}

#[test]
fn options_are_checked() {
    let link = link("redis://127.0.0.1:1", OnUnavailable::Local);
    let error =
        RedisStore::open(Arc::clone(&link), RedisStoreOptions::new("a", Duration::from_secs(2)))
            .expect_err("an interval over 1 s");
    assert!(error.to_string().contains("at most 1s"), "{error}");
    let error =
        RedisStore::open(link, RedisStoreOptions::new(" ", INTERVAL)).expect_err("no instance id");
    assert!(error.to_string().contains("instance id"), "{error}");
}

/// A write whose answer is lost (the server ran it after the timeout had passed) is retried
/// under its name, and the retry is skipped: the usage deltas are counted once.
#[test]
fn a_batch_whose_answer_was_lost_is_not_applied_twice() {
    let server = RedisServer::start_with(&["--save", "", "--enable-debug-command", "local"]);
    let link = link(&server.url(), OnUnavailable::Local);
    let store = open(Arc::clone(&link), "gw-a");
    store.submit(StateChange::UsageAdd(usage("alice", 3_600, 1, 1)));
    store.flush().expect("written");

    let client = redis::Client::open(server.url()).unwrap();
    let mut probe = client.get_connection().unwrap();
    let mut sleeper = client.get_connection().unwrap();
    // The server sleeps 600 ms: the store's script waits in its socket past the 200 ms
    // timeout, and runs when the server wakes, after the store has given up on the answer.
    sleeper
        .send_packed_command(&redis::cmd("DEBUG").arg("SLEEP").arg("0.6").get_packed_command())
        .unwrap();
    // The sleep has begun once a PING goes unanswered. No event says so sooner; each try
    // is answered at once while the server is awake, and the loop is bounded.
    probe.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis::cmd("PING").query::<String>(&mut probe).is_ok() {
        assert!(Instant::now() < deadline, "the server never slept");
    }
    store.submit(StateChange::UsageAdd(usage("alice", 3_600, 5, 5)));
    let started = Instant::now();
    let error = store.flush().expect_err("the answer does not come within the timeout");
    let waited = started.elapsed();
    println!("flush against a server that does not answer failed after {waited:?}");
    assert!(waited < TIMEOUT * 2, "flush waited {waited:?}");
    assert!(error.to_string().contains("Redis"), "{error}");
    // The sleeper's answer is the event that the server is awake (and has run the script).
    sleeper.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(sleeper.recv_response().unwrap(), redis::Value::Okay);
    wait_up(&link);
    store.flush().expect("the kept batch is retried");
    assert_eq!(store.load_usage(0, u64::MAX).expect("usage"), [usage("alice", 3_600, 6, 6)]);
}

/// A batch of thousands of operations goes in parts (each a short script), all written, and
/// is announced once, after its last part.
#[test]
fn a_large_batch_is_written_in_parts_and_announced_once() {
    let server = RedisServer::start();
    // A long interval: the whole batch waits for the flush.
    let a = RedisStore::open(
        link(&server.url(), OnUnavailable::Local),
        RedisStoreOptions::new("gw-a", Duration::from_secs(1)),
    )
    .expect("the store opens");
    a.submit(StateChange::Quota(quota("first-contact", 1)));
    a.flush().expect("first contact");
    let b = store(&server, "gw-b");
    let seen_by_b = watcher(&b);
    for i in 0..2_000u64 {
        a.submit(StateChange::UsageAdd(usage(&format!("client-{i:04}"), 3_600, 1, i)));
        a.submit(StateChange::DenyAdd(deny(&format!("10.1.{}.{}/32", i / 256, i % 256), None)));
    }
    // The server's own count of script calls and of the time they ran (its execution only,
    // so no scheduling delay of this busy machine counts).
    server.cli(&["CONFIG", "RESETSTAT"]);
    let started = Instant::now();
    a.flush().expect("written");
    println!("a batch of 4,000 changes written in {:?}", started.elapsed());
    let stats = server.cli(&["INFO", "commandstats"]);
    let evalsha = stats
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_evalsha:"))
        .unwrap_or_else(|| panic!("no script calls: {stats}"));
    let stat = |name: &str| -> f64 {
        evalsha
            .split(',')
            .find_map(|field| field.strip_prefix(name)?.strip_prefix('='))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in {evalsha}"))
    };
    let (calls, per_call) = (stat("calls"), stat("usec_per_call"));
    println!("{calls} script calls, {per_call} µs each on average");
    // 2,000 rows of three counters, their hour, 2,000 entries: 8,001 operations.
    assert!(calls >= 16.0, "{evalsha}");
    assert!(per_call < 10_000.0, "{evalsha}");

    let rows = b.load_usage(0, u64::MAX).expect("usage");
    assert_eq!(rows.len(), 2_000);
    assert_eq!(rows[1_999], usage("client-1999", 3_600, 1, 1_999));
    assert_eq!(b.load_denylist().expect("denylist").len(), 2_000);
    assert_eq!(next(&seen_by_b, Duration::from_secs(1)), SharedChange::Denylist);
    // The next message b sees is the one after the batch: the batch was announced once.
    a.submit(StateChange::Unban("192.0.2.1".parse().unwrap()));
    a.flush().expect("written");
    assert_eq!(next(&seen_by_b, Duration::from_secs(1)), SharedChange::Bans);
}

/// A server that refuses writes (out of memory) is not an outage: the batch is kept and
/// retried all the same, the refusal is reported once, and nothing is lost when it passes.
#[test]
fn a_refused_write_is_reported_kept_and_written_later() {
    let server = RedisServer::start();
    let store = store(&server, "gw-a");
    store.submit(StateChange::Quota(quota("before", 1)));
    store.flush().expect("written");
    server.cli(&["CONFIG", "SET", "maxmemory", "1"]);
    store.submit(StateChange::ClientKeyPut(key("k1", 'a', "{}")));
    let error = store.flush().expect_err("refused").to_string();
    assert!(error.contains("OOM"), "{error}");
    store.submit(StateChange::UsageAdd(usage("alice", 3_600, 1, 1)));
    assert!(store.flush().is_err(), "still refused");
    store.check().expect("local: not an outage of the link, the instance serves on");
    let notices = store.take_notices();
    assert_eq!(notices.len(), 1, "once per cause: {notices:#?}");
    assert!(notices[0].contains("OOM") && notices[0].contains("kept and retried"), "{notices:?}");

    server.cli(&["CONFIG", "SET", "maxmemory", "0"]);
    store.flush().expect("written once the server accepts writes");
    assert_eq!(store.load_client_keys().expect("keys"), [key("k1", 'a', "{}")]);
    assert_eq!(store.load_usage(0, u64::MAX).expect("usage"), [usage("alice", 3_600, 1, 1)]);
}
