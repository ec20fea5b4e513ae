//! The finishing stage: the last stage of every request, run once. It settles the request's
//! minute-limit reservations and quota (given back, charged the estimate, or charged the
//! usage read from the answer), emits its audit event (or only counts it) and writes its
//! access line.
//!
//! It is called explicitly on every path that has an answer: `Gateway::handle` calls
//! [`RequestContext::finish`] for every answer the gateway makes itself (errors included),
//! and a proxied answer's body calls it when it ends — complete, failed, or cut short by a
//! client that hung up mid-stream (`Tapped` reports [`Outcome::ClientGone`] from its own
//! drop, body.rs; a complete body reports from a task of its own, `CompleteReport`, whose
//! drop makes the report even when the runtime shuts down before that task runs). The one
//! path no code of ours runs on is a request whose future hyper drops before it has an
//! answer; the `Drop` below is the safety net for that path only.

use slog::{info, warn};

use crate::body::Outcome;
use crate::context::RequestContext;
use crate::pricing::MicroUsd;
use crate::usage::Usage;
use cliproxy_audit::{Event, What};
use cliproxy_netguard::Used;

/// The status logged for a request whose client went away before it was answered (nginx's
/// "client closed request"): no status was sent, and this one cannot be mistaken for one.
const CLIENT_CLOSED_REQUEST: u16 = 499;

impl RequestContext {
    /// The finishing stage: settles the request's reservations, writes its audit event and
    /// its access log line.
    pub(crate) fn finish(mut self, outcome: Outcome) {
        self.report(outcome);
    }

    fn report(&mut self, outcome: Outcome) {
        self.finished = true;
        let started = self.started;
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        // Gone before the provider's answer arrived (or before the mock's was built).
        let gone_unanswered = matches!(outcome, Outcome::ClientGone(_)) && !self.proxied;
        let (result, usage, failure) = match outcome {
            Outcome::Complete(usage) => ("complete", usage, None),
            Outcome::Failed(reason, usage) => ("failed", usage, Some(reason)),
            Outcome::ClientGone(usage) => ("client_gone", usage, None),
        };
        // What the request cost: its usage under the routed model's price. `None` when the
        // model is unpriced or the answer reported no usage: shown as unpriced, never as free.
        let cost = self.price.zip(usage).map(|(price, usage)| price.cost(usage).0);
        if let Some(admission) = self.admission.take() {
            if !self.sent {
                // Refused before it left the gateway, or its client went away first:
                // everything it held goes back.
                self.guard.cancel(admission);
            } else if gone_unanswered {
                // The provider has the request and may well be generating (and billing) the
                // answer nobody will read: with no usage to go by, it is charged the estimate.
                self.guard.settle(admission, Used::unknown());
            } else if !self.proxied || (self.status >= 400 && usage.is_none()) {
                // Sent, but answered with an error (the gateway's after upstream refusals or
                // a timeout, or the provider's own 4xx): the request counts, no tokens were
                // delivered.
                self.guard.settle(admission, Used::nothing());
            } else if self.free {
                self.guard.settle(admission, Used::nothing());
            } else {
                // The budget is charged the cost; without one (no usage reported), what it
                // held: the worst case.
                let tokens = usage.map(|u| u.counted());
                self.guard.settle(admission, Used::new(tokens, cost));
                if let (Some(client), Some(cost)) = (&self.client, cost) {
                    self.guard.audit.metrics().client_spend(client, cost);
                }
            }
        }
        // The request's row of the usage history (`usage_history.rs`); a request refused
        // before routing has no provider and is not history.
        if let Some(provider) = &self.provider {
            self.guard.usage.record(
                self.guard.clock.unix_seconds(),
                &crate::usage_history::Finished {
                    client: self.client.as_deref(),
                    provider,
                    model: self.model.as_deref().unwrap_or_default(),
                    error: self.status >= 400 || failure.is_some(),
                    answered: self.sent && self.status < 400,
                    usage,
                    price: self.price,
                },
            );
        }
        // The audit event (and its metrics) of a request that reached a provider; any
        // other answer is only counted.
        let elapsed = started.elapsed();
        match (&self.provider, self.sent) {
            (Some(provider), true) => {
                let mut event = Event::new(What::ProviderRequest {
                    model: self.model.clone().unwrap_or_default(),
                    status: self.status,
                    duration: elapsed,
                    upstream: self.sent_at.map(|at| at.elapsed()),
                    input_tokens: usage.map(|u| u.input_tokens),
                    output_tokens: usage.map(|u| u.output_tokens),
                    cost,
                    credential: self.credential.clone(),
                    outcome: result,
                    error: failure.clone(),
                    formats: self.formats(),
                })
                .provider(provider.as_str())
                .request_id(self.request_id.as_str());
                event.ip = self.client_ip;
                event.user_id = self.client.clone();
                self.guard.emit(event);
            }
            _ => self.guard.audit.metrics().request("none", self.status, elapsed),
        }
        let usage = usage.unwrap_or(Usage::default());
        let error = self.error.as_deref().or(failure.as_deref());
        // One macro call per level, the fields borrowed: nothing is cloned for the line.
        macro_rules! access_line {
            ($level:ident) => {
                $level!(self.log, "request";
                    "request_id" => &self.request_id,
                    "method" => self.method.as_str(),
                    "path" => &self.path,
                    "peer" => self.peer,
                    "status" => self.status,
                    "stream" => self.sse,
                    "result" => result,
                    "client" => self.client.as_deref(),
                    "model" => self.model.as_deref(),
                    "provider" => self.provider.as_deref(),
                    "credential" => self.credential.as_deref(),
                    "attempts" => self.attempts,
                    "client_ip" => self.client_ip.map(Shown),
                    "input_tokens" => usage.input_tokens,
                    "output_tokens" => usage.output_tokens,
                    "cost_usd" => cost.map(|c| Shown(MicroUsd(c))),
                    "priced" => cost.is_some(),
                    "duration_ms" => %format_args!("{elapsed_ms:.2}"),
                    "error" => error
                )
            };
        }
        if self.status >= 500 || result == "failed" {
            access_line!(warn);
        } else {
            access_line!(info);
        }
    }
}

impl RequestContext {
    /// The client's format and the provider's, for the audit event.
    fn formats(&self) -> Option<(&'static str, &'static str)> {
        self.formats.map(|pair| (pair.client.as_str(), pair.provider.as_str()))
    }
}

/// The safety net of the finishing stage, for the one path on which no code of ours runs: a
/// request whose future is dropped before it has an answer. hyper drops it when the client
/// hangs up, times out or resets its HTTP/2 stream while the gateway is still working on it
/// (waiting for the upstream, say), and when the server shuts down with the request in
/// flight. Without it the quota the request held stayed held until a restart. Every request
/// that gets an answer is finished explicitly (see the module's doc); this only covers the
/// drop that skips them, with the same finishing code and the same [`Outcome::ClientGone`]
/// that a body dropped mid-stream reports (`Tapped` in body.rs): no second reporting path.
/// It costs a flag test per request.
impl Drop for RequestContext {
    fn drop(&mut self) {
        if !self.finished {
            self.status = CLIENT_CLOSED_REQUEST;
            self.report(Outcome::ClientGone(None));
        }
    }
}

/// A `Display` value logged as text, formatted into the line rather than into a `String`.
struct Shown<T>(T);

impl<T: std::fmt::Display> slog::Value for Shown<T> {
    fn serialize(
        &self,
        _: &slog::Record<'_>,
        key: slog::Key,
        serializer: &mut dyn slog::Serializer,
    ) -> slog::Result {
        serializer.emit_arguments(key, &format_args!("{}", self.0))
    }
}
