//! `cliproxy-server check`: the pre-deployment checklist. It only reads: nothing is fixed,
//! created or rewritten (unlike `serve`, which tightens loose modes on files it owns).
//!
//! Each row is `pass`, `warn` or `FAIL`, and every row that is not a pass carries a one-line
//! fix naming the config key or the command to run. Any `FAIL` makes the exit code 1; warnings
//! do not. The verdict rules, row by row:
//!
//! - **not running as root**: uid 0 with `sandbox.require_non_root: false` fails (serve would
//!   run as root); uid 0 otherwise warns (serve refuses root, so only check itself runs as
//!   root — run it as the service user for the ownership rows to mean something).
//! - **client keys**: none (in `auth.api_keys` or usable in the state store), or an invalid
//!   one, fails (every request would be refused).
//! - **auth.dir permissions**: the directory must be ours and 0700, credential files ours and
//!   0600; a missing directory warns (serve creates it).
//! - **credentials readable** / **encryption at rest**: every stored credential decrypts;
//!   encryption off or a plaintext credential left over fails.
//! - **encryption key**: a key (current or previous) given as 32 characters, taken as raw key
//!   bytes with no key derivation, warns: a passphrase of that length passes for a key.
//! - **TLS certificate** / **TLS key**: when `server.tls.enabled`, the certificate must parse and
//!   have ≥ 24 h left (< 14 days warns), and the key must match it (a key file every user can
//!   read warns). With TLS off, a non-loopback `server.host` fails: clients' keys would cross
//!   the network in clear. It only warns when `server.trusted_proxies` lists a proxy that is
//!   not loopback (the declared TLS-terminating proxy in front; the hop from it is plaintext).
//! - **management API**: `management.allow_remote` without TLS on the listener fails; so does
//!   the API on for loopback callers only while `server.trusted_proxies` holds a loopback
//!   address (behind a local proxy every remote caller is loopback).
//! - **rate limits**: per-IP and global limits on pass. One off fails when `server.host` is not
//!   loopback — anyone who can reach the port could then flood the gateway and its providers
//!   at no cost — and warns on loopback, where only local processes can.
//! - **audit log**: off fails; behind the head anchored in the state store (cut or deleted)
//!   fails; on, its directory must be writable (or creatable), the file ours
//!   and 0600; leaving `auth_failure` or `security_violation` out of the events warns.
//! - **metrics**: a listener on a non-loopback host warns (the `ip` label reveals clients).
//! - **alerts**: no rule warns.
//! - **state store**: the directory of `state.path` must be writable (or creatable), the file
//!   ours and 0600.
//! - **no secrets in the config file**: a key written literally (not a `${VAR}` placeholder)
//!   fails; only the key's name is printed, never its value.
//! - **sandbox** / **posture of this process**: a sandbox feature off warns.

use std::fs;
use std::io::ErrorKind;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::Config;
use cliproxy_audit::EventType;
use cliproxy_core::private_fs::{self, Finding, Kind};
use cliproxy_netguard::{RedisLink, RedisStore, RedisStoreOptions, StateBackend};
use cliproxy_vault::Protection;
use nix::unistd::AccessFlags;

/// Runs every check against `config` (loaded from `file`, when there is one); prints the
/// table and returns whether everything passed (no `FAIL`).
pub(crate) fn run(config: &Config, file: Option<&Path>) -> bool {
    let euid = euid();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let mut list = Checklist::default();

    root(&mut list, config, euid);
    client_keys(&mut list, config);
    let dir = check_auth_dir(&mut list, &config.auth.dir, euid);
    credentials(&mut list, config, dir);
    tls(&mut list, config, now);
    management(&mut list, config);
    rate_limits(&mut list, config);
    audit_log(&mut list, config, euid);
    metrics(&mut list, config);
    alerts(&mut list, config);
    state_store(&mut list, config, euid);
    secrets_in_file(&mut list, file);
    sandbox(&mut list, config);

    list.print();
    list.passed()
}

/// One row of the checklist.
struct Row {
    check: &'static str,
    verdict: Verdict,
    detail: String,
    /// What to do about it; every row that is not a pass has one.
    fix: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    Pass,
    Warn,
    Fail,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Warn => "warn",
            Self::Fail => "FAIL",
        }
    }
}

/// The rows found so far, in the order they are printed.
#[derive(Default)]
struct Checklist {
    rows: Vec<Row>,
}

impl Checklist {
    fn pass(&mut self, check: &'static str, detail: impl Into<String>) {
        self.rows.push(Row { check, verdict: Verdict::Pass, detail: detail.into(), fix: None });
    }

    fn warn(&mut self, check: &'static str, detail: impl Into<String>, fix: impl Into<String>) {
        self.add(check, Verdict::Warn, detail, fix);
    }

    fn fail(&mut self, check: &'static str, detail: impl Into<String>, fix: impl Into<String>) {
        self.add(check, Verdict::Fail, detail, fix);
    }

    fn add(
        &mut self,
        check: &'static str,
        verdict: Verdict,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) {
        let fix = Some(fix.into()).filter(|_| verdict != Verdict::Pass);
        self.rows.push(Row { check, verdict, detail: detail.into(), fix });
    }

    /// Prints the table: the fix of a row goes on its own line under the row's detail.
    fn print(&self) {
        let width = self.rows.iter().map(|r| r.check.len()).max().unwrap_or(0).max(5);
        println!("{:<width$}  {:<6}  DETAIL / FIX", "CHECK", "RESULT");
        for row in &self.rows {
            println!("{:<width$}  {:<6}  {}", row.check, row.verdict.label(), row.detail);
            if let Some(fix) = &row.fix {
                println!("{:<width$}  {:<6}  fix: {fix}", "", "");
            }
        }
        let failed = self.count(Verdict::Fail);
        let warned = self.count(Verdict::Warn);
        println!();
        if failed == 0 {
            println!("ready: no check failed ({warned} warning(s))");
        } else {
            println!("not ready: {failed} check(s) failed, {warned} warning(s)");
        }
    }

    fn count(&self, verdict: Verdict) -> usize {
        self.rows.iter().filter(|r| r.verdict == verdict).count()
    }

    fn passed(&self) -> bool {
        self.count(Verdict::Fail) == 0
    }
}

/// Several findings about one thing, printed as one row with the worst verdict.
#[derive(Default)]
struct Findings {
    items: Vec<(Verdict, String, String)>,
}

impl Findings {
    fn push(&mut self, verdict: Verdict, detail: impl Into<String>, fix: impl Into<String>) {
        self.items.push((verdict, detail.into(), fix.into()));
    }

    /// Adds the row: `pass_detail` when nothing was found, else every finding and its fix.
    fn report(self, list: &mut Checklist, check: &'static str, pass_detail: String) {
        let Some(worst) = self.items.iter().map(|(v, _, _)| *v).max() else {
            list.pass(check, pass_detail);
            return;
        };
        let detail = self.items.iter().map(|(_, d, _)| d.as_str()).collect::<Vec<_>>().join("; ");
        let mut fixes: Vec<&str> = Vec::new();
        for (_, _, fix) in &self.items {
            if !fixes.contains(&fix.as_str()) {
                fixes.push(fix);
            }
        }
        list.add(check, worst, detail, fixes.join("; "));
    }
}

fn root(list: &mut Checklist, config: &Config, euid: u32) {
    const CHECK: &str = "not running as root";
    match (euid == 0, config.sandbox.require_non_root) {
        (true, false) => list.fail(
            CHECK,
            "sandbox.require_non_root is false and this runs as uid 0: serve would run as root",
            "set sandbox.require_non_root: true and run as an unprivileged user (USER 65534:65534 in the image, User= in the unit)",
        ),
        (true, true) => list.warn(
            CHECK,
            "check runs as uid 0 (serve refuses root: sandbox.require_non_root is on), so the ownership rows compare against root",
            "run check as the service user, e.g. `setpriv --reuid=65534 --regid=65534 --clear-groups cliproxy-server check`",
        ),
        (false, _) => list.pass(CHECK, format!("uid {euid}")),
    }
}

fn client_keys(list: &mut Checklist, config: &Config) {
    const CHECK: &str = "client keys";
    let stored = stored_client_keys(config);
    match config.auth.client_keys().map(|k| k.len()) {
        Ok(0) if stored == 0 => list.fail(
            CHECK,
            "auth.api_keys is empty and the state store holds no usable client key: every proxied request would be refused",
            "add auth.api_keys: [\"${CLIPROXY_CLIENT_KEY}\"] and set CLIPROXY_CLIENT_KEY (`cliproxy-server keygen` prints one), or create one with `cliproxy-server keys create --name NAME`",
        ),
        Ok(n) => list.pass(
            CHECK,
            format!("{n} in auth.api_keys, {stored} created at run time (state store)"),
        ),
        Err(e) => list.fail(
            CHECK,
            cliproxy_gateway::vault_error_message(&e),
            "correct auth.api_keys as the detail says (`cliproxy-server keygen` prints a key)",
        ),
    }
}

/// How many client keys created at run time the state store holds that a request could use
/// now (readable, not disabled, not expired); 0 when there is no store yet or it cannot be
/// read (the state store row reports that).
fn stored_client_keys(config: &Config) -> usize {
    let rows = if config.state.backend == StateBackend::Redis {
        let Some(store) = redis_state(config) else { return 0 };
        cliproxy_netguard::StateStore::load_client_keys(&store).unwrap_or_default()
    } else {
        let mut state = config.state.clone();
        let path = state.path.get_or_insert_with(|| config.auth.dir.join(".state.db")).clone();
        if !path.is_file() {
            return 0;
        }
        let Ok(store) = cliproxy_netguard::SqliteStore::open(&state) else { return 0 };
        let rows = cliproxy_netguard::StateStore::load_client_keys(&store).unwrap_or_default();
        let _ = store.close();
        rows
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rows.iter()
        .filter_map(|row| {
            cliproxy_vault::ClientKeyRecord::from_stored(&row.id, &row.digest, &row.record_json)
                .ok()
        })
        .filter(|record| record.is_usable(now))
        .count()
}

/// What the `auth.dir` row found, for the rows that need to read inside it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AuthDir {
    /// It does not exist yet: nothing is stored.
    Missing,
    /// Its permissions are wrong (or it cannot be read): opening it would change modes.
    Bad,
    /// Ours, 0700, files 0600: safe to open without changing anything.
    Good,
}

/// `auth.dir` must be ours and 0700, each credential file ours and 0600; read-only here.
fn check_auth_dir(list: &mut Checklist, dir: &Path, euid: u32) -> AuthDir {
    const CHECK: &str = "auth.dir permissions";
    let shown = dir.display();
    // The same policy the vault applies when it opens the directory, inspected without
    // changing anything.
    let Some(found) = private_fs::inspect(dir, Kind::Dir, euid) else {
        list.warn(
            CHECK,
            format!("{shown} (auth.dir) does not exist yet: no credential is stored"),
            format!(
                "`mkdir -m 700 {shown}`, or `cliproxy-server vault add --provider NAME` (creates it 0700)"
            ),
        );
        return AuthDir::Missing;
    };
    let mut findings = Findings::default();
    if let [Finding::Unreadable(e)] = found.as_slice() {
        list.fail(
            CHECK,
            format!("{shown}: {e}"),
            format!("make {shown} readable by uid {euid}, or point auth.dir elsewhere"),
        );
        return AuthDir::Bad;
    }
    if matches!(found.as_slice(), [Finding::Symlink | Finding::WrongKind]) {
        findings.push(
            Verdict::Fail,
            format!("{shown} is not a directory"),
            "point auth.dir at a directory (0700, owned by the service user)",
        );
    } else {
        for finding in &found {
            if let Finding::ForeignOwner { owner } = finding {
                findings.push(
                    Verdict::Fail,
                    format!("{shown} is owned by uid {owner}, not {euid}"),
                    format!("chown {euid} {shown}"),
                );
            }
        }
        for finding in &found {
            if let Finding::LooseMode { mode } = finding {
                findings.push(
                    Verdict::Fail,
                    format!("{shown} has mode {mode:04o}, not 0700"),
                    format!("chmod 700 {shown}"),
                );
            }
        }
        let (mut loose, mut foreign) = (Vec::new(), Vec::new());
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if !(name.ends_with(".json") || name.starts_with('.')) {
                    continue;
                }
                let Some(found) = private_fs::inspect(&path, Kind::File, euid) else { continue };
                // A file is reported once: not a file, else a loose mode, else another owner.
                let mode = found.iter().find_map(|f| match f {
                    Finding::LooseMode { mode } => Some(*mode),
                    _ => None,
                });
                let owner = found.iter().find_map(|f| match f {
                    Finding::ForeignOwner { owner } => Some(*owner),
                    _ => None,
                });
                if matches!(found.as_slice(), [Finding::Unreadable(_)]) {
                    continue;
                } else if matches!(found.as_slice(), [Finding::Symlink | Finding::WrongKind]) {
                    findings.push(
                        Verdict::Fail,
                        format!("{} is not a regular file", path.display()),
                        format!("remove {} (credential files are plain files)", path.display()),
                    );
                } else if let Some(mode) = mode {
                    loose.push((path.display().to_string(), mode));
                } else if let Some(owner) = owner {
                    foreign.push((path.display().to_string(), owner));
                }
            }
        }
        // One command for all the loose files, rather than one fix per file.
        if !loose.is_empty() {
            let detail: Vec<String> = loose
                .iter()
                .map(|(p, mode)| format!("{p} has mode {mode:04o}, not 0600"))
                .collect();
            let paths: Vec<&str> = loose.iter().map(|(p, _)| p.as_str()).collect();
            findings.push(
                Verdict::Fail,
                detail.join("; "),
                format!("chmod 600 {}", paths.join(" ")),
            );
        }
        if !foreign.is_empty() {
            let detail: Vec<String> = foreign
                .iter()
                .map(|(p, uid)| format!("{p} is owned by uid {uid}, not {euid}"))
                .collect();
            let paths: Vec<&str> = foreign.iter().map(|(p, _)| p.as_str()).collect();
            findings.push(
                Verdict::Fail,
                detail.join("; "),
                format!("chown {euid} {}", paths.join(" ")),
            );
        }
    }
    let good = findings.items.is_empty();
    findings.report(list, CHECK, format!("{shown}: 0700, files 0600, owned by uid {euid}"));
    if good { AuthDir::Good } else { AuthDir::Bad }
}

/// The credentials readable and encryption at rest rows. The store is opened only when
/// auth.dir is already right: opening tightens loose modes, and check must not change
/// anything.
fn credentials(list: &mut Checklist, config: &Config, dir: AuthDir) {
    const READABLE: &str = "credentials readable";
    const ENCRYPTION: &str = "encryption at rest";
    let encryption = config.auth.encryption.enabled;
    if !encryption {
        list.fail(
            ENCRYPTION,
            "auth.encryption.enabled is false: provider tokens are stored in plaintext",
            "set auth.encryption.enabled: true and auth.encryption.key: \"${CLIPROXY_ENCRYPTION_KEY}\" (`cliproxy-server keygen` prints a key), then `cliproxy-server vault migrate`",
        );
    }
    encryption_key(list, config);
    let store = match dir {
        AuthDir::Missing => {
            list.pass(READABLE, "none stored yet");
            None
        }
        AuthDir::Bad => {
            list.warn(
                READABLE,
                "not checked: auth.dir permissions are wrong",
                "fix the auth.dir permissions row first",
            );
            None
        }
        // Opened without the lock of auth.dir: `check` only reads, and must pass beside a
        // running gateway, which holds that lock.
        AuthDir::Good if config.auth.store == cliproxy_vault::StoreKind::Redis => {
            match cliproxy_server::compose::open_vault(&config.gateway(), None, false) {
                Err(e) => {
                    list.fail(READABLE, e.to_string(), key_fix());
                    None
                }
                Ok(store) => Some(store),
            }
        }
        AuthDir::Good => match config.auth.build() {
            Err(e) => {
                list.fail(READABLE, cliproxy_gateway::vault_error_message(&e), key_fix());
                None
            }
            Ok(store) => Some(store),
        },
    };
    let Some(store) = store else {
        if encryption {
            list.pass(ENCRYPTION, "on (stored files not checked: see credentials readable)");
        }
        return;
    };
    match store.list() {
        Err(e) => {
            list.fail(READABLE, cliproxy_gateway::vault_error_message(&e), key_fix());
            if encryption {
                list.pass(ENCRYPTION, "on (stored files not checked: see credentials readable)");
            }
        }
        Ok(metas) => {
            list.pass(READABLE, format!("{} credential(s) decrypt", metas.len()));
            let plaintext: Vec<&str> = metas
                .iter()
                .filter(|m| m.stored == Protection::Plaintext)
                .map(|m| m.id.as_str())
                .collect();
            // With encryption off, its failing row was added above.
            if !encryption {
                return;
            }
            if plaintext.is_empty() {
                list.pass(ENCRYPTION, "on; every credential is encrypted");
            } else {
                list.fail(
                    ENCRYPTION,
                    format!(
                        "plaintext credential(s) left from before encryption: {}{}",
                        plaintext.join(", "),
                        // The default: `serve` will not start with them.
                        if config.auth.encryption.require_encrypted.unwrap_or(true) {
                            "; serve refuses to load them (auth.encryption.require_encrypted)"
                        } else {
                            ""
                        }
                    ),
                    "`cliproxy-server vault migrate` (encrypts them in place)",
                );
            }
        }
    }
}

/// The form of the configured keys: a 32-character value is used as 32 raw key bytes with no
/// key derivation, so a passphrase of that length passes for a key. Warned, not failed: files
/// written under it must still decrypt until it is rotated away.
fn encryption_key(list: &mut Checklist, config: &Config) {
    const KEY: &str = "encryption key";
    let encryption = &config.auth.encryption;
    if encryption.key.is_none() && encryption.previous_keys.is_empty() {
        return;
    }
    let raw: Vec<String> =
        encryption.raw_form_keys().into_iter().map(cliproxy_gateway::key_setting).collect();
    if raw.is_empty() {
        list.pass(KEY, "base64 or hex of 32 bytes");
    } else {
        list.warn(
            KEY,
            format!(
                "{} is 32 characters taken as raw key bytes with no key derivation: a passphrase of that length is far weaker than a random key",
                raw.join(", ")
            ),
            "generate a random key with `cliproxy-server keygen` (or `openssl rand -base64 32`), make it auth.encryption.key, move the old value to auth.encryption.previous_keys, run `cliproxy-server vault rotate-key`, then drop the old value",
        );
    }
}

fn key_fix() -> &'static str {
    "give auth.encryption.key (or previous_keys) the key the files were written with, or remove the file named"
}

/// When TLS is on: the certificate row (readable, parseable, time left) and the key row
/// (`TlsSettings::build`, exactly what serve does). When it is off: one row on the exposure.
fn tls(list: &mut Checklist, config: &Config, now: i64) {
    let tls = &config.server.tls;
    let host = config.server.host;
    if !tls.enabled {
        if is_loopback(host) {
            list.pass(
                "TLS",
                format!("off; server.host {host} is loopback, reachable from this machine only"),
            );
        } else {
            // A TLS-terminating proxy in front is the one reason to listen in plaintext off
            // loopback; the operator declares it by trusting it. A proxy on this machine does
            // not count: it needs no listener off loopback, and anyone else could use that one.
            let remote_proxies: Vec<String> = config
                .server
                .trusted_proxies
                .iter()
                .filter(|network| !covers_loopback(**network))
                .map(ToString::to_string)
                .collect();
            if remote_proxies.is_empty() {
                list.fail(
                    "TLS",
                    format!("off while listening on {host}: clients' keys cross the network in clear"),
                    "set server.tls.enabled: true with server.tls.cert_file and server.tls.key_file; or terminate TLS in a proxy and set server.host: 127.0.0.1, or list that proxy in server.trusted_proxies",
                );
            } else {
                list.warn(
                    "TLS",
                    format!(
                        "off while listening on {host}, behind the trusted proxies in server.trusted_proxies ({}): the hop from the proxy is plaintext",
                        remote_proxies.join(", ")
                    ),
                    "make sure the proxies terminate TLS and only the proxies can reach the port (firewall, or server.security.ip_allowlist), or set server.tls.enabled: true",
                );
            }
        }
        return;
    }

    const CERT: &str = "TLS certificate";
    match &tls.cert_file {
        None => list.fail(
            CERT,
            "server.tls.enabled is true but server.tls.cert_file is not set",
            "set server.tls.cert_file to the PEM certificate chain (leaf first)",
        ),
        Some(cert_file) => match cliproxy_netguard::tls::certificate_not_after(cert_file) {
            Err(e) => list.fail(
                CERT,
                cliproxy_gateway::netguard_error(&e),
                "point server.tls.cert_file at a readable PEM certificate chain, leaf first",
            ),
            Ok(not_after) => {
                let (verdict, detail) = expiry(not_after, now);
                let fix = format!(
                    "renew the certificate and replace {} (serve reloads it without a restart)",
                    cert_file.display()
                );
                list.add(CERT, verdict, format!("{}: {detail}", cert_file.display()), fix);
            }
        },
    }

    const KEY: &str = "TLS key";
    match cliproxy_netguard::tls::TlsSettings::build(tls) {
        Err(e) => {
            let fix = tls_fix(&e);
            list.fail(KEY, cliproxy_gateway::netguard_error(&e), fix);
        }
        Ok(_) => {
            let key_file = tls.key_file.as_deref().unwrap_or(Path::new(""));
            if let Some(fix) = tls_key_readable_by_all(key_file) {
                list.warn(
                    KEY,
                    format!(
                        "{} matches the certificate but every user of this machine can read it",
                        key_file.display()
                    ),
                    fix,
                );
            } else {
                list.pass(KEY, format!("{} matches the certificate", key_file.display()));
            }
        }
    }
}

/// What to do about a TLS settings error: the error names the key (through
/// `cliproxy_gateway::netguard_error`), the fix says what to give it.
fn tls_fix(error: &cliproxy_netguard::Error) -> &'static str {
    use cliproxy_netguard::{Error, TlsProblem};
    match error {
        Error::Tls { problem: TlsProblem::KeyMismatch { .. }, .. } => {
            "give server.tls.key_file the private key the certificate was issued for"
        }
        Error::CipherSuites { .. } => "correct server.tls.cipher_suites as the detail says",
        _ => "correct server.tls as the detail says (key_file: a PEM RSA, ECDSA or Ed25519 key)",
    }
}

/// The fix when every user of this machine can read the TLS private key `key_file`, `None`
/// when they cannot (or it cannot be looked at: loading it reports that). `check` warns with
/// it and `serve` logs it at start, so both judge the key the same way.
pub(crate) fn tls_key_readable_by_all(key_file: &Path) -> Option<String> {
    let others = fs::metadata(key_file).map(|m| m.mode() & 0o007).unwrap_or(0);
    (others != 0)
        .then(|| format!("chmod 600 {} (or 640 with the service user's group)", key_file.display()))
}

/// The verdict on a certificate that expires at `not_after` (Unix seconds): expired or less
/// than a day left fails (a renewal cannot be counted on in time), less than 14 days warns.
fn expiry(not_after: i64, now: i64) -> (Verdict, String) {
    const DAY: i64 = 86_400;
    let date = cliproxy_core::format_utc(u64::try_from(not_after).unwrap_or(0));
    let left = not_after - now;
    if left <= 0 {
        (Verdict::Fail, format!("expired on {date}"))
    } else if left < DAY {
        (
            Verdict::Fail,
            format!(
                "expires in {}h{:02}m ({date}), less than 24 hours",
                left / 3600,
                left % 3600 / 60
            ),
        )
    } else if left < 14 * DAY {
        (Verdict::Warn, format!("expires in {} day(s) ({date}), less than 14 days", left / DAY))
    } else {
        (Verdict::Pass, format!("valid until {date} ({} days)", left / DAY))
    }
}

fn management(list: &mut Checklist, config: &Config) {
    const CHECK: &str = "management API";
    let management = &config.management;
    let loopback_proxies: Vec<String> = config
        .server
        .trusted_proxies
        .iter()
        .filter(|network| covers_loopback(**network))
        .map(ToString::to_string)
        .collect();
    match (management.key().is_some(), management.allow_remote, config.server.tls.enabled) {
        (false, _, _) => list.pass(CHECK, "off (no management.secret_key)"),
        (true, false, _) if !loopback_proxies.is_empty() => list.fail(
            CHECK,
            format!(
                "server.trusted_proxies holds loopback ({}) while the management API is on (management.secret_key) for loopback callers only (management.allow_remote: false): behind a proxy on this machine every remote caller arrives from loopback; calls with a forwarding header are refused, but a proxy or route that adds none makes any caller an operator",
                loopback_proxies.join(", ")
            ),
            "run the proxy on an address of its own and list that in server.trusted_proxies, or turn the management API off here (remove management.secret_key), or set management.allow_remote: true (with TLS) and keep /v0/management off the proxy's routes",
        ),
        (true, false, _) => list.pass(CHECK, "loopback peers only"),
        (true, true, true) => list.pass(CHECK, "remote peers allowed, over TLS"),
        (true, true, false) => list.fail(
            CHECK,
            "management.allow_remote is on without TLS on the listener: the management key would cross the network in clear",
            "set server.tls.enabled: true, or management.allow_remote: false and reach it through a loopback tunnel (ssh -L)",
        ),
    }
}

fn rate_limits(list: &mut Checklist, config: &Config) {
    const CHECK: &str = "rate limits";
    let security = &config.server.security.rate_limiting;
    let global = &config.server.rate_limit;
    let per_ip = security.enabled && security.per_ip;
    let mut off = Vec::new();
    if !per_ip {
        off.push("per-IP (server.security.rate_limiting)");
    }
    if !global.enabled {
        off.push("global (server.rate_limit)");
    }
    if off.is_empty() {
        list.pass(
            CHECK,
            format!(
                "per-IP {}/s burst {}; global {}/s burst {}",
                security.requests_per_second,
                security.burst,
                global.requests_per_second,
                global.burst
            ),
        );
        return;
    }
    let mut fix = Vec::new();
    if !per_ip {
        fix.push("server.security.rate_limiting.enabled: true");
    }
    if !global.enabled {
        fix.push("server.rate_limit.enabled: true");
    }
    let fix = format!("set {}", fix.join(" and "));
    let host = config.server.host;
    if is_loopback(host) {
        list.warn(
            CHECK,
            format!("{} off (listening on loopback {host} only)", off.join(" and ")),
            fix,
        );
    } else {
        list.fail(
            CHECK,
            format!(
                "{} off while listening on {host}: anyone who reaches the port can flood it",
                off.join(" and ")
            ),
            fix,
        );
    }
}

fn audit_log(list: &mut Checklist, config: &Config, euid: u32) {
    const CHECK: &str = "audit log";
    let audit = &config.logging.audit;
    if !audit.enabled {
        list.fail(
            CHECK,
            "logging.audit.enabled is false: no record of authentications, refusals or credential access",
            "set logging.audit.enabled: true and logging.audit.file (e.g. /var/log/cliproxy/audit.log)",
        );
        return;
    }
    let file = &audit.file;
    let mut findings = Findings::default();
    let dir = writable_dir(parent_dir(file), "logging.audit.file", euid);
    if let Err((detail, fix)) = &dir {
        findings.push(Verdict::Fail, detail, fix);
    }
    let file_state = private_file(file, euid, &mut findings);
    if let Some(found) = behind_anchor(config) {
        findings.push(
            Verdict::Fail,
            found,
            "find out who cut or removed the audit log and put the missing lines back (from a \
             backup or the log shipper); the gateway refuses to start until then unless \
             logging.audit.on_gap: continue",
        );
    }
    let missing: Vec<&str> = [EventType::AuthFailure, EventType::SecurityViolation]
        .into_iter()
        .filter(|event| !audit.events.contains(event))
        .map(EventType::as_str)
        .collect();
    if !missing.is_empty() {
        findings.push(
            Verdict::Warn,
            format!("logging.audit.events leaves out {}", missing.join(" and ")),
            format!(
                "add {} to logging.audit.events (or remove the key to write every event)",
                missing.join(", ")
            ),
        );
    }
    let pass = format!(
        "{}: {}, {}",
        file.display(),
        dir.unwrap_or_default(),
        file_state.unwrap_or("created 0600 at start")
    );
    findings.report(list, CHECK, pass);
}

/// Whether the audit file is behind the head anchored in the state store (lines cut off its
/// end, or the file deleted): what the gateway would refuse to start on. `None` when it is
/// not, or when there is no state store or anchor yet (the state store check reports a store
/// that cannot be opened).
fn behind_anchor(config: &Config) -> Option<String> {
    if config.state.backend == StateBackend::Redis {
        let store = redis_state(config)?;
        let head = cliproxy_netguard::StateStore::load_audit_head(&store).ok().flatten();
        return behind(config, head, &cliproxy_netguard::StateStore::describe(&store));
    }
    let mut state = config.state.clone();
    let path = state.path.get_or_insert_with(|| config.auth.dir.join(".state.db")).clone();
    if !path.is_file() {
        return None;
    }
    let store = cliproxy_netguard::SqliteStore::open(&state).ok()?;
    let head = cliproxy_netguard::StateStore::load_audit_head(&store).ok().flatten();
    let _ = store.close();
    behind(config, head, &path.display().to_string())
}

/// The audit file compared with the `head` anchored in the store `where_`.
fn behind(config: &Config, head: Option<(u64, String)>, where_: &str) -> Option<String> {
    let (seq, hash) = head?;
    let file = &config.logging.audit.file;
    let anchored = cliproxy_audit::ChainHead { seq, hash };
    let found = match cliproxy_audit::compare_with_anchor(file, &anchored) {
        Ok(found) => found?,
        Err(e) => format!("it cannot be read ({e})"),
    };
    Some(format!(
        "{} is behind its anchor in the state store {where_}: the anchor holds seq {} with hash {}, but \
         {found}; lines were cut off or the file was deleted (the gateway refuses to start: \
         logging.audit.on_gap)",
        file.display(),
        anchored.seq,
        anchored.hash
    ))
}

fn metrics(list: &mut Checklist, config: &Config) {
    const CHECK: &str = "metrics";
    let metrics = &config.metrics;
    let at = format!("{}:{}{}", metrics.host, metrics.port, metrics.path);
    if !metrics.enabled {
        list.pass(CHECK, "listener off (metrics.enabled: false)");
    } else if is_loopback(metrics.host) {
        list.pass(CHECK, format!("on {at}, loopback only"));
    } else {
        list.warn(
            CHECK,
            format!("listening on {at}: anyone who reaches it sees client IP addresses (the ip label) and traffic"),
            format!(
                "set metrics.host: 127.0.0.1 and scrape through a sidecar or tunnel, or firewall port {} to the Prometheus server",
                metrics.port
            ),
        );
    }
}

fn alerts(list: &mut Checklist, config: &Config) {
    const CHECK: &str = "alerts";
    if config.alerts.is_empty() {
        list.warn(
            CHECK,
            "no alert rules: auth failure and rate limit spikes go unnoticed",
            "add rules under alerts:, e.g. {name: auth failures, condition: \"auth_failures > 100\", duration: 5m, action: notify_admin}",
        );
    } else {
        list.pass(CHECK, format!("{} rule(s)", config.alerts.len()));
    }
}

/// The Redis store `serve` would use (under this instance's name: its audit head is this
/// instance's), when `state.backend` is `redis` and Redis answers; `None` otherwise (the
/// state store row says why).
fn redis_state(config: &Config) -> Option<RedisStore> {
    let link = cliproxy_server::compose::shared_link(&config.gateway()).ok()??;
    let options = RedisStoreOptions::new(config.server.instance_id(), config.state.flush_interval);
    RedisStore::open(link, options).ok()
}

/// `state.backend: redis`: the server answers, and keeps what it is told (AOF).
fn redis_store_row(list: &mut Checklist, config: &Config) {
    const CHECK: &str = "state store";
    let link = match RedisLink::open(&config.state.redis) {
        Ok(link) => link,
        Err(e) => {
            list.fail(
                CHECK,
                cliproxy_gateway::netguard_error(&e),
                "set state.redis.url: redis://[:password@]host:port[/db] or rediss://…",
            );
            return;
        }
    };
    if let Err(e) = link.ping() {
        list.fail(
            CHECK,
            format!("{} does not answer: {e}", link.describe()),
            "start Redis, or check state.redis.url (host, port, password); a gateway does not start without it",
        );
        return;
    }
    let policy = match config.state.redis.on_unavailable {
        cliproxy_netguard::OnUnavailable::Deny => "deny (503 while it is down)",
        _ => "local (each instance on its own limits while it is down)",
    };
    match link.appendonly() {
        Ok(Some(true)) => list.pass(
            CHECK,
            format!("{} answers; appendonly yes; on_unavailable: {policy}", link.describe()),
        ),
        Ok(Some(_)) => list.warn(
            CHECK,
            format!("{} answers, but appendonly is off: a restart empties it (keys, denylist and bans are written back by the instances; limit, quota, budget and usage counts are lost)", link.describe()),
            "run Redis with appendonly yes (docs/deploy.md)",
        ),
        _ => list.pass(
            CHECK,
            format!("{} answers (its persistence cannot be read: CONFIG is disabled); on_unavailable: {policy}", link.describe()),
        ),
    }
}

fn state_store(list: &mut Checklist, config: &Config, euid: u32) {
    const CHECK: &str = "state store";
    if config.state.backend == StateBackend::Redis {
        redis_store_row(list, config);
        return;
    }
    let (path, key) = match &config.state.path {
        Some(path) => (path.clone(), "state.path"),
        // The gateway keeps it in auth.dir then, whose row already covers the file's mode.
        None => (config.auth.dir.join(".state.db"), "auth.dir"),
    };
    let mut findings = Findings::default();
    let dir = writable_dir(parent_dir(&path), key, euid);
    if let Err((detail, fix)) = &dir {
        findings.push(Verdict::Fail, detail, fix);
    }
    let file_state =
        if config.state.path.is_some() { private_file(&path, euid, &mut findings) } else { None };
    let pass = format!(
        "{}: {}{}",
        path.display(),
        dir.unwrap_or_default(),
        file_state.map(|s| format!(", {s}")).unwrap_or_default()
    );
    findings.report(list, CHECK, pass);
}

fn secrets_in_file(list: &mut Checklist, file: Option<&Path>) {
    const CHECK: &str = "no secrets in the config file";
    let Some(path) = file else {
        list.pass(CHECK, "no config file");
        return;
    };
    match literal_secrets(path) {
        Ok(found) if found.is_empty() => list.pass(CHECK, "keys come from ${VAR} placeholders"),
        Ok(found) => list.fail(
            CHECK,
            format!("written literally: {} (in {})", found.join(", "), path.display()),
            "replace each with a \"${CLIPROXY_...}\" placeholder set in the environment, and rotate those keys: the file has exposed them (`cliproxy-server keygen`)",
        ),
        Err(e) => list.fail(
            CHECK,
            format!("{}: {e}", path.display()),
            "make the config file readable YAML",
        ),
    }
}

fn sandbox(list: &mut Checklist, config: &Config) {
    let sandbox = &config.sandbox;
    for (on, key) in [
        (sandbox.seccomp, "sandbox.seccomp"),
        (sandbox.landlock, "sandbox.landlock"),
        (sandbox.no_new_privs || sandbox.seccomp, "sandbox.no_new_privs"),
        (sandbox.protect_memory, "sandbox.protect_memory"),
    ] {
        if !on {
            list.warn("sandbox", format!("{key} is off"), format!("set {key}: true"));
        }
    }
    if sandbox.seccomp && sandbox.landlock && sandbox.protect_memory {
        list.pass("sandbox", "seccomp allowlist, no_new_privs, landlock and memory protection on");
    }
    match cliproxy_container::posture::Posture::read() {
        Ok(posture) => list.pass("posture of this process", posture.to_string()),
        Err(e) => list.warn(
            "posture of this process",
            format!("/proc/self/status: {e}"),
            "run on Linux with /proc mounted (`cliproxy-server sandbox posture` shows it)",
        ),
    }
}

/// The directory a file is in (`.` for a bare file name).
fn parent_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Whether this user may create files in `dir` (`eaccess`: the effective ids, groups and
/// read-only mounts all count), or, when it does not exist yet, may create it in its parent.
/// `Ok` is a sentence for a passing row; `Err` is (detail, fix). `key` is the config key that
/// names the directory.
fn writable_dir(dir: PathBuf, key: &str, euid: u32) -> Result<String, (String, String)> {
    let shown = dir.display();
    let can_write = |path: &Path| nix::unistd::eaccess(path, AccessFlags::W_OK | AccessFlags::X_OK);
    match fs::metadata(&dir) {
        Ok(meta) if !meta.is_dir() => {
            Err((format!("{shown} is not a directory"), format!("point {key} into a directory")))
        }
        Ok(_) => match can_write(&dir) {
            Ok(()) => Ok(format!("{shown} is writable")),
            Err(errno) => Err((
                format!("{shown} is not writable by uid {euid} ({})", errno.desc()),
                format!("chown {euid} {shown} && chmod 700 {shown} (or point {key} elsewhere)"),
            )),
        },
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let parent = parent_dir(&dir);
            let parent_ok = fs::metadata(&parent).is_ok_and(|m| m.is_dir());
            if parent_ok && can_write(&parent).is_ok() {
                Ok(format!("{shown} will be created 0700 at start"))
            } else {
                Err((
                    format!(
                        "{shown} does not exist and cannot be created: {} is missing or not writable by uid {euid}",
                        parent.display()
                    ),
                    format!("mkdir -p -m 700 {shown} && chown {euid} {shown}"),
                ))
            }
        }
        Err(e) => Err((format!("{shown}: {e}"), format!("make {shown} reachable by uid {euid}"))),
    }
}

/// A file only we may read: ours and 0600 when it exists. Adds a failing finding per problem
/// and returns a sentence for a passing row, or `None` when the file does not exist yet.
fn private_file(file: &Path, euid: u32, findings: &mut Findings) -> Option<&'static str> {
    let shown = file.display();
    let found = private_fs::inspect(file, Kind::File, euid)?;
    match found.as_slice() {
        [Finding::Unreadable(e)] => {
            findings.push(
                Verdict::Fail,
                format!("{shown}: {e}"),
                format!("make {shown} readable by uid {euid}"),
            );
            return Some("unreadable");
        }
        [Finding::Symlink | Finding::WrongKind] => {
            findings.push(
                Verdict::Fail,
                format!("{shown} is not a regular file"),
                format!("replace {shown} with a regular file"),
            );
            return Some("not a file");
        }
        _ => {}
    }
    for finding in &found {
        if let Finding::LooseMode { mode } = finding {
            findings.push(
                Verdict::Fail,
                format!("{shown} has mode {mode:04o}, not 0600: others can read it"),
                format!("chmod 600 {shown}"),
            );
        }
    }
    for finding in &found {
        if let Finding::ForeignOwner { owner } = finding {
            findings.push(
                Verdict::Fail,
                format!("{shown} is owned by uid {owner}, not {euid}"),
                format!("chown {euid} {shown}"),
            );
        }
    }
    Some("file 0600, owned by us")
}

/// Loopback, IPv4-mapped IPv6 loopback included.
fn is_loopback(host: IpAddr) -> bool {
    host.to_canonical().is_loopback()
}

/// Whether `network` holds a loopback address: it lies in 127.0.0.0/8 (or is ::1), or it
/// contains 127.0.0.1 or ::1 (`0.0.0.0/0`, `::/0`, an IPv4-mapped range).
fn covers_loopback(network: ipnetwork::IpNetwork) -> bool {
    let network = cliproxy_netguard::canonical_network(network);
    is_loopback(network.ip())
        || network.contains(IpAddr::from([127, 0, 0, 1]))
        || network.contains(std::net::Ipv6Addr::LOCALHOST.into())
}

/// The secret-holding keys whose value in the file is not a `${VAR}` placeholder. Reads the
/// file as written (before interpolation) and never prints a value.
fn literal_secrets(path: &Path) -> Result<Vec<String>, String> {
    let text = fs::read_to_string(path).map_err(|e| e.to_string())?;
    use figment::providers::Format;
    let value: serde_json::Value = figment::Figment::from(figment::providers::Yaml::string(&text))
        .extract()
        .map_err(|e| format!("not valid YAML ({})", e.kind))?;
    let placeholder = |v: &serde_json::Value| {
        v.as_str().is_none_or(|s| {
            let s = s.trim();
            s.is_empty() || (s.starts_with("${") && s.ends_with('}') && !s[2..].contains('$'))
        })
    };
    let mut found = Vec::new();
    let mut check = |key: String, v: &serde_json::Value| {
        if !placeholder(v) {
            found.push(key);
        }
    };
    if let Some(keys) = value.pointer("/auth/api_keys").and_then(|v| v.as_array()) {
        for (i, entry) in keys.iter().enumerate() {
            match entry.get("key") {
                Some(key) => check(format!("auth.api_keys[{i}].key"), key),
                None => check(format!("auth.api_keys[{i}]"), entry),
            }
        }
    }
    if let Some(key) = value.pointer("/auth/encryption/key") {
        check("auth.encryption.key".to_owned(), key);
    }
    if let Some(keys) = value.pointer("/auth/encryption/previous_keys").and_then(|v| v.as_array()) {
        for (i, key) in keys.iter().enumerate() {
            check(format!("auth.encryption.previous_keys[{i}]"), key);
        }
    }
    if let Some(key) = value.pointer("/management/secret_key") {
        check("management.secret_key".to_owned(), key);
    }
    Ok(found)
}

fn euid() -> u32 {
    cliproxy_container::posture::Posture::read().map_or(u32::MAX, |p| p.euid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_secrets_are_found_by_key_never_by_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        fs::write(
            &path,
            "auth:\n  api_keys: [\"${CLIPROXY_CLIENT_KEY}\", \"cpk-literal-0123456789\", {name: b, key: \"${K}\"}, {name: c, key: \"lit-key-0123456789\"}]\n  encryption: {enabled: true, key: \"q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=\", previous_keys: [\"${OLD}\"]}\nmanagement: {secret_key: \"${CLIPROXY_MANAGEMENT_KEY}\"}\n",
        )
        .unwrap();
        let found = literal_secrets(&path).unwrap();
        assert_eq!(found, ["auth.api_keys[1]", "auth.api_keys[3].key", "auth.encryption.key"]);
        fs::write(&path, "management: {secret_key: \"pre-${X}\"}\n").unwrap();
        assert_eq!(literal_secrets(&path).unwrap(), ["management.secret_key"]);
    }

    /// Issue 18 item 19: a 32-character key is taken as 32 raw bytes, with no key derivation:
    /// a passphrase of that length passes for a key. `check` warns, naming each such key and
    /// how to make a real one; base64 and hex keys do not warn.
    #[test]
    fn a_passphrase_taken_as_raw_key_bytes_warns() {
        let config = |key: &str, previous: &str| {
            Config::from_yaml(&format!(
                "auth:\n  api_keys: [\"client-key-0123456789abcdef\"]\n  encryption: {{enabled: true, key: \"{key}\", previous_keys: [{previous}]}}\n"
            ))
            .unwrap()
        };
        let rows = |config: &Config| {
            let mut list = Checklist::default();
            credentials(&mut list, config, AuthDir::Missing);
            list.rows
                .into_iter()
                .filter(|row| row.check == "encryption key")
                .map(|row| (row.verdict, row.detail, row.fix.unwrap_or_default()))
                .collect::<Vec<_>>()
        };
        const PASSPHRASE: &str = "correct horse battery staple 32c";
        let found = rows(&config(PASSPHRASE, "\"q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=\""));
        assert_eq!(found.len(), 1, "{found:?}");
        let (verdict, detail, fix) = &found[0];
        assert_eq!(*verdict, Verdict::Warn);
        assert!(detail.contains("auth.encryption.key") && !detail.contains("previous"), "{detail}");
        assert!(!detail.contains(PASSPHRASE) && !fix.contains(PASSPHRASE), "{detail} {fix}");
        assert!(fix.contains("cliproxy-server keygen") && fix.contains("rotate-key"), "{fix}");
        let found = rows(&config(
            "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=",
            &format!("\"{PASSPHRASE}\""),
        ));
        assert!(found[0].1.contains("auth.encryption.previous_keys[0]"), "{found:?}");
        let hex = "ab".repeat(32);
        let found = rows(&config(&hex, ""));
        assert_eq!(found.iter().map(|r| r.0).collect::<Vec<_>>(), [Verdict::Pass], "{found:?}");
    }

    #[test]
    fn certificate_expiry_thresholds() {
        let now = 1_800_000_000;
        assert_eq!(expiry(now - 1, now).0, Verdict::Fail);
        assert_eq!(expiry(now, now).0, Verdict::Fail);
        assert_eq!(expiry(now + 86_399, now).0, Verdict::Fail);
        assert_eq!(expiry(now + 86_400, now).0, Verdict::Warn);
        assert_eq!(expiry(now + 14 * 86_400 - 1, now).0, Verdict::Warn);
        assert_eq!(expiry(now + 14 * 86_400, now).0, Verdict::Pass);
        assert!(
            expiry(now + 3600, now).1.starts_with("expires in 1h00m ("),
            "{:?}",
            expiry(now + 3600, now)
        );
        assert!(expiry(1_925_078_400, now).1.starts_with("valid until 2031-01-02T00:00:00Z"));
        assert!(expiry(0, now).1.contains("expired on 1970-01-01"));
    }

    #[test]
    fn findings_report_the_worst_verdict_and_each_fix_once() {
        let mut list = Checklist::default();
        let mut findings = Findings::default();
        findings.push(Verdict::Warn, "a", "fix a");
        findings.push(Verdict::Fail, "b", "fix a");
        findings.report(&mut list, "x", "fine".to_owned());
        Findings::default().report(&mut list, "y", "fine".to_owned());
        assert_eq!(list.rows[0].verdict, Verdict::Fail);
        assert_eq!(list.rows[0].detail, "a; b");
        assert_eq!(list.rows[0].fix.as_deref(), Some("fix a"));
        assert_eq!((list.rows[1].verdict, list.rows[1].fix.as_deref()), (Verdict::Pass, None));
        assert!(!list.passed());
    }

    #[test]
    fn trusted_proxy_ranges_that_hold_loopback() {
        for yes in [
            "127.0.0.1/32",
            "127.0.0.0/8",
            "127.0.0.2/32",
            "0.0.0.0/0",
            "::1/128",
            "::/0",
            "::ffff:127.0.0.0/104",
        ] {
            assert!(covers_loopback(yes.parse().unwrap()), "{yes}");
        }
        for no in ["10.0.0.0/24", "128.0.0.0/1", "2001:db8::/32", "::2/128"] {
            assert!(!covers_loopback(no.parse().unwrap()), "{no}");
        }
    }

    #[test]
    fn mapped_loopback_is_loopback() {
        assert!(is_loopback("::ffff:127.0.0.1".parse().unwrap()));
        assert!(is_loopback("::1".parse().unwrap()));
        assert!(!is_loopback("0.0.0.0".parse().unwrap()));
    }
}
