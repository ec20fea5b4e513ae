//! What the audit sink gets from the rest of the gateway: the state store as its head anchor,
//! and the checkpoint signing key from the vault. The audit layer depends on neither the
//! network guard nor the vault; this adapter is where they meet.

use std::sync::Arc;

use cliproxy_audit::{ChainHead, HeadAnchor, SinkOptions};
use cliproxy_netguard::{StateChange, StateStore};
use ring::signature::Ed25519KeyPair;
use slog::{Logger, error, info};

use crate::config::Config;
use crate::error::Result;

/// The state store as the audit log's head anchor.
#[derive(Debug)]
pub(crate) struct StateAnchor(pub(crate) Arc<dyn StateStore>);

impl HeadAnchor for StateAnchor {
    fn load(&self) -> Result<Option<ChainHead>, String> {
        self.0
            .load_audit_head()
            .map(|head| head.map(|(seq, hash)| ChainHead { seq, hash }))
            .map_err(|e| crate::netguard_error(&e))
    }

    fn store(&self, head: &ChainHead) {
        // Queued for the store's writer (committed within `state.flush_interval`): the audit
        // writer thread never waits for SQLite.
        self.0.submit(StateChange::AuditHead { seq: head.seq, hash: head.hash.clone() });
    }
}

/// The audit sink's options: the state store as anchor and, when the audit log is on, the
/// signing key from the vault (created at the first start).
pub(crate) fn sink_options(
    config: &Config,
    state: &Arc<dyn StateStore>,
    log: &Logger,
) -> Result<SinkOptions> {
    let mut options = SinkOptions::default();
    if !config.logging.audit.enabled {
        return Ok(options);
    }
    options.anchor = Some(Arc::new(StateAnchor(state.clone())));
    // Without its key the gateway still starts (a read-only auth.dir is a supported setup)
    // and writes no checkpoints: said loudly here, and `audit verify --pubkey` then reports
    // the missing checkpoints rather than passing the log.
    let key = match config.auth.audit_signing_key(true) {
        Ok(key) => key,
        Err(e) => {
            error!(log, "no audit checkpoint signing key: the audit log gets no signed checkpoints, so a cut tail cannot be shown offline";
                   "error" => e.to_string(), "fix" => "make auth.dir writable, or check auth.encryption keys");
            return Ok(options);
        }
    };
    let Ok(pair) = Ed25519KeyPair::from_pkcs8(&key.pkcs8) else {
        error!(log, "the audit checkpoint signing key file does not hold an Ed25519 key: no signed checkpoints";
               "file" => %key.path.display(), "fix" => "move it away to make a new key");
        return Ok(options);
    };
    let public = cliproxy_audit::public_key_hex(&pair);
    if key.created {
        info!(log, "made the audit checkpoint signing key (keep the public key to verify the log offline: `cliproxy-server audit pubkey`)";
              "file" => %key.path.display(), "public_key" => &public);
    } else {
        info!(log, "audit checkpoint signing key loaded"; "public_key" => &public);
    }
    options.signer = Some(Arc::new(pair));
    Ok(options)
}
