//! The credentials in a Redis server that several processes share (`auth.store: redis`, SPEC
//! §11): the same records as the files, sealed the same way, so that Redis never holds a
//! token in the clear.
//!
//! Keys, all under the prefix the program gives (`cliproxy:` by default):
//!
//! - `vault:cred:<id>`: the document a credential file would hold, byte for byte (version 2,
//!   AES-256-GCM under the current data key, the id as associated data, the key id in clear,
//!   a fresh nonce per write). A store without a current data key is refused at opening: a
//!   server reached over the network is not where plaintext tokens belong.
//! - `vault:ids`: the set of credential ids, changed with the record in the same script, so
//!   that listing never scans the keyspace.
//! - `vault:key-usage`: writes per data key (the nonce budget), counted by the script that
//!   writes, so that two processes never both take the last write.
//! - `vault:last-used`: a hash of id to unix seconds, for listings.
//! - `vault:fingerprint`: the device fingerprint, set once (`SET NX`) so that every instance
//!   sends the same.
//! - `vault:refresh:<id>`: the lease of the one instance refreshing an OAuth credential
//!   (`SET NX PX`), given back by a compare-and-delete of its own random token.
//!
//! Every put and delete publishes the id on the channel `vault:changes`, which
//! [`CredentialStore::watch`] follows.
//!
//! The vault has no async runtime: calls use the synchronous client on a few pooled
//! connections, each call bounded by the timeout (connection, request and answer together).
//! Errors are [`Error::Redis`], whose text is the client's and never holds the server's URL
//! or password.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::credential::{MAX_FILE_BYTES, validate_name};
use crate::crypto::Keyring;
use crate::fingerprint;
use crate::lease::{ChangeHandler, RefreshLease, Watcher};
use crate::store::{
    KEY_WRITES_MAX, Plaintext, key_near_limit, open_record, refuse_exhausted_key, unreadable_entry,
};
use crate::{
    Credential, CredentialMeta, CredentialStore, Error, ListEntry, Notice, Protection, Reencrypted,
    Result,
};

/// At most this many idle connections are kept: the vault is off the request path, and a
/// gateway makes few calls at once.
const POOL_SIZE: usize = 4;
/// How often the watcher's thread looks whether its [`Watcher`] was dropped: a subscriber's
/// blocking read has no other way to be woken.
const WATCH_POLL: Duration = Duration::from_millis(200);
/// The first wait before the watcher reconnects; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two reconnection attempts of the watcher.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How many times a re-encryption reads a record again when it changed under it.
const REWRITE_ATTEMPTS: usize = 5;

/// Stores one sealed record, its id in the index, counts the write under its data key and
/// publishes the id, in one step. With `ARGV[6] == "1"` only when the record still is
/// `ARGV[5]` (a re-encryption must not roll back what changed since it read). Answers
/// `{1, writes}`, `{0, writes}` (the key is spent: nothing written) or `{2, 0}` (changed).
const PUT: &str = r"
if ARGV[6] == '1' and redis.call('GET', KEYS[1]) ~= ARGV[5] then
  return {2, 0}
end
local writes = tonumber(redis.call('HGET', KEYS[3], ARGV[3]) or '0') or 0
if writes >= tonumber(ARGV[4]) then
  return {0, writes}
end
writes = redis.call('HINCRBY', KEYS[3], ARGV[3], 1)
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[7], ARGV[1])
return {1, writes}
";

/// Removes a record, its id from the index and its last use, and publishes the id when there
/// was something to remove.
const DELETE: &str = r"
local removed = redis.call('DEL', KEYS[1]) + redis.call('SREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
if removed > 0 then
  redis.call('PUBLISH', ARGV[2], ARGV[1])
  return 1
end
return 0
";

/// Reads records without trusting them: two strings per key, `value` and the record, `none`,
/// `type` and the Redis type of something that is not a string, or `big` and the length of a
/// record larger than `ARGV[1]` (which is never sent).
const READ: &str = r"
local out = {}
for _, key in ipairs(KEYS) do
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'none' then
    out[#out + 1] = 'none'; out[#out + 1] = ''
  elseif kind ~= 'string' then
    out[#out + 1] = 'type'; out[#out + 1] = kind
  else
    local length = redis.call('STRLEN', key)
    if length > tonumber(ARGV[1]) then
      out[#out + 1] = 'big'; out[#out + 1] = tostring(length)
    else
      out[#out + 1] = 'value'; out[#out + 1] = redis.call('GET', key)
    end
  end
end
return out
";

/// Keeps the latest use of each credential still in the index (`ARGV`: id, seconds, ...).
const RECORD_USE: &str = r"
for i = 1, #ARGV, 2 do
  if redis.call('SISMEMBER', KEYS[2], ARGV[i]) == 1 then
    local old = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0') or 0
    if tonumber(ARGV[i + 1]) > old then
      redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    end
  end
end
return 0
";

/// Gives a refresh lease back only while it is still this holder's: a lease that lapsed and
/// that another instance took since is left alone.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// How to open a [`RedisStore`], from plain values: the data keys (a current one is
/// required), whether plaintext records are refused, the key prefix and the timeout.
///
/// ```no_run
/// use cliproxy_core::Secret;
/// use cliproxy_vault::{CredentialStore, Keyring, RedisStoreOptions};
/// use std::time::Duration;
///
/// let key = Secret::from("q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=".to_owned());
/// let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
/// let store = RedisStoreOptions::new()
///     .keys(Keyring::from_secrets(Some(&key), &[]).unwrap())
///     .require_encrypted(true)
///     .key_prefix("cliproxy:")
///     .timeout(Duration::from_millis(200))
///     .open(client)
///     .unwrap();
/// store.check().unwrap();
/// ```
#[derive(Debug)]
#[must_use]
pub struct RedisStoreOptions {
    keys: Keyring,
    require_encrypted: bool,
    key_prefix: String,
    timeout: Duration,
}

impl Default for RedisStoreOptions {
    fn default() -> Self {
        Self {
            keys: Keyring::default(),
            require_encrypted: false,
            key_prefix: "cliproxy:".to_owned(),
            timeout: Duration::from_millis(200),
        }
    }
}

impl RedisStoreOptions {
    /// No keys yet (one must be given), plaintext records accepted when read, keys under
    /// `cliproxy:`, calls bounded by 200 ms.
    pub fn new() -> Self {
        Self::default()
    }

    /// The data keys: records are sealed under the current one (required); records under any
    /// of them are read.
    pub fn keys(mut self, keys: Keyring) -> Self {
        self.keys = keys;
        self
    }

    /// Refuse plaintext records when loading ([`Error::PlaintextRefused`]), as the file store
    /// refuses plaintext files: whoever can write to the server without holding a key could
    /// otherwise plant a token and a `base_url` of their choosing.
    pub fn require_encrypted(mut self, require: bool) -> Self {
        self.require_encrypted = require;
        self
    }

    /// What every key of the store starts with (the deployment's prefix, shared with the
    /// program's other keys).
    pub fn key_prefix(mut self, prefix: &str) -> Self {
        prefix.clone_into(&mut self.key_prefix);
        self
    }

    /// The longest a call may take, connecting included (at least 1 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The store on the server `client` points to. Nothing is connected yet:
    /// [`CredentialStore::check`] is the probe. [`Error::RedisNeedsEncryption`] without a
    /// current data key.
    pub fn open(self, client: redis::Client) -> Result<RedisStore> {
        if self.keys.current().is_none() {
            return Err(Error::RedisNeedsEncryption);
        }
        // A new connection announces the client's name and version (`CLIENT SETINFO`, two
        // answers awaited after the password's), and the read timeout bounds each answer, not
        // the whole: against a server that accepts and never answers, connecting would take
        // three timeouts. Without it there is at most one answer to wait for.
        let info = client.get_connection_info().clone();
        let settings = info.redis_settings().clone().set_skip_set_lib_name();
        let client = redis::Client::open(info.set_redis_settings(settings))
            .map_err(|e| redis_error("use the connection settings", &e))?;
        let location = PathBuf::from(format!("redis:{}vault", self.key_prefix));
        Ok(RedisStore {
            link: Arc::new(Link {
                client,
                timeout: self.timeout,
                prefix: self.key_prefix,
                idle: Mutex::new(Vec::new()),
                put: redis::Script::new(PUT),
                delete: redis::Script::new(DELETE),
                read: redis::Script::new(READ),
                record_use: redis::Script::new(RECORD_USE),
                release: redis::Script::new(RELEASE),
            }),
            keys: self.keys,
            require_encrypted: self.require_encrypted,
            location,
            notices: Arc::new(Mutex::new(Vec::new())),
        })
    }
}

/// One Redis key per credential, sealed exactly as a credential file is; see the module's
/// text for the keys and [`RedisStoreOptions`] to open one.
pub struct RedisStore {
    link: Arc<Link>,
    keys: Keyring,
    require_encrypted: bool,
    /// `redis:<prefix>vault`: what messages name (never the URL).
    location: PathBuf,
    /// Shared with the watcher's thread, which reports its outages here.
    notices: Arc<Mutex<Vec<Notice>>>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("location", &self.location)
            .field("timeout", &self.link.timeout)
            .finish_non_exhaustive()
    }
}

/// The connections and the scripts.
struct Link {
    client: redis::Client,
    timeout: Duration,
    prefix: String,
    idle: Mutex<Vec<redis::Connection>>,
    put: redis::Script,
    delete: redis::Script,
    read: redis::Script,
    record_use: redis::Script,
    release: redis::Script,
}

/// A record as [`READ`] answers it.
enum Fetched {
    Missing,
    Value(Zeroizing<Vec<u8>>),
    TooLarge(u64),
    WrongType(String),
}

impl Link {
    /// `prefix` + `vault:` + `name`.
    fn key(&self, name: &str) -> String {
        format!("{}vault:{name}", self.prefix)
    }

    fn cred_key(&self, id: &str) -> String {
        self.key(&format!("cred:{id}"))
    }

    /// Runs `call` on a pooled connection (or a new one) within the timeout. A pooled
    /// connection the server dropped (it restarted) is replaced once, within what is left of
    /// the timeout; a connection that failed is never pooled again.
    fn run<T>(
        &self,
        op: &'static str,
        mut call: impl FnMut(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T> {
        let started = Instant::now();
        let mut pooled = lock(&self.idle).pop();
        loop {
            let reused = pooled.is_some();
            let left =
                || self.timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(1));
            let mut connection = match pooled.take() {
                Some(connection) => connection,
                None => self
                    .client
                    .get_connection_with_timeout(left())
                    .map_err(|e| redis_error(op, &e))?,
            };
            connection
                .set_read_timeout(Some(left()))
                .and_then(|()| connection.set_write_timeout(Some(left())))
                .map_err(|e| redis_error(op, &e))?;
            match call(&mut connection) {
                Ok(value) => {
                    self.give_back(connection);
                    return Ok(value);
                }
                Err(e)
                    if reused && e.is_connection_dropped() && started.elapsed() < self.timeout =>
                {
                    // The server closed an idle connection (it restarted): one fresh try.
                }
                Err(e) if e.is_io_error() || e.is_timeout() || e.is_unrecoverable_error() => {
                    return Err(redis_error(op, &e));
                }
                Err(e) => {
                    // The server refused the command; the connection itself is sound.
                    self.give_back(connection);
                    return Err(redis_error(op, &e));
                }
            }
        }
    }

    fn give_back(&self, connection: redis::Connection) {
        let mut idle = lock(&self.idle);
        if idle.len() < POOL_SIZE {
            idle.push(connection);
        }
    }
}

impl RedisStore {
    /// The ids in the index, sorted.
    fn ids(&self) -> Result<Vec<String>> {
        let key = self.link.key("ids");
        let members: Vec<Vec<u8>> =
            self.link.run("list the credentials", |c| redis::cmd("SMEMBERS").arg(&key).query(c))?;
        let mut ids: Vec<String> =
            members.iter().map(|m| String::from_utf8_lossy(m).into_owned()).collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// The records of `ids` (valid names only), in one round trip.
    fn fetch(&self, ids: &[&str]) -> Result<Vec<Fetched>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.link.cred_key(id)).collect();
        let answer: Vec<Vec<u8>> = self.link.run("read the credentials", |c| {
            let mut invocation = self.link.read.prepare_invoke();
            for key in &keys {
                invocation.key(key);
            }
            invocation.arg(MAX_FILE_BYTES).invoke(c)
        })?;
        let malformed = || Error::Redis {
            op: "read the credentials",
            cause: "the server's answer has an unexpected shape".to_owned(),
        };
        if answer.len() != 2 * ids.len() {
            return Err(malformed());
        }
        let mut answer = answer.into_iter();
        let mut records = Vec::with_capacity(ids.len());
        while let (Some(kind), Some(payload)) = (answer.next(), answer.next()) {
            let payload = Zeroizing::new(payload);
            records.push(match kind.as_slice() {
                b"none" => Fetched::Missing,
                b"value" => Fetched::Value(payload),
                b"big" => Fetched::TooLarge(
                    std::str::from_utf8(&payload)
                        .ok()
                        .and_then(|n| n.parse().ok())
                        .ok_or_else(malformed)?,
                ),
                b"type" => Fetched::WrongType(String::from_utf8_lossy(&payload).into_owned()),
                _ => return Err(malformed()),
            });
        }
        Ok(records)
    }

    /// One record read as every store reads: `None` when there is none.
    fn decode(
        &self,
        id: &str,
        fetched: &Fetched,
        plaintext: Plaintext,
    ) -> Result<Option<(Credential, Protection)>> {
        let path = self.record_path(id);
        match fetched {
            Fetched::Missing => Ok(None),
            Fetched::TooLarge(size) => {
                Err(Error::TooLarge { path, size: *size, limit: MAX_FILE_BYTES })
            }
            Fetched::WrongType(kind) => Err(Error::Invalid {
                path,
                reason: format!(
                    "not a credential record (a Redis {}, not a string); delete it",
                    kind.chars().take(16).collect::<String>()
                ),
            }),
            Fetched::Value(bytes) => {
                let (credential, protection, notice) =
                    open_record(&self.keys, self.require_encrypted, plaintext, &path, id, bytes)?;
                if let Some(notice) = notice {
                    self.notice(notice);
                }
                Ok(Some((credential, protection)))
            }
        }
    }

    fn notice(&self, notice: Notice) {
        lock(&self.notices).push(notice);
    }

    fn last_used(&self) -> Result<BTreeMap<String, u64>> {
        let key = self.link.key("last-used");
        let raw: BTreeMap<String, String> = self
            .link
            .run("read the last-use times", |c| redis::cmd("HGETALL").arg(&key).query(c))?;
        // A value that is not a number (written by hand) only loses its listing.
        Ok(raw.into_iter().filter_map(|(id, at)| Some((id, at.parse().ok()?))).collect())
    }

    /// Seals `credential` under the current key and stores it with [`PUT`]; with `expected`,
    /// only when the record is still those bytes (`false` when it changed).
    fn store(&self, credential: &Credential, expected: Option<&[u8]>) -> Result<bool> {
        let Some(key) = self.keys.current() else { return Err(Error::RedisNeedsEncryption) };
        let bytes = credential.encode(Some(key))?;
        let record = self.link.cred_key(&credential.id);
        let (ids, usage, channel) =
            (self.link.key("ids"), self.link.key("key-usage"), self.link.key("changes"));
        let answer: Vec<u64> = self.link.run("store a credential", |c| {
            self.link
                .put
                .key(&record)
                .key(&ids)
                .key(&usage)
                .arg(&credential.id)
                .arg(bytes.as_slice())
                .arg(key.id())
                .arg(KEY_WRITES_MAX)
                .arg(expected.unwrap_or_default())
                .arg(if expected.is_some() { "1" } else { "0" })
                .arg(&channel)
                .invoke(c)
        })?;
        match answer.as_slice() {
            [1, writes] => {
                if let Some(notice) = key_near_limit(key.id(), *writes) {
                    self.notice(notice);
                }
                Ok(true)
            }
            [0, writes] => {
                // The script applied the shared limit (`KEY_WRITES_MAX`); the refusal is the
                // shared rule's own error.
                refuse_exhausted_key(key.id(), *writes)?;
                Err(Error::KeyExhausted { key_id: key.id().to_owned(), writes: *writes })
            }
            [2, _] => Ok(false),
            _ => Err(Error::Redis {
                op: "store a credential",
                cause: "the server's answer has an unexpected shape".to_owned(),
            }),
        }
    }

    /// Re-seals every record not under the current key; see `reencrypt` and `migrate`.
    fn rewrite(&self, plaintext: Plaintext) -> Result<Reencrypted> {
        let Some(current) = self.keys.current() else { return Err(Error::EncryptionDisabled) };
        // Read everything first: a record that does not decrypt (or a plaintext one refused)
        // stops the run before anything is rewritten. Only the ids are kept.
        let ids = self.ids()?;
        let valid: Vec<&str> = ids.iter().map(String::as_str).collect();
        for id in &valid {
            validate_name("credential id", id)?;
        }
        let fetched = self.fetch(&valid)?;
        let mut present = Vec::new();
        for (id, record) in valid.iter().zip(&fetched) {
            if self.decode(id, record, plaintext)?.is_some() {
                present.push(*id);
            }
        }
        drop(fetched);
        #[cfg(test)]
        tests::between_passes();
        let mut report = Reencrypted::default();
        for id in present {
            let mut attempts = 0;
            // Each record is read again right before it is rewritten, and written only if it
            // is still what was read: whatever changed it since (an OAuth refresh of another
            // instance, a delete) is kept, not undone.
            loop {
                attempts += 1;
                let fetched = self.fetch(&[id])?;
                let Some(record) = fetched.first() else { break };
                let Fetched::Value(raw) = record else {
                    // Gone since (or replaced by something unreadable, which the read says).
                    self.decode(id, record, plaintext)?;
                    break;
                };
                let Some((credential, protection)) = self.decode(id, record, plaintext)? else {
                    break;
                };
                if matches!(&protection, Protection::Encrypted(k) if k == current.id()) {
                    report.unchanged += 1;
                    break;
                }
                #[cfg(test)]
                tests::before_rewrite(id);
                if self.store(&credential, Some(raw))? {
                    if protection == Protection::Plaintext {
                        // The operator's last chance to notice a record they did not write:
                        // where its token will be sent.
                        self.notice(Notice::PlaintextTakenIn {
                            path: self.record_path(id),
                            provider: credential.provider.clone(),
                            base_url: credential.base_url.clone(),
                        });
                        report.from_plaintext.push(credential.id);
                    } else {
                        report.from_previous_key.push(credential.id);
                    }
                    break;
                }
                if attempts >= REWRITE_ATTEMPTS {
                    return Err(Error::Redis {
                        op: "re-encrypt the credentials",
                        cause: format!(
                            "credential `{id}` changed {REWRITE_ATTEMPTS} times while being re-encrypted; run it again"
                        ),
                    });
                }
            }
        }
        // "plaintext credential; migrate it", said by both reads, is what this run fixed.
        lock(&self.notices).retain(|n| !matches!(n, Notice::PlaintextWhileEncrypting { .. }));
        Ok(report)
    }
}

impl CredentialStore for RedisStore {
    fn list(&self) -> Result<Vec<CredentialMeta>> {
        let last_used = self.last_used()?;
        let ids = self.ids()?;
        for id in &ids {
            validate_name("credential id", id)?;
        }
        let valid: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut metas = Vec::new();
        for (id, record) in valid.iter().zip(self.fetch(&valid)?) {
            // A record gone between the index and the read was deleted concurrently.
            if let Some((credential, protection)) = self.decode(id, &record, Plaintext::Admit)? {
                let mut meta = credential.meta(self.record_path(id), protection);
                meta.last_used = last_used.get(id.to_owned()).copied();
                metas.push(meta);
            }
        }
        Ok(metas)
    }

    fn list_entries(&self) -> Result<Vec<ListEntry>> {
        let last_used = self.last_used()?;
        let ids = self.ids()?;
        let valid: Vec<&str> = ids
            .iter()
            .map(String::as_str)
            .filter(|id| validate_name("credential id", id).is_ok())
            .collect();
        let mut fetched: BTreeMap<&str, Fetched> =
            valid.iter().copied().zip(self.fetch(&valid)?).collect();
        let mut entries = Vec::new();
        for id in &ids {
            let read = match (validate_name("credential id", id), fetched.remove(id.as_str())) {
                (Err(error), _) => Err(error),
                (Ok(()), Some(record)) => self.decode(id, &record, Plaintext::Admit),
                (Ok(()), None) => Ok(None),
            };
            match read {
                Ok(None) => {}
                Ok(Some((credential, protection))) => {
                    let mut meta = credential.meta(self.record_path(id), protection);
                    meta.last_used = last_used.get(id).copied();
                    entries.push(ListEntry::Readable(meta));
                }
                Err(error) => entries.push(unreadable_entry(id, self.record_path(id), error)),
            }
        }
        Ok(entries)
    }

    fn entry(&self, id: &str) -> Result<Option<ListEntry>> {
        validate_name("credential id", id)?;
        let Some(record) = self.fetch(&[id])?.pop() else { return Ok(None) };
        Ok(match self.decode(id, &record, Plaintext::Admit) {
            Ok(None) => None,
            Ok(Some((credential, protection))) => {
                let mut meta = credential.meta(self.record_path(id), protection);
                meta.last_used = self.last_used()?.get(id).copied();
                Some(ListEntry::Readable(meta))
            }
            Err(error) => Some(unreadable_entry(id, self.record_path(id), error)),
        })
    }

    fn load_all(&self) -> Result<Vec<Credential>> {
        let ids = self.ids()?;
        for id in &ids {
            validate_name("credential id", id)?;
        }
        let valid: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut credentials = Vec::new();
        for (id, record) in valid.iter().zip(self.fetch(&valid)?) {
            if let Some((credential, _)) = self.decode(id, &record, Plaintext::Refuse)? {
                credentials.push(credential);
            }
        }
        Ok(credentials)
    }

    fn get(&self, id: &str) -> Result<Option<Credential>> {
        validate_name("credential id", id)?;
        let Some(record) = self.fetch(&[id])?.pop() else { return Ok(None) };
        Ok(self.decode(id, &record, Plaintext::Refuse)?.map(|(credential, _)| credential))
    }

    fn put(&self, credential: &Credential) -> Result<()> {
        validate_name("credential id", &credential.id)?;
        validate_name("provider name", &credential.provider)?;
        self.store(credential, None).map(drop)
    }

    fn write_protection(&self) -> Protection {
        self.keys
            .current()
            .map_or(Protection::Plaintext, |key| Protection::Encrypted(key.id().to_owned()))
    }

    fn delete(&self, id: &str) -> Result<bool> {
        validate_name("credential id", id)?;
        let (record, ids, last_used, channel) = (
            self.link.cred_key(id),
            self.link.key("ids"),
            self.link.key("last-used"),
            self.link.key("changes"),
        );
        let removed: i64 = self.link.run("delete a credential", |c| {
            self.link.delete.key(&record).key(&ids).key(&last_used).arg(id).arg(&channel).invoke(c)
        })?;
        Ok(removed == 1)
    }

    fn check(&self) -> Result<()> {
        self.link.run("answer a PING", |c| redis::cmd("PING").query::<String>(c)).map(drop)
    }

    fn location(&self) -> &Path {
        &self.location
    }

    fn record_path(&self, id: &str) -> PathBuf {
        PathBuf::from(format!("redis:{}", self.link.cred_key(id)))
    }

    fn take_notices(&self) -> Vec<Notice> {
        std::mem::take(&mut *lock(&self.notices))
    }

    fn record_use(&self, used: &[(String, u64)]) -> Result<()> {
        if used.is_empty() {
            return Ok(());
        }
        let (last_used, ids) = (self.link.key("last-used"), self.link.key("ids"));
        self.link.run("record when credentials were used", |c| {
            let mut invocation = self.link.record_use.key(&last_used);
            invocation.key(&ids);
            for (id, at) in used {
                invocation.arg(id).arg(*at);
            }
            invocation.invoke::<i64>(c)
        })?;
        Ok(())
    }

    fn device_fingerprint(&self) -> Result<String> {
        let key = self.link.key("fingerprint");
        let candidate = fingerprint::generate()?;
        // The first instance to ask sets it; every other one reads the same.
        let stored: Option<String> = self.link.run("read the device fingerprint", |c| {
            redis::cmd("SET").arg(&key).arg(&candidate).arg("NX").query::<()>(c)?;
            redis::cmd("GET").arg(&key).query(c)
        })?;
        match stored {
            Some(text) if fingerprint::is_valid(&text) => Ok(text),
            _ => Err(Error::Invalid {
                path: PathBuf::from(format!("redis:{key}")),
                reason: "not a device fingerprint (64 hex digits); delete it to compute a new one (upstreams will see a new device)".to_owned(),
            }),
        }
    }

    fn reencrypt(&self) -> Result<Reencrypted> {
        self.rewrite(Plaintext::Refuse)
    }

    fn migrate(&self) -> Result<Reencrypted> {
        self.rewrite(Plaintext::Admit)
    }

    /// `SET vault:refresh:<id> <random token> NX PX <ttl>`: `None` while another instance
    /// holds it. The lease is given back by a compare-and-delete of its own token.
    fn refresh_lock(&self, id: &str, ttl: Duration) -> Result<Option<RefreshLease>> {
        validate_name("credential id", id)?;
        let mut random = [0u8; 16];
        SystemRandom::new().fill(&mut random).map_err(|_| Error::Random)?;
        let token: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let key = self.link.key(&format!("refresh:{id}"));
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let taken: Option<String> = self.link.run("take a refresh lease", |c| {
            redis::cmd("SET").arg(&key).arg(&token).arg("NX").arg("PX").arg(millis).query(c)
        })?;
        if taken.is_none() {
            return Ok(None);
        }
        let link = Arc::clone(&self.link);
        Ok(Some(RefreshLease::new(move || {
            let released: i64 = link.run("give a refresh lease back", |c| {
                link.release.key(&key).arg(&token).invoke(c)
            })?;
            Ok(released == 1)
        })))
    }

    /// Follows `vault:changes` on a connection of its own. The subscription is made before
    /// this returns (an error when it cannot be, within the timeout), so a change made after
    /// it returns is seen. A cut connection is reported as a notice and re-made with a
    /// backoff (100 ms doubling to 2 s); once it is back, `on_change("*")`.
    fn watch(&self, on_change: ChangeHandler) -> Result<Option<Watcher>> {
        let (stop, stopped) = mpsc::channel();
        let (ready, started) = mpsc::sync_channel(1);
        let feed = Feed {
            link: Arc::clone(&self.link),
            channel: self.link.key("changes"),
            location: self.location.clone(),
            notices: Arc::clone(&self.notices),
            on_change,
            stopped,
        };
        std::thread::Builder::new()
            .name("vault-watch".to_owned())
            .spawn(move || feed.run(ready))
            .map_err(|e| Error::Redis { op: "start the change watcher", cause: e.to_string() })?;
        match started.recv() {
            Ok(Ok(())) => Ok(Some(Watcher::new(stop))),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(Error::Redis {
                op: "subscribe to credential changes",
                cause: "the watcher's thread ended".to_owned(),
            }),
        }
    }
}

/// The watcher's thread.
struct Feed {
    link: Arc<Link>,
    channel: String,
    location: PathBuf,
    notices: Arc<Mutex<Vec<Notice>>>,
    on_change: ChangeHandler,
    /// Disconnected when the [`Watcher`] is dropped.
    stopped: mpsc::Receiver<()>,
}

/// Why [`Feed::listen`] returned.
enum Ended {
    Stopped,
    Lost(String),
}

impl Feed {
    fn run(self, ready: mpsc::SyncSender<Result<()>>) {
        let mut ready = Some(ready);
        let mut backoff = FIRST_BACKOFF;
        let mut missed = false;
        loop {
            let cause = match self.link.client.get_connection_with_timeout(self.link.timeout) {
                Err(error) => cause_of(&error),
                Ok(mut connection) => {
                    match self.listen(&mut connection, &mut ready, &mut missed, &mut backoff) {
                        Ended::Stopped => return,
                        Ended::Lost(cause) => cause,
                    }
                }
            };
            if let Some(ready) = ready.take() {
                let _ =
                    ready.send(Err(Error::Redis { op: "subscribe to credential changes", cause }));
                return;
            }
            if !missed {
                missed = true;
                lock(&self.notices)
                    .push(Notice::ChangeFeedDown { location: self.location.clone(), cause });
            }
            match self.stopped.recv_timeout(backoff) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Subscribes on `connection` and hands each id to `on_change` until the connection is
    /// lost or the watcher dropped.
    fn listen(
        &self,
        connection: &mut redis::Connection,
        ready: &mut Option<mpsc::SyncSender<Result<()>>>,
        missed: &mut bool,
        backoff: &mut Duration,
    ) -> Ended {
        if let Err(error) = connection.set_write_timeout(Some(self.link.timeout)) {
            return Ended::Lost(cause_of(&error));
        }
        let mut pubsub = connection.as_pubsub();
        let subscribed = pubsub
            .set_read_timeout(Some(self.link.timeout))
            .and_then(|()| pubsub.subscribe(&self.channel))
            .and_then(|()| pubsub.set_read_timeout(Some(WATCH_POLL)));
        if let Err(error) = subscribed {
            return Ended::Lost(cause_of(&error));
        }
        if let Some(ready) = ready.take() {
            let _ = ready.send(Ok(()));
        }
        *backoff = FIRST_BACKOFF;
        if std::mem::take(missed) {
            lock(&self.notices).push(Notice::ChangeFeedUp { location: self.location.clone() });
            (self.on_change)("*");
        }
        loop {
            if !matches!(self.stopped.try_recv(), Err(TryRecvError::Empty)) {
                return Ended::Stopped;
            }
            match pubsub.get_message() {
                Ok(message) => {
                    let id = String::from_utf8_lossy(message.get_payload_bytes());
                    // Only what a store publishes is passed on; anyone else's message on the
                    // channel is not an id the caller could look up.
                    if validate_name("credential id", &id).is_ok() {
                        (self.on_change)(&id);
                    }
                }
                Err(error) if error.is_timeout() => {}
                Err(error) => return Ended::Lost(cause_of(&error)),
            }
        }
    }
}

/// The vault's error for a failed call: the client's text, which never holds the URL.
fn redis_error(op: &'static str, error: &redis::RedisError) -> Error {
    Error::Redis { op, cause: cause_of(error) }
}

/// The client's text for `error`, at most 200 bytes.
fn cause_of(error: &redis::RedisError) -> String {
    let mut text = error.to_string();
    if text.len() > 200 {
        let mut end = 200;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
#[path = "../../../tests/src/redis_server.rs"]
mod redis_server;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a failed expectation fails the test")]

    use super::*;
    use crate::CredentialSecret;
    use cliproxy_core::Secret;

    thread_local! {
        /// Run by `rewrite` on this thread between its check of every record and its
        /// rewrites, to change a record at the moment a snapshot would go stale.
        static BETWEEN_PASSES: std::cell::RefCell<Option<Box<dyn FnOnce()>>> =
            const { std::cell::RefCell::new(None) };
    }

    /// What a test runs right before a rewrite.
    type RewriteHook = Box<dyn FnMut(&str)>;

    thread_local! {
        /// Run by `rewrite` on this thread right before it writes a record it has just read
        /// (with the id), to change the record under the write.
        static BEFORE_REWRITE: std::cell::RefCell<Option<RewriteHook>> =
            const { std::cell::RefCell::new(None) };
    }

    pub(super) fn before_rewrite(id: &str) {
        BEFORE_REWRITE.with(|hook| {
            if let Some(hook) = hook.borrow_mut().as_mut() {
                hook(id);
            }
        });
    }

    pub(super) fn between_passes() {
        if let Some(hook) = BETWEEN_PASSES.with(|hook| hook.borrow_mut().take()) {
            hook();
        }
    }

    const KEY_OLD: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const KEY_NEW: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    fn open(url: &str, current: &str, previous: &[&str]) -> RedisStore {
        let previous: Vec<Secret> =
            previous.iter().map(|k| Secret::from((*k).to_owned())).collect();
        let keys =
            Keyring::from_secrets(Some(&Secret::from(current.to_owned())), &previous).unwrap();
        RedisStoreOptions::new()
            .keys(keys)
            .require_encrypted(true)
            .key_prefix("u:")
            .open(redis::Client::open(url).unwrap())
            .unwrap()
    }

    fn api_key(id: &str, token: &str) -> Credential {
        Credential::new_api_key("openai", Secret::from(token.to_owned()))
            .unwrap()
            .with_id(id)
            .unwrap()
    }

    fn token_of(store: &RedisStore, id: &str) -> Option<String> {
        let credential = store.get(id).unwrap()?;
        let CredentialSecret::ApiKey(token) = &credential.secret else { unreachable!() };
        Some(token.expose().to_owned())
    }

    /// A rotation rewrites each record only if it is still what it read: a credential another
    /// instance deleted meanwhile stays deleted, and one whose tokens it refreshed meanwhile
    /// (before the second pass, or between the second pass's read and its write) keeps the
    /// new ones (read again, then sealed under the new key).
    #[test]
    fn reencrypt_neither_resurrects_nor_rolls_back_what_changed_meanwhile() {
        let server = super::redis_server::RedisServer::start();
        let url = server.url();
        let old = open(&url, KEY_OLD, &[]);
        for id in ["one", "two", "three"] {
            old.put(&api_key(id, &format!("sk-unit-{id}-old"))).unwrap();
        }
        let rotating = open(&url, KEY_NEW, &[KEY_OLD]);
        BETWEEN_PASSES.with(|hook| {
            *hook.borrow_mut() = Some(Box::new(move || {
                assert!(old.delete("two").unwrap());
                old.put(&api_key("three", "sk-unit-three-refreshed")).unwrap();
            }));
        });
        // And `one` is refreshed by another instance between its last read and its rewrite:
        // the rewrite does not land on the new record, which is read again.
        let refresher = open(&url, KEY_OLD, &[]);
        let mut once = true;
        BEFORE_REWRITE.with(|hook| {
            *hook.borrow_mut() = Some(Box::new(move |id: &str| {
                if id == "one" && std::mem::take(&mut once) {
                    refresher.put(&api_key("one", "sk-unit-one-refreshed")).unwrap();
                }
            }));
        });
        let report = rotating.reencrypt().unwrap();
        BEFORE_REWRITE.with(|hook| hook.borrow_mut().take());
        assert_eq!(report.from_previous_key, ["one", "three"]);
        let new_only = open(&url, KEY_NEW, &[]);
        assert_eq!(token_of(&new_only, "three").as_deref(), Some("sk-unit-three-refreshed"));
        assert_eq!(token_of(&new_only, "one").as_deref(), Some("sk-unit-one-refreshed"));
        assert_eq!(token_of(&new_only, "two"), None);
    }
}
