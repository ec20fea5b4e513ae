//! The subcommands. Each turns its failures into a [`Failure`] carrying the exit code, so
//! `main` stays a dispatcher.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{Context, anyhow};
use base64::Engine;
use cliproxy_core::{Secret, format_utc_plain};
use cliproxy_gateway::{BaseUrl, Gateway, Server};
use cliproxy_netguard::{StateChange, StateStore};
use cliproxy_vault::{Credential, CredentialStore, Protection};
use ring::rand::{SecureRandom, SystemRandom};
use slog::{Logger, info};

use crate::cli::{
    BansCommand, Cli, Command, ConfigArg, DemoArgs, HealthcheckArgs, SandboxCommand, VaultAddArgs,
    VaultCommand,
};
use crate::config::Config;
use crate::config_load::{load, source};
use crate::failure::{EXIT_CONFIG, EXIT_RUNTIME, Failure};
use crate::logging;
use crate::state_open::{Missing, open_state};

/// Runs the command line.
pub(crate) fn run(cli: Cli) -> Result<(), Failure> {
    // Before anything is read: the keys come from `CLIPROXY_*` variables and the vault, and
    // once they are in this process no other process of its user may read them through
    // /proc/PID/environ or /proc/PID/mem, nor find them in a core file. Every subcommand may
    // hold one (`vault add` reads a token, `keygen` makes keys); `serve` and `demo` undo it
    // if `sandbox.protect_memory` is off.
    let early = cliproxy_container::sandbox::protect_memory().map_err(sandbox_failure)?;
    match cli.command {
        None | Some(Command::Serve) => serve(&cli.config, early),
        Some(Command::Demo(args)) => demo(&args, early),
        Some(Command::DemoCleanup { dir }) => demo_cleanup(&dir),
        Some(Command::Keygen) => keygen(),
        Some(Command::Check) => {
            let config = load(&cli.config)?;
            let file = cli
                .config
                .config
                .clone()
                .or_else(|| Some(PathBuf::from("config.yaml")).filter(|p| p.is_file()));
            if crate::check::run(&config, file.as_deref()) {
                Ok(())
            } else {
                Err(anyhow!("the pre-deployment check failed (see the FAIL rows)").into())
            }
        }
        Some(Command::Fingerprint) => fingerprint(&cli.config),
        Some(Command::Healthcheck(args)) => healthcheck(&cli.config, &args),
        Some(Command::Sandbox(SandboxCommand::Profile { format: _ })) => {
            print!("{}", cliproxy_container::profile::docker());
            Ok(())
        }
        Some(Command::Sandbox(SandboxCommand::Posture)) => {
            let posture = cliproxy_container::posture::Posture::read()
                .context("cannot read /proc/self/status")?;
            println!("{posture}");
            Ok(())
        }
        Some(Command::Vault(VaultCommand::Add(args))) => vault_add(&cli.config, &args),
        Some(Command::Vault(VaultCommand::List)) => vault_list(&cli.config),
        Some(Command::Vault(VaultCommand::Migrate)) => vault_reencrypt(&cli.config, false),
        Some(Command::Vault(VaultCommand::RotateKey)) => vault_reencrypt(&cli.config, true),
        Some(Command::Audit(command)) => crate::audit_cmd::run(&command, &cli.config),
        Some(Command::Bans(BansCommand::List)) => bans_list(&cli.config),
        Some(Command::Bans(BansCommand::Lift { ip })) => bans_lift(&cli.config, ip),
        Some(Command::Usage(args)) => crate::usage_cmd::run(&cli.config, &args),
        Some(Command::Keys(command)) => crate::keys_cmd::run(&command, &cli.config),
    }
}

/// The async runtime. With one CPU to run on (a container's cpuset, `taskset`), a
/// work-stealing scheduler has no other worker to balance with and only costs bookkeeping
/// (measured: a third more requests per second on one CPU with the current-thread one);
/// `available_parallelism` follows the CPU affinity and, where readable, the cgroup quota.
fn runtime(log: &Logger) -> Result<tokio::runtime::Runtime, Failure> {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let (mut builder, scheduler) = if cpus == 1 {
        (tokio::runtime::Builder::new_current_thread(), "current-thread")
    } else {
        (tokio::runtime::Builder::new_multi_thread(), "multi-thread")
    };
    let runtime = builder
        .enable_all()
        .thread_name("cliproxy")
        .build()
        .context("cannot start the async runtime")?;
    info!(log, "async runtime"; "scheduler" => scheduler, "cpus" => cpus);
    Ok(runtime)
}

fn serve(
    config_arg: &ConfigArg,
    early: cliproxy_container::sandbox::EarlyProtection,
) -> Result<(), Failure> {
    let mut config = load(config_arg)?;
    // The instance's name is settled before the sandbox hides the host's name from it.
    config.server.instance_id = Some(config.server.instance_id());
    // The sandbox goes on first, while this is the process's only thread: landlock restricts
    // only the calling thread and the threads it starts, so the logger's thread, the gateway's
    // writer threads and the runtime's workers all start inside it.
    let paths = Gateway::sandbox_paths(&config.gateway(), config_arg.config.as_deref())
        .map_err(anyhow::Error::from)?;
    let applied = sandbox(&config, &paths, early)?;
    let (log, _flush) = logging::init(&config.logging);
    let log = log.new(slog::o!("instance" => config.server.instance_id()));
    info!(log, "starting"; "version" => env!("CARGO_PKG_VERSION"));
    report_sandbox(&config, applied, &log);
    // `check` warns about a private key every local user can read; a gateway started without
    // running `check` says the same in its log, once, before it listens.
    if config.server.tls.enabled
        && let Some(key_file) = &config.server.tls.key_file
        && let Some(fix) = crate::check::tls_key_readable_by_all(key_file)
    {
        slog::warn!(log, "the TLS private key is readable by every user of this machine";
            "key_file" => key_file.display().to_string(), "fix" => fix);
    }
    let result = (|| {
        let gateway = crate::compose::gateway(&config, &log)?;
        gateway.set_sandbox_report(sandbox_report(&config, applied));
        // SIGHUP and POST /v0/management/config/reload read the same source again.
        gateway.set_config_loader(Box::new(source(config_arg)));
        runtime(&log)?.block_on(async {
            let server = Server::bind(&config.server, gateway, log.clone()).await?;
            server.run(shutdown_signal(log.clone())).await?;
            Ok::<_, Failure>(())
        })
    })();
    if let Err(failure) = &result {
        slog::error!(log, "stopped"; "error" => format!("{:#}", failure.error));
    } else {
        info!(log, "stopped");
    }
    result
}

/// Applies `sandbox:` to this process (see `cliproxy-container`): read access to `paths`
/// plus what any process needs (resolver files, /proc/self), read-write to its writable
/// directories. Call it before any thread starts. `early` is undone if
/// `sandbox.protect_memory` is off.
fn sandbox(
    config: &Config,
    paths: &cliproxy_container::sandbox::Paths,
    early: cliproxy_container::sandbox::EarlyProtection,
) -> Result<cliproxy_container::sandbox::Applied, Failure> {
    let applied = config.sandbox.build().apply(paths).map_err(sandbox_failure)?;
    if !config.sandbox.protect_memory {
        early.undo().map_err(sandbox_failure)?;
    }
    Ok(applied)
}

/// A sandbox error as the operator reads it: the library says what failed, this names the
/// `sandbox:` key that governs it. Running as root is a configuration error (exit 78), the
/// others are runtime failures.
fn sandbox_failure(error: cliproxy_container::Error) -> Failure {
    use cliproxy_container::Error;
    let key = match &error {
        Error::Root => {
            return Failure::config(anyhow!(
                "{error}, or set sandbox.require_non_root: false (CLIPROXY_SANDBOX__REQUIRE_NON_ROOT=false) if you really must"
            ));
        }
        Error::NoNewPrivs(_) => "sandbox.no_new_privs",
        Error::ProtectMemory { .. } => "sandbox.protect_memory",
        Error::Seccomp(_) | Error::UnsupportedArch => "sandbox.seccomp",
        Error::Landlock(_) | Error::LandlockPath { .. } | Error::ThreadsRunning(_) => {
            "sandbox.landlock"
        }
        // Reading the posture, and any variant added later: no one key governs them.
        _ => return anyhow::Error::from(error).into(),
    };
    anyhow!("{error} ({key})").into()
}

/// The sandbox as `/v0/management/status` shows it.
fn sandbox_report(
    config: &Config,
    applied: cliproxy_container::sandbox::Applied,
) -> serde_json::Value {
    serde_json::json!({
        "seccomp": applied.seccomp,
        "no_new_privs": applied.no_new_privs,
        "landlock": applied.landlock.to_string(),
        "protect_memory": applied.protect_memory,
        "require_non_root": config.sandbox.require_non_root,
    })
}

/// Logs what the sandbox put in place and the posture read back, with a warning for each
/// layer that is not enforced.
fn report_sandbox(config: &Config, applied: cliproxy_container::sandbox::Applied, log: &Logger) {
    use cliproxy_container::sandbox::Landlock;
    let posture = config
        .sandbox
        .build()
        .posture()
        .map(|p| p.to_string())
        .unwrap_or_else(|e| format!("unreadable: {e}"));
    info!(log, "sandbox"; "seccomp" => applied.seccomp, "no_new_privs" => applied.no_new_privs,
        "landlock" => applied.landlock.to_string(), "protect_memory" => applied.protect_memory,
        "posture" => posture);
    if config.sandbox.landlock && applied.landlock == Landlock::Unsupported {
        slog::warn!(
            log,
            "landlock is not supported by this kernel: file system access is not restricted (sandbox.landlock)"
        );
    }
    if !applied.seccomp {
        slog::warn!(log, "the seccomp filter is off (sandbox.seccomp): every syscall is allowed");
    }
    if !applied.protect_memory {
        slog::warn!(
            log,
            "memory protection is off (sandbox.protect_memory): other processes of this user can read this process's environment and memory, keys included, and a crash may write a core file"
        );
    }
}

/// Completes on SIGTERM or SIGINT. The handlers are installed when this is called (inside the
/// runtime), not when the future is first polled: the demo calls it before it prints its
/// banner, so a signal sent as soon as the banner is out stops it cleanly (exit 0, in-flight
/// requests finished) instead of killing it.
fn shutdown_signal(log: Logger) -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let signals = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
    async move {
        let name = match signals {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            },
            _ => {
                // Without signal handlers the process can still be stopped by SIGKILL; say so.
                slog::warn!(
                    log,
                    "cannot install signal handlers; graceful shutdown is unavailable"
                );
                std::future::pending::<&str>().await
            }
        };
        info!(log, "signal received"; "signal" => name);
    }
}

fn demo(
    args: &DemoArgs,
    early: cliproxy_container::sandbox::EarlyProtection,
) -> Result<(), Failure> {
    let rng = SystemRandom::new();
    let client_key = format!("cpk-{}", hex(&random_bytes::<24>(&rng)?));
    let management_key = format!("cpm-{}", hex(&random_bytes::<24>(&rng)?));
    let encryption_key = hex(&random_bytes::<32>(&rng)?);
    let dir = std::env::temp_dir().join(format!(
        "cliproxy-demo-{}-{}",
        std::process::id(),
        hex(&random_bytes::<4>(&rng)?)
    ));
    // The demo's directory holds its vault, audit log and (with --tls) its key: 0700 from
    // the start, created here and nowhere else (a name that exists already is refused, so a
    // directory planted under the predictable prefix is never used).
    cliproxy_core::private_fs::create_new_dir(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    // Once sandboxed, the demo may write beneath its directory but not in the temporary
    // directory around it, so it cannot remove the directory itself: a helper started now,
    // outside the sandbox, does that when the demo exits.
    let cleaner = DemoCleaner::start(&dir);
    let auths = dir.join("auths");
    let audit_file = dir.join("audit").join("audit.log");
    let certificate =
        if args.tls { Some(crate::demo_tls::create(&dir.join("tls"))?) } else { None };
    let tls = match &certificate {
        Some(c) => format!(
            "  tls: {{enabled: true, cert_file: {:?}, key_file: {:?}}},\n",
            c.cert_file.display().to_string(),
            c.key_file.display().to_string()
        ),
        None => String::new(),
    };
    let yaml = format!(
        "server: {{host: 127.0.0.1, port: {port}, shutdown_timeout: 5s,\n{tls}  \
           security: {{ip_allowlist: {{enabled: true, allowed_ips: [127.0.0.0/8, \"::1\"], deny_all: true}},\n    \
             ip_denylist: {{enabled: true, denied_ips: [192.0.2.0/24]}},\n    \
             rate_limiting: {{enabled: true, requests_per_second: 50, burst: 100}},\n    \
             request_validation: {{enabled: true, max_tokens: 128000}}}},\n  \
           rate_limit: {{enabled: true, requests_per_second: 500, burst: 1000}}}}\n\
         auth: {{api_keys: [{{name: demo, key: \"{client_key}\", \
           rate_limit: {{requests_per_minute: 600, tokens_per_minute: 1000000}}, \
           quota: {{limit: 100000000, reset: daily}}}}], dir: {auths:?}, \
         encryption: {{enabled: true, key: \"{encryption_key}\"}}}}\n\
         management: {{secret_key: \"{management_key}\"}}\n\
         providers: {{demo: {{type: mock, models: [\"mock-*\"], latency: {latency:?}, \
           rate_limit: {{requests_per_minute: 6000}}, quota: {{limit: 1000000000, reset: monthly}}}}}}\n\
         pricing: {{models: {{\"mock-*\": {{input: 1, output: 2}}}}}}\n\
         logging: {{level: info, format: text, audit: {{enabled: true, file: {audit:?}}}}}\n\
         metrics: {{enabled: true, host: 127.0.0.1, port: {metrics_port}}}\n\
         alerts: [{{name: \"Rate limit violations\", condition: \"rate_limit_violations > 50\", duration: 1m, action: block_ip, block_for: 10m}},\n  \
           {{name: \"High auth failure rate\", condition: \"auth_failures > 100\", duration: 5m, action: notify_admin}}]\n\
         sandbox: {{require_non_root: false}}\n",
        port = args.port,
        latency = args.latency,
        auths = auths.display().to_string(),
        audit = audit_file.display().to_string(),
        metrics_port = args.metrics_port,
    );
    let mut config = Config::from_yaml(&yaml).map_err(Failure::config)?;
    config.server.instance_id = Some(config.server.instance_id());
    // As in `serve`: the sandbox first, on the only thread. The demo dir is removed at the
    // end, so it is writable as a whole.
    let mut paths = Gateway::sandbox_paths(&config.gateway(), None).map_err(anyhow::Error::from)?;
    paths.read_write.push(dir.clone());
    let applied = sandbox(&config, &paths, early)?;
    let (log, _flush) = logging::init(&config.logging);
    let log = log.new(slog::o!("instance" => config.server.instance_id()));
    report_sandbox(&config, applied, &log);
    let cleaner = match cleaner {
        Ok(cleaner) => Some(cleaner),
        Err(error) => {
            slog::warn!(log, "the demo's directory will be left behind when it stops";
                "dir" => dir.display().to_string(), "error" => format!("{error:#}"));
            None
        }
    };
    let result = (|| {
        let gateway = crate::compose::gateway(&config, &log)?;
        gateway.set_sandbox_report(sandbox_report(&config, applied));
        runtime(&log)?.block_on(async {
            let server = Server::bind(&config.server, gateway, log.clone()).await.map_err(|e| {
                anyhow!("{e}; is another demo running? pick another port with `demo --port 0`")
            })?;
            let (base, curl) = match &certificate {
                Some(c) => (
                    format!("https://{}", server.local_addr()?),
                    format!("curl --cacert {}", c.ca_file.display()),
                ),
                None => (format!("http://{}", server.local_addr()?), "curl".to_owned()),
            };
            let ops = Ops {
                audit_file: &audit_file,
                metrics: server
                    .metrics_addr()
                    .map(|addr| format!("http://{addr}/metrics"))
                    .unwrap_or_default(),
            };
            let shutdown = shutdown_signal(log.clone());
            print_demo_banner(&base, &curl, &client_key, &management_key, &ops);
            server.run(shutdown).await?;
            Ok::<_, Failure>(())
        })
    })();
    // What the sandbox lets it remove (everything beneath the directory), then the helper
    // removes the directory itself; the demo exits once the helper has.
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(cleaner) = cleaner {
        cleaner.finish();
    }
    result
}

/// The `demo-cleanup` helper of one demo: its standard input is the demo's signal to
/// remove the directory, its standard output says when it has.
struct DemoCleaner {
    child: std::process::Child,
}

impl DemoCleaner {
    fn start(dir: &std::path::Path) -> anyhow::Result<Self> {
        use std::os::unix::process::CommandExt;
        use std::process::{Command, Stdio};
        let exe = std::env::current_exe().context("cannot find this program's path")?;
        let child = Command::new(exe)
            .arg("demo-cleanup")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Its own process group: the terminal's Ctrl-C reaches the demo, not the helper,
            // which must outlive the demo.
            .process_group(0)
            .spawn()
            .context("cannot start the demo-cleanup helper")?;
        Ok(Self { child })
    }

    /// Closes the helper's input (it removes the directory) and waits until it has exited:
    /// its output reaches end of file when it exits. Reading a pipe is what the sandbox
    /// allows; waiting for a child process is not (the helper is reaped once the demo
    /// has exited). Should the demo die without coming here, its end of the pipe closes
    /// all the same and the helper removes the directory, contents included.
    fn finish(mut self) {
        use std::io::Read;
        drop(self.child.stdin.take());
        if let Some(mut output) = self.child.stdout.take() {
            let _ = output.read_to_end(&mut Vec::new());
        }
    }
}

/// The `demo-cleanup` helper: waits for end of file on its standard input, then removes
/// `dir`, which must be a `cliproxy-demo-*` directory directly in the temporary directory
/// (the helper is hidden, but it removes nothing else if called by hand).
fn demo_cleanup(dir: &std::path::Path) -> Result<(), Failure> {
    use std::io::Read;
    let in_temp = dir.parent() == Some(std::env::temp_dir().as_path());
    let named = dir
        .file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.starts_with("cliproxy-demo-"));
    if !in_temp || !named {
        return Err(anyhow!(
            "{} is not a demo directory (cliproxy-demo-* in {})",
            dir.display(),
            std::env::temp_dir().display()
        )
        .into());
    }
    // Reads until the demo closes its end (or exits); whatever it sends is ignored.
    let _ = std::io::stdin().lock().read_to_end(&mut Vec::new());
    match std::fs::remove_dir_all(dir) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(anyhow::Error::new(error)
                .context(format!("cannot remove {}", dir.display()))
                .into())
        }
        _ => Ok(()),
    }
}

/// Where the demo's audit log and metrics are.
struct Ops<'a> {
    audit_file: &'a std::path::Path,
    metrics: String,
}

fn print_demo_banner(base: &str, curl: &str, key: &str, management_key: &str, ops: &Ops<'_>) {
    use std::io::Write;
    let audit = ops.audit_file.display();
    let metrics = &ops.metrics;
    let text = format!(
        r#"
cliproxy demo is running: the whole gateway on loopback, with the built-in mock provider.
The client key below is printed once and forgotten when the demo stops.

  base url:       {base}
  client key:     {key}
  management key: {management_key}

OpenAI format (streaming: add "stream": true):
  {curl} -s {base}/v1/chat/completions -H "Authorization: Bearer {key}" \
    -H 'content-type: application/json' \
    -d '{{"model": "mock-1", "messages": [{{"role": "user", "content": "Hello"}}]}}'

Anthropic format, streamed:
  {curl} -sN {base}/v1/messages -H "x-api-key: {key}" -H 'anthropic-version: 2023-06-01' \
    -H 'content-type: application/json' \
    -d '{{"model": "mock-1", "max_tokens": 64, "stream": true, "messages": [{{"role": "user", "content": "Hello"}}]}}'

Gemini format:
  {curl} -s '{base}/v1beta/models/mock-1:generateContent' -H "x-goog-api-key: {key}" \
    -H 'content-type: application/json' -d '{{"contents": [{{"parts": [{{"text": "Hello"}}]}}]}}'

SDKs: OpenAI(base_url="{base}/v1", api_key=KEY), Anthropic(base_url="{base}", api_key=KEY).

Management API (stored credentials, never their secrets):
  {curl} -s {base}/v0/management/auths -H "X-Management-Key: {management_key}"

A client key of its own with a model list and a budget of one cent a day (the new key is in
the answer, shown once; list them with GET, revoke with DELETE /v0/management/client-keys/NAME;
the demo prices its mock models at a made-up $1/$2 per 1M input/output tokens, so that costs
and budgets show; requests, tokens and cost by key: GET /v0/management/usage):
  {curl} -s -X POST {base}/v0/management/client-keys -H "X-Management-Key: {management_key}" \
    -H 'content-type: application/json' \
    -d '{{"name": "team-a", "models": ["mock-*"], "budget": {{"usd": "0.01", "period": "daily"}}}}'

Network guard: loopback-only allowlist, per-IP (50/s, burst 100) and global (500/s) rate limits,
per-key and per-provider requests/tokens per minute and quotas, request validation (max_tokens
128000: Claude Code asks for 32000 or 64000), security headers; 429 answers carry Retry-After
and X-RateLimit-*. `demo --tls` serves HTTPS with a throwaway CA (its file is in the curl
commands). Maintenance mode and the runtime denylist:
  {curl} -s -X PUT {base}/v0/management/maintenance -H "X-Management-Key: {management_key}" \
    -H 'content-type: application/json' -d '{{"enabled": true, "message": "back soon"}}'
  {curl} -s {base}/v0/management/security/ip-denylist -H "X-Management-Key: {management_key}" \
    -H 'content-type: application/json' -d '{{"ip": "203.0.113.0/24", "reason": "abuse", "ttl": "1h"}}'

Audit log (hash-chained JSON lines; removed with the demo's directory when it stops):
  tail -f {audit}
  cliproxy-server audit verify {audit}
Prometheus metrics:
  curl -s {metrics}
Alert rules: 51 rate-limit refusals within a minute from one address put it on the runtime
denylist for 10 minutes; more than 100 failed key checks within 5 minutes notify the admin.
Press Ctrl-C to stop.
"#
    );
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

fn keygen() -> Result<(), Failure> {
    let rng = SystemRandom::new();
    let encryption = base64::engine::general_purpose::STANDARD.encode(random_bytes::<32>(&rng)?);
    println!("client key      (auth.api_keys):          cpk-{}", hex(&random_bytes::<24>(&rng)?));
    println!("management key  (management.secret_key):  cpm-{}", hex(&random_bytes::<24>(&rng)?));
    println!("encryption key  (auth.encryption.key):    {encryption}");
    println!();
    println!("Keep them in your secret store and pass them in as environment variables, e.g.");
    println!(
        "auth.api_keys: [\"${{CLIPROXY_CLIENT_KEY}}\"]; never write them into the config file."
    );
    Ok(())
}

fn vault_add(config: &ConfigArg, args: &VaultAddArgs) -> Result<(), Failure> {
    let config = load(config)?;
    if !config.providers.0.contains_key(&args.provider) {
        let known: Vec<&str> = config.providers.0.keys().map(String::as_str).collect();
        return Err(Failure::config(anyhow!(
            "provider `{}` is not configured under `providers` (configured: {})",
            args.provider,
            if known.is_empty() { "none".to_owned() } else { known.join(", ") }
        )));
    }
    if let Some(url) = &args.base_url {
        BaseUrl::parse(url).map_err(|e| anyhow!("--base-url: {e}"))?;
    }
    let oauth = args.kind == "oauth";
    let (token_url, client_id, expires_in) =
        match (&args.token_url, &args.client_id, &args.expires_in) {
            (Some(url), Some(id), Some(expires)) if oauth => {
                let expires = humantime::parse_duration(expires)
                    .map_err(|e| anyhow!("--expires-in `{expires}`: {e}; write it like 55m"))?;
                (url.clone(), id.clone(), expires)
            }
            (None, None, None) if !oauth => Default::default(),
            _ if oauth => {
                return Err(anyhow!(
                    "--type oauth needs --token-url, --client-id and --expires-in"
                )
                .into());
            }
            _ => {
                return Err(anyhow!(
                    "--token-url, --client-id and --expires-in are for --type oauth"
                )
                .into());
            }
        };
    // The vault is locked before the token is asked for: while a gateway runs on the same
    // `auth.dir` the command is refused at once, before the operator pipes a secret into it.
    // The lock is held until the credential is written.
    let store = cliproxy_server::compose::open_vault(&config.gateway(), None, true)?;
    let mut stdin = std::io::stdin().lock();
    let mut read_secret = |what: &str| -> Result<Secret, Failure> {
        let mut line = String::new();
        stdin
            .read_line(&mut line)
            .with_context(|| format!("cannot read the {what} from standard input"))?;
        let secret = Secret::from(line.trim().to_owned());
        zeroize::Zeroize::zeroize(&mut line);
        if secret.is_empty() {
            return Err(anyhow!("no {what} on standard input; pipe it in, e.g. `printenv OPENAI_API_KEY | cliproxy-server vault add --provider openai` (for --type oauth: the access token, then the refresh token on the next line)").into());
        }
        Ok(secret)
    };
    let mut credential = if oauth {
        let access_token = read_secret("access token")?;
        let refresh_token = read_secret("refresh token")?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let tokens = cliproxy_vault::OAuthTokens {
            access_token,
            refresh_token,
            expires_at: now.saturating_add(expires_in.as_secs()),
            token_url,
            client_id,
        };
        Credential::new_oauth(&args.provider, tokens).map_err(vault_failure)?
    } else {
        Credential::new_api_key(&args.provider, read_secret("token")?).map_err(vault_failure)?
    };
    if let Some(id) = &args.id {
        credential = credential.with_id(id).map_err(vault_failure)?;
    }
    credential.base_url = args.base_url.clone();
    credential.label = args.label.clone();
    store.put(&credential).map_err(vault_failure)?;
    report_notices(store.as_ref());
    println!(
        "stored credential `{}` for provider `{}` in {}",
        credential.id,
        credential.provider,
        store.location().display()
    );
    Ok(())
}

fn vault_list(config: &ConfigArg) -> Result<(), Failure> {
    let config = load(config)?;
    // A reader: no lock, so that it works beside a running gateway (every write is an atomic
    // rename, so each file is read whole, old or new).
    let store = cliproxy_server::compose::open_vault(&config.gateway(), None, false)?;
    let credentials = store.list().map_err(vault_failure)?;
    report_notices(store.as_ref());
    if credentials.is_empty() {
        println!("no credentials in {}", store.location().display());
        return Ok(());
    }
    println!(
        "{:<32} {:<12} {:<8} {:<20} {:<20} {:<17} BASE URL / LABEL",
        "ID", "PROVIDER", "TYPE", "CREATED (UTC)", "LAST USED (UTC)", "STORED"
    );
    for meta in credentials {
        let note = [meta.base_url.clone(), meta.label.clone()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" / ");
        let stored = match &meta.stored {
            Protection::Plaintext => "plaintext".to_owned(),
            Protection::Encrypted(key_id) => format!("key {key_id}"),
        };
        println!(
            "{:<32} {:<12} {:<8} {:<20} {:<20} {:<17} {}",
            meta.id,
            meta.provider,
            meta.kind,
            format_utc_plain(meta.created_at),
            meta.last_used.map_or_else(|| "never".to_owned(), format_utc_plain),
            stored,
            note
        );
    }
    Ok(())
}

fn fingerprint(config: &ConfigArg) -> Result<(), Failure> {
    let config = load(config)?;
    // No lock unless the fingerprint must be written (the first time): the store takes it
    // for that write only, so this works beside a running gateway.
    let store = cliproxy_server::compose::open_vault(&config.gateway(), None, false)?;
    let fingerprint = store.device_fingerprint().map_err(vault_failure)?;
    report_notices(store.as_ref());
    println!("{fingerprint}");
    Ok(())
}

fn healthcheck(config: &ConfigArg, args: &HealthcheckArgs) -> Result<(), Failure> {
    let addr = match args.addr {
        Some(addr) => addr,
        None => {
            let config = load(config)?;
            std::net::SocketAddr::new(config.server.host, config.server.port)
        }
    };
    // A listener on every address is probed on loopback.
    let addr = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => {
            std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        ip if ip.is_unspecified() => {
            std::net::SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    };
    // One probe: one thread is plenty.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(cliproxy_gateway::probe_health(addr, std::time::Duration::from_secs(3)))
        .map_err(|e| anyhow!("unhealthy: {e}"))?;
    println!("healthy: {addr}");
    Ok(())
}

fn vault_reencrypt(config: &ConfigArg, rotate: bool) -> Result<(), Failure> {
    let config = load(config)?;
    // Exclusive from before the first read to after the last write: a gateway running on the
    // old key would write new files under it and answer 500 for the rewritten ones, and any
    // other writer's change would be lost or undone.
    let store = cliproxy_server::compose::open_vault(&config.gateway(), None, true)?;
    // Only `migrate` takes in plaintext files that `auth.encryption.require_encrypted`
    // refuses: it is the explicit way in, and it names each file it took in.
    let report = if rotate { store.reencrypt() } else { store.migrate() }.map_err(vault_failure)?;
    report_notices(store.as_ref());
    let (done, what) = if rotate {
        (&report.from_previous_key, "re-encrypted under the current key")
    } else {
        (&report.from_plaintext, "encrypted")
    };
    // Either command also finishes the other's work: a rotation encrypts plaintext files too.
    let other = if rotate { &report.from_plaintext } else { &report.from_previous_key };
    println!(
        "{} credential(s) {what}, {} also rewritten, {} already under the current key ({})",
        done.len(),
        other.len(),
        report.unchanged,
        store.location().display()
    );
    for id in done.iter().chain(other) {
        println!("  {id}");
    }
    // The audit checkpoint signing key is a bookkeeping file sealed like the credentials.
    if config.auth.reseal_audit_signing_key().map_err(vault_failure)? {
        println!("  {} (the audit checkpoint signing key)", cliproxy_vault::AUDIT_SIGNING_KEY_FILE);
    }
    Ok(())
}

/// The bans in `store` that have not ended.
fn bans_in_force(store: &dyn StateStore) -> Result<Vec<cliproxy_netguard::Ban>, Failure> {
    let now = unix_now();
    let mut bans = store.load_bans().map_err(|e| anyhow!(cliproxy_gateway::netguard_error(&e)))?;
    bans.retain(|ban| ban.until > now);
    Ok(bans)
}

fn bans_list(config: &ConfigArg) -> Result<(), Failure> {
    let Some(store) = open_state(&load(config)?, Missing::Skip)? else {
        println!("no management bans: no state store yet");
        return Ok(());
    };
    let bans = bans_in_force(&*store)?;
    if bans.is_empty() {
        println!("no management bans in force ({})", store.describe());
    } else {
        let now = unix_now();
        println!("{:<40} {:<20} LEFT", "IP", "UNTIL (UTC)");
        for ban in &bans {
            let left = std::time::Duration::from_secs(ban.until.saturating_sub(now));
            println!(
                "{:<40} {:<20} {}",
                ban.ip,
                format_utc_plain(ban.until),
                humantime::format_duration(left)
            );
        }
    }
    store.flush().map_err(|e| anyhow!(cliproxy_gateway::netguard_error(&e)))?;
    Ok(())
}

fn bans_lift(config: &ConfigArg, ip: std::net::IpAddr) -> Result<(), Failure> {
    let ip = cliproxy_netguard::canonical_ip(ip);
    let not_banned = || Failure::from(anyhow!("{ip} is not banned from the management API"));
    let store = open_state(&load(config)?, Missing::Skip)?.ok_or_else(not_banned)?;
    let Some(ip) = covering_ban(&bans_in_force(&*store)?, ip) else {
        return Err(not_banned());
    };
    store.submit(StateChange::Unban(ip));
    // Closing writes the change and says whether it reached the disk.
    store.flush().map_err(|e| anyhow!(cliproxy_gateway::netguard_error(&e)))?;
    println!(
        "lifted the management API ban of {ip} ({}); a gateway that is running keeps it until it restarts",
        store.describe()
    );
    Ok(())
}

/// The stored ban that covers `ip`: its own, or for IPv6 its /64's (the gateway bans an IPv6
/// client per /64 and stores the network's first address), so that the address the operator
/// knows lifts it.
fn covering_ban(bans: &[cliproxy_netguard::Ban], ip: std::net::IpAddr) -> Option<std::net::IpAddr> {
    let network = match ip {
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            std::net::IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    };
    bans.iter().map(|ban| ban.ip).find(|stored| *stored == ip || *stored == network)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Tells the operator on stderr what the vault fixed on its own (loose permissions).
fn report_notices(store: &dyn CredentialStore) {
    for notice in store.take_notices() {
        eprintln!("notice: {}", cliproxy_gateway::vault_notice_message(&notice));
    }
}

/// A vault error as the operator reads it: naming the `auth.*` config key and the command that
/// fixes it (the vault's own text speaks of the library). A problem with the configured keys
/// ends the process with the configuration exit code.
fn vault_failure(error: cliproxy_vault::Error) -> Failure {
    let exit_code = if error.is_config() { EXIT_CONFIG } else { EXIT_RUNTIME };
    Failure { error: anyhow!(cliproxy_gateway::vault_error_message(&error)), exit_code }
}

fn random_bytes<const N: usize>(rng: &SystemRandom) -> Result<[u8; N], Failure> {
    let mut bytes = [0u8; N];
    rng.fill(&mut bytes).map_err(|_| anyhow!("the system random number generator failed"))?;
    Ok(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_ban_is_lifted_by_any_address_of_its_64() {
        let ban = |ip: &str| cliproxy_netguard::Ban { ip: ip.parse().unwrap(), until: 1 };
        let bans = [ban("10.0.0.1"), ban("2001:db8::")];
        let lift = |ip: &str| covering_ban(&bans, ip.parse().unwrap()).map(|ip| ip.to_string());
        assert_eq!(lift("2001:db8::1234").as_deref(), Some("2001:db8::"));
        assert_eq!(lift("2001:db8::").as_deref(), Some("2001:db8::"));
        assert_eq!(lift("2001:db8:0:1::1"), None);
        assert_eq!(lift("10.0.0.1").as_deref(), Some("10.0.0.1"));
        assert_eq!(lift("10.0.0.2"), None);
    }

    /// Every sandbox error reaches the operator with the key that governs it, and running as
    /// root is a configuration error.
    #[test]
    fn sandbox_errors_name_their_key() {
        use cliproxy_container::Error;
        let io = || std::io::Error::from_raw_os_error(libc::EPERM);
        let cases = [
            (Error::Root, "sandbox.require_non_root", EXIT_CONFIG),
            (Error::NoNewPrivs(io()), "sandbox.no_new_privs", EXIT_RUNTIME),
            (
                Error::ProtectMemory { what: "cannot set PR_SET_DUMPABLE", source: io() },
                "sandbox.protect_memory",
                EXIT_RUNTIME,
            ),
            (Error::Seccomp("no filter".into()), "sandbox.seccomp", EXIT_RUNTIME),
            (Error::UnsupportedArch, "sandbox.seccomp", EXIT_RUNTIME),
            (Error::Landlock("no ruleset".into()), "sandbox.landlock", EXIT_RUNTIME),
            (
                Error::LandlockPath { path: "/nowhere".into(), source: io() },
                "sandbox.landlock",
                EXIT_RUNTIME,
            ),
            (Error::ThreadsRunning(3), "sandbox.landlock", EXIT_RUNTIME),
        ];
        for (error, key, exit_code) in cases {
            // The library's own text names no key of this program.
            let library = error.to_string();
            assert!(!library.contains("sandbox."), "{library}");
            let failure = sandbox_failure(error);
            let shown = format!("{:#}", failure.error);
            assert!(shown.contains(key) && shown.contains(&library), "{key}: {shown}");
            assert_eq!(failure.exit_code, exit_code, "{shown}");
        }
        let root = format!("{:#}", sandbox_failure(Error::Root).error);
        assert!(root.starts_with("refusing to run as root"), "{root}");
        assert!(root.contains("CLIPROXY_SANDBOX__REQUIRE_NON_ROOT"), "{root}");
    }
}
