//! The state store: quota usage, the runtime denylist, management bans, the audit log's head
//! anchor, the client keys created at run time and the usage history, kept across restarts.
//!
//! The request path never waits for the disk. It hands each change to
//! [`StateStore::submit`], which only puts it in an in-memory batch; the store writes the
//! batch on its own schedule, and [`StateStore::flush`] is for the callers that must know a
//! change is durable. The embedded implementation is `SqliteStore`
//! (the `sqlite` feature); the trait exists so that a shared store (Redis, Postgres) can
//! replace it for deployments with several gateway instances, and so that an embedder
//! without the feature can bring its own.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use ipnetwork::IpNetwork;

use crate::error::{Error, Result};
use crate::types::{Ban, DenyEntry, QuotaUsage, StoredClientKey, UsageRow};

/// Where quota usage, the runtime denylist, management bans, the audit head anchor and the
/// client keys created at run time survive a restart.
///
/// Writes go through [`StateStore::submit`], which never blocks on I/O and never fails, so the
/// request path can call it freely; [`StateStore::flush`] is for the few callers that must know
/// a change is on disk (shutdown, management writes before they answer).
pub trait StateStore: Send + Sync + fmt::Debug {
    /// Every stored quota usage record (start-up read). Rows that cannot be parsed are
    /// skipped and reported through [`StateStore::take_notices`]. Changes submitted earlier
    /// are flushed first, so they are included.
    fn load_quota_usage(&self) -> Result<Vec<QuotaUsage>>;
    /// Every stored runtime denylist entry, expired ones included (the caller filters with
    /// [`DenyEntry::is_active`]); unparsable rows are skipped and reported as notices.
    fn load_denylist(&self) -> Result<Vec<DenyEntry>>;
    /// Every stored ban, ended ones included; unparsable rows are skipped and reported as
    /// notices.
    fn load_bans(&self) -> Result<Vec<Ban>>;
    /// The audit log's anchored head (`seq`, `hash`): the last line the audit sink had
    /// durably written when it last reported. `None` when none was stored.
    fn load_audit_head(&self) -> Result<Option<(u64, String)>>;
    /// Every stored client key record, in no particular order. Rows that cannot be read (a
    /// digest that is not 64 lowercase hex digits, a record that is not JSON) are skipped and
    /// reported as notices; what the record says is for its owner (the vault) to check.
    /// Changes submitted earlier are flushed first, so they are included.
    fn load_client_keys(&self) -> Result<Vec<StoredClientKey>>;
    /// The usage history rows whose hour starts at or after `from` and before `to` (Unix
    /// seconds), ordered by hour, client, provider and model. Changes submitted earlier are
    /// flushed first, so they are included. A store that keeps no history says so with an
    /// error rather than answering an empty history.
    fn load_usage(&self, from: u64, to: u64) -> Result<Vec<UsageRow>> {
        let _ = (from, to);
        Err(Error::State {
            path: self.path().map(Path::to_path_buf).unwrap_or_default(),
            message: format!("{} keeps no usage history", self.describe()),
        })
    }
    /// Queues a change for the writer. Never waits for the disk and never fails: when the
    /// writer has stopped, the change is counted as lost and [`StateStore::check`] reports it.
    fn submit(&self, change: StateChange);
    /// Asks the writer to write what is pending now rather than when its interval ends, and
    /// returns at once (no wait, no error). For changes that were already held one interval
    /// before they were submitted (the usage history's beat), so that a crash loses at most
    /// one interval of them, not two. The default does nothing.
    fn write_soon(&self) {}
    /// Blocks until every change submitted before the call is durable (it survives the
    /// process being killed), or returns the error that prevented it.
    fn flush(&self) -> Result<()>;
    /// Whether the store is usable right now, for `/readyz`: the writer is alive, its last
    /// write succeeded and the database file is still the one opened. The error names the file.
    fn check(&self) -> Result<()>;
    /// The database file, for stores that have one.
    fn path(&self) -> Option<&Path>;
    /// A short description for log lines and messages, such as `SQLite database ./data/state.db`.
    fn describe(&self) -> String;
    /// Things the store fixed or noticed on its own (a mode tightened, a row skipped) since
    /// the last call, for the caller to log.
    fn take_notices(&self) -> Vec<String> {
        Vec::new()
    }
    /// Asks a store shared by several processes to call `on_change` (from a thread of its
    /// own) whenever another process changed shared state, so that the caller re-reads it
    /// at once instead of on its next beat. A store that only this process writes never
    /// calls it (the default).
    fn watch(&self, on_change: std::sync::Arc<dyn Fn(SharedChange) + Send + Sync>) {
        let _ = on_change;
    }
    /// The shared server's health, for a store that has one (`GET /status`, the
    /// `cliproxy_state_backend_up` metric, `check`); `None` for an embedded store.
    #[cfg(feature = "redis")]
    fn shared_health(&self) -> Option<crate::LinkHealth> {
        None
    }
}

/// What another process changed in a shared store ([`StateStore::watch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SharedChange {
    /// A client key was created, changed or revoked.
    ClientKeys,
    /// The runtime denylist changed.
    Denylist,
    /// A management ban was added or lifted.
    Bans,
    /// Anything may have changed (the store reconnected after missing messages, or found the
    /// server restarted empty): re-read everything.
    Everything,
    /// The shared server restarted without its data (no persistence): the caller writes back
    /// what it holds (keys, denylist, bans), then re-reads everything.
    Emptied,
}

/// One change to the stored state. Changes to the same key coalesce: the last one submitted
/// before a write is the one written, except [`StateChange::UsageAdd`], whose deltas add up.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StateChange {
    /// The absolute usage of one provider or client key in one period (an upsert keyed by
    /// scope, name and period kind).
    Quota(QuotaUsage),
    /// Adds or replaces the runtime denylist entry for its network.
    DenyAdd(DenyEntry),
    /// Removes the runtime denylist entry for this network, if there is one.
    DenyRemove(IpNetwork),
    /// Adds or replaces the ban of its address.
    Ban(Ban),
    /// Removes the ban of this address, if there is one.
    Unban(IpAddr),
    /// The audit log's head, stored after the audit sink synced the lines up to it. The last
    /// one submitted wins.
    AuditHead {
        /// The line's seq.
        seq: u64,
        /// The line's hash.
        hash: String,
    },
    /// Adds or replaces the client key record with its id. Management writes flush after it,
    /// so that a key is acknowledged only once it is durable.
    ClientKeyPut(StoredClientKey),
    /// Removes the client key record with this id, if there is one (revocation).
    ClientKeyDelete(String),
    /// Adds a delta to one row of the usage history (creating it at zero). Additive
    /// everywhere: deltas to one row are summed in the pending batch, a batch whose write
    /// failed is summed into the newer changes, and the stored row is incremented, so several
    /// processes can write the same rows.
    UsageAdd(UsageRow),
    /// Removes the usage history rows whose hour started before `before` (Unix seconds): the
    /// `usage.retention` purge. The latest one submitted wins.
    UsagePurge {
        /// Unix seconds; rows of earlier hours are removed.
        before: u64,
    },
    /// Removes denylist entries and bans that have ended at `now` (Unix seconds).
    PurgeExpired {
        /// Unix seconds; entries whose expiry is at or before it are removed.
        now: u64,
    },
}
