//! Opening the state store the gateway uses, for the subcommands that read or write it
//! offline (`bans`, `keys`, `usage`).

use anyhow::anyhow;
use cliproxy_netguard::{SqliteStore, StateStore};

use crate::config::Config;
use crate::failure::Failure;

/// Whether a missing state file is created (a write: a key created before the gateway's
/// first start is there when it starts) or left alone (a read: nothing was ever stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missing {
    /// Create the file.
    Create,
    /// Answer `None`, so that a read does not create it.
    Skip,
}

/// The state store `serve` uses (`state.path`, or `.state.db` in `auth.dir`), opened as
/// `serve` opens it, its notices printed on stderr. A file that cannot be used is a runtime
/// failure; a setting that cannot work is a configuration failure.
pub(crate) fn open_state(
    config: &Config,
    missing: Missing,
) -> Result<Option<SqliteStore>, Failure> {
    let mut state = config.state.clone();
    let path = state.path.get_or_insert_with(|| config.auth.dir.join(".state.db")).clone();
    if missing == Missing::Skip && !path.exists() {
        return Ok(None);
    }
    let store = SqliteStore::open(&state).map_err(|e| {
        let text = cliproxy_gateway::netguard_error(&e);
        match e {
            cliproxy_netguard::Error::State { .. } => anyhow!(text).into(),
            _ => Failure::config(anyhow!(text)),
        }
    })?;
    for notice in store.take_notices() {
        eprintln!("notice: {notice}");
    }
    Ok(Some(store))
}
