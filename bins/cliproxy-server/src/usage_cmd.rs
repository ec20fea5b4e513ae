//! `cliproxy-server usage [--by key|provider|model] [--since 7d] [--bucket hour|day]
//! [--json]`: the usage history, read offline from the state store like `bans list`. The
//! answer is built by the same functions as `GET /v0/management/usage`
//! (`UsageQuery::parse`, `usage_report`), so `--json` prints exactly what the API would for
//! the rows on disk, and the table is that answer laid out.

use anyhow::anyhow;
use cliproxy_core::format_utc_plain;
use cliproxy_gateway::{UsageQuery, usage_report};
use serde_json::Value;

use crate::cli::{ConfigArg, UsageArgs};
use crate::config_load::load;
use crate::failure::Failure;
use crate::state_open::{Missing, open_state};

/// Exit code for a bad argument (a `--since` that is not a span or a time).
const EXIT_USAGE: u8 = 2;

/// Runs `usage`.
pub(crate) fn run(config: &ConfigArg, args: &UsageArgs) -> Result<(), Failure> {
    let config = load(config)?;
    let retention = config.usage.retention;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // The flags become the API's query string, the one value a user types escaped so that
    // it cannot add parameters of its own.
    let since = args.since.as_deref().map(|since| {
        format!("from={}&", since.replace('%', "%25").replace('&', "%26").replace('=', "%3D"))
    });
    let query = format!("{}by={}&bucket={}", since.unwrap_or_default(), args.by, args.bucket);
    let query = UsageQuery::parse(Some(&query), now, retention).map_err(|message| Failure {
        error: anyhow!("{}", message.replace("`from`", "--since")),
        exit_code: EXIT_USAGE,
    })?;
    let rows = match open_state(&config, Missing::Skip)? {
        Some(store) => {
            let rows = store
                .load_usage(query.from, query.to)
                .map_err(|e| anyhow!(cliproxy_gateway::netguard_error(&e)))?;
            store.flush().map_err(|e| anyhow!(cliproxy_gateway::netguard_error(&e)))?;
            rows
        }
        // Nothing was ever stored: an empty history, not an error.
        None => Vec::new(),
    };
    let report = usage_report(&rows, &query);
    if args.json {
        println!("{report:#}");
    } else {
        print!("{}", table(&report, query.from, query.to));
    }
    Ok(())
}

/// The report as a table: a row per bucket and group, then the totals.
fn table(report: &Value, from: u64, to: u64) -> String {
    let group = report["by"].as_str().unwrap_or("key").to_ascii_uppercase();
    let mut out = format!(
        "usage from {} to {} (UTC), by {}, {} buckets\n",
        format_utc_plain(from),
        format_utc_plain(to),
        report["by"].as_str().unwrap_or_default(),
        report["bucket"].as_str().unwrap_or_default()
    );
    let header = [
        "START (UTC)",
        &group,
        "REQUESTS",
        "ERRORS",
        "INPUT",
        "OUTPUT",
        "CACHE_READ",
        "CACHE_WRITE",
        "COST_USD",
        "UNPRICED",
    ];
    let mut lines: Vec<[String; 10]> = vec![header.map(str::to_owned)];
    let counts = |entry: &Value| -> [String; 8] {
        [
            "requests",
            "errors",
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
            "cost_usd",
            "unpriced_requests",
        ]
        .map(|field| match &entry[field] {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        })
    };
    let empty = Vec::new();
    let buckets = report["buckets"].as_array().unwrap_or(&empty);
    for entry in buckets {
        let start = entry["start"].as_str().unwrap_or_default().replace('T', " ").replace('Z', "");
        let name = entry["group"].as_str().unwrap_or_default();
        let [a, b, c, d, e, f, g, h] = counts(entry);
        lines.push([start, shown(name), a, b, c, d, e, f, g, h]);
    }
    let [a, b, c, d, e, f, g, h] = counts(&report["totals"]);
    lines.push(["TOTAL".to_owned(), String::new(), a, b, c, d, e, f, g, h]);
    let mut widths = [0usize; 10];
    for line in &lines {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .zip(widths)
            .enumerate()
            // Names to the left, numbers to the right.
            .map(
                |(i, (cell, width))| {
                    if i < 2 { format!("{cell:<width$}") } else { format!("{cell:>width$}") }
                },
            )
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    if buckets.is_empty() {
        out.push_str("(no requests in this range)\n");
    }
    out
}

/// A stored name as printed: control characters escaped (a name is whatever a key was
/// given), at most 40 characters.
fn shown(name: &str) -> String {
    let cut: String = name.chars().take(40).collect();
    cut.escape_debug().to_string()
}
