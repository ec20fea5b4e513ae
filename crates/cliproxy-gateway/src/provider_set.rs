//! The configured providers as the request path holds them: for each, its base URL, upstream
//! client, credential pool and model-list cache; with them the model router, the vault, the
//! header sent upstream to identify this install, and the upstream timeouts. Built once from
//! the config and the vault's credentials; the pools change at run time (management writes,
//! `credentials.rs`; refreshes, `refresh.rs`). (`providers.rs` is something else: what each
//! provider *kind* wants on the wire.)

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cliproxy_vault::Credential;
use http::header::{HeaderName, HeaderValue};
use slog::{Logger, warn};

use crate::config::{
    BaseUrl, ConfigError, EgressConfig, GatewayConfig, LimitsConfig, ProviderKind,
};
use crate::error::Result;
use crate::model_list::ListCache;
use crate::pool::{CooldownShare, Epoch, PoolCell, Slot};
use crate::refresh::Vault;
use crate::routing::ModelRouter;
use crate::upstream::{self, HttpClient};

/// A provider as the request path uses it.
pub(crate) struct Provider {
    pub(crate) name: String,
    pub(crate) kind: ProviderKind,
    /// `providers.<name>.api` (OpenAI only): the API it is called with.
    pub(crate) api: Option<crate::config::OpenAiApi>,
    pub(crate) base_url: BaseUrl,
    pub(crate) latency: Duration,
    pub(crate) client: Option<HttpClient>,
    pub(crate) pool: PoolCell,
    /// `providers.<name>.max_tokens`.
    pub(crate) max_tokens: Option<NonZeroU32>,
    /// `providers.<name>.allow_insecure`: whether a credential's own `base_url` may be
    /// `http://` to a host that is not loopback.
    pub(crate) allow_insecure: bool,
    /// `egress:`, which a credential's own `base_url` and `token_url` must satisfy.
    pub(crate) egress: EgressConfig,
    /// The upstream's own model list, for the globs in listings (`model_list.rs`).
    pub(crate) listing: ListCache,
}

/// Every configured provider, and what sending to one of them needs.
pub(crate) struct ProviderSet {
    pub(crate) providers: Vec<Provider>,
    pub(crate) router: ModelRouter,
    /// `pricing:` over the built-in prices: what each routed model costs.
    pub(crate) prices: crate::pricing::PriceTable,
    /// The vault and its write lock.
    pub(crate) vault: Arc<Vault>,
    /// `auth.device_fingerprint`: the header sent upstream, when enabled.
    pub(crate) fingerprint: Option<(HeaderName, HeaderValue)>,
    /// `server.limits`: the upstream timeouts.
    pub(crate) limits: LimitsConfig,
    pub(crate) log: Logger,
}

impl ProviderSet {
    /// The provider called `name`.
    pub(crate) fn find(&self, name: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.name == name)
    }
}

/// Builds every configured provider: its base URL, its upstream client and its pool of the
/// vault's `credentials` (each credential's own base URL checked; `location` names the vault
/// in errors).
pub(crate) fn build_providers(
    config: &GatewayConfig,
    credentials: &[Credential],
    location: &Path,
    state: &Arc<dyn cliproxy_netguard::StateStore>,
    log: &Logger,
) -> Result<Vec<Provider>> {
    // A state store shared with other instances carries each cool-down to them.
    let shared = state.shared_health().is_some();
    let mut built = Vec::with_capacity(config.providers.0.len());
    for (name, provider) in &config.providers.0 {
        let base_url = match &provider.base_url {
            Some(url) => url.clone(),
            None => BaseUrl::parse(provider.kind.default_base_url()).map_err(ConfigError::new)?,
        };
        let client = match provider.kind {
            ProviderKind::Mock => None,
            _ => Some(upstream::build_client(
                name,
                config.server.limits.upstream_connect_timeout,
                provider.ca_file.as_deref(),
            )?),
        };
        let epoch = Epoch::now();
        let share = shared.then(|| Arc::new(CooldownShare::new(name, state.clone())));
        let mut slots = Vec::new();
        for credential in credentials.iter().filter(|c| &c.provider == name) {
            let base_url = credential_base_url(credential, provider.allow_insecure, &config.egress)
                .map_err(|e| ConfigError::new(format!("{e} (in {})", location.display())))?;
            slots.push(Arc::new(
                Slot::new(credential.clone(), base_url, epoch).shared(share.clone()),
            ));
        }
        if provider.kind != ProviderKind::Mock && slots.is_empty() {
            warn!(log, "provider has no credentials; its models will answer 503 until one is added";
                "provider" => name, "fix" => format!("cliproxy-server vault add --provider {name}"));
        }
        built.push(Provider {
            name: name.clone(),
            kind: provider.kind,
            api: provider.api,
            base_url,
            latency: provider.latency,
            client,
            pool: PoolCell::new(slots, epoch).shared(share),
            max_tokens: provider.max_tokens,
            allow_insecure: provider.allow_insecure,
            egress: config.egress.clone(),
            listing: ListCache::default(),
        });
    }
    for credential in credentials {
        if !config.providers.0.contains_key(&credential.provider) {
            warn!(log, "credential belongs to no configured provider and is not used";
                "credential" => &credential.id, "provider" => &credential.provider);
        }
    }
    Ok(built)
}

/// A credential's own base URL, checked: parsed, and refused when it is `http://` to a host
/// that is not loopback unless its provider sets `allow_insecure` (the credential's token
/// would cross the network in clear), or when it or the credential's OAuth `token_url` names
/// a host outside `egress.allowed_hosts`. The error names the credential, never the URL.
pub(crate) fn credential_base_url(
    credential: &Credential,
    allow_insecure: bool,
    egress: &EgressConfig,
) -> std::result::Result<Option<BaseUrl>, String> {
    if !egress.allowed_hosts.is_empty()
        && let cliproxy_vault::CredentialSecret::OAuth(tokens) = &credential.secret
    {
        let host = tokens
            .token_url
            .parse::<http::Uri>()
            .ok()
            .and_then(|uri| uri.host().map(str::to_owned));
        if !host.is_some_and(|host| egress.allows(&host)) {
            return Err(format!(
                "credential `{}`: token_url names a host that is not in `egress.allowed_hosts`",
                credential.id
            ));
        }
    }
    match &credential.base_url {
        Some(text) => {
            let url = BaseUrl::parse(text)
                .and_then(|url| url.check_transport(allow_insecure).map(|()| url))
                .map_err(|e| {
                    format!(
                        "credential `{}`: base_url {e} (or set `providers.{}.allow_insecure: true`)",
                        credential.id, credential.provider
                    )
                })?;
            if !egress.allows(url.host()) {
                return Err(format!(
                    "credential `{}`: base_url names a host that is not in `egress.allowed_hosts`",
                    credential.id
                ));
            }
            Ok(Some(url))
        }
        None => Ok(None),
    }
}
