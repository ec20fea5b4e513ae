//! The command-line interface (clap). `--help` on every subcommand says what it does and
//! which config keys matter.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// cliproxy: a security-hardened gateway between LLM clients and LLM provider APIs.
///
/// Clients call it with their own keys in the OpenAI, Anthropic or Gemini API format; it
/// forwards to the providers with credentials from its vault and streams the replies back.
///
/// Exit codes: 0 ok, 1 runtime failure, 2 usage error, 78 configuration error.
#[derive(Debug, Parser)]
#[command(name = "cliproxy-server", version, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
    #[command(flatten)]
    pub(crate) config: ConfigArg,
}

/// The `--config` option shared by the subcommands that read a configuration.
#[derive(Debug, Clone, Args)]
pub(crate) struct ConfigArg {
    /// Configuration file (YAML). Without it, ./config.yaml is read when present, else the
    /// built-in defaults. CLIPROXY_<SECTION>__<KEY> environment variables override the file.
    #[arg(long, short = 'c', value_name = "PATH", global = true)]
    pub(crate) config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the gateway (the default when no subcommand is given).
    Serve,
    /// Run the whole stack on loopback with the built-in mock provider: no provider account
    /// needed. Prints a fresh client key and copy-paste examples.
    Demo(DemoArgs),
    /// Internal: started by `demo` before it sandboxes itself; removes the demo's directory
    /// once its standard input closes (when the demo exits, however it exits).
    #[command(hide = true)]
    DemoCleanup {
        /// The demo's directory (`cliproxy-demo-*` in the temporary directory; nothing else
        /// is removed).
        dir: PathBuf,
    },
    /// The pre-deployment checklist: a table of pass / warn / FAIL rows, each non-pass row
    /// with a one-line fix. Exits 1 when a row fails, 0 otherwise (warnings do not fail).
    ///
    /// Rows: not running as root (sandbox.require_non_root); client keys present
    /// (auth.api_keys); auth.dir 0700 and its files 0600, owned by this user; credentials
    /// readable; encryption at rest (auth.encryption, no plaintext file left); TLS: with
    /// server.tls.enabled, the certificate parses and has 24 h left (FAIL below, warn below 14
    /// days) and the key matches it, with TLS off a non-loopback server.host warns;
    /// management API not remote without TLS, and not loopback-only behind a trusted proxy
    /// on loopback (server.trusted_proxies); rate limits (server.security.rate_limiting and
    /// server.rate_limit: off fails on a non-loopback server.host, warns on loopback); audit
    /// log (logging.audit: on, directory writable, file 0600 and ours, auth_failure and
    /// security_violation among the events); metrics not on a non-loopback host; at least one
    /// alert rule; state store directory writable (state.path); no secret written literally
    /// in the config file (only key names are printed, never values); sandbox settings and
    /// this process's posture.
    ///
    /// Run it as the service user: ownership is checked against the user running it. It
    /// reads only: nothing is fixed, created or rewritten. Exit codes: 0 no FAIL row, 1 a row
    /// failed, 78 the configuration does not load.
    Check,
    /// Print fresh random keys: a client key (auth.api_keys), a management key
    /// (management.secret_key) and an encryption key (auth.encryption.key).
    Keygen,
    /// Print this install's device fingerprint: a random id generated on first use and kept
    /// in auth.dir (0600), so it is stable across restarts, differs between installs and says
    /// nothing about the machine. Sent upstream in the
    /// auth.device_fingerprint.header when auth.device_fingerprint.enabled is true.
    Fingerprint,
    /// Probe the running gateway's liveness endpoint (GET /healthz on server.host:server.port,
    /// or --addr); exit 0 when it answers 200 within 3 s, 1 otherwise. For container
    /// HEALTHCHECKs: no shell or curl needed.
    Healthcheck(HealthcheckArgs),
    /// The process sandbox (sandbox: config section).
    #[command(subcommand)]
    Sandbox(SandboxCommand),
    /// Manage the provider credentials stored in auth.dir.
    #[command(subcommand)]
    Vault(VaultCommand),
    /// The audit log: verify its hash chain and signed checkpoints, print the checkpoint
    /// public key.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Management API bans (an address that sent management.max_failures wrong management
    /// keys), read and lifted in the state store (state.path, default auth.dir/.state.db).
    /// For a stopped gateway, such as after the operator's own address was banned: a running
    /// one keeps the bans it has in memory (lift those with DELETE
    /// /v0/management/security/bans/IP), and reads the store again when it starts.
    #[command(subcommand)]
    Bans(BansCommand),
    /// The usage history: requests, errors, tokens (input, output, cache read, cache write)
    /// and cost, by client key, provider or model, in hourly or daily buckets, with a totals
    /// row. Read offline from the state store (state.path, default auth.dir/.state.db), so it
    /// shows what a running gateway has written: everything but its last second or two
    /// (GET /v0/management/usage includes those). Costs are USD under the price table;
    /// UNPRICED counts the requests whose cost is unknown, which the cost leaves out.
    Usage(UsageArgs),
    /// Client keys created at run time (beside the config file's auth.api_keys, which stay
    /// read-only): create one, list them, revoke one. They live in the state store
    /// (state.path, default auth.dir/.state.db), which these commands open and write
    /// directly: a gateway running on the same store puts a created or revoked key in force
    /// within a second, without a restart. The management API has the same operations under
    /// /v0/management/client-keys.
    ///
    /// Exit codes: 0 done, 1 the store could not be written or the key is not there, 2 usage
    /// error (a bad flag or value), 78 the configuration does not load.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Create a client key and print it, this once: only its SHA-256 digest is stored.
    ///
    /// Example: cliproxy-server keys create --name ci --models 'gpt-4o*,claude-*' --rpm 60
    /// --budget-usd 5 --budget-period daily --expires 30d
    Create(KeysCreateArgs),
    /// List the client keys: the config file's (source config) and the ones created at run
    /// time (source store), with their limits; never a key or a digest.
    List {
        /// Print JSON (the management API's GET /client-keys form) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke (delete) a client key created at run time; a running gateway on the same
    /// store refuses it within a second. Config file keys are removed from auth.api_keys.
    Revoke {
        /// The key's name, as `keys list` shows it.
        name: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct KeysCreateArgs {
    /// The key's name, shown in logs, metrics and audit lines instead of the key: ASCII
    /// letters, digits, `-`, `_`, `.`; unique across auth.api_keys and the stored keys.
    #[arg(long)]
    pub(crate) name: String,
    /// Model name patterns the key may use, comma-separated (`*` globs); every model when
    /// left out.
    #[arg(long, value_delimiter = ',', value_name = "PATTERN,...")]
    pub(crate) models: Vec<String>,
    /// Requests per minute.
    #[arg(long, value_name = "N")]
    pub(crate) rpm: Option<std::num::NonZeroU32>,
    /// Tokens (input + output) per minute.
    #[arg(long, value_name = "N")]
    pub(crate) tpm: Option<std::num::NonZeroU64>,
    /// Tokens per --quota-period.
    #[arg(long, value_name = "TOKENS")]
    pub(crate) quota: Option<std::num::NonZeroU64>,
    /// When the quota starts again (UTC calendar periods).
    #[arg(long, value_name = "PERIOD", default_value = "monthly", requires = "quota", value_parser = ["daily", "weekly", "monthly"])]
    pub(crate) quota_period: String,
    /// Dollars per --budget-period, at most six decimals (e.g. 5 or 0.25).
    #[arg(long, value_name = "USD")]
    pub(crate) budget_usd: Option<String>,
    /// When the budget starts again (UTC calendar periods).
    #[arg(long, value_name = "PERIOD", default_value = "monthly", requires = "budget_usd", value_parser = ["daily", "weekly", "monthly"])]
    pub(crate) budget_period: String,
    /// When the key stops working: a duration from now (`12h`, `30d`) or an RFC 3339 time in
    /// UTC (`2030-01-31T00:00:00Z`); never when left out.
    #[arg(long, value_name = "WHEN")]
    pub(crate) expires: Option<String>,
    /// Create the key disabled (enable it with PATCH /v0/management/client-keys/NAME).
    #[arg(long)]
    pub(crate) disabled: bool,
}

#[derive(Debug, Args)]
pub(crate) struct UsageArgs {
    /// Group by client key, provider or model.
    #[arg(long, value_name = "GROUP", default_value = "key", value_parser = ["key", "provider", "model"])]
    pub(crate) by: String,
    /// How far back: a span (7d, 24h, 90m) or an RFC 3339 time in UTC (2026-12-07T10:00:00Z).
    /// Default: the last 24 hours (or usage.retention, when shorter).
    #[arg(long, value_name = "SPAN")]
    pub(crate) since: Option<String>,
    /// The bucket size.
    #[arg(long, value_name = "SIZE", default_value = "hour", value_parser = ["hour", "day"])]
    pub(crate) bucket: String,
    /// Print the JSON answer of GET /v0/management/usage instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

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

#[derive(Debug, Subcommand)]
pub(crate) enum BansCommand {
    /// List the bans in force: the address and when the ban ends.
    List,
    /// Lift the ban of one address (the gateway must be restarted to see it).
    Lift {
        /// The banned address, as `bans list` shows it.
        ip: std::net::IpAddr,
    },
}

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Port to listen on (127.0.0.1 only); 0 picks a free one.
    #[arg(long, default_value_t = 8317)]
    pub(crate) port: u16,
    /// Seconds the mock waits before its reply and between streamed events.
    #[arg(long, value_name = "DURATION", default_value = "40ms")]
    pub(crate) latency: String,
    /// Serve HTTPS with a throwaway CA and certificate made for this run (the banner prints
    /// the CA file to pass to `curl --cacert`).
    #[arg(long)]
    pub(crate) tls: bool,
    /// Port of the Prometheus metrics listener (127.0.0.1 only); 0, the default, picks a free
    /// one (the banner prints it).
    #[arg(long, default_value_t = 0)]
    pub(crate) metrics_port: u16,
}

#[derive(Debug, Args)]
pub(crate) struct HealthcheckArgs {
    /// Address to probe instead of server.host:server.port (an unspecified host such as
    /// 0.0.0.0 is probed on loopback).
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) addr: Option<std::net::SocketAddr>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum SandboxCommand {
    /// Print the seccomp profile derived from the gateway's syscall allowlist (the same list
    /// the in-process filter enforces). `--format docker` is the Docker / OCI JSON profile
    /// shipped as deploy/seccomp-profile.json.
    Profile {
        /// Output format.
        #[arg(long, value_parser = ["docker"], default_value = "docker")]
        format: String,
    },
    /// Print this process's security posture: uid/gid, capabilities, no_new_privs, seccomp,
    /// whether the root file system is read-only.
    Posture,
}

#[derive(Debug, Subcommand)]
pub(crate) enum VaultCommand {
    /// Store a provider credential. Secrets are read from standard input, never from the
    /// command line, so they stay out of shell history and process listings: the API key on
    /// the first line, or for `--type oauth` the access token on the first line and the
    /// refresh token on the second.
    Add(VaultAddArgs),
    /// List stored credentials: ids, providers, types, creation and last-use time (recorded
    /// by the running gateway every 30 s and at shutdown), how each is stored (the
    /// encryption key id or `plaintext`). Never secrets.
    List,
    /// Encrypt every plaintext credential in place under `auth.encryption.key` (files written
    /// before encryption was enabled, which `serve` refuses while
    /// `auth.encryption.require_encrypted` is on: this is the explicit way to take them in).
    /// Each file taken in is named with its provider and base URL, for you to check that you
    /// wrote it. Each file is rewritten atomically; nothing is rewritten if any file cannot
    /// be read.
    Migrate,
    /// Re-encrypt every credential under the current `auth.encryption.key`. Rotate by setting
    /// the new key as `key` and moving the old one to `previous_keys`, then run this; once it
    /// succeeds the old key can be dropped from `previous_keys`.
    RotateKey,
}

#[derive(Debug, Args)]
pub(crate) struct VaultAddArgs {
    /// The provider it belongs to: a name under `providers:` in the config.
    #[arg(long)]
    pub(crate) provider: String,
    /// Credential id (letters, digits, `.`, `_`, `-`); generated when omitted.
    #[arg(long)]
    pub(crate) id: Option<String>,
    /// Send this credential's requests to another base URL than the provider's.
    #[arg(long, value_name = "URL")]
    pub(crate) base_url: Option<String>,
    /// A note for operators, shown by `vault list`.
    #[arg(long)]
    pub(crate) label: Option<String>,
    /// `api_key` (a static key) or `oauth` (access + refresh token, refreshed before expiry).
    #[arg(long = "type", value_name = "TYPE", default_value = "api_key", value_parser = ["api_key", "oauth"])]
    pub(crate) kind: String,
    /// OAuth: the token endpoint (https://, or http:// to loopback).
    #[arg(long, value_name = "URL", required_if_eq("kind", "oauth"))]
    pub(crate) token_url: Option<String>,
    /// OAuth: the client id sent with each refresh.
    #[arg(long, value_name = "ID", required_if_eq("kind", "oauth"))]
    pub(crate) client_id: Option<String>,
    /// OAuth: how long the access token is still valid (e.g. `55m`); refreshed
    /// `auth.refresh.ahead` before that.
    #[arg(long, value_name = "DURATION", required_if_eq("kind", "oauth"))]
    pub(crate) expires_in: Option<String>,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_is_the_default_and_config_is_global() {
        let cli = Cli::try_parse_from(["cliproxy-server", "--config", "x.yaml"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.config.config.as_deref(), Some(std::path::Path::new("x.yaml")));
        let cli = Cli::try_parse_from([
            "cliproxy-server",
            "vault",
            "add",
            "--provider",
            "openai",
            "-c",
            "y.yaml",
        ])
        .unwrap();
        assert!(matches!(cli.command, Some(Command::Vault(VaultCommand::Add(_)))));
        assert!(Cli::try_parse_from(["cliproxy-server", "vault", "add", "--token", "x"]).is_err());
    }
}
