//! Fired alerts, carried out through a queue by one worker thread: `block_ip` puts the
//! address on the runtime denylist, `notify_admin` writes a warning and calls the webhook,
//! and both leave a `security_violation` audit event naming the rule.
//!
//! Whoever emits an audit event (the guard on the request path, the worker itself) only
//! pushes the alerts it fired onto the queue. Before, the guard carried them out at once,
//! and since carrying one out emits events that can fire further alerts, `emit` re-entered
//! itself; now an alert's own events queue their alerts behind it, never recursing.
//!
//! The queue is a `Mutex<VecDeque>` with a `Condvar` rather than a bounded channel: the
//! worker pushes the alerts its own events fire onto the same queue (a channel's worker
//! holding a sender would keep it open forever), and [`AlertQueue::flush`] must see both
//! "nothing queued" and "nothing being carried out", which a channel does not tell. It is
//! bounded: a push onto a full queue drops the alert and counts it, and the worker logs the
//! count, as the log drain does with its lines. The alert is in the audit log and the
//! `cliproxy_alerts_fired_total` metric either way (they are written by `emit`, before the
//! queue).
//!
//! A thread rather than a tokio task, because the gateway is built before the runtime
//! starts (and the guard's unit tests have none). A webhook call still runs as a task: each
//! queued alert carries the runtime of the request that fired it.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use cliproxy_audit::{ALERT_RULE, AlertAction, Audit, Event, Fired, What};
use cliproxy_netguard::{Clock, DenyEntry, IpFilter, StateChange, StateStore};
use ipnetwork::IpNetwork;
use serde_json::json;
use slog::{Logger, warn};
use tokio::runtime::Handle;

use crate::violation_book::{ALERT_KEY, ViolationBook};
use crate::webhook::Webhooks;

/// Alerts queued and not yet carried out before new ones are dropped. Each rule fires at
/// most once per address and `duration` (its cooldown), so a full queue takes a flood of
/// thousands of addresses firing within the time the worker needs for this many.
pub(crate) const CAPACITY: usize = 4_096;

/// How long [`AlertQueue::flush`] waits for the worker at most: only a stuck or dead worker
/// takes that long, and a test hook must not hang forever on one.
const FLUSH_DEADLINE: Duration = Duration::from_secs(30);

/// What the worker needs to carry out an alert: the parts of the guard it acts on.
#[derive(Debug)]
pub(crate) struct Actions {
    pub(crate) ip: Arc<IpFilter>,
    pub(crate) state: Arc<dyn StateStore>,
    pub(crate) audit: Arc<Audit>,
    pub(crate) webhooks: Webhooks,
    /// The guard's book of violation lines: an alert's line goes under the budget of its
    /// own key there (addresses rotated through fire a `block_ip` rule each).
    pub(crate) violations: Arc<ViolationBook>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) log: Logger,
}

/// The queue of fired alerts and its worker thread. Dropping it lets the worker carry out
/// what is queued and waits for it to end.
#[derive(Debug)]
pub(crate) struct AlertQueue {
    shared: Arc<Shared>,
    worker: Option<std::thread::JoinHandle<()>>,
}

/// A handle that waits for the queue to drain (for an async caller, from a blocking task).
#[derive(Debug, Clone)]
pub(crate) struct Flusher(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when an alert is queued, when the worker finishes one, and at close.
    changed: Condvar,
    /// Alerts dropped on a full queue since the worker last said so.
    dropped: AtomicU64,
}

#[derive(Debug, Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Whether the worker is carrying out an alert it took off the queue.
    busy: bool,
    closed: bool,
}

/// A fired alert and the runtime its webhook call runs on (that of the request that fired
/// it, when there was one).
#[derive(Debug)]
struct Job {
    fired: Fired,
    runtime: Option<Handle>,
}

impl AlertQueue {
    /// Starts the worker on `actions`.
    pub(crate) fn start(actions: Actions) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let worker = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("cliproxy-alerts".to_owned())
                .spawn(move || run(&shared, &actions))?
        };
        Ok(Self { shared, worker: Some(worker) })
    }

    /// Queues the alerts an event fired, for the worker to carry out.
    pub(crate) fn push(&self, fired: Vec<Fired>) {
        self.shared.push(fired, None);
    }

    /// Waits until every alert queued so far has been carried out (tests, shutdown).
    pub(crate) fn flush(&self) {
        self.shared.flush();
    }

    /// A handle that does what [`AlertQueue::flush`] does, for a blocking task.
    pub(crate) fn flusher(&self) -> Flusher {
        Flusher(self.shared.clone())
    }
}

impl Flusher {
    /// See [`AlertQueue::flush`].
    pub(crate) fn flush(&self) {
        self.0.flush();
    }
}

impl Drop for AlertQueue {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.changed.notify_all();
        if let Some(worker) = self.worker.take() {
            // The worker ends once the queue is empty; it never waits on the guard.
            let _ = worker.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `fired`; a webhook call runs on the caller's runtime, or on `inherited` (the
    /// runtime of the alert whose event fired these, for the worker's own pushes).
    fn push(&self, fired: Vec<Fired>, inherited: Option<&Handle>) {
        if fired.is_empty() {
            return;
        }
        let runtime = Handle::try_current().ok().or_else(|| inherited.cloned());
        let mut queue = self.lock();
        for fired in fired {
            if queue.jobs.len() >= CAPACITY {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            queue.jobs.push_back(Job { fired, runtime: runtime.clone() });
        }
        drop(queue);
        self.changed.notify_all();
    }

    fn flush(&self) {
        let deadline = Instant::now() + FLUSH_DEADLINE;
        let mut queue = self.lock();
        while !queue.jobs.is_empty() || queue.busy {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            queue =
                self.changed.wait_timeout(queue, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }
}

/// The worker: takes one alert at a time off the queue and carries it out, until the queue
/// is closed and empty.
fn run(shared: &Shared, actions: &Actions) {
    loop {
        let job = {
            let mut queue = shared.lock();
            loop {
                if let Some(job) = queue.jobs.pop_front() {
                    queue.busy = true;
                    break job;
                }
                if queue.closed {
                    return;
                }
                queue = shared.changed.wait(queue).unwrap_or_else(PoisonError::into_inner);
            }
        };
        let dropped = shared.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            warn!(actions.log, "alerts dropped: the alert queue was full"; "dropped" => dropped,
                "capacity" => CAPACITY);
        }
        let runtime = job.runtime.clone();
        let follow_up = actions.carry_out(job);
        // The alerts fired by this alert's own events go behind it, never into it.
        shared.push(follow_up, runtime.as_ref());
        shared.lock().busy = false;
        shared.changed.notify_all();
    }
}

impl Actions {
    /// Carries out a fired alert; returns the alerts its own audit events fired.
    fn carry_out(&self, job: Job) -> Vec<Fired> {
        let Job { fired, runtime } = job;
        let mut follow_up = Vec::new();
        let window = humantime::format_duration(fired.window).to_string();
        // IPv6 clients are counted (and blocked) per /64, like the per-IP bucket keys them.
        let network = fired.ip.and_then(|ip| IpNetwork::new(ip, fired.prefix_len).ok());
        let who = match network {
            Some(IpNetwork::V6(net)) => net.to_string(),
            Some(net) => net.ip().to_string(),
            None => "all addresses".to_owned(),
        };
        let mut detail =
            format!("alert `{}`: {} events within {window} from {who}", fired.rule, fired.count);
        if fired.suppressed > 0 {
            detail.push_str(&format!(
                " ({} more since it last fired, while it was quiet)",
                fired.suppressed
            ));
        }
        match fired.action {
            AlertAction::BlockIp => {
                let Some(ip) = fired.ip else { return follow_up };
                // Loopback and the trusted proxies are never blocked by a rule: behind a
                // local reverse proxy every client has their address, and blocking it would
                // lock out everyone, the operator's management calls included, across
                // restarts. The refusals still count; the skipped block is said.
                let ip = cliproxy_netguard::canonical_ip(ip);
                // For IPv6 `ip` is the /64's first address: ::1 is in ::/64.
                let loopback = ip.is_loopback()
                    || network.is_some_and(|n| {
                        n.contains(std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST))
                    });
                if loopback || self.ip.is_trusted_proxy(ip) {
                    let why = if loopback { "loopback" } else { "a trusted proxy" };
                    warn!(self.log, "alert fired but the address is not blocked"; "event_type" => "security_violation",
                        "rule" => &fired.rule, "ip" => ip.to_string(), "reason" => why,
                        "fix" => "set server.trusted_proxies so that the client behind the proxy is blocked instead");
                    detail.push_str(&format!("; not blocked: {ip} is {why}"));
                    self.violation(Some(ip), detail, &mut follow_up);
                    return follow_up;
                }
                let now = self.clock.unix_seconds();
                let entry = DenyEntry {
                    network: network.unwrap_or_else(|| IpNetwork::from(ip)),
                    reason: format!("alert: {}", fired.rule),
                    created_at: now,
                    expires_at: Some(now.saturating_add(fired.block_for.as_secs().max(1))),
                };
                self.ip.deny(entry.clone());
                self.state.submit(StateChange::DenyAdd(entry));
                let block_for = humantime::format_duration(fired.block_for).to_string();
                detail.push_str(&format!("; blocked for {block_for}"));
                warn!(self.log, "alert fired: address blocked"; "event_type" => "security_violation",
                    "rule" => &fired.rule, "ip" => &who, "count" => fired.count,
                    "window" => &window, "block_for" => &block_for);
                let mut details = serde_json::Map::new();
                details.insert("network".to_owned(), json!(who));
                details.insert("rule".to_owned(), json!(fired.rule));
                details.insert("expires_in_s".to_owned(), json!(fired.block_for.as_secs()));
                follow_up.extend(
                    self.audit.emit(
                        Event::new(What::ConfigChange {
                            action: "alert_block_ip",
                            changed: vec!["security.ip_denylist".to_owned()],
                            details,
                            outcome: Ok(()),
                        })
                        .ip(ip),
                    ),
                );
            }
            AlertAction::NotifyAdmin => {
                warn!(self.log, "alert fired"; "event_type" => "security_violation",
                    "rule" => &fired.rule, "ip" => &who, "count" => fired.count, "window" => &window);
                if let (Some((url, timeout)), Some(runtime)) = (&fired.webhook, &runtime) {
                    self.webhooks.send(
                        runtime,
                        url,
                        *timeout,
                        json!({
                            "alert": fired.rule,
                            "action": "notify_admin",
                            "count": fired.count,
                            "window_s": fired.window.as_secs(),
                            "suppressed": fired.suppressed,
                            "ip": network.map(|_| who.clone()),
                            "at": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
                        }),
                    );
                }
            }
            _ => {}
        }
        self.violation(fired.ip, detail, &mut follow_up);
        follow_up
    }

    /// Writes the alert's `security_violation` line under the budget (when it names an
    /// address: addresses rotated through fire a `block_ip` rule each), counting it in any
    /// case; the alerts it fires go to `follow_up`.
    fn violation(&self, ip: Option<IpAddr>, detail: String, follow_up: &mut Vec<Fired>) {
        let mut event = Event::new(What::SecurityViolation {
            rule: ALERT_RULE,
            rate_limit: false,
            detail,
            repeats: 0,
        });
        event.ip = ip;
        if self.violations.budget(ALERT_KEY, &mut event, self.clock.unix_seconds()) {
            follow_up.extend(self.audit.emit(event));
        } else {
            follow_up.extend(self.audit.count(&event));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use cliproxy_netguard::FakeClock;

    use super::*;
    use crate::config::GatewayConfig as Config;
    use crate::test_log::Lines;

    /// The worker's parts on the default layers of a minimal configuration, with the log
    /// captured; the denylist is returned too, for the test to look at.
    fn actions(dir: &std::path::Path) -> (Actions, Arc<IpFilter>, Lines) {
        let yaml = format!(
            "auth:\n  dir: {dir:?}\n  api_keys: [{{name: alice, key: \"cpk-alerts-unit-test-key-9c2d\"}}]\n",
            dir = dir.display().to_string(),
        );
        let config = Config::from_yaml(&yaml).unwrap();
        let clock = FakeClock::at_unix(1_800_000_000);
        let lines = Lines::default();
        let log = Logger::root(slog::Fuse(lines.clone()), slog::o!());
        let layers = crate::test_layers::build(&config, Some(clock.clone()), &log).unwrap();
        let ip = Arc::new(IpFilter::new(
            &config.server.security,
            &config.server.trusted_proxies,
            clock.clone(),
        ));
        let audit = Arc::new(Audit::with_sink(
            layers.audit_sink.clone(),
            &config.logging.audit,
            layers.metrics.clone(),
            &config.alerts,
        ));
        let actions = Actions {
            ip: ip.clone(),
            state: layers.state.clone(),
            audit,
            webhooks: Webhooks::new(&config.alerts, &log).unwrap(),
            violations: Arc::new(ViolationBook::folding()),
            clock,
            log,
        };
        (actions, ip, lines)
    }

    /// A `block_ip` alert for the `n`th address of 198.18.0.0/15 (never loopback).
    fn block(n: u32) -> Fired {
        Fired {
            rule: "flood".to_owned(),
            action: AlertAction::BlockIp,
            ip: Some(IpAddr::V4(Ipv4Addr::from(0xc612_0000 + n))),
            prefix_len: 32,
            count: 3,
            suppressed: 0,
            window: Duration::from_secs(60),
            block_for: Duration::from_secs(600),
            webhook: None,
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_and_the_worker_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let (actions, ip, lines) = actions(dir.path());
        // No worker yet: the queue fills up, and the pushes past its capacity are dropped.
        let shared = Shared::default();
        shared.push((0..CAPACITY as u32 + 3).map(block).collect(), None);
        assert_eq!(shared.lock().jobs.len(), CAPACITY);
        assert_eq!(shared.dropped.load(Ordering::Relaxed), 3);
        // The worker, on this thread, carries out what was queued and ends on the close.
        shared.lock().closed = true;
        run(&shared, &actions);
        assert_eq!(ip.runtime_denylist().len(), CAPACITY);
        let lines = lines.taken();
        let said: Vec<&String> =
            lines.iter().filter(|l| l.starts_with("WARN alerts dropped")).collect();
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(said[0].contains(" dropped=3"), "{said:?}");
        assert_eq!(shared.dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn alerts_are_carried_out_by_the_worker_and_a_close_loses_none() {
        let dir = tempfile::tempdir().unwrap();
        let (actions, ip, lines) = actions(dir.path());
        let queue = AlertQueue::start(actions).unwrap();
        queue.push((0..10).map(block).collect());
        queue.flush();
        assert_eq!(ip.runtime_denylist().len(), 10);
        // Queued and not yet carried out when the queue is dropped: the worker still does.
        queue.push((10..20).map(block).collect());
        drop(queue);
        assert_eq!(ip.runtime_denylist().len(), 20);
        let blocked = lines
            .taken()
            .iter()
            .filter(|l| l.starts_with("WARN alert fired: address blocked"))
            .count();
        assert_eq!(blocked, 20);
    }
}
