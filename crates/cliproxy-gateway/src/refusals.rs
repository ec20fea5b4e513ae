//! The one place where a refusal is counted and reported: every refusal bumps its counter,
//! a violation goes to the audit layer (its line under the budget of `violation_book.rs`),
//! refused keys are audited under their own budget, and the alerts these events fire are
//! queued for the alert worker (`alerts.rs`), never carried out here.

use std::net::IpAddr;

use cliproxy_audit::{ALERT_RULE, Event, EventType, Plane, What};
use cliproxy_netguard::RejectionKind;
use slog::{info, warn};

use crate::guard::Guard;
use crate::violation_book::{
    ALERT_KEY, FLOOD_DETAIL, MANAGEMENT_BAN_KEY, MANAGEMENT_BAN_RULE, plane_index, plane_of,
};

/// The detail of a line that only carries the refusals left out of the second before (it
/// is not a refusal itself).
pub(crate) const SUMMARY_DETAIL: &str =
    "summary: refusals of this rule and address counted but not written one by one";

/// What is known of the request a refusal is about.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Context<'a> {
    pub(crate) request_id: Option<&'a str>,
    pub(crate) user: Option<&'a str>,
    pub(crate) provider: Option<&'a str>,
}

impl Guard {
    /// Counts a refusal and reports it: security violations as warnings with
    /// `event_type: security_violation` (the audit layer will file them), the rest at info.
    /// At most one line per kind per second is written, with the number left out since the
    /// last one: a flood of refusals must stay cheap, and the counters keep every one.
    pub(crate) fn reject(&self, kind: RejectionKind, ip: IpAddr, detail: &str) {
        self.reject_in(kind, ip, detail, &Context::default());
    }

    /// [`Guard::reject`] with what is known of the request (its id, the client key's name,
    /// the provider), for the audit line.
    pub(crate) fn reject_in(
        &self,
        kind: RejectionKind,
        ip: IpAddr,
        detail: &str,
        context: &Context<'_>,
    ) {
        use std::sync::atomic::Ordering;
        self.counters.record(kind);
        // Every violation is counted (metrics) and seen by the alert rules; its audit line is
        // written at most once per rule and address per second, the next line carrying how
        // many were left out (the housekeeping beat writes what is still pending), so that a
        // flood of refusals cannot fill the disk under the audit log.
        if kind.is_violation() {
            // Only the per-IP bucket says something about the address itself: a global,
            // per-minute or quota refusal can hit any client when others used the budget,
            // and must not feed `rate_limit_violations{ip}` and the `block_ip` rules.
            let rate_limit = kind == RejectionKind::PerIpRateLimit;
            let now = self.clock.unix_seconds();
            let write = self.violations.admit(kind.index(), ip, now, context.request_id);
            let mut event = Event::new(What::SecurityViolation {
                rule: kind.as_str(),
                rate_limit,
                detail: detail.to_owned(),
                repeats: write.unwrap_or(0),
            })
            .ip(ip);
            event.request_id = context.request_id.map(str::to_owned);
            event.user_id = context.user.map(str::to_owned);
            event.provider = context.provider.map(str::to_owned);
            self.alerts.push(self.audit.count(&event));
            if write.is_some() {
                self.audit.write(&event);
            }
        }
        let now = self.clock.unix_seconds();
        let last = &self.last_logged[kind.index()];
        let previous = last.load(Ordering::Relaxed);
        if previous == now
            || last.compare_exchange(previous, now, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            self.suppressed[kind.index()].fetch_add(1, Ordering::Relaxed);
            return;
        }
        let suppressed = self.suppressed[kind.index()].swap(0, Ordering::Relaxed);
        if kind.is_violation() {
            warn!(self.log, "request refused"; "event_type" => "security_violation",
                "rejection" => kind.as_str(), "ip" => ip.to_string(), "detail" => detail,
                "suppressed" => suppressed);
        } else {
            info!(self.log, "request refused"; "rejection" => kind.as_str(),
                "ip" => ip.to_string(), "detail" => detail, "suppressed" => suppressed);
        }
    }

    /// Records a refused key (an `auth_failure` event with its address), on either plane:
    /// counted in the metrics and seen by the alert rules every time, its line written at
    /// most once per plane, address and second, and at most `LINES_PER_SECOND` a second per
    /// plane across all addresses. The rest are written by the housekeeping beat (every
    /// `state.flush_interval`, and at shutdown) as `repeated` summary lines, one per address
    /// and one for the flood past the budget, that list the refused requests' ids: a flood
    /// of wrong keys, on one connection or from rotating addresses, must not fill the disk
    /// under the audit log, and every refused request is still found by its id within one
    /// beat (what a crash may lose, as for quota usage).
    pub(crate) fn auth_failure(&self, mut event: Event) {
        let (What::AuthFailure { plane, .. }, Some(ip)) = (&event.what, event.ip) else {
            self.emit(event);
            return;
        };
        let (key, now) = (plane_index(*plane), self.clock.unix_seconds());
        match self.auth_failures.admit(key, ip, now, event.request_id.as_deref()) {
            Some(_) => {
                // Refusals left out are written by the beat with their ids, never folded here.
                if let What::AuthFailure { repeats, .. } = &mut event.what {
                    *repeats = 0;
                }
                self.emit(event);
            }
            None => self.count(&event),
        }
    }

    /// A violation that is not a refusal of the network guard (`management_ban`): counted
    /// and seen by the alert rules, its line written under the same budget as the guard's,
    /// so that addresses rotated through one by one cannot write a line each.
    pub(crate) fn violation(&self, event: Event) {
        self.violation_under(MANAGEMENT_BAN_KEY, event);
    }

    /// [`Guard::violation`] under the book key `key` (`management_ban`, `alert`).
    fn violation_under(&self, key: usize, mut event: Event) {
        if self.violations.budget(key, &mut event, self.clock.unix_seconds()) {
            self.emit(event);
        } else {
            self.count(&event);
        }
    }

    /// Writes the summary lines of refused keys due at `now`: per plane and address the
    /// refusals counted but not written (reason `repeated`, with their request ids), and per
    /// plane the flood of the refusals past the budget (`ip` null, with how many addresses).
    pub(crate) fn write_auth_summaries(&self, now: u64) {
        for pending in self.auth_failures.take_pending(now) {
            let plane = plane_of(pending.key);
            let ip = pending.ip;
            let mut summary = pending.summary(EventType::AuthFailure, "repeated");
            summary.plane = Some(plane);
            let mut event = Event::new(What::Summary(Box::new(summary)));
            event.ip = ip;
            if plane == Plane::Management {
                event.provider = Some("management".to_owned());
            }
            // Counted already, one by one: only the line.
            self.audit.write(&event);
        }
    }

    /// Writes the summary lines of violations due at `now`: per rule and address the
    /// refusals left out of seconds that have ended, and per rule the flood past the budget.
    pub(crate) fn write_violation_summaries(&self, now: u64) {
        for pending in self.violations.take_pending(now) {
            let (rule, rate_limit) = match RejectionKind::ALL.get(pending.key) {
                Some(kind) => (kind.as_str(), *kind == RejectionKind::PerIpRateLimit),
                None if pending.key == ALERT_KEY => (ALERT_RULE, false),
                None => (MANAGEMENT_BAN_RULE, false),
            };
            let event = match pending.ip {
                Some(ip) => Event::new(What::SecurityViolation {
                    rule,
                    rate_limit,
                    detail: SUMMARY_DETAIL.to_owned(),
                    repeats: pending.repeats,
                })
                .ip(ip),
                None => {
                    let mut summary = pending.summary(EventType::SecurityViolation, rule);
                    summary.detail = Some(FLOOD_DETAIL.to_owned());
                    Event::new(What::Summary(Box::new(summary)))
                }
            };
            // Counted already, one by one: only the line.
            self.audit.write(&event);
        }
    }

    /// Records an audit event and queues the alerts it fires for the alert worker.
    pub(crate) fn emit(&self, event: Event) {
        self.alerts.push(self.audit.emit(event));
    }

    /// Counts an audit event (metrics, alert rules) without writing its line, and queues the
    /// alerts it fires: for an event whose request was refused by a limiter that writes its
    /// own, summarised, line.
    pub(crate) fn count(&self, event: &Event) {
        self.alerts.push(self.audit.count(event));
    }

    /// Waits until the alert worker has carried out every alert fired so far: a `block_ip`
    /// is on the denylist, its lines are handed to the audit sink (tests, before they look).
    pub(crate) fn flush_alerts(&self) {
        self.alerts.flush();
    }
}

#[cfg(test)]
mod tests {
    use cliproxy_netguard::FakeClock;
    use slog::Logger;

    use super::*;
    use crate::config::GatewayConfig as Config;
    use crate::violation_book::{FLOOD_SAMPLES, LINES_PER_SECOND, rotating};

    #[test]
    fn the_guard_writes_a_bounded_audit_log_for_a_rotating_flood_and_accounts_for_every_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("audit.log");
        let yaml = format!(
            "auth:\n  dir: {dir:?}\n  api_keys: [{{name: alice, key: \"cpk-guard-unit-test-key-5e1f\"}}]\n\
             logging: {{audit: {{enabled: true, file: {audit:?}}}}}\n",
            dir = dir.path().join("auths").display().to_string(),
            audit = audit.display().to_string(),
        );
        let config = Config::from_yaml(&yaml).unwrap();
        let clock = FakeClock::at_unix(1_800_000_000);
        let log = Logger::root(slog::Discard, slog::o!());
        let guard = Guard::build(&config, Some(clock.clone()), &log).unwrap();
        const REFUSALS: u32 = 5_000;
        for n in 0..REFUSALS {
            let plane = if n % 2 == 0 { Plane::Client } else { Plane::Management };
            // Ten refusals a (fake) second, each from a new address.
            if n % 10 == 0 {
                clock.advance(std::time::Duration::from_secs(1));
            }
            let event = Event::new(What::AuthFailure { plane, reason: "invalid_key", repeats: 0 })
                .ip(rotating(n))
                .request_id(format!("req_{n}"));
            guard.auth_failure(event);
        }
        guard.tick();
        guard.audit.flush();
        let text = std::fs::read_to_string(&audit).unwrap();
        let lines: Vec<serde_json::Value> =
            text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let failures: Vec<&serde_json::Value> =
            lines.iter().filter(|l| l["event_type"] == "auth_failure").collect();
        let accounted: u64 = failures
            .iter()
            .map(|l| {
                u64::from(l["result"] != "repeated") + l["details"]["repeats"].as_u64().unwrap_or(0)
            })
            .sum();
        assert_eq!(accounted, u64::from(REFUSALS));
        // 500 fake seconds of ten addresses each stay within the budget: one line each.
        assert_eq!(failures.len(), REFUSALS as usize);
        // Now the same in one (new) second: the budget, then one flood summary per plane.
        clock.advance(std::time::Duration::from_secs(1));
        let before = failures.len();
        for n in 0..REFUSALS {
            let plane = if n % 2 == 0 { Plane::Client } else { Plane::Management };
            let event = Event::new(What::AuthFailure { plane, reason: "invalid_key", repeats: 0 })
                .ip(rotating(REFUSALS + n))
                .request_id(format!("req_x{n}"));
            guard.auth_failure(event);
        }
        guard.tick();
        guard.audit.flush();
        let text = std::fs::read_to_string(&audit).unwrap();
        let lines: Vec<serde_json::Value> =
            text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let new: Vec<&serde_json::Value> =
            lines.iter().filter(|l| l["event_type"] == "auth_failure").skip(before).collect();
        assert_eq!(new.len(), 2 * LINES_PER_SECOND as usize + 2, "{new:#?}");
        let floods: Vec<&&serde_json::Value> = new.iter().filter(|l| l["ip"].is_null()).collect();
        assert_eq!(floods.len(), 2);
        for flood in floods {
            assert_eq!(flood["result"], "repeated");
            assert_eq!(flood["details"]["repeats"], 2_500 - u64::from(LINES_PER_SECOND));
            assert_eq!(flood["details"]["addresses"], 2_500 - u64::from(LINES_PER_SECOND));
            assert_eq!(flood["details"]["sample_ips"].as_array().unwrap().len(), FLOOD_SAMPLES);
            assert_eq!(flood["details"]["request_ids"].as_array().unwrap().len(), 1_000);
            assert_eq!(flood["details"]["request_ids_left_out"], 2_480 - 1_000);
        }
    }

    #[test]
    fn alerts_fired_by_rotating_addresses_write_a_bounded_number_of_lines() {
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("audit.log");
        let yaml = format!(
            "auth:\n  dir: {dir:?}\n  api_keys: [{{name: alice, key: \"cpk-guard-unit-test-key-5e1f\"}}]\n\
             logging: {{audit: {{enabled: true, file: {audit:?}, events: [security_violation]}}}}\n\
             alerts: [{{name: guessing, condition: \"auth_failures > 1\", duration: 1m, action: block_ip}}]\n",
            dir = dir.path().join("auths").display().to_string(),
            audit = audit.display().to_string(),
        );
        let config = Config::from_yaml(&yaml).unwrap();
        let clock = FakeClock::at_unix(1_800_000_000);
        let log = Logger::root(slog::Discard, slog::o!());
        let guard = Guard::build(&config, Some(clock), &log).unwrap();
        // Two wrong keys from each of 1,000 loopback addresses in one second: the rule fires
        // for each (loopback is not blocked, but the alert is audited).
        for n in 0..1_000 {
            for _ in 0..2 {
                let event = Event::new(What::AuthFailure {
                    plane: Plane::Client,
                    reason: "invalid_key",
                    repeats: 0,
                })
                .ip(rotating(n));
                guard.auth_failure(event);
            }
        }
        // The worker carries the alerts out, writing their lines under the budget; the beat
        // then writes the flood summary of the rest.
        guard.flush_alerts();
        guard.tick();
        guard.audit.flush();
        let text = std::fs::read_to_string(&audit).unwrap();
        let alerts: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|l| l["result"] == ALERT_RULE)
            .collect();
        // The budget, then one flood summary that counts the rest.
        assert_eq!(alerts.len(), LINES_PER_SECOND as usize + 1, "{} alert lines", alerts.len());
        let fired: u64 = alerts
            .iter()
            .map(|l| match l["details"]["detail"].as_str() {
                Some(d) if d.starts_with("summary:") => l["details"]["repeats"].as_u64().unwrap(),
                _ => 1,
            })
            .sum();
        assert_eq!(fired, 1_000);
    }
}
