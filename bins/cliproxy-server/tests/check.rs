//! `cliproxy-server check` run as an operator runs it: the real binary, `check --config FILE`,
//! against fixtures built in a temporary directory (certificates from rcgen, an encrypted
//! credential stored with `vault add`). Each bad fixture asserts its row's verdict and fix
//! and the exit code.
//!
//! The tests may run as root (CI containers do). As root, the "not running as root" row is a
//! warning (the fixtures keep `sandbox.require_non_root: true`, so serve would refuse root),
//! never a failure; the other rows do not depend on the user, so the good fixture passes
//! every other row and exits 0 either way.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a failed expectation fails the test"
)]

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const CLIENT_KEY: &str = "cpk-check-test-client-key-5b1f0c9e";
const MANAGEMENT_KEY: &str = "mgmt-check-test-key-7d3a41f2c8";
/// 32 bytes as base64, as `cliproxy-server keygen` prints them.
const ENCRYPTION_KEY: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";
const DAY: u64 = 86_400;

/// A temporary deployment: config, auth.dir, TLS files, log and state directories.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    /// Everything right: TLS with a certificate valid for a year on 0.0.0.0, rate limits,
    /// audit, loopback metrics, an alert rule, encryption on with one encrypted credential,
    /// keys from `${VAR}` placeholders, remote management over TLS.
    fn good() -> Self {
        let fixture = Self { dir: tempfile::tempdir().unwrap() };
        for (sub, mode) in [("auths", 0o700), ("tls", 0o700), ("logs", 0o700), ("state", 0o700)] {
            let path = fixture.path(sub);
            fs::create_dir(&path).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        }
        fixture.install_certificate(365 * DAY, false);
        fixture.write_config(&fixture.good_yaml());
        fixture.add_credential();
        fixture
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    fn config_path(&self) -> PathBuf {
        self.path("config.yaml")
    }

    fn good_yaml(&self) -> String {
        let root = self.dir.path().display();
        format!(
            r#"server:
  host: 0.0.0.0
  tls: {{enabled: true, cert_file: "{root}/tls/cert.pem", key_file: "{root}/tls/key.pem"}}
  security:
    rate_limiting: {{enabled: true, requests_per_second: 10, burst: 20}}
  rate_limit: {{enabled: true, requests_per_second: 100, burst: 200}}
auth:
  api_keys: [{{name: ci, key: "${{CHECK_CLIENT_KEY}}"}}]
  dir: "{root}/auths"
  encryption: {{enabled: true, key: "${{CHECK_ENCRYPTION_KEY}}"}}
management: {{secret_key: "${{CHECK_MANAGEMENT_KEY}}", allow_remote: true}}
providers:
  oa: {{type: openai, base_url: "http://127.0.0.1:9", models: ["gpt-*"]}}
logging:
  audit: {{enabled: true, file: "{root}/logs/audit.log"}}
metrics: {{enabled: true, host: 127.0.0.1, port: 0}}
alerts:
  - {{name: auth failures, condition: "auth_failures > 100", duration: 5m, action: notify_admin}}
state: {{path: "{root}/state/state.db"}}
sandbox: {{require_non_root: true}}
"#
        )
    }

    fn write_config(&self, yaml: &str) {
        fs::write(self.config_path(), yaml).unwrap();
    }

    /// Replaces `from` (which must be there) in the good config.
    fn edit(&self, from: &str, to: &str) {
        let yaml = self.good_yaml();
        assert!(yaml.contains(from), "the fixture has no {from:?}");
        self.write_config(&yaml.replace(from, to));
    }

    /// A self-signed certificate for localhost that expires `valid_for` from now, and its key
    /// (or, with `other_key`, a key it was not issued for).
    fn install_certificate(&self, valid_for: u64, other_key: bool) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let (cert, key) = certificate(now - 30 * DAY, now + valid_for);
        let key = if other_key { rcgen::KeyPair::generate().unwrap().serialize_pem() } else { key };
        fs::write(self.path("tls/cert.pem"), cert).unwrap();
        fs::write(self.path("tls/key.pem"), key).unwrap();
        fs::set_permissions(self.path("tls/key.pem"), fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// Stores one credential with `vault add`, as an operator would.
    fn add_credential(&self) {
        let mut child = self
            .command(&["vault", "add", "--provider", "oa", "--id", "oa-1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"sk-check-upstream-token-000000\n").unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "vault add: {}", String::from_utf8_lossy(&output.stderr));
    }

    /// The binary with this fixture's config and the variables its placeholders name; the
    /// test's own `CLIPROXY_*` variables are not inherited.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cliproxy-server"));
        command
            .args(args)
            .arg("--config")
            .arg(self.config_path())
            .current_dir(self.dir.path())
            .env("CHECK_CLIENT_KEY", CLIENT_KEY)
            .env("CHECK_MANAGEMENT_KEY", MANAGEMENT_KEY)
            .env("CHECK_ENCRYPTION_KEY", ENCRYPTION_KEY);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("CLIPROXY_") {
                command.env_remove(name);
            }
        }
        command
    }

    fn check(&self) -> Report {
        Report::from(self.command(&["check"]).output().unwrap())
    }
}

/// A PEM certificate and key valid from `not_before` to `not_after` (Unix seconds).
fn certificate(not_before: u64, not_after: u64) -> (String, String) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_before = epoch + Duration::from_secs(not_before);
    params.not_after = epoch + Duration::from_secs(not_after);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Every path under `dir` with its mode, size and modification time.
fn tree(dir: &std::path::Path) -> Vec<(PathBuf, u32, u64, std::time::SystemTime)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            pending.extend(fs::read_dir(&path).unwrap().map(|entry| entry.unwrap().path()));
        }
        found.push((path, meta.permissions().mode(), meta.len(), meta.modified().unwrap()));
    }
    found.sort();
    found
}

/// The output of one `check` run, split into rows.
struct Report {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    rows: Vec<Row>,
}

#[derive(Debug, Clone)]
struct Row {
    check: String,
    result: String,
    detail: String,
    fix: Option<String>,
}

impl From<Output> for Report {
    fn from(output: Output) -> Self {
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let mut lines = stdout.lines();
        let header = lines.next().unwrap_or_default();
        let (result_at, detail_at) = (header.find("RESULT"), header.find("DETAIL"));
        let (Some(result_at), Some(detail_at)) = (result_at, detail_at) else {
            panic!("no table header:\n{stdout}\n{stderr}");
        };
        let mut rows: Vec<Row> = Vec::new();
        for line in lines.take_while(|line| !line.is_empty()) {
            let check = line[..result_at].trim();
            let rest = line.get(detail_at..).unwrap_or_default();
            if check.is_empty() {
                let fix = rest.strip_prefix("fix: ").expect("a continuation line is a fix");
                rows.last_mut().expect("a fix follows its row").fix = Some(fix.to_owned());
            } else {
                rows.push(Row {
                    check: check.to_owned(),
                    result: line[result_at..detail_at].trim().to_owned(),
                    detail: rest.to_owned(),
                    fix: None,
                });
            }
        }
        Self { code: output.status.code(), stdout, stderr, rows }
    }
}

impl Report {
    /// The row named `check` (the first, if several share the name).
    fn row(&self, check: &str) -> &Row {
        self.rows
            .iter()
            .find(|row| row.check == check)
            .unwrap_or_else(|| panic!("no {check:?} row:\n{}", self.stdout))
    }

    /// Asserts the row's verdict, that its detail and fix contain the given texts, and
    /// returns it.
    fn expect(&self, check: &str, result: &str, detail: &str, fix: &str) -> &Row {
        let row = self.row(check);
        assert_eq!(row.result, result, "{check}:\n{}", self.stdout);
        assert!(row.detail.contains(detail), "{check}: detail {:?} lacks {detail:?}", row.detail);
        if result == "pass" {
            assert!(row.fix.is_none(), "{check}: a pass has no fix:\n{}", self.stdout);
        } else {
            let got = row.fix.as_deref().unwrap_or_else(|| panic!("{check} has no fix"));
            assert!(got.contains(fix), "{check}: fix {got:?} lacks {fix:?}");
        }
        row
    }

    fn failed(&self) {
        assert_eq!(self.code, Some(1), "{}\n{}", self.stdout, self.stderr);
        assert!(self.stdout.contains("not ready: "), "{}", self.stdout);
    }

    /// Neither stream contains `secret`.
    fn never_shows(&self, secret: &str) {
        assert!(!self.stdout.contains(secret), "check printed a secret:\n{}", self.stdout);
        assert!(!self.stderr.contains(secret), "check printed a secret:\n{}", self.stderr);
    }
}

#[test]
fn a_sound_deployment_passes_every_row() {
    let fixture = Fixture::good();
    let before = tree(fixture.dir.path());
    let report = fixture.check();
    assert_eq!(report.code, Some(0), "{}\n{}", report.stdout, report.stderr);
    assert!(report.stdout.contains("ready: no check failed"), "{}", report.stdout);
    assert_eq!(tree(fixture.dir.path()), before, "check created, removed or changed a file");
    for row in &report.rows {
        // Running as root (as CI may) is the one warning a sound deployment can show here.
        let allowed: &[&str] =
            if row.check == "not running as root" { &["pass", "warn"] } else { &["pass"] };
        assert!(allowed.contains(&row.result.as_str()), "{row:?}\n{}", report.stdout);
    }
    for check in [
        "client keys",
        "auth.dir permissions",
        "credentials readable",
        "encryption at rest",
        "TLS certificate",
        "TLS key",
        "management API",
        "rate limits",
        "audit log",
        "metrics",
        "alerts",
        "state store",
        "no secrets in the config file",
        "sandbox",
    ] {
        report.row(check);
    }
    report.expect("credentials readable", "pass", "1 credential(s) decrypt", "");
    report.expect("TLS certificate", "pass", "valid until ", "");
    report.expect("management API", "pass", "over TLS", "");
    for secret in [CLIENT_KEY, MANAGEMENT_KEY, ENCRYPTION_KEY, "sk-check-upstream-token"] {
        report.never_shows(secret);
    }
}

#[test]
fn a_loose_auth_dir_fails_and_is_left_as_it_was() {
    let fixture = Fixture::good();
    let auths = fixture.path("auths");
    fs::set_permissions(&auths, fs::Permissions::from_mode(0o755)).unwrap();
    let report = fixture.check();
    report.failed();
    let shown = auths.display().to_string();
    report.expect(
        "auth.dir permissions",
        "FAIL",
        "has mode 0755, not 0700",
        &format!("chmod 700 {shown}"),
    );
    report.expect("credentials readable", "warn", "not checked", "auth.dir permissions");
    let mode = fs::metadata(&auths).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o755, "check changed a mode");
}

#[test]
fn a_loose_credential_file_fails_and_is_left_as_it_was() {
    let fixture = Fixture::good();
    let file = fixture.path("auths").join("oa-1.json");
    assert!(file.is_file(), "vault add stores oa-1.json");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    let report = fixture.check();
    report.failed();
    report.expect(
        "auth.dir permissions",
        "FAIL",
        "oa-1.json has mode 0644, not 0600",
        &format!("chmod 600 {}", file.display()),
    );
    let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "check changed a mode");
}

#[test]
fn an_expired_certificate_fails() {
    let fixture = Fixture::good();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let (cert, key) = certificate(now - 90 * DAY, now - DAY);
    fs::write(fixture.path("tls/cert.pem"), cert).unwrap();
    fs::write(fixture.path("tls/key.pem"), key).unwrap();
    let report = fixture.check();
    report.failed();
    report.expect("TLS certificate", "FAIL", "expired on ", "renew the certificate and replace");
    // The key still belongs to it: that row is about the key alone.
    report.expect("TLS key", "pass", "matches the certificate", "");
}

#[test]
fn a_certificate_with_an_hour_left_fails() {
    let fixture = Fixture::good();
    fixture.install_certificate(3600, false);
    let report = fixture.check();
    report.failed();
    report.expect("TLS certificate", "FAIL", "less than 24 hours", "renew the certificate");
}

#[test]
fn a_certificate_with_three_days_left_warns() {
    let fixture = Fixture::good();
    // An hour more, so that the seconds the test takes cannot change the day count.
    fixture.install_certificate(3 * DAY + 3600, false);
    let report = fixture.check();
    assert_eq!(report.code, Some(0), "a warning does not fail:\n{}", report.stdout);
    let row =
        report.expect("TLS certificate", "warn", "less than 14 days", "renew the certificate");
    assert!(row.detail.contains("expires in 3 day(s)"), "{row:?}");
}

#[test]
fn a_key_not_matching_the_certificate_fails() {
    let fixture = Fixture::good();
    fixture.install_certificate(365 * DAY, true);
    let report = fixture.check();
    report.failed();
    report.expect(
        "TLS key",
        "FAIL",
        "does not match the certificate",
        "server.tls.key_file the private key the certificate was issued for",
    );
    report.expect("TLS certificate", "pass", "valid until", "");
    report.never_shows("PRIVATE KEY");
}

#[test]
fn encryption_off_fails() {
    let fixture = Fixture::good();
    fixture.edit("encryption: {enabled: true", "encryption: {enabled: false");
    fs::remove_file(fixture.path("auths").join("oa-1.json")).unwrap();
    let report = fixture.check();
    report.failed();
    report.expect(
        "encryption at rest",
        "FAIL",
        "auth.encryption.enabled is false",
        "set auth.encryption.enabled: true and auth.encryption.key",
    );
}

/// Client keys may live only in the state store (created by `keys create`): check counts the
/// usable ones there, and fails only when neither the file nor the store holds one.
#[test]
fn client_keys_created_at_run_time_count_and_a_revoked_one_does_not() {
    let fixture = Fixture::good();
    fixture.edit("api_keys: [{name: ci, key: \"${CHECK_CLIENT_KEY}\"}]", "api_keys: []");
    let report = fixture.check();
    report.failed();
    report.expect(
        "client keys",
        "FAIL",
        "auth.api_keys is empty and the state store",
        "keys create",
    );
    let created = fixture.command(&["keys", "create", "--name", "stored-only"]).output().unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let key = String::from_utf8_lossy(&created.stdout)
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("cpk-"))
        .unwrap()
        .to_owned();
    let report = fixture.check();
    report.expect("client keys", "pass", "0 in auth.api_keys, 1 created at run time", "");
    report.never_shows(&key);
    let revoked = fixture.command(&["keys", "revoke", "stored-only"]).output().unwrap();
    assert!(revoked.status.success(), "{}", String::from_utf8_lossy(&revoked.stderr));
    fixture.check().expect("client keys", "FAIL", "auth.api_keys is empty", "keys create");
}

/// A plaintext credential file beside the encrypted one (planted, or left from before
/// encryption): check fails, names it, says that `serve` refuses it and that `vault migrate`
/// takes it in, and leaves it as it is.
#[test]
fn a_plaintext_credential_with_encryption_on_fails() {
    let fixture = Fixture::good();
    let planted = fixture.path("auths").join("oa-planted.json");
    let contents = r#"{"format": "cliproxy-credential", "version": 1, "id": "oa-planted",
        "provider": "oa", "type": "api_key", "token": "sk-check-planted-token-0000",
        "base_url": "http://127.0.0.1:9", "label": null, "created_at": 1700000000}"#;
    fs::write(&planted, contents).unwrap();
    fs::set_permissions(&planted, fs::Permissions::from_mode(0o600)).unwrap();
    let report = fixture.check();
    report.failed();
    let row = report.expect(
        "encryption at rest",
        "FAIL",
        "plaintext credential(s) left from before encryption: oa-planted",
        "vault migrate",
    );
    assert!(row.detail.contains("auth.encryption.require_encrypted"), "{row:?}");
    report.never_shows("sk-check-planted-token-0000");
    assert_eq!(fs::read_to_string(&planted).unwrap(), contents);
}

#[test]
fn secrets_written_literally_fail_by_key_and_are_never_printed() {
    let fixture = Fixture::good();
    let yaml = fixture
        .good_yaml()
        .replace("${CHECK_CLIENT_KEY}", CLIENT_KEY)
        .replace("${CHECK_MANAGEMENT_KEY}", MANAGEMENT_KEY)
        .replace("${CHECK_ENCRYPTION_KEY}", ENCRYPTION_KEY);
    fixture.write_config(&yaml);
    let report = fixture.check();
    report.failed();
    let row = report.expect(
        "no secrets in the config file",
        "FAIL",
        "auth.api_keys[0].key",
        "\"${CLIPROXY_...}\" placeholder",
    );
    for key in ["management.secret_key", "auth.encryption.key"] {
        assert!(row.detail.contains(key), "{row:?}");
    }
    for secret in [CLIENT_KEY, MANAGEMENT_KEY, ENCRYPTION_KEY] {
        report.never_shows(secret);
    }
}

#[test]
fn remote_management_without_tls_fails() {
    let fixture = Fixture::good();
    fixture.edit("tls: {enabled: true", "tls: {enabled: false");
    let report = fixture.check();
    report.failed();
    report.expect(
        "management API",
        "FAIL",
        "management.allow_remote is on without TLS",
        "set server.tls.enabled: true, or management.allow_remote: false",
    );
    report.expect(
        "TLS",
        "FAIL",
        "clients' keys cross the network in clear",
        "server.tls.enabled: true",
    );
}

/// Plaintext on a non-loopback address fails: clients' keys would cross the network in
/// clear. The one exception is a TLS-terminating proxy in front, which the operator declares
/// by listing it (an address that is not loopback) in `server.trusted_proxies`: then the row
/// warns that the hop from the proxy is plaintext and that only the proxy may reach the port.
#[test]
fn plaintext_off_loopback_fails_unless_a_remote_proxy_is_trusted() {
    let fixture = Fixture::good();
    let plaintext = |proxies: &str| {
        let yaml =
            fixture.good_yaml().replace("tls: {enabled: true", "tls: {enabled: false").replace(
                "  host: 0.0.0.0\n",
                &format!("  host: 0.0.0.0\n  trusted_proxies: [{proxies}]\n"),
            );
        fixture.write_config(&yaml);
        fixture.check()
    };
    let report = plaintext("");
    report.failed();
    report.expect(
        "TLS",
        "FAIL",
        "off while listening on 0.0.0.0: clients' keys cross the network in clear",
        "server.trusted_proxies",
    );
    // A proxy on this machine does not count: the port is reachable from elsewhere anyway.
    plaintext("127.0.0.1").expect(
        "TLS",
        "FAIL",
        "cross the network in clear",
        "server.tls.enabled",
    );
    let report = plaintext("10.0.0.5");
    report.expect(
        "TLS",
        "warn",
        "behind the trusted proxies in server.trusted_proxies (10.0.0.5/32)",
        "only the proxies",
    );
}

#[test]
fn audit_off_fails() {
    let fixture = Fixture::good();
    fixture.edit("audit: {enabled: true", "audit: {enabled: false");
    let report = fixture.check();
    report.failed();
    report.expect(
        "audit log",
        "FAIL",
        "logging.audit.enabled is false",
        "set logging.audit.enabled: true",
    );
}

#[test]
fn an_audit_file_readable_by_others_fails() {
    let fixture = Fixture::good();
    let file = fixture.path("logs/audit.log");
    fs::write(&file, "").unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    let report = fixture.check();
    report.failed();
    report.expect(
        "audit log",
        "FAIL",
        "audit.log has mode 0644, not 0600",
        &format!("chmod 600 {}", file.display()),
    );
    assert_eq!(fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o644);

    // At 0600 it passes; leaving out a security event type then only warns.
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    fixture.edit("audit.log\"}", "audit.log\", events: [auth_success, provider_request]}");
    let report = fixture.check();
    assert_eq!(report.code, Some(0), "{}", report.stdout);
    report.expect(
        "audit log",
        "warn",
        "leaves out auth_failure and security_violation",
        "add auth_failure, security_violation to logging.audit.events",
    );
}

#[test]
fn exposure_without_limits_fails_and_loopback_only_warns() {
    let fixture = Fixture::good();
    fixture.edit("rate_limit: {enabled: true", "rate_limit: {enabled: false");
    let report = fixture.check();
    report.failed();
    report.expect(
        "rate limits",
        "FAIL",
        "global (server.rate_limit) off while listening on 0.0.0.0",
        "set server.rate_limit.enabled: true",
    );

    let yaml = fixture
        .good_yaml()
        .replace("rate_limiting: {enabled: true", "rate_limiting: {enabled: false")
        .replace("host: 0.0.0.0", "host: 127.0.0.1")
        .replace("host: 127.0.0.1, port: 0", "host: 0.0.0.0, port: 0");
    let rules = "alerts:\n  - {name: auth failures, condition: \"auth_failures > 100\", duration: 5m, action: notify_admin}\n";
    assert!(yaml.contains(rules));
    let yaml = yaml.replace(rules, "");
    fixture.write_config(&yaml);
    let report = fixture.check();
    assert_eq!(report.code, Some(0), "warnings only:\n{}", report.stdout);
    report.expect(
        "rate limits",
        "warn",
        "per-IP (server.security.rate_limiting) off (listening on loopback",
        "server.security.rate_limiting.enabled: true",
    );
    report.expect("metrics", "warn", "client IP addresses", "metrics.host: 127.0.0.1");
    report.expect("alerts", "warn", "no alert rules", "alerts:");
}

#[test]
fn a_state_directory_that_cannot_be_created_fails() {
    let fixture = Fixture::good();
    let root = fixture.dir.path().display().to_string();
    fixture.edit(&format!("{root}/state/state.db"), &format!("{root}/missing/deeper/state.db"));
    let report = fixture.check();
    report.failed();
    report.expect("state store", "FAIL", "does not exist and cannot be created", "mkdir -p -m 700");
}

#[test]
fn the_help_lists_the_rows_and_exit_codes() {
    let output = Command::new(env!("CARGO_BIN_EXE_cliproxy-server"))
        .args(["check", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for part in ["pass / warn / FAIL", "server.tls.enabled", "logging.audit", "Exit codes: 0"] {
        assert!(help.contains(part), "{part:?} missing from:\n{help}");
    }
}
