//! The control plane: the narrow handle through which the management API (`management.rs`,
//! `guard_api.rs`) and the config reload (`reload.rs`) act on the running gateway. The
//! gateway implements [`ControlPlane`] and hands itself to `management::handle`; the
//! management modules import this module and never `gateway.rs`, so the request path and
//! the management plane do not import each other in a circle. [`Note`] is what a
//! management call tells its audit event.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cliproxy_vault::Credential;
use http::Response;
use serde_json::Value;

use crate::error::ApiError;
use crate::guard::Guard;
use crate::http_util::Body;
use crate::refresh::Vault;

/// What the management plane may read and change in the running gateway: exactly what its
/// routes need, and nothing of the request path.
pub(crate) trait ControlPlane: Sync {
    /// The network guard: the runtime denylist, maintenance, audit and bans' state store.
    fn guard(&self) -> &Arc<Guard>;

    /// The vault, for reads (`GET /auths`, export, status); writes go through
    /// [`ControlPlane::store_credential`] and [`ControlPlane::delete_credentials`], which
    /// keep the pools in step.
    fn vault(&self) -> &Arc<Vault>;

    /// The client keys in force (the config file's and the ones created at run time), for
    /// the `/client-keys` routes.
    fn client_keys(&self) -> &Arc<crate::auth::ClientKeyCell>;

    /// Whether `name` is a configured provider.
    fn knows_provider(&self, name: &str) -> bool;

    /// Whether `name` is a configured provider that uses vault credentials (not the mock).
    fn accepts_credentials_for(&self, name: &str) -> bool;

    /// The providers that take credentials, for messages.
    fn upstream_provider_names(&self) -> Vec<&str>;

    /// Writes `credential` to the vault, then puts it into its provider's pool.
    fn store_credential(
        &self,
        credential: Credential,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// Deletes credentials from the pools and the vault; returns the ids deleted.
    fn delete_credentials(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<String>, ApiError>> + Send;

    /// The provider whose pool holds the credential `id`.
    fn pool_owner(&self, id: &str) -> Option<&str>;

    /// How long the credential `id` of `provider` still rests after a fault of its own.
    fn cooldown_left(&self, provider: &str, id: &str) -> Option<Duration>;

    /// Writes the last-use times gathered since the previous flush to the vault.
    fn flush_last_used(&self) -> impl Future<Output = ()> + Send;

    /// `POST /config/reload`: reloads the configuration file; `note` gets what changed.
    fn reload_config(
        &self,
        trigger: &'static str,
        note: &mut Note,
    ) -> impl Future<Output = Result<Response<Body>, ApiError>> + Send;

    /// What `GET /status` shows of the gateway itself.
    fn status(&self) -> Status<'_>;
}

/// The gateway's part of `GET /status`.
pub(crate) struct Status<'a> {
    /// Time since the gateway was built.
    pub(crate) uptime: Duration,
    /// Each readiness check with its full error.
    pub(crate) readiness: Value,
    /// `metrics:`.
    pub(crate) metrics: &'a cliproxy_audit::MetricsConfig,
    /// What the binary's sandbox put in place, or `null`.
    pub(crate) sandbox: Value,
}

/// What a route tells the audit event about its call.
#[derive(Debug, Default)]
pub(crate) struct Note {
    /// The credential concerned (its id), when the body named it.
    pub(crate) credential: Option<String>,
    /// The config key paths changed.
    pub(crate) changed: Vec<String>,
    /// Other facts (no secrets).
    pub(crate) details: serde_json::Map<String, Value>,
}
