//! `cliproxy-server audit verify [--pubkey KEY] FILE...`: checks the hash chain of audit
//! files (and with a public key, the signed checkpoints and the tail); `audit pubkey` prints
//! the public key of the checkpoint signing key kept in the vault.

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::anyhow;
use clap::Subcommand;

use crate::commands::Failure;

/// Exit code when the chain is broken or a file cannot be read.
const EXIT_BROKEN: u8 = 1;
/// Exit code for a bad argument.
const EXIT_USAGE: u8 = 2;

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Check the hash chain of audit log files (logging.audit.file) and name the first bad
    /// line.
    ///
    /// Give rotated files first, oldest first, and the current file last: the chain runs
    /// across them. Every line's `hash` is checked against its content (a changed line), its
    /// `seq` against the line before (a removed, duplicated or reordered line), and its
    /// `prev_hash` against the previous line's `hash` (a line changed and re-hashed, files in
    /// the wrong order). A first line with seq 1 must have 64 zeros as `prev_hash`; a chain
    /// starting later (older files not given) is accepted and noted. An incomplete last line
    /// of the last file (a crash while writing) is noted, not a failure.
    ///
    /// What a hash chain alone cannot catch: lines cut off the end of the newest file, or
    /// whole newest files removed, leave a shorter chain that is still valid. With --pubkey
    /// (the key `audit pubkey` prints, kept apart from the log) every signed checkpoint line
    /// is verified and so is the tail: the files must end with a shutdown checkpoint, or have
    /// fewer lines after their last checkpoint than its interval (every_lines) and a last
    /// checkpoint younger than its interval (every, plus 30 s); otherwise "the tail after seq X
    /// may have been cut" (exit 1). A gateway that crashed leaves such a tail too: the lines
    /// after the last checkpoint are then not vouched for.
    ///
    /// Exit codes: 0 the chain verifies, 1 a line is bad or a file cannot be read, 2 usage
    /// error.
    Verify {
        /// Audit files, oldest first (e.g. audit.log.2 audit.log.1 audit.log).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// The checkpoint public key (64 hex digits or base64), from `audit pubkey`.
        #[arg(long, value_name = "KEY")]
        pubkey: Option<String>,
    },
    /// Print the public key of the checkpoint signing key (64 hex digits), to keep apart from
    /// the log for `audit verify --pubkey`. The key is made at the gateway's first start with
    /// the audit log on, in auth.dir (.audit-signing-key.json, encrypted like credentials).
    Pubkey,
}

/// Runs an `audit` subcommand.
pub(crate) fn run(command: &AuditCommand, config: &crate::cli::ConfigArg) -> Result<(), Failure> {
    match command {
        AuditCommand::Pubkey => {
            let config = crate::commands::load(config)?;
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
