use std::fmt;
use std::sync::Arc;

use std::num::NonZeroU64;

use cliproxy_core::money::{MICROS_PER_USD, UsdAmount};
use cliproxy_core::{Budget, Quota, QuotaPeriod, RateLimit, Secret, glob_match};
use ring::digest::{SHA256, digest};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, de::value::MapAccessDeserializer};
use subtle::ConstantTimeEq;

use crate::{ClientKeyProblem, ClientKeyRecord, Error, Result};

/// Shortest client key accepted, in bytes.
const MIN_KEY_LEN: usize = 16;

/// One client key as configured: either a bare key (`- "${CLIPROXY_CLIENT_KEY}"`) or an object
/// with a name, the key and an optional model allowlist.
#[derive(Clone, Debug)]
pub struct ClientKeyConfig {
    /// The name used in logs and audit lines instead of the key; `key-N` when not given.
    pub name: Option<String>,
    /// The key the client presents.
    pub key: Secret,
    /// Model name patterns (`*` globs) this key may use; empty means every model.
    pub models: Vec<String>,
    /// Requests and tokens per minute for this key (enforced by the network guard).
    pub rate_limit: Option<RateLimit>,
    /// Tokens per day, week or month for this key (enforced by the network guard).
    pub quota: Option<Quota>,
    /// US dollars per day, week or month for this key (enforced by the network guard), as
    /// written; checked by [`ClientKeys::from_config`].
    pub budget: Option<BudgetConfig>,
}

/// A budget as a config file writes it: `{usd: 25, period: monthly}` (a number or a decimal
/// string of dollars, at most six decimals).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// Dollars per period, above zero and at most [`MAX_BUDGET_USD`].
    pub usd: UsdAmount,
    /// When the spend starts again from zero.
    pub period: QuotaPeriod,
}

/// The largest budget accepted, in dollars per period: a larger figure is a typo (a
/// misplaced decimal point) that would leave the key unlimited in practice.
pub const MAX_BUDGET_USD: u64 = 1_000_000;

impl BudgetConfig {
    /// The budget in micro-dollars, or why it is refused (the text follows the field's
    /// name, `budget.usd`).
    pub fn budget(&self) -> std::result::Result<Budget, String> {
        let micros = self.usd.micros(MAX_BUDGET_USD * MICROS_PER_USD).map_err(|e| e.to_string())?;
        let micros = NonZeroU64::new(micros).ok_or_else(|| {
            "is 0; a budget must be above $0 (leave `budget` out for none)".to_owned()
        })?;
        Ok(Budget::new(self.period, micros))
    }
}

impl<'de> Deserialize<'de> for ClientKeyConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            name: Option<String>,
            key: Secret,
            #[serde(default)]
            models: Vec<String>,
            #[serde(default)]
            rate_limit: Option<RateLimit>,
            #[serde(default)]
            quota: Option<Quota>,
            #[serde(default)]
            budget: Option<BudgetConfig>,
        }

        struct KeyVisitor;

        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = ClientKeyConfig;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key string or an object with `key` and optional `name` and `models`")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
                Ok(ClientKeyConfig {
                    name: None,
                    key: Secret::from(value.to_owned()),
                    models: Vec::new(),
                    rate_limit: None,
                    quota: None,
                    budget: None,
                })
            }

            fn visit_string<E: de::Error>(self, value: String) -> Result<Self::Value, E> {
                Ok(ClientKeyConfig {
                    name: None,
                    key: Secret::from(value),
                    models: Vec::new(),
                    rate_limit: None,
                    quota: None,
                    budget: None,
                })
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let full = Full::deserialize(MapAccessDeserializer::new(map))?;
                Ok(ClientKeyConfig {
                    name: full.name,
                    key: full.key,
                    models: full.models,
                    rate_limit: full.rate_limit,
                    quota: full.quota,
                    budget: full.budget,
                })
            }
        }

        deserializer.deserialize_any(KeyVisitor)
    }
}

/// Who a client key belongs to: the name that appears in logs, and what it may use.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientIdentity {
    /// The key's name (never the key).
    pub name: String,
    /// Model patterns the key may use; empty means every model.
    pub models: Vec<String>,
    /// The key's requests and tokens per minute, when limited.
    pub rate_limit: Option<RateLimit>,
    /// The key's token quota, when it has one.
    pub quota: Option<Quota>,
    /// The key's spending budget, when it has one (keys created at run time).
    pub budget: Option<Budget>,
    /// Unix seconds after which the key is refused (keys created at run time); `None` for
    /// never.
    pub expires_at: Option<u64>,
}

impl ClientIdentity {
    /// The identity of a key created at run time, from its stored record. Whether the record
    /// is usable now (disabled, expired) is the caller's check, at each request.
    pub fn from_record(record: &ClientKeyRecord) -> Self {
        Self {
            name: record.name.clone(),
            models: record.models.clone(),
            rate_limit: record.rate_limit,
            quota: record.quota,
            budget: record.budget,
            expires_at: record.expires_at,
        }
    }

    /// Whether this client may call `model`.
    pub fn allows_model(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|pattern| glob_match(pattern, model))
    }
}

/// The configured client keys, held only as SHA-256 digests.
///
/// A presented key is hashed and compared with every digest in constant time, so neither the
/// position of the first differing byte nor which entry matched shows in the timing.
pub struct ClientKeys {
    entries: Vec<([u8; 32], Arc<ClientIdentity>)>,
}

impl fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.entries.iter().map(|(_, id)| id.name.as_str()).collect();
        f.debug_struct("ClientKeys").field("names", &names).finish()
    }
}

pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

impl ClientKeys {
    /// Validates a list of client keys: every key at least 16 bytes, no key or name twice.
    /// A problem is an [`Error::ClientKey`] naming the entry by its position in `keys`.
    pub fn from_config(keys: &[ClientKeyConfig]) -> Result<Self> {
        let mut entries: Vec<([u8; 32], Arc<ClientIdentity>)> = Vec::with_capacity(keys.len());
        for (index, entry) in keys.iter().enumerate() {
            let fail = |problem: ClientKeyProblem| Error::ClientKey { index, problem };
            if entry.key.is_empty() {
                return Err(fail(ClientKeyProblem::Empty));
            }
            if entry.key.len() < MIN_KEY_LEN {
                return Err(fail(ClientKeyProblem::TooShort {
                    len: entry.key.len(),
                    min: MIN_KEY_LEN,
                }));
            }
            let name = match &entry.name {
                Some(name) if name.trim().is_empty() => {
                    return Err(fail(ClientKeyProblem::EmptyName));
                }
                Some(name) => name.clone(),
                None => format!("key-{}", index + 1),
            };
            if let Some(pattern) = entry.models.iter().find(|p| p.trim().is_empty()) {
                return Err(fail(ClientKeyProblem::EmptyModelPattern { pattern: pattern.clone() }));
            }
            let budget = entry
                .budget
                .as_ref()
                .map(BudgetConfig::budget)
                .transpose()
                .map_err(|reason| fail(ClientKeyProblem::BadBudget { reason }))?;
            let hash = sha256(entry.key.expose().as_bytes());
            if let Some(first) = entries.iter().position(|(h, _)| bool::from(h.ct_eq(&hash))) {
                return Err(fail(ClientKeyProblem::DuplicateKey { first }));
            }
            if let Some(first) = entries.iter().position(|(_, id)| id.name == name) {
                return Err(fail(ClientKeyProblem::DuplicateName { name, first }));
            }
            entries.push((
                hash,
                Arc::new(ClientIdentity {
                    name,
                    models: entry.models.clone(),
                    rate_limit: entry.rate_limit,
                    quota: entry.quota,
                    budget,
                    expires_at: None,
                }),
            ));
        }
        Ok(Self { entries })
    }

    /// The identity owning `presented`, if any. Compares against every configured key.
    pub fn authenticate(&self, presented: &[u8]) -> Option<Arc<ClientIdentity>> {
        self.authenticate_digest(&sha256(presented))
    }

    /// The identity whose key has the SHA-256 digest `digest` ([`crate::key_sha256`]), if
    /// any: for a caller that looks the same presented key up elsewhere too (the keys created
    /// at run time) and hashes it once for both. Compares against every configured digest in
    /// constant time, as [`ClientKeys::authenticate`] does.
    pub fn authenticate_digest(&self, digest: &[u8; 32]) -> Option<Arc<ClientIdentity>> {
        let hash = digest;
        let mut found = None;
        for (candidate, identity) in &self.entries {
            if bool::from(candidate.ct_eq(hash)) {
                found = Some(Arc::clone(identity));
            }
        }
        found
    }

    /// Every configured identity, in config order (for the limits the network guard keeps
    /// per key).
    pub fn identities(&self) -> impl Iterator<Item = &Arc<ClientIdentity>> {
        self.entries.iter().map(|(_, identity)| identity)
    }

    /// How many keys are configured.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is configured (every proxy request is then refused).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLANTED: &str = "cpk-planted-client-key-9d2e7b";

    fn key(name: Option<&str>, key: &str, models: &[&str]) -> ClientKeyConfig {
        ClientKeyConfig {
            name: name.map(str::to_owned),
            key: Secret::from(key.to_owned()),
            models: models.iter().map(|m| (*m).to_owned()).collect(),
            rate_limit: None,
            quota: None,
            budget: None,
        }
    }

    #[test]
    fn authenticates_the_right_identity_and_nothing_else() {
        let keys = ClientKeys::from_config(&[
            key(None, "cpk-aaaaaaaaaaaaaaaaaaaa", &[]),
            key(Some("ci"), PLANTED, &["gpt-4o*"]),
        ])
        .unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.authenticate(b"cpk-aaaaaaaaaaaaaaaaaaaa").unwrap().name, "key-1");
        let ci = keys.authenticate(PLANTED.as_bytes()).unwrap();
        assert_eq!(ci.name, "ci");
        assert!(ci.allows_model("gpt-4o-mini"));
        assert!(!ci.allows_model("claude-sonnet-4"));
        assert!(keys.authenticate(b"cpk-aaaaaaaaaaaaaaaaaaab").is_none());
        assert!(keys.authenticate(b"").is_none());
        assert!(keys.authenticate(&PLANTED.as_bytes()[..PLANTED.len() - 1]).is_none());
    }

    /// The messages speak of client keys by position, in the library's terms: naming them as a
    /// program's configuration does (`auth.api_keys[1]`) is the caller's job.
    #[test]
    fn rejects_short_empty_and_duplicate_keys_without_echoing_them() {
        let cases = [
            (vec![key(None, "", &[])], "client key 0: the key is empty", ClientKeyProblem::Empty),
            (
                vec![key(None, "cpk-short", &[])],
                "client key 0: the key is 9 bytes; client keys must be at least 16 bytes",
                ClientKeyProblem::TooShort { len: 9, min: 16 },
            ),
            (
                vec![key(None, PLANTED, &[]), key(None, PLANTED, &[])],
                "client key 1: the same key is already listed as client key 0",
                ClientKeyProblem::DuplicateKey { first: 0 },
            ),
            (
                vec![key(Some("a"), PLANTED, &[]), key(Some("a"), "cpk-bbbbbbbbbbbbbbbbbbbb", &[])],
                "client key 1: the name `a` is already used by client key 0",
                ClientKeyProblem::DuplicateName { name: "a".to_owned(), first: 0 },
            ),
            (
                vec![key(Some(" "), PLANTED, &[])],
                "client key 0: `name` is empty",
                ClientKeyProblem::EmptyName,
            ),
            (
                vec![key(None, PLANTED, &[""])],
                "client key 0: `models` contains an empty",
                ClientKeyProblem::EmptyModelPattern { pattern: String::new() },
            ),
        ];
        for (config, expected, problem) in cases {
            let error = ClientKeys::from_config(&config).unwrap_err();
            assert!(error.is_config());
            let Error::ClientKey { problem: got, .. } = &error else { panic!("{error:?}") };
            assert_eq!(got, &problem);
            let error = error.to_string();
            assert!(error.starts_with(expected), "{error}");
            assert!(!error.contains(PLANTED), "{error}");
            assert!(!error.contains("auth.") && !error.contains("cliproxy-server"), "{error}");
        }
    }

    #[test]
    fn debug_shows_names_not_keys() {
        let keys = ClientKeys::from_config(&[key(Some("ci"), PLANTED, &[])]).unwrap();
        let printed = format!("{keys:?} {:?}", key(Some("ci"), PLANTED, &[]));
        assert!(printed.contains("ci"), "{printed}");
        assert!(!printed.contains(PLANTED), "{printed}");
    }

    #[test]
    fn deserializes_bare_strings_and_objects_and_rejects_unknown_fields() {
        let parsed: Vec<ClientKeyConfig> = serde_json::from_str(&format!(
            r#"["{PLANTED}", {{"name": "ci", "key": "{PLANTED}x", "models": ["claude-*"]}}]"#
        ))
        .unwrap();
        assert_eq!(parsed[0].name, None);
        assert_eq!(parsed[0].key.expose(), PLANTED);
        assert_eq!(parsed[1].name.as_deref(), Some("ci"));
        assert_eq!(parsed[1].models, ["claude-*"]);
        let error = serde_json::from_str::<Vec<ClientKeyConfig>>(r#"[{"key": "x", "modles": []}]"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("modles"), "{error}");
        let error = serde_json::from_str::<Vec<ClientKeyConfig>>("[42]").unwrap_err().to_string();
        assert!(error.contains("a key string or an object"), "{error}");
    }

    /// A config key's budget: dollars as a number or a decimal string, read exactly; the
    /// hostile and mistyped forms are refused, by serde (unknown fields, a period that is not
    /// one) or by `from_config` (everything about the amount), never taken as no budget.
    #[test]
    fn budgets_are_read_exactly_and_bad_ones_refused() {
        let parse = |budget: &str| {
            let text = format!(r#"[{{"name": "b", "key": "{PLANTED}", "budget": {budget}}}]"#);
            serde_json::from_str::<Vec<ClientKeyConfig>>(&text).map_err(|e| e.to_string())
        };
        let keys = ClientKeys::from_config(&parse(r#"{"usd": 0.1, "period": "weekly"}"#).unwrap())
            .unwrap();
        let budget = keys.identities().next().unwrap().budget.unwrap();
        assert_eq!((budget.micro_usd.get(), budget.period), (100_000, QuotaPeriod::Weekly));
        let keys = ClientKeys::from_config(
            &parse(r#"{"usd": "25.000001", "period": "monthly"}"#).unwrap(),
        )
        .unwrap();
        assert_eq!(keys.identities().next().unwrap().budget.unwrap().micro_usd.get(), 25_000_001);
        for bad in [
            r#"{"usd": 1, "period": "hourly"}"#,
            r#"{"usd": 1}"#,
            r#"{"usd": 1, "period": "daily", "extra": 1}"#,
            r#"{"usd": [1], "period": "daily"}"#,
            r#""1 USD""#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let long = format!(r#"{{"usd": "{}", "period": "daily"}}"#, "9".repeat(100_000));
        for (budget, expected) in [
            (r#"{"usd": 0, "period": "daily"}"#, "is 0"),
            (r#"{"usd": -5, "period": "daily"}"#, "is negative"),
            (r#"{"usd": "NaN", "period": "daily"}"#, "not a decimal"),
            (r#"{"usd": "1e9", "period": "daily"}"#, "not a decimal"),
            (r#"{"usd": "0.0000001", "period": "daily"}"#, "more than 6 decimals"),
            (r#"{"usd": 1000001, "period": "daily"}"#, "is above $1000000"),
            (long.as_str(), "is above"),
        ] {
            let error = ClientKeys::from_config(&parse(budget).unwrap()).unwrap_err();
            let message = error.to_string();
            assert!(message.contains("`budget.usd`") && message.contains(expected), "{message}");
            assert!(!message.contains(PLANTED) && message.len() < 300, "{message}");
        }
    }
}
