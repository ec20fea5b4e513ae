//! The network guard embedded in a service of its own: an [`IpFilter`] and an
//! [`IpRateLimiter`], built from plain values, in front of a bare hyper handler. It uses
//! neither the SQLite store nor TLS, so it builds without the crate's default features:
//!
//! ```text
//! cargo run -p cliproxy-netguard --example guarded_service --no-default-features
//! ```
//!
//! The service binds 127.0.0.1:0 and sends requests to itself from chosen loopback source
//! addresses (all of 127.0.0.0/8 is this machine on Linux): an allowed address gets 200 until
//! its burst is spent, then 429 with `Retry-After`; an address in the denied network gets 403.
//! It checks every answer and exits 0, or exits 1 naming the answer that was wrong.

use std::convert::Infallible;
use std::error::Error;
use std::net::{IpAddr, SocketAddr};
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;

use bytes::Bytes;
use cliproxy_netguard::{
    FakeClock, IpFilter, IpRateLimiter, Limited, SecurityHeaders, Verdict, canonical_ip,
};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};

type BoxError = Box<dyn Error + Send + Sync>;

/// What the service checks before its handler runs, in the order the gateway uses: who may
/// talk at all, then how fast.
struct Guard {
    filter: IpFilter,
    limiter: IpRateLimiter,
    headers: SecurityHeaders,
}

impl Guard {
    /// The answer for one request from `peer`: the handler's, or the guard's refusal.
    fn answer(&self, peer: IpAddr) -> Response<Full<Bytes>> {
        let mut response = match self.filter.check(peer) {
            // The reason stays in the service's own log; the client learns nothing of the rules.
            Verdict::Deny(reason) => {
                eprintln!("refused {peer}: {reason}");
                plain(StatusCode::FORBIDDEN, "forbidden\n")
            }
            Verdict::Allow => match self.limiter.check(peer) {
                Ok(_) => plain(StatusCode::OK, "hello from the guarded service\n"),
                Err(limited) => too_many(&limited),
            },
        };
        // Errors included: the security headers go on every answer.
        self.headers.apply(response.headers_mut());
        response
    }
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}

/// 429 with the headers a well-behaved client waits on.
fn too_many(limited: &Limited) -> Response<Full<Bytes>> {
    let mut response = plain(StatusCode::TOO_MANY_REQUESTS, "too many requests\n");
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from(limited.retry_after_secs()));
    headers.insert("x-ratelimit-limit", HeaderValue::from(limited.limit));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(limited.remaining));
    response
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    // The limiter runs on a fake clock so that what the service answers does not depend on
    // how fast this machine sends the requests; a real service passes
    // `SystemClock::shared()` instead.
    let clock = FakeClock::at_unix(1_700_000_000);
    let denied: [ipnetwork::IpNetwork; 1] = ["127.0.0.66/32".parse()?];
    let guard = Arc::new(Guard {
        filter: IpFilter::from_lists(&denied, None, &[], clock.clone()),
        limiter: IpRateLimiter::new(
            NonZeroU32::new(1).ok_or("zero rate")?,
            NonZeroU32::new(3).ok_or("zero burst")?,
            NonZeroUsize::new(10_000).ok_or("zero addresses")?,
            clock.clone(),
        ),
        headers: SecurityHeaders::from_values([(header::X_CONTENT_TYPE_OPTIONS, "nosniff")])?,
    });

    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    println!("listening {addr}");
    tokio::spawn(serve(listener, guard));

    let allowed: IpAddr = "127.0.0.7".parse()?;
    for n in 1..=3 {
        let (status, _) = get(addr, allowed).await?;
        expect(status == StatusCode::OK, format!("request {n} of the burst: {status}"))?;
    }
    let (status, headers) = get(addr, allowed).await?;
    expect(status == StatusCode::TOO_MANY_REQUESTS, format!("over the burst: {status}"))?;
    let retry_after = headers.get(header::RETRY_AFTER).ok_or("429 without Retry-After")?;
    expect(retry_after == "1", format!("Retry-After: {retry_after:?}"))?;
    expect(headers.get(header::X_CONTENT_TYPE_OPTIONS).is_some(), "429 without nosniff")?;
    println!("127.0.0.7: 200 x3, then 429 Retry-After: 1");

    // Another address has a bucket of its own.
    let (status, _) = get(addr, "127.0.0.8".parse()?).await?;
    expect(status == StatusCode::OK, format!("a second address: {status}"))?;
    // After the wait it was told, the first address is served again.
    clock.advance(std::time::Duration::from_secs(1));
    let (status, _) = get(addr, allowed).await?;
    expect(status == StatusCode::OK, format!("after Retry-After: {status}"))?;
    println!("127.0.0.8: 200; 127.0.0.7 after 1 s: 200");

    let (status, headers) = get(addr, "127.0.0.66".parse()?).await?;
    expect(status == StatusCode::FORBIDDEN, format!("denied network: {status}"))?;
    expect(headers.get(header::X_CONTENT_TYPE_OPTIONS).is_some(), "403 without nosniff")?;
    println!("127.0.0.66: 403");
    Ok(())
}

/// Serves `guard` in front of the handler on every connection accepted.
async fn serve(listener: TcpListener, guard: Arc<Guard>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else { continue };
        let guard = Arc::clone(&guard);
        // A dual-stack listener reports IPv4 clients as `::ffff:a.b.c.d`; the filter matches
        // either form, and the canonical one is what the log shows.
        let peer = canonical_ip(peer.ip());
        let service = service_fn(move |_request: Request<Incoming>| {
            let response = guard.answer(peer);
            async move { Ok::<_, Infallible>(response) }
        });
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                eprintln!("connection from {peer}: {error}");
            }
        });
    }
}

/// One `GET /` to `server` from the source address `from`; the status and headers, with the
/// body read to its end.
async fn get(server: SocketAddr, from: IpAddr) -> Result<(StatusCode, http::HeaderMap), BoxError> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    let stream = socket.connect(server).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = Request::get("/").header(header::HOST, "localhost").body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let (parts, body) = response.into_parts();
    body.collect().await?;
    Ok((parts.status, parts.headers))
}

fn expect(ok: bool, what: impl Into<String>) -> Result<(), BoxError> {
    if ok { Ok(()) } else { Err(format!("unexpected answer: {}", what.into()).into()) }
}
