//! The SQLite state store against real files: round trips, coalescing, durability across a
//! `kill -9`, and the checks on the file itself.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use std::{env, fs};

use cliproxy_core::QuotaPeriod;
use cliproxy_netguard::{
    Ban, DenyEntry, QuotaScope, QuotaUsage, SqliteStore, StateChange, StateConfig, StateStore,
    StoredClientKey, UsageCounts, UsageRow,
};
use rusqlite::{Connection, OpenFlags};

/// Set in the environment of the child process of the crash test; holds the database path.
const CRASH_CHILD: &str = "CLIPROXY_NETGUARD_STATE_CRASH_CHILD";

fn config(path: &Path, interval: Duration) -> StateConfig {
    #[allow(clippy::field_reassign_with_default, reason = "StateConfig is non_exhaustive")]
    {
        let mut config = StateConfig::default();
        config.path = Some(path.to_owned());
        config.flush_interval = interval;
        config
    }
}

fn open(path: &Path) -> SqliteStore {
    SqliteStore::open(&config(path, Duration::from_millis(100))).unwrap()
}

fn usage(name: &str, tokens: u64) -> QuotaUsage {
    QuotaUsage {
        scope: QuotaScope::Provider,
        name: name.to_owned(),
        period: QuotaPeriod::Monthly,
        period_start: 1_700_000_000,
        tokens,
    }
}

fn deny(network: &str, expires_at: Option<u64>) -> DenyEntry {
    DenyEntry {
        network: network.parse().unwrap(),
        reason: format!("test {network}"),
        created_at: 1_000,
        expires_at,
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A second, independent connection, as another process would have.
fn raw(path: &Path) -> Connection {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
}

fn stored_tokens(conn: &Connection, name: &str) -> Option<i64> {
    conn.query_row("SELECT tokens FROM quota_usage WHERE name = ?1", [name], |row| row.get(0)).ok()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn every_record_kind_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = open(&path);
    let mut client = usage("alice", 1234);
    client.scope = QuotaScope::Client;
    client.period = QuotaPeriod::Weekly;
    store.submit(StateChange::Quota(usage("openai", 99)));
    store.submit(StateChange::Quota(client.clone()));
    store.submit(StateChange::DenyAdd(deny("10.0.0.0/8", None)));
    store.submit(StateChange::DenyAdd(deny("2001:db8::/32", Some(5_000))));
    store.submit(StateChange::DenyAdd(deny("192.0.2.1/32", None)));
    store.submit(StateChange::DenyRemove("192.0.2.1/32".parse().unwrap()));
    store.submit(StateChange::Ban(Ban { ip: ip("198.51.100.7"), until: 9_000 }));
    store.submit(StateChange::Ban(Ban { ip: ip("2001:db8::7"), until: 9_001 }));
    store.submit(StateChange::Unban(ip("2001:db8::7")));
    store.close().unwrap();
    drop(store);

    let store = open(&path);
    let mut quota = store.load_quota_usage().unwrap();
    quota.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(quota, [client, usage("openai", 99)]);
    let mut denylist = store.load_denylist().unwrap();
    denylist.sort_by_key(|entry| entry.network);
    assert_eq!(denylist, [deny("10.0.0.0/8", None), deny("2001:db8::/32", Some(5_000))]);
    assert_eq!(store.load_bans().unwrap(), [Ban { ip: ip("198.51.100.7"), until: 9_000 }]);
    assert_eq!(store.take_notices(), Vec::<String>::new());
}

#[test]
fn a_thousand_updates_to_one_key_store_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = open(&path);
    for tokens in 1..=1000 {
        store.submit(StateChange::Quota(usage("openai", tokens)));
    }
    store.flush().unwrap();
    let conn = raw(&path);
    assert_eq!(stored_tokens(&conn, "openai"), Some(1000));
    let rows: i64 = conn.query_row("SELECT COUNT(*) FROM quota_usage", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 1);
}

#[test]
fn flush_makes_changes_visible_to_another_connection() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    // A long interval, so only the flush can have written the change.
    let store = SqliteStore::open(&config(&path, Duration::from_secs(1))).unwrap();
    let conn = raw(&path);
    store.submit(StateChange::Quota(usage("openai", 7)));
    store.submit(StateChange::Ban(Ban { ip: ip("203.0.113.9"), until: 10 }));
    store.flush().unwrap();
    assert_eq!(stored_tokens(&conn, "openai"), Some(7));
    let until: i64 = conn
        .query_row("SELECT until FROM bans WHERE ip = '203.0.113.9'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(until, 10);
    store.check().unwrap();
}

#[test]
fn unflushed_changes_are_written_within_one_interval() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    // The longest interval allowed: a store that used the default (500 ms) instead of the
    // configured interval would write before the lower bound below.
    let interval = Duration::from_secs(1);
    // Once the interval is over, the write waits only for the writer thread to wake and for
    // SQLite to append one small transaction to the WAL (no fsync under synchronous=NORMAL):
    // a few milliseconds on an idle machine. 900 ms is over a hundred times that, for a
    // loaded two-core runner, and stays under a second interval, so a writer that waited
    // two intervals would fail.
    let margin = Duration::from_millis(900);
    let store = SqliteStore::open(&config(&path, interval)).unwrap();
    let conn = raw(&path);
    let submitted = Instant::now();
    store.submit(StateChange::Quota(usage("openai", 1)));
    // Changes keep coming while the test waits: the interval runs from the first change of a
    // batch, so a steady stream must not put the write off. Another connection sees a commit
    // only by reading, so the row is polled every 5 ms, with a deadline far past the bound.
    let deadline = submitted + Duration::from_secs(10);
    let mut tokens = 1;
    while stored_tokens(&conn, "openai").is_none() {
        assert!(Instant::now() < deadline, "the change was never written");
        std::thread::sleep(Duration::from_millis(5));
        tokens += 1;
        store.submit(StateChange::Quota(usage("openai", tokens)));
    }
    let took = submitted.elapsed();
    // The first change waits one whole interval (the test's clock started before it was
    // submitted), so the changes of that interval go in one transaction.
    assert!(took >= interval, "written after {took:?}, before one interval of {interval:?}");
    assert!(
        took <= interval + margin,
        "written after {took:?}, more than {margin:?} past one interval of {interval:?}"
    );
}

#[test]
fn new_files_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join("nested").join("state.db");
    let store = open(&path);
    store.submit(StateChange::Quota(usage("openai", 1)));
    store.flush().unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    assert_eq!(mode(&dir.path().join("data")), 0o700);
    // SQLite gives the write-ahead log the database's mode.
    assert_eq!(mode(&PathBuf::from(format!("{}-wal", path.display()))), 0o600);
}

#[test]
fn a_loose_existing_file_is_tightened_with_a_notice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    open(&path).close().unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let store = open(&path);
    assert_eq!(mode(&path), 0o600);
    let notices = store.take_notices();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(notices[0].contains("from 0644 to 0600"), "{notices:?}");
}

#[test]
fn a_symlink_or_a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.db");
    open(&real).close().unwrap();
    let link = dir.path().join("state.db");
    symlink(&real, &link).unwrap();
    let error = SqliteStore::open(&config(&link, Duration::from_millis(100))).unwrap_err();
    let message = error.to_string();
    assert!(message.contains(&link.display().to_string()), "{message}");
    assert!(message.contains("symbolic link"), "{message}");

    let not_a_file = dir.path().join("dir.db");
    fs::create_dir(&not_a_file).unwrap();
    let message = SqliteStore::open(&config(&not_a_file, Duration::from_millis(100)))
        .unwrap_err()
        .to_string();
    assert!(message.contains("dir.db") && message.contains("not a regular file"), "{message}");
}

#[test]
fn a_file_that_is_not_a_database_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    fs::write(&path, vec![b'x'; 8192]).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let message =
        SqliteStore::open(&config(&path, Duration::from_millis(100))).unwrap_err().to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("not a SQLite database"), "{message}");
    assert!(message.contains("move the file"), "{message}");
    // The file is left alone for the operator to inspect.
    assert_eq!(fs::read(&path).unwrap(), vec![b'x'; 8192]);
}

#[test]
fn a_database_from_a_newer_version_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    open(&path).close().unwrap();
    Connection::open(&path).unwrap().pragma_update(None, "user_version", 5).unwrap();
    let message =
        SqliteStore::open(&config(&path, Duration::from_millis(100))).unwrap_err().to_string();
    assert!(message.contains("schema version 5"), "{message}");
    assert!(message.contains("newer cliproxy"), "{message}");
}

/// Issue 18 item 10: the audit log's head anchor is stored (the last one submitted wins) and
/// a version 1 database is upgraded to version 2 in place, keeping its rows.
#[test]
fn the_audit_head_is_stored_and_a_version_1_database_is_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = open(&path);
    assert_eq!(store.load_audit_head().unwrap(), None);
    store.submit(StateChange::AuditHead { seq: 5, hash: "a".repeat(64) });
    store.submit(StateChange::AuditHead { seq: 9, hash: "b".repeat(64) });
    store.submit(StateChange::Quota(usage("openai", 7)));
    store.close().unwrap();
    let store = open(&path);
    assert_eq!(store.load_audit_head().unwrap(), Some((9, "b".repeat(64))));
    store.close().unwrap();

    // What a version 1 cliproxy left: no audit_head table.
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "DROP TABLE audit_head; DROP TABLE client_keys; DROP TABLE usage_hourly; PRAGMA user_version = 1;",
    )
        .unwrap();
    drop(conn);
    let store = open(&path);
    assert_eq!(store.load_audit_head().unwrap(), None);
    assert_eq!(store.load_quota_usage().unwrap().len(), 1, "the rows of version 1 are kept");
    store.close().unwrap();
    let version: i64 = raw(&path).query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, 4);
    assert_eq!(open(&path).load_client_keys().unwrap(), [], "a version 1 file gets the table");
}

fn client_key(id: &str, digit: char, record: &str) -> StoredClientKey {
    StoredClientKey {
        id: id.to_owned(),
        digest: digit.to_string().repeat(64),
        record_json: record.to_owned(),
    }
}

fn sorted_keys(store: &SqliteStore) -> Vec<StoredClientKey> {
    let mut keys = store.load_client_keys().unwrap();
    keys.sort_by(|a, b| a.id.cmp(&b.id));
    keys
}

/// Issue 22: client key records are put, replaced and deleted by id, and what was flushed is
/// there after a reopen, the digest in its own column beside the opaque record.
#[test]
fn client_keys_are_put_replaced_deleted_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = open(&path);
    assert_eq!(store.load_client_keys().unwrap(), []);
    store.submit(StateChange::ClientKeyPut(client_key("ck-a", 'a', r#"{"version":1,"n":1}"#)));
    store.submit(StateChange::ClientKeyPut(client_key("ck-b", 'b', r#"{"version":1}"#)));
    store.submit(StateChange::ClientKeyPut(client_key("ck-c", 'c', r#"{"version":1}"#)));
    store.flush().unwrap();
    assert_eq!(sorted_keys(&store).len(), 3);

    // A replacement keeps one row per id; a delete of an unknown id is harmless.
    store.submit(StateChange::ClientKeyPut(client_key("ck-a", 'd', r#"{"version":1,"n":2}"#)));
    store.submit(StateChange::ClientKeyDelete("ck-b".to_owned()));
    store.submit(StateChange::ClientKeyDelete("ck-unknown".to_owned()));
    store.flush().unwrap();
    let expected = [
        client_key("ck-a", 'd', r#"{"version":1,"n":2}"#),
        client_key("ck-c", 'c', r#"{"version":1}"#),
    ];
    assert_eq!(sorted_keys(&store), expected);

    // Another connection sees the flushed rows, digest in its own column.
    let digest: String = raw(&path)
        .query_row("SELECT digest FROM client_keys WHERE id = 'ck-a'", [], |row| row.get(0))
        .unwrap();
    assert_eq!(digest, "d".repeat(64));
    store.close().unwrap();
    drop(store);

    let store = open(&path);
    assert_eq!(sorted_keys(&store), expected);
    assert_eq!(store.take_notices(), Vec::<String>::new());
}

/// Issue 22: changes to one id coalesce in a batch (the last one wins, a put after a delete
/// brings the key back, a delete after a put removes it) and ids do not disturb each other.
#[test]
fn client_key_changes_to_one_id_coalesce_to_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = open(&path);
    for n in 0..100 {
        store.submit(StateChange::ClientKeyPut(client_key("ck-a", 'a', &format!("{{\"n\":{n}}}"))));
    }
    store.submit(StateChange::ClientKeyPut(client_key("ck-b", 'b', "{}")));
    store.submit(StateChange::ClientKeyDelete("ck-b".to_owned()));
    store.submit(StateChange::ClientKeyDelete("ck-c".to_owned()));
    store.submit(StateChange::ClientKeyPut(client_key("ck-c", 'c', "{}")));
    store.flush().unwrap();
    assert_eq!(
        sorted_keys(&store),
        [client_key("ck-a", 'a', r#"{"n":99}"#), client_key("ck-c", 'c', "{}")]
    );
}

/// Issue 22: a row the store cannot rely on (a digest that is not a SHA-256 in hex, a record
/// that is not JSON) is skipped with a notice naming its id, and the good rows still load.
#[test]
fn client_key_rows_that_do_not_parse_are_skipped_with_a_notice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = open(&path);
    store.submit(StateChange::ClientKeyPut(client_key("ck-good", 'e', r#"{"version":1}"#)));
    store.flush().unwrap();
    let writer = Connection::open(&path).unwrap();
    writer
        .execute_batch(&format!(
            "INSERT INTO client_keys VALUES ('ck-short', 'abc', '{{}}');
             INSERT INTO client_keys VALUES ('ck-upper', '{}', '{{}}');
             INSERT INTO client_keys VALUES ('ck-torn', '{}', '{{\"version\":1,\"na');",
            "A".repeat(64),
            "f".repeat(64)
        ))
        .unwrap();
    assert_eq!(store.load_client_keys().unwrap(), [client_key("ck-good", 'e', r#"{"version":1}"#)]);
    let notices = store.take_notices().join("\n");
    assert!(notices.contains("\"ck-short\": the digest is not 64 lowercase hex"), "{notices}");
    assert!(notices.contains("\"ck-upper\": the digest is not 64 lowercase hex"), "{notices}");
    assert!(notices.contains("\"ck-torn\": the record is not JSON"), "{notices}");
    assert!(!notices.contains("\"na"), "the record is never quoted: {notices}");
}

/// Issue 22: a version 2 database (before client keys) is upgraded in place to version 3,
/// keeping its rows.
#[test]
fn a_version_2_database_is_upgraded_with_the_client_keys_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = open(&path);
    store.submit(StateChange::AuditHead { seq: 3, hash: "c".repeat(64) });
    store.close().unwrap();
    drop(store);
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch("DROP TABLE client_keys; DROP TABLE usage_hourly; PRAGMA user_version = 2;")
        .unwrap();
    drop(conn);

    let store = open(&path);
    assert_eq!(store.load_audit_head().unwrap(), Some((3, "c".repeat(64))));
    store.submit(StateChange::ClientKeyPut(client_key("ck-a", 'a', "{}")));
    store.flush().unwrap();
    assert_eq!(store.load_client_keys().unwrap(), [client_key("ck-a", 'a', "{}")]);
    let version: i64 = raw(&path).query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, 4);
    let index: String = raw(&path)
        .query_row(
            "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'client_keys' \
             AND sql IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(index, "client_keys_digest");
}

#[test]
fn a_database_of_something_else_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    Connection::open(&path).unwrap().execute_batch("CREATE TABLE photos (id INTEGER)").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let message =
        SqliteStore::open(&config(&path, Duration::from_millis(100))).unwrap_err().to_string();
    assert!(message.contains("\"photos\""), "{message}");
}

#[test]
fn purge_removes_ended_entries_and_bans_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = open(&path);
    store.submit(StateChange::DenyAdd(deny("10.0.0.1/32", Some(100))));
    store.submit(StateChange::DenyAdd(deny("10.0.0.2/32", Some(101))));
    store.submit(StateChange::DenyAdd(deny("10.0.0.3/32", None)));
    store.submit(StateChange::Ban(Ban { ip: ip("10.0.1.1"), until: 100 }));
    store.submit(StateChange::Ban(Ban { ip: ip("10.0.1.2"), until: 101 }));
    store.flush().unwrap();
    store.submit(StateChange::PurgeExpired { now: 100 });
    store.flush().unwrap();
    let networks: Vec<String> =
        store.load_denylist().unwrap().iter().map(|entry| entry.network.to_string()).collect();
    assert_eq!(networks, ["10.0.0.2/32", "10.0.0.3/32"]);
    assert_eq!(store.load_bans().unwrap(), [Ban { ip: ip("10.0.1.2"), until: 101 }]);
}

#[test]
fn rows_that_do_not_parse_are_skipped_with_a_notice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = open(&path);
    store.submit(StateChange::DenyAdd(deny("10.0.0.1/32", None)));
    store.flush().unwrap();
    let writer = Connection::open(&path).unwrap();
    writer
        .execute_batch(
            "INSERT INTO denylist VALUES ('not-a-network', 'hand edit', 1, NULL);
             INSERT INTO bans VALUES ('10.0.0.999', 5);
             INSERT INTO quota_usage VALUES ('provider', 'x', 'hourly', 0, 1);",
        )
        .unwrap();
    assert_eq!(store.load_denylist().unwrap(), [deny("10.0.0.1/32", None)]);
    assert_eq!(store.load_bans().unwrap(), []);
    assert_eq!(store.load_quota_usage().unwrap(), []);
    let notices = store.take_notices().join("\n");
    assert!(notices.contains("\"not-a-network\" is not an address"), "{notices}");
    assert!(notices.contains("\"10.0.0.999\" is not an IP address"), "{notices}");
    assert!(notices.contains("provider/x/hourly: unknown period"), "{notices}");
}

#[test]
fn check_reports_a_deleted_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = open(&path);
    store.check().unwrap();
    fs::remove_file(&path).unwrap();
    let message = store.check().unwrap_err().to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("gone"), "{message}");
    assert!(store.describe().contains("state.db"));
    assert_eq!(store.path(), Some(path.as_path()));
}

/// The child of the crash test: counts up one quota record, printing each value once
/// `flush` has returned, until the parent kills it (or a minute passes, so that an orphan
/// cannot run forever).
fn crash_child(path: &Path) {
    let store = SqliteStore::open(&config(path, Duration::from_millis(50))).unwrap();
    let started = Instant::now();
    let mut stdout = std::io::stdout();
    let mut tokens = 0;
    while started.elapsed() < Duration::from_secs(60) {
        tokens += 1;
        store.submit(StateChange::Quota(usage("openai", tokens)));
        if tokens % 25 == 0 {
            // A key created (as a management write would) is acknowledged only after the
            // flush, so every acknowledged key must survive the kill.
            store.submit(StateChange::ClientKeyPut(client_key(&format!("ck-{tokens}"), 'a', "{}")));
            store.flush().unwrap();
            writeln!(stdout, "ACK {tokens}").unwrap();
            stdout.flush().unwrap();
        }
    }
}

#[test]
fn a_killed_process_keeps_every_flushed_change_and_an_intact_file() {
    if let Some(path) = env::var_os(CRASH_CHILD) {
        crash_child(Path::new(&path));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    // The child is this test binary running only this test, in child mode.
    let mut child = Command::new(env::current_exe().unwrap())
        .args([
            "a_killed_process_keeps_every_flushed_change_and_an_intact_file",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acknowledged = Vec::new();
    while acknowledged.len() < 8 {
        let line = lines.next().expect("the child stopped before acknowledging").unwrap();
        if let Some(value) = line.strip_prefix("ACK ") {
            acknowledged.push(value.parse::<i64>().unwrap());
        }
    }
    // `Child::kill` sends SIGKILL: no destructor, no final flush.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child was killed, not finished: {status}");
    let last = *acknowledged.last().unwrap();

    let conn = Connection::open(&path).unwrap();
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
    let stored = stored_tokens(&conn, "openai").unwrap();
    assert!(stored >= last, "stored {stored}, but {last} had been flushed");
    drop(conn);

    let store = open(&path);
    let keys: Vec<String> = store.load_client_keys().unwrap().into_iter().map(|k| k.id).collect();
    for tokens in &acknowledged {
        let id = format!("ck-{tokens}");
        assert!(keys.contains(&id), "{id} was acknowledged but is not stored: {keys:?}");
    }
    let loaded = store.load_quota_usage().unwrap();
    assert_eq!(loaded.len(), 1);
    assert!(i64::try_from(loaded[0].tokens).unwrap() >= last);
}

const HOUR: u64 = 3600;
/// An hour of 2027 (a multiple of 3600).
const H0: u64 = 1_800_000_000 / HOUR * HOUR;

fn usage_row(hour: u64, client: &str, model: &str, counts: UsageCounts) -> UsageRow {
    UsageRow {
        hour,
        client: client.to_owned(),
        provider: "openai".to_owned(),
        model: model.to_owned(),
        counts,
    }
}

/// One request of `tokens` input tokens, 2 output tokens, 1 cache read, costing `cost`
/// micro-dollars (`None`: unpriced), an error when `error`.
fn one_request(tokens: u64, cost: Option<u64>, error: bool) -> UsageCounts {
    UsageCounts {
        requests: 1,
        errors: u64::from(error),
        input_tokens: tokens,
        output_tokens: 2,
        cache_read_tokens: 1,
        cache_write_tokens: 0,
        cost_micros: cost.unwrap_or(0),
        unpriced_requests: u64::from(cost.is_none()),
    }
}

fn times(n: u64, counts: UsageCounts) -> UsageCounts {
    let mut sum = UsageCounts::default();
    for _ in 0..n {
        sum.add(&counts);
    }
    sum
}

/// Issue 22: usage deltas to one row add up, in the pending batch and in the stored row
/// (a second batch adds to what the first wrote); other rows stay apart; the range read
/// takes `from` and leaves `to` out.
#[test]
fn usage_deltas_add_up_in_the_batch_and_in_the_stored_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = open(&path);
    assert_eq!(store.load_usage(0, u64::MAX).unwrap(), []);
    for n in 0..100 {
        store.submit(StateChange::UsageAdd(usage_row(
            H0,
            "alice",
            "gpt-4o",
            one_request(10, Some(5), n % 10 == 0),
        )));
    }
    store.submit(StateChange::UsageAdd(usage_row(H0, "bob", "llama", one_request(7, None, false))));
    store.submit(StateChange::UsageAdd(usage_row(
        H0 + HOUR,
        "alice",
        "gpt-4o",
        one_request(3, Some(1), false),
    )));
    store.flush().unwrap();
    // A second batch adds to the stored row rather than replacing it.
    store.submit(StateChange::UsageAdd(usage_row(
        H0,
        "alice",
        "gpt-4o",
        one_request(10, Some(5), false),
    )));
    let rows = store.load_usage(H0, H0 + HOUR).unwrap();
    let mut alice = times(101, one_request(10, Some(5), false));
    alice.errors = 10;
    assert_eq!(
        rows,
        [
            usage_row(H0, "alice", "gpt-4o", alice),
            usage_row(H0, "bob", "llama", one_request(7, None, false)),
        ]
    );
    assert_eq!(rows[0].counts.cost_micros, 505);
    assert_eq!(rows[1].counts.unpriced_requests, 1);
    assert_eq!(rows[1].counts.cost_micros, 0, "an unpriced request adds tokens, never cost");
    // `to` is left out, `from` taken; an empty or inverted range reads nothing.
    assert_eq!(store.load_usage(H0 + 1, H0 + HOUR + 1).unwrap().len(), 1);
    assert_eq!(store.load_usage(0, u64::MAX).unwrap().len(), 3);
    assert_eq!(store.load_usage(H0 + HOUR, H0).unwrap(), []);
    store.close().unwrap();
    drop(store);
    assert_eq!(open(&path).load_usage(0, u64::MAX).unwrap().len(), 3, "durable across a reopen");
}

/// Issue 22: two processes (two stores on one file) writing the same row both count: the
/// SQL upsert adds, it does not overwrite.
#[test]
fn two_writers_of_the_same_usage_row_both_count() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let first = open(&path);
    let second = open(&path);
    first.submit(StateChange::UsageAdd(usage_row(H0, "a", "m", one_request(4, Some(2), false))));
    second.submit(StateChange::UsageAdd(usage_row(H0, "a", "m", one_request(6, Some(3), true))));
    first.flush().unwrap();
    second.flush().unwrap();
    let rows = first.load_usage(0, u64::MAX).unwrap();
    assert_eq!(rows.len(), 1);
    let counts = rows[0].counts;
    assert_eq!((counts.requests, counts.errors, counts.input_tokens), (2, 1, 10));
    assert_eq!((counts.output_tokens, counts.cache_read_tokens, counts.cost_micros), (4, 2, 5));
}

/// Issue 22: the retention purge removes the rows of hours before its cut, and only them.
#[test]
fn the_usage_retention_purge_removes_older_hours_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = open(&path);
    for hour in 0..5 {
        store.submit(StateChange::UsageAdd(usage_row(
            H0 + hour * HOUR,
            "a",
            "m",
            one_request(1, Some(1), false),
        )));
    }
    store.flush().unwrap();
    store.submit(StateChange::UsagePurge { before: H0 + HOUR });
    store.submit(StateChange::UsagePurge { before: H0 + 2 * HOUR });
    store.submit(StateChange::UsagePurge { before: H0 });
    store.flush().unwrap();
    let hours: Vec<u64> = store.load_usage(0, u64::MAX).unwrap().iter().map(|r| r.hour).collect();
    assert_eq!(hours, [H0 + 2 * HOUR, H0 + 3 * HOUR, H0 + 4 * HOUR], "the latest cut wins");
}

/// Issue 22: databases of versions 1, 2 and 3 are upgraded to version 4, keeping their rows
/// and gaining the usage history table; a row that cannot be read is skipped with a notice.
#[test]
fn version_1_2_and_3_databases_gain_the_usage_history() {
    for (version, dropped) in [
        (1, "DROP TABLE audit_head; DROP TABLE client_keys; DROP TABLE usage_hourly;"),
        (2, "DROP TABLE client_keys; DROP TABLE usage_hourly;"),
        (3, "DROP TABLE usage_hourly;"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = open(&path);
        store.submit(StateChange::Quota(usage("openai", 7)));
        store.close().unwrap();
        drop(store);
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(&format!("{dropped} PRAGMA user_version = {version};")).unwrap();
        drop(conn);

        let store = open(&path);
        assert_eq!(store.load_quota_usage().unwrap().len(), 1, "v{version}: rows kept");
        store.submit(StateChange::UsageAdd(usage_row(H0, "a", "m", one_request(1, None, false))));
        assert_eq!(store.load_usage(0, u64::MAX).unwrap().len(), 1, "v{version}");
        let found: i64 = raw(&path).query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(found, 4, "from v{version}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = open(&path);
    store.submit(StateChange::UsageAdd(usage_row(H0, "a", "m", one_request(1, None, false))));
    store.flush().unwrap();
    Connection::open(&path)
        .unwrap()
        .execute_batch(&format!(
            "INSERT INTO usage_hourly VALUES ({H0}, 'bad', 'p', 'm', 1, 0, -5, 0, 0, 0, 0, 0)"
        ))
        .unwrap();
    assert_eq!(store.load_usage(0, u64::MAX).unwrap().len(), 1);
    let notices = store.take_notices().join("\n");
    assert!(notices.contains("/bad/p/m: negative input_tokens"), "{notices}");
}
