//! The audit vocabulary: seven event types and one typed [`Event`] per occurrence.
//!
//! The gateway builds an [`Event`] where something happens and hands it to
//! [`crate::Audit::emit`], which bumps the matching metrics, feeds the alert rules and, when
//! the type is in `logging.audit.events`, writes one line. An event never holds a secret:
//! `user_id` is a client key's *name*, credentials are named by id.

use std::io::Write as _;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The kinds of audit events (the seed's `logging.audit.events` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// A client key was accepted.
    AuthSuccess,
    /// A client key or the management key was refused.
    AuthFailure,
    /// An OAuth credential was refreshed (or the refresh failed).
    TokenRefresh,
    /// The configuration or the runtime state an operator controls changed (config reload,
    /// maintenance, denylist entries).
    ConfigChange,
    /// A request was proxied to a provider (or answered by the built-in mock).
    ProviderRequest,
    /// A connection or request was refused by the network guard, or an alert fired.
    SecurityViolation,
    /// A credential was listed, added, deleted or exported through the management API.
    CredentialAccess,
}

impl EventType {
    /// Every type, in a fixed order.
    pub const ALL: [Self; 7] = [
        Self::AuthSuccess,
        Self::AuthFailure,
        Self::TokenRefresh,
        Self::ConfigChange,
        Self::ProviderRequest,
        Self::SecurityViolation,
        Self::CredentialAccess,
    ];

    /// The name written in the `event_type` field and used in `logging.audit.events`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AuthSuccess => "auth_success",
            Self::AuthFailure => "auth_failure",
            Self::TokenRefresh => "token_refresh",
            Self::ConfigChange => "config_change",
            Self::ProviderRequest => "provider_request",
            Self::SecurityViolation => "security_violation",
            Self::CredentialAccess => "credential_access",
        }
    }

    /// The position in [`EventType::ALL`] (a bit in the event filter).
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which plane an authentication attempt was made on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plane {
    /// The client API (`/v1/...`), with a client key.
    Client,
    /// The management API (`/v0/management/...`), with the management key.
    Management,
}

impl Plane {
    /// `client` or `management`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Management => "management",
        }
    }
}

/// What happened, with the facts that belong to that kind of event.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum What {
    /// A client key was accepted; the event's `user_id` is the key's name.
    AuthSuccess,
    /// A key was refused. `reason` is short and fixed (`missing_key`, `invalid_key`,
    /// `banned`); never the presented key.
    AuthFailure {
        /// Client or management plane.
        plane: Plane,
        /// Why, as a fixed token.
        reason: &'static str,
        /// Earlier refusals on the same plane from the same address that were counted
        /// (metrics, alert rules) but not written one by one. The gateway writes 0 here: it
        /// writes the refusals it leaves out in [`What::Summary`] lines of their own, which
        /// list their request ids.
        repeats: u64,
    },
    /// An OAuth credential refresh ran.
    TokenRefresh {
        /// The credential's id.
        credential: String,
        /// `Ok` or why it failed (no token in it).
        outcome: Result<(), String>,
    },
    /// Something an operator controls changed.
    ConfigChange {
        /// What was done: `reload`, `maintenance`, `ip_deny`, `ip_undeny`, `alert_block_ip`, …
        action: &'static str,
        /// The key paths that changed (values of secret keys are never included).
        changed: Vec<String>,
        /// Extra facts (non-secret), as a JSON object.
        details: Map<String, Value>,
        /// `Ok`, or why the change was refused.
        outcome: Result<(), String>,
    },
    /// One proxied request, written when its reply has ended.
    ProviderRequest {
        /// The model asked for.
        model: String,
        /// The status sent to the client.
        status: u16,
        /// From the request's arrival to the end of its reply.
        duration: Duration,
        /// Time spent waiting for and streaming from the provider, when one was called.
        upstream: Option<Duration>,
        /// Tokens in the prompt, when the reply reported usage.
        input_tokens: Option<u64>,
        /// Tokens generated, when the reply reported usage.
        output_tokens: Option<u64>,
        /// What the request cost, in micro-dollars (its usage under the model's price),
        /// written as `cost_usd`, a decimal string of dollars (`"0.000125"`); `None` when the
        /// model has no price or the reply reported no usage, written as `"priced": false`.
        cost: Option<u64>,
        /// The vault credential used (its id), when one was.
        credential: Option<String>,
        /// How the reply ended: `complete`, `failed` (upstream error or idle timeout
        /// mid-stream) or `client_gone`.
        outcome: &'static str,
        /// Why it failed, when it did (no secret: the gateway's own wording).
        error: Option<String>,
        /// The client's API format and the provider's (`openai-chat`, `anthropic`, …), when
        /// known: they differ when the request was translated.
        formats: Option<(&'static str, &'static str)>,
    },
    /// The network guard refused something, or an alert rule fired.
    SecurityViolation {
        /// The rule that refused (a netguard rejection kind such as `ip_denied`, `per_ip_rate`,
        /// or `alert`).
        rule: &'static str,
        /// Whether it counts as a rate-limit violation (`cliproxy_rate_limit_violations_total`
        /// and the `rate_limit_violations` alert metric).
        rate_limit: bool,
        /// A short description (no secret).
        detail: String,
        /// Earlier refusals by the same rule of the same address that were counted (metrics,
        /// alert rules) but not written one by one: the gateway writes at most one line per
        /// rule and address per second, so that a flood cannot fill the disk.
        repeats: u64,
    },
    /// A credential was read or changed through the management API or the CLI.
    CredentialAccess {
        /// `list`, `add`, `delete`, `export`.
        action: &'static str,
        /// The credential id or provider concerned, when there is one.
        credential: Option<String>,
        /// `Ok`, or why it failed.
        outcome: Result<(), String>,
    },
    /// Refusals that were counted (metrics, alert rules) but not written one by one, written
    /// as one line of their own type (`auth_failure` or `security_violation`) by the
    /// gateway's housekeeping beat: the flood of one address, or the refusals past the
    /// audit budget of all addresses together.
    Summary(Box<Summary>),
}

/// The facts of a [`What::Summary`] line. Its `details` carry `repeats` (the refusals it
/// covers) and, when known, the request ids of those refusals, so that every refused
/// request is accounted for by id even when its own line was never written.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Summary {
    /// The type of the refusals covered: `auth_failure` or `security_violation`.
    pub event_type: EventType,
    /// The `result` field: `repeated` for refused keys, the rule for violations.
    pub result: &'static str,
    /// For refused keys: the plane.
    pub plane: Option<Plane>,
    /// For violations: the `detail` (it starts with `summary:`).
    pub detail: Option<String>,
    /// The refusals covered.
    pub repeats: u64,
    /// For a summary of many addresses: how many distinct addresses (IPv6: /64 networks)
    /// the refusals came from.
    pub addresses: Option<u64>,
    /// For a summary of many addresses: the first few of them.
    pub sample_ips: Vec<String>,
    /// The request ids of the refusals covered, at most [`Summary::MAX_REQUEST_IDS`].
    pub request_ids: Vec<String>,
    /// Refusals covered whose request id did not fit in `request_ids`.
    pub request_ids_left_out: u64,
}

impl Summary {
    /// The most request ids one summary line lists (about 27 KB of them): every refusal of a
    /// housekeeping beat (500 ms by default) up to 2,000 a second, and a line of bounded size
    /// beyond (the rest are counted in `request_ids_left_out`).
    pub const MAX_REQUEST_IDS: usize = 1_000;

    /// A summary of `repeats` refusals of `event_type`, written with `result`.
    pub fn new(event_type: EventType, result: &'static str, repeats: u64) -> Self {
        Self {
            event_type,
            result,
            plane: None,
            detail: None,
            repeats,
            addresses: None,
            sample_ips: Vec::new(),
            request_ids: Vec::new(),
            request_ids_left_out: 0,
        }
    }
}

/// One audit event: who and where (the fields every line carries), and what.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// When it happened (taken when the event is built, not when it is written).
    pub at: SystemTime,
    /// The client address (after trusted-proxy resolution).
    pub ip: Option<IpAddr>,
    /// The gateway's request id (`x-request-id`), when there is a request.
    pub request_id: Option<String>,
    /// The client key's name (never the key), or `management` for the management plane.
    pub user_id: Option<String>,
    /// The provider concerned.
    pub provider: Option<String>,
    /// What happened.
    pub what: What,
}

impl Event {
    /// An event of the given kind, now, with no context yet.
    pub fn new(what: What) -> Self {
        Self {
            at: SystemTime::now(),
            ip: None,
            request_id: None,
            user_id: None,
            provider: None,
            what,
        }
    }

    /// Sets the client address.
    #[must_use]
    pub fn ip(mut self, ip: IpAddr) -> Self {
        self.ip = Some(ip);
        self
    }

    /// Sets the request id.
    #[must_use]
    pub fn request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    /// Sets the user (a client key's name).
    #[must_use]
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user_id = Some(user.into());
        self
    }

    /// Sets the provider.
    #[must_use]
    pub fn provider(mut self, provider: impl Into<String>) -> Self {
        self.provider = Some(provider.into());
        self
    }

    /// The event's type.
    pub fn event_type(&self) -> EventType {
        match &self.what {
            What::AuthSuccess => EventType::AuthSuccess,
            What::AuthFailure { .. } => EventType::AuthFailure,
            What::TokenRefresh { .. } => EventType::TokenRefresh,
            What::ConfigChange { .. } => EventType::ConfigChange,
            What::ProviderRequest { .. } => EventType::ProviderRequest,
            What::SecurityViolation { .. } => EventType::SecurityViolation,
            What::CredentialAccess { .. } => EventType::CredentialAccess,
            What::Summary(summary) => summary.event_type,
        }
    }

    /// The `result` field: a short token (`success`, `failure`, the refusal reason or rule,
    /// the HTTP status), as the audit line has it.
    pub fn result(&self) -> String {
        match self.result_token() {
            ResultToken::Status(status) => status.to_string(),
            ResultToken::Word(word) => word.to_owned(),
        }
    }

    /// The `details` object, as the audit line has it: what [`Event::write_details`] writes,
    /// read back (for tests and for callers that want a `Value`; the sink writes the bytes
    /// straight, never through a `Value`).
    pub fn details(&self) -> Value {
        let mut out = Vec::new();
        self.write_details(&mut out);
        // The bytes are JSON the writer just made; an object stands in should that ever fail.
        serde_json::from_slice(&out).unwrap_or_else(|_| Value::Object(Map::new()))
    }

    /// The one mapping from an event to its `result` token, for [`Event::result`] and
    /// [`Event::write_result`].
    fn result_token(&self) -> ResultToken<'_> {
        let outcome = |o: &Result<(), String>| if o.is_ok() { "success" } else { "failure" };
        ResultToken::Word(match &self.what {
            What::ProviderRequest { status, .. } => return ResultToken::Status(*status),
            What::AuthSuccess => "success",
            What::AuthFailure { reason, .. } => reason,
            What::TokenRefresh { outcome: o, .. }
            | What::ConfigChange { outcome: o, .. }
            | What::CredentialAccess { outcome: o, .. } => outcome(o),
            What::SecurityViolation { rule, .. } => rule,
            What::Summary(summary) => summary.result,
        })
    }

    /// Writes the `result` field as a JSON string: what [`Event::result`] returns, without
    /// building a `String` (the sink calls it for every line).
    pub(crate) fn write_result(&self, out: &mut Vec<u8>) {
        match self.result_token() {
            // A status is digits: nothing to escape.
            ResultToken::Status(status) => {
                let _ = write!(out, "\"{status}\"");
            }
            ResultToken::Word(word) => json_value(out, word),
        }
    }

    /// Writes the `details` object, keys in sorted order, straight into the line's buffer
    /// without building a `Value`: the one encoder of an event's details (the sink calls it
    /// for every line, [`Event::details`] reads its bytes back).
    pub(crate) fn write_details(&self, out: &mut Vec<u8>) {
        if let What::ConfigChange { action, changed, details, outcome } = &self.what {
            // Rare (operator actions), and its extra facts are a free-form map: merged in a
            // map of its own, whose serialisation keeps the keys sorted, the fixed keys
            // winning over extra facts of the same name.
            let mut merged = details.clone();
            merged.insert("action".to_owned(), Value::String((*action).to_owned()));
            merged.insert("changed".to_owned(), json!(changed));
            if let Err(e) = outcome {
                merged.insert("error".to_owned(), Value::String(e.clone()));
            }
            json_value(out, &merged);
            return;
        }
        let mut object = Object::new(out);
        match &self.what {
            What::AuthSuccess => {}
            What::AuthFailure { plane, repeats, .. } => {
                object.field("plane", plane.as_str());
                object.opt("repeats", (*repeats > 0).then_some(repeats));
            }
            What::TokenRefresh { credential, outcome } => {
                object.field("credential", credential);
                object.opt("error", outcome.as_ref().err());
            }
            What::ConfigChange { .. } => {}
            What::ProviderRequest {
                model,
                status,
                duration,
                upstream,
                input_tokens,
                output_tokens,
                cost,
                credential,
                outcome,
                error,
                formats,
            } => {
                object.opt("client_format", formats.map(|f| f.0).as_ref());
                object.opt("cost_usd", cost.map(usd).as_ref());
                object.opt("credential", credential.as_ref());
                object.field("duration_ms", &millis(*duration));
                object.opt("error", error.as_ref());
                object.opt("input_tokens", input_tokens.as_ref());
                object.field("model", model);
                object.field("outcome", outcome);
                object.opt("output_tokens", output_tokens.as_ref());
                object.opt("priced", cost.is_none().then_some(&false));
                object.opt("provider_format", formats.map(|f| f.1).as_ref());
                object.field("status", status);
                object.opt("upstream_ms", upstream.map(millis).as_ref());
            }
            What::SecurityViolation { detail, repeats, .. } => {
                object.field("detail", detail);
                object.opt("repeats", (*repeats > 0).then_some(repeats));
            }
            What::CredentialAccess { action, credential, outcome } => {
                object.field("action", action);
                object.opt("credential", credential.as_ref());
                object.opt("error", outcome.as_ref().err());
            }
            What::Summary(summary) => {
                object.opt("addresses", summary.addresses.as_ref());
                object.opt("detail", summary.detail.as_ref());
                object.opt("plane", summary.plane.map(Plane::as_str));
                object.field("repeats", &summary.repeats);
                let ids = &summary.request_ids;
                object.opt("request_ids", (!ids.is_empty()).then_some(ids));
                let left_out = &summary.request_ids_left_out;
                object.opt("request_ids_left_out", (*left_out > 0).then_some(left_out));
                let samples = &summary.sample_ips;
                object.opt("sample_ips", (!samples.is_empty()).then_some(samples));
            }
        }
        object.end();
    }
}

/// An event's `result`: an HTTP status, or a word.
enum ResultToken<'a> {
    Status(u16),
    Word(&'a str),
}

/// Writes a JSON object field by field, straight into a buffer.
struct Object<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Object<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, first: true }
    }

    /// `key` is a plain ASCII name (nothing to escape).
    fn field<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
        json_value(self.out, value);
    }

    fn opt<T: Serialize + ?Sized>(&mut self, key: &str, value: Option<&T>) {
        if let Some(value) = value {
            self.field(key, value);
        }
    }

    fn end(&mut self) {
        self.out.push(b'}');
    }
}

/// Serialises a value into the buffer. Strings, numbers and the like cannot fail to
/// serialise, and a `Vec` cannot fail to take the bytes.
fn json_value<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let _ = serde_json::to_writer(out, value);
}

/// Milliseconds with microsecond precision, as a JSON number.
/// Micro-dollars as a decimal string of dollars with six decimals: `125` is `"0.000125"`.
/// A string, not a JSON number, so that no reader turns it into a binary float.
fn usd(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

fn millis(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_has_its_seed_name_and_a_distinct_bit() {
        let names: Vec<_> = EventType::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(
            names,
            [
                "auth_success",
                "auth_failure",
                "token_refresh",
                "config_change",
                "provider_request",
                "security_violation",
                "credential_access"
            ]
        );
        for (i, t) in EventType::ALL.iter().enumerate() {
            assert_eq!(t.index(), i);
            let name = Value::String(t.as_str().to_owned());
            assert_eq!(serde_json::to_value(t).ok(), Some(name.clone()), "{t:?} serialises");
            assert_eq!(serde_json::from_value::<EventType>(name).ok(), Some(*t), "{t:?} parses");
        }
    }

    #[test]
    fn the_result_and_details_are_written_as_the_audit_log_has_them() {
        let mut config = Map::new();
        config.insert("z".to_owned(), json!(1));
        config.insert("a".to_owned(), json!("\"quoted\" \u{1}"));
        let failed = || Err("it \"failed\"\n".to_owned());
        let events = [
            What::AuthSuccess,
            What::AuthFailure { plane: Plane::Client, reason: "missing_key", repeats: 3 },
            What::TokenRefresh { credential: "c-1".to_owned(), outcome: Ok(()) },
            What::TokenRefresh { credential: "c-1".to_owned(), outcome: failed() },
            What::ConfigChange {
                action: "reload",
                changed: vec!["server.port".to_owned()],
                details: config,
                outcome: failed(),
            },
            What::ProviderRequest {
                model: "gpt-4o\u{e9}".to_owned(),
                status: 200,
                duration: Duration::from_micros(1500),
                upstream: None,
                input_tokens: None,
                output_tokens: None,
                cost: None,
                credential: None,
                outcome: "complete",
                error: None,
                formats: None,
            },
            What::ProviderRequest {
                model: "m".to_owned(),
                status: 502,
                duration: Duration::from_secs(2),
                upstream: Some(Duration::from_nanos(1_234_567)),
                input_tokens: Some(3),
                output_tokens: Some(u64::MAX),
                cost: Some(u64::MAX),
                credential: Some("openai-1".to_owned()),
                outcome: "failed",
                error: Some("idle \\ timeout".to_owned()),
                formats: Some(("anthropic", "openai-chat")),
            },
            What::SecurityViolation {
                rule: "per_ip_rate",
                rate_limit: true,
                detail: "d".to_owned(),
                repeats: 0,
            },
            What::SecurityViolation {
                rule: "alert",
                rate_limit: false,
                detail: "d".to_owned(),
                repeats: 7,
            },
            What::CredentialAccess { action: "list", credential: None, outcome: Ok(()) },
            What::CredentialAccess {
                action: "delete",
                credential: Some("c".to_owned()),
                outcome: failed(),
            },
            What::Summary(Box::new(Summary::new(EventType::AuthFailure, "repeated", 2))),
            What::Summary(Box::new(Summary {
                plane: Some(Plane::Management),
                detail: Some("summary: \"d\"".to_owned()),
                addresses: Some(5_000),
                sample_ips: vec!["127.0.0.2".to_owned(), "2001:db8::/64".to_owned()],
                request_ids: vec!["req_1".to_owned(), "req_\u{2}".to_owned()],
                request_ids_left_out: 4_998,
                ..Summary::new(EventType::SecurityViolation, "per_ip_rate_limit", 5_000)
            })),
        ];
        // The lines as the audit log has always had them (what serialising the `Value`s of
        // the old second encoder gave): key order, escapes and number formats are the file
        // format that `verify` and the operators' tools read.
        let golden = [
            (r#""success""#, r#"{}"#),
            (r#""missing_key""#, r#"{"plane":"client","repeats":3}"#),
            (r#""success""#, r#"{"credential":"c-1"}"#),
            (r#""failure""#, r#"{"credential":"c-1","error":"it \"failed\"\n"}"#),
            (
                r#""failure""#,
                r#"{"a":"\"quoted\" \u0001","action":"reload","changed":["server.port"],"error":"it \"failed\"\n","z":1}"#,
            ),
            (
                r#""200""#,
                r#"{"duration_ms":1.5,"model":"gpt-4oé","outcome":"complete","priced":false,"status":200}"#,
            ),
            (
                r#""502""#,
                r#"{"client_format":"anthropic","cost_usd":"18446744073709.551615","credential":"openai-1","duration_ms":2000.0,"error":"idle \\ timeout","input_tokens":3,"model":"m","outcome":"failed","output_tokens":18446744073709551615,"provider_format":"openai-chat","status":502,"upstream_ms":1.234}"#,
            ),
            (r#""per_ip_rate""#, r#"{"detail":"d"}"#),
            (r#""alert""#, r#"{"detail":"d","repeats":7}"#),
            (r#""success""#, r#"{"action":"list"}"#),
            (r#""failure""#, r#"{"action":"delete","credential":"c","error":"it \"failed\"\n"}"#),
            (r#""repeated""#, r#"{"repeats":2}"#),
            (
                r#""per_ip_rate_limit""#,
                r#"{"addresses":5000,"detail":"summary: \"d\"","plane":"management","repeats":5000,"request_ids":["req_1","req_\u0002"],"request_ids_left_out":4998,"sample_ips":["127.0.0.2","2001:db8::/64"]}"#,
            ),
        ];
        assert_eq!(events.len(), golden.len());
        for (what, (result, details)) in events.into_iter().zip(golden) {
            let event = Event::new(what);
            let mut written = Vec::new();
            event.write_details(&mut written);
            assert_eq!(String::from_utf8(written).ok().as_deref(), Some(details), "{event:?}");
            let mut written = Vec::new();
            event.write_result(&mut written);
            assert_eq!(String::from_utf8(written).ok().as_deref(), Some(result), "{event:?}");
            // The `Value` accessors read the same bytes back.
            assert_eq!(serde_json::to_string(&event.details()).ok().as_deref(), Some(details));
            assert_eq!(serde_json::from_str::<String>(result).ok(), Some(event.result()));
        }
    }

    #[test]
    fn result_and_details_follow_the_kind() {
        let e = Event::new(What::ProviderRequest {
            model: "gpt-4o".to_owned(),
            status: 200,
            duration: Duration::from_micros(1500),
            upstream: None,
            input_tokens: Some(3),
            output_tokens: Some(2),
            cost: Some(125),
            credential: Some("openai-1".to_owned()),
            outcome: "complete",
            error: None,
            formats: None,
        })
        .provider("openai");
        assert_eq!(e.event_type(), EventType::ProviderRequest);
        assert_eq!(e.result(), "200");
        assert_eq!(
            e.details(),
            json!({"model": "gpt-4o", "status": 200, "outcome": "complete", "duration_ms": 1.5,
                   "input_tokens": 3, "output_tokens": 2, "cost_usd": "0.000125",
                   "credential": "openai-1"})
        );
        let refused = Event::new(What::AuthFailure {
            plane: Plane::Management,
            reason: "invalid_key",
            repeats: 0,
        });
        assert_eq!(
            (refused.result(), refused.details()),
            ("invalid_key".to_owned(), json!({"plane": "management"}))
        );
    }
}
