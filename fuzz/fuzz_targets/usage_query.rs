//! `GET /v0/management/usage` reads its query string (any bytes a management caller sends,
//! after the key check) with `UsageQuery::parse`: whatever the bytes, it must answer a range
//! of whole hours with `from` before `to` within what the retention keeps, or a refusal of
//! bounded length, never a panic; and the report built on the answer must not panic either.
//!
//! Input layout (the seeds in `fuzz/seeds/usage_query/` follow it): byte 0 the retention in
//! days (`+ 1`, so 1 to 256 days); the rest the query string, taken as UTF-8 (lossily, so that
//! every input reaches the parser).
#![no_main]

use std::time::Duration;

use cliproxy_gateway::{UsageQuery, usage_report};
use cliproxy_netguard::{UsageCounts, UsageRow};
use libfuzzer_sys::fuzz_target;

/// 2027-01-15T08:20:00Z: a time that is not an hour's start.
const NOW: u64 = 1_800_000_000;
const HOUR: u64 = 3600;

fuzz_target!(|data: &[u8]| {
    let Some((&days, rest)) = data.split_first() else { return };
    let retention = Duration::from_secs((u64::from(days) + 1) * 86_400);
    let text = String::from_utf8_lossy(rest);
    match UsageQuery::parse(Some(&text), NOW, retention) {
        Ok(query) => {
            assert!(query.from < query.to, "{text:?}: {query:?}");
            assert_eq!(query.from % HOUR, 0, "{text:?}: {query:?}");
            assert_eq!(query.to % HOUR, 0, "{text:?}: {query:?}");
            let oldest = (NOW - retention.as_secs()) / HOUR * HOUR;
            assert!(query.from >= oldest, "{text:?}: {query:?} starts before the retention");
            let row = |hour: u64| UsageRow {
                hour,
                client: "k".to_owned(),
                provider: "p".to_owned(),
                model: "m".to_owned(),
                counts: UsageCounts {
                    requests: 1,
                    cost_micros: u64::MAX,
                    ..UsageCounts::default()
                },
            };
            let rows = [row(query.from), row(query.to.saturating_sub(HOUR)), row(query.to)];
            let report = usage_report(&rows, &query);
            assert!(report["totals"]["requests"].as_u64().is_some_and(|n| n <= 2), "{report}");
        }
        // A refusal quotes at most a short, escaped piece of the input.
        Err(message) => assert!(message.len() < 400, "{} bytes: {message}", message.len()),
    }
});
