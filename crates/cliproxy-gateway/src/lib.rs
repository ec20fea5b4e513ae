//! The cliproxy gateway: the request pipeline and the provider adapters, taking the layers
//! (the network guard's admission, state store, credential store, audit sink, clock, TLS)
//! behind their traits in a
//! [`Layers`] and building none of them itself ([`Gateway::from_parts`]); the binary
//! (`cliproxy-server`) loads the configuration, builds each layer from its section and hands
//! the gateway its view of the configuration ([`GatewayConfig`]).
//!
//! A request goes through, in order: routing, client-key authentication, the body cap, JSON
//! and model checks, model routing, then either the built-in mock or the upstream provider with
//! a vault credential (round-robin, cool-down and failover), and streams back with its token
//! usage read on the way.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use cliproxy_gateway::{Gateway, GatewayConfig, Layers, Server};
//!
//! # fn layers() -> Layers { unimplemented!() }
//! let config = GatewayConfig::default();
//! let log = slog::Logger::root(slog::Discard, slog::o!());
//! // The admission, state store, credential store, audit sink, clock and TLS, each behind
//! // its trait
//! // (`cliproxy-server`'s `compose.rs` builds the default ones from their sections).
//! let layers: Layers = layers();
//! let gateway = Gateway::from_parts(&config, layers, log.clone())?;
//! let server = Server::bind(&config.server, gateway, log).await?;
//! server.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

mod abuse;
mod admission;
mod alerts;
mod api;
mod audit_anchor;
mod auth;
mod body;
mod client_key_table;
mod clock;
mod config;
mod context;
mod control;
mod cooldown_throttle;
mod cors;
mod credentials;
mod error;
mod finish;
mod first_byte;
mod forward;
mod gateway;
mod guard;
mod guard_api;
mod guard_limits;
mod guard_status;
mod http_util;
mod intake;
mod layers;
mod management;
mod mock;
mod model_list;
mod models;
mod netguard_keys;
mod oauth_slot;
mod pool;
mod pricing;
mod provider_set;
mod providers;
mod readiness;
mod refresh;
mod refusals;
mod reload;
mod respond;
mod routing;
mod sandbox_paths;
mod server;
mod shared_sync;
mod sse;
mod stream_usage;
#[cfg(test)]
mod test_layers;
#[cfg(test)]
mod test_log;
mod translate_stream;
mod translation;
mod upstream;
mod upstream_error;
mod usage;
mod usage_history;
mod vault_errors;
mod violation_book;
mod webhook;

// The public interface is:
pub use api::ApiFormat;
pub use audit_anchor::{audit_error, sink_options as audit_sink_options};
pub use client_key_table::{client_key_view, client_limit_table_with_stored, config_key_view};
pub use config::{
    BaseUrl, ConfigError, CorsConfig, EgressConfig, GatewayConfig, LimitsConfig, LogFormat,
    LogLevel, LoggingConfig, ManagementConfig, ModelEntry, OpenAiApi, ProviderConfig, ProviderKind,
    ProvidersConfig, ServerConfig,
};
pub use error::{Error, Result};
pub use forward::MAX_ATTEMPTS;
pub use gateway::Gateway;
pub use guard::{client_limit_table, state_config, state_error};
pub use layers::Layers;
pub use management::{
    ROUTES as MANAGEMENT_ROUTES, Route as ManagementRoute, UsageBucket, UsageGroup, UsageQuery,
    check_client_key_body, usage_report,
};
pub use model_list::{
    MAX_MODEL_LIST_CURSOR_LEN, MAX_MODEL_NAME_LEN, ModelListPage, parse_model_list,
};
pub use netguard_keys::{netguard_error, setting_key as netguard_setting_key};
pub use pricing::{
    Amount as PriceAmount, BUILT_IN as BUILT_IN_PRICES, MicroUsd, Price, PriceConfig, PriceTable,
    PricingConfig,
};
pub use providers::{MAX_ERROR_BODY, UpstreamFault, classify_error};
pub use reload::{ConfigLoader, ReloadReport};
pub use respond::REQUEST_ID_HEADER;
pub use server::{Server, probe_health};
pub use stream_usage::UsageStripper;
pub use upstream_error::{MAX_UPSTREAM_MESSAGE, upstream_message};
pub use usage::{Usage, UsageScanner};
pub use usage_history::UsageConfig;
pub use vault_errors::{key_setting, unreadable_detail, vault_error_message, vault_notice_message};
