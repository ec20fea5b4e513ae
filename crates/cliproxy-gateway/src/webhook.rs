//! The webhooks of `notify_admin` alerts: one JSON POST per fired alert, in its own task,
//! with the rule's `webhook_timeout`. A webhook that is down never holds up a request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Uri, header};
use http_body_util::Full;
use slog::{Logger, warn};
use tokio::sync::Semaphore;

use crate::config::ConfigError;
use crate::error::Result;
use crate::upstream::{self, HttpClient};

/// Webhook calls in flight at once; an alert that finds them all busy is not sent (it is
/// in the audit log and the metrics either way) and the drop is counted in the log.
const MAX_IN_FLIGHT: usize = 4;

/// The client the alerts' webhooks are called with.
#[derive(Debug)]
pub(crate) struct Webhooks {
    client: HttpClient,
    in_flight: Arc<Semaphore>,
    dropped: AtomicU64,
    log: Logger,
}

impl Webhooks {
    /// Checks every rule's `webhook` URL and builds a client when there is one.
    pub(crate) fn new(rules: &[cliproxy_audit::AlertRule], log: &Logger) -> Result<Self> {
        check(rules)?;
        // Built even without a webhook today: a reload may add one.
        let client = upstream::build_client("alerts.webhook", Duration::from_secs(5), None)?;
        Ok(Self {
            client,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            dropped: AtomicU64::new(0),
            log: log.clone(),
        })
    }

    /// POSTs `body` to `url` in its own task on `runtime` (the alert worker is a thread of
    /// its own, see `alerts.rs`); failures are logged, never retried (the alert is in the
    /// audit log and the metrics either way).
    pub(crate) fn send(
        &self,
        runtime: &tokio::runtime::Handle,
        url: &str,
        timeout: Duration,
        body: serde_json::Value,
    ) {
        let Ok(uri) = parse(url) else { return };
        let client = self.client.clone();
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            warn!(self.log, "alert webhook not called: earlier calls are still in flight";
                "in_flight" => MAX_IN_FLIGHT, "dropped_total" => dropped);
            return;
        };
        let log = self.log.clone();
        let target = uri.host().unwrap_or_default().to_owned();
        runtime.spawn(async move {
            let mut request = Request::new(Full::new(Bytes::from(body.to_string())));
            *request.method_mut() = Method::POST;
            *request.uri_mut() = uri;
            request
                .headers_mut()
                .insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
            match tokio::time::timeout(timeout, client.request(request)).await {
                Ok(Ok(response)) if response.status().is_success() => {}
                Ok(Ok(response)) => warn!(log, "alert webhook refused the alert";
                    "host" => target, "status" => response.status().as_u16()),
                Ok(Err(error)) => warn!(log, "alert webhook could not be reached";
                    "host" => target, "error" => error.to_string()),
                Err(_) => warn!(log, "alert webhook timed out";
                    "host" => target, "timeout_ms" => timeout.as_millis() as u64),
            }
            drop(permit);
        });
    }
}

/// Checks every rule's `webhook` URL.
pub(crate) fn check(rules: &[cliproxy_audit::AlertRule]) -> Result<(), ConfigError> {
    for (index, rule) in rules.iter().enumerate() {
        if let Some(url) = &rule.webhook {
            parse(url).map_err(|reason| {
                ConfigError::new(format!("`alerts[{index}].webhook`: {reason}"))
            })?;
        }
    }
    Ok(())
}

/// An `http://` or `https://` URL with a host.
fn parse(url: &str) -> std::result::Result<Uri, String> {
    let uri: Uri = url.parse().map_err(|_| "not a valid URL".to_owned())?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => Ok(uri),
        _ => Err("must be an http:// or https:// URL with a host".to_owned()),
    }
}
