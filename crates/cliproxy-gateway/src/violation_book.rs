//! The audit budget of violation and refused-key lines: at most one line per key, address
//! and second, and at most `LINES_PER_SECOND` a second per key across all addresses; the
//! rest are counted and written later as summary lines. The guard and the alert worker
//! (`alerts.rs`) both write their violations under it.

use std::net::IpAddr;

use cliproxy_audit::{Event, Plane, What};
use cliproxy_netguard::RejectionKind;

/// Addresses tracked for the one-line-per-second rule of violation lines; beyond it, a
/// refusal from an address not tracked goes to its key's flood summary (counted, not written
/// on its own).
const MAX_VIOLATION_KEYS: usize = 10_000;

/// Lines written one by one per key (a plane's refused keys, a rule's violations) and second,
/// across all addresses. Past it, refusals from addresses without a line this second are
/// counted in one flood summary per key, written by the housekeeping beat: a flood from N
/// rotating addresses then writes lines in proportion to its duration, not to N.
pub(crate) const LINES_PER_SECOND: u32 = 20;

/// Distinct addresses (IPv6: /64 networks) a flood summary counts; more are still counted
/// as refusals, and the summary says at least this many.
const MAX_FLOOD_ADDRESSES: usize = 10_000;

/// Addresses a flood summary names as examples.
pub(crate) const FLOOD_SAMPLES: usize = 5;

/// The rule of the violation written when an address is banned from the management API.
pub(crate) const MANAGEMENT_BAN_RULE: &str = "management_ban";

/// The book key of the `management_ban` violation (after the refusal kinds').
pub(crate) const MANAGEMENT_BAN_KEY: usize = RejectionKind::ALL.len();

/// The book key of the violation an alert rule writes when it fires for an address.
pub(crate) const ALERT_KEY: usize = RejectionKind::ALL.len() + 1;

/// The detail of a flood summary of violations.
pub(crate) const FLOOD_DETAIL: &str = "summary: refusals of this rule from addresses past the audit budget (20 lines a second), counted but not written one by one";

/// The key of the failure and ban book for a client: the address, or for IPv6 its /64 (the
/// network's first address), which one host commonly holds whole; as the per-IP bucket and
/// the alert rules count IPv6.
pub(crate) fn ban_key(ip: IpAddr) -> IpAddr {
    match cliproxy_netguard::canonical_ip(ip) {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// Per key (a refusal rule's index, a plane's) and address: the second of the last line
/// written and the refusals counted since without a line of their own; per key, the lines
/// written this second and the flood summary of the refusals past that budget.
#[derive(Debug, Default)]
pub(crate) struct ViolationBook {
    book: std::sync::Mutex<Book>,
    /// Whether the refusals left out are written in the address's next line (`repeats`)
    /// when its second has ended (violation lines), or always in a summary line of their own
    /// that lists their request ids (refused keys: every refused request is then found by
    /// its id within one housekeeping beat).
    by_id: bool,
}

#[derive(Debug, Default)]
struct Book {
    seen: std::collections::HashMap<(usize, IpAddr), Seen>,
    budgets: std::collections::HashMap<usize, Budget>,
}

/// One address under one key.
#[derive(Debug, Default)]
struct Seen {
    second: u64,
    left_out: u64,
    ids: RequestIds,
}

/// One key's budget of lines for the current second, and its flood summary.
#[derive(Debug, Default)]
struct Budget {
    second: u64,
    written: u32,
    flood: Flood,
}

/// Refusals past a key's budget since the last summary.
#[derive(Debug, Default)]
struct Flood {
    count: u64,
    /// Distinct addresses (IPv6: /64), at most `MAX_FLOOD_ADDRESSES`.
    networks: std::collections::HashSet<IpAddr>,
    samples: Vec<IpAddr>,
    ids: RequestIds,
}

/// The request ids of refusals not written one by one, at most `Summary::MAX_REQUEST_IDS`.
#[derive(Debug, Default)]
struct RequestIds {
    listed: Vec<String>,
    left_out: u64,
}

impl RequestIds {
    fn push(&mut self, id: Option<&str>) {
        let Some(id) = id else { return };
        if self.listed.len() < cliproxy_audit::Summary::MAX_REQUEST_IDS {
            self.listed.push(id.to_owned());
        } else {
            self.left_out += 1;
        }
    }
}

/// A summary line the housekeeping beat writes: for one address (`ip`), or for the flood
/// of every address past the budget (`ip` is `None`).
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) key: usize,
    pub(crate) ip: Option<IpAddr>,
    pub(crate) repeats: u64,
    /// For a flood: the distinct addresses, and the first few.
    addresses: Option<u64>,
    samples: Vec<String>,
    ids: RequestIds,
}

impl Pending {
    /// The summary line's facts, of `event_type` with `result`.
    pub(crate) fn summary(
        self,
        event_type: cliproxy_audit::EventType,
        result: &'static str,
    ) -> cliproxy_audit::Summary {
        let mut summary = cliproxy_audit::Summary::new(event_type, result, self.repeats);
        summary.addresses = self.addresses;
        summary.sample_ips = self.samples;
        summary.request_ids = self.ids.listed;
        summary.request_ids_left_out = self.ids.left_out;
        summary
    }
}

impl ViolationBook {
    /// The book of violation lines: refusals left out are carried by the address's next line.
    pub(crate) fn folding() -> Self {
        Self::default()
    }

    /// The book of refused keys: refusals left out are written at the next beat with their ids.
    pub(crate) fn by_id() -> Self {
        Self { by_id: true, ..Self::default() }
    }

    /// `Some(left_out)` when this refusal's line is to be written now (with the number of
    /// refusals left out before it that it carries); `None` when it is only counted: a line
    /// for the same key and address was written this second already, or the key's budget
    /// of lines for this second is spent (the refusal joins the key's flood summary).
    pub(crate) fn admit(
        &self,
        key: usize,
        ip: IpAddr,
        now: u64,
        request_id: Option<&str>,
    ) -> Option<u64> {
        let mut book = self.book.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Book { seen, budgets } = &mut *book;
        if let Some(entry) = seen.get_mut(&(key, ip))
            && entry.second == now
        {
            entry.left_out += 1;
            if self.by_id {
                entry.ids.push(request_id);
            }
            return None;
        }
        let budget = budgets.entry(key).or_default();
        if budget.second != now {
            budget.second = now;
            budget.written = 0;
        }
        if budget.written >= LINES_PER_SECOND {
            budget.flood.add(ip, request_id);
            return None;
        }
        // A full table is swept only for a line the budget allows (at most `LINES_PER_SECOND`
        // sweeps a second per key), so that a flood of new addresses costs no sweep each.
        if seen.len() >= MAX_VIOLATION_KEYS && !seen.contains_key(&(key, ip)) {
            seen.retain(|_, entry| entry.second >= now || entry.left_out > 0);
            if seen.len() >= MAX_VIOLATION_KEYS {
                budget.flood.add(ip, request_id);
                return None;
            }
        }
        budget.written += 1;
        let entry = seen.entry((key, ip)).or_default();
        entry.second = now;
        if self.by_id {
            // What was left out stays for its own summary line, which lists the ids.
            return Some(0);
        }
        entry.ids = RequestIds::default();
        Some(std::mem::take(&mut entry.left_out))
    }

    /// Puts a violation (a `security_violation` event with an address) under the budget of
    /// `key` at `now`: `true` when its line is to be written now, with the refusals left out
    /// before it in its `repeats`; `false` when it is only to be counted. An event of another
    /// kind, or without an address, is always written.
    pub(crate) fn budget(&self, key: usize, event: &mut Event, now: u64) -> bool {
        let (What::SecurityViolation { repeats, .. }, Some(ip)) = (&mut event.what, event.ip)
        else {
            return true;
        };
        match self.admit(key, ip, now, event.request_id.as_deref()) {
            Some(left_out) => {
                *repeats = left_out;
                true
            }
            None => false,
        }
    }

    /// The summary lines due at `now`: per address, the refusals left out (for a folding
    /// book only those of seconds that have ended, the others wait for the address's next
    /// line); per key, its flood. Forgets addresses quiet for a minute.
    pub(crate) fn take_pending(&self, now: u64) -> Vec<Pending> {
        let mut book = self.book.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Book { seen, budgets } = &mut *book;
        let mut pending = Vec::new();
        seen.retain(|(key, ip), entry| {
            if (self.by_id || entry.second < now) && entry.left_out > 0 {
                pending.push(Pending {
                    key: *key,
                    ip: Some(*ip),
                    repeats: std::mem::take(&mut entry.left_out),
                    addresses: None,
                    samples: Vec::new(),
                    ids: std::mem::take(&mut entry.ids),
                });
            }
            entry.left_out > 0 || now.saturating_sub(entry.second) < 60
        });
        for (key, budget) in budgets.iter_mut() {
            if budget.flood.count > 0 {
                let flood = std::mem::take(&mut budget.flood);
                pending.push(Pending {
                    key: *key,
                    ip: None,
                    repeats: flood.count,
                    addresses: Some(flood.networks.len() as u64),
                    samples: flood.samples.iter().map(|ip| network_name(*ip)).collect(),
                    ids: flood.ids,
                });
            }
        }
        pending
    }
}

impl Flood {
    fn add(&mut self, ip: IpAddr, request_id: Option<&str>) {
        self.count += 1;
        let network = ban_key(ip);
        if self.networks.len() < MAX_FLOOD_ADDRESSES
            && self.networks.insert(network)
            && self.samples.len() < FLOOD_SAMPLES
        {
            self.samples.push(network);
        }
        self.ids.push(request_id);
    }
}

/// An address as a flood summary names it: IPv4 as is, IPv6 as its /64.
fn network_name(network: IpAddr) -> String {
    match network {
        IpAddr::V6(v6) => format!("{v6}/64"),
        v4 => v4.to_string(),
    }
}

/// The key of a plane in the refused-key book.
pub(crate) fn plane_index(plane: Plane) -> usize {
    match plane {
        Plane::Client => 0,
        _ => 1,
    }
}

/// The plane of a key of the refused-key book.
pub(crate) fn plane_of(key: usize) -> Plane {
    if key == plane_index(Plane::Management) { Plane::Management } else { Plane::Client }
}

/// The address `127.x.y.z` of `n`: loopback addresses an attacker on the machine can
/// rotate through.
#[cfg(test)]
pub(crate) fn rotating(n: u32) -> IpAddr {
    IpAddr::V4(std::net::Ipv4Addr::from(0x7f00_0000 | (n + 2)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_from_rotating_addresses_write_a_bounded_number_of_lines() {
        let book = ViolationBook::by_id();
        let now = 1_800_000_000;
        let written = (0..5_000)
            .filter(|n| book.admit(0, rotating(*n), now, Some(&format!("req_{n}"))).is_some())
            .count();
        assert_eq!(written, LINES_PER_SECOND as usize, "lines written one by one");
        // The rest is one flood summary: every refusal counted, the addresses too.
        let pending = book.take_pending(now);
        assert_eq!(pending.len(), 1, "{pending:?}");
        let flood = &pending[0];
        assert_eq!((flood.ip, flood.repeats), (None, 4_980));
        assert_eq!(flood.addresses, Some(4_980));
        assert_eq!(
            flood.samples,
            ["127.0.0.22", "127.0.0.23", "127.0.0.24", "127.0.0.25", "127.0.0.26"]
        );
        assert_eq!(flood.ids.listed.len(), cliproxy_audit::Summary::MAX_REQUEST_IDS);
        assert_eq!(flood.ids.listed[0], "req_20");
        assert_eq!(flood.ids.left_out, 4_980 - 1_000);
        // The next second has its own budget, and nothing is pending twice.
        assert!(book.take_pending(now).is_empty());
        assert!(book.admit(0, rotating(9_999), now + 1, None).is_some());
    }

    #[test]
    fn a_full_address_table_sends_new_addresses_to_the_flood_summary_not_to_the_log() {
        let book = ViolationBook::folding();
        // Filled a second at a time, within the budget, by addresses that keep refusing
        // (so that none can be forgotten).
        let mut n = 0;
        for second in 0.. {
            for _ in 0..LINES_PER_SECOND {
                assert!(book.admit(1, rotating(n), second, None).is_some());
                assert!(book.admit(1, rotating(n), second, None).is_none());
                n += 1;
            }
            if n as usize >= MAX_VIOLATION_KEYS {
                break;
            }
        }
        // Before, an address beyond the table was written without the rule.
        let later = u64::from(n);
        assert_eq!(book.admit(1, rotating(n + 1), later, None), None);
        let pending = book.take_pending(later + 1);
        assert!(pending.iter().any(|p| p.ip.is_none() && p.repeats == 1), "no flood summary");
    }

    #[test]
    fn refused_keys_of_one_address_are_summarised_with_their_ids_at_every_beat() {
        let book = ViolationBook::by_id();
        let now = 1_800_000_000;
        let ip = rotating(0);
        assert_eq!(book.admit(0, ip, now, Some("req_0")), Some(0));
        for n in 1..10 {
            assert_eq!(book.admit(0, ip, now, Some(&format!("req_{n}"))), None);
        }
        // The beat writes them within the second already: a refused request's line must not
        // wait for the second to end (a crash would lose up to a second of them).
        let pending = book.take_pending(now);
        assert_eq!(pending.len(), 1);
        assert_eq!((pending[0].ip, pending[0].repeats), (Some(ip), 9));
        let ids: Vec<String> = (1..10).map(|n| format!("req_{n}")).collect();
        assert_eq!(pending[0].ids.listed, ids);
        // The next line of the address is its own: nothing is folded into it.
        assert_eq!(book.admit(0, ip, now, Some("req_10")), None);
        assert_eq!(book.admit(0, ip, now + 1, Some("req_11")), Some(0));
        let pending = book.take_pending(now + 1);
        assert_eq!(pending[0].ids.listed, ["req_10"]);
    }

    #[test]
    fn violation_lines_still_carry_the_refusals_left_out_before_them() {
        let book = ViolationBook::folding();
        let ip = rotating(0);
        assert_eq!(book.admit(3, ip, 10, None), Some(0));
        assert_eq!(book.admit(3, ip, 10, None), None);
        assert_eq!(book.admit(3, ip, 10, None), None);
        // Within the second nothing is due; the next second's line carries the two.
        assert!(book.take_pending(10).is_empty());
        assert_eq!(book.admit(3, ip, 11, None), Some(2));
    }
}
