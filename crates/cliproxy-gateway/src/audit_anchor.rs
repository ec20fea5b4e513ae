//! What the audit sink gets from the rest of the gateway — the state store as its head
//! anchor, the checkpoint signing key from the vault, and the operational log for its notices —
//! and how its errors reach the operator. The audit layer depends on neither the network guard
//! nor the vault, logs nothing and names none of cliproxy's settings; this adapter is where
//! they meet, and where the settings concerned (`logging.audit.file`, `logging.audit.on_gap`)
//! are added to what it reports.

use std::sync::Arc;

use cliproxy_audit::{ChainHead, HeadAnchor, Notice, Severity, SinkFailure, SinkOptions};
use cliproxy_netguard::{StateChange, StateStore};
use ring::signature::Ed25519KeyPair;
use slog::{Logger, error, info, warn};

use crate::config::GatewayConfig;
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
pub fn sink_options(
    config: &GatewayConfig,
    state: &Arc<dyn StateStore>,
    log: &Logger,
) -> Result<SinkOptions> {
    let mut options = SinkOptions::default();
    let notices = log.clone();
    options.notify = Some(Arc::new(move |notice| log_notice(&notices, notice)));
    options.instance = Some(config.server.instance_id());
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
                   "error" => crate::vault_error_message(&e), "fix" => "make auth.dir writable, or check auth.encryption keys");
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

/// Logs one of the audit sink's notices with the message, level and fields the operational
/// log has always had for it (the e2e tests and operators' alerting grep them), naming
/// `logging.audit.*` where the sink's own text cannot.
pub(crate) fn log_notice(log: &Logger, notice: Notice) {
    match notice {
        Notice::Opened { path, head } => {
            info!(log, "audit log opened"; "file" => %path.display(), "seq" => head.seq,
                  "hash" => &head.hash);
        }
        Notice::ModeTightened { path, mode } => {
            warn!(log, "the audit log was readable by others: mode tightened to 0600";
                  "file" => %path.display(), "mode" => format!("{mode:o}"));
        }
        Notice::NewlineCompleted { path, seq } => {
            warn!(log, "the audit log's last line lacked its newline: completed";
                  "file" => %path.display(), "seq" => seq);
        }
        Notice::TornLineCut { path, bytes } => {
            warn!(log, "cut an incomplete last line off the audit log (a crash while writing)";
                  "file" => %path.display(), "bytes" => bytes);
        }
        Notice::GapContinued { path, anchored, found } => {
            error!(log, "the audit log is behind its anchor in the state store: lines were cut \
                         off or the file was deleted; going on (logging.audit.on_gap: continue)";
                   "file" => %path.display(), "anchored_seq" => anchored.seq,
                   "anchored_hash" => &anchored.hash, "found" => found);
        }
        Notice::Failed { failure, pending_lines, lost, suppressed } => {
            let message = failure_text(&failure);
            match failure {
                SinkFailure::Reopen { .. } => {
                    error!(log, "{}", message; "suppressed" => suppressed);
                }
                SinkFailure::WriterDied { .. } => {
                    error!(log, "{}", message; "unwritten" => pending_lines, "lost" => lost);
                }
                _ => {
                    error!(log, "{}", message; "backlog_lines" => pending_lines, "lost" => lost,
                           "suppressed" => suppressed);
                }
            }
        }
        Notice::WritableAgain { path, backlog_written, lost } => {
            info!(log, "the audit log is writable again"; "file" => %path.display(),
                  "backlog_written" => backlog_written, "lost" => lost);
        }
        Notice::Reopened { path, head } => {
            info!(log, "audit log reopened"; "file" => %path.display(), "seq" => head.seq,
                  "hash" => &head.hash);
        }
        Notice::ClosedUnwritten { path, unwritten, lost } => {
            error!(log, "audit log closed with lines not written"; "file" => %path.display(),
                   "unwritten" => unwritten, "lost" => lost);
        }
        Notice::Closed { path, head } => {
            info!(log, "audit log closed"; "file" => %path.display(), "seq" => head.seq,
                  "hash" => &head.hash);
        }
        // A notice of a later version of the crate: its own text, at its own level.
        other => match other.severity() {
            Severity::Info => info!(log, "{}", other),
            Severity::Warning => warn!(log, "{}", other),
            _ => error!(log, "{}", other),
        },
    }
}

/// What the audit sink's failure says to the operator (`/v0/management/status`, the
/// readiness log line and the error log), naming the setting of the file.
pub(crate) fn failure_text(failure: &SinkFailure) -> String {
    match failure {
        SinkFailure::Write { path, error } => {
            format!("cannot write the audit log {} (logging.audit.file): {error}", path.display())
        }
        SinkFailure::Reopen { path, error } => format!(
            "cannot reopen the audit log {} (logging.audit.file): {error}; still writing to the \
             file open before",
            path.display()
        ),
        SinkFailure::WriterDied { path } => format!(
            "the audit writer thread for {} (logging.audit.file) stopped after a panic: events \
             are no longer written; restart the gateway",
            path.display()
        ),
        other => format!("{other} (logging.audit.file)"),
    }
}

/// What an audit layer error at start says to the operator: the library's facts, with the
/// settings concerned and what to do about them.
pub fn audit_error(e: &cliproxy_audit::Error) -> String {
    use cliproxy_audit::Error;
    match e {
        Error::Open { path, source } => {
            format!("cannot open the audit log {} (logging.audit.file): {source}", path.display())
        }
        Error::Locked { path } => format!(
            "cannot open the audit log {} (logging.audit.file): another process holds it (an \
             exclusive lock on the file: is another cliproxy writing the same audit log?)",
            path.display()
        ),
        Error::Chain { path, reason } => format!(
            "cannot continue the hash chain of {} (logging.audit.file): {reason}: check the file \
             with `cliproxy-server audit verify`, then move it away",
            path.display()
        ),
        Error::Gap { path, anchored_seq, anchored_hash, found } => format!(
            "the audit log {} (logging.audit.file) is behind its anchor in the state store: the \
             anchor holds seq {anchored_seq} with hash {anchored_hash}, but {found}; lines were \
             cut off or the file was deleted or replaced. Refusing to start \
             (logging.audit.on_gap: refuse): put the missing lines back, or set \
             logging.audit.on_gap: continue to start anyway (the gap is then recorded as a \
             security_violation line)",
            path.display()
        ),
        // The anchor's own error names the state store.
        Error::Anchor(_) => e.to_string(),
        other => format!("{other} (logging.audit)"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::test_log::Lines;

    fn head(seq: u64) -> ChainHead {
        ChainHead { seq, hash: "ab".repeat(32) }
    }

    /// The line each notice gives: the message, level and fields the log had before the audit
    /// crate stopped logging by itself (slog lists the fields last to first).
    #[test]
    fn every_notice_is_logged_as_before_naming_the_setting() {
        let file = PathBuf::from("/var/log/cliproxy/audit.log");
        let hash = "ab".repeat(32);
        let write = SinkFailure::Write { path: file.clone(), error: "No space left".to_owned() };
        let reopen = SinkFailure::Reopen { path: file.clone(), error: "denied".to_owned() };
        let died = SinkFailure::WriterDied { path: file.clone() };
        let cases = [
            (
                Notice::Opened { path: file.clone(), head: head(5) },
                format!("INFO audit log opened hash={hash} seq=5 file={}", file.display()),
            ),
            (
                Notice::ModeTightened { path: file.clone(), mode: 0o644 },
                format!(
                    "WARN the audit log was readable by others: mode tightened to 0600 mode=644 \
                     file={}",
                    file.display()
                ),
            ),
            (
                Notice::NewlineCompleted { path: file.clone(), seq: 9 },
                format!(
                    "WARN the audit log's last line lacked its newline: completed seq=9 file={}",
                    file.display()
                ),
            ),
            (
                Notice::TornLineCut { path: file.clone(), bytes: 13 },
                format!(
                    "WARN cut an incomplete last line off the audit log (a crash while writing) \
                     bytes=13 file={}",
                    file.display()
                ),
            ),
            (
                Notice::GapContinued {
                    path: file.clone(),
                    anchored: head(10),
                    found: "the file ends at seq 7".to_owned(),
                },
                format!(
                    "ERRO the audit log is behind its anchor in the state store: lines were cut \
                     off or the file was deleted; going on (logging.audit.on_gap: continue) \
                     found=the file ends at seq 7 anchored_hash={hash} anchored_seq=10 file={}",
                    file.display()
                ),
            ),
            (
                Notice::Failed { failure: write, pending_lines: 4, lost: 2, suppressed: 1 },
                format!(
                    "ERRO cannot write the audit log {} (logging.audit.file): No space left \
                     suppressed=1 lost=2 backlog_lines=4",
                    file.display()
                ),
            ),
            (
                Notice::Failed { failure: reopen, pending_lines: 4, lost: 2, suppressed: 3 },
                format!(
                    "ERRO cannot reopen the audit log {} (logging.audit.file): denied; still \
                     writing to the file open before suppressed=3",
                    file.display()
                ),
            ),
            (
                Notice::Failed { failure: died, pending_lines: 4, lost: 2, suppressed: 0 },
                format!(
                    "ERRO the audit writer thread for {} (logging.audit.file) stopped after a \
                     panic: events are no longer written; restart the gateway lost=2 unwritten=4",
                    file.display()
                ),
            ),
            (
                Notice::WritableAgain { path: file.clone(), backlog_written: 50, lost: 0 },
                format!(
                    "INFO the audit log is writable again lost=0 backlog_written=50 file={}",
                    file.display()
                ),
            ),
            (
                Notice::Reopened { path: file.clone(), head: head(7) },
                format!("INFO audit log reopened hash={hash} seq=7 file={}", file.display()),
            ),
            (
                Notice::ClosedUnwritten { path: file.clone(), unwritten: 3, lost: 1 },
                format!(
                    "ERRO audit log closed with lines not written lost=1 unwritten=3 file={}",
                    file.display()
                ),
            ),
            (
                Notice::Closed { path: file.clone(), head: head(200) },
                format!("INFO audit log closed hash={hash} seq=200 file={}", file.display()),
            ),
        ];
        for (notice, expected) in cases {
            let lines = Lines::default();
            let log = Logger::root(slog::Fuse(lines.clone()), slog::o!());
            log_notice(&log, notice);
            let got = lines.taken();
            assert_eq!(got, [expected]);
        }
    }

    /// Every start error an operator can meet names the setting concerned, as it did when the
    /// audit crate's own texts named it.
    #[test]
    fn audit_errors_name_the_settings() {
        use cliproxy_audit::Error;
        let path = PathBuf::from("/var/log/cliproxy/audit.log");
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let cases = [
            (Error::Open { path: path.clone(), source: denied }, vec!["(logging.audit.file): "]),
            (
                Error::Locked { path: path.clone() },
                vec!["(logging.audit.file): another process holds it", "another cliproxy"],
            ),
            (
                Error::Chain { path: path.clone(), reason: "its last line was changed".to_owned() },
                vec![
                    "hash chain of /var/log/cliproxy/audit.log (logging.audit.file): its last \
                     line was changed: check the file with `cliproxy-server audit verify`",
                ],
            ),
            (
                Error::Gap {
                    path: path.clone(),
                    anchored_seq: 10,
                    anchored_hash: "ab".repeat(32),
                    found: "the file ends at seq 7".to_owned(),
                },
                vec![
                    "(logging.audit.file) is behind its anchor in the state store",
                    "seq 10 with hash abab",
                    "but the file ends at seq 7",
                    "Refusing to start (logging.audit.on_gap: refuse)",
                    "set logging.audit.on_gap: continue",
                ],
            ),
        ];
        for (error, parts) in cases {
            let library = error.to_string();
            assert!(!library.contains("logging."), "the library's own text: {library}");
            let text = audit_error(&error);
            assert!(text.contains("/var/log/cliproxy/audit.log"), "{text}");
            for part in parts {
                assert!(text.contains(part), "{part:?} in {text}");
            }
        }
        let anchor = Error::Anchor("state store /x/.state.db: locked".to_owned());
        assert_eq!(
            audit_error(&anchor),
            "cannot read the audit log's head anchor: state store /x/.state.db: locked"
        );
    }

    #[test]
    fn sink_failures_name_the_file_setting() {
        let path = PathBuf::from("/dev/full");
        for failure in [
            SinkFailure::Write { path: path.clone(), error: "No space left on device".to_owned() },
            SinkFailure::Reopen { path: path.clone(), error: "denied".to_owned() },
            SinkFailure::WriterDied { path },
        ] {
            assert!(!failure.to_string().contains("logging."), "{failure}");
            let text = failure_text(&failure);
            assert!(text.contains("/dev/full (logging.audit.file)"), "{text}");
        }
    }
}
