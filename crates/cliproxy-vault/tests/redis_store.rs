//! The Redis store against a real `redis-server` on a loopback port: records sealed exactly as
//! the files are, hostile records listed and not trusted, changes and refresh leases shared
//! between two stores, a killed or silent server failing within the timeout.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[path = "../../../tests/src/redis_server.rs"]
mod redis_server;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use cliproxy_core::Secret;
use cliproxy_vault::{
    Config, Credential, CredentialSecret, CredentialStore, EncryptionConfig, Error, Keyring,
    ListEntry, Notice, Protection, RedisStore, RedisStoreOptions, StoreKind, Unreadable,
};
use redis_server::RedisServer;

const PLANTED: &str = "sk-planted-redis-vault-token-7c41e09b";
const KEY_OLD: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const KEY_NEW: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";
const TIMEOUT: Duration = Duration::from_millis(500);

fn keyring(current: &str, previous: &[&str]) -> Keyring {
    let previous: Vec<Secret> = previous.iter().map(|k| Secret::from((*k).to_owned())).collect();
    Keyring::from_secrets(Some(&Secret::from(current.to_owned())), &previous).unwrap()
}

fn store_with(url: &str, keys: Keyring, require_encrypted: bool) -> RedisStore {
    RedisStoreOptions::new()
        .keys(keys)
        .require_encrypted(require_encrypted)
        .key_prefix("t:")
        .timeout(TIMEOUT)
        .open(redis::Client::open(url).unwrap())
        .unwrap()
}

fn open(server: &RedisServer) -> RedisStore {
    store_with(&server.url(), keyring(KEY_NEW, &[]), true)
}

fn credential(id: &str, token: &str) -> Credential {
    Credential::new_api_key("openai", Secret::from(token.to_owned())).unwrap().with_id(id).unwrap()
}

fn token_of(store: &dyn CredentialStore, id: &str) -> Option<String> {
    let credential = store.get(id).unwrap()?;
    let CredentialSecret::ApiKey(token) = &credential.secret else { panic!("{id}") };
    Some(token.expose().to_owned())
}

/// Every key of the server with everything Redis holds for it: its serialized form (`DUMP`)
/// and its contents read by type.
fn everything(server: &RedisServer) -> String {
    let mut seen = String::new();
    for key in server.cli(&["--scan"]).lines().filter(|k| !k.is_empty()) {
        seen.push_str(key);
        seen.push('\n');
        seen.push_str(&server.cli(&["DUMP", key]));
        let contents = match server.cli(&["TYPE", key]).trim() {
            "string" => server.cli(&["GET", key]),
            "hash" => server.cli(&["HGETALL", key]),
            "set" => server.cli(&["SMEMBERS", key]),
            other => panic!("unexpected type {other} of {key}"),
        };
        seen.push_str(&contents);
    }
    seen
}

#[test]
fn put_get_list_delete_round_trip_under_the_prefix() {
    let server = RedisServer::start();
    let store = open(&server);
    store.check().unwrap();
    assert!(store.list().unwrap().is_empty());
    assert_eq!(store.location().display().to_string(), "redis:t:vault");
    let mut b = credential("openai-b", "sk-round-trip-b");
    b.label = Some("second".to_owned());
    store.put(&b).unwrap();
    store.put(&credential("openai-a", "sk-round-trip-a")).unwrap();

    let listed = store.list().unwrap();
    let ids: Vec<&str> = listed.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["openai-a", "openai-b"]);
    assert_eq!(listed[1].label.as_deref(), Some("second"));
    assert_eq!(listed[0].path.display().to_string(), "redis:t:vault:cred:openai-a");
    assert_eq!(store.record_path("openai-a"), listed[0].path);
    assert_eq!(listed[0].stored, store.write_protection());
    assert!(matches!(&listed[0].stored, Protection::Encrypted(id) if id.len() == 16));
    assert_eq!(token_of(&store, "openai-b").as_deref(), Some("sk-round-trip-b"));
    assert_eq!(store.load_all().unwrap().len(), 2);
    assert!(matches!(store.entry("openai-a").unwrap(), Some(ListEntry::Readable(_))));
    assert!(store.entry("openai-z").unwrap().is_none());
    assert!(store.get("openai-z").unwrap().is_none());

    // Replacing keeps one record; every key is under the prefix.
    store.put(&credential("openai-a", "sk-round-trip-a2")).unwrap();
    assert_eq!(token_of(&store, "openai-a").as_deref(), Some("sk-round-trip-a2"));
    let mut keys: Vec<String> = server.cli(&["--scan"]).lines().map(str::to_owned).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["t:vault:cred:openai-a", "t:vault:cred:openai-b", "t:vault:ids", "t:vault:key-usage"]
    );
    // Each write counted under the data key.
    let key_id = store.write_protection();
    let Protection::Encrypted(key_id) = key_id else { unreachable!() };
    assert_eq!(server.cli(&["HGET", "t:vault:key-usage", &key_id]).trim(), "3");

    // Last use: the latest time wins, unknown ids are not kept, deletes forget theirs.
    store.record_use(&[("openai-a".to_owned(), 200), ("ghost".to_owned(), 5)]).unwrap();
    store.record_use(&[("openai-a".to_owned(), 100)]).unwrap();
    assert_eq!(store.list().unwrap()[0].last_used, Some(200));
    assert_eq!(server.cli(&["HEXISTS", "t:vault:last-used", "ghost"]).trim(), "0");

    assert!(store.delete("openai-a").unwrap());
    assert!(!store.delete("openai-a").unwrap());
    assert!(store.get("openai-a").unwrap().is_none());
    assert_eq!(server.cli(&["SISMEMBER", "t:vault:ids", "openai-a"]).trim(), "0");
    assert_eq!(server.cli(&["HEXISTS", "t:vault:last-used", "openai-a"]).trim(), "0");
    let mut bad = credential("x", "sk-x");
    bad.id = "../x".to_owned();
    assert!(matches!(store.put(&bad), Err(Error::InvalidName { .. })));

    // Every instance agrees on the device fingerprint.
    let other = open(&server);
    let fingerprint = store.device_fingerprint().unwrap();
    assert_eq!(fingerprint.len(), 64);
    assert_eq!(other.device_fingerprint().unwrap(), fingerprint);
    assert_eq!(server.cli(&["GET", "t:vault:fingerprint"]).trim(), fingerprint);
}

/// Redis never sees a plaintext token: after puts of an API key and of OAuth tokens, a scan of
/// every key, its `DUMP` and its contents holds none of them. The scan is shown to find a
/// token where one is.
#[test]
fn redis_never_holds_a_plaintext_token() {
    let server = RedisServer::start();
    let store = open(&server);
    store.put(&credential("openai-main", PLANTED)).unwrap();
    let oauth = Credential::new_oauth(
        "claude",
        cliproxy_vault::OAuthTokens {
            access_token: Secret::from("at-planted-redis-access-91d3".to_owned()),
            refresh_token: Secret::from("rt-planted-redis-refresh-44af".to_owned()),
            expires_at: 1_900_000_000,
            token_url: "https://auth.example/oauth/token".to_owned(),
            client_id: "client-1".to_owned(),
        },
    )
    .unwrap()
    .with_id("claude-main")
    .unwrap();
    store.put(&oauth).unwrap();
    store.record_use(&[("openai-main".to_owned(), 1)]).unwrap();
    store.device_fingerprint().unwrap();
    let lease = store.refresh_lock("claude-main", Duration::from_secs(30)).unwrap().unwrap();

    let seen = everything(&server);
    for secret in [PLANTED, "at-planted-redis-access-91d3", "rt-planted-redis-refresh-44af"] {
        assert!(!seen.contains(secret), "{secret} is in Redis");
    }
    assert!(seen.contains("t:vault:cred:openai-main") && seen.contains("ciphertext"), "{seen}");
    // Nor anything that decides where a token is sent: it is sealed with the token.
    assert!(!seen.contains("auth.example"), "{seen}");
    assert!(lease.release().unwrap());

    // The same scan finds a token that is there.
    server.cli(&["SET", "t:control", PLANTED]);
    assert!(everything(&server).contains(PLANTED));
}

/// A record copied onto another id does not open: under its own id it says it is another
/// credential, and with that id rewritten the authenticated id (the AAD) no longer matches.
#[test]
fn a_record_copied_onto_another_id_is_refused() {
    let server = RedisServer::start();
    let store = open(&server);
    store.put(&credential("openai-a", PLANTED)).unwrap();
    store.put(&credential("openai-b", "sk-other-b")).unwrap();

    server.cli(&["COPY", "t:vault:cred:openai-a", "t:vault:cred:openai-b", "REPLACE"]);
    let error = store.get("openai-b").unwrap_err().to_string();
    assert!(error.contains("ids and file names must match"), "{error}");
    assert!(error.contains("redis:t:vault:cred:openai-b"), "{error}");

    let record = server.cli(&["GET", "t:vault:cred:openai-a"]);
    let forged = record.replace("\"id\": \"openai-a\"", "\"id\": \"openai-b\"");
    assert_ne!(forged, record);
    server.cli(&["SET", "t:vault:cred:openai-b", forged.trim_end()]);
    let error = store.get("openai-b").unwrap_err();
    assert!(matches!(error, Error::Decrypt { .. }), "{error:?}");
    assert!(!error.to_string().contains(PLANTED));
    let entries = store.list_entries().unwrap();
    let ListEntry::Unreadable(b) = &entries[1] else { panic!("{entries:?}") };
    assert_eq!(b.reason, Unreadable::DecryptFailed);
    assert!(store.load_all().is_err());
    assert_eq!(token_of(&store, "openai-a").as_deref(), Some(PLANTED));
}

/// A plaintext record planted by whoever can write to the server is refused when loading,
/// listed as plaintext, and taken in only by a migration; without a current key no store
/// opens at all.
#[test]
fn plaintext_records_are_refused_unless_migrated() {
    let server = RedisServer::start();
    let plaintext = format!(
        "{{\"format\": \"cliproxy-credential\", \"version\": 1, \"id\": \"planted\", \"provider\": \"openai\", \"type\": \"api_key\", \"token\": \"{PLANTED}\", \"base_url\": \"https://evil.example/v1\", \"label\": null, \"created_at\": 1}}"
    );
    server.cli(&["SET", "t:vault:cred:planted", &plaintext]);
    server.cli(&["SADD", "t:vault:ids", "planted"]);

    let strict = open(&server);
    let error = strict.get("planted").unwrap_err();
    assert!(matches!(error, Error::PlaintextRefused { .. }), "{error:?}");
    assert!(!error.to_string().contains(PLANTED));
    assert!(strict.load_all().is_err());
    assert_eq!(strict.list().unwrap()[0].stored, Protection::Plaintext);

    let lenient = store_with(&server.url(), keyring(KEY_NEW, &[]), false);
    assert_eq!(token_of(&lenient, "planted").as_deref(), Some(PLANTED));
    assert!(
        lenient.take_notices().iter().any(|n| matches!(n, Notice::PlaintextWhileEncrypting { .. }))
    );

    assert!(strict.reencrypt().is_err(), "a re-encryption does not take plaintext in");
    let report = strict.migrate().unwrap();
    assert_eq!(report.from_plaintext, ["planted"]);
    let notices = strict.take_notices();
    assert!(
        notices.iter().any(|n| matches!(n, Notice::PlaintextTakenIn { base_url: Some(b), .. } if b == "https://evil.example/v1")),
        "{notices:?}"
    );
    assert_eq!(token_of(&strict, "planted").as_deref(), Some(PLANTED));
    assert!(!server.cli(&["GET", "t:vault:cred:planted"]).contains(PLANTED));

    let error = RedisStoreOptions::new()
        .keys(keyring(KEY_NEW, &[]).decrypt_only())
        .open(redis::Client::open(server.url()).unwrap())
        .unwrap_err();
    assert!(matches!(error, Error::RedisNeedsEncryption), "{error:?}");
    assert!(error.is_config());
}

/// Hostile contents (not JSON, a huge value, a newer version, another Redis type, an id that
/// is no name) are each listed as unreadable with a stable reason, beside a good record;
/// none is a panic, and each can be deleted.
#[test]
fn hostile_records_are_listed_as_unreadable() {
    let server = RedisServer::start();
    let store = open(&server);
    store.put(&credential("good", PLANTED)).unwrap();
    server.cli(&["SET", "t:vault:cred:garbage", "\u{1}not json {"]);
    server.cli(&["SETRANGE", "t:vault:cred:huge", "2000000", "x"]);
    server.cli(&[
        "SET",
        "t:vault:cred:future",
        "{\"format\": \"cliproxy-credential\", \"version\": 9}",
    ]);
    server.cli(&["HSET", "t:vault:cred:hash", "token", "x"]);
    for id in ["garbage", "huge", "future", "hash", "../etc", "vanished"] {
        server.cli(&["SADD", "t:vault:ids", id]);
    }

    let entries = store.list_entries().unwrap();
    let reasons: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| match e {
            ListEntry::Readable(meta) => (meta.id.as_str(), "readable"),
            ListEntry::Unreadable(file) => (file.id.as_str(), file.reason.as_str()),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(
        reasons,
        [
            ("../etc", "invalid_name"),
            ("future", "unsupported_version"),
            ("garbage", "malformed"),
            ("good", "readable"),
            ("hash", "malformed"),
            ("huge", "too_large"),
        ]
    );
    for entry in &entries {
        if let ListEntry::Unreadable(file) = entry {
            assert!(!file.error.to_string().contains(PLANTED));
        }
    }
    let ListEntry::Unreadable(huge) = &entries[5] else { unreachable!() };
    assert!(huge.error.to_string().contains("2000001 bytes"), "{}", huge.error);
    assert!(store.load_all().is_err());
    assert!(store.list().is_err());
    assert!(matches!(store.entry("huge").unwrap(), Some(ListEntry::Unreadable(_))));
    for id in ["garbage", "huge", "future", "hash"] {
        assert!(store.delete(id).unwrap(), "{id}");
    }
    server.cli(&["SREM", "t:vault:ids", "../etc"]);
    assert_eq!(store.load_all().unwrap().len(), 1);
}

/// The write count of the data key is the file store's rule, kept in Redis: a warning near
/// the limit, a refusal at it, and nothing written when refused.
#[test]
fn the_data_key_write_limit_holds_across_instances() {
    let server = RedisServer::start();
    let store = open(&server);
    let Protection::Encrypted(key_id) = store.write_protection() else { unreachable!() };
    server.cli(&["HSET", "t:vault:key-usage", &key_id, &((1u64 << 30) - 1).to_string()]);
    store.put(&credential("one", "sk-one")).unwrap();
    assert!(
        store
            .take_notices()
            .iter()
            .any(|n| matches!(n, Notice::KeyNearLimit { writes, .. } if *writes == 1 << 30))
    );
    server.cli(&["HSET", "t:vault:key-usage", &key_id, &(1u64 << 32).to_string()]);
    let error = store.put(&credential("two", "sk-two")).unwrap_err();
    assert!(matches!(error, Error::KeyExhausted { .. }), "{error:?}");
    assert!(store.get("two").unwrap().is_none());
}

/// A rotation re-seals every record under the new key; a record that does not decrypt stops
/// it before anything is rewritten.
#[test]
fn reencrypt_reads_everything_first() {
    let server = RedisServer::start();
    let old = store_with(&server.url(), keyring(KEY_OLD, &[]), true);
    old.put(&credential("one", "sk-one")).unwrap();
    old.put(&credential("two", "sk-two")).unwrap();
    let Protection::Encrypted(old_id) = old.write_protection() else { unreachable!() };

    // A record under a key nobody has: the run stops, nothing changes.
    let stranger = store_with(&server.url(), keyring(KEY_NEW, &[]), true);
    let Protection::Encrypted(new_id) = stranger.write_protection() else { unreachable!() };
    let sealed_one = server.cli(&["GET", "t:vault:cred:one"]);
    server.cli(&["SET", "t:vault:cred:bad", &sealed_one.replace("\"one\"", "\"bad\"")]);
    server.cli(&["SADD", "t:vault:ids", "bad"]);
    let rotating = store_with(&server.url(), keyring(KEY_NEW, &[KEY_OLD]), true);
    assert!(rotating.reencrypt().is_err());
    for id in ["one", "two"] {
        let record = server.cli(&["GET", &format!("t:vault:cred:{id}")]);
        assert!(record.contains(&old_id) && !record.contains(&new_id), "{id} was rewritten");
    }
    assert!(rotating.delete("bad").unwrap());

    let report = rotating.reencrypt().unwrap();
    assert_eq!(report.from_previous_key, ["one", "two"]);
    assert_eq!(rotating.reencrypt().unwrap().unchanged, 2);
    assert!(server.cli(&["GET", "t:vault:cred:one"]).contains(&new_id));
    assert_eq!(token_of(&stranger, "two").as_deref(), Some("sk-two"));
}

/// A put or a delete on one store reaches the other store's watcher (within 1 s, the issue's
/// bound); after the server was killed and restarted, the watcher says "re-read everything"
/// and follows changes again.
#[test]
fn changes_reach_the_other_instance_and_survive_a_restart() {
    let mut server = RedisServer::start();
    let writer = open(&server);
    let reader = open(&server);
    let (seen, changes) = mpsc::channel::<String>();
    let watcher = reader
        .watch(Box::new(move |id: &str| {
            let _ = seen.send(id.to_owned());
        }))
        .unwrap()
        .expect("the Redis store has a watcher");
    let next = || changes.recv_timeout(Duration::from_secs(1)).expect("a change within 1 s");

    writer.put(&credential("openai-a", "sk-a1")).unwrap();
    assert_eq!(next(), "openai-a");
    assert_eq!(token_of(&reader, "openai-a").as_deref(), Some("sk-a1"));
    assert!(writer.delete("openai-a").unwrap());
    assert_eq!(next(), "openai-a");
    // Someone else's message on the channel is no id and is not passed on.
    server.cli(&["PUBLISH", "t:vault:changes", "../../x"]);
    writer.put(&credential("openai-b", "sk-b")).unwrap();
    assert_eq!(next(), "openai-b");

    server.kill();
    server.restart();
    // The reconnection waits at most 2 s between attempts.
    assert_eq!(changes.recv_timeout(Duration::from_secs(5)).unwrap(), "*");
    let notices = reader.take_notices();
    assert!(
        matches!(notices.as_slice(), [Notice::ChangeFeedDown { .. }, Notice::ChangeFeedUp { .. }]),
        "{notices:?}"
    );
    writer.put(&credential("openai-c", "sk-c")).unwrap();
    assert_eq!(next(), "openai-c");

    // A dropped watcher stops calling.
    drop(watcher);
    // The thread lets go of its end of the channel once it sees that (it looks every 200 ms).
    match changes.recv_timeout(Duration::from_secs(2)) {
        Err(mpsc::RecvTimeoutError::Disconnected) => {}
        Ok(id) => panic!("a change after the watcher was dropped: {id}"),
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("the watcher's thread did not stop"),
    }
}

/// Of two instances, one refreshes: the second is told to wait while the first holds the
/// lease, gets it once it is given back, and a holder whose lease lapsed and was taken by
/// another does not delete the other's.
#[test]
fn one_instance_at_a_time_holds_the_refresh_lease() {
    let server = RedisServer::start();
    let first = open(&server);
    let second = open(&server);
    let ttl = Duration::from_secs(30);

    let lease = first.refresh_lock("claude-main", ttl).unwrap().expect("the first takes it");
    assert!(second.refresh_lock("claude-main", ttl).unwrap().is_none());
    assert!(first.refresh_lock("claude-main", ttl).unwrap().is_none(), "one holder at a time");
    let pttl: i64 = server.cli(&["PTTL", "t:vault:refresh:claude-main"]).trim().parse().unwrap();
    assert!(pttl > 0 && pttl <= 30_000, "{pttl}");
    // Other credentials are not held.
    second.refresh_lock("claude-other", ttl).unwrap().unwrap().release().unwrap();
    assert!(lease.release().unwrap());
    let second_lease = second.refresh_lock("claude-main", ttl).unwrap().expect("free again");
    assert!(second_lease.release().unwrap());

    // The first's lease lapses (its key is gone, as after its time) and the second takes it.
    let lapsed = first.refresh_lock("claude-main", ttl).unwrap().unwrap();
    server.cli(&["DEL", "t:vault:refresh:claude-main"]);
    let taken = second.refresh_lock("claude-main", ttl).unwrap().unwrap();
    assert!(!lapsed.release().unwrap(), "a lapsed lease releases nothing");
    assert_eq!(server.cli(&["EXISTS", "t:vault:refresh:claude-main"]).trim(), "1");
    assert!(first.refresh_lock("claude-main", ttl).unwrap().is_none());
    assert!(taken.release().unwrap());

    // A store one process uses lends every caller a lease that holds nothing.
    let dir = tempfile::tempdir().unwrap();
    let files = cliproxy_vault::FileStore::open(dir.path()).unwrap();
    assert!(files.refresh_lock("x", ttl).unwrap().unwrap().release().unwrap());
    assert!(files.refresh_lock("x", ttl).unwrap().is_some());
    assert!(files.watch(Box::new(|_| {})).unwrap().is_none());
}

/// One call of the store, for a table of them.
type Call<'a> = Box<dyn Fn() -> Result<(), Error> + 'a>;

/// A killed server (the password it had is never in an error) and a server that accepts and
/// never answers: every call fails within the timeout with an error that says Redis.
#[test]
fn calls_fail_within_the_timeout_when_redis_is_gone_or_silent() {
    let mut server = RedisServer::start_with(&["--save", "", "--requirepass", "planted-pw-3e9a"]);
    let store = open(&server);
    store.put(&credential("one", "sk-one")).unwrap();
    assert!(!format!("{store:?}").contains("planted-pw-3e9a"), "{store:?}");
    server.kill();
    let calls: Vec<(&str, Call<'_>)> = vec![
        ("get", Box::new(|| store.get("one").map(drop))),
        ("put", Box::new(|| store.put(&credential("two", "sk-two")))),
        ("list", Box::new(|| store.list_entries().map(drop))),
        ("delete", Box::new(|| store.delete("one").map(drop))),
        ("check", Box::new(|| store.check())),
        ("lease", Box::new(|| store.refresh_lock("one", TIMEOUT).map(drop))),
        ("watch", Box::new(|| store.watch(Box::new(|_| {})).map(drop))),
    ];
    for (name, call) in &calls {
        let started = Instant::now();
        let error = call().expect_err(name);
        let elapsed = started.elapsed();
        assert!(elapsed < TIMEOUT + Duration::from_millis(300), "{name} took {elapsed:?}");
        let text = error.to_string();
        assert!(matches!(error, Error::Redis { .. }), "{name}: {error:?}");
        assert!(text.starts_with("the credential store in Redis could not"), "{text}");
        assert!(!text.contains("planted-pw-3e9a") && !text.contains("redis://"), "{text}");
    }

    // Accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://127.0.0.1:{}", silent.local_addr().unwrap().port());
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        for connection in silent.incoming().take(2) {
            open.push(connection);
        }
        open
    });
    let store = store_with(&url, keyring(KEY_NEW, &[]), true);
    for name in ["get", "check"] {
        let started = Instant::now();
        let error = match name {
            "get" => store.get("one").map(drop).unwrap_err(),
            _ => store.check().unwrap_err(),
        };
        let elapsed = started.elapsed();
        assert!(elapsed >= TIMEOUT / 2, "{name} did not wait for an answer: {elapsed:?}");
        assert!(elapsed < TIMEOUT + Duration::from_millis(300), "{name} took {elapsed:?}");
        assert!(matches!(error, Error::Redis { .. }), "{error:?}");
    }
    drop(held);
}

/// `auth.store: redis` is read from the configuration; the file-store constructors refuse it
/// (the program opens it with its Redis connection), and `redis_store` opens it with the
/// section's keys.
#[test]
fn the_store_setting_selects_redis() {
    use figment::Figment;
    use figment::providers::{Format, Yaml};
    let config: Config = Figment::new()
        .merge(Yaml::string(&format!(
            "store: redis\nencryption: {{enabled: true, key: \"{KEY_NEW}\"}}\n"
        )))
        .extract()
        .unwrap();
    assert_eq!(config.store, StoreKind::Redis);
    assert!(matches!(config.build().map(drop), Err(Error::RedisNotGiven)));
    assert_eq!(Config::default().store, StoreKind::File);
    let error = Figment::new().merge(Yaml::string("store: etcd\n")).extract::<Config>();
    assert!(error.is_err());

    let server = RedisServer::start();
    let store =
        config.redis_store(redis::Client::open(server.url()).unwrap(), "t:", TIMEOUT).unwrap();
    store.put(&credential("one", PLANTED)).unwrap();
    assert_eq!(token_of(&store, "one").as_deref(), Some(PLANTED));
    let plain = Config { encryption: EncryptionConfig::default(), ..config };
    let error = plain.redis_store(redis::Client::open(server.url()).unwrap(), "t:", TIMEOUT);
    assert!(matches!(error, Err(Error::RedisNeedsEncryption)));
}
