//! Disk faults through the real binary (issue 9, item 2): the audit log on a full file system,
//! an unwritable state directory or database, a read-only `auth.dir`, damaged credential files
//! and a damaged state database. Each fault has the behaviour `docs/security/disk-faults.md`
//! decides, an error that names the file (and the config key), and no stored credential is
//! lost or altered. Full file systems and read-only directories are made in a private mount
//! namespace of the gateway alone (`unshare --mount`); files the gateway holds open are made
//! unwritable with `chattr +i`, which stops root too.

use std::path::{Path, PathBuf};

use cliproxy_e2e::disk::*;
use cliproxy_e2e::*;
use reqwest::Method;
use serde_json::{Value, json};

use crate::assert_no_secrets;

const CATEGORY: &str = "disk-faults";
const TOKEN_A: &str = "sk-e2e-disk-token-alpha-4c1e9b07";
const TOKEN_B: &str = "sk-e2e-disk-token-bravo-8f3a2d55";

/// A harness with the faults config, two stored credentials (`oa-a`, `oa-b`), the audit log
/// in `<dir>/audit/audit.log` and the state database in `<dir>/state/state.db`.
struct Setup {
    harness: Harness,
    audit_dir: PathBuf,
    state_dir: PathBuf,
}

impl Setup {
    fn new() -> Self {
        let harness = Harness::new();
        let base = harness.config_path().parent().unwrap().to_owned();
        let audit_dir = base.join("audit");
        let state_dir = base.join("state");
        std::fs::create_dir_all(&audit_dir).unwrap();
        std::fs::create_dir_all(&state_dir).unwrap();
        let setup = Self { harness, audit_dir, state_dir };
        setup.write_config("100ms");
        setup.harness.vault_add("oa", "oa-a", TOKEN_A, None);
        setup.harness.vault_add("oa", "oa-b", TOKEN_B, None);
        setup
    }

    fn write_config(&self, flush: &str) {
        faults_config(
            &self.harness,
            "http://127.0.0.1:9",
            &self.audit_file(),
            &self.state_db(),
            flush,
        );
    }

    fn audit_file(&self) -> PathBuf {
        self.audit_dir.join("audit.log")
    }

    fn state_db(&self) -> PathBuf {
        self.state_dir.join("state.db")
    }

    /// Both stored credentials still decrypt to their tokens.
    fn assert_credentials_intact(&self) {
        assert_eq!(token_of(&self.harness, "oa-a"), TOKEN_A);
        assert_eq!(token_of(&self.harness, "oa-b"), TOKEN_B);
    }

    /// Every file of `auth.dir`, name and bytes, but the audit checkpoint signing key: the
    /// first start with the audit log on makes it (bookkeeping, not a credential).
    fn auth_files(&self) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(self.harness.auth_dir())
            .unwrap()
            .filter(|entry| {
                entry.as_ref().map_or(true, |e| e.file_name() != ".audit-signing-key.json")
            })
            .map(|entry| {
                let entry = entry.unwrap();
                (
                    entry.file_name().to_string_lossy().into_owned(),
                    std::fs::read(entry.path()).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    }
}

fn secrets() -> [&'static str; 4] {
    [TOKEN_A, TOKEN_B, ENCRYPTION_KEY, MANAGEMENT_KEY]
}

/// Waits (bounded poll: the file is written by the gateway's own thread, with no event to
/// wait on) until `path` holds at least `lines` complete lines.
async fn wait_for_lines(path: &Path, lines: usize) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.matches('\n').count() >= lines {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} never held {lines} lines",
            path.display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Waits (bounded poll on the probe) until `/readyz` answers `status`.
async fn wait_for_readiness(gateway: &Gateway, status: u16) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (now, body) = readiness(gateway).await;
        if now == status {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz stayed {now} ({body}), expected {status}; logs:\n{}",
            gateway.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The audit log on a 64 KiB tmpfs that the test fills: requests are still served (the audit
/// policy is fail-open for traffic, loud for the operator), the error names the file and the
/// key, `/readyz` is 503 naming the audit check, `cliproxy_audit_healthy` drops to 0 and the
/// write-error counter moves; once space is freed the held lines are written, everything turns
/// healthy again and the chain verifies.
#[tokio::test]
async fn a_full_audit_disk_keeps_serving_says_so_and_recovers() {
    let setup = Setup::new();
    let mut gateway =
        setup.harness.start_in_namespace(&mount_tmpfs(&setup.audit_dir, "64k")).await.running();
    let metrics = metrics_addr(&gateway).await;
    let http = client();
    let pid = gateway.pid();
    let audit = seen_by(pid, &setup.audit_file());
    let filler = seen_by(pid, &setup.audit_dir.join("filler"));
    assert_eq!(chat(&http, &gateway).await.0, 200);
    wait_for_lines(&audit, 1).await;
    assert_eq!(metric(metrics, "cliproxy_audit_healthy").await, Some(1.0));

    // Fill the file system to the last byte.
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 4096];
        while file.write_all(&block).is_ok() {}
        while file.write_all(&block[..1]).is_ok() {}
    }
    // Served regardless, and the failure is reported as the lines come in.
    for _ in 0..20 {
        assert_eq!(chat(&http, &gateway).await.0, 200, "{}", gateway.logs());
    }
    let error = gateway
        .wait_for_log(|e| {
            e["level"] == "ERRO"
                && e["msg"].as_str().is_some_and(|m| m.contains("cannot write the audit log"))
        })
        .await;
    let message = error["msg"].as_str().unwrap();
    assert!(message.contains(&setup.audit_file().display().to_string()), "{error}");
    assert!(message.contains("logging.audit.file"), "{error}");
    assert!(message.contains("No space left on device"), "{error}");
    let body = wait_for_readiness(&gateway, 503).await;
    assert_eq!(body["failing"], "audit", "{body}");
    // The unauthenticated probe names the check, never the file (the error log above does).
    assert!(!body.to_string().contains("audit.log"), "{body}");
    assert_eq!(metric(metrics, "cliproxy_audit_healthy").await, Some(0.0));
    assert!(metric(metrics, "cliproxy_audit_write_errors_total").await.unwrap() >= 1.0);

    // Space comes back: the backlog is written and the sink is healthy again.
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(chat(&http, &gateway).await.0, 200);
    gateway.wait_for_log(|e| e["msg"] == "the audit log is writable again").await;
    wait_for_readiness(&gateway, 200).await;
    assert_eq!(metric(metrics, "cliproxy_audit_healthy").await, Some(1.0));

    // Every request made it into the chain (nothing dropped: the backlog held them), and the
    // chain verifies. The file lives in the gateway's namespace: copied out while it runs.
    let deadline = std::time::Instant::now() + WAIT;
    let text = loop {
        let text = std::fs::read_to_string(&audit).unwrap();
        if text.matches("\"provider_request\"").count() >= 22 {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "requests missing from the audit log:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let copy = setup.audit_dir.join("copy.log");
    std::fs::write(&copy, &text).unwrap();
    let (ok, report) = audit_verify(&copy);
    assert!(ok, "{report}");
    assert_eq!(
        text.matches("\"provider_request\"").count(),
        22,
        "every served request once:\n{text}"
    );
    assert!(!text.contains("audit_events_lost"), "{text}");
    gateway.terminate();
    assert!(gateway.wait().await.success(), "{}", gateway.logs());
    assert_no_secrets(&text, &secrets());
    assert_no_secrets(&gateway.logs(), &secrets());
    setup.assert_credentials_intact();
    report::cases(CATEGORY, "a_full_audit_disk_keeps_serving_says_so_and_recovers", 1);
}

/// A state directory that cannot be written when the gateway starts (read-only mount: a new
/// database cannot be created, an existing one cannot be opened for writing) and a database
/// file made immutable: the start is refused with exit 1, naming the file and `state.path`, and
/// the credentials are untouched.
#[tokio::test]
async fn an_unwritable_state_store_stops_the_start_naming_the_file_and_key() {
    let setup = Setup::new();
    let before = setup.auth_files();
    let mut cases = 0;

    // 1. No database yet, read-only directory.
    let (status, logs) =
        setup.harness.start_in_namespace(&mount_read_only(&setup.state_dir)).await.exited();
    assert_eq!(status.code(), Some(1), "{logs}");
    assert!(logs.contains(&setup.state_db().display().to_string()), "{logs}");
    assert!(logs.contains("state.path"), "{logs}");
    assert!(logs.contains("Read-only file system"), "{logs}");
    cases += 1;

    // 2. An existing database (with usage in it), read-only directory.
    let mut gateway = setup.harness.start().await;
    assert_eq!(chat(&client(), &gateway).await.0, 200);
    gateway.terminate();
    assert!(gateway.wait().await.success());
    assert!(setup.state_db().exists());
    let db_before = std::fs::read(setup.state_db()).unwrap();
    let (status, logs) =
        setup.harness.start_in_namespace(&mount_read_only(&setup.state_dir)).await.exited();
    assert_eq!(status.code(), Some(1), "{logs}");
    assert!(logs.contains(&setup.state_db().display().to_string()), "{logs}");
    assert!(logs.contains("state.path"), "{logs}");
    assert_eq!(std::fs::read(setup.state_db()).unwrap(), db_before);
    cases += 1;

    // 3. The database file itself immutable (root cannot write it either).
    {
        let _immutable = Immutable::set(&setup.state_db());
        let (status, logs) = setup.harness.try_start().await.exited();
        assert_eq!(status.code(), Some(1), "{logs}");
        assert!(logs.contains(&setup.state_db().display().to_string()), "{logs}");
        assert!(logs.contains("state.path"), "{logs}");
        assert_no_secrets(&logs, &secrets());
    }
    cases += 1;

    assert_eq!(setup.auth_files(), before, "auth.dir changed");
    setup.assert_credentials_intact();
    // Writable again: the gateway starts on the same files.
    let gateway = setup.harness.start().await;
    assert_eq!(readiness(&gateway).await.0, 200);
    report::cases(
        CATEGORY,
        "an_unwritable_state_store_stops_the_start_naming_the_file_and_key",
        cases,
    );
}

/// The state database turns unwritable while the gateway runs (its write-ahead log made
/// immutable): requests are still served and counted in memory, the failure is logged naming
/// the file and `state.path`, `/readyz` is 503 naming the state check; once writable the held
/// changes are written, readiness recovers, and after a restart the usage is all there.
#[tokio::test]
async fn a_state_store_failing_while_running_keeps_serving_and_catches_up() {
    let setup = Setup::new();
    let gateway = setup.harness.start().await;
    let metrics = metrics_addr(&gateway).await;
    let http = client();
    let mut used = 0;
    let (status, tokens) = chat(&http, &gateway).await;
    assert_eq!(status, 200);
    used += tokens;
    wait_for_readiness(&gateway, 200).await;
    let mut wal = setup.state_db().into_os_string();
    wal.push("-wal");
    let wal = PathBuf::from(wal);
    assert!(wal.exists(), "no write-ahead log beside the database");

    {
        let _immutable = Immutable::set(&wal);
        for _ in 0..5 {
            let (status, tokens) = chat(&http, &gateway).await;
            assert_eq!(status, 200, "{}", gateway.logs());
            used += tokens;
        }
        let error = gateway
            .wait_for_log(|e| {
                e["level"] == "ERRO" && e["msg"].as_str().is_some_and(|m| m.contains("state store"))
            })
            .await;
        let text = error.to_string();
        assert!(text.contains(&setup.state_db().display().to_string()), "{error}");
        assert!(text.contains("state.path"), "{error}");
        let body = wait_for_readiness(&gateway, 503).await;
        assert_eq!(body["failing"], "state", "{body}");
        // Counted in memory meanwhile: the quota gauge has every request.
        let remaining = metric(metrics, "cliproxy_quota_remaining{provider=\"demo\"}").await;
        assert_eq!(remaining, Some((QUOTA - used) as f64));
    }
    gateway.wait_for_log(|e| e["msg"] == "the state store is writable again").await;
    wait_for_readiness(&gateway, 200).await;
    let mut gateway = gateway;
    gateway.terminate();
    assert!(gateway.wait().await.success(), "{}", gateway.logs());
    let gateway = setup.harness.start().await;
    let metrics = metrics_addr(&gateway).await;
    let remaining = metric(metrics, "cliproxy_quota_remaining{provider=\"demo\"}").await;
    assert_eq!(remaining, Some((QUOTA - used) as f64), "usage lost across the failure");
    setup.assert_credentials_intact();
    report::cases(CATEGORY, "a_state_store_failing_while_running_keeps_serving_and_catches_up", 1);
}

/// `auth.dir` mounted read-only: the gateway starts and serves with the stored credentials
/// (reading is all it needs); adding or deleting a credential answers an error naming the
/// directory and the cause; every file in it is unchanged.
#[tokio::test]
async fn a_read_only_auth_dir_serves_and_refuses_writes_naming_it() {
    let setup = Setup::new();
    let before = setup.auth_files();
    let gateway = setup
        .harness
        .start_in_namespace(&mount_read_only(&setup.harness.auth_dir()))
        .await
        .running();
    let dir = setup.harness.auth_dir().display().to_string();
    let mut cases = 0;
    let (status, body) = manage_with(
        &gateway,
        MANAGEMENT_KEY,
        Method::POST,
        "/auths",
        Some(json!({"provider": "oa", "type": "api_key", "token": "sk-e2e-disk-new-token-00", "id": "oa-new"})),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(body.to_string().contains(&dir), "{body}");
    assert!(body.to_string().contains("auth.dir"), "{body}");
    assert!(body.to_string().contains("Read-only file system"), "{body}");
    cases += 1;
    let (status, body) =
        manage_with(&gateway, MANAGEMENT_KEY, Method::DELETE, "/auths/oa/oa-a", None).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.to_string().contains(&dir), "{body}");
    cases += 1;
    // Reading still works: listed, and served (the gateway still has both credentials).
    let (status, body) = manage_with(&gateway, MANAGEMENT_KEY, Method::GET, "/auths", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["auths"].as_array().unwrap().len(), 2, "{body}");
    assert_eq!(readiness(&gateway).await.0, 200);
    cases += 1;
    assert_no_secrets(&gateway.logs(), &secrets());
    drop(gateway);
    assert_eq!(setup.auth_files(), before, "auth.dir changed");
    setup.assert_credentials_intact();
    report::cases(CATEGORY, "a_read_only_auth_dir_serves_and_refuses_writes_naming_it", cases);
}

/// A credential file truncated, replaced by random bytes, emptied, replaced by JSON of the
/// wrong shape, or sealed with another key: the start is refused (exit 1) naming the file and
/// what is wrong with it; the file is kept byte for byte, the other credentials still decrypt,
/// and once the operator moves the bad file away the gateway starts and serves the others.
#[tokio::test]
async fn a_damaged_credential_file_stops_the_start_naming_it_and_is_kept() {
    let setup = Setup::new();
    let sealed = std::fs::read(setup.harness.auth_dir().join("oa-b.json")).unwrap();
    // A file sealed with another key: written by a second harness with its own key.
    let other = Harness::new();
    other.config_with_auth(
        "",
        "  encryption: {enabled: true, key: \"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"}\n",
        "providers:\n  oa: {type: openai, models: [\"gpt-*\"]}\n",
    );
    other.vault_add("oa", "oa-b", TOKEN_B, None);
    let foreign = std::fs::read(other.auth_dir().join("oa-b.json")).unwrap();
    let damages: [(&str, Vec<u8>); 5] = [
        ("truncated", sealed[..sealed.len() / 2].to_vec()),
        (
            "random bytes",
            (0..400u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect(),
        ),
        ("empty", Vec::new()),
        ("JSON of the wrong shape", br#"{"version": 2, "hello": ["world"]}"#.to_vec()),
        ("sealed with another key", foreign),
    ];
    let bad = setup.harness.auth_dir().join("oa-b.json");
    for (what, bytes) in &damages {
        std::fs::write(&bad, bytes).unwrap();
        let (status, logs) = setup.harness.try_start().await.exited();
        assert_ne!(status.code(), Some(0), "{what}: {logs}");
        assert!(
            logs.contains(&bad.display().to_string()),
            "{what}: the file is not named:\n{logs}"
        );
        assert_no_secrets(&logs, &secrets());
        assert_eq!(&std::fs::read(&bad).unwrap(), bytes, "{what}: the bad file was changed");
        assert_eq!(token_of(&setup.harness, "oa-a"), TOKEN_A, "{what}");
    }
    // The operator moves it away: the gateway starts and serves the remaining credential.
    let aside = setup.harness.auth_dir().join("oa-b.json.damaged");
    std::fs::rename(&bad, &aside).unwrap();
    let mock = MockUpstream::start(|_| Reply::ok(canned::openai_chat("gpt-4o", "ok"))).await;
    faults_config(&setup.harness, &mock.url(), &setup.audit_file(), &setup.state_db(), "100ms");
    let gateway = setup.harness.start().await;
    let response = client()
        .post(format!("{}/v1/chat/completions", gateway.url()))
        .bearer_auth(CLIENT_KEY)
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", gateway.logs());
    assert_eq!(mock.requests()[0].header("authorization"), format!("Bearer {TOKEN_A}"));
    report::cases(
        CATEGORY,
        "a_damaged_credential_file_stops_the_start_naming_it_and_is_kept",
        damages.len(),
    );
}

/// The state database damaged three ways (garbage over the header, cut to half a page, a
/// b-tree page overwritten): the start is refused (exit 1) naming the file, `state.path` and
/// how to recover; the file is left as it is (never moved aside or recreated silently: it
/// holds the runtime denylist); the credentials are untouched; once moved aside the gateway
/// starts with empty state.
#[tokio::test]
async fn a_damaged_state_database_stops_the_start_naming_it_and_the_way_out() {
    let setup = Setup::new();
    // A database with content: usage and a runtime denylist entry, checkpointed into the file.
    let mut gateway = setup.harness.start().await;
    assert_eq!(chat(&client(), &gateway).await.0, 200);
    let (status, body) = manage_with(
        &gateway,
        MANAGEMENT_KEY,
        Method::POST,
        "/security/ip-denylist",
        Some(json!({"ip": "203.0.113.7", "reason": "disk fault test"})),
    )
    .await;
    assert!(status == 200 || status == 201, "{body}");
    gateway.terminate();
    assert!(gateway.wait().await.success(), "{}", gateway.logs());
    {
        let conn = rusqlite::Connection::open(setup.state_db()).unwrap();
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
        let rows: i64 =
            conn.query_row("SELECT count(*) FROM denylist", [], |row| row.get(0)).unwrap();
        assert_eq!(rows, 1);
    }
    let good = std::fs::read(setup.state_db()).unwrap();
    assert!(good.len() >= 3 * 4096, "a database of {} bytes", good.len());
    let page = 4096;
    let mut garbage_header = good.clone();
    garbage_header[..100].fill(0x5a);
    let mut page_overwritten = good.clone();
    page_overwritten[page..2 * page].fill(0xa5);
    let damages: [(&str, Vec<u8>); 3] = [
        ("garbage over the header", garbage_header),
        ("cut to half a page", good[..page + page / 2].to_vec()),
        ("a page overwritten", page_overwritten),
    ];
    let before = setup.auth_files();
    for (what, bytes) in &damages {
        std::fs::write(setup.state_db(), bytes).unwrap();
        for suffix in ["-wal", "-shm"] {
            let mut companion = setup.state_db().into_os_string();
            companion.push(suffix);
            let _ = std::fs::remove_file(companion);
        }
        let (status, logs) = setup.harness.try_start().await.exited();
        assert_eq!(status.code(), Some(1), "{what}: {logs}");
        assert!(logs.contains(&setup.state_db().display().to_string()), "{what}: {logs}");
        assert!(logs.contains("state.path"), "{what}: {logs}");
        assert!(logs.contains("move the file"), "{what}: no way out given:\n{logs}");
        assert_eq!(&std::fs::read(setup.state_db()).unwrap(), bytes, "{what}: the file changed");
        assert_no_secrets(&logs, &secrets());
    }
    assert_eq!(setup.auth_files(), before, "auth.dir changed");
    setup.assert_credentials_intact();
    std::fs::rename(setup.state_db(), setup.state_dir.join("state.db.damaged")).unwrap();
    let gateway = setup.harness.start().await;
    assert_eq!(readiness(&gateway).await.0, 200);
    report::cases(
        CATEGORY,
        "a_damaged_state_database_stops_the_start_naming_it_and_the_way_out",
        damages.len(),
    );
}
