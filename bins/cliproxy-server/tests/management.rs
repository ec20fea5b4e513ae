//! The management API through the pipeline: the gate (no key → 404, remote peers, forwarded
//! calls and browsers → 403 unless allowed, bans per client address), the routes, hostile input (path traversal, bad bodies, wrong
//! methods), and that no answer repeats a planted token.
//!
//! The authorisation matrix and the peer rules run against gateways served on real listeners
//! and called over TCP from real source addresses, loopback and not, in a private network
//! namespace (`common/netns.rs`; it needs root, as CI has). Each matrix cell starts from seeded
//! state and checks what the call changed, on disk and in what the gateway does next.

#![allow(clippy::unwrap_used, clippy::panic, reason = "a failed expectation fails the test")]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use cliproxy_core::Secret;
use cliproxy_gateway::{Gateway, Server};
use cliproxy_netguard::{StateChange, StateStore};
use cliproxy_server::compose;
use cliproxy_server::config::{Config, ConfigSource};
use cliproxy_vault::{Credential, CredentialStore, FileStore};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

#[path = "common/netns.rs"]
mod netns;

const MGMT_KEY: &str = "mgmt-key-0123456789abcdef";
const PLANTED: &str = "sk-planted-management-token-40c1";

fn build(management: &str) -> (Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "auth:\n  api_keys: [\"client-key-0123456789abcdef\"]\n  dir: {:?}\n{management}\
         providers:\n  demo: {{type: mock}}\n  openai: {{type: openai, base_url: \"http://127.0.0.1:9\", models: [\"gpt-*\"]}}\n",
        dir.path().join("auths").display().to_string()
    );
    let config = Config::from_yaml(&yaml).unwrap();
    (compose::gateway(&config, &slog::Logger::root(slog::Discard, slog::o!())).unwrap(), dir)
}

fn enabled(extra: &str) -> String {
    format!("management: {{secret_key: \"{MGMT_KEY}\"{extra}}}\n")
}

async fn call(
    gateway: &Gateway,
    peer: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, http::HeaderMap, String) {
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
    let peer: SocketAddr = peer.parse().unwrap();
    let response = gateway.handle(request, peer).await;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, String::from_utf8_lossy(&bytes).into_owned())
}

const LOCAL: &str = "127.0.0.1:50000";
const KEY: (&str, &str) = ("x-management-key", MGMT_KEY);

#[tokio::test]
async fn without_a_key_every_route_is_404() {
    let (gateway, _dir) = build("");
    for (method, path) in [
        (Method::GET, "/v0/management/auths"),
        (Method::POST, "/v0/management/auths"),
        (Method::GET, "/v0/management/auths/export"),
        (Method::DELETE, "/v0/management/auths/openai"),
        (Method::GET, "/v0/management"),
        (Method::GET, "/v0/management/anything"),
    ] {
        let (status, _, body) = call(&gateway, LOCAL, method, path, &[KEY], "").await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    // An empty key (an unset variable defaulting to "") is also "off".
    let (gateway, _dir) = build("management: {secret_key: \"\"}\n");
    let (status, _, _) =
        call(&gateway, LOCAL, Method::GET, "/v0/management/auths", &[KEY], "").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn hostile_paths_bodies_and_methods_get_clear_errors_and_no_echo() {
    let (gateway, dir) = build(&enabled(""));
    let auths = "/v0/management/auths";
    let post = |body: String| {
        let gateway = gateway.clone();
        async move { call(&gateway, LOCAL, Method::POST, auths, &[KEY], &body).await }
    };
    let cases: Vec<(String, u16, &str)> = vec![
        ("not json".to_owned(), 400, "syntax error"),
        (json!({"provider": "openai"}).to_string(), 400, "`token` is required"),
        (json!({"provider": "nope", "token": PLANTED}).to_string(), 400, "not a configured upstream provider"),
        (json!({"provider": "demo", "token": PLANTED}).to_string(), 400, "not a configured upstream provider"),
        (json!({"provider": "openai", "token": PLANTED, "id": "../../etc/passwd"}).to_string(), 400, "invalid credential id"),
        (json!({"provider": "openai", "token": PLANTED, "id": ".hidden"}).to_string(), 400, "invalid credential id"),
        (json!({"provider": "openai", "token": PLANTED, PLANTED: 1}).to_string(), 400, "unknown field"),
        (json!({"provider": "openai", "token": [PLANTED]}).to_string(), 400, "wrong type"),
        (json!({"provider": "openai", "type": "jwt", "token": PLANTED}).to_string(), 400, "unknown credential type"),
        (json!({"provider": "openai", "token": PLANTED, "refresh_token": PLANTED}).to_string(), 400, "only `token`"),
        (json!({"provider": "openai", "type": "oauth", "token": PLANTED, "refresh_token": "r", "expires_in": 60, "token_url": "http://evil.example/t", "client_id": "c"}).to_string(), 400, "token_url"),
        (json!({"provider": "openai", "token": PLANTED, "base_url": "ftp://x"}).to_string(), 400, "base_url"),
        (json!({"provider": "openai", "token": PLANTED, "base_url": "http://10.0.0.7/v1"}).to_string(), 400, "providers.openai.allow_insecure"),
        (json!({"provider": "openai", "token": PLANTED, "label": "a\u{0}b"}).to_string(), 400, "label"),
        (format!("{{\"provider\": \"openai\", \"token\": \"{}\"}}", "x".repeat(70_000)), 413, "at most"),
        (format!("{}{}", "[".repeat(5000), "]".repeat(5000)), 400, "not a credential"),
    ];
    for (body, status, expected) in cases {
        let (got, _, text) = post(body).await;
        assert_eq!(got.as_u16(), status, "{text}");
        assert!(text.contains(expected), "expected {expected:?} in {text}");
        assert!(!text.contains(PLANTED), "{text}");
        serde_json::from_str::<Value>(&text).unwrap();
    }
    // Nothing was stored, and nothing was written outside auth.dir.
    // Hidden files are bookkeeping (the state database lives there by default), never
    // credentials.
    let files: Vec<_> = std::fs::read_dir(dir.path().join("auths"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|name| !name.to_string_lossy().starts_with('.'))
        .collect();
    assert!(files.is_empty(), "{files:?}");
    assert!(!dir.path().join("etc").exists());

    for (method, path, status) in [
        (Method::DELETE, "/v0/management/auths/openai/..%2F..%2Fetc", 400),
        (Method::DELETE, "/v0/management/auths/openai/.key-usage", 400),
        (Method::DELETE, "/v0/management/auths/openai/missing", 404),
        (Method::DELETE, "/v0/management/auths/nope", 404),
        (Method::PUT, "/v0/management/auths", 405),
        (Method::POST, "/v0/management/auths/export", 405),
        (Method::GET, "/v0/management/auths/openai", 405),
        (Method::GET, "/v0/management/auths/", 405),
        (Method::GET, "/v0/management/nothing", 404),
        (Method::GET, "/v0/managementx", 404),
    ] {
        let (got, headers, text) = call(&gateway, LOCAL, method.clone(), path, &[KEY], "").await;
        assert_eq!(got.as_u16(), status, "{method} {path}: {text}");
        if status == 405 {
            assert!(headers.contains_key("allow"), "{path}");
        }
    }
}

#[tokio::test]
async fn credentials_are_listed_without_secrets_and_replaced_by_id() {
    let (gateway, _dir) = build(&enabled(""));
    let body = json!({"provider": "openai", "token": PLANTED, "id": "oa-1", "label": "team a"});
    let (status, _, text) =
        call(&gateway, LOCAL, Method::POST, "/v0/management/auths", &[KEY], &body.to_string())
            .await;
    assert_eq!(status, 201, "{text}");
    let created: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(created["id"], "oa-1");
    assert_eq!(created["stored"], "plaintext");
    let replaced = json!({"provider": "openai", "token": "sk-second-token-000000", "id": "oa-1"});
    let (status, _, _) =
        call(&gateway, LOCAL, Method::POST, "/v0/management/auths", &[KEY], &replaced.to_string())
            .await;
    assert_eq!(status, 201);
    let (status, _, text) =
        call(&gateway, LOCAL, Method::GET, "/v0/management/auths", &[KEY], "").await;
    assert_eq!(status, 200);
    assert!(!text.contains(PLANTED) && !text.contains("sk-second"), "{text}");
    let list: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(list["auths"].as_array().unwrap().len(), 1);
    let (_, headers, text) =
        call(&gateway, LOCAL, Method::GET, "/v0/management/auths/export", &[KEY], "").await;
    assert_eq!(headers["cache-control"], "no-store");
    let export: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(export["credentials"][0]["token"], "sk-second-token-000000");
}

// The authorisation matrix and the peer rules, over real sockets.
//
// Each gateway below is served on a real listener inside a private network namespace
// (`common/netns.rs`), and each call is a new TCP connection from a chosen source address, so
// the peer the gate judges is the one the kernel reports. 198.18.0.0/15 is the range reserved
// for network tests (RFC 2544): its addresses are non-loopback and exist only in the namespace.

/// The client key in the configuration the gateway starts with.
const CLIENT_KEY: &str = "client-key-0123456789abcdef";
/// A client key the configuration file gains after the start: only a reload puts it in force.
const RELOADED_KEY: &str = "client-key-reloaded-0123456789";
/// The credentials in the vault directory before each cell: (provider, id, token).
const SEEDED: [(&str, &str, &str); 3] = [
    ("openai", "oa-1", "sk-seeded-openai-one-000000000"),
    ("openai", "oa-2", "sk-seeded-openai-two-000000000"),
    ("claude", "cl-1", "sk-ant-seeded-claude-000000000"),
];
/// The token of the credential the allowed `POST /auths` adds.
const ADDED_TOKEN: &str = "sk-added-by-the-matrix-0000000";
/// `server.message` of the seeded configuration (maintenance is off).
const SEEDED_MESSAGE: &str = "seeded maintenance message";
/// The runtime denylist entry in the state database before each cell.
const SEEDED_NETWORK: &str = "198.18.1.0/24";
const WRONG_KEY: &str = "wrong-key-000000000";
/// The name of the client key created at run time in the state database before each cell.
const SEEDED_STORE_KEY: &str = "seeded-store-key";

/// Loopback callers connect from here.
const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// A loopback peer that is banned before its cell: only the ban refuses it.
const BANNED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 9);
/// A loopback peer whose management ban is in the state database before each cell, until
/// the allowed `DELETE /security/bans/{ip}` lifts it.
const SEEDED_BAN: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 7);
/// The client a proxy names in `X-Forwarded-For` for the forwarded caller.
const FORWARDED_CLIENT: &str = "198.51.100.7";
/// [`SEEDED_BAN`] as the API writes it, which no refusal may show.
const SEEDED_BAN_TEXT: &str = "127.0.0.7";
/// A non-loopback peer.
const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// Another non-loopback peer, for "a ban is per peer".
const OTHER_REMOTE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 4);
/// The address the allowed `POST /security/ip-denylist` denies.
const TO_DENY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
/// An address inside [`SEEDED_NETWORK`], denied until the allowed DELETE removes the entry.
const SEEDED_DENIED: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
/// Every non-loopback address the tests connect from.
const NAMESPACE_ADDRESSES: [Ipv4Addr; 4] = [REMOTE, OTHER_REMOTE, TO_DENY, SEEDED_DENIED];

/// How long one request may take before the test fails: a bound for a hung gateway, far
/// above what a loaded machine needs for a loopback call.
const ANSWER_WITHIN: Duration = Duration::from_secs(20);

/// Runs `test` on a current-thread runtime inside a private network namespace.
fn in_private_network<F: Future<Output = ()> + 'static>(test: impl FnOnce() -> F + Send + 'static) {
    netns::run_in_private_network(&NAMESPACE_ADDRESSES, move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(test());
    });
}

/// One gateway served on a real listener (every address of the namespace, port 0), with
/// seeded state: [`SEEDED`] in its vault directory, [`SEEDED_NETWORK`] in its state database,
/// maintenance off with [`SEEDED_MESSAGE`], and a config file that has gained
/// [`RELOADED_KEY`] since the start.
struct Served {
    dir: tempfile::TempDir,
    /// The client key created at run time ([`SEEDED_STORE_KEY`]) seeded in the state database.
    store_key: String,
    port: u16,
    stop: tokio::sync::oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<cliproxy_gateway::Result<()>>,
}

impl Served {
    async fn start(management: &str) -> Self {
        Self::start_on("0.0.0.0", "", management).await
    }

    /// `server_extra` is added to the `server:` mapping (`, trusted_proxies: [...]`).
    async fn start_on(host: &str, server_extra: &str, management: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let auths = dir.path().join("auths");
        let store = FileStore::open(&auths).unwrap();
        for (provider, id, token) in SEEDED {
            let credential = Credential::new_api_key(provider, Secret::from(token.to_owned()))
                .unwrap()
                .with_id(id)
                .unwrap();
            store.put(&credential).unwrap();
        }
        let state_path = dir.path().join("state.db");
        let mut state_config = cliproxy_netguard::StateConfig::default();
        state_config.path = Some(state_path.clone());
        let state = cliproxy_netguard::SqliteStore::open(&state_config).unwrap();
        state.submit(StateChange::DenyAdd(cliproxy_netguard::DenyEntry {
            network: cliproxy_netguard::parse_network(SEEDED_NETWORK).unwrap(),
            reason: "seeded".to_owned(),
            created_at: 1,
            expires_at: None,
        }));
        state.submit(StateChange::Ban(cliproxy_netguard::Ban {
            ip: SEEDED_BAN.into(),
            until: unix_now() + 3600,
        }));
        let seeded_key = cliproxy_vault::ClientKeyRecord::create(
            cliproxy_vault::ClientKeySpec::new(SEEDED_STORE_KEY),
            unix_now(),
        )
        .unwrap();
        let record = &seeded_key.record;
        state.submit(StateChange::ClientKeyPut(cliproxy_netguard::StoredClientKey {
            id: record.id.clone(),
            digest: record.digest.clone(),
            record_json: record.to_stored_json().unwrap(),
        }));
        let store_key = seeded_key.key.expose().to_owned();
        state.close().unwrap();
        let config_file = dir.path().join("config.yaml");
        let write = |keys: &[&str]| {
            let yaml = format!(
                "server: {{host: \"{host}\", port: 0, message: \"{SEEDED_MESSAGE}\"{server_extra}}}\n\
                 auth:\n  api_keys: {keys:?}\n  dir: {:?}\nstate: {{path: {:?}}}\n{management}\
                 providers:\n  demo: {{type: mock}}\n\
                 \x20 openai: {{type: openai, base_url: \"http://127.0.0.1:9\", models: [\"gpt-*\"]}}\n\
                 \x20 claude: {{type: claude, base_url: \"http://127.0.0.1:9\", models: [\"claude-*\"]}}\n",
                auths.display().to_string(),
                state_path.display().to_string(),
            );
            std::fs::write(&config_file, yaml).unwrap();
        };
        write(&[CLIENT_KEY]);
        let source = ConfigSource::File(config_file.clone());
        let config = Config::load(&source).unwrap();
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let gateway = compose::gateway(&config, &log).unwrap();
        gateway.set_config_loader(Box::new(source));
        write(&[CLIENT_KEY, RELOADED_KEY]);
        let server = Server::bind(&config.server, gateway, log).await.unwrap();
        let port = server.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Self { dir, store_key, port, stop, serving }
    }

    /// One request on a new connection from `from`; `None` when the gateway closed the
    /// connection without an answer (it drops a denied address at accept).
    async fn send(
        &self,
        from: Ipv4Addr,
        method: &Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Option<Answer> {
        let exchange = async {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::from((from, 0))).unwrap();
            // Loopback callers call 127.0.0.1; the others call their own address (the wildcard
            // listener answers there too), which keeps every connection on the namespace's `lo`
            // with no route to set up.
            let to = if from.is_loopback() { LOOPBACK } else { from };
            let stream = socket.connect(SocketAddr::from((to, self.port))).await.unwrap();
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
            tokio::spawn(connection);
            let mut request = Request::builder()
                .method(method.clone())
                .uri(path)
                .header("host", "gateway.test")
                .header("connection", "close");
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let request = request.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
            let response = sender.send_request(request).await.ok()?;
            let (parts, body) = response.into_parts();
            let bytes = body.collect().await.unwrap().to_bytes();
            Some(Answer {
                status: parts.status.as_u16(),
                headers: parts.headers,
                text: String::from_utf8_lossy(&bytes).into_owned(),
            })
        };
        tokio::time::timeout(ANSWER_WITHIN, exchange).await.unwrap_or_else(|_| {
            panic!("{method} {path} from {from}: no answer in {ANSWER_WITHIN:?}")
        })
    }

    /// A call that must be answered.
    async fn call(
        &self,
        from: Ipv4Addr,
        method: &Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Answer {
        self.send(from, method, path, headers, body)
            .await
            .unwrap_or_else(|| panic!("{method} {path} from {from}: connection closed unanswered"))
    }

    /// What the gateway's state looks like from outside the management API, so that a gateway
    /// whose management API is off is observed the same way.
    async fn seen(&self) -> Seen {
        let credentials = FileStore::open(&self.dir.path().join("auths"))
            .unwrap()
            .load_all()
            .unwrap()
            .into_iter()
            .map(|c| (c.id.clone(), (c.provider.clone(), c.secret.bearer().expose().to_owned())))
            .collect();
        let chat = |key: &str| {
            let bearer = format!("Bearer {key}");
            async move {
                let body = r#"{"model":"mock-1","messages":[{"role":"user","content":"hi"}]}"#;
                let headers = [("authorization", bearer.as_str())];
                self.call(LOOPBACK, &Method::POST, "/v1/chat/completions", &headers, body)
                    .await
                    .status
            }
        };
        let served = |from| async move {
            self.send(from, &Method::GET, "/healthz", &[], "").await.is_some()
        };
        let seeded_ban_in_force =
            match self.call(SEEDED_BAN, &Method::GET, "/v0/management/status", &[KEY], "").await {
                Answer { status: 403, .. } => Some(true),
                Answer { status: 200, .. } => Some(false),
                Answer { status: 404, .. } => None,
                other => panic!("the call from the seeded ban's address: {other:?}"),
            };
        // The state database is read through a second connection, as a restart would read it.
        let mut state_config = cliproxy_netguard::StateConfig::default();
        state_config.path = Some(self.dir.path().join("state.db"));
        let state = cliproxy_netguard::SqliteStore::open(&state_config).unwrap();
        let seeded_ban_stored = state
            .load_bans()
            .unwrap()
            .iter()
            .any(|ban| ban.ip == std::net::IpAddr::from(SEEDED_BAN));
        let mut store_keys: Vec<String> = state
            .load_client_keys()
            .unwrap()
            .iter()
            .map(|row| {
                cliproxy_vault::ClientKeyRecord::from_stored(&row.id, &row.digest, &row.record_json)
                    .unwrap()
                    .name
            })
            .collect();
        store_keys.sort();
        state.close().unwrap();
        Seen {
            store_keys,
            store_key_chat: chat(&self.store_key).await,
            seeded_ban_in_force,
            seeded_ban_stored,
            credentials,
            to_deny_served: served(TO_DENY).await,
            seeded_denied_served: served(SEEDED_DENIED).await,
            chat: chat(CLIENT_KEY).await,
            reloaded_key_chat: chat(RELOADED_KEY).await,
        }
    }

    async fn stop(self) {
        self.stop.send(()).unwrap();
        self.serving.await.unwrap().unwrap();
    }
}

/// An answer as the client received it.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: http::HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Result<Value, String> {
        serde_json::from_str(&self.text).map_err(|e| format!("not JSON ({e}): {}", self.text))
    }
}

/// The state a management call may change, as seen without the management API.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    /// Whether [`SEEDED_BAN`] is refused by the management API with the right key (`None`
    /// when the API is off: no call tells).
    seeded_ban_in_force: Option<bool>,
    /// Whether the state database holds [`SEEDED_BAN`]'s ban.
    seeded_ban_stored: bool,
    /// The credentials on disk in `auth.dir`: id → (provider, token).
    credentials: BTreeMap<String, (String, String)>,
    /// Whether a connection from [`TO_DENY`] is served (not dropped by the denylist).
    to_deny_served: bool,
    /// Whether a connection from [`SEEDED_DENIED`] is served.
    seeded_denied_served: bool,
    /// The status of a chat completion with [`CLIENT_KEY`] (503 in maintenance).
    chat: u16,
    /// The status of a chat completion with [`RELOADED_KEY`].
    reloaded_key_chat: u16,
    /// The names of the client keys created at run time in the state database.
    store_keys: Vec<String>,
    /// The status of a chat completion with the seeded run-time key ([`SEEDED_STORE_KEY`]).
    store_key_chat: u16,
}

impl Seen {
    /// The fields in which `self` differs from `other`, as `field: self → other`.
    fn differences(&self, other: &Self) -> String {
        let mut out = Vec::new();
        if self.credentials != other.credentials {
            // Ids only: the tokens are test values, but a message listing them is noise.
            let ids = |seen: &Self| seen.credentials.keys().cloned().collect::<Vec<_>>();
            out.push(format!("credentials on disk: {:?} → {:?}", ids(self), ids(other)));
            for (id, (provider, token)) in &other.credentials {
                if self.credentials.get(id).is_some_and(|(p, t)| p != provider || t != token) {
                    out.push(format!("credential {id} rewritten"));
                }
            }
        }
        if self.seeded_ban_in_force != other.seeded_ban_in_force {
            let (a, b) = (self.seeded_ban_in_force, other.seeded_ban_in_force);
            out.push(format!("{SEEDED_BAN} banned: {a:?} → {b:?}"));
        }
        if self.seeded_ban_stored != other.seeded_ban_stored {
            let (a, b) = (self.seeded_ban_stored, other.seeded_ban_stored);
            out.push(format!("{SEEDED_BAN}'s ban stored: {a} → {b}"));
        }
        if self.to_deny_served != other.to_deny_served {
            let (a, b) = (self.to_deny_served, other.to_deny_served);
            out.push(format!("{TO_DENY} served: {a} → {b}"));
        }
        if self.seeded_denied_served != other.seeded_denied_served {
            let (a, b) = (self.seeded_denied_served, other.seeded_denied_served);
            out.push(format!("{SEEDED_DENIED} served: {a} → {b}"));
        }
        if self.chat != other.chat {
            out.push(format!("chat status: {} → {}", self.chat, other.chat));
        }
        if self.reloaded_key_chat != other.reloaded_key_chat {
            let (a, b) = (self.reloaded_key_chat, other.reloaded_key_chat);
            out.push(format!("chat status with the reloaded key: {a} → {b}"));
        }
        if self.store_keys != other.store_keys {
            out.push(format!("stored client keys: {:?} → {:?}", self.store_keys, other.store_keys));
        }
        if self.store_key_chat != other.store_key_chat {
            let (a, b) = (self.store_key_chat, other.store_key_chat);
            out.push(format!("chat status with the seeded run-time key: {a} → {b}"));
        }
        out.join(", ")
    }

    /// What [`Served::start`] seeded, seen with the management API on or off.
    fn seeded(management_on: bool) -> Self {
        Self {
            seeded_ban_in_force: management_on.then_some(true),
            seeded_ban_stored: true,
            credentials: SEEDED
                .iter()
                .map(|(provider, id, token)| {
                    ((*id).to_owned(), ((*provider).to_owned(), (*token).to_owned()))
                })
                .collect(),
            to_deny_served: true,
            seeded_denied_served: false,
            chat: 200,
            reloaded_key_chat: 401,
            store_keys: vec![SEEDED_STORE_KEY.to_owned()],
            store_key_chat: 200,
        }
    }
}

/// What a route's allowed call is and does: the example path and body, the success status,
/// the change it makes to [`Seen`], and what its answer must say.
struct Allowed {
    path: &'static str,
    body: String,
    status: u16,
    effect: fn(&mut Seen),
    answer: AnswerCheck,
}

type AnswerCheck = fn(&Answer) -> Result<(), String>;

fn unchanged(_: &mut Seen) {}

/// Fails unless `got == want`, naming what was compared.
fn same<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Result<(), String> {
    if got == want { Ok(()) } else { Err(format!("{what}: expected {want:?}, got {got:?}")) }
}

/// Fails when an answer holds a field that only a key or its digest would fill.
fn no_key_shown(answer: &Answer) -> Result<(), String> {
    if answer.text.contains("\"key\"") || answer.text.contains("digest") {
        Err(format!("the answer shows a key or digest: {}", answer.text))
    } else {
        Ok(())
    }
}

/// The ids in a JSON array of objects, sorted.
fn ids(entries: &Value, field: &str) -> Vec<String> {
    let mut ids: Vec<String> = entries
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e[field].as_str().unwrap_or_default().to_owned())
        .collect();
    ids.sort();
    ids
}

fn seeded_ids() -> Vec<String> {
    let mut ids: Vec<String> = SEEDED.iter().map(|(_, id, _)| (*id).to_owned()).collect();
    ids.sort();
    ids
}

/// Each route's allowed call, from the router's table: a route added to the table without an
/// expectation here fails the test.
fn allowed(route: &cliproxy_gateway::ManagementRoute) -> Allowed {
    let (path, body, status, effect, answer): (_, String, _, fn(&mut Seen), AnswerCheck) =
        match (route.method, route.path) {
            ("GET", "/auths") => ("/auths", String::new(), 200, unchanged, |a: &Answer| {
                let list = a.json()?;
                same("listed ids", ids(&list["auths"], "id"), seeded_ids())?;
                match SEEDED.iter().find(|(_, _, token)| a.text.contains(token)) {
                    Some(_) => Err(format!("the list shows a token: {}", a.text)),
                    None => Ok(()),
                }
            }),
            ("POST", "/auths") => (
                "/auths",
                json!({"provider": "openai", "id": "oa-new", "token": ADDED_TOKEN}).to_string(),
                201,
                |seen| {
                    seen.credentials
                        .insert("oa-new".to_owned(), ("openai".to_owned(), ADDED_TOKEN.to_owned()));
                },
                |a| {
                    let created = a.json()?;
                    same("created id", &created["id"], &json!("oa-new"))?;
                    same("created provider", &created["provider"], &json!("openai"))
                },
            ),
            ("GET", "/auths/export") => ("/auths/export", String::new(), 200, unchanged, |a| {
                same(
                    "cache-control",
                    a.headers.get("cache-control").and_then(|v| v.to_str().ok()),
                    Some("no-store"),
                )?;
                let export = a.json()?;
                let mut exported: Vec<(String, String)> = export["credentials"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| {
                        let field = |name: &str| c[name].as_str().unwrap_or_default().to_owned();
                        (field("id"), field("token"))
                    })
                    .collect();
                exported.sort();
                let mut seeded: Vec<(String, String)> = SEEDED
                    .iter()
                    .map(|(_, id, token)| ((*id).to_owned(), (*token).to_owned()))
                    .collect();
                seeded.sort();
                same("exported (id, token)", exported, seeded)
            }),
            ("DELETE", "/auths/{provider}") => (
                "/auths/openai",
                String::new(),
                200,
                |seen| seen.credentials.retain(|_, (provider, _)| provider != "openai"),
                |a| {
                    let mut deleted: Vec<String> =
                        serde_json::from_value(a.json()?["deleted"].clone()).map_err(|e| {
                            format!("`deleted` is not a list of ids ({e}): {}", a.text)
                        })?;
                    deleted.sort();
                    same("deleted", deleted, vec!["oa-1".to_owned(), "oa-2".to_owned()])
                },
            ),
            ("DELETE", "/auths/{provider}/{id}") => (
                "/auths/openai/oa-1",
                String::new(),
                200,
                |seen| {
                    seen.credentials.remove("oa-1");
                },
                |a| same("deleted", &a.json()?["deleted"], &json!(["oa-1"])),
            ),
            ("GET", "/security/ip-denylist") => {
                ("/security/ip-denylist", String::new(), 200, unchanged, |a| {
                    let list = a.json()?;
                    same("denylist", ids(&list["entries"], "ip"), vec![SEEDED_NETWORK.to_owned()])?;
                    same("reason", &list["entries"][0]["reason"], &json!("seeded"))
                })
            }
            ("POST", "/security/ip-denylist") => (
                "/security/ip-denylist",
                json!({"ip": TO_DENY.to_string(), "reason": "matrix"}).to_string(),
                201,
                |seen| seen.to_deny_served = false,
                |a| {
                    let entry = a.json()?;
                    same("denied", &entry["ip"], &json!(format!("{TO_DENY}/32")))?;
                    same("reason", &entry["reason"], &json!("matrix"))
                },
            ),
            ("DELETE", "/security/ip-denylist/{network..}") => (
                "/security/ip-denylist/198.18.1.0/24",
                String::new(),
                200,
                |seen| seen.seeded_denied_served = true,
                |a| same("removed", &a.json()?["removed"], &json!(SEEDED_NETWORK)),
            ),
            ("GET", "/security/bans") => ("/security/bans", String::new(), 200, unchanged, |a| {
                let list = a.json()?;
                same("bans", ids(&list["bans"], "ip"), vec![SEEDED_BAN.to_string()])?;
                let left = list["bans"][0]["remaining_s"].as_u64().unwrap_or_default();
                if (3500..=3600).contains(&left) {
                    Ok(())
                } else {
                    Err(format!("remaining_s {left} is not the seeded hour"))
                }
            }),
            ("DELETE", "/security/bans/{ip}") => (
                "/security/bans/127.0.0.7",
                String::new(),
                200,
                |seen| (seen.seeded_ban_in_force, seen.seeded_ban_stored) = (Some(false), false),
                |a| same("lifted", &a.json()?["lifted"], &json!(SEEDED_BAN.to_string())),
            ),
            ("GET", "/maintenance") => ("/maintenance", String::new(), 200, unchanged, |a| {
                same("maintenance", a.json()?, json!({"enabled": false, "message": SEEDED_MESSAGE}))
            }),
            ("PUT", "/maintenance") => (
                "/maintenance",
                json!({"enabled": true, "message": "matrix maintenance"}).to_string(),
                200,
                // Maintenance refuses before client keys are checked: every key gets 503.
                |seen| {
                    (seen.chat, seen.reloaded_key_chat, seen.store_key_chat) = (503, 503, 503);
                },
                |a| {
                    same(
                        "maintenance",
                        a.json()?,
                        json!({"enabled": true, "message": "matrix maintenance"}),
                    )
                },
            ),
            ("POST", "/config/reload") => (
                "/config/reload",
                String::new(),
                200,
                |seen| seen.reloaded_key_chat = 200,
                |a| {
                    let report = a.json()?;
                    same("reloaded", &report["reloaded"], &json!(true))?;
                    same("applied", &report["applied"], &json!(["auth.api_keys[1]"]))
                },
            ),
            ("GET", "/status") => ("/status", String::new(), 200, unchanged, |a| {
                let status = a.json()?;
                same("version", &status["version"], &json!(env!("CARGO_PKG_VERSION")))?;
                same("management", &status["layers"]["management"], &json!({"enabled": true}))
            }),
            ("GET", "/usage") => {
                ("/usage?from=2h&by=provider", String::new(), 200, unchanged, |a| {
                    let usage = a.json()?;
                    same("by", &usage["by"], &json!("provider"))?;
                    same("bucket", &usage["bucket"], &json!("hour"))?;
                    same("cost is a decimal string", usage["totals"]["cost_usd"].is_string(), true)
                })
            }
            ("GET", "/client-keys") => ("/client-keys", String::new(), 200, unchanged, |a| {
                let list = a.json()?;
                let store: Vec<&Value> = list["client_keys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|k| k["source"] == "store")
                    .collect();
                same("stored keys listed", store.len(), 1)?;
                same("stored key", &store[0]["name"], &json!(SEEDED_STORE_KEY))?;
                no_key_shown(a)
            }),
            ("POST", "/client-keys") => (
                "/client-keys",
                json!({"name": "matrix-key", "models": ["mock-*"]}).to_string(),
                201,
                |seen| {
                    seen.store_keys.push("matrix-key".to_owned());
                    seen.store_keys.sort();
                },
                |a| {
                    let created = a.json()?;
                    same("created name", &created["name"], &json!("matrix-key"))?;
                    let key = created["key"].as_str().unwrap_or_default();
                    same("key shape", (key.starts_with("cpk-"), key.len()), (true, 52))
                },
            ),
            ("GET", "/client-keys/{name}") => {
                ("/client-keys/seeded-store-key", String::new(), 200, unchanged, |a| {
                    let key = a.json()?;
                    same("name", &key["name"], &json!(SEEDED_STORE_KEY))?;
                    same("source", &key["source"], &json!("store"))?;
                    no_key_shown(a)
                })
            }
            ("PATCH", "/client-keys/{name}") => (
                "/client-keys/seeded-store-key",
                json!({"disabled": true}).to_string(),
                200,
                |seen| seen.store_key_chat = 401,
                |a| same("disabled", &a.json()?["disabled"], &json!(true)),
            ),
            ("DELETE", "/client-keys/{name}") => (
                "/client-keys/seeded-store-key",
                String::new(),
                204,
                |seen| {
                    seen.store_key_chat = 401;
                    seen.store_keys.clear();
                },
                |a| same("body", a.text.as_str(), ""),
            ),
            (method, path) => {
                panic!("no expectation for the management route {method} {path}: add one here")
            }
        };
    Allowed { path, body, status, effect, answer }
}

/// The kinds of caller of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    ManagementOff,
    NoKey,
    WrongKey,
    RemotePeer,
    /// The right key through a trusted proxy on loopback, naming a remote client.
    Forwarded,
    /// The right key from loopback, with an `Origin` header (a web page).
    BrowserOrigin,
    BannedPeer,
    RightKey,
}

impl Caller {
    const ALL: [Self; 8] = [
        Self::ManagementOff,
        Self::NoKey,
        Self::WrongKey,
        Self::RemotePeer,
        Self::Forwarded,
        Self::BrowserOrigin,
        Self::BannedPeer,
        Self::RightKey,
    ];

    /// What the gateway's `server:` mapping gains.
    fn server(self) -> &'static str {
        match self {
            Self::Forwarded => ", trusted_proxies: [\"127.0.0.1/32\"]",
            _ => "",
        }
    }

    /// The gateway's `management:` section.
    fn management(self) -> String {
        match self {
            Self::ManagementOff => String::new(),
            // Two failures ban, so that the ban can be set up with two calls.
            Self::BannedPeer => enabled(", max_failures: 2"),
            _ => enabled(""),
        }
    }

    /// Where the call comes from and the key it presents.
    fn peer_and_headers(self) -> (Ipv4Addr, Vec<(&'static str, &'static str)>) {
        match self {
            Self::ManagementOff | Self::RightKey => (LOOPBACK, vec![KEY]),
            Self::NoKey => (LOOPBACK, vec![]),
            Self::WrongKey => (LOOPBACK, vec![("x-management-key", WRONG_KEY)]),
            Self::RemotePeer => (REMOTE, vec![KEY]),
            Self::Forwarded => (LOOPBACK, vec![KEY, ("x-forwarded-for", FORWARDED_CLIENT)]),
            Self::BrowserOrigin => (LOOPBACK, vec![KEY, ("origin", "https://evil.example")]),
            Self::BannedPeer => (BANNED, vec![KEY]),
        }
    }

    /// The refusal's status and a fragment of its answer that says why.
    fn refusal(self) -> Option<(u16, &'static str)> {
        match self {
            Self::ManagementOff => Some((404, "no such route")),
            Self::NoKey => Some((401, "no management key")),
            Self::WrongKey => Some((401, "invalid management key")),
            Self::RemotePeer => Some((403, "management.allow_remote")),
            Self::Forwarded => Some((403, "forwarded by a proxy")),
            Self::BrowserOrigin => Some((403, "Origin header")),
            Self::BannedPeer => Some((403, "banned")),
            Self::RightKey => None,
        }
    }
}

/// Checks one cell: a fresh gateway with the seeded state, the call, and what changed.
async fn check_cell(
    route: &cliproxy_gateway::ManagementRoute,
    caller: Caller,
) -> Result<(), String> {
    let cell = allowed(route);
    let path = format!("/v0/management{}", cell.path);
    let method: Method = route.method.parse().unwrap();
    let served = Served::start_on("0.0.0.0", caller.server(), &caller.management()).await;
    if caller == Caller::BannedPeer {
        let wrong = [("x-management-key", WRONG_KEY)];
        for _ in 0..2 {
            let answer =
                served.call(BANNED, &Method::GET, "/v0/management/status", &wrong, "").await;
            assert_eq!(answer.status, 401, "setting up the ban: {}", answer.text);
        }
    }
    let before = served.seen().await;
    assert!(
        before == Seen::seeded(caller != Caller::ManagementOff),
        "the seeded state is not in force before the call ({}, from the seeded state to the one seen)",
        Seen::seeded(caller != Caller::ManagementOff).differences(&before)
    );
    let (peer, headers) = caller.peer_and_headers();
    let answer = served.call(peer, &method, &path, &headers, &cell.body).await;
    let after = served.seen().await;
    let result = match caller.refusal() {
        Some((status, why)) => {
            let mut problems = Vec::new();
            if answer.status != status {
                problems.push(format!("expected {status}, got {}", answer.status));
            }
            if !answer.text.contains(why) {
                problems.push(format!("the answer does not say {why:?}"));
            }
            if caller == Caller::BannedPeer && !answer.headers.contains_key("retry-after") {
                problems.push("no Retry-After".to_owned());
            }
            // A refusal shows nothing of the state: no token, id, entry or message.
            let shown: Vec<&str> = SEEDED
                .iter()
                .flat_map(|(_, id, token)| [*id, *token])
                .chain([SEEDED_NETWORK, SEEDED_MESSAGE, SEEDED_BAN_TEXT, "uptime_s"])
                .filter(|seed| answer.text.contains(seed))
                .collect();
            if !shown.is_empty() {
                problems.push(format!("the refusal shows {shown:?}"));
            }
            if after != before {
                problems.push(format!("the state changed ({})", before.differences(&after)));
            }
            if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
        }
        None => {
            let mut expected = before.clone();
            (cell.effect)(&mut expected);
            let mut problems = Vec::new();
            // A refusal is never a success: an allowed call expected to fail could not be told
            // from a refused one.
            if !(200..300).contains(&cell.status) {
                problems.push(format!("the expectation {} is not a success", cell.status));
            }
            if answer.status != cell.status {
                problems.push(format!("expected {}, got {}", cell.status, answer.status));
            }
            if let Err(problem) = (cell.answer)(&answer) {
                problems.push(problem);
            }
            if after != expected {
                let wrong = expected.differences(&after);
                problems.push(format!("the state is not what the call should make it ({wrong}, from the expected state to the one seen)"));
            }
            // The management API's own list agrees with the disk.
            let listed =
                served.call(LOOPBACK, &Method::GET, "/v0/management/auths", &[KEY], "").await;
            let listed = ids(&listed.json()?["auths"], "id");
            let on_disk: Vec<String> = after.credentials.keys().cloned().collect();
            if listed != on_disk {
                problems.push(format!("GET /auths lists {listed:?}, the disk holds {on_disk:?}"));
            }
            if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
        }
    };
    served.stop().await;
    result.map_err(|problem| {
        format!("{} {path} by {caller:?}: {problem}: {}", route.method, answer.text)
    })
}

/// The authorisation matrix, generated from the router's table: every route × {management
/// off, no key, wrong key, remote peer, forwarded through a trusted proxy, browser (`Origin`),
/// banned peer, right key}, each cell on a fresh gateway
/// with seeded state, called over TCP from the caller's own address. A refused call gets its
/// status and reason, shows none of the state, and changes nothing; an allowed call gets a
/// success status (which no refusal shares), a correct answer, and exactly its change.
#[test]
fn every_route_answers_each_kind_of_caller_as_expected() {
    in_private_network(|| async {
        let mut failures = Vec::new();
        let mut checked = 0;
        for route in cliproxy_gateway::MANAGEMENT_ROUTES {
            for caller in Caller::ALL {
                checked += 1;
                if let Err(failure) = check_cell(route, caller).await {
                    failures.push(failure);
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        cliproxy_e2e::report::cases(
            "management-matrix",
            "every_route_answers_each_kind_of_caller_as_expected",
            checked,
        );
        cliproxy_e2e::report::figure(
            "management-matrix",
            "management routes in the router's table",
            cliproxy_gateway::MANAGEMENT_ROUTES.len(),
            "routes",
        );
    });
}

#[test]
fn remote_peers_are_refused_unless_allowed_and_bans_follow_the_client_address() {
    in_private_network(|| async {
        let status = "/v0/management/status";
        // Without `allow_remote`, the right key from a non-loopback peer is refused. The
        // listener is IPv6 here, so IPv4 peers arrive as IPv4-mapped addresses: mapped
        // loopback is loopback, a mapped remote address is remote.
        let served = Served::start_on("::", "", &enabled("")).await;
        let answer = served.call(REMOTE, &Method::GET, status, &[KEY], "").await;
        assert_eq!(answer.status, 403, "{}", answer.text);
        assert!(answer.text.contains("management.allow_remote"), "{}", answer.text);
        let answer = served.call(LOOPBACK, &Method::GET, status, &[KEY], "").await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        served.stop().await;

        let served = Served::start(&enabled(", allow_remote: true, max_failures: 2")).await;
        let answer = served.call(REMOTE, &Method::GET, status, &[KEY], "").await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        // Wrong keys with forwarded headers naming another client count against the TCP peer.
        for _ in 0..2 {
            let forged = [("x-management-key", WRONG_KEY), ("x-forwarded-for", "10.9.9.9")];
            let answer = served.call(REMOTE, &Method::GET, status, &forged, "").await;
            assert_eq!(answer.status, 401, "{}", answer.text);
            assert!(!answer.text.contains(WRONG_KEY), "{}", answer.text);
        }
        let answer = served.call(REMOTE, &Method::GET, status, &[KEY], "").await;
        assert_eq!(answer.status, 403, "{}", answer.text);
        assert!(answer.headers.contains_key("retry-after"));
        // Forwarded headers name another client, but the TCP peer is the banned one.
        let forwarded = [KEY, ("x-forwarded-for", "10.7.7.7"), ("forwarded", "for=10.7.7.7")];
        let answer = served.call(REMOTE, &Method::GET, status, &forwarded, "").await;
        assert_eq!(answer.status, 403, "{}", answer.text);
        // Another peer is unaffected.
        let answer = served.call(OTHER_REMOTE, &Method::GET, status, &[KEY], "").await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        served.stop().await;

        // Behind a trusted proxy (REMOTE here), the client its header names is judged and
        // banned, not the proxy that every client shares.
        let served = Served::start_on(
            "0.0.0.0",
            &format!(", trusted_proxies: [\"{REMOTE}/32\"]"),
            &enabled(", allow_remote: true, max_failures: 2"),
        )
        .await;
        for _ in 0..2 {
            let wrong = [("x-management-key", WRONG_KEY), ("x-forwarded-for", "10.9.9.9")];
            let answer = served.call(REMOTE, &Method::GET, status, &wrong, "").await;
            assert_eq!(answer.status, 401, "{}", answer.text);
        }
        let from = |client| [KEY, ("x-forwarded-for", client)];
        let answer = served.call(REMOTE, &Method::GET, status, &from("10.9.9.9"), "").await;
        assert_eq!(answer.status, 403, "{}", answer.text);
        let answer = served.call(REMOTE, &Method::GET, status, &from("10.9.9.8"), "").await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        let answer = served.call(REMOTE, &Method::GET, status, &[KEY], "").await;
        assert_eq!(answer.status, 200, "the proxy itself was banned: {}", answer.text);
        served.stop().await;
    });
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// A gateway whose management API answers remote callers and bans after three wrong keys,
/// with `server.security.rate_limiting` set to `rate_limiting`.
fn build_limited(rate_limiting: &str) -> (Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "server:\n  security:\n    rate_limiting: {{{rate_limiting}}}\n\
         auth:\n  api_keys: [\"client-key-0123456789abcdef\"]\n  dir: {:?}\n{}\
         providers:\n  demo: {{type: mock}}\n",
        dir.path().join("auths").display().to_string(),
        enabled(", allow_remote: true, max_failures: 3"),
    );
    let config = Config::from_yaml(&yaml).unwrap();
    (compose::gateway(&config, &slog::Logger::root(slog::Discard, slog::o!())).unwrap(), dir)
}

#[tokio::test]
async fn refused_calls_are_charged_to_the_per_ip_bucket_and_ipv6_bans_cover_the_64() {
    let status = "/v0/management/status";
    let wrong = [("x-management-key", "mgmt-key-wrong-000000000000")];

    // Per-IP bucket of burst 2: two refused calls are answered 401, the third 429 with
    // `Retry-After`; the right key still gets in, and another address is unaffected.
    let (gateway, _dir) = build_limited("enabled: true, requests_per_second: 1, burst: 2");
    for expected in [401, 401, 429] {
        let (code, headers, text) =
            call(&gateway, "10.0.0.1:4000", Method::GET, status, &[], "").await;
        assert_eq!(code.as_u16(), expected, "{text}");
        assert_eq!(headers.contains_key("retry-after"), expected == 429, "{headers:?}");
    }
    let (code, _, text) = call(&gateway, "10.0.0.1:4000", Method::GET, status, &[KEY], "").await;
    assert_eq!(code, StatusCode::OK, "{text}");
    let (code, _, text) = call(&gateway, "10.0.0.2:4000", Method::GET, status, &wrong, "").await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{text}");

    // Bucket off: three wrong keys from three addresses of one IPv6 /64 ban the /64.
    let (gateway, _dir) = build_limited("enabled: false");
    for peer in ["[2001:db8::1]:4000", "[2001:db8::2]:4000", "[2001:db8::3:3]:4000"] {
        let (code, _, text) = call(&gateway, peer, Method::GET, status, &wrong, "").await;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "{text}");
    }
    let (code, _, text) =
        call(&gateway, "[2001:db8::ffff]:4000", Method::GET, status, &[KEY], "").await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{text}");
    let (code, _, text) =
        call(&gateway, "[2001:db8:0:1::1]:4000", Method::GET, status, &[KEY], "").await;
    assert_eq!(code, StatusCode::OK, "another /64 is another client: {text}");
    let (code, _, bans) = call(
        &gateway,
        "[2001:db8:0:1::1]:4000",
        Method::GET,
        "/v0/management/security/bans",
        &[KEY],
        "",
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{bans}");
    let bans: Value = serde_json::from_str(&bans).unwrap();
    assert_eq!(bans["bans"][0]["network"], "2001:db8::/64", "{bans}");
    assert_eq!(bans["evicted"], 0, "{bans}");
}

/// Wrong management keys from 5,000 rotating loopback peers within one (fake) second, each
/// banning its peer at its first guess (`max_failures: 1`): every guess and every ban is
/// counted in the metrics, but the audit log gets at most 20 `auth_failure` and 20
/// `management_ban` lines a second across peers (the rest go to the flood summaries that the
/// housekeeping beat writes; `tests/e2e/hostile.rs` checks them). Before issue 18: a line
/// per guess and per ban.
#[tokio::test]
async fn key_guesses_from_rotating_peers_write_a_bounded_audit_log() {
    const PEERS: u32 = 5_000;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let yaml = format!(
        "auth:\n  api_keys: [\"client-key-0123456789abcdef\"]\n  dir: {:?}\n{}\
         logging: {{audit: {{enabled: true, file: {:?}}}}}\n\
         providers:\n  demo: {{type: mock}}\n",
        dir.path().join("auths").display().to_string(),
        enabled(", max_failures: 1"),
        audit.display().to_string(),
    );
    let config = Config::from_yaml(&yaml).unwrap();
    let clock = cliproxy_netguard::FakeClock::at_unix(1_800_000_000);
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let gateway = compose::gateway_with_clock(&config, &log, Some(clock)).unwrap();
    for n in 0..PEERS {
        let peer = SocketAddr::from((Ipv4Addr::from(0x7f00_0000 | (n + 2)), 40_000));
        let request = Request::builder()
            .uri("/v0/management/status")
            .header("x-management-key", "wrong-guess-0123456789")
            .body(Full::new(Bytes::new()))
            .unwrap();
        assert_eq!(gateway.handle(request, peer).await.status(), StatusCode::UNAUTHORIZED);
    }
    gateway.flush_audit();
    let lines: Vec<Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let failures = lines.iter().filter(|l| l["event_type"] == "auth_failure").count();
    let bans = lines.iter().filter(|l| l["result"] == "management_ban").count();
    assert!(failures <= 20 && bans <= 20, "{failures} auth_failure and {bans} ban lines");
    let metrics = gateway.render_metrics();
    let counted = metrics
        .lines()
        .find(|l| l.starts_with("cliproxy_auth_failures_total{provider=\"management\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    assert_eq!(counted, Some(f64::from(PEERS)), "every guess is counted");
}
