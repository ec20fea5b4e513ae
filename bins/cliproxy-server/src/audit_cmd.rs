//! `cliproxy-server audit verify FILE...`: checks the hash chain of audit files.

use std::path::PathBuf;

use anyhow::anyhow;
use clap::Subcommand;

use crate::commands::Failure;

/// Exit code when the chain is broken or a file cannot be read.
const EXIT_BROKEN: u8 = 1;

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
    /// What a hash chain cannot catch: lines cut off the end of the newest file, or whole
    /// newest files removed, leave a shorter chain that is still valid. Compare the printed
    /// head (the last line's seq and hash) with the head the gateway logs at shutdown, at
    /// start and on every reopen ("audit log closed" / "audit log opened" in the operational
    /// log, kept somewhere else).
    ///
    /// Exit codes: 0 the chain verifies, 1 a line is bad or a file cannot be read, 2 usage
    /// error.
    Verify {
        /// Audit files, oldest first (e.g. audit.log.2 audit.log.1 audit.log).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

/// Runs an `audit` subcommand.
pub(crate) fn run(command: &AuditCommand) -> Result<(), Failure> {
    match command {
        AuditCommand::Verify { files } => match cliproxy_audit::verify_files(files) {
            Ok(verified) => {
                println!("{verified}");
                Ok(())
            }
            Err(broken) => Err(Failure { error: anyhow!("{broken}"), exit_code: EXIT_BROKEN }),
        },
    }
}
