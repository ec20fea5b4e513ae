//! The batch of state changes a store's writer has not written yet, coalesced the same way
//! for every store (`SqliteStore`, `RedisStore`): one entry per key, the last change winning,
//! except usage deltas, which add up (see [`StateChange`]).

use std::collections::HashMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::state::StateChange;
use crate::types::{
    Ban, DenyEntry, QuotaScope, QuotaUsage, StoredClientKey, UsageCounts, canonical_ip,
    canonical_network,
};
use cliproxy_core::QuotaPeriod;

/// Changes waiting for the writer, one per key, so memory is bounded by the number of keys
/// (configured providers and client keys, denylisted networks, banned addresses) rather than
/// by the request rate.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Pending {
    pub(crate) quota: HashMap<(QuotaScope, String, QuotaPeriod), QuotaUsage>,
    /// `None` removes the entry.
    pub(crate) deny: HashMap<IpNetwork, Option<DenyEntry>>,
    /// `None` removes the ban.
    pub(crate) bans: HashMap<IpAddr, Option<Ban>>,
    /// The latest purge time asked for.
    pub(crate) purge: Option<u64>,
    /// The latest audit head submitted.
    pub(crate) audit_head: Option<(u64, String)>,
    /// Client key records by id; `None` deletes the record.
    pub(crate) client_keys: HashMap<String, Option<StoredClientKey>>,
    /// Usage history deltas by (hour, client, provider, model), summed.
    pub(crate) usage: HashMap<(u64, String, String, String), UsageCounts>,
    /// The latest usage retention cut asked for.
    pub(crate) usage_purge: Option<u64>,
    /// Credential cool-downs by (provider, credential, model): the latest end. Only a store
    /// shared by several processes keeps them (the embedded one never submits them here).
    pub(crate) cooldowns: HashMap<(String, String, Option<String>), u64>,
}

impl Pending {
    pub(crate) fn add(&mut self, change: StateChange) {
        match change {
            StateChange::Quota(usage) => {
                self.quota.insert((usage.scope, usage.name.clone(), usage.period), usage);
            }
            StateChange::DenyAdd(mut entry) => {
                // Keys are canonical so that a removal matches the addition it undoes even
                // when one was written as an IPv4-mapped IPv6 range.
                entry.network = canonical_network(entry.network);
                self.deny.insert(entry.network, Some(entry));
            }
            StateChange::DenyRemove(network) => {
                self.deny.insert(canonical_network(network), None);
            }
            StateChange::Ban(mut ban) => {
                ban.ip = canonical_ip(ban.ip);
                self.bans.insert(ban.ip, Some(ban));
            }
            StateChange::Unban(ip) => {
                self.bans.insert(canonical_ip(ip), None);
            }
            StateChange::AuditHead { seq, hash } => self.audit_head = Some((seq, hash)),
            StateChange::Cooldown(cooldown) => {
                let until = self
                    .cooldowns
                    .entry((cooldown.provider, cooldown.credential, cooldown.model))
                    .or_default();
                *until = (*until).max(cooldown.until_ms);
            }
            StateChange::ClientKeyPut(key) => {
                self.client_keys.insert(key.id.clone(), Some(key));
            }
            StateChange::ClientKeyDelete(id) => {
                self.client_keys.insert(id, None);
            }
            StateChange::UsageAdd(row) => {
                // Additive: deltas to one row are summed, never replaced.
                self.usage
                    .entry((row.hour, row.client, row.provider, row.model))
                    .or_default()
                    .add(&row.counts);
            }
            StateChange::UsagePurge { before } => {
                self.usage_purge = self.usage_purge.max(Some(before));
            }
            StateChange::PurgeExpired { now } => {
                self.purge = Some(self.purge.map_or(now, |before| before.max(now)));
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn len(&self) -> usize {
        self.quota.len()
            + self.deny.len()
            + self.bans.len()
            + usize::from(self.purge.is_some())
            + usize::from(self.audit_head.is_some())
            + self.client_keys.len()
            + self.usage.len()
            + usize::from(self.usage_purge.is_some())
            + self.cooldowns.len()
    }

    /// Puts back a batch whose write failed. Changes submitted since are newer and win.
    pub(crate) fn restore(&mut self, older: Self) {
        for (key, usage) in older.quota {
            self.quota.entry(key).or_insert(usage);
        }
        for (key, entry) in older.deny {
            self.deny.entry(key).or_insert(entry);
        }
        for (key, ban) in older.bans {
            self.bans.entry(key).or_insert(ban);
        }
        for (id, key) in older.client_keys {
            self.client_keys.entry(id).or_insert(key);
        }
        // Usage deltas are additive: the failed batch's are summed into the newer ones, never
        // dropped for them.
        for (key, counts) in older.usage {
            self.usage.entry(key).or_default().add(&counts);
        }
        self.usage_purge = self.usage_purge.max(older.usage_purge);
        self.purge = self.purge.max(older.purge);
        if self.audit_head.is_none() {
            self.audit_head = older.audit_head;
        }
        for (key, until) in older.cooldowns {
            let newer = self.cooldowns.entry(key).or_default();
            *newer = (*newer).max(until);
        }
    }
}
