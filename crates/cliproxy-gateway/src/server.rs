//! The listener: accepts connections, serves HTTP/1.1 and HTTP/2 on each in its own task with
//! hyper's limits, and shuts down gracefully.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use slog::{Logger, debug, info, warn};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::ServerConfig;
use crate::error::{Error, Result};
use crate::first_byte::FirstByte;
use crate::gateway::Gateway;
use cliproxy_netguard::RejectionKind;
use cliproxy_netguard::tls::TlsSettings;

/// How often an idle HTTP/2 connection is pinged, and how long the answer may take.
const HTTP2_KEEP_ALIVE: Duration = Duration::from_secs(60);
const HTTP2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// How often last-use times are written to the vault.
const LAST_USED_FLUSH: Duration = Duration::from_secs(30);
/// How often the client keys created at run time are re-read from the state store.
const CLIENT_KEY_REFRESH: Duration = Duration::from_secs(1);

/// Connections the metrics listener serves at once.
const METRICS_MAX_CONNECTIONS: usize = 16;
/// How long a scraper may take to send its request (and wait for a free slot).
const METRICS_HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// A bound listener with the gateway behind it, and the metrics listener when `metrics` is
/// on.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    metrics: Option<TcpListener>,
    gateway: Gateway,
    config: ServerConfig,
    log: Logger,
}

impl Server {
    /// Binds `server.host:server.port`.
    pub async fn bind(config: &ServerConfig, gateway: Gateway, log: Logger) -> Result<Self> {
        let addr = SocketAddr::new(config.host, config.port);
        let listener = TcpListener::bind(addr).await.map_err(|source| Error::Io {
            context: format!("cannot listen on {addr} (server.host, server.port)"),
            source,
        })?;
        let metrics_config = gateway.metrics_config();
        let metrics = if metrics_config.enabled {
            let addr = SocketAddr::new(metrics_config.host, metrics_config.port);
            Some(TcpListener::bind(addr).await.map_err(|source| Error::Io {
                context: format!("cannot listen on {addr} (metrics.host, metrics.port)"),
                source,
            })?)
        } else {
            None
        };
        Ok(Self { listener, metrics, gateway, config: config.clone(), log })
    }

    /// The bound address of the metrics listener, when it is on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The bound address (the real port when `server.port` is 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|source| Error::Io { context: "listener address".to_owned(), source })
    }

    /// Serves until `shutdown` completes, then stops accepting and lets in-flight requests
    /// and streams finish for up to `server.shutdown_timeout`.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let Self { listener, metrics, gateway, config, log } = self;
        let metrics_task = metrics.map(|listener| {
            let path = gateway.metrics_config().path.clone();
            let audit = gateway.guard().audit.clone();
            let limits = config.limits.clone();
            info!(log, "metrics listening"; "addr" => listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "path" => &path);
            tokio::spawn(serve_metrics(listener, path, audit, limits, log.clone()))
        });
        let limits = &config.limits;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_headers(limits.max_headers.get())
            // hyper needs at least 8 KiB of read buffer; the header limit is enforced by it.
            .max_buf_size(limits.max_header_bytes.get().max(8192));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.http2_max_streams.get())
            .max_header_list_size(u32::try_from(limits.max_header_bytes.get()).unwrap_or(u32::MAX))
            // A dead HTTP/2 peer is found by pings and its connection slot freed; hyper's
            // reset-stream limits (on by default) bound rapid-reset floods.
            .keep_alive_interval(Some(HTTP2_KEEP_ALIVE))
            .keep_alive_timeout(HTTP2_KEEP_ALIVE_TIMEOUT);
        let graceful = GracefulShutdown::new();
        // Last-use times go to the vault in batches, off the request path.
        let flusher = {
            let gateway = gateway.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(LAST_USED_FLUSH);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    gateway.flush_last_used().await;
                }
            })
        };
        let guard = gateway.guard().clone();
        // Quota counts and expired denylist entries go to the state store in batches, off the
        // request path; idle per-IP buckets are dropped on the same beat.
        let housekeeping = {
            let guard = guard.clone();
            let interval = gateway.state_flush_interval();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(interval);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    guard.tick();
                }
            })
        };
        // The client keys created at run time are re-read from the state store every second,
        // off the request path, so that a key created or revoked by another process sharing
        // the store (`cliproxy-server keys`, another gateway) is in force within a second.
        // A shared store (Redis) also says at once what another instance changed — keys,
        // the runtime denylist, bans — and the same task puts it in force
        // (`shared_sync.rs`).
        let key_refresh = {
            let gateway = gateway.clone();
            let signal = gateway.shared_signal().clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(CLIENT_KEY_REFRESH);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    let beat = tokio::select! {
                        _ = every.tick() => crate::shared_sync::KEYS,
                        () = signal.notify.notified() => 0,
                    };
                    let bits = beat | signal.take();
                    let gateway = gateway.clone();
                    let _ = tokio::task::spawn_blocking(move || gateway.sync_shared(bits)).await;
                }
            })
        };
        let tls = guard.tls.clone();
        let acceptor = tls.as_ref().map(|tls| tokio_rustls::TlsAcceptor::from(tls.server_config()));
        // Certificates are reloaded when their files change and on SIGHUP; connections keep
        // the session they have, new handshakes get the new certificate, and a bad new pair
        // keeps the old one in service.
        let reloader = tls.as_ref().map(|tls| spawn_cert_reloader(tls, log.clone()));
        // SIGHUP: reopen the audit file (logrotate), reload the certificates and the config.
        let hangup =
            spawn_hangup(gateway.clone(), tls.as_ref().map(TlsSettings::reloader), log.clone());
        let handshake_timeout = tls.as_ref().map(|t| t.handshake_timeout()).unwrap_or_default();
        let header_read_timeout = limits.header_read_timeout;
        let connections = Arc::new(Semaphore::new(limits.max_connections.get()));
        let per_ip = PerIpConnections::new(limits.max_connections_per_ip);
        info!(log, "listening"; "addr" => listener.local_addr().map(|a| a.to_string()).unwrap_or_default());
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            // Usually EMFILE: back off briefly instead of spinning on it.
                            warn!(log, "accept failed"; "error" => error.to_string());
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let guard = gateway.guard();
                    // A denied peer is dropped before TLS and before a byte is read: it costs
                    // one lookup and learns nothing.
                    if let cliproxy_netguard::Verdict::Deny(reason) = guard.ip.check(peer.ip()) {
                        guard.reject(RejectionKind::IpDeniedConnection, peer.ip().to_canonical(), &crate::netguard_keys::deny_reason(&reason));
                        drop(stream);
                        continue;
                    }
                    // Beyond the connection limit the connection is closed at once: refusing
                    // costs less than queueing, and memory stays bounded.
                    let Ok(permit) = connections.clone().try_acquire_owned() else {
                        guard.counters.record(RejectionKind::ConnectionLimit);
                        debug!(log, "connection refused: server.limits.max_connections reached"; "peer" => peer.to_string());
                        continue;
                    };
                    // One address (IPv6: one /64) cannot take every slot. A trusted proxy
                    // carries many clients on its address, so it gets the global cap only.
                    let ip_slot = if guard.ip.is_trusted_proxy(peer.ip()) {
                        None
                    } else {
                        match per_ip.try_acquire(peer.ip()) {
                            Ok(slot) => slot,
                            Err(()) => {
                                guard.counters.record(RejectionKind::ConnectionLimit);
                                debug!(log, "connection refused: server.limits.max_connections_per_ip reached"; "peer" => peer.to_string());
                                continue;
                            }
                        }
                    };
                    let permit = Admitted::new(permit, ip_slot, guard.audit.metrics().clone());
                    let _ = stream.set_nodelay(true);
                    let gateway = gateway.clone();
                    let service = service_fn(move |request| {
                        let gateway = gateway.clone();
                        async move { Ok::<_, Infallible>(gateway.handle(request, peer).await) }
                    });
                    let log = log.clone();
                    match &acceptor {
                        None => {
                            // The first byte has the header read timeout too (first_byte.rs).
                            let stream = FirstByte::new(stream, header_read_timeout);
                            let connection =
                                builder.serve_connection(TokioIo::new(stream), service).into_owned();
                            let connection = graceful.watch(connection);
                            tokio::spawn(async move {
                                if let Err(error) = connection.await {
                                    debug!(log, "connection ended with an error";
                                        "peer" => peer.to_string(), "error" => error.to_string());
                                }
                                drop(permit);
                            });
                        }
                        Some(acceptor) => {
                            // The handshake runs in the connection's own task with its own
                            // timeout: a silent client never delays the accept loop.
                            let handshake = acceptor.accept(stream);
                            let builder = builder.clone();
                            let watcher = graceful.watcher();
                            let guard = guard.clone();
                            tokio::spawn(async move {
                                let handshake = tokio::time::timeout(handshake_timeout, handshake);
                                let stream = match handshake.await {
                                    Ok(Ok(stream)) => stream,
                                    Ok(Err(error)) => {
                                        guard.counters.record(RejectionKind::TlsHandshake);
                                        debug!(log, "TLS handshake failed";
                                            "peer" => peer.to_string(), "error" => error.to_string());
                                        return;
                                    }
                                    Err(_) => {
                                        guard.counters.record(RejectionKind::TlsHandshake);
                                        debug!(log, "TLS handshake timed out (server.tls.handshake_timeout)";
                                            "peer" => peer.to_string());
                                        return;
                                    }
                                };
                                // Counted from the end of the handshake (first_byte.rs).
                                let stream = FirstByte::new(stream, header_read_timeout);
                                let connection =
                                    builder.serve_connection(TokioIo::new(stream), service).into_owned();
                                if let Err(error) = watcher.watch(connection).await {
                                    debug!(log, "connection ended with an error";
                                        "peer" => peer.to_string(), "error" => error.to_string());
                                }
                                drop(permit);
                            });
                        }
                    }
                }
                () = &mut shutdown => break,
            }
        }
        drop(listener);
        info!(log, "shutting down: no new connections; waiting for in-flight requests";
            "timeout" => format!("{:?}", config.shutdown_timeout));
        tokio::select! {
            () = graceful.shutdown() => info!(log, "all connections finished"),
            () = tokio::time::sleep(config.shutdown_timeout) => {
                warn!(log, "shutdown timeout reached; closing the remaining connections (server.shutdown_timeout)");
            }
        }
        flusher.abort();
        housekeeping.abort();
        key_refresh.abort();
        if let Some(reloader) = reloader {
            reloader.abort();
        }
        hangup.abort();
        if let Some(task) = metrics_task {
            task.abort();
        }
        gateway.flush_last_used().await;
        guard.shutdown().await;
        let audit = guard.audit.clone();
        let state = guard.state.clone();
        // The last events (shutdown included) and the shutdown checkpoint reach the disk
        // before the process ends; then the state store commits the head anchor the audit
        // sink handed it after its last sync.
        let _ = tokio::task::spawn_blocking(move || {
            audit.shutdown();
            state.flush()
        })
        .await;
        Ok(())
    }
}

/// A connection's slot: its permit, its address's slot, and its place in
/// `cliproxy_active_connections`. It lives in the connection's task, so it is dropped (and
/// every count given back) however the task ends: normally, on a panic, or when aborted.
struct Admitted {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _ip_slot: Option<IpSlot>,
    metrics: Arc<cliproxy_audit::Metrics>,
}

impl Admitted {
    fn new(
        permit: tokio::sync::OwnedSemaphorePermit,
        ip_slot: Option<IpSlot>,
        metrics: Arc<cliproxy_audit::Metrics>,
    ) -> Self {
        metrics.connection_opened();
        Self { _permit: permit, _ip_slot: ip_slot, metrics }
    }
}

/// Open connections per client address, for `server.limits.max_connections_per_ip`.
///
/// An address has an entry only while it holds a connection, and a slot is taken only after
/// the global permit, so the map never holds more than `server.limits.max_connections`
/// entries. The lock is held for one map operation, never across an await.
#[derive(Debug, Clone)]
struct PerIpConnections {
    max: usize,
    open: Arc<Mutex<HashMap<ConnKey, usize>>>,
}

/// The address a connection counts against: an IPv4 address (IPv4-mapped IPv6 included), or
/// the /64 prefix of an IPv6 address (the smallest block a host is normally given, so one
/// host cannot rotate through its /64 to escape the cap; the per-IP rate limiter keys alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ConnKey {
    V4(u32),
    V6(u64),
}

impl ConnKey {
    fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::V4(u32::from(v4)),
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) >> 64;
                // The shift leaves at most 64 bits.
                Self::V6(u64::try_from(prefix).unwrap_or(u64::MAX))
            }
        }
    }
}

impl PerIpConnections {
    /// `max` connections per address; 0 turns the cap off.
    fn new(max: usize) -> Self {
        Self { max, open: Arc::default() }
    }

    /// Takes a slot for `ip`: `Ok(None)` when the cap is off, `Err(())` when the address
    /// already holds `max` connections.
    fn try_acquire(&self, ip: IpAddr) -> Result<Option<IpSlot>, ()> {
        if self.max == 0 {
            return Ok(None);
        }
        let key = ConnKey::of(ip);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(key).or_insert(0);
        if *count >= self.max {
            return Err(());
        }
        *count += 1;
        Ok(Some(IpSlot { key, open: self.open.clone() }))
    }

    #[cfg(test)]
    fn held(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(&ConnKey::of(ip)).copied().unwrap_or(0)
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.open.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// One connection's place in its address's count, given back on drop.
#[derive(Debug)]
struct IpSlot {
    key: ConnKey,
    open: Arc<Mutex<HashMap<ConnKey, usize>>>,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.metrics.connection_closed();
    }
}

/// Reloads the certificate pair when its files change (checked every
/// `server.tls.reload_interval`). Connections keep the session they have, new handshakes get
/// the new certificate, and a bad new pair keeps the old one in service.
fn spawn_cert_reloader(tls: &TlsSettings, log: Logger) -> tokio::task::JoinHandle<()> {
    let reloader = tls.reloader();
    let interval = tls.reload_interval();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            match reloader.reload_if_changed() {
                Ok(true) => info!(log, "TLS certificate reloaded";
                    "cert_file" => reloader.cert_file().display().to_string(),
                    "trigger" => "file change"),
                Ok(false) => {}
                Err(error) => cert_not_reloaded(&log, &crate::netguard_error(&error)),
            }
        }
    })
}

fn cert_not_reloaded(log: &Logger, error: &str) {
    warn!(log, "TLS certificate not reloaded; the previous one stays in service";
        "error" => error, "fix" => "correct server.tls.cert_file / key_file, then send SIGHUP");
}

/// On SIGHUP, in this order: the audit file is reopened (logrotate moved it; the chain goes
/// on in the new file), the certificate pair is reloaded, and the configuration is reloaded
/// (checked first; an invalid file keeps the running configuration).
fn spawn_hangup(
    gateway: Gateway,
    certificates: Option<Arc<cliproxy_netguard::tls::CertReloader>>,
    log: Logger,
) -> tokio::task::JoinHandle<()> {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async move {
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(hangup) => hangup,
            Err(error) => {
                warn!(log, "cannot listen for SIGHUP; use POST /v0/management/config/reload";
                    "error" => error.to_string());
                return;
            }
        };
        while hangup.recv().await.is_some() {
            info!(
                log,
                "SIGHUP received: reopening the audit log, reloading certificates and configuration"
            );
            let audit = gateway.guard().audit.clone();
            let _ = tokio::task::spawn_blocking(move || audit.reopen()).await;
            if let Some(reloader) = &certificates {
                match reloader.reload() {
                    Ok(()) => info!(log, "TLS certificate reloaded";
                        "cert_file" => reloader.cert_file().display().to_string(), "trigger" => "SIGHUP"),
                    Err(error) => cert_not_reloaded(&log, &crate::netguard_error(&error)),
                }
            }
            let reloader = gateway.clone();
            let _ = tokio::task::spawn_blocking(move || reloader.reload("SIGHUP")).await;
        }
    })
}

/// The metrics listener: `GET <metrics.path>` answers the Prometheus text format; anything
/// else is 404 or 405. HTTP/1.1 only, one request per connection, a few connections at a
/// time, 2 s to send the request.
async fn serve_metrics(
    listener: TcpListener,
    path: String,
    audit: Arc<cliproxy_audit::Audit>,
    limits: crate::config::LimitsConfig,
    log: Logger,
) {
    use http::{Method, Response, StatusCode, header};
    let slots = Arc::new(Semaphore::new(METRICS_MAX_CONNECTIONS));
    let path: Arc<str> = Arc::from(path);
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let slots = slots.clone();
        let audit = audit.clone();
        let path = path.clone();
        let log = log.clone();
        // A scrape is one request: a short header timeout, and the connection is closed
        // after the answer, so idle connections cannot hold the slots.
        let timeout = limits.header_read_timeout.min(METRICS_HEADER_TIMEOUT);
        tokio::spawn(async move {
            // All slots busy: wait a moment for one rather than dropping the scrape.
            let Ok(Ok(permit)) =
                tokio::time::timeout(METRICS_HEADER_TIMEOUT, slots.acquire_owned()).await
            else {
                return;
            };
            let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let audit = audit.clone();
                let path = path.clone();
                async move {
                    let (status, body) = if request.uri().path() != &*path {
                        (StatusCode::NOT_FOUND, format!("metrics are at {path}\n"))
                    } else if request.method() != Method::GET && request.method() != Method::HEAD {
                        (StatusCode::METHOD_NOT_ALLOWED, "use GET\n".to_owned())
                    } else {
                        // Rendering walks every series: off the async workers.
                        let text = tokio::task::spawn_blocking(move || audit.metrics().render())
                            .await
                            .unwrap_or_default();
                        (StatusCode::OK, text)
                    };
                    let mut response =
                        Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
                    *response.status_mut() = status;
                    let content_type = if status == StatusCode::OK {
                        "text/plain; version=0.0.4; charset=utf-8"
                    } else {
                        "text/plain; charset=utf-8"
                    };
                    response
                        .headers_mut()
                        .insert(header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
                    Ok::<_, Infallible>(response)
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .keep_alive(false)
                .header_read_timeout(timeout)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                debug!(log, "metrics connection ended with an error";
                    "peer" => peer.to_string(), "error" => error.to_string());
            }
            drop(permit);
        });
    }
}

/// The liveness probe behind `cliproxy-server healthcheck` (a container `HEALTHCHECK` needs no
/// shell or curl): `GET /healthz` on `addr`, healthy on a 200 within `timeout`.
pub async fn probe_health(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    use http_body_util::Empty;
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;

    let client: Client<HttpConnector, Empty<bytes::Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let uri: http::Uri = format!("http://{addr}/healthz")
        .parse()
        .map_err(|e| format!("cannot build the probe URL for {addr}: {e}"))?;
    match tokio::time::timeout(timeout, client.get(uri)).await {
        Err(_) => Err(format!("{addr}: no answer to GET /healthz within {timeout:?}")),
        Ok(Err(error)) => Err(format!("{addr}: GET /healthz failed: {error}")),
        Ok(Ok(response)) if response.status() == http::StatusCode::OK => Ok(()),
        Ok(Ok(response)) => Err(format!("{addr}: GET /healthz answered {}", response.status())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_address_holds_at_most_max_connections_and_gets_them_back_on_drop() {
        let per_ip = PerIpConnections::new(2);
        let first = per_ip.try_acquire(ip("192.0.2.1")).unwrap();
        let second = per_ip.try_acquire(ip("192.0.2.1")).unwrap();
        assert!(per_ip.try_acquire(ip("192.0.2.1")).is_err(), "a third connection was admitted");
        // Another address is counted on its own.
        let other = per_ip.try_acquire(ip("192.0.2.2")).unwrap();
        assert!(other.is_some());
        drop(first);
        assert_eq!(per_ip.held(ip("192.0.2.1")), 1);
        let third = per_ip.try_acquire(ip("192.0.2.1")).unwrap();
        drop((second, third, other));
        // An address without connections has no entry: the map stays bounded.
        assert_eq!(per_ip.tracked(), 0);
    }

    #[test]
    fn ipv6_addresses_count_per_64_and_mapped_ipv4_counts_as_ipv4() {
        let per_ip = PerIpConnections::new(1);
        let _a = per_ip.try_acquire(ip("2001:db8:1:2::1")).unwrap();
        // The same /64, another interface identifier: the same count.
        assert!(per_ip.try_acquire(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")).is_err());
        // The next /64 is another client.
        let _b = per_ip.try_acquire(ip("2001:db8:1:3::1")).unwrap();
        let _c = per_ip.try_acquire(ip("198.51.100.7")).unwrap();
        assert!(per_ip.try_acquire(ip("::ffff:198.51.100.7")).is_err(), "mapped IPv4 escaped");
        // The all-zero /64 and the IPv4 address 0.0.0.0 are different keys.
        let _d = per_ip.try_acquire(ip("0.0.0.0")).unwrap();
        let zero_64 = per_ip.try_acquire(ip("::1")).unwrap();
        assert!(zero_64.is_some());
        assert_eq!(per_ip.tracked(), 5);
    }

    #[test]
    fn zero_turns_the_cap_off() {
        let per_ip = PerIpConnections::new(0);
        let slots: Vec<_> =
            (0..1000).map(|_| per_ip.try_acquire(ip("192.0.2.1")).unwrap()).collect();
        assert!(slots.iter().all(Option::is_none));
        assert_eq!(per_ip.tracked(), 0);
    }

    #[tokio::test]
    async fn a_panicking_connection_task_gives_its_slot_back() {
        let per_ip = PerIpConnections::new(1);
        let slot = per_ip.try_acquire(ip("192.0.2.1")).unwrap();
        let task = tokio::spawn(async move {
            let _slot = slot;
            panic!("connection task failed");
        });
        assert!(task.await.unwrap_err().is_panic());
        assert_eq!(per_ip.held(ip("192.0.2.1")), 0);
        // An aborted task gives it back too.
        let slot = per_ip.try_acquire(ip("192.0.2.1")).unwrap();
        let task = tokio::spawn(async move {
            let _slot = slot;
            std::future::pending::<()>().await;
        });
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        assert_eq!(per_ip.tracked(), 0);
    }
}
