//! The gateway composed from in-memory fakes of every layer it takes (issue 20): a state
//! store, a credential store and an audit sink that are plain maps and lists, a fake clock,
//! and the network guard's admission (the in-memory default, or a fake that decides what a
//! test tells it). `Gateway::from_parts` is handed them and nothing else, so a request that
//! reaches the mock upstream with the fake store's token, an audit event that lands in the
//! fake sink, a quota refused on the usage the fake state store holds, and a 429 and a
//! settlement that only the fake admission could have made show that the gateway uses the
//! layers it is given and builds none of its own (nothing is written under `auth.dir`, which
//! does not even exist).

#![allow(clippy::unwrap_used, clippy::panic, reason = "a failed expectation fails the test")]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cliproxy_audit::{AuditSink, Event, Metrics, SinkHealth, What};
use cliproxy_core::{QuotaPeriod, Secret};
use cliproxy_e2e::{MockUpstream, Reply, canned};
use cliproxy_gateway::{ConfigLoader, Gateway, GatewayConfig, Layers};
use cliproxy_netguard::{
    Admission, AdmissionStatus, Admitted, Ban, Caller, Clock, Demand, DenyEntry, FakeClock,
    LimitKind, LimitTable, Limited, Limits, LocalAdmission, QuotaScope, QuotaStatus, QuotaUsage,
    Reservation, Settled, StateChange, StateStore, StoredClientKey, Ticket, Used,
};
use cliproxy_vault::{
    Credential, CredentialMeta, CredentialStore, ListEntry, Protection, Reencrypted,
};
use figment::Figment;
use figment::providers::{Format, Yaml};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

const KEY: &str = "client-key-fakes-0123456789abcdef";
const SPENT_KEY: &str = "client-key-spent-0123456789abcdef";
const TOKEN: &str = "sk-fake-store-token-5f3a9c1e";
const NOW: u64 = 1_800_000_000;

/// A state store that is a few maps: what is submitted is applied at once, and a flush has
/// nothing to wait for.
#[derive(Debug, Default)]
struct MemoryState {
    quotas: Mutex<HashMap<(QuotaScope, String, QuotaPeriod), QuotaUsage>>,
    denylist: Mutex<Vec<DenyEntry>>,
    bans: Mutex<Vec<Ban>>,
    audit_head: Mutex<Option<(u64, String)>>,
    client_keys: Mutex<HashMap<String, StoredClientKey>>,
}

impl StateStore for MemoryState {
    fn load_quota_usage(&self) -> cliproxy_netguard::Result<Vec<QuotaUsage>> {
        Ok(self.quotas.lock().unwrap().values().cloned().collect())
    }

    fn load_denylist(&self) -> cliproxy_netguard::Result<Vec<DenyEntry>> {
        Ok(self.denylist.lock().unwrap().clone())
    }

    fn load_bans(&self) -> cliproxy_netguard::Result<Vec<Ban>> {
        Ok(self.bans.lock().unwrap().clone())
    }

    fn load_audit_head(&self) -> cliproxy_netguard::Result<Option<(u64, String)>> {
        Ok(self.audit_head.lock().unwrap().clone())
    }

    fn load_client_keys(&self) -> cliproxy_netguard::Result<Vec<StoredClientKey>> {
        Ok(self.client_keys.lock().unwrap().values().cloned().collect())
    }

    fn submit(&self, change: StateChange) {
        match change {
            StateChange::Quota(usage) => {
                let key = (usage.scope, usage.name.clone(), usage.period);
                self.quotas.lock().unwrap().insert(key, usage);
            }
            StateChange::DenyAdd(entry) => {
                let mut list = self.denylist.lock().unwrap();
                list.retain(|e| e.network != entry.network);
                list.push(entry);
            }
            StateChange::DenyRemove(network) => {
                self.denylist.lock().unwrap().retain(|e| e.network != network);
            }
            StateChange::AuditHead { seq, hash } => {
                *self.audit_head.lock().unwrap() = Some((seq, hash));
            }
            StateChange::ClientKeyPut(key) => {
                self.client_keys.lock().unwrap().insert(key.id.clone(), key);
            }
            StateChange::ClientKeyDelete(id) => {
                self.client_keys.lock().unwrap().remove(&id);
            }
            // Bans and purges play no part here; kept simple rather than complete.
            _ => {}
        }
    }

    fn flush(&self) -> cliproxy_netguard::Result<()> {
        Ok(())
    }

    fn check(&self) -> cliproxy_netguard::Result<()> {
        Ok(())
    }

    fn path(&self) -> Option<&Path> {
        None
    }

    fn describe(&self) -> String {
        "in-memory state (test fake)".to_owned()
    }
}

/// A credential store that is a map from id to credential.
#[derive(Debug)]
struct MemoryVault {
    credentials: Mutex<HashMap<String, Credential>>,
    location: PathBuf,
}

impl MemoryVault {
    fn holding(credentials: Vec<Credential>) -> Self {
        Self {
            credentials: Mutex::new(credentials.into_iter().map(|c| (c.id.clone(), c)).collect()),
            location: PathBuf::from("memory:"),
        }
    }

    fn meta(&self, credential: &Credential) -> CredentialMeta {
        credential.meta(self.location.join(&credential.id), Protection::Plaintext)
    }
}

impl CredentialStore for MemoryVault {
    fn list(&self) -> cliproxy_vault::Result<Vec<CredentialMeta>> {
        let mut list: Vec<_> =
            self.credentials.lock().unwrap().values().map(|c| self.meta(c)).collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(list)
    }

    fn list_entries(&self) -> cliproxy_vault::Result<Vec<ListEntry>> {
        Ok(self.list()?.into_iter().map(ListEntry::Readable).collect())
    }

    fn entry(&self, id: &str) -> cliproxy_vault::Result<Option<ListEntry>> {
        let credentials = self.credentials.lock().unwrap();
        Ok(credentials.get(id).map(|c| ListEntry::Readable(self.meta(c))))
    }

    fn load_all(&self) -> cliproxy_vault::Result<Vec<Credential>> {
        let mut all: Vec<_> = self.credentials.lock().unwrap().values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }

    fn get(&self, id: &str) -> cliproxy_vault::Result<Option<Credential>> {
        Ok(self.credentials.lock().unwrap().get(id).cloned())
    }

    fn put(&self, credential: &Credential) -> cliproxy_vault::Result<()> {
        self.credentials.lock().unwrap().insert(credential.id.clone(), credential.clone());
        Ok(())
    }

    fn write_protection(&self) -> Protection {
        Protection::Plaintext
    }

    fn delete(&self, id: &str) -> cliproxy_vault::Result<bool> {
        Ok(self.credentials.lock().unwrap().remove(id).is_some())
    }

    fn check(&self) -> cliproxy_vault::Result<()> {
        Ok(())
    }

    fn location(&self) -> &Path {
        &self.location
    }

    fn record_use(&self, _used: &[(String, u64)]) -> cliproxy_vault::Result<()> {
        Ok(())
    }

    fn device_fingerprint(&self) -> cliproxy_vault::Result<String> {
        Ok("fake-device".to_owned())
    }

    fn reencrypt(&self) -> cliproxy_vault::Result<Reencrypted> {
        Ok(Reencrypted::default())
    }

    fn migrate(&self) -> cliproxy_vault::Result<Reencrypted> {
        Ok(Reencrypted::default())
    }
}

/// An audit sink that keeps every event it is given, and says when one arrives.
#[derive(Debug)]
struct MemorySink {
    events: Mutex<Vec<Event>>,
    /// The number of events written, for a test to wait on.
    written: tokio::sync::watch::Sender<usize>,
}

impl MemorySink {
    fn new() -> Self {
        Self { events: Mutex::new(Vec::new()), written: tokio::sync::watch::Sender::new(0) }
    }

    fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// Waits until an event that `wanted` picks has been written. A proxied request's event
    /// is written once its body has been read to the end, from a task of its own, so it
    /// may come after the response was collected; `WAIT` only turns a hang into a failure.
    async fn wait_for(&self, wanted: impl Fn(&Event) -> bool) {
        let mut written = self.written.subscribe();
        let seen = written.wait_for(|_| self.events.lock().unwrap().iter().any(&wanted));
        tokio::time::timeout(cliproxy_e2e::WAIT, seen)
            .await
            .unwrap_or_else(|_| panic!("no such audit event: {:?}", self.events()))
            .unwrap();
    }
}

impl AuditSink for MemorySink {
    fn write(&self, event: &Event) {
        self.events.lock().unwrap().push(event.clone());
        self.written.send_modify(|n| *n += 1);
    }

    fn health(&self) -> SinkHealth {
        SinkHealth::Ok
    }

    fn reopen(&self) {}

    fn flush(&self) {}
}

/// An admission that decides what the test tells it: the per-IP bucket refuses every
/// request when `refuse_ip` is set (with a `Retry-After` no real bucket of the config
/// would give), and every other limit admits, standing at "8 of 9 left". It keeps every
/// settlement it is asked for, and says when one arrives.
#[derive(Debug)]
struct FakeAdmission {
    refuse_ip: bool,
    /// `(provider, client, used tokens)` of each settled ticket.
    settled: Mutex<Vec<(String, String, Option<u64>)>>,
    /// The number of tickets settled, for a test to wait on.
    settlements: tokio::sync::watch::Sender<usize>,
    /// The tickets cancelled.
    cancelled: Mutex<usize>,
}

/// The `Retry-After` of the fake's per-IP refusal, in seconds.
const FAKE_RETRY_SECS: u64 = 17;

impl FakeAdmission {
    fn new(refuse_ip: bool) -> Self {
        Self {
            refuse_ip,
            settled: Mutex::new(Vec::new()),
            settlements: tokio::sync::watch::Sender::new(0),
            cancelled: Mutex::new(0),
        }
    }

    /// Waits until `count` tickets have been settled. A proxied request is settled once its
    /// body has been read to the end, from a task of its own, so it may come after the
    /// response was collected; `WAIT` only turns a hang into a failure.
    async fn wait_for_settlements(&self, count: usize) {
        let mut settlements = self.settlements.subscribe();
        tokio::time::timeout(cliproxy_e2e::WAIT, settlements.wait_for(|n| *n >= count))
            .await
            .unwrap_or_else(|_| panic!("no settlement: {:?}", self.settled.lock().unwrap()))
            .unwrap();
    }
}

impl Admission for FakeAdmission {
    fn check_ip(&self, _ip: std::net::IpAddr) -> Result<Option<Admitted>, Limited> {
        if self.refuse_ip {
            let wait = std::time::Duration::from_secs(FAKE_RETRY_SECS);
            return Err(Limited::new(LimitKind::PerIp, None, 1, 0, wait, wait));
        }
        Ok(None)
    }

    fn check_global(&self, _caller: Caller) -> Result<(), Limited> {
        Ok(())
    }

    fn reserve(&self, provider: &str, client: &str, _demand: Demand) -> Result<Ticket, Limited> {
        let standing = Admitted::new(9, 8, std::time::Duration::from_secs(60));
        let client_minute = Reservation::recorded(0, Some(standing), None);
        Ok(Ticket::new(
            provider.to_owned(),
            client.to_owned(),
            Reservation::unlimited(),
            client_minute,
            0,
            0,
        ))
    }

    fn settle(&self, ticket: Ticket, used: Used) -> Settled {
        let entry = (ticket.provider().to_owned(), ticket.client().to_owned(), used.tokens);
        self.settled.lock().unwrap().push(entry);
        self.settlements.send_modify(|n| *n += 1);
        Settled::new(ticket.provider().to_owned(), None)
    }

    fn cancel(&self, _ticket: Ticket) {
        *self.cancelled.lock().unwrap() += 1;
    }

    fn quota_status(&self, _scope: QuotaScope, _name: &str) -> Option<QuotaStatus> {
        None
    }

    fn status(&self) -> AdmissionStatus {
        AdmissionStatus::new(None, false)
    }

    fn evict_idle(&self) {}

    fn seed_usage(&self, _stored: Vec<QuotaUsage>) -> usize {
        0
    }

    fn take_dirty_usage(&self) -> Vec<QuotaUsage> {
        Vec::new()
    }

    fn update_client_limits(&self, _limits: &LimitTable) -> cliproxy_netguard::Result<()> {
        Ok(())
    }
}

/// The default admission of `config`, in memory, on `clock` (what the binary composes).
fn local_admission(config: &GatewayConfig, clock: Arc<dyn Clock>) -> Arc<dyn Admission> {
    let providers =
        config.providers.0.iter().map(|(name, provider)| {
            (name.clone(), Limits::new(provider.rate_limit, provider.quota))
        });
    let clients = cliproxy_gateway::client_limit_table(&config.auth.client_keys().unwrap());
    Arc::new(LocalAdmission::from_config(
        &config.server.security,
        &config.server.rate_limit,
        providers,
        clients,
        clock,
    ))
}

/// The fakes a gateway was composed of, for the test to look into.
struct Fakes {
    state: Arc<MemoryState>,
    sink: Arc<MemorySink>,
}

impl Fakes {
    /// Waits until `count` proxied requests have finished: their audit events are written
    /// after their settlement.
    async fn wait_for_proxied(&self, count: usize) {
        let proxied = |event: &Event| matches!(event.what, What::ProviderRequest { .. });
        let mut written = self.sink.written.subscribe();
        let seen =
            written.wait_for(|_| self.sink.events().iter().filter(|e| proxied(e)).count() >= count);
        tokio::time::timeout(cliproxy_e2e::WAIT, seen)
            .await
            .unwrap_or_else(|_| panic!("fewer than {count} proxied requests finished"))
            .unwrap();
    }
}

/// A gateway on in-memory fakes of every layer: one OpenAI-type provider at `upstream` whose
/// only credential is in the fake vault (and whose daily quota is far from spent), a client key
/// `fakes`, and a client key `spent` whose daily quota of 1000 tokens the fake state store
/// holds as used up today. `admission` is the given one, or the default one of the config.
fn gateway(
    upstream: &MockUpstream,
    auth_dir: &Path,
    admission: Option<Arc<dyn Admission>>,
) -> (Gateway, Fakes) {
    let config = TextLoader::new(&config_yaml(upstream, auth_dir, true)).load().unwrap();
    let clock = FakeClock::at_unix(NOW);
    let state = Arc::new(MemoryState::default());
    let period = QuotaPeriod::Daily;
    state.submit(StateChange::Quota(QuotaUsage {
        scope: QuotaScope::Client,
        name: "spent".to_owned(),
        period,
        period_start: cliproxy_netguard::period_start(period, clock.unix_seconds()),
        tokens: 1000,
    }));
    compose(&config, clock, state, admission)
}

/// The gateway of `config` on in-memory fakes: the fake vault holding the OpenAI token,
/// `state` as the state store, a sink of its own, and `admission` or the config's default
/// one, on `clock`.
fn compose(
    config: &GatewayConfig,
    clock: Arc<FakeClock>,
    state: Arc<MemoryState>,
    admission: Option<Arc<dyn Admission>>,
) -> (Gateway, Fakes) {
    let credential = Credential::new_api_key("openai", Secret::from(TOKEN.to_owned()))
        .unwrap()
        .with_id("openai-fake")
        .unwrap();
    let sink = Arc::new(MemorySink::new());
    let admission = admission.unwrap_or_else(|| local_admission(config, clock.clone()));
    let layers = Layers {
        clock,
        admission,
        tls: None,
        state: state.clone(),
        metrics: Arc::new(Metrics::new(&config.metrics, config.providers.0.keys().cloned())),
        audit_sink: Some(sink.clone()),
        credentials: Arc::new(MemoryVault::holding(vec![credential])),
    };
    let log = slog::Logger::root(slog::Discard, slog::o!());
    (Gateway::from_parts(config, layers, log).unwrap(), Fakes { state, sink })
}

/// The configuration of [`gateway`], with or without the `fakes` client key.
fn config_yaml(upstream: &MockUpstream, auth_dir: &Path, with_fakes_key: bool) -> String {
    let fakes =
        if with_fakes_key { format!("{{name: fakes, key: \"{KEY}\"}}, ") } else { String::new() };
    format!(
        "auth:\n  dir: {dir:?}\n  api_keys: [{fakes}\
         {{name: spent, key: \"{SPENT_KEY}\", quota: {{limit: 1000, reset: daily}}}}]\n\
         providers:\n  openai: {{type: openai, base_url: \"{url}\", models: [\"gpt-*\"], \
         quota: {{limit: 1000000, reset: daily}}}}\n",
        dir = auth_dir.display().to_string(),
        url = upstream.url(),
    )
}

/// A configuration loader over YAML text in memory, standing in for the binary's file
/// loader: the gateway's view read as the binary reads its file (less the `${VAR}`
/// interpolation and the environment) and checked as the binary checks it. A clone shares
/// the text, so a test can change what the next reload reads.
#[derive(Clone)]
struct TextLoader(Arc<Mutex<String>>);

impl TextLoader {
    fn new(text: &str) -> Self {
        Self(Arc::new(Mutex::new(text.to_owned())))
    }

    fn figment(&self) -> Figment {
        Figment::from(Yaml::string(&self.0.lock().unwrap()))
    }
}

impl ConfigLoader for TextLoader {
    fn raw(&self) -> Result<Value, String> {
        self.figment().extract().map_err(|e| e.to_string())
    }

    fn load(&self) -> Result<GatewayConfig, String> {
        let config: GatewayConfig = self.figment().extract().map_err(|e| e.to_string())?;
        config.check().map_err(|e| e.to_string())?;
        Ok(config)
    }
}

/// Sends a chat completion for `gpt-4o` with `key`.
async fn chat(gateway: &Gateway, key: &str) -> (StatusCode, Value) {
    let (status, _, body) = chat_with_headers(gateway, key).await;
    (status, body)
}

/// [`chat`], with the answer's headers.
async fn chat_with_headers(gateway: &Gateway, key: &str) -> (StatusCode, http::HeaderMap, Value) {
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    let request = Request::post("/v1/chat/completions")
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = gateway.handle(request, "127.0.0.1:40000".parse().unwrap()).await;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_gateway_on_in_memory_fakes_forwards_audits_and_refuses_a_spent_quota() {
    let upstream = MockUpstream::start(|_| {
        let mut reply = canned::openai_chat("gpt-4o", "hello from upstream");
        reply["usage"] = json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7});
        Reply::ok(reply)
    })
    .await;
    let root = tempfile::tempdir().unwrap();
    let auth_dir = root.path().join("auths");
    let (gateway, fakes) = gateway(&upstream, &auth_dir, None);

    // Forwarded with the fake vault's token, and the client's key kept in the gateway.
    let (status, body) = chat(&gateway, KEY).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "hello from upstream");
    let requests = upstream.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].header("authorization"), format!("Bearer {TOKEN}"));
    assert!(!requests[0].contains(KEY), "the client's key went upstream");

    // Its audit event landed in the fake sink, with the usage the upstream reported.
    let is_proxied = |event: &Event| matches!(event.what, What::ProviderRequest { .. });
    fakes.sink.wait_for(is_proxied).await;
    let events = fakes.sink.events();
    let proxied: Vec<_> = events
        .iter()
        .filter_map(|event| match &event.what {
            What::ProviderRequest { status, input_tokens, output_tokens, .. } => {
                Some((event.user_id.clone(), *status, *input_tokens, *output_tokens))
            }
            _ => None,
        })
        .collect();
    assert_eq!(proxied, [(Some("fakes".to_owned()), 200, Some(3), Some(4))], "{events:?}");

    // The quota the fake state store holds as spent refuses the other key before upstream.
    let (status, body) = chat(&gateway, SPENT_KEY).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("quota"), "{message}");
    assert_eq!(upstream.requests().len(), 1, "the refused request reached the upstream");

    // The first request's usage was settled into the provider's quota and handed to the
    // fake state store (the refused one held nothing).
    let usage = fakes.state.load_quota_usage().unwrap();
    let provider: Vec<_> = usage
        .iter()
        .filter(|u| u.scope == QuotaScope::Provider)
        .map(|u| (u.name.as_str(), u.tokens))
        .collect();
    assert_eq!(provider, [("openai", 7)], "{usage:?}");

    // The gateway built no layer of its own: nothing was created under `auth.dir`.
    assert!(!auth_dir.exists(), "the gateway wrote under auth.dir");
}

/// The gateway reads no configuration file: a reload asks the loader it was handed, applies
/// what the loader returns (a revoked client key is refused at once) and keeps the running
/// configuration when the loader says the new one is invalid.
#[tokio::test]
async fn a_reload_applies_what_the_loader_it_was_handed_returns() {
    let upstream = MockUpstream::start(|_| Reply::ok(canned::openai_chat("gpt-4o", "hi"))).await;
    let root = tempfile::tempdir().unwrap();
    let auth_dir = root.path().join("auths");
    let (gateway, _fakes) = gateway(&upstream, &auth_dir, None);

    // Without a loader (a gateway built from text, as `demo`'s) there is nothing to reload.
    let error = gateway.reload("test").unwrap_err();
    assert!(error.contains("not started from a config file"), "{error}");

    let loader = TextLoader::new(&config_yaml(&upstream, &auth_dir, true));
    gateway.set_config_loader(Box::new(loader.clone()));
    assert_eq!(chat(&gateway, KEY).await.0, StatusCode::OK);

    // An invalid configuration changes nothing, and the answer names the key.
    *loader.0.lock().unwrap() =
        config_yaml(&upstream, &auth_dir, false) + "management: {secret_key: too-short}\n";
    let error = gateway.reload("test").unwrap_err();
    assert!(error.contains("`management.secret_key`"), "{error}");
    assert_eq!(chat(&gateway, KEY).await.0, StatusCode::OK, "an invalid reload applied");

    // The `fakes` key revoked: applied at once, from what the loader returned.
    *loader.0.lock().unwrap() = config_yaml(&upstream, &auth_dir, false);
    let report = gateway.reload("test").unwrap();
    assert!(!report.applied.is_empty(), "{report:?}");
    assert!(report.applied.iter().all(|p| p.starts_with("auth.api_keys")), "{report:?}");
    assert!(report.restart_required.is_empty(), "{report:?}");
    assert_eq!(chat(&gateway, KEY).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(chat(&gateway, SPENT_KEY).await.0, StatusCode::TOO_MANY_REQUESTS);
    assert!(!auth_dir.exists(), "the gateway wrote under auth.dir");
}

/// The gateway asks the admission it is handed, and answers with what it decides: a per-IP
/// refusal of the fake is a 429 with the fake's `Retry-After`, before anything reaches the
/// upstream; an admitted request carries the fake ticket's standing in its `X-RateLimit-*`
/// headers, and its ticket comes back to the fake's settle with the usage the reply
/// reported.
#[tokio::test]
async fn the_gateway_asks_the_admission_it_is_handed() {
    let upstream = MockUpstream::start(|_| {
        let mut reply = canned::openai_chat("gpt-4o", "hello from upstream");
        reply["usage"] = json!({"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11});
        Reply::ok(reply)
    })
    .await;
    let root = tempfile::tempdir().unwrap();
    let auth_dir = root.path().join("auths");

    // The config has no per-IP limit at all: only the fake can refuse.
    let refusing = Arc::new(FakeAdmission::new(true));
    let (refused_by_fake, _fakes) = gateway(&upstream, &auth_dir, Some(refusing.clone()));
    let (status, headers, body) = chat_with_headers(&refused_by_fake, KEY).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(headers["retry-after"], FAKE_RETRY_SECS.to_string().as_str());
    assert!(upstream.requests().is_empty(), "a refused request reached the upstream");
    assert!(refusing.settled.lock().unwrap().is_empty());

    // The config gives `fakes` no minute limit: the standing is the fake ticket's.
    let admitting = Arc::new(FakeAdmission::new(false));
    let (admitted_by_fake, _fakes) = gateway(&upstream, &auth_dir, Some(admitting.clone()));
    let (status, headers, body) = chat_with_headers(&admitted_by_fake, KEY).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["x-ratelimit-limit"], "9");
    assert_eq!(headers["x-ratelimit-remaining"], "8");
    admitting.wait_for_settlements(1).await;
    assert_eq!(
        *admitting.settled.lock().unwrap(),
        [("openai".to_owned(), "fakes".to_owned(), Some(11))]
    );
    assert_eq!(*admitting.cancelled.lock().unwrap(), 0);
    assert_eq!(upstream.requests().len(), 1);
}

/// The key with a budget in the budget tests.
const PAYER_KEY: &str = "client-key-payer-0123456789abcdef";

/// A gateway whose `payer` key has a daily budget of `usd` (and `extra` settings of its
/// own), `gpt-4o` priced at $100 per 1M input and $200 per 1M output tokens (so the mock's
/// reply of 3 + 4 tokens costs exactly $0.0011), `gpt-free-*` routed but without a price,
/// and the `fakes` key without a budget; `state` holds what the store kept.
fn budget_config(upstream: &MockUpstream, auth_dir: &Path, usd: &str, extra: &str) -> String {
    format!(
        "auth:\n  dir: {dir:?}\n  api_keys: [{{name: fakes, key: \"{KEY}\"}}, \
         {{name: payer, key: \"{PAYER_KEY}\", budget: {{usd: \"{usd}\", period: daily}}{extra}}}]\n\
         providers:\n  openai: {{type: openai, base_url: \"{url}\", models: [\"gpt-*\"]}}\n\
         pricing:\n  models: {{\"gpt-4o\": {{input: 100, output: 200}}}}\n",
        dir = auth_dir.display().to_string(),
        url = upstream.url(),
    )
}

/// An upstream that answers every chat with 3 prompt and 4 completion tokens.
async fn upstream_of_seven_tokens() -> MockUpstream {
    MockUpstream::start(|_| {
        let mut reply = canned::openai_chat("gpt-4o", "priced");
        reply["usage"] = json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7});
        Reply::ok(reply)
    })
    .await
}

/// Sends `body` to `path` with `key`; the answer's status, headers and JSON body.
async fn post(
    gateway: &Gateway,
    path: &str,
    key: &str,
    body: &Value,
) -> (StatusCode, http::HeaderMap, Value) {
    let request = Request::post(path)
        .header("authorization", format!("Bearer {key}"))
        .header("x-api-key", key)
        .header("x-goog-api-key", key)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = gateway.handle(request, "127.0.0.1:40000".parse().unwrap()).await;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Seconds from the fake clock's now to the next 00:00 UTC: the daily budget's reset.
fn seconds_to_midnight() -> u64 {
    cliproxy_netguard::next_reset(QuotaPeriod::Daily, NOW) - NOW
}

/// A $0.01 budget pays for the requests that spend it (ten at $0.0011: the tenth starts on
/// the $0.0001 left, so the spend ends at most one request's hold past the budget), then
/// every client format gets its own provider's 429 shape with code `budget_exceeded` and a
/// `Retry-After` to the next midnight; the exhaustion is audited once, however many
/// refusals follow; the spend and the budget left are in the metrics and the state store.
#[tokio::test]
async fn a_spent_budget_is_refused_in_each_client_format_until_the_period_resets() {
    let upstream = upstream_of_seven_tokens().await;
    let root = tempfile::tempdir().unwrap();
    let auth_dir = root.path().join("auths");
    let config = TextLoader::new(&budget_config(&upstream, &auth_dir, "0.01", "")).load().unwrap();
    let clock = FakeClock::at_unix(NOW);
    let (gateway, fakes) = compose(&config, clock.clone(), Arc::new(MemoryState::default()), None);

    let chat = json!({"model": "gpt-4o", "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}]});
    let mut served = 0;
    let refused = loop {
        let (status, headers, body) =
            post(&gateway, "/v1/chat/completions", PAYER_KEY, &chat).await;
        if status != StatusCode::OK {
            break (status, headers, body);
        }
        served += 1;
        // Settled before the next one: the finishing stage settles a request when its body
        // has been read, from a task of its own, and its audit event follows the settlement.
        fakes.wait_for_proxied(served).await;
        assert!(served <= 10, "more requests were served than the budget pays for");
    };
    assert_eq!(served, 10, "the budget refused before it was spent: {refused:?}");
    let (status, headers, body) = refused;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let wait = seconds_to_midnight().to_string();
    assert_eq!(headers["retry-after"], wait.as_str());
    assert_eq!(body["error"]["code"], "budget_exceeded", "{body}");
    assert_eq!(body["error"]["type"], "insufficient_quota", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("auth.api_keys[payer].budget"), "{message}");
    assert!(message.contains("$0.010000"), "{message}");
    assert!(!message.contains(PAYER_KEY), "{message}");
    assert_eq!(upstream.requests().len(), 10, "a refused request reached the upstream");

    // Each client format, in its provider's error shape, with the same wait.
    let messages = json!({"model": "gpt-4o", "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}]});
    let (status, headers, body) = post(&gateway, "/v1/messages", PAYER_KEY, &messages).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(headers["retry-after"], wait.as_str());
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    let gemini = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]});
    let path = "/v1beta/models/gpt-4o:generateContent";
    let (status, headers, body) = post(&gateway, path, PAYER_KEY, &gemini).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(headers["retry-after"], wait.as_str());
    assert_eq!(
        (body["error"]["code"].as_u64(), body["error"]["status"].as_str()),
        (Some(429), Some("RESOURCE_EXHAUSTED")),
        "{body}"
    );
    let responses = json!({"model": "gpt-4o", "input": "hi", "max_output_tokens": 10});
    let (status, headers, body) = post(&gateway, "/v1/responses", PAYER_KEY, &responses).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(headers["retry-after"], wait.as_str());
    assert_eq!(body["error"]["code"], "budget_exceeded", "{body}");
    assert_eq!(upstream.requests().len(), 10, "a refused request reached the upstream");
    // A key without a budget is not held by another key's.
    assert_eq!(post(&gateway, "/v1/chat/completions", KEY, &chat).await.0, StatusCode::OK);
    fakes.wait_for_proxied(11).await;

    // Four refusals, one `budget` violation.
    gateway.flush_audit();
    let budget_lines = |events: &[Event]| {
        events
            .iter()
            .filter(|e| matches!(&e.what, What::SecurityViolation { rule: "budget", .. }))
            .map(|e| e.user_id.clone())
            .collect::<Vec<_>>()
    };
    fakes
        .sink
        .wait_for(|e| matches!(&e.what, What::SecurityViolation { rule: "budget", .. }))
        .await;
    assert_eq!(budget_lines(&fakes.sink.events()), [Some("payer".to_owned())]);

    // Spent: 11 × $0.0011 for both keys' eleven requests, the payer's ten of them.
    let metrics = gateway.render_metrics();
    assert!(
        metrics.contains("cliproxy_client_spend_usd_total{client=\"payer\"} 0.011000\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cliproxy_client_spend_usd_total{client=\"fakes\"} 0.001100\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cliproxy_client_budget_remaining_usd{client=\"payer\"} 0.000000\n"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("cliproxy_client_budget_remaining_usd{client=\"fakes\"}"),
        "{metrics}"
    );
    assert!(!metrics.contains(PAYER_KEY), "a key leaked into the metrics");
    let stored: Vec<_> = fakes
        .state
        .load_quota_usage()
        .unwrap()
        .into_iter()
        .filter(|u| u.scope == QuotaScope::Budget)
        .map(|u| (u.name, u.tokens))
        .collect();
    assert_eq!(stored, [("payer".to_owned(), 11_000)]);

    // At midnight the spend starts again from nothing.
    clock.advance(std::time::Duration::from_secs(seconds_to_midnight()));
    let (status, _, body) = post(&gateway, "/v1/chat/completions", PAYER_KEY, &chat).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A budgeted key asking for a model without a price is refused before anything is sent,
/// with a 403 naming the model and `pricing.models`; a key without a budget uses it.
#[tokio::test]
async fn a_budgeted_key_on_an_unpriced_model_is_refused_before_anything_is_sent() {
    let upstream = upstream_of_seven_tokens().await;
    let root = tempfile::tempdir().unwrap();
    let auth_dir = root.path().join("auths");
    let config = TextLoader::new(&budget_config(&upstream, &auth_dir, "5", "")).load().unwrap();
    let (gateway, fakes) =
        compose(&config, FakeClock::at_unix(NOW), Arc::new(MemoryState::default()), None);
    let chat = json!({"model": "gpt-free-1", "messages": [{"role": "user", "content": "hi"}]});
    let (status, _, body) = post(&gateway, "/v1/chat/completions", PAYER_KEY, &chat).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("`gpt-free-1`") && message.contains("pricing.models"), "{message}");
    assert!(upstream.requests().is_empty(), "the unpriced request reached the upstream");
    assert_eq!(post(&gateway, "/v1/chat/completions", KEY, &chat).await.0, StatusCode::OK);
    // Nothing was charged to the budget.
    assert!(fakes.state.load_quota_usage().unwrap().iter().all(|u| u.scope != QuotaScope::Budget));
}

/// A reload applies a config key's changed limits at once: a spent budget raised serves
/// again (the spend the state store kept still counts), and a new minute limit holds from
/// the next request. Nothing waits for a restart.
#[tokio::test]
async fn a_reload_changes_a_config_keys_limits_and_keeps_its_spend() {
    let upstream = upstream_of_seven_tokens().await;
    let root = tempfile::tempdir().unwrap();
    let auth_dir = root.path().join("auths");
    let loader = TextLoader::new(&budget_config(&upstream, &auth_dir, "0.01", ""));
    let config = loader.load().unwrap();
    // The store kept a spend of $0.0105 today: the budget is spent from the start.
    let state = Arc::new(MemoryState::default());
    state.submit(StateChange::Quota(QuotaUsage {
        scope: QuotaScope::Budget,
        name: "payer".to_owned(),
        period: QuotaPeriod::Daily,
        period_start: cliproxy_netguard::period_start(QuotaPeriod::Daily, NOW),
        tokens: 10_500,
    }));
    let (gateway, fakes) = compose(&config, FakeClock::at_unix(NOW), state, None);
    gateway.set_config_loader(Box::new(loader.clone()));
    let chat = json!({"model": "gpt-4o", "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}]});
    let (status, _, body) = post(&gateway, "/v1/chat/completions", PAYER_KEY, &chat).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "budget_exceeded");
    assert!(
        gateway
            .render_metrics()
            .contains("cliproxy_client_budget_remaining_usd{client=\"payer\"} 0.000000")
    );

    // $0.02 a day and one request a minute: applied, not left for a restart.
    *loader.0.lock().unwrap() =
        budget_config(&upstream, &auth_dir, "0.02", ", rate_limit: {requests_per_minute: 1}");
    let report = gateway.reload("test").unwrap();
    assert!(report.restart_required.is_empty(), "{report:?}");
    assert!(report.notes.is_empty(), "{report:?}");
    assert!(report.applied.iter().any(|p| p.starts_with("auth.api_keys[1].budget")), "{report:?}");
    // The gauge follows the new budget at once: $0.02 less the $0.0105 kept.
    assert!(
        gateway
            .render_metrics()
            .contains("cliproxy_client_budget_remaining_usd{client=\"payer\"} 0.009500")
    );
    let (status, _, body) = post(&gateway, "/v1/chat/completions", PAYER_KEY, &chat).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    fakes.wait_for_proxied(1).await;
    let (status, _, body) = post(&gateway, "/v1/chat/completions", PAYER_KEY, &chat).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
    let stored = fakes.state.load_quota_usage().unwrap();
    let spend = stored.iter().find(|u| u.scope == QuotaScope::Budget).map(|u| u.tokens);
    assert_eq!(spend, Some(10_500 + 1_100), "{stored:?}");
}

/// Twenty requests at once on a $0.01 budget: in-flight holds count, so they cannot all pass
/// on the same remainder. Whatever the interleaving, the refused ones are `budget_exceeded`
/// and the spend ends less than one request past the budget (each admitted request saw
/// something left after the holds of those in flight, and a hold is never below the cost).
#[tokio::test]
async fn parallel_requests_never_spend_past_one_requests_reservation() {
    let upstream = upstream_of_seven_tokens().await;
    let root = tempfile::tempdir().unwrap();
    let auth_dir = root.path().join("auths");
    let config = TextLoader::new(&budget_config(&upstream, &auth_dir, "0.01", "")).load().unwrap();
    let (gateway, fakes) =
        compose(&config, FakeClock::at_unix(NOW), Arc::new(MemoryState::default()), None);
    let chat = json!({"model": "gpt-4o", "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}]});
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (gateway, chat) = (gateway.clone(), chat.clone());
        requests.spawn(async move {
            let (status, _, body) = post(&gateway, "/v1/chat/completions", PAYER_KEY, &chat).await;
            (status, body)
        });
    }
    let mut served: usize = 0;
    while let Some(answer) = requests.join_next().await {
        let (status, body) = answer.unwrap();
        if status == StatusCode::OK {
            served += 1;
        } else {
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
            assert_eq!(body["error"]["code"], "budget_exceeded", "{body}");
        }
    }
    fakes.wait_for_proxied(served).await;
    let spent = fakes
        .state
        .load_quota_usage()
        .unwrap()
        .into_iter()
        .find(|u| u.scope == QuotaScope::Budget)
        .map_or(0, |u| u.tokens);
    // $0.0011 a request: the budget pays for nine and a bit.
    assert!(served >= 1, "no request was served");
    assert_eq!(spent, u64::try_from(served).unwrap() * 1_100);
    assert!(spent < 10_000 + 1_100, "{served} requests spent {spent} micro-dollars of 10000");
    assert_eq!(upstream.requests().len(), served);
}
