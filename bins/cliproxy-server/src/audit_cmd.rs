//! `cliproxy-server audit verify [--pubkey KEY] FILE...`: checks the hash chain of audit
//! files (and with a public key, the signed checkpoints and the tail); `audit pubkey` prints
//! the public key of the checkpoint signing key kept in the vault.

use std::path::PathBuf;
use std::time::SystemTime;

use crate::cli::{AuditCommand, ConfigArg};
use crate::config_load::load;
use crate::failure::Failure;
use anyhow::anyhow;

/// Exit code when the chain is broken or a file cannot be read.
const EXIT_BROKEN: u8 = 1;
/// Exit code for a bad argument.
const EXIT_USAGE: u8 = 2;

/// Runs an `audit` subcommand.
pub(crate) fn run(command: &AuditCommand, config: &ConfigArg) -> Result<(), Failure> {
    match command {
        AuditCommand::Pubkey => {
            let config = load(config)?;
            let key = config.auth.audit_signing_key(false).map_err(|e| {
                anyhow!(
                    "{} (the key is made at the gateway's first start with logging.audit.enabled)",
                    cliproxy_gateway::vault_error_message(&e)
                )
            })?;
            let pair = ring::signature::Ed25519KeyPair::from_pkcs8(&key.pkcs8)
                .map_err(|_| anyhow!("{}: does not hold an Ed25519 key", key.path.display()))?;
            println!("{}", cliproxy_audit::public_key_hex(&pair));
            Ok(())
        }
        AuditCommand::Verify { files, pubkey } => {
            let signed = match pubkey {
                Some(text) => Some(cliproxy_audit::SignedCheck {
                    public_key: cliproxy_audit::parse_public_key(text).map_err(|e| Failure {
                        error: anyhow!("--pubkey: {e}"),
                        exit_code: EXIT_USAGE,
                    })?,
                    now: SystemTime::now(),
                }),
                None => None,
            };
            let unsigned = signed.is_none();
            verify(files, signed)?;
            if unsigned {
                // The library's note says the checkpoints went unchecked; this says how.
                println!(
                    "note: give --pubkey KEY, from `cliproxy-server audit pubkey`, to check the \
                     checkpoints' signatures and find a cut tail"
                );
            }
            Ok(())
        }
    }
}

fn verify(files: &[PathBuf], signed: Option<cliproxy_audit::SignedCheck>) -> Result<(), Failure> {
    {
        match cliproxy_audit::verify_files_signed(files, signed) {
            Ok(verified) => {
                println!("{verified}");
                Ok(())
            }
            Err(broken) => Err(Failure { error: anyhow!("{broken}"), exit_code: EXIT_BROKEN }),
        }
    }
}
