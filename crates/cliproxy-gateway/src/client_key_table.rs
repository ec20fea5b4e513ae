//! The client keys in force: the config file's (`auth.api_keys`, read-only at run time) and
//! the ones created at run time (kept in the state store by the management API and
//! `cliproxy-server keys`), in one table that is swapped whole. A request hashes the key it
//! presents once and finds its owner with a constant-time scan of the config file's few
//! digests and one hash-map lookup among the run-time ones.
//!
//! The table is rebuilt off the request path: at start, after every management write (once
//! the write is durable), on a config reload, and when the state store's copy changed
//! (another process, `cliproxy-server keys`, writes the same file; the server re-reads it
//! every second). Each rebuild hands the limits of every key to the admission.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use cliproxy_core::format_utc;
use cliproxy_core::money::format_usd;
use cliproxy_netguard::{LimitTable, Limits, StoredClientKey};
use cliproxy_vault::{
    ClientIdentity, ClientKeyRecord, ClientKeys, Error as VaultError, KeyRecordProblem,
    digest_bytes, key_sha256,
};
use serde_json::{Value, json};
use slog::{Logger, info, warn};

use cliproxy_audit::{Event, What};

use crate::guard::Guard;

/// What a presented key is.
#[derive(Debug)]
pub(crate) enum KeyCheck {
    /// A key in force, and who it belongs to.
    Valid(Arc<ClientIdentity>),
    /// A run-time key that is disabled.
    Disabled,
    /// A run-time key that expired at these Unix seconds.
    Expired(u64),
    /// No key in force.
    Unknown,
}

/// A run-time key as the request path checks it: who it is, and what may refuse it now.
#[derive(Debug)]
struct RuntimeKey {
    identity: Arc<ClientIdentity>,
    disabled: bool,
    expires_at: Option<u64>,
}

/// The client keys in force at one moment.
///
/// # Why the lookup of run-time keys by digest is safe
///
/// Run-time keys are found by a hash-map lookup keyed by the SHA-256 digest of the presented
/// key, which is not a constant-time comparison: how long the lookup takes may depend on the
/// digest (its bucket, how many of its bytes match a stored one). But the timing can only
/// tell an attacker something about digests, and an attacker chooses the key, not the digest:
/// to steer a presented key's digest towards a stored one, byte by byte, they would have to
/// find keys with chosen digest prefixes and, in the end, a key with a given digest — a
/// preimage attack on SHA-256. Learning a stored digest outright would not help either: a key
/// is 192 random bits, so the digest cannot be reversed by guessing. The keys themselves
/// never meet a comparison whose timing depends on them. The config file's keys are compared
/// digest against digest in constant time all the same (`ClientKeys::authenticate_digest`),
/// as they always were, since they may be short human-chosen strings.
#[derive(Debug)]
pub(crate) struct KeyTable {
    config: Arc<ClientKeys>,
    runtime: HashMap<[u8; 32], RuntimeKey>,
    /// The run-time records in force, by name (for the management routes).
    records: BTreeMap<String, ClientKeyRecord>,
    /// The stored rows the run-time part was built from, to tell whether a re-read changed
    /// anything.
    stored: Vec<StoredClientKey>,
}

impl KeyTable {
    /// The table of `config` and the stored run-time keys `stored`. A record that cannot be
    /// read, or whose name a config key or an older record already has, is skipped with a
    /// warning naming its id (never its content).
    fn build(config: Arc<ClientKeys>, mut stored: Vec<StoredClientKey>, log: &Logger) -> Self {
        stored.sort_by(|a, b| a.id.cmp(&b.id));
        let mut records: Vec<ClientKeyRecord> = Vec::with_capacity(stored.len());
        for row in &stored {
            match ClientKeyRecord::from_stored(&row.id, &row.digest, &row.record_json) {
                Ok(record) => records.push(record),
                Err(error) => warn!(log, "a stored client key record is skipped";
                    "id" => &row.id, "reason" => record_problem(&error)),
            }
        }
        // The oldest of two records with one name keeps it, so that a key created later by
        // a process that raced another cannot take over the name.
        records.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        let mut table = Self { config, stored, runtime: HashMap::new(), records: BTreeMap::new() };
        for record in records {
            if table.is_config_key(&record.name) || table.records.contains_key(&record.name) {
                warn!(log, "a stored client key is skipped: its name is taken";
                    "id" => &record.id, "name" => &record.name);
                continue;
            }
            let Some(digest) = digest_bytes(&record.digest) else { continue };
            table.runtime.insert(
                digest,
                RuntimeKey {
                    identity: Arc::new(ClientIdentity::from_record(&record)),
                    disabled: record.disabled,
                    expires_at: record.expires_at,
                },
            );
            table.records.insert(record.name.clone(), record);
        }
        table
    }

    /// Who `presented` belongs to at the time `now` gives (Unix seconds; asked only for a
    /// run-time key that expires). The key is hashed once; the config file's digests are
    /// scanned in constant time, then the run-time ones are one hash-map lookup by digest
    /// (see the type's documentation for why that is safe). No allocation, no lock.
    pub(crate) fn check(&self, presented: &[u8], now: impl FnOnce() -> u64) -> KeyCheck {
        let digest = key_sha256(presented);
        if let Some(identity) = self.config.authenticate_digest(&digest) {
            return KeyCheck::Valid(identity);
        }
        match self.runtime.get(&digest) {
            None => KeyCheck::Unknown,
            Some(key) if key.disabled => KeyCheck::Disabled,
            Some(RuntimeKey { expires_at: Some(at), .. }) if now() >= *at => KeyCheck::Expired(*at),
            Some(key) => KeyCheck::Valid(Arc::clone(&key.identity)),
        }
    }

    /// How many keys are in force, config and run-time.
    /// The client keys created at run time, as the state store holds them.
    pub(crate) fn stored(&self) -> &[StoredClientKey] {
        &self.stored
    }

    pub(crate) fn len(&self) -> usize {
        self.config.len() + self.runtime.len()
    }

    /// Whether no key at all is in force (every proxy request is then refused).
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The config file's keys.
    pub(crate) fn config(&self) -> &ClientKeys {
        &self.config
    }

    /// Whether `name` is a config file key's.
    pub(crate) fn is_config_key(&self, name: &str) -> bool {
        self.config.identities().any(|identity| identity.name == name)
    }

    /// The run-time record named `name`.
    pub(crate) fn record(&self, name: &str) -> Option<&ClientKeyRecord> {
        self.records.get(name)
    }

    /// The run-time records, by name.
    pub(crate) fn records(&self) -> impl Iterator<Item = &ClientKeyRecord> {
        self.records.values()
    }

    /// The limits of every key, config and run-time, as the admission takes them.
    pub(crate) fn limit_table(&self) -> LimitTable {
        let mut table = crate::guard::client_limit_table(&self.config);
        for record in self.records.values() {
            table.insert(
                record.name.clone(),
                Limits::new(record.rate_limit, record.quota).with_budget(record.budget),
            );
        }
        table
    }
}

/// The keys in force, swapped whole: a request is checked against the table of the moment
/// it arrived, without a lock. Those who build a new table (the config reload, the re-read of
/// the state store, the management writes) take turns, each building on the one in force.
pub(crate) struct ClientKeyCell {
    table: ArcSwap<KeyTable>,
    build: Mutex<()>,
    /// Whether the last read of the state store failed (logged once per failure).
    read_failing: AtomicBool,
    /// Management writes take turns, so that a name checked free is still free when the
    /// record is stored.
    pub(crate) writes: tokio::sync::Mutex<()>,
}

impl ClientKeyCell {
    /// The cell with the config file's keys and the stored run-time keys.
    pub(crate) fn new(config: ClientKeys, stored: Vec<StoredClientKey>, log: &Logger) -> Self {
        Self {
            table: ArcSwap::from_pointee(KeyTable::build(Arc::new(config), stored, log)),
            build: Mutex::new(()),
            read_failing: AtomicBool::new(false),
            writes: tokio::sync::Mutex::new(()),
        }
    }

    /// The keys in force.
    pub(crate) fn load(&self) -> Arc<KeyTable> {
        self.table.load_full()
    }

    /// The keys in force, for the request path: `arc-swap`'s guard, which does not touch the
    /// table's reference count (no cache line shared by every request).
    pub(crate) fn current(&self) -> arc_swap::Guard<Arc<KeyTable>> {
        self.table.load()
    }

    /// The table that `config` would make with the run-time keys in force (for a reload's
    /// check of the limits before it applies anything).
    pub(crate) fn with_config(&self, config: Arc<ClientKeys>, log: &Logger) -> KeyTable {
        KeyTable::build(config, self.load().stored.clone(), log)
    }

    /// Puts reloaded config file keys in force beside the run-time keys: the next request is
    /// checked against them.
    pub(crate) fn replace(&self, config: Arc<ClientKeys>, log: &Logger) {
        let _turn = self.build.lock().unwrap_or_else(PoisonError::into_inner);
        let stored = self.load().stored.clone();
        self.table.store(Arc::new(KeyTable::build(config, stored, log)));
    }

    /// Puts the run-time keys `stored` (a fresh read of the state store) in force, if they
    /// differ from the ones in force; returns the new table and what changed, by key, when
    /// it changed.
    pub(crate) fn put_stored(
        &self,
        mut stored: Vec<StoredClientKey>,
        log: &Logger,
    ) -> Option<(Arc<KeyTable>, Vec<KeyChange>)> {
        stored.sort_by(|a, b| a.id.cmp(&b.id));
        let _turn = self.build.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.load();
        if current.stored == stored {
            return None;
        }
        let table = Arc::new(KeyTable::build(current.config.clone(), stored, log));
        info!(log, "client keys created at run time changed"; "run_time_keys" => table.records.len());
        self.table.store(table.clone());
        let changes = key_changes(&current, &table);
        Some((table, changes))
    }
}

/// One run-time key that a re-read of the state store found created, changed or revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyChange {
    /// `client_key_create`, `client_key_change` or `client_key_revoke`, the actions the
    /// management routes audit the same changes under.
    pub(crate) action: &'static str,
    /// The key's name.
    pub(crate) name: String,
    /// The record's id.
    pub(crate) id: String,
}

/// What differs between the run-time keys of `before` and `after`, by record id.
fn key_changes(before: &KeyTable, after: &KeyTable) -> Vec<KeyChange> {
    let by_id = |table: &KeyTable| -> BTreeMap<String, ClientKeyRecord> {
        table.records.values().map(|r| (r.id.clone(), r.clone())).collect()
    };
    let (old, new) = (by_id(before), by_id(after));
    let change = |action, record: &ClientKeyRecord| KeyChange {
        action,
        name: record.name.clone(),
        id: record.id.clone(),
    };
    let mut changes: Vec<KeyChange> = Vec::new();
    for (id, record) in &new {
        match old.get(id) {
            None => changes.push(change("client_key_create", record)),
            Some(previous) if previous != record => {
                changes.push(change("client_key_change", record))
            }
            Some(_) => {}
        }
    }
    changes.extend(
        old.iter()
            .filter(|(id, _)| !new.contains_key(*id))
            .map(|(_, r)| change("client_key_revoke", r)),
    );
    changes
}

/// Whose change a re-read of the state store may find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// Another process or gateway wrote the store: each change found is audited here as a
    /// `config_change`, since this gateway's audit log has no other line for it.
    Elsewhere,
    /// This gateway's management route just wrote it, and audits it itself.
    ThisGateway,
}

impl ClientKeyCell {
    /// Reads the run-time keys from the state store and puts them in force when they changed,
    /// then hands the limits of every key to the admission. Blocking (it reads the
    /// database): called off the async workers. A failed read keeps the keys in force; it
    /// is logged once, and once more when reading works again.
    pub(crate) fn refresh(
        &self,
        guard: &Guard,
        log: &Logger,
        source: Source,
    ) -> Result<(), String> {
        let stored = match guard.state.load_client_keys() {
            Ok(stored) => {
                if self.read_failing.swap(false, Ordering::Relaxed) {
                    info!(log, "the client keys can be read from the state store again");
                }
                stored
            }
            Err(error) => {
                let why = crate::netguard_error(&error);
                if !self.read_failing.swap(true, Ordering::Relaxed) {
                    warn!(log, "the client keys could not be read from the state store; the ones in force stay";
                        "error" => &why);
                }
                return Err(why);
            }
        };
        for notice in guard.state.take_notices() {
            warn!(log, "state store notice"; "detail" => notice);
        }
        if let Some((table, changes)) = self.put_stored(stored, log) {
            guard.put_client_limits(&table.limit_table());
            if source == Source::Elsewhere {
                for change in changes {
                    info!(log, "client key changed in the state store by another process";
                        "event_type" => "config_change", "action" => change.action,
                        "client_key" => &change.name, "id" => &change.id);
                    let mut details = serde_json::Map::new();
                    details.insert("client_key".to_owned(), json!(change.name));
                    details.insert("client_key_id".to_owned(), json!(change.id));
                    details.insert("source".to_owned(), json!("state_store"));
                    guard.emit(Event::new(What::ConfigChange {
                        action: change.action,
                        changed: vec!["client_keys".to_owned()],
                        details,
                        outcome: Ok(()),
                    }));
                }
            }
        }
        Ok(())
    }
}

/// The limits of every client key, the config file's (`config`) and the ones stored at run
/// time (`stored`, read as the gateway reads them: a damaged record or a taken name is left
/// out), by name: what the binary builds the admission with at start, so that the run-time
/// keys' limits are in force from the start.
pub fn client_limit_table_with_stored(
    config: ClientKeys,
    stored: Vec<StoredClientKey>,
) -> LimitTable {
    // The gateway logs what it skips when it builds its own table from the same rows.
    let quiet = Logger::root(slog::Discard, slog::o!());
    KeyTable::build(Arc::new(config), stored, &quiet).limit_table()
}

/// `path` with every segment that contains `cpk-` replaced by `[redacted]`: a run-time key
/// pasted into a URL (where a key's name goes, or anywhere) is not written to the access log
/// or the audit log. A path without one is returned as it is, without allocating.
pub(crate) fn redact_keys_in_path(path: &str) -> std::borrow::Cow<'_, str> {
    if !path.contains(cliproxy_vault::CLIENT_KEY_PREFIX) {
        return std::borrow::Cow::Borrowed(path);
    }
    let segments: Vec<&str> = path
        .split('/')
        .map(|segment| {
            if segment.contains(cliproxy_vault::CLIENT_KEY_PREFIX) { "[redacted]" } else { segment }
        })
        .collect();
    std::borrow::Cow::Owned(segments.join("/"))
}

/// A record's view for the management API and `keys list --json`: never the key, never its
/// digest.
pub fn client_key_view(record: &ClientKeyRecord) -> Value {
    json!({
        "source": "store",
        "id": record.id,
        "name": record.name,
        "hint": format!("{}{}\u{2026}", cliproxy_vault::CLIENT_KEY_PREFIX, record.hint),
        "models": record.models,
        "rate_limit": record.rate_limit,
        "quota": record.quota,
        "budget": record.budget.map(|budget| json!({
            "usd": format_usd(budget.micro_usd.get()),
            "period": budget.period.as_str(),
        })),
        "expires_at": record.expires_at.map(format_utc),
        "disabled": record.disabled,
        "created_at": format_utc(record.created_at),
    })
}

/// A config file key's view: its name, models and limits (it has no id, hint or budget).
pub fn config_key_view(identity: &ClientIdentity) -> Value {
    json!({
        "source": "config",
        "name": identity.name,
        "models": identity.models,
        "rate_limit": identity.rate_limit,
        "quota": identity.quota,
        "budget": null,
        "expires_at": null,
        "disabled": false,
    })
}

/// Why a stored record was skipped, without its content: the problems that would repeat a
/// name are named only by kind.
fn record_problem(error: &VaultError) -> String {
    match error {
        VaultError::KeyRecord { problem: KeyRecordProblem::InvalidName { reason, .. } } => {
            format!("the name {reason}")
        }
        other => crate::vault_error_message(other),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a failed expectation fails the test")]

    use cliproxy_vault::{ClientKeyConfig, ClientKeySpec};

    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn log() -> Logger {
        Logger::root(slog::Discard, slog::o!())
    }

    fn stored(spec: ClientKeySpec) -> (String, StoredClientKey) {
        let created = ClientKeyRecord::create(spec, NOW).unwrap();
        let record = created.record;
        let row = StoredClientKey {
            id: record.id.clone(),
            digest: record.digest.clone(),
            record_json: record.to_stored_json().unwrap(),
        };
        (created.key.expose().to_owned(), row)
    }

    fn config(keys: &[(&str, &str)]) -> ClientKeys {
        let keys: Vec<ClientKeyConfig> = keys
            .iter()
            .map(|(name, key)| serde_json::from_value(json!({"name": name, "key": key})).unwrap())
            .collect();
        ClientKeys::from_config(&keys).unwrap()
    }

    fn name(check: KeyCheck) -> String {
        match check {
            KeyCheck::Valid(identity) => identity.name.clone(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn config_and_run_time_keys_are_found_and_refused_as_they_should() {
        let (ci, ci_row) = stored(ClientKeySpec::new("ci"));
        let mut off = ClientKeySpec::new("off");
        off.disabled = true;
        let (off, off_row) = stored(off);
        let mut brief = ClientKeySpec::new("brief");
        brief.expires_at = Some(NOW + 10);
        let (brief, brief_row) = stored(brief);
        let cell = ClientKeyCell::new(
            config(&[("file", "file-key-0123456789abcdef")]),
            vec![ci_row, off_row, brief_row],
            &log(),
        );
        let table = cell.load();
        assert_eq!(table.len(), 4);
        assert_eq!(name(table.check(b"file-key-0123456789abcdef", || NOW)), "file");
        assert_eq!(name(table.check(ci.as_bytes(), || NOW)), "ci");
        assert_eq!(name(table.check(brief.as_bytes(), || NOW + 9)), "brief");
        assert!(
            matches!(table.check(brief.as_bytes(), || NOW + 10), KeyCheck::Expired(at) if at == NOW + 10)
        );
        assert!(matches!(table.check(off.as_bytes(), || NOW), KeyCheck::Disabled));
        assert!(matches!(table.check(&ci.as_bytes()[..51], || NOW), KeyCheck::Unknown));
        assert!(matches!(table.check(b"", || NOW), KeyCheck::Unknown));
    }

    #[test]
    fn a_name_is_unique_across_config_and_run_time_keys() {
        let (taken, taken_row) = stored(ClientKeySpec::new("file"));
        let (first, first_row) = stored(ClientKeySpec::new("twice"));
        let (second, mut second_row) = stored(ClientKeySpec::new("twice"));
        // The second is created later; the first keeps the name.
        second_row.record_json = second_row
            .record_json
            .replace(&format!("\"created_at\":{NOW}"), &format!("\"created_at\":{}", NOW + 1));
        let cell = ClientKeyCell::new(
            config(&[("file", "file-key-0123456789abcdef")]),
            vec![second_row, taken_row, first_row],
            &log(),
        );
        let table = cell.load();
        assert!(matches!(table.check(taken.as_bytes(), || NOW), KeyCheck::Unknown));
        assert_eq!(name(table.check(first.as_bytes(), || NOW)), "twice");
        assert!(matches!(table.check(second.as_bytes(), || NOW), KeyCheck::Unknown));
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn a_re_read_names_each_key_created_changed_or_revoked() {
        let (_, a_row) = stored(ClientKeySpec::new("a"));
        let (_, b_row) = stored(ClientKeySpec::new("b"));
        let cell = ClientKeyCell::new(config(&[]), vec![a_row.clone()], &log());
        let actions = |changes: Vec<KeyChange>| -> Vec<(&'static str, String)> {
            changes.into_iter().map(|c| (c.action, c.name)).collect()
        };
        let (_, changes) = cell.put_stored(vec![a_row.clone(), b_row.clone()], &log()).unwrap();
        assert_eq!(actions(changes), [("client_key_create", "b".to_owned())]);
        let mut disabled = b_row.clone();
        disabled.record_json =
            disabled.record_json.replace("\"disabled\":false", "\"disabled\":true");
        assert_ne!(disabled.record_json, b_row.record_json);
        let (_, changes) = cell.put_stored(vec![a_row.clone(), disabled], &log()).unwrap();
        assert_eq!(actions(changes), [("client_key_change", "b".to_owned())]);
        let (_, changes) = cell.put_stored(vec![], &log()).unwrap();
        let mut changes = actions(changes);
        changes.sort();
        assert_eq!(
            changes,
            [("client_key_revoke", "a".to_owned()), ("client_key_revoke", "b".to_owned())]
        );
    }

    #[test]
    fn a_re_read_swaps_only_when_the_store_changed_and_keeps_the_config_keys() {
        let (ci, ci_row) = stored(ClientKeySpec::new("ci"));
        let cell = ClientKeyCell::new(config(&[]), vec![], &log());
        assert!(cell.load().is_empty());
        assert!(cell.put_stored(vec![ci_row.clone()], &log()).is_some());
        assert!(cell.put_stored(vec![ci_row.clone()], &log()).is_none());
        assert_eq!(name(cell.load().check(ci.as_bytes(), || NOW)), "ci");
        cell.replace(Arc::new(config(&[("file", "file-key-0123456789abcdef")])), &log());
        assert_eq!(name(cell.load().check(ci.as_bytes(), || NOW)), "ci");
        assert!(cell.put_stored(vec![], &log()).is_some());
        let table = cell.load();
        assert!(matches!(table.check(ci.as_bytes(), || NOW), KeyCheck::Unknown));
        assert_eq!(name(table.check(b"file-key-0123456789abcdef", || NOW)), "file");
    }

    #[test]
    fn a_damaged_record_is_skipped_and_the_others_stay() {
        let (ci, ci_row) = stored(ClientKeySpec::new("ci"));
        let (_, mut torn) = stored(ClientKeySpec::new("torn"));
        torn.record_json.truncate(20);
        let cell = ClientKeyCell::new(config(&[]), vec![torn, ci_row], &log());
        let table = cell.load();
        assert_eq!(table.len(), 1);
        assert_eq!(name(table.check(ci.as_bytes(), || NOW)), "ci");
    }

    #[test]
    fn keys_in_paths_are_redacted() {
        assert_eq!(redact_keys_in_path("/v1/chat/completions"), "/v1/chat/completions");
        assert_eq!(
            redact_keys_in_path("/v0/management/client-keys/cpk-0123abcd"),
            "/v0/management/client-keys/[redacted]"
        );
        // Anywhere in a segment: `Bearer%20cpk-…` or `team-cpk-…` carry a key all the same.
        assert_eq!(redact_keys_in_path("/a/cpk-1/b/xcpk-2/c"), "/a/[redacted]/b/[redacted]/c");
    }

    #[test]
    fn the_view_shows_the_hint_and_budget_never_the_key_or_digest() {
        let mut spec = ClientKeySpec::new("ci");
        spec.budget = Some(cliproxy_core::Budget::new(
            cliproxy_core::QuotaPeriod::Daily,
            std::num::NonZeroU64::new(10_000).unwrap(),
        ));
        let created = ClientKeyRecord::create(spec, NOW).unwrap();
        let view = client_key_view(&created.record);
        let text = view.to_string();
        assert_eq!(view["hint"], json!(format!("{}\u{2026}", &created.key.expose()[..12])));
        assert_eq!(view["budget"], json!({"usd": "0.010000", "period": "daily"}));
        assert!(!text.contains(created.key.expose()), "{text}");
        assert!(!text.contains(&created.record.digest), "{text}");
        assert!(!text.contains(&created.key.expose()[12..]), "{text}");
    }
}
