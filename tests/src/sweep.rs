//! The secret-leak sweep (issue 9, item 6): every gateway the harness starts is searched for
//! the secrets the tests planted when it is dropped (unless the test is already failing).
//!
//! The registry holds every secret any test of this process planted: the client and
//! management keys, encryption keys and provider tokens found in the config files the
//! harness starts gateways with, the body of the TLS private key they name, every token
//! given to [`crate::Harness::vault_add`] or posted to the management API by
//! [`crate::manage_with`], and whatever a test passes to [`plant`]. A gateway must show none
//! of them, whoever planted it, in its outputs:
//!
//! - everything it wrote on stdout and stderr (logs and panics), including what a test took
//!   out with [`crate::Gateway::drain_logs`];
//! - the files it writes under the harness directory: audit logs and other logs (`*.log*`,
//!   `*.jsonl`) and the vault's and guard's bookkeeping (`.state.db*`, `.last-used.json`,
//!   `.key-usage.json`). The config file and the credential files are inputs that hold
//!   secrets by design, and are not searched;
//! - when it still runs, `/metrics` (when the metrics listener is on) and
//!   `/v0/management/status` (with the management key, over plain HTTP).
//!
//! A secret is searched whole and cut to its first [`MIN_PREFIX_CHARS`] characters, as it is
//! and in base64 (standard and URL-safe, at each alignment), percent-encoded and JSON-escaped
//! (see [`forms`]). A hit fails the test that started the gateway, naming where the secret
//! was found and in which form (the secret itself is shown by its first characters only).
//! [`crate::Gateway::sweep`] runs the same search at any point. Each sweep appends figures to the test report (category
//! `secret-leaks`): one gateway swept, the bytes scanned, the hits (zero, or the test fails)
//! and the secrets planted so far — a report sums the first three and takes the largest of
//! the last.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use crate::{Gateway, report};

/// The report category of the sweep's figures.
pub const CATEGORY: &str = "secret-leaks";

/// Shorter strings are not registered: they would match by chance.
const MIN_SECRET_LEN: usize = 12;

static PLANTED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Registers `secret`: from now on no gateway may show it. Strings shorter than 12 bytes and
/// `${VAR}` placeholders are ignored.
pub fn plant(secret: &str) {
    let secret = secret.trim();
    if secret.len() >= MIN_SECRET_LEN && !secret.contains("${") {
        PLANTED.lock().unwrap_or_else(|e| e.into_inner()).insert(secret.to_owned());
    }
}

/// Every secret planted so far.
pub fn planted() -> Vec<String> {
    PLANTED.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
}

/// A secret counts as shown when its first 12 characters are: a log line that cuts a key
/// short still gives away most of it, and 12 characters of a random key do not turn up by
/// chance (planted secrets are at least this long, see [`plant`]).
pub const MIN_PREFIX_CHARS: usize = 12;

/// One secret found where it must not be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// Where: `logs`, a file path, `/metrics`, `/v0/management/status`, ...
    pub place: String,
    /// The secret's first four characters and its length (never the whole secret).
    pub secret: String,
    /// The form it was found in: `plain`, `base64`, `percent-encoded`, `JSON-escaped`, ...
    pub form: &'static str,
    /// Byte offset of the first occurrence.
    pub offset: usize,
}

/// Searches `haystack` (any bytes) for each of `secrets`, in every form [`forms`] lists;
/// one hit per secret found (its first occurrence in any form).
pub fn scan(place: &str, haystack: &[u8], secrets: &[String]) -> Vec<Hit> {
    let needles: Vec<(usize, &'static str, Vec<u8>)> = secrets
        .iter()
        .enumerate()
        .flat_map(|(i, secret)| forms(secret).into_iter().map(move |(form, n)| (i, form, n)))
        .collect();
    let mut first: Vec<Option<(usize, &'static str)>> = vec![None; secrets.len()];
    for (offset, needle) in Finder::new(&needles).find_all(haystack) {
        let (i, form, _) = &needles[needle];
        if first[*i].is_none_or(|(seen, _)| offset < seen) {
            first[*i] = Some((offset, form));
        }
    }
    first
        .into_iter()
        .zip(secrets)
        .filter_map(|(found, secret)| {
            let (offset, form) = found?;
            Some(Hit {
                place: place.to_owned(),
                secret: format!("{}… ({} bytes)", secret.get(..4).unwrap_or(""), secret.len()),
                form,
                offset,
            })
        })
        .collect()
}

/// The byte strings whose presence shows `secret`, each named by its form. Each is built
/// from the secret's first [`MIN_PREFIX_CHARS`] characters, so that it is found in the
/// whole secret and in any cut of it at least that long:
///
/// - `plain`: the characters themselves;
/// - `base64` and `base64url`: the prefix encoded at each of the three alignments it can have
///   in a longer encoded text (a `Basic` header, a JSON blob), keeping only the characters
///   that depend on the prefix alone (15 or 16 of them);
/// - `percent-encoded`: every byte but RFC 3986's unreserved ones as `%XX`, upper- and
///   lower-case hex;
/// - `JSON-escaped`: as serde_json writes it, with `/` also escaped as `\/`, and with every
///   character but letters and digits as `\u00XX` (as encoders that escape HTML do).
///
/// Forms that come out identical to an earlier one (a key of letters, digits and dashes
/// percent-encodes to itself) are listed once.
pub fn forms(secret: &str) -> Vec<(&'static str, Vec<u8>)> {
    let cut = secret.char_indices().nth(MIN_PREFIX_CHARS).map_or(secret.len(), |(at, _)| at);
    let prefix = &secret[..cut];
    let mut forms: Vec<(&'static str, Vec<u8>)> = vec![("plain", prefix.as_bytes().to_vec())];
    for offset in 0..3 {
        let standard = base64_core(prefix.as_bytes(), offset);
        let url_safe = standard.replace('+', "-").replace('/', "_");
        forms.push(("base64", standard.into_bytes()));
        forms.push(("base64url", url_safe.into_bytes()));
    }
    for hex in [upper_hex as fn(u8) -> String, lower_hex] {
        let encoded: String = prefix
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{}", hex(b))
                }
            })
            .collect();
        forms.push(("percent-encoded", encoded.into_bytes()));
    }
    let json = serde_json::to_string(prefix).unwrap_or_default();
    let json = json.get(1..json.len().saturating_sub(1)).unwrap_or_default().to_owned();
    forms.push(("JSON-escaped", json.replace('/', "\\/").into_bytes()));
    forms.push(("JSON-escaped", json.into_bytes()));
    let escaped: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_string()
            } else {
                let mut units = [0u16; 2];
                c.encode_utf16(&mut units).iter().map(|u| format!("\\u{u:04x}")).collect()
            }
        })
        .collect();
    forms.push(("JSON-escaped", escaped.into_bytes()));
    let mut seen = BTreeSet::new();
    forms.retain(|(_, needle)| !needle.is_empty() && seen.insert(needle.clone()));
    forms
}

fn upper_hex(b: u8) -> String {
    format!("{b:02X}")
}

fn lower_hex(b: u8) -> String {
    format!("{b:02x}")
}

/// The base64 characters (standard alphabet) that `bytes` fixes when it starts `offset`
/// bytes (0, 1 or 2) into the encoded text: the 6-bit groups that lie wholly within it.
fn base64_core(bytes: &[u8], offset: usize) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut padded = vec![0u8; offset];
    padded.extend_from_slice(bytes);
    let bits = padded.len() * 8;
    let first = (offset * 8).div_ceil(6);
    let last = bits / 6;
    (first..last)
        .map(|group| {
            let bit = group * 6;
            let (byte, shift) = (bit / 8, bit % 8);
            let pair = (u16::from(padded[byte]) << 8)
                | u16::from(padded.get(byte + 1).copied().unwrap_or(0));
            char::from(ALPHABET[usize::from((pair >> (10 - shift)) & 0x3f)])
        })
        .collect()
}

/// Finds many needles (each at least 8 bytes long) in one pass over a haystack of any size:
/// a bit set keyed by a hash of each needle's first 8 bytes lets almost every position be
/// passed over with one multiplication and one load, and the few that pass are checked
/// against the needles with those first 8 bytes. Searching each needle with `find` would
/// take one pass per needle, and a gateway's drained logs are megabytes, with hundreds of
/// needles.
struct Finder<'a> {
    filter: Vec<u64>,
    /// (first 8 bytes, needle index), sorted.
    anchors: Vec<(u64, usize)>,
    needles: Vec<&'a [u8]>,
}

const FILTER_BITS: u32 = 20;

impl<'a> Finder<'a> {
    fn new(needles: &'a [(usize, &'static str, Vec<u8>)]) -> Self {
        let needles: Vec<&[u8]> = needles.iter().map(|(_, _, n)| n.as_slice()).collect();
        let mut filter = vec![0u64; 1 << (FILTER_BITS - 6)];
        let mut anchors = Vec::with_capacity(needles.len());
        for (i, needle) in needles.iter().enumerate() {
            assert!(needle.len() >= 8, "a needle shorter than 8 bytes");
            let anchor = anchor(needle);
            let slot = filter_slot(anchor);
            filter[slot / 64] |= 1 << (slot % 64);
            anchors.push((anchor, i));
        }
        anchors.sort_unstable();
        Self { filter, anchors, needles }
    }

    /// Every (offset, needle index) where a needle occurs.
    fn find_all(&self, haystack: &[u8]) -> Vec<(usize, usize)> {
        let mut found = Vec::new();
        for (offset, window) in haystack.windows(8).enumerate() {
            let anchor = anchor(window);
            let slot = filter_slot(anchor);
            if self.filter[slot / 64] & (1 << (slot % 64)) == 0 {
                continue;
            }
            let start = self.anchors.partition_point(|(a, _)| *a < anchor);
            for (_, i) in self.anchors[start..].iter().take_while(|(a, _)| *a == anchor) {
                if haystack[offset..].starts_with(self.needles[*i]) {
                    found.push((offset, *i));
                }
            }
        }
        found
    }
}

fn anchor(bytes: &[u8]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(first)
}

fn filter_slot(anchor: u64) -> usize {
    // Fibonacci hashing: the top bits of the product depend on every byte of the anchor.
    (anchor.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - FILTER_BITS)) as usize
}

/// Plants the string values of JSON fields whose name says they hold a secret (a body a
/// test posts to the management API).
pub fn plant_from_json(value: &Value) {
    match value {
        Value::Object(map) => {
            for (name, value) in map {
                match value {
                    Value::String(text) if secret_name(name) => plant(text),
                    other => plant_from_json(other),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(plant_from_json),
        _ => {}
    }
}

/// Field names that hold secrets in the config and the management API.
fn secret_name(name: &str) -> bool {
    let name = name.trim().trim_matches('"').to_ascii_lowercase();
    matches!(
        name.as_str(),
        "key"
            | "secret_key"
            | "token"
            | "api_key"
            | "access_token"
            | "refresh_token"
            | "client_secret"
            | "passphrase"
            | "password"
            | "secret"
    ) || name.ends_with("_token")
        || name.ends_with("_secret")
}

/// Plants the secrets a YAML config file holds: scalar values (and list items) of
/// secret-named keys, `api_keys` and `previous_keys` list items, and the base64 body of the
/// PEM files `key_file` names. A deliberately small reader, not a YAML parser: it looks for
/// `name: value` pairs in block and flow style.
pub fn plant_from_config(yaml: &str) {
    let mut i = 0;
    while let Some(found) = yaml[i..].find(':') {
        let colon = i + found;
        i = colon + 1;
        let start = yaml[..colon]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '"'))
            .map_or(0, |p| p + 1);
        let name = yaml[start..colon].trim_matches('"');
        let listed = matches!(name, "api_keys" | "previous_keys");
        if !(secret_name(name) || listed || name == "key_file") {
            continue;
        }
        let rest = yaml[i..].trim_start_matches([' ', '\t']);
        let values = if rest.starts_with('[') {
            let end = rest.find(']').unwrap_or(rest.len());
            rest[1..end].split(',').map(str::trim).collect::<Vec<_>>()
        } else if rest.starts_with('\n') && listed {
            // A block list: the `- item` lines that follow.
            rest.lines().skip(1).map_while(|l| l.trim_start().strip_prefix("- ")).collect()
        } else {
            let end = rest.find(['\n', ',', '}']).unwrap_or(rest.len());
            vec![rest[..end].trim()]
        };
        for value in values {
            // Map items of `api_keys` are picked up by their own `key:`.
            if value.starts_with('{') || value.contains(':') {
                continue;
            }
            let value = value.trim_matches(|c| c == '"' || c == '\'');
            if name == "key_file" {
                plant_pem_body(Path::new(value));
            } else {
                plant(value);
            }
        }
    }
}

/// Plants each base64 line of a PEM file (a private key's body).
fn plant_pem_body(path: &Path) {
    if let Ok(pem) = std::fs::read_to_string(path) {
        pem.lines().filter(|l| !l.starts_with("-----")).for_each(plant);
    }
}

/// What a gateway's sweep needs besides its logs: where its files and config are, and what
/// it found in logs a test took out already. Kept in a registry by the gateway's address
/// rather than in [`Gateway`], so that code building a `Gateway` itself (tests/src/disk.rs)
/// needs no change; such a gateway is swept without files and management status.
#[derive(Debug, Default)]
struct Outputs {
    dir: Option<PathBuf>,
    config: Option<PathBuf>,
    drained: Drained,
}

#[derive(Debug, Default)]
struct Drained {
    bytes: usize,
    hits: Vec<Hit>,
    metrics: Option<(SocketAddr, String)>,
}

static OUTPUTS: Mutex<Vec<(SocketAddr, Outputs)>> = Mutex::new(Vec::new());

/// Runs `f` on the registry entry of the gateway at `addr` (created empty when missing).
fn with_outputs<T>(addr: SocketAddr, f: impl FnOnce(&mut Outputs) -> T) -> T {
    let mut all = OUTPUTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, outputs)) = all.iter_mut().find(|(a, _)| *a == addr) {
        return f(outputs);
    }
    all.push((addr, Outputs::default()));
    let last = all.len() - 1;
    f(&mut all[last].1)
}

/// Registers the gateway at `addr`, started from `config` in the harness directory `dir`,
/// and plants what the config holds now (the sweep reads it again at the end).
pub(crate) fn register(addr: SocketAddr, dir: &Path, config: &Path) {
    if let Ok(yaml) = std::fs::read_to_string(config) {
        plant_from_config(&yaml);
    }
    with_outputs(addr, |outputs| {
        *outputs = Outputs {
            dir: Some(dir.to_owned()),
            config: Some(config.to_owned()),
            drained: Drained::default(),
        };
    });
}

/// The metrics listener's address and path, from its `metrics listening` log line.
fn metrics_listener(logs: &str) -> Option<(SocketAddr, String)> {
    logs.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find_map(|entry| {
        (entry["msg"] == "metrics listening").then(|| {
            let addr = entry["addr"].as_str()?.parse().ok()?;
            Some((addr, entry["path"].as_str().unwrap_or("/metrics").to_owned()))
        })?
    })
}

/// The output files under `dir`, recursively.
fn output_files(dir: &Path, config: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            output_files(&path, config, out);
        } else if path != config
            && (name.contains(".log")
                || name.ends_with(".jsonl")
                || name.starts_with(".state")
                || name == ".last-used.json"
                || name == ".key-usage.json")
        {
            out.push(path);
        }
    }
}

/// A plain-HTTP GET with a short timeout; the whole answer, or `None`.
fn http_get(addr: SocketAddr, path: &str, header: Option<(&str, &str)>) -> Option<Vec<u8>> {
    let timeout = Duration::from_secs(3);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    let extra = header.map(|(n, v)| format!("{n}: {v}\r\n")).unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: sweep\r\n{extra}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer.starts_with(b"HTTP/1.1 ").then_some(answer)
}

/// The management key of the config file, if it sets one.
fn management_key(yaml: &str) -> Option<String> {
    let at = yaml.find("secret_key:")? + "secret_key:".len();
    let rest = yaml[at..].trim_start();
    let end = rest.find(['\n', ',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim().trim_matches(|c| c == '"' || c == '\'').to_owned())
        .filter(|k| !k.is_empty() && !k.contains("${"))
}

impl Gateway {
    /// Takes out everything the process wrote so far (stderr and stdout), after searching it
    /// for planted secrets (the hits fail the test when the gateway is dropped); later
    /// [`Gateway::logs`] calls see only what comes after. For tests that send hundreds of
    /// thousands of requests, so that the test process does not hold a log line per request.
    pub fn drain_logs(&self) -> String {
        let logs = std::mem::take(&mut *self.logs.lock().expect("logs"));
        let hits = scan("logs (drained)", logs.as_bytes(), &planted());
        with_outputs(self.addr, |outputs| {
            let drained = &mut outputs.drained;
            drained.bytes += logs.len();
            drained.hits.extend(hits);
            if drained.metrics.is_none() {
                drained.metrics = metrics_listener(&logs);
            }
        });
        logs
    }

    /// Searches everything the gateway has shown so far for planted secrets: its output, its
    /// log and bookkeeping files and, while it runs, `/metrics` and the management status.
    /// Returns the bytes scanned and the hits.
    pub fn sweep(&mut self) -> (usize, Vec<Hit>) {
        let (dir, config, mut bytes, mut hits, metrics) = with_outputs(self.addr, |o| {
            let drained = &o.drained;
            (
                o.dir.clone(),
                o.config.clone(),
                drained.bytes,
                drained.hits.clone(),
                drained.metrics.clone(),
            )
        });
        let yaml =
            config.as_ref().and_then(|c| std::fs::read_to_string(c).ok()).unwrap_or_default();
        plant_from_config(&yaml);
        let secrets = planted();
        let logs = self.logs();
        bytes += logs.len();
        hits.extend(scan("logs", logs.as_bytes(), &secrets));
        let mut files = Vec::new();
        if let (Some(dir), Some(config)) = (&dir, &config) {
            output_files(dir, config, &mut files);
        }
        for file in files {
            if let Ok(content) = std::fs::read(&file) {
                bytes += content.len();
                hits.extend(scan(&file.display().to_string(), &content, &secrets));
            }
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            if let Some((addr, path)) = metrics.or_else(|| metrics_listener(&logs))
                && let Some(answer) = http_get(addr, &path, None)
            {
                bytes += answer.len();
                hits.extend(scan(&path, &answer, &secrets));
            }
            if let Some(key) = management_key(&yaml)
                && let Some(answer) =
                    http_get(self.addr, "/v0/management/status", Some(("x-management-key", &key)))
            {
                bytes += answer.len();
                hits.extend(scan("/v0/management/status", &answer, &secrets));
            }
        }
        (bytes, hits)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // A failing test has said what failed; a second panic here would only abort.
        if std::thread::panicking() {
            self.reap();
            return;
        }
        let (bytes, hits) = self.sweep();
        self.reap();
        let addr = self.addr;
        OUTPUTS.lock().unwrap_or_else(|e| e.into_inner()).retain(|(a, _)| *a != addr);
        report::total(CATEGORY, "gateways swept after their tests", 1, "gateways");
        report::total(
            CATEGORY,
            "bytes of their output, files, metrics and status scanned",
            bytes as u64,
            "bytes",
        );
        report::total(
            CATEGORY,
            "searches (planted secrets × gateways)",
            planted().len() as u64,
            "searches",
        );
        report::total(CATEGORY, "hits in swept gateways", hits.len() as u64, "hits");
        assert!(hits.is_empty(), "planted secrets found in the gateway's outputs: {hits:#?}");
    }
}

impl Gateway {
    /// Kills the process and waits until it has exited. `kill_on_drop` alone only sends
    /// SIGKILL, and the next gateway or vault command a test starts on the same `auth.dir`
    /// must find the lock of the directory released, which the kernel does when the process
    /// exits. `WNOWAIT` leaves the exit status for tokio's reaper to collect.
    fn reap(&mut self) {
        let Some(pid) = self.child.id() else { return };
        if self.child.start_kill().is_err() {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
        let flags = nix::sys::wait::WaitPidFlag::WEXITED | nix::sys::wait::WaitPidFlag::WNOWAIT;
        let _ = nix::sys::wait::waitid(nix::sys::wait::Id::Pid(pid), flags);
    }
}

/// Searches everything `server` holds — each key's value read by its type, and its `DUMP` —
/// for every planted secret (SPEC §11: Redis never sees a plaintext token or key). One
/// figure per sweep goes to the test report, as for a gateway.
pub fn redis(server: &crate::redis_server::RedisServer) -> Vec<Hit> {
    let secrets = planted();
    let mut haystack = Vec::new();
    let keys = server.cli(&["--scan"]);
    for key in keys.lines().filter(|k| !k.is_empty()) {
        let kind = server.cli(&["TYPE", key]);
        let read: &[&str] = match kind.trim() {
            "string" => &["GET"],
            "hash" => &["HGETALL"],
            "set" => &["SMEMBERS"],
            "zset" => &["ZRANGE", "0", "-1", "WITHSCORES"],
            "list" => &["LRANGE", "0", "-1"],
            _ => &[],
        };
        if let Some((command, rest)) = read.split_first() {
            let mut args = vec![*command, key];
            args.extend_from_slice(rest);
            haystack.extend_from_slice(server.cli(&args).as_bytes());
        }
        haystack.extend_from_slice(key.as_bytes());
        haystack.extend_from_slice(server.cli(&["DUMP", key]).as_bytes());
    }
    report::total(CATEGORY, "bytes of Redis values scanned", haystack.len() as u64, "bytes");
    scan("redis", &haystack, &secrets)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "sk-sweep-unit-test-0123456789abcdef";

    #[test]
    fn a_secret_in_a_log_line_is_found_and_a_clean_log_passes() {
        let secrets = vec![SECRET.to_owned()];
        let clean = b"{\"level\":\"info\",\"msg\":\"request\",\"client\":\"e2e\",\"status\":401}\n";
        assert!(scan("logs", clean, &secrets).is_empty());
        let leaked = format!(
            "{{\"level\":\"warn\",\"msg\":\"upstream refused\",\"body\":\"bad token {SECRET}\"}}\n"
        );
        let hits = scan("logs", leaked.as_bytes(), &secrets);
        assert_eq!(hits.len(), 1, "{hits:?}");
        assert_eq!(hits[0].place, "logs");
        assert!(!hits[0].secret.contains(SECRET), "the hit shows the whole secret");
        // Binary files (the state database) are searched too.
        let mut binary = vec![0xff, 0x00, 0xfe];
        binary.extend_from_slice(SECRET.as_bytes());
        assert_eq!(scan("db", &binary, &secrets).len(), 1);
    }

    /// Every form a secret may leak in is found, from its encodings computed elsewhere
    /// (Python's `base64` and `urllib.parse.quote`), and what is not a form of it is not.
    #[test]
    fn truncated_and_encoded_forms_of_a_secret_are_found() {
        let found = |haystack: &str, secret: &str| {
            let hits = scan("logs", haystack.as_bytes(), &[secret.to_owned()]);
            assert!(hits.len() <= 1, "{hits:?}");
            hits.first().map(|h| h.form)
        };
        // Cut short: 12 characters count, 11 do not.
        assert_eq!(found(&format!("key={}…", &SECRET[..16]), SECRET), Some("plain"));
        assert_eq!(found(&format!("key={}…", &SECRET[..12]), SECRET), Some("plain"));
        assert_eq!(found(&format!("key={}…", &SECRET[..11]), SECRET), None);
        // base64 of the secret after 0, 1 and 2 other bytes, and of its first 12 bytes alone.
        for encoded in [
            "c2stc3dlZXAtdW5pdC10ZXN0LTAxMjM0NTY3ODlhYmNkZWY=",
            "YXNrLXN3ZWVwLXVuaXQtdGVzdC0wMTIzNDU2Nzg5YWJjZGVm",
            "YWJzay1zd2VlcC11bml0LXRlc3QtMDEyMzQ1Njc4OWFiY2RlZg==",
            "c2stc3dlZXAtdW5p",
        ] {
            assert_eq!(found(&format!("Basic {encoded}"), SECRET), Some("base64"), "{encoded}");
        }
        // A secret whose base64 has `+` and `/`, which the URL-safe alphabet writes `-` and
        // `_`, and which percent-encoding changes (`?`).
        let odd = "~~~~~~sweep?~~~unit-test-0123456789";
        for (encoded, form) in [
            ("fn5+fn5+c3dlZXA/fn5+dW5pdC10ZXN0LTAxMjM0NTY3ODk=", "base64"),
            ("YX5+fn5+fnN3ZWVwP35+fnVuaXQtdGVzdC0wMTIzNDU2Nzg5", "base64"),
            ("YWJ+fn5+fn5zd2VlcD9+fn51bml0LXRlc3QtMDEyMzQ1Njc4OQ==", "base64"),
            ("fn5-fn5-c3dlZXA_fn5-dW5pdC10ZXN0LTAxMjM0NTY3ODk=", "base64url"),
            ("YX5-fn5-fnN3ZWVwP35-fnVuaXQtdGVzdC0wMTIzNDU2Nzg5", "base64url"),
            ("YWJ-fn5-fn5zd2VlcD9-fn51bml0LXRlc3QtMDEyMzQ1Njc4OQ==", "base64url"),
            ("~~~~~~sweep%3F~~~unit-test-0123456789", "percent-encoded"),
            ("~~~~~~sweep%3f~~~unit-test-0123456789", "percent-encoded"),
        ] {
            assert_eq!(found(&format!("x={encoded}&y=1"), odd), Some(form), "{encoded}");
        }
        // JSON-escaped: as serde_json writes it, with `\/`, and with `\u00XX` escapes.
        let quoted = "sk/sweep\"unit\\test-0123456789";
        let json = serde_json::json!({"message": format!("bad key {quoted}")}).to_string();
        assert!(!json.contains(quoted), "{json}");
        assert_eq!(found(&json, quoted), Some("JSON-escaped"));
        let slashed = r#"{"message":"bad key sk\/sweep\"unit\\test-01"}"#;
        assert_eq!(found(slashed, quoted), Some("JSON-escaped"));
        let unicode = r#"{"message":"sk\u002fsweep\u0022unit\u005ctest"}"#;
        assert_eq!(found(unicode, quoted), Some("JSON-escaped"));
        // The same shapes around a secret that differs within its first 12 characters (the
        // text holds its first 9, its base64 encodes another secret) are not a hit.
        let other = "c2stc3dlZXAtdW5pdC10ZXN0LTAxMjM0NTY3ODlhYmNkZWY=";
        assert_eq!(found(&format!("{other} sk-sweep-unit-tes"), "sk-sweep-Unit-test-0123"), None);
    }

    #[test]
    fn the_config_reader_plants_keys_tokens_and_lists_but_not_placeholders_or_names() {
        let yaml = "auth:\n  api_keys:\n    - {name: e2e, key: \"cpk-config-reader-key-1\"}\n    - \"cpk-config-reader-key-2\"\n  \
                    encryption: {enabled: true, key: \"enc-config-reader-key-3\", previous_keys: [\"enc-config-reader-old-4\", \"${OLD}\"]}\n\
                    management: {secret_key: cpm-config-reader-key-5}\nproviders:\n  p: {type: openai, api_key: \"${TOKEN_6}\"}\n";
        plant_from_config(yaml);
        let planted = planted();
        for secret in [
            "cpk-config-reader-key-1",
            "cpk-config-reader-key-2",
            "enc-config-reader-key-3",
            "enc-config-reader-old-4",
            "cpm-config-reader-key-5",
        ] {
            assert!(planted.iter().any(|p| p == secret), "{secret} not planted: {planted:?}");
        }
        assert!(!planted.iter().any(|p| p.contains("${") || p == "e2e" || p == "openai"));
    }
}
