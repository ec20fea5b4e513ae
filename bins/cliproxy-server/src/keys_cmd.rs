//! `cliproxy-server keys create|list|revoke`: client keys created at run time, written
//! offline to the state store the gateway uses (as `bans list|lift` are). A gateway running on
//! the same store re-reads it every second, so a key created or revoked here is in force
//! there within a second.
//!
//! A write is acknowledged only once it is durable: the store is closed (which writes and
//! syncs what was submitted) before the key is printed.

use std::num::NonZeroU64;

use anyhow::anyhow;
use cliproxy_core::money::{MICROS_PER_USD, parse_usd};
use cliproxy_core::{Budget, Quota, QuotaPeriod, RateLimit, format_utc_plain};
use cliproxy_netguard::{StateChange, StateStore, StoredClientKey};
use cliproxy_vault::{ClientKeyRecord, ClientKeySpec};
use serde_json::{Value, json};

use crate::cli::{ConfigArg, KeysCommand, KeysCreateArgs};
use crate::config::Config;
use crate::config_load::load;
use crate::failure::Failure;
use crate::state_open::{Missing, open_state};

/// Exit code for a bad flag value.
const EXIT_USAGE: u8 = 2;
/// The largest budget accepted (as the management API): a million dollars per period.
const MAX_BUDGET_MICROS: u64 = 1_000_000 * MICROS_PER_USD;

/// Runs a `keys` subcommand.
pub(crate) fn run(command: &KeysCommand, config: &ConfigArg) -> Result<(), Failure> {
    let config = load(config)?;
    match command {
        KeysCommand::Create(args) => create(&config, args),
        KeysCommand::List { json } => list(&config, *json),
        KeysCommand::Revoke { name } => revoke(&config, name),
    }
}

fn usage(message: impl std::fmt::Display) -> Failure {
    Failure { error: anyhow!("{message}"), exit_code: EXIT_USAGE }
}

fn store_failure(error: &cliproxy_netguard::Error) -> Failure {
    anyhow!(cliproxy_gateway::netguard_error(error)).into()
}

/// The state store `serve` uses, created when missing (a key created before the gateway's
/// first start is there when it starts).
fn open(config: &Config) -> Result<Box<dyn StateStore>, Failure> {
    let store = open_state(config, Missing::Create)?;
    store.ok_or_else(|| anyhow!("the state store was not opened").into())
}

/// The stored records that read back; a damaged one is skipped with a notice naming its id.
fn records(store: &dyn StateStore) -> Result<Vec<ClientKeyRecord>, Failure> {
    let stored = store.load_client_keys().map_err(|e| store_failure(&e))?;
    for notice in store.take_notices() {
        eprintln!("notice: {notice}");
    }
    let mut records = Vec::new();
    for row in stored {
        match ClientKeyRecord::from_stored(&row.id, &row.digest, &row.record_json) {
            Ok(record) => records.push(record),
            Err(_) => eprintln!("notice: the stored client key {} cannot be read; skipped", row.id),
        }
    }
    records.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(records)
}

/// The names of the config file's keys.
fn config_names(config: &Config) -> Result<Vec<String>, Failure> {
    let keys = config
        .auth
        .client_keys()
        .map_err(|e| Failure::config(anyhow!(cliproxy_gateway::vault_error_message(&e))))?;
    Ok(keys.identities().map(|identity| identity.name.clone()).collect())
}

fn create(config: &Config, args: &KeysCreateArgs) -> Result<(), Failure> {
    let now = unix_now();
    let period = |text: &str| QuotaPeriod::parse(text).unwrap_or_default();
    let mut spec = ClientKeySpec::new(args.name.clone());
    spec.models = args.models.iter().map(|m| m.trim().to_owned()).collect();
    if args.rpm.is_some() || args.tpm.is_some() {
        spec.rate_limit = Some(RateLimit::new(args.rpm, args.tpm));
    }
    spec.quota = args.quota.map(|limit| Quota::new(limit, period(&args.quota_period)));
    if let Some(usd) = &args.budget_usd {
        let micros =
            parse_usd(usd, MAX_BUDGET_MICROS).map_err(|e| usage(format!("--budget-usd: {e}")))?;
        let micros = NonZeroU64::new(micros)
            .ok_or_else(|| usage("--budget-usd must be more than 0 (leave it out for none)"))?;
        spec.budget = Some(Budget::new(period(&args.budget_period), micros));
    }
    spec.expires_at = match &args.expires {
        None => None,
        Some(text) => Some(expiry(text, now)?),
    };
    spec.disabled = args.disabled;
    let created = ClientKeyRecord::create(spec, now)
        .map_err(|e| usage(cliproxy_gateway::vault_error_message(&e)))?;
    let record = &created.record;
    let store = open(config)?;
    if config_names(config)?.contains(&record.name)
        || records(&*store)?.iter().any(|r| r.name == record.name)
    {
        return Err(anyhow!(
            "a client key named `{}` exists already (names are unique across auth.api_keys and the stored keys); pick another name or revoke that key first",
            record.name
        )
        .into());
    }
    let record_json =
        record.to_stored_json().map_err(|e| anyhow!(cliproxy_gateway::vault_error_message(&e)))?;
    store.submit(StateChange::ClientKeyPut(StoredClientKey {
        id: record.id.clone(),
        digest: record.digest.clone(),
        record_json,
    }));
    // Closing writes the change and says whether it reached the disk: the key is printed
    // only once it is durable.
    store.flush().map_err(|e| store_failure(&e))?;
    println!("created client key `{}` (id {}); it is shown this once:", record.name, record.id);
    println!();
    println!("  {}", created.key.expose());
    println!();
    println!("Send it as `Authorization: Bearer <key>` (or `x-api-key: <key>`). A gateway running");
    println!("on this state store ({}) accepts it within a second.", store.describe());
    Ok(())
}

/// `--expires`: a duration from now (`30d`) or an RFC 3339 time in UTC.
fn expiry(text: &str, now: u64) -> Result<u64, Failure> {
    if let Some(at) = cliproxy_core::parse_utc(text) {
        if at <= now {
            return Err(usage(format!("--expires {text} is not in the future")));
        }
        return Ok(at);
    }
    let after = humantime::parse_duration(text).map_err(|_| {
        usage("--expires must be a duration such as 12h or 30d, or an RFC 3339 time in UTC such as 2030-01-31T00:00:00Z")
    })?;
    if after.as_secs() == 0 {
        return Err(usage("--expires must be at least a second from now"));
    }
    Ok(now.saturating_add(after.as_secs()))
}

fn list(config: &Config, as_json: bool) -> Result<(), Failure> {
    let keys = config
        .auth
        .client_keys()
        .map_err(|e| Failure::config(anyhow!(cliproxy_gateway::vault_error_message(&e))))?;
    let store = open(config)?;
    let records = records(&*store)?;
    store.flush().map_err(|e| store_failure(&e))?;
    if as_json {
        let mut views: Vec<Value> =
            keys.identities().map(|id| cliproxy_gateway::config_key_view(id)).collect();
        views.extend(records.iter().map(cliproxy_gateway::client_key_view));
        println!("{}", json!({ "client_keys": views }));
        return Ok(());
    }
    if keys.is_empty() && records.is_empty() {
        println!("no client keys: add one with `cliproxy-server keys create --name NAME`");
        return Ok(());
    }
    let now = unix_now();
    println!(
        "{:<24} {:<7} {:<14} {:<20} {:<24} {:<20} {:<20} STATE",
        "NAME", "SOURCE", "KEY", "MODELS", "LIMITS", "BUDGET", "EXPIRES (UTC)"
    );
    for identity in keys.identities() {
        println!(
            "{:<24} {:<7} {:<14} {:<20} {:<24} {:<20} {:<20} active",
            identity.name,
            "config",
            "-",
            models(&identity.models),
            limits(identity.rate_limit, identity.quota),
            "-",
            "never"
        );
    }
    for record in &records {
        let state = if record.disabled {
            "disabled"
        } else if record.expires_at.is_some_and(|at| now >= at) {
            "expired"
        } else {
            "active"
        };
        println!(
            "{:<24} {:<7} {:<14} {:<20} {:<24} {:<20} {:<20} {state}",
            record.name,
            "store",
            format!("cpk-{}\u{2026}", record.hint),
            models(&record.models),
            limits(record.rate_limit, record.quota),
            record.budget.map_or_else(
                || "-".to_owned(),
                |b| format!(
                    "${}/{}",
                    cliproxy_core::money::format_usd(b.micro_usd.get()),
                    b.period.as_str()
                )
            ),
            record.expires_at.map_or_else(|| "never".to_owned(), format_utc_plain),
        );
    }
    Ok(())
}

fn models(models: &[String]) -> String {
    if models.is_empty() { "all".to_owned() } else { models.join(",") }
}

fn limits(rate: Option<RateLimit>, quota: Option<Quota>) -> String {
    let mut parts = Vec::new();
    if let Some(rate) = rate {
        if let Some(rpm) = rate.requests_per_minute {
            parts.push(format!("{rpm} rpm"));
        }
        if let Some(tpm) = rate.tokens_per_minute {
            parts.push(format!("{tpm} tpm"));
        }
    }
    if let Some(quota) = quota {
        parts.push(format!("{}/{}", quota.limit, quota.reset.as_str()));
    }
    if parts.is_empty() { "-".to_owned() } else { parts.join(", ") }
}

fn revoke(config: &Config, name: &str) -> Result<(), Failure> {
    if config_names(config)?.iter().any(|n| n == name) {
        return Err(anyhow!(
            "`{name}` is a key of the config file (auth.api_keys); remove it there and reload the gateway"
        )
        .into());
    }
    let store = open(config)?;
    let Some(record) = records(&*store)?.into_iter().find(|r| r.name == name) else {
        return Err(anyhow!(
            "no stored client key named `{name}` (`cliproxy-server keys list` shows them)"
        )
        .into());
    };
    store.submit(StateChange::ClientKeyDelete(record.id.clone()));
    store.flush().map_err(|e| store_failure(&e))?;
    println!(
        "revoked client key `{name}` (id {}) in {}; a gateway running on this store refuses it within a second",
        record.id,
        store.describe()
    );
    Ok(())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
