//! The composition: the one place where `serve` and `demo` build each layer from its section
//! of the configuration and hand them to the gateway, which builds none itself
//! ([`Gateway::from_parts`]). The order is the order of their dependencies: the audit sink
//! anchors its chain in the state store; the credential store, whose exclusive lock is held
//! for the gateway's life, comes last, as it always has.
//!
//! Each builder maps its layer's errors to the config key concerned; they still live in
//! `cliproxy_gateway::default_layers` with the figment `Config` they read, until both move
//! into this binary.

use cliproxy_gateway::default_layers;
use cliproxy_gateway::{Config, Gateway, Layers};
use slog::Logger;

/// Builds every layer from `config` and the gateway on them.
pub(crate) fn gateway(config: &Config, log: &Logger) -> Result<Gateway, cliproxy_gateway::Error> {
    let layers = layers(config, log)?;
    Gateway::from_parts(config, layers, log.clone())
}

/// The layers, each from its own section.
fn layers(config: &Config, log: &Logger) -> Result<Layers, cliproxy_gateway::Error> {
    // The network guard's clock: the system's (tests of the gateway crate hand in a fake).
    let clock = default_layers::clock();
    // `server.tls`: the certificate and key are read and checked before anything is opened.
    let tls = default_layers::tls(config)?;
    // `state:`: opened before the audit log, whose chain head it anchors.
    let state = default_layers::state_store(config)?;
    // `metrics:`: the registry the audit sink reports its health to.
    let metrics = default_layers::metrics(config);
    // `logging.audit`: the hash-chained file, anchored in the state store.
    let audit_sink = default_layers::audit_sink(config, &metrics, &state, log)?;
    // `auth:`: the credential files, under their directory's exclusive lock for the
    // gateway's life (a vault command writing the same files meanwhile is refused).
    let credentials = default_layers::credential_store(config)?;
    Ok(Layers { clock, tls, state, metrics, audit_sink, credentials })
}
