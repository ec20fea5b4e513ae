//! Forwarding over TLS: the upstream is a real rustls server with a certificate from a test
//! CA. With the CA in `ca_file` the request goes through (over HTTP/2, chosen by ALPN) carrying
//! only the vault credential; without it the bundled web PKI roots do not trust the upstream
//! and the client gets a 502, never a plaintext fallback.

#![allow(clippy::unwrap_used, reason = "a failed expectation fails the test")]

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cliproxy_core::Secret;
use cliproxy_gateway::Gateway;
use cliproxy_server::compose;
use cliproxy_server::config::Config;
use cliproxy_vault::Credential;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::Value;
use tokio::net::TcpListener;

const CLIENT_KEY: &str = "client-key-tls-0123456789abcdef";
const VAULT_TOKEN: &str = "sk-vault-token-for-tls-upstream";

struct Upstream {
    port: u16,
    ca_pem: String,
    seen: Arc<Mutex<Vec<(http::Version, http::HeaderMap)>>>,
}

/// A TLS upstream for `localhost` answering every request with an OpenAI-style reply.
async fn tls_upstream() -> Upstream {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            let record = record.clone();
            tokio::spawn(async move {
                // A failed handshake (the untrusting gateway) just ends this connection.
                let Ok(stream) = acceptor.accept(stream).await else { return };
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let record = record.clone();
                    async move {
                        record.lock().unwrap().push((request.version(), request.headers().clone()));
                        let body = r#"{"id":"x","object":"chat.completion","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#;
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                            Bytes::from_static(body.as_bytes()),
                        )))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Upstream { port, ca_pem: ca_cert.pem(), seen }
}

async fn gateway_for(upstream: &Upstream, with_ca: bool, dir: &std::path::Path) -> Gateway {
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, &upstream.ca_pem).unwrap();
    let ca_line = if with_ca {
        format!(", ca_file: {:?}", ca_path.display().to_string())
    } else {
        String::new()
    };
    let yaml = format!(
        "auth: {{api_keys: [\"{CLIENT_KEY}\"], dir: {:?}}}\n\
         server: {{limits: {{upstream_connect_timeout: 5s}}}}\n\
         providers: {{secure: {{type: openai, base_url: \"https://localhost:{}\", models: [\"gpt-*\"]{ca_line}}}}}\n",
        dir.join("auths").display().to_string(),
        upstream.port
    );
    let config = Config::from_yaml(&yaml).unwrap();
    let credential =
        Credential::new_api_key("secure", Secret::from(VAULT_TOKEN.to_owned())).unwrap();
    config.auth.build().unwrap().put(&credential).unwrap();
    compose::gateway(&config, &slog::Logger::root(slog::Discard, slog::o!())).unwrap()
}

async fn chat(gateway: &Gateway) -> (StatusCode, Value) {
    let request = Request::post("/v1/chat/completions")
        .header("authorization", format!("Bearer {CLIENT_KEY}"))
        .body(Full::new(Bytes::from_static(
            br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#,
        )))
        .unwrap();
    let response = gateway.handle(request, "127.0.0.1:1".parse().unwrap()).await;
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn the_ca_file_is_trusted_and_h2_is_negotiated() {
    let upstream = tls_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway_for(&upstream, true, dir.path()).await;
    let (status, body) = chat(&gateway).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 4);
    let seen = upstream.seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let (version, headers) = &seen[0];
    assert_eq!(*version, http::Version::HTTP_2, "ALPN chose h2");
    assert_eq!(headers["authorization"], format!("Bearer {VAULT_TOKEN}"));
    let all: String =
        headers.iter().map(|(n, v)| format!("{n}: {}\n", v.to_str().unwrap_or(""))).collect();
    assert!(!all.contains(CLIENT_KEY), "{all}");
}

#[tokio::test]
async fn an_untrusted_upstream_is_refused() {
    let upstream = tls_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway_for(&upstream, false, dir.path()).await;
    let (status, body) = chat(&gateway).await;
    assert_eq!(status, 502, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("could not connect"), "{body}");
    assert!(upstream.seen.lock().unwrap().is_empty(), "no request reached the untrusted upstream");
}
