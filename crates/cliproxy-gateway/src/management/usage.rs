//! `GET /v0/management/usage?from=&to=&by=key|provider|model&bucket=hour|day`: the usage
//! history (requests, errors, tokens by kind, cost) grouped by client key, provider or model,
//! in hourly or daily buckets, with the range's totals. `cliproxy-server usage` reads the same
//! rows offline and builds its answer with the same two functions ([`UsageQuery::parse`],
//! [`usage_report`]), so the command and the API cannot disagree.
//!
//! The query string is network input: it is read strictly. Every parameter may appear once,
//! an unknown one is refused by name, the whole string and each value are bounded, and times
//! are RFC 3339 in UTC (`2026-12-07T10:00:00Z`) or a span back from now (`7d`, `24h`, `30m`).
//! The range is whole hours: `from` is taken down to the start of its hour, `to` up to the end
//! of its hour, and both are shown in the answer as used.
//!
//! The answer includes every request finished before the call: the handler hands the
//! accumulator's rows to the state store and reads it back after the store has written them.

use std::collections::BTreeMap;
use std::time::Duration;

use cliproxy_core::ErrorCode;
use cliproxy_core::format_utc;
use cliproxy_core::money::format_usd;
use cliproxy_netguard::{USAGE_BUCKET_SECS, UsageCounts, UsageRow};
use http::{Response, StatusCode};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::guard::Guard;
use crate::http_util::{Body, json_response};

/// The longest query string read.
const MAX_QUERY: usize = 1024;
/// The longest value of one parameter (an RFC 3339 time with fractions is about 35 bytes).
const MAX_VALUE: usize = 64;
/// The longest span back from now (`3650d`): beyond it, a typo.
const MAX_SPAN: Duration = Duration::from_secs(3650 * 86_400);
/// The default range: the last 24 hours.
const DEFAULT_SPAN: u64 = 86_400;
const DAY: u64 = 86_400;

/// What the history is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UsageGroup {
    /// The client key's name.
    Key,
    /// The provider's name.
    Provider,
    /// The model the client asked for.
    Model,
}

impl UsageGroup {
    /// `key`, `provider` or `model`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::Provider => "provider",
            Self::Model => "model",
        }
    }

    fn of(self, row: &UsageRow) -> &str {
        match self {
            Self::Key => &row.client,
            Self::Provider => &row.provider,
            Self::Model => &row.model,
        }
    }
}

/// The size of the buckets the history is summed into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UsageBucket {
    /// An hour (the history's own resolution).
    Hour,
    /// A day (UTC).
    Day,
}

impl UsageBucket {
    /// `hour` or `day`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
        }
    }

    fn seconds(self) -> u64 {
        match self {
            Self::Hour => USAGE_BUCKET_SECS,
            Self::Day => DAY,
        }
    }
}

/// A checked usage query: the range in whole hours (`from` included, `to` left out, Unix
/// seconds), the grouping and the bucket size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct UsageQuery {
    /// The first hour's start.
    pub from: u64,
    /// The end of the last hour.
    pub to: u64,
    /// What the rows are grouped by.
    pub by: UsageGroup,
    /// The bucket size.
    pub bucket: UsageBucket,
}

impl UsageQuery {
    /// Reads a query string (without the `?`) at `now` (Unix seconds), refusing a range that
    /// starts before what `retention` keeps. The error is a sentence for a 400 (or for the
    /// command line).
    pub fn parse(query: Option<&str>, now: u64, retention: Duration) -> Result<Self, String> {
        let query = query.unwrap_or("");
        if query.len() > MAX_QUERY {
            return Err(format!("the query string is longer than {MAX_QUERY} bytes"));
        }
        let mut seen: BTreeMap<&str, String> = BTreeMap::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if !matches!(name, "from" | "to" | "by" | "bucket") {
                return Err(format!(
                    "unknown parameter `{}`; the parameters are from, to, by and bucket",
                    shown(name)
                ));
            }
            if seen.contains_key(name) {
                return Err(format!("`{name}` is given more than once"));
            }
            if value.len() > MAX_VALUE {
                return Err(format!("`{name}` is longer than {MAX_VALUE} bytes"));
            }
            let value = percent_decode(value)
                .ok_or_else(|| format!("`{name}` is not valid percent-encoded UTF-8"))?;
            seen.insert(name, value);
        }
        let time = |name: &str| -> Result<Option<u64>, String> {
            seen.get(name).map(|value| parse_time(name, value, now)).transpose()
        };
        let to = time("to")?.unwrap_or(now);
        let oldest = now.saturating_sub(retention.as_secs());
        let from = match time("from")? {
            Some(from) => {
                // The hour that holds the retention's edge is still (partly) kept.
                if from < floor(oldest, USAGE_BUCKET_SECS) {
                    return Err(format!(
                        "`from` ({}) is before the history kept (usage.retention is {}, so the oldest is {})",
                        format_utc(from),
                        span(retention),
                        format_utc(floor(oldest, USAGE_BUCKET_SECS))
                    ));
                }
                from
            }
            None => to.saturating_sub(DEFAULT_SPAN).max(floor(oldest, USAGE_BUCKET_SECS)),
        };
        if from >= to {
            return Err(format!(
                "`from` ({}) must be before `to` ({})",
                format_utc(from),
                format_utc(to)
            ));
        }
        let by = match seen.get("by").map(String::as_str) {
            None | Some("key") => UsageGroup::Key,
            Some("provider") => UsageGroup::Provider,
            Some("model") => UsageGroup::Model,
            Some(other) => {
                return Err(format!(
                    "`by` is `{}`; it must be key, provider or model",
                    shown(other)
                ));
            }
        };
        let bucket = match seen.get("bucket").map(String::as_str) {
            None | Some("hour") => UsageBucket::Hour,
            Some("day") => UsageBucket::Day,
            Some(other) => {
                return Err(format!("`bucket` is `{}`; it must be hour or day", shown(other)));
            }
        };
        let from = floor(from, USAGE_BUCKET_SECS);
        let to = floor(to.saturating_add(USAGE_BUCKET_SECS - 1), USAGE_BUCKET_SECS);
        Ok(Self { from, to, by, bucket })
    }
}

/// The answer to `query` from the history `rows` (those of its range): one entry per bucket
/// and group, ordered by bucket start then group, and the range's totals. Costs are decimal
/// strings of dollars with six decimals; `unpriced_requests` counts the requests whose cost is
/// unknown, which the cost leaves out (never shown as free).
pub fn usage_report(rows: &[UsageRow], query: &UsageQuery) -> Value {
    let mut buckets: BTreeMap<(u64, &str), UsageCounts> = BTreeMap::new();
    let mut totals = UsageCounts::default();
    for row in rows.iter().filter(|row| row.hour >= query.from && row.hour < query.to) {
        let start = floor(row.hour, query.bucket.seconds());
        buckets.entry((start, query.by.of(row))).or_default().add(&row.counts);
        totals.add(&row.counts);
    }
    let buckets: Vec<Value> = buckets
        .iter()
        .map(|((start, group), counts)| {
            let mut entry = counts_json(counts);
            entry["start"] = json!(format_utc(*start));
            entry["group"] = json!(group);
            entry
        })
        .collect();
    json!({
        "from": format_utc(query.from),
        "to": format_utc(query.to),
        "by": query.by.as_str(),
        "bucket": query.bucket.as_str(),
        "buckets": buckets,
        "totals": counts_json(&totals),
    })
}

fn counts_json(counts: &UsageCounts) -> Value {
    json!({
        "requests": counts.requests,
        "errors": counts.errors,
        "input_tokens": counts.input_tokens,
        "output_tokens": counts.output_tokens,
        "cache_read_tokens": counts.cache_read_tokens,
        "cache_write_tokens": counts.cache_write_tokens,
        "cost_usd": format_usd(counts.cost_micros),
        "unpriced_requests": counts.unpriced_requests,
    })
}

/// `GET /usage`.
pub(super) async fn usage(guard: &Guard, query: Option<&str>) -> Result<Response<Body>, ApiError> {
    let now = guard.clock.unix_seconds();
    let query = UsageQuery::parse(query, now, guard.usage.retention())
        .map_err(|message| ApiError::new(ErrorCode::BadRequest, message))?;
    // The requests finished so far go to the store first; its read flushes them.
    guard.usage.drain(now, &*guard.state);
    let state = guard.state.clone();
    let (from, to) = (query.from, query.to);
    let rows = tokio::task::spawn_blocking(move || state.load_usage(from, to))
        .await
        .map_err(|_| ApiError::new(ErrorCode::Internal, "the state store reader failed"))?
        .map_err(|error| {
            ApiError::new(
                ErrorCode::Internal,
                format!("cannot read the usage history: {}", crate::netguard_error(&error)),
            )
        })?;
    Ok(json_response(StatusCode::OK, &usage_report(&rows, &query)))
}

/// A retention as it is usually written: `90d`, `36h`, else humantime's form.
fn span(duration: Duration) -> String {
    match duration.as_secs() {
        secs if secs > 0 && secs % DAY == 0 => format!("{}d", secs / DAY),
        secs if secs > 0 && secs % 3600 == 0 => format!("{}h", secs / 3600),
        _ => humantime::format_duration(duration).to_string(),
    }
}

/// `value` taken down to a multiple of `step`.
fn floor(value: u64, step: u64) -> u64 {
    value - value % step
}

/// A time given as RFC 3339 in UTC, or as a span back from `now` (`7d`, `24h`, `90m`).
fn parse_time(name: &str, value: &str, now: u64) -> Result<u64, String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(format!("`{name}` is empty"));
    }
    if value.starts_with(|c: char| c.is_ascii_digit()) && value.contains('-') {
        let at = humantime::parse_rfc3339_weak(value).map_err(|_| {
            format!(
                "`{name}` is `{}`, not an RFC 3339 time in UTC (like 2026-12-07T10:00:00Z)",
                shown(value)
            )
        })?;
        return at
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .map_err(|_| format!("`{name}` is before 1970"));
    }
    let span = humantime::parse_duration(value).map_err(|_| {
        format!(
            "`{name}` is `{}`: give an RFC 3339 time in UTC (2026-12-07T10:00:00Z) or a span back from now (7d, 24h, 30m)",
            shown(value)
        )
    })?;
    if span > MAX_SPAN {
        return Err(format!("`{name}` goes back more than 3650d"));
    }
    Ok(now.saturating_sub(span.as_secs()))
}

/// Percent-decodes a query value (`%3A` is `:`); `+` stays a plus, as RFC 3339 offsets need.
fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let text = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(text, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A client's text quoted in an error: at most 40 characters, control characters escaped.
fn shown(text: &str) -> String {
    let cut: String = text.chars().take(40).collect();
    let cut = cut.escape_debug().to_string();
    if text.chars().count() > 40 { format!("{cut}…") } else { cut }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2027-01-15T08:00:00Z, an hour's start.
    const NOW: u64 = 1_800_000_000 / 3600 * 3600;
    const RETENTION: Duration = Duration::from_secs(90 * DAY);

    fn parse(query: &str) -> Result<UsageQuery, String> {
        UsageQuery::parse(Some(query), NOW + 1234, RETENTION)
    }

    #[test]
    fn defaults_are_the_last_24_hours_by_key_in_hours() {
        let query = UsageQuery::parse(None, NOW + 1234, RETENTION).unwrap();
        assert_eq!((query.from, query.to), (NOW - DAY, NOW + 3600));
        assert_eq!((query.by, query.bucket), (UsageGroup::Key, UsageBucket::Hour));
        assert_eq!(parse("").unwrap(), query);
        // A short retention narrows the default range instead of refusing it.
        let short = UsageQuery::parse(None, NOW + 1234, Duration::from_secs(7200)).unwrap();
        assert_eq!(short.from, NOW - 7200);
    }

    #[test]
    fn times_are_rfc_3339_in_utc_or_spans_back_and_whole_hours() {
        let query = parse("from=7d&to=2027-01-15T07:30:00Z&by=model&bucket=day").unwrap();
        assert_eq!(query.from, NOW - 7 * DAY);
        assert_eq!(query.to, NOW, "07:30 is taken up to the end of its hour");
        assert_eq!((query.by, query.bucket), (UsageGroup::Model, UsageBucket::Day));
        let encoded = parse("from=2027-01-15T05%3A10%3A00Z&by=provider").unwrap();
        assert_eq!(encoded.from, NOW - 3 * 3600);
        assert_eq!(encoded.by, UsageGroup::Provider);
        // 90 minutes before 08:20:34 is 06:50:34, taken down to 06:00.
        assert_eq!(parse("from=90m").unwrap().from, NOW - 7200);
    }

    #[test]
    fn hostile_queries_get_clear_refusals() {
        for (query, expected) in [
            ("from=yesterday", "`from` is `yesterday`: give an RFC 3339 time"),
            ("from=2027-13-45T00:00:00Z", "not an RFC 3339 time in UTC"),
            ("to=2027-01-15T07:00:00+02:00", "not an RFC 3339 time in UTC"),
            ("from=1h&to=2h", "must be before `to`"),
            ("from=2027-01-15T09:00:00Z", "must be before `to`"),
            ("from=91d", "before the history kept (usage.retention is 90d"),
            ("from=99999999999999999999d", "`from` is `99999999999999999999d`"),
            ("from=3651d", "goes back more than 3650d"),
            ("from=1h&from=2h", "`from` is given more than once"),
            ("by=key&by=key", "`by` is given more than once"),
            ("limit=5", "unknown parameter `limit`"),
            ("by=user", "`by` is `user`; it must be key, provider or model"),
            ("bucket=week", "`bucket` is `week`; it must be hour or day"),
            ("by=", "`by` is ``"),
            ("from=", "`from` is empty"),
            ("from=%ZZ", "not valid percent-encoded"),
            ("from=%ff%fe", "not valid percent-encoded"),
            ("by=%0a%1b", "`by` is `\\n\\u{1b}`"),
        ] {
            let error = parse(query).unwrap_err();
            assert!(error.contains(expected), "{query}: {error}");
        }
        let long = format!("by={}", "k".repeat(100));
        assert!(parse(&long).unwrap_err().contains("longer than 64 bytes"));
        let huge = "&".repeat(2000);
        assert!(parse(&huge).unwrap_err().contains("longer than 1024 bytes"));
        let name = format!("{}=1", "x".repeat(200));
        let error = parse(&name).unwrap_err();
        assert!(error.contains("unknown parameter") && error.len() < 200, "{error}");
    }

    fn row(hour: u64, client: &str, model: &str, requests: u64, cost: u64) -> UsageRow {
        UsageRow {
            hour,
            client: client.to_owned(),
            provider: "openai".to_owned(),
            model: model.to_owned(),
            counts: UsageCounts {
                requests,
                input_tokens: 10 * requests,
                cost_micros: cost,
                ..UsageCounts::default()
            },
        }
    }

    #[test]
    fn the_report_sums_rows_into_buckets_and_groups_with_totals() {
        let rows = [
            row(NOW - 2 * 3600, "alice", "a", 1, 100),
            row(NOW - 2 * 3600, "bob", "a", 2, 0),
            row(NOW - 3600, "alice", "b", 3, 1_500_000),
            row(NOW, "alice", "a", 4, 1),
        ];
        let query = parse("from=3h").unwrap();
        let report = usage_report(&rows, &query);
        let buckets = report["buckets"].as_array().unwrap();
        assert_eq!(buckets.len(), 4);
        assert_eq!(buckets[0]["group"], "alice");
        assert_eq!(buckets[0]["start"], format_utc(NOW - 2 * 3600));
        assert_eq!(report["totals"]["requests"], 10);
        assert_eq!(report["totals"]["cost_usd"], "1.500101");
        let by_model = usage_report(&rows, &parse("from=3h&by=model&bucket=day").unwrap());
        let buckets = by_model["buckets"].as_array().unwrap();
        // NOW is 08:00, so the three hours are in one day.
        assert_eq!(buckets.len(), 2, "{by_model}");
        assert_eq!(
            (buckets[0]["group"].as_str(), buckets[0]["requests"].as_u64()),
            (Some("a"), Some(7))
        );
        assert_eq!(buckets[1]["cost_usd"], "1.500000");
        assert_eq!(by_model["bucket"], "day");
        // Rows outside the range are left out.
        let narrow = usage_report(&rows, &UsageQuery { from: NOW - 3600, to: NOW, ..query });
        assert_eq!(narrow["totals"]["requests"], 3);
    }
}
