//! The connection to the shared Redis server (`state.redis`, SPEC §11): a small pool of
//! synchronous connections, every call bounded by `state.redis.timeout`, and the server's
//! health as the callers see it.
//!
//! The crate has no async runtime, so the calls block the calling thread; they are short
//! (one round trip on loopback is tens of microseconds) and bounded: a connection is made
//! within the timeout and every answer is read within what is left of it. When a call fails
//! for the connection's sake (refused, reset, timed out), the link is marked down and every
//! call fails at once, without touching the network, until the backoff has passed; then one
//! caller probes (makes a new connection within the timeout) while the others still fail at
//! once. So a request waits on Redis at most `timeout`, and while it is down almost never.
//! A command the server refuses (a script error) is an error of that call, not of the link.
//!
//! The URL may hold the password: it is kept in a [`Secret`] and never printed;
//! [`RedisLink::describe`] shows the host and port only.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cliproxy_core::Secret;

use crate::config::{OnUnavailable, RedisConfig};
use crate::error::{Error, Result, Setting};

/// At most this many idle connections are kept for reuse.
const POOL_SIZE: usize = 16;
/// The first wait after a failure before the next probe; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two probes of a server that stays down.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Why a call on the link did not get an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unavailable {
    /// The server is down (or was, and the backoff has not passed): the call did not wait.
    Down,
    /// The call failed for the connection's sake (refused, reset, timed out); the link is
    /// now down. The text never holds the URL.
    Failed(String),
    /// The server answered with an error (a script error, a wrong type): a fault of the call,
    /// the link stays up.
    Refused(String),
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Down => f.write_str("the shared state store (Redis) is unreachable"),
            Self::Failed(cause) => write!(f, "the shared state store (Redis) failed: {cause}"),
            Self::Refused(cause) => {
                write!(f, "the shared state store (Redis) refused a command: {cause}")
            }
        }
    }
}

/// A change of the link's health, for the caller to log (the crate logs nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkNotice {
    /// The server stopped answering; the cause, without the URL.
    Down(String),
    /// The server answers again.
    Up,
}

/// The link's health right now.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkHealth {
    /// Whether the last call got an answer.
    pub up: bool,
    /// The cause of the last failure, while down.
    pub last_error: Option<String>,
    /// How many times the link went down since it was opened.
    pub outages: u64,
}

/// A pool of connections to one Redis server, with its health and its key prefix.
pub struct RedisLink {
    client: redis::Client,
    address: String,
    prefix: String,
    timeout: Duration,
    on_unavailable: OnUnavailable,
    idle: Mutex<Vec<redis::Connection>>,
    up: AtomicBool,
    /// Nanoseconds since `epoch` before which no probe is made.
    retry_at: AtomicU64,
    backoff_ms: AtomicU64,
    probing: AtomicBool,
    outages: AtomicU64,
    last_error: Mutex<Option<String>>,
    notices: Mutex<Vec<LinkNotice>>,
    epoch: Instant,
}

impl fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLink")
            .field("address", &self.address)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("up", &self.up.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl RedisLink {
    /// Builds the link from `state.redis`. Nothing is connected yet (the first call
    /// connects), so a gateway starts while Redis is down; [`RedisLink::ping`] is the
    /// start-up and `check` probe. Errors name the setting: no URL, a URL that cannot be
    /// parsed (the text never quotes it), a CA file that cannot be read, a timeout out of range.
    pub fn open(config: &RedisConfig) -> Result<Self> {
        let url = config.url.as_ref().ok_or(Error::MissingSetting(Setting::RedisUrl))?;
        Self::from_values(
            url,
            config.ca_file.as_deref(),
            &config.key_prefix,
            config.timeout,
            config.on_unavailable,
        )
    }

    /// [`RedisLink::open`] from plain values.
    pub fn from_values(
        url: &Secret,
        ca_file: Option<&std::path::Path>,
        key_prefix: &str,
        timeout: Duration,
        on_unavailable: OnUnavailable,
    ) -> Result<Self> {
        if timeout < Duration::from_millis(1) || timeout > Duration::from_secs(10) {
            return Err(Error::InvalidDuration {
                setting: Setting::RedisTimeout,
                value: timeout,
                allowed: "between 1ms and 10s (a request waits at most this long on Redis)",
            });
        }
        let invalid =
            |problem: String| Error::Redis { setting: Setting::RedisUrl, message: problem };
        // `CLIENT SETINFO` is left out of a new connection's set-up: each reply of the set-up
        // pipeline is read with the whole timeout, so its two commands made a server that
        // accepts and never answers cost twice `state.redis.timeout`.
        let info = redis::IntoConnectionInfo::into_connection_info(url.expose()).map(|info| {
            let settings = info.redis_settings().clone().set_skip_set_lib_name();
            info.set_redis_settings(settings)
        });
        let client = match ca_file {
            None => info.and_then(redis::Client::open),
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| Error::Redis {
                    setting: Setting::RedisCaFile,
                    message: format!("cannot read the CA file {}: {e}", path.display()),
                })?;
                info.and_then(|info| {
                    redis::Client::build_with_tls(
                        info,
                        redis::TlsCertificates { client_tls: None, root_cert: Some(pem) },
                    )
                })
            }
        }
        .map_err(|e| {
            invalid(format!(
                "the Redis URL cannot be used ({:?}); write redis://[:password@]host:port[/db] or rediss://…",
                e.kind()
            ))
        })?;
        let address = client.get_connection_info().addr().to_string();
        Ok(Self {
            client,
            address,
            prefix: key_prefix.to_owned(),
            timeout,
            on_unavailable,
            idle: Mutex::new(Vec::new()),
            up: AtomicBool::new(true),
            retry_at: AtomicU64::new(0),
            backoff_ms: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            outages: AtomicU64::new(0),
            last_error: Mutex::new(None),
            notices: Mutex::new(Vec::new()),
            epoch: Instant::now(),
        })
    }

    /// The client the link connects with (its URL, TLS roots and connection settings), for
    /// another part of the same process that keeps its own data on the same server (the
    /// credential vault's records).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// `prefix` + `name`: the name of one of this deployment's keys.
    pub fn key(&self, name: &str) -> String {
        let mut key = String::with_capacity(self.prefix.len() + name.len());
        key.push_str(&self.prefix);
        key.push_str(name);
        key
    }

    /// The key prefix (`state.redis.key_prefix`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `state.redis.timeout`.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `state.redis.on_unavailable`.
    pub fn on_unavailable(&self) -> OnUnavailable {
        self.on_unavailable
    }

    /// `Redis at host:port (keys cliproxy:*)`: never the password.
    pub fn describe(&self) -> String {
        format!("Redis at {} (keys {}*)", self.address, self.prefix)
    }

    /// Whether the last call got an answer.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// The link's health.
    pub fn health(&self) -> LinkHealth {
        LinkHealth {
            up: self.is_up(),
            last_error: lock(&self.last_error).clone(),
            outages: self.outages.load(Ordering::Relaxed),
        }
    }

    /// The health changes since the last call, oldest first, for the caller to log.
    pub fn take_notices(&self) -> Vec<LinkNotice> {
        std::mem::take(&mut *lock(&self.notices))
    }

    /// One `PING`, within the timeout, even while the link is marked down (it is the probe):
    /// for start-up and `check`.
    pub fn ping(&self) -> std::result::Result<(), Unavailable> {
        self.retry_at.store(0, Ordering::Relaxed);
        self.run(|c| redis::cmd("PING").query::<String>(c).map(drop))
    }

    /// Whether the server writes an append-only file (`CONFIG GET appendonly`): what keeps
    /// the shared state across its restarts. `Ok(None)` when it will not say (`CONFIG`
    /// renamed or refused, as hardened servers do).
    pub fn appendonly(&self) -> std::result::Result<Option<bool>, Unavailable> {
        match self
            .run(|c| redis::cmd("CONFIG").arg("GET").arg("appendonly").query::<Vec<String>>(c))
        {
            Ok(reply) => Ok(reply.get(1).map(|value| value == "yes")),
            Err(Unavailable::Refused(_)) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// Runs `call` on a pooled connection within the timeout (see the module's text). A
    /// call that fails for the connection's sake marks the link down.
    pub fn run<T>(
        &self,
        call: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> std::result::Result<T, Unavailable> {
        let started = Instant::now();
        let probe = !self.up.load(Ordering::Relaxed);
        if probe {
            if self.nanos() < self.retry_at.load(Ordering::Relaxed) {
                return Err(Unavailable::Down);
            }
            if self.probing.swap(true, Ordering::Acquire) {
                return Err(Unavailable::Down);
            }
        }
        let outcome = self.run_on_connection(started, call);
        if probe {
            self.probing.store(false, Ordering::Release);
        }
        outcome
    }

    fn run_on_connection<T>(
        &self,
        started: Instant,
        call: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> std::result::Result<T, Unavailable> {
        let pooled = lock(&self.idle).pop();
        let mut connection = match pooled {
            Some(connection) => connection,
            None => match self.client.get_connection_with_timeout(self.timeout) {
                Ok(connection) => connection,
                Err(e) => return Err(self.failed(&e)),
            },
        };
        let left = self.timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(1));
        if let Err(e) = connection
            .set_read_timeout(Some(left))
            .and_then(|()| connection.set_write_timeout(Some(left)))
        {
            return Err(self.failed(&e));
        }
        match call(&mut connection) {
            Ok(value) => {
                self.succeeded();
                let mut idle = lock(&self.idle);
                if idle.len() < POOL_SIZE {
                    idle.push(connection);
                }
                Ok(value)
            }
            Err(e) if e.is_unrecoverable_error() || e.is_timeout() || e.is_io_error() => {
                Err(self.failed(&e))
            }
            Err(e) => {
                self.succeeded();
                lock(&self.idle).push(connection);
                Err(Unavailable::Refused(cause(&e)))
            }
        }
    }

    /// A connection of its own for `SUBSCRIBE`, with no read timeout (a subscriber waits for
    /// messages); connected within the timeout.
    pub fn subscriber_connection(&self) -> std::result::Result<redis::Connection, Unavailable> {
        let connection =
            self.client.get_connection_with_timeout(self.timeout).map_err(|e| self.failed(&e))?;
        connection.set_write_timeout(Some(self.timeout)).map_err(|e| self.failed(&e))?;
        Ok(connection)
    }

    fn succeeded(&self) {
        self.backoff_ms.store(0, Ordering::Relaxed);
        if !self.up.swap(true, Ordering::Relaxed) {
            *lock(&self.last_error) = None;
            lock(&self.notices).push(LinkNotice::Up);
        }
    }

    fn failed(&self, error: &redis::RedisError) -> Unavailable {
        let cause = cause(error);
        let backoff = match self.backoff_ms.load(Ordering::Relaxed) {
            0 => FIRST_BACKOFF,
            ms => (Duration::from_millis(ms) * 2).min(MAX_BACKOFF),
        };
        self.backoff_ms.store(backoff.as_millis() as u64, Ordering::Relaxed);
        self.retry_at.store(self.nanos() + backoff.as_nanos() as u64, Ordering::Relaxed);
        lock(&self.idle).clear();
        *lock(&self.last_error) = Some(cause.clone());
        if self.up.swap(false, Ordering::Relaxed) {
            self.outages.fetch_add(1, Ordering::Relaxed);
            lock(&self.notices).push(LinkNotice::Down(cause.clone()));
        }
        Unavailable::Failed(cause)
    }

    fn nanos(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

/// What went wrong, in the error's own words; the redis crate never puts the URL or the
/// password in an error's text.
fn cause(error: &redis::RedisError) -> String {
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
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
