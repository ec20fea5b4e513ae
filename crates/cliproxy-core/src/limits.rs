//! The request-rate and quota settings that appear both under `providers.<name>` (owned by the
//! gateway) and under `auth.api_keys[N]` (owned by the vault), and that the network guard
//! enforces. They live here so that neither layer depends on the other.

use std::fmt;
use std::num::{NonZeroU32, NonZeroU64};

use serde::{Deserialize, Serialize};

/// `rate_limit: {requests_per_minute, tokens_per_minute}` of a provider or a client key.
/// Either may be left out; a missing one is not limited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RateLimit {
    /// Requests admitted per minute (a token bucket of this size refilled over a minute).
    #[serde(default)]
    pub requests_per_minute: Option<NonZeroU32>,
    /// Tokens (input + output) per minute: `max_tokens` is reserved before the request and
    /// the real usage settled after the reply.
    #[serde(default)]
    pub tokens_per_minute: Option<NonZeroU64>,
}

impl RateLimit {
    /// A limit with both figures set (for tests and built configs).
    pub fn new(
        requests_per_minute: Option<NonZeroU32>,
        tokens_per_minute: Option<NonZeroU64>,
    ) -> Self {
        Self { requests_per_minute, tokens_per_minute }
    }
}

/// `quota: {limit, reset}`: tokens (input + output) allowed per calendar period (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Quota {
    /// Tokens per period.
    pub limit: NonZeroU64,
    /// When the count starts again.
    #[serde(default)]
    pub reset: QuotaPeriod,
}

impl Quota {
    /// A quota of `limit` tokens per `reset` period.
    pub fn new(limit: NonZeroU64, reset: QuotaPeriod) -> Self {
        Self { limit, reset }
    }
}

/// A spending limit in US dollars per calendar period (UTC), in millionths of a dollar so that
/// sums of many small costs stay exact. Enforced by the network guard like a [`Quota`], in
/// micro-dollars instead of tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Budget {
    /// When the spend starts again from zero: a day, an ISO week or a month.
    pub period: QuotaPeriod,
    /// The most that may be spent in one period, in micro-dollars ($0.01 is 10 000).
    pub micro_usd: NonZeroU64,
}

impl Budget {
    /// A budget of `micro_usd` millionths of a dollar per `period`.
    pub fn new(period: QuotaPeriod, micro_usd: NonZeroU64) -> Self {
        Self { period, micro_usd }
    }
}

/// A quota period, in UTC: a calendar day, an ISO week (from Monday) or a calendar month.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum QuotaPeriod {
    /// From 00:00 UTC to the next 00:00 UTC.
    Daily,
    /// From Monday 00:00 UTC to the next Monday.
    Weekly,
    /// From the 1st of the month 00:00 UTC to the 1st of the next month.
    #[default]
    Monthly,
}

impl QuotaPeriod {
    /// The name used in config, logs and the state store.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Daily => "daily",
            Self::Weekly => "weekly",
            Self::Monthly => "monthly",
        }
    }

    /// Parses the name written by [`QuotaPeriod::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "daily" => Some(Self::Daily),
            "weekly" => Some(Self::Weekly),
            "monthly" => Some(Self::Monthly),
            _ => None,
        }
    }
}

impl fmt::Display for QuotaPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
