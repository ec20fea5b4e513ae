//! The scenario runner behind `cargo xtask bench`: starts the mock, the gateway and the load
//! generator as separate processes (pinned with `taskset`: the gateway on CPU 0, the mock and
//! the load generator on CPU 1), runs each scenario direct to the mock and through the
//! gateway, and writes `report.md` and `report.json`. Scenario 9 sets the gateway on Redis
//! against the gateway on SQLite, with its own `redis-server` on the gateway's CPU.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::Value;

use crate::limiter::{self, LimiterFigures};
use crate::load::{self, LoadReport, Mode, Target};
use crate::procs::Proc;
use crate::redis::{Redis, RedisSample};
use crate::report::{Budget, Judged, Report, Row, Unit};
use crate::shape::Shape;

/// The CPU of the gateway.
const GATEWAY_CPU: u8 = 0;
/// The CPU of the mock and the load generator.
const CLIENT_CPU: u8 = 1;
/// The CPU of scenario 9's `redis-server`: the gateways' (see [`Bench::redis_backend`]).
const REDIS_CPU: u8 = GATEWAY_CPU;
/// How long a process may take to print its `listening` line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What `cliproxy-bench run` is asked to do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The release `cliproxy-server` binary.
    pub server: PathBuf,
    /// Where `report.md`, `report.json` and the work directory go (`target/bench`).
    pub out: PathBuf,
    /// Short durations (a smoke run: figures indicative only).
    pub quick: bool,
    /// The scenarios to run (1..=9); empty: all.
    pub scenarios: Vec<u8>,
    /// The output of `cargo bench -p cliproxy-netguard --bench limiter` (scenario 6).
    pub limiter_output: Option<PathBuf>,
    /// Pin with `taskset` (when it exists and there are two CPUs or more).
    pub pin: bool,
    /// The command line that reproduces the run, printed in the report.
    pub command: String,
}

/// Durations and sizes of the scenarios.
#[derive(Debug, Clone, Copy)]
struct Plan {
    rate: u32,
    rate_for: Duration,
    closed_connections: usize,
    /// Scenario 2: rounds of one direct run and one gateway run, and how long each run lasts.
    closed_rounds: usize,
    closed_for: Duration,
    /// Scenario 5: rounds over the three gateways, and how long each run of a round lasts.
    layer_rounds: usize,
    layer_for: Duration,
    streams: usize,
    stream_rounds: u32,
    stream_events: u32,
    stream_interval: Duration,
    open_streams: usize,
    open_events: u32,
    open_interval: Duration,
    cold_starts: usize,
    /// Scenario 8: rounds of one untranslated and one translated closed-loop run, and how
    /// long each run lasts.
    translation_rounds: usize,
    translation_for: Duration,
    /// Scenario 8's streams: rounds of one untranslated and one translated run, each of
    /// `streams` workers running `stream_runs` streams of `events` events `interval` apart.
    translation_stream_rounds: usize,
    translation_streams: usize,
    translation_stream_runs: u32,
    translation_events: u32,
    translation_interval: Duration,
    /// Scenario 9's open loop: rounds of one run on SQLite and one on Redis, each this long.
    redis_rate_rounds: usize,
    redis_rate_for: Duration,
    /// Scenario 9's closed loop: rounds of one run on SQLite and one on Redis.
    redis_closed_rounds: usize,
    /// Scenario 9's scaling: rounds of one closed-loop run on 1, 2 and 3 instances.
    scale_rounds: usize,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                rate: 500,
                rate_for: Duration::from_secs(1),
                closed_connections: 64,
                closed_rounds: 1,
                closed_for: Duration::from_secs(1),
                layer_rounds: 1,
                layer_for: Duration::from_secs(1),
                streams: 20,
                stream_rounds: 1,
                stream_events: 10,
                stream_interval: Duration::from_millis(20),
                open_streams: 100,
                open_events: 3,
                open_interval: Duration::from_millis(500),
                cold_starts: 1,
                translation_rounds: 1,
                translation_for: Duration::from_secs(1),
                translation_stream_rounds: 1,
                translation_streams: 10,
                translation_stream_runs: 5,
                translation_events: 20,
                translation_interval: Duration::from_millis(2),
                redis_rate_rounds: 1,
                redis_rate_for: Duration::from_secs(2),
                redis_closed_rounds: 1,
                scale_rounds: 1,
            }
        } else {
            Self {
                rate: 1_000,
                rate_for: Duration::from_secs(20),
                closed_connections: 64,
                closed_rounds: 5,
                closed_for: Duration::from_secs(2),
                layer_rounds: 9,
                layer_for: Duration::from_secs(2),
                streams: 100,
                stream_rounds: 5,
                stream_events: 50,
                stream_interval: Duration::from_millis(20),
                open_streams: 1_000,
                open_events: 6,
                open_interval: Duration::from_secs(1),
                cold_starts: 5,
                translation_rounds: 9,
                translation_for: Duration::from_secs(2),
                translation_stream_rounds: 9,
                translation_streams: 20,
                translation_stream_runs: 20,
                translation_events: 50,
                translation_interval: Duration::from_millis(2),
                redis_rate_rounds: 3,
                redis_rate_for: Duration::from_secs(10),
                redis_closed_rounds: 5,
                scale_rounds: 5,
            }
        }
    }
}

/// Runs the scenarios; writes and returns the report. Any broken scenario is an error.
pub fn run(options: &RunOptions) -> Result<Report> {
    for scenario in &options.scenarios {
        if !(1..=9).contains(scenario) {
            bail!("there is no scenario {scenario} (1..=9)");
        }
    }
    let wanted = |n: u8| options.scenarios.is_empty() || options.scenarios.contains(&n);
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("cannot create {}", options.out.display()))?;
    let mut bench = Bench::new(options)?;
    if wanted(7) {
        bench.scenario(7, Bench::cold_start)?;
    }
    if wanted(1) || wanted(2) || wanted(3) {
        let mut gateway = bench.start_gateway(&Layers::ALL)?;
        if wanted(1) {
            bench.scenario(1, |b| b.fixed_rate(&mut gateway))?;
        }
        if wanted(2) {
            bench.scenario(2, |b| b.closed_loop(&mut gateway))?;
        }
        if wanted(3) {
            bench.scenario(3, |b| b.streaming(&mut gateway))?;
        }
    }
    if wanted(4) {
        bench.scenario(4, Bench::open_streams)?;
    }
    if wanted(5) {
        bench.scenario(5, Bench::layer_costs)?;
    }
    if wanted(6) {
        bench.scenario(6, Bench::limiter)?;
    }
    if wanted(8) {
        bench.scenario(8, Bench::translation)?;
    }
    if wanted(9) {
        bench.scenario(9, Bench::redis_backend)?;
    }
    let report = bench.finish()?;
    let markdown = report.markdown();
    let md_path = options.out.join("report.md");
    std::fs::write(&md_path, &markdown)
        .with_context(|| format!("cannot write {}", md_path.display()))?;
    let json_path = options.out.join("report.json");
    let json = serde_json::to_string_pretty(&report).context("cannot serialize the report")?;
    std::fs::write(&json_path, json + "\n")
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    Ok(report)
}

/// Which optional layers a gateway runs with (everything else is always on), where it keeps
/// its state, and whether its client key is under limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layers {
    /// Names the variant's files (auth directory, audit log, state) and, on Redis, the
    /// instance (`server.instance_id`).
    name: &'static str,
    audit_metrics: bool,
    tls: bool,
    /// `state.backend: redis` (on the run's `redis-server`) instead of SQLite.
    redis: bool,
    /// The client key has minute limits and a quota ([`KEY_LIMITS`]), so that every request
    /// is checked and reserved against them (scenario 9).
    key_limits: bool,
}

impl Layers {
    const ALL: Self =
        Self { name: "all", audit_metrics: true, tls: false, redis: false, key_limits: false };
    const NO_AUDIT_METRICS: Self =
        Self { audit_metrics: false, name: "no-audit-metrics", ..Self::ALL };
    const TLS: Self = Self { name: "tls", tls: true, ..Self::ALL };
    /// Scenario 9's gateway on SQLite: every layer, the client key under limits.
    const SQLITE_LIMITED: Self = Self { name: "sqlite-limited", key_limits: true, ..Self::ALL };
    /// Scenario 9's gateways on one Redis, the same layers and limits.
    const REDIS: [Self; 3] = [
        Self { name: "redis-1", redis: true, ..Self::SQLITE_LIMITED },
        Self { name: "redis-2", redis: true, ..Self::SQLITE_LIMITED },
        Self { name: "redis-3", redis: true, ..Self::SQLITE_LIMITED },
    ];
    /// Scenario 9's gateway on a Redis that writes its AOF (`appendfsync everysec`).
    const REDIS_AOF: Self = Self { name: "redis-aof", redis: true, ..Self::SQLITE_LIMITED };
}

/// Scenario 9's client-key limits: far above anything the bench sends, so that nothing is
/// refused, but present, so that the admission checks and reserves all of them — both minute
/// buckets and a monthly token quota, on SQLite in memory and on Redis in its script. The quota
/// stays below 2^53, where Lua's doubles are exact. One quota and no budget (nor a provider
/// quota): the reserve script then reads exactly one quota hash per call (`HGETALL`), which is
/// how [`RedisFigures`] counts the hot path's calls apart from the batches.
const KEY_LIMITS: &str = "rate_limit: {requests_per_minute: 100000000, tokens_per_minute: 1000000000000}, quota: {limit: 1000000000000000, reset: monthly}";

/// The secrets of one run, made fresh each time (nothing to leak, nothing in the source).
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    client: String,
    upstream_token: String,
    encryption: String,
}

impl Keys {
    fn generate() -> Result<Self> {
        let rng = SystemRandom::new();
        let hex = |len: usize| -> Result<String> {
            let mut bytes = vec![0_u8; len];
            rng.fill(&mut bytes).map_err(|_| anyhow::anyhow!("the system RNG failed"))?;
            Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
        };
        Ok(Self {
            client: format!("cpk-bench-{}", hex(16)?),
            upstream_token: format!("sk-bench-{}", hex(16)?),
            encryption: hex(32)?,
        })
    }
}

/// The TLS files of the gateway and the CA the load generator trusts.
#[derive(Debug, Clone)]
pub(crate) struct TlsFiles {
    ca_pem: Vec<u8>,
    cert_file: PathBuf,
    key_file: PathBuf,
}

/// The gateway config: every layer on (client keys, per-IP and global limits far above the
/// load — the per-IP connection cap too, since every connection comes from 127.0.0.1 — IP allowlist 127.0.0.0/8, request validation, the encrypted vault, security headers),
/// audit and metrics as `layers` says, TLS when `tls` is given; one `openai` provider at the
/// mock for the `bench-*` models.
///
/// With `layers.redis`, the state is on the Redis server at `redis_url` (`timeout: 200ms`,
/// `on_unavailable: local`) and the gateway names itself `layers.name`; without it, or
/// without a URL, in SQLite.
pub(crate) fn gateway_config(
    work: &Path,
    layers: &Layers,
    mock_url: &str,
    keys: &Keys,
    tls: Option<&TlsFiles>,
    redis_url: Option<&str>,
) -> String {
    let q = |text: &str| serde_json::Value::from(text).to_string();
    let path = |p: PathBuf| q(&p.display().to_string());
    let tls = match tls {
        Some(files) => format!(
            "  tls: {{enabled: true, cert_file: {}, key_file: {}}}\n",
            path(files.cert_file.clone()),
            path(files.key_file.clone())
        ),
        None => String::new(),
    };
    let on = layers.audit_metrics;
    let (instance, state) = match redis_url.filter(|_| layers.redis) {
        Some(url) => (
            format!("  instance_id: {}\n", q(layers.name)),
            format!(
                "state: {{backend: redis, redis: {{url: {}, timeout: 200ms, on_unavailable: local}}}}\n",
                q(url)
            ),
        ),
        None => (
            String::new(),
            format!(
                "state: {{path: {}}}\n",
                path(work.join("state").join(format!("{}.db", layers.name)))
            ),
        ),
    };
    let limits = if layers.key_limits { format!(", {KEY_LIMITS}") } else { String::new() };
    format!(
        "server:\n\
         {instance}\
         \x20 host: 127.0.0.1\n\
         \x20 port: 0\n\
         \x20 shutdown_timeout: 1s\n\
         {tls}\
         \x20 limits: {{max_connections: 10000, max_connections_per_ip: 10000}}\n\
         \x20 security:\n\
         \x20   ip_allowlist: {{enabled: true, allowed_ips: [\"127.0.0.0/8\"], deny_all: true}}\n\
         \x20   ip_denylist: {{enabled: true, denied_ips: [\"192.0.2.0/24\"]}}\n\
         \x20   rate_limiting: {{enabled: true, requests_per_second: 1000000, burst: 1000000, per_ip: true}}\n\
         \x20   headers: {{enabled: true}}\n\
         \x20   request_validation: {{enabled: true, max_tokens: 4096}}\n\
         \x20 rate_limit: {{enabled: true, requests_per_second: 1000000, burst: 1000000}}\n\
         auth:\n\
         \x20 api_keys:\n\
         \x20   - {{name: bench, key: {client}{limits}}}\n\
         \x20 dir: {auths}\n\
         \x20 encryption: {{enabled: true, key: {encryption}}}\n\
         providers:\n\
         \x20 openai: {{type: openai, base_url: {mock}, models: [\"bench-*\"]}}\n\
         logging:\n\
         \x20 level: info\n\
         \x20 format: json\n\
         \x20 audit: {{enabled: {on}, file: {audit}}}\n\
         metrics: {{enabled: {on}, host: 127.0.0.1, port: 0}}\n\
         {state}\
         sandbox: {{require_non_root: false}}\n",
        client = q(&keys.client),
        auths = path(work.join("auths").join(layers.name)),
        encryption = q(&keys.encryption),
        mock = q(mock_url),
        audit = path(work.join("audit").join(format!("{}.log", layers.name))),
    )
}

/// A running gateway.
struct Gateway {
    proc: Proc,
    target: Target,
}

struct Bench<'a> {
    options: &'a RunOptions,
    plan: Plan,
    exe: PathBuf,
    work: PathBuf,
    keys: Keys,
    tls: TlsFiles,
    pin: Option<String>,
    runtime: tokio::runtime::Runtime,
    mock: Proc,
    direct: Target,
    rows: Vec<Row>,
    notes: Vec<String>,
    raw: serde_json::Map<String, Value>,
    started_gateways: usize,
    /// The variants whose `auth.dir` holds the credential (see [`Bench::add_credential`]).
    credentialed: std::collections::HashSet<&'static str>,
    /// The `redis-server` the gateways with `layers.redis` start on (scenario 9).
    redis_url: Option<String>,
}

impl<'a> Bench<'a> {
    fn new(options: &'a RunOptions) -> Result<Self> {
        let exe = std::env::current_exe().context("cannot find the cliproxy-bench binary")?;
        if !options.server.is_file() {
            bail!(
                "the gateway binary {} does not exist (build it with `cargo build --release -p cliproxy-server`)",
                options.server.display()
            );
        }
        let work = options.out.join("work");
        if work.exists() {
            std::fs::remove_dir_all(&work)
                .with_context(|| format!("cannot clear {}", work.display()))?;
        }
        for dir in ["audit", "state", "tls", "logs", "auths"] {
            std::fs::create_dir_all(work.join(dir))
                .with_context(|| format!("cannot create {}", work.join(dir).display()))?;
        }
        let pin = pinning(options.pin);
        let keys = Keys::generate()?;
        let tls = make_tls(&work.join("tls"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start a tokio runtime")?;

        let mut command = pinned(pin.is_some(), CLIENT_CPU, &exe);
        command.args(["mock", "--listen", "127.0.0.1:0", "--token", &keys.upstream_token]);
        let mut mock = Proc::spawn("mock upstream", command, &work.join("logs").join("mock.log"))?;
        let addr = mock.wait_for_line(START_TIMEOUT, |line| {
            line.strip_prefix("listening ").map(str::to_owned)
        })?;
        let mock_url = format!("http://{addr}");
        let direct = Target {
            base_url: mock_url,
            token: keys.upstream_token.clone(),
            ca_pem: None,
            shape: Shape::Chat,
        };
        let bench = Self {
            options,
            plan: Plan::new(options.quick),
            exe,
            work,
            keys,
            tls,
            pin,
            runtime,
            mock,
            direct,
            rows: Vec::new(),
            notes: Vec::new(),
            raw: serde_json::Map::new(),
            started_gateways: 0,
            credentialed: std::collections::HashSet::new(),
            redis_url: None,
        };
        Ok(bench)
    }

    /// Runs one scenario, naming it in any error.
    fn scenario(&mut self, number: u8, body: impl FnOnce(&mut Self) -> Result<()>) -> Result<()> {
        eprintln!("cliproxy-bench: scenario {number}: {}", scenario_name(number));
        let started = Instant::now();
        body(self)
            .with_context(|| format!("scenario {number} ({}) failed", scenario_name(number)))?;
        self.mock.check_alive().with_context(|| format!("after scenario {number}"))?;
        eprintln!(
            "cliproxy-bench: scenario {number} done in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    fn finish(self) -> Result<Report> {
        let finished_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        Ok(Report {
            command: self.options.command.clone(),
            pinning: self.pin.clone().unwrap_or_else(|| {
                "none (taskset missing, fewer than 2 CPUs or --no-pin): figures are noisier".into()
            }),
            quick: self.options.quick,
            finished_unix,
            rows: self.rows,
            notes: self.notes,
            raw: self.raw,
        })
    }

    fn config_path(&self, layers: &Layers) -> Result<PathBuf> {
        if layers.redis && self.redis_url.is_none() {
            bail!("the {} gateway needs a running redis-server", layers.name);
        }
        let yaml = gateway_config(
            &self.work,
            layers,
            &self.direct.base_url,
            &self.keys,
            layers.tls.then_some(&self.tls),
            self.redis_url.as_deref(),
        );
        let path = self.work.join(format!("config-{}.yaml", layers.name));
        std::fs::write(&path, yaml).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }

    /// `cliproxy-server vault add`: the mock's token, encrypted in the vault of `layers` (each
    /// variant has its own `auth.dir`: a running gateway holds the lock of its directory, and
    /// scenario 5 runs the variants side by side), once per variant.
    fn add_credential(&mut self, layers: &Layers) -> Result<()> {
        if self.credentialed.contains(layers.name) {
            return Ok(());
        }
        let config = self.config_path(layers)?;
        let mut child = Command::new(&self.options.server)
            .arg("--config")
            .arg(&config)
            .args(["vault", "add", "--provider", "openai", "--id", "bench-1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run `cliproxy-server vault add`")?;
        child
            .stdin
            .take()
            .context("no stdin pipe")?
            .write_all(format!("{}\n", self.keys.upstream_token).as_bytes())
            .context("cannot write the credential to `vault add`")?;
        let output = child.wait_with_output().context("`vault add` did not finish")?;
        if !output.status.success() {
            bail!(
                "`cliproxy-server vault add` failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        self.credentialed.insert(layers.name);
        Ok(())
    }

    /// Starts a gateway with `layers` and waits for its `listening` line.
    fn start_gateway(&mut self, layers: &Layers) -> Result<Gateway> {
        Ok(self.spawn_gateway(layers)?.0)
    }

    /// Starts a gateway; also returns when it was spawned.
    fn spawn_gateway(&mut self, layers: &Layers) -> Result<(Gateway, Instant)> {
        self.add_credential(layers)?;
        let config = self.config_path(layers)?;
        self.started_gateways += 1;
        let log = self
            .work
            .join("logs")
            .join(format!("gateway-{}-{}.log", self.started_gateways, layers.name));
        let mut command = pinned(self.pin.is_some(), GATEWAY_CPU, &self.options.server);
        command.arg("--config").arg(&config).arg("serve");
        let spawned = Instant::now();
        let mut proc = Proc::spawn("gateway", command, &log)?;
        let addr = proc.wait_for_line(START_TIMEOUT, listening_addr)?;
        let scheme = if layers.tls { "https" } else { "http" };
        let target = Target {
            base_url: format!("{scheme}://{addr}"),
            token: self.keys.client.clone(),
            ca_pem: layers.tls.then(|| self.tls.ca_pem.clone()),
            shape: Shape::Chat,
        };
        Ok((Gateway { proc, target }, spawned))
    }

    /// Runs the load generator (its own process, on the client CPU) against `target`.
    fn load(
        &self,
        target: &Target,
        mode: Mode,
        mut on_ready: Option<&mut dyn FnMut() -> Result<()>>,
    ) -> Result<LoadReport> {
        let mut command = pinned(self.pin.is_some(), CLIENT_CPU, &self.exe);
        command.args(["load", "--url", &target.base_url, "--token", &target.token]);
        command.arg("--mode").arg(serde_json::to_string(&mode).context("mode")?);
        command.args(["--shape", target.shape.as_str()]);
        if let Some(pem) = &target.ca_pem {
            let ca = self.work.join("tls").join("ca.pem");
            if !ca.exists() {
                std::fs::write(&ca, pem)
                    .with_context(|| format!("cannot write {}", ca.display()))?;
            }
            command.arg("--ca").arg(ca);
        }
        if on_ready.is_some() {
            command.arg("--ready");
        }
        let log = self.work.join("logs").join("load.log");
        let mut proc = Proc::spawn("load generator", command, &log)?;
        let budget = expected_duration(mode) + Duration::from_secs(120);
        if let Some(on_ready) = on_ready.as_mut() {
            proc.wait_for_line(budget, |line| (line == "READY").then_some(()))?;
            on_ready()?;
        }
        let report = proc.wait_for_line(budget, |line| {
            line.strip_prefix("REPORT ").map(serde_json::from_str::<LoadReport>)
        })?;
        let report = report.context("the load generator's report is not valid JSON")?;
        let status = proc.wait_exit(Duration::from_secs(30))?;
        if !status.success() {
            bail!("the load generator exited with {status} after its report");
        }
        Ok(report)
    }

    /// The mock's count of 2xx chat answers.
    fn mock_served(&self) -> Result<u64> {
        let stats = self.runtime.block_on(load::get_json(&self.direct, "/stats"))?;
        stats["served"].as_u64().context("the mock's /stats has no `served` count")
    }

    /// Runs `mode` against `target` and checks that the mock answered at least as many
    /// requests as the load generator counted (so a gateway answering on its own fails).
    fn checked_load(
        &self,
        target: &Target,
        mode: Mode,
        ready: Option<&mut dyn FnMut() -> Result<()>>,
    ) -> Result<LoadReport> {
        let before = self.mock_served()?;
        let report = self.load(target, mode, ready)?;
        let reached = self.mock_served()?.saturating_sub(before);
        if reached < report.ok {
            bail!(
                "the load generator counted {} successes at {} but the mock answered only {reached}: the gateway did not reach the mock",
                report.ok,
                target.base_url
            );
        }
        Ok(report)
    }

    /// The same load direct to the mock, then through `gateway`.
    fn pair(
        &mut self,
        name: &str,
        gateway: &mut Gateway,
        mode: Mode,
    ) -> Result<(LoadReport, LoadReport)> {
        let direct_target = self.direct.clone();
        let direct = self.checked_load(&direct_target, mode, None).context("direct to the mock")?;
        let via = self.checked_load(&gateway.target, mode, None).context("through the gateway")?;
        gateway.proc.check_alive()?;
        self.keep(&format!("{name}.direct"), &direct)?;
        self.keep(&format!("{name}.gateway"), &via)?;
        Ok((direct, via))
    }

    fn keep(&mut self, name: &str, value: &impl serde::Serialize) -> Result<()> {
        self.raw.insert(name.to_owned(), serde_json::to_value(value).context("raw figures")?);
        Ok(())
    }

    // Scenario 1.
    fn fixed_rate(&mut self, gateway: &mut Gateway) -> Result<()> {
        let mode = Mode::Rate { rate: self.plan.rate, duration: self.plan.rate_for };
        let direct_target = self.direct.clone();
        let direct = self.checked_load(&direct_target, mode, None).context("direct to the mock")?;
        // The same load through a bare TCP relay on the gateway's CPU: what the extra hop
        // alone adds on this machine.
        let (relay, relay_target) = self.start_relay()?;
        let relayed =
            self.checked_load(&relay_target, mode, None).context("through the bare TCP relay")?;
        drop(relay);
        let cpu_before = gateway.proc.cpu_ns()?;
        let via = self.checked_load(&gateway.target, mode, None).context("through the gateway")?;
        let cpu_ns = gateway.proc.cpu_ns()?.saturating_sub(cpu_before);
        gateway.proc.check_alive()?;
        self.keep("fixed_rate.direct", &direct)?;
        self.keep("fixed_rate.relay", &relayed)?;
        self.keep("fixed_rate.gateway", &via)?;
        let (d, r, g) = (latency(&direct)?, latency(&relayed)?, latency(&via)?);
        let rate = self.plan.rate;
        let us = Unit::Micros;
        self.rows.push(Row::compare(
            1,
            format!("latency p50 at {rate} req/s"),
            us,
            d.p50_us,
            g.p50_us,
            Some(Budget::at_most(Judged::Difference, 150.0)),
        ));
        self.rows.push(Row::compare(
            1,
            format!("latency p99 at {rate} req/s"),
            us,
            d.p99_us,
            g.p99_us,
            Some(Budget::at_most(Judged::Difference, 1_000.0)),
        ));
        self.rows.push(Row::compare(
            1,
            format!("latency p99.9 at {rate} req/s"),
            us,
            d.p999_us,
            g.p999_us,
            None,
        ));
        for (name, direct, relayed) in [("p50", d.p50_us, r.p50_us), ("p99", d.p99_us, r.p99_us)] {
            self.rows.push(Row::compare(
                1,
                format!("latency {name} at {rate} req/s through a bare TCP relay (the hop alone; \"gateway\" column = relay)"),
                us,
                direct,
                relayed,
                None,
            ));
        }
        self.rows.push(Row::compare(
            1,
            format!("latency p50 at {rate} req/s, gateway against the bare relay (\"direct\" column = relay)"),
            us,
            r.p50_us,
            g.p50_us,
            None,
        ));
        let requests = via.ok.max(1);
        self.rows.push(Row::single(
            1,
            format!("gateway CPU time per request at {rate} req/s (all its threads)"),
            us,
            cpu_ns as f64 / 1_000.0 / requests as f64,
            None,
        ));
        Ok(())
    }

    /// Starts a bare TCP relay to the mock, pinned to the gateway's CPU.
    fn start_relay(&self) -> Result<(Proc, Target)> {
        let upstream = self
            .direct
            .base_url
            .strip_prefix("http://")
            .context("the mock's URL is not http://HOST:PORT")?;
        let mut command = pinned(self.pin.is_some(), GATEWAY_CPU, &self.exe);
        command.args(["relay", "--listen", "127.0.0.1:0", "--upstream", upstream]);
        let mut relay =
            Proc::spawn("bare TCP relay", command, &self.work.join("logs").join("relay.log"))?;
        let addr = relay.wait_for_line(START_TIMEOUT, |line| {
            line.strip_prefix("listening ").map(str::to_owned)
        })?;
        let target = Target {
            base_url: format!("http://{addr}"),
            token: self.direct.token.clone(),
            ca_pem: None,
            shape: Shape::Chat,
        };
        Ok((relay, target))
    }

    // Scenario 2.
    fn closed_loop(&mut self, gateway: &mut Gateway) -> Result<()> {
        let connections = self.plan.closed_connections;
        let mode = Mode::Closed { connections, duration: self.plan.closed_for, max_requests: None };
        let direct_target = self.direct.clone();
        // Direct and gateway runs take turns, round after round, each round starting with the
        // other one; the throughput kept is the median of the rounds' own ratios. This
        // machine's speed drifts by tens of percent within seconds (other guests): two runs
        // side by side see the same drift, two runs ten seconds apart need not.
        let (mut direct, mut via, mut kept, mut direct_p50, mut via_p50) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..self.plan.closed_rounds {
            let mut pair = [None, None];
            for turn in 0..2 {
                let through_gateway = (round + turn) % 2 == 1;
                let report = if through_gateway {
                    let report = self
                        .checked_load(&gateway.target, mode, None)
                        .context("through the gateway")?;
                    gateway.proc.check_alive()?;
                    report
                } else {
                    self.checked_load(&direct_target, mode, None).context("direct to the mock")?
                };
                let name = if through_gateway { "gateway" } else { "direct" };
                self.keep(&format!("closed_loop.round{}.{name}", round + 1), &report)?;
                pair[usize::from(through_gateway)] = Some(report);
            }
            let [Some(d), Some(g)] = pair else { bail!("a round without both runs") };
            if d.rps <= 0.0 {
                bail!("round {}: no throughput direct to the mock", round + 1);
            }
            kept.push(g.rps / d.rps);
            direct_p50.push(latency(&d)?.p50_us);
            via_p50.push(latency(&g)?.p50_us);
            direct.push(d.rps);
            via.push(g.rps);
        }
        let rounds = kept.len();
        self.rows.push(Row::compare(
            2,
            format!(
                "throughput, closed loop, {connections} connections (median of {rounds} rounds)"
            ),
            Unit::Rps,
            median(direct),
            median(via),
            None,
        ));
        self.rows.push(Row::single(
            2,
            format!("throughput kept through the gateway (median of the {rounds} rounds' ratios)"),
            Unit::Fraction,
            median(kept),
            Some(Budget::at_least(Judged::Value, 0.45)),
        ));
        self.rows.push(Row::compare(
            2,
            "latency p50 at saturation (median of the rounds)",
            Unit::Micros,
            median(direct_p50),
            median(via_p50),
            None,
        ));
        Ok(())
    }

    // Scenario 3.
    fn streaming(&mut self, gateway: &mut Gateway) -> Result<()> {
        let plan = self.plan;
        let mode = Mode::Stream {
            streams: plan.streams,
            rounds: plan.stream_rounds,
            events: plan.stream_events,
            interval: plan.stream_interval,
        };
        let (direct, via) = self.pair("streaming", gateway, mode)?;
        let expected =
            (plan.streams as u64) * u64::from(plan.stream_rounds) * u64::from(plan.stream_events);
        for (name, report) in [("direct", &direct), ("gateway", &via)] {
            if report.events != expected {
                bail!("{name}: {} events received, {expected} expected", report.events);
            }
        }
        let ttfe = |r: &LoadReport| r.ttfe.context("no time-to-first-event figures");
        let gap = |r: &LoadReport| r.gap.context("no inter-event figures");
        let (dt, gt, dg, gg) = (ttfe(&direct)?, ttfe(&via)?, gap(&direct)?, gap(&via)?);
        let label = format!(
            "{} streams × {} events {} ms apart",
            plan.streams,
            plan.stream_events,
            plan.stream_interval.as_millis()
        );
        let us = Unit::Micros;
        self.rows.push(Row::compare(
            3,
            format!("time to first event p50 ({label})"),
            us,
            dt.p50_us,
            gt.p50_us,
            Some(Budget::at_most(Judged::Difference, 1_000.0)),
        ));
        self.rows.push(Row::compare(3, "time to first event p99", us, dt.p99_us, gt.p99_us, None));
        self.rows.push(Row::compare(3, "time between events p50", us, dg.p50_us, gg.p50_us, None));
        self.rows.push(Row::compare(
            3,
            "time between events p99",
            us,
            dg.p99_us,
            gg.p99_us,
            Some(Budget::at_most(Judged::Difference, 1_000.0)),
        ));
        Ok(())
    }

    // Scenario 4.
    fn open_streams(&mut self) -> Result<()> {
        let plan = self.plan;
        let mut gateway = self.start_gateway(&Layers::ALL)?;
        // Warm the gateway's connection and the allocator a little, as a running one would be.
        self.runtime.block_on(load::once(&gateway.target)).context("first request")?;
        let before = gateway.proc.rss_kb()?;
        let mode = Mode::Stream {
            streams: plan.open_streams,
            rounds: 1,
            events: plan.open_events,
            interval: plan.open_interval,
        };
        let mut during = None;
        {
            let proc = &gateway.proc;
            let mut read = || -> Result<()> {
                during = Some(proc.rss_kb()?);
                Ok(())
            };
            let target = gateway.target.clone();
            let report = self.checked_load(&target, mode, Some(&mut read))?;
            self.keep("open_streams.gateway", &report)?;
        }
        gateway.proc.check_alive()?;
        let during = during.context("the load generator never reported all streams open")?;
        let after = gateway.proc.rss_kb()?;
        let n = plan.open_streams;
        self.rows.push(Row::single(
            4,
            "gateway RSS before the streams",
            Unit::Mb,
            mb(before),
            None,
        ));
        self.rows.push(Row::single(
            4,
            format!("gateway RSS with {n} open streams"),
            Unit::Mb,
            mb(during),
            Some(Budget::at_most(Judged::Value, 80.0)),
        ));
        self.rows.push(Row::single(
            4,
            "gateway RSS after the streams ended",
            Unit::Mb,
            mb(after),
            None,
        ));
        Ok(())
    }

    // Scenario 5.
    fn layer_costs(&mut self) -> Result<()> {
        let connections = self.plan.closed_connections;
        let mode = Mode::Closed { connections, duration: self.plan.layer_for, max_requests: None };
        let direct_target = self.direct.clone();
        let direct = self.checked_load(&direct_target, mode, None).context("direct to the mock")?;
        self.keep("layers.direct", &direct)?;
        // The three gateways run side by side (idle ones cost nothing) and take turns, round
        // after round; each figure is the median of its rounds, so that a slow spell of this
        // noisy machine hits every variant alike instead of one of them.
        let variants = [Layers::ALL, Layers::NO_AUDIT_METRICS, Layers::TLS];
        let mut gateways = Vec::new();
        for layers in &variants {
            gateways.push(self.start_gateway(layers)?);
        }
        let mut rounds: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
        let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
        for round in 0..self.plan.layer_rounds {
            for (index, layers) in variants.iter().enumerate() {
                let before = gateways[index].proc.cpu_ns()?;
                let report = self
                    .checked_load(&gateways[index].target, mode, None)
                    .with_context(|| format!("through the gateway ({})", layers.name))?;
                let used = gateways[index].proc.cpu_ns()?.saturating_sub(before);
                gateways[index].proc.check_alive()?;
                self.keep(&format!("layers.{}.round{}", layers.name, round + 1), &report)?;
                rounds[index].push(report.rps);
                cpu[index].push(used as f64 / 1_000.0 / report.ok.max(1) as f64);
            }
        }
        let cpu_rounds = cpu.clone();
        for ((layers, figures), cpu) in variants.iter().zip(rounds).zip(cpu) {
            let label = match layers.name {
                "all" => "all layers, TLS off",
                "no-audit-metrics" => "audit and metrics off, TLS off",
                _ => "all layers, TLS on",
            };
            let count = figures.len();
            let rps_label = format!("throughput, {label} (median of {count} rounds)");
            self.rows.push(Row::compare(
                5,
                rps_label,
                Unit::Rps,
                direct.rps,
                median(figures),
                None,
            ));
            let cpu_label = format!("gateway CPU time per request, {label} (median of {count})");
            let cpu = median(cpu);
            self.rows.push(Row::single(5, cpu_label, Unit::Micros, cpu, None));
        }
        // At saturation on its one CPU the gateway's throughput is that CPU divided by the CPU
        // time per request, so the throughput a layer costs is 1 − (time without / time with).
        // Judged on CPU time, which this machine's noise (other guests, ±25 % between
        // throughput runs) disturbs far less than requests per second, and on each round's
        // own pair of runs (run one after the other, so under the same spell of noise): the
        // figure is the median of the rounds' costs.
        let [all, bare, tls] = &cpu_rounds[..] else { bail!("three gateway runs expected") };
        let cost = |without: &[f64], with: &[f64]| {
            median(without.iter().zip(with).map(|(without, with)| 1.0 - without / with).collect())
        };
        self.rows.push(Row::single(
            5,
            "audit + metrics cost in throughput (1 − CPU per request off/on, median of rounds)",
            Unit::Fraction,
            cost(bare, all),
            Some(Budget::at_most(Judged::Value, 0.10)),
        ));
        self.rows.push(Row::single(
            5,
            "TLS cost in throughput (1 − CPU per request plain/TLS, median of rounds)",
            Unit::Fraction,
            cost(all, tls),
            Some(Budget::at_most(Judged::Value, 0.30)),
        ));
        Ok(())
    }

    // Scenario 6.
    fn limiter(&mut self) -> Result<()> {
        let Some(path) = &self.options.limiter_output else {
            self.notes.push("Scenario 6 not run: no --limiter-output (`cargo xtask bench` runs `cargo bench -p cliproxy-netguard --bench limiter` and passes it).".into());
            return Ok(());
        };
        let text = std::fs::read_to_string(path).with_context(|| {
            format!("cannot read the limiter benchmark output {}", path.display())
        })?;
        let figures: LimiterFigures = limiter::parse(&text)?;
        self.keep("limiter", &figures)?;
        let kb = |kb: f64| kb / 1024.0;
        self.rows.push(Row::single(
            6,
            "per-IP check, known address",
            Unit::Nanos,
            figures.check_ns,
            None,
        ));
        self.rows.push(Row::single(
            6,
            "per-IP check, new address (spray)",
            Unit::Nanos,
            figures.spray_check_ns,
            None,
        ));
        self.rows.push(Row::single(
            6,
            "RSS after a 1,000,000-address spray",
            Unit::Mb,
            kb(figures.rss_after_spray_kb),
            Some(Budget::at_most(Judged::Value, 64.0)),
        ));
        self.rows.push(Row::single(
            6,
            "RSS after eviction (near idle: ≤ idle budget)",
            Unit::Mb,
            kb(figures.rss_after_eviction_kb),
            Some(Budget::at_most(Judged::Value, 20.0)),
        ));
        if figures.tracked_after_eviction > 0.0 {
            bail!(
                "the limiter still tracks {} addresses after eviction",
                figures.tracked_after_eviction
            );
        }
        self.notes.push(format!(
            "Scenario 6 figures are the limiter benchmark's own process (RSS before the sprays: {:.1} MB), from {}.",
            kb(figures.rss_before_kb),
            path.display()
        ));
        Ok(())
    }

    // Scenario 7.
    fn cold_start(&mut self) -> Result<()> {
        let mut starts = Vec::new();
        let mut listening = Vec::new();
        let mut idle = Vec::new();
        for _ in 0..self.plan.cold_starts {
            let (mut gateway, spawned) = self.spawn_gateway(&Layers::ALL)?;
            listening.push(spawned.elapsed());
            let deadline = spawned + START_TIMEOUT;
            // Poll: the first request that succeeds ends the cold start.
            loop {
                match self.runtime.block_on(load::once(&gateway.target)) {
                    Ok(()) => break,
                    Err(e) if Instant::now() >= deadline => {
                        return Err(e.context("no request succeeded through the fresh gateway"));
                    }
                    Err(_) => gateway.proc.check_alive()?,
                }
            }
            starts.push(spawned.elapsed());
            idle.push(gateway.proc.rss_kb()?);
        }
        let ms = |d: &Duration| d.as_secs_f64() * 1_000.0;
        let cold = median(starts.iter().map(ms).collect());
        let listen = median(listening.iter().map(ms).collect());
        let idle_kb = median(idle.iter().map(|&kb| kb as f64).collect());
        self.keep("cold_start_ms", &starts.iter().map(ms).collect::<Vec<_>>())?;
        self.keep("idle_rss_kb", &idle)?;
        let n = self.plan.cold_starts;
        self.rows.push(Row::single(
            7,
            format!("cold start to first served request (median of {n})"),
            Unit::Millis,
            cold,
            Some(Budget::at_most(Judged::Value, 100.0)),
        ));
        self.rows.push(Row::single(7, "spawn to listening", Unit::Millis, listen, None));
        self.rows.push(Row::single(
            7,
            "idle RSS (after the first request)",
            Unit::Mb,
            idle_kb / 1024.0,
            Some(Budget::at_most(Judged::Value, 20.0)),
        ));
        Ok(())
    }

    // Scenario 8.
    fn translation(&mut self) -> Result<()> {
        let plan = self.plan;
        // The every-layer gateway: its provider is `type: openai` (no `api`) at the mock, so an
        // Anthropic client's request is translated to Chat Completions and the reply back,
        // while the chat shape, the same conversation, goes through untranslated.
        let mut gateway = self.start_gateway(&Layers::ALL)?;
        let targets = [
            Target { shape: Shape::ChatTools4k, ..gateway.target.clone() },
            Target { shape: Shape::AnthropicTools4k, ..gateway.target.clone() },
        ];
        let mode = Mode::Closed {
            connections: plan.closed_connections,
            duration: plan.translation_for,
            max_requests: None,
        };
        let rounds = plan.translation_rounds;
        let requests =
            self.cpu_rounds(&mut gateway, &targets, mode, rounds, "translation.requests")?;
        let stream_mode = Mode::Stream {
            streams: plan.translation_streams,
            rounds: plan.translation_stream_runs,
            events: plan.translation_events,
            interval: plan.translation_interval,
        };
        let rounds = plan.translation_stream_rounds;
        let (streams, timing) = self.cpu_and_stream_rounds(
            &mut gateway,
            &targets,
            stream_mode,
            rounds,
            "translation.streams",
        )?;

        // Each round's two runs follow each other, under the same spell of this machine's
        // noise: the added cost is the median of the rounds' own differences.
        let added = |cpu: &[Vec<f64>; 2]| {
            median(
                cpu[0].iter().zip(&cpu[1]).map(|(plain, translated)| translated - plain).collect(),
            )
        };
        let us = Unit::FineMicros;
        let n = requests[0].len();
        self.rows.push(Row::compare(
            8,
            format!(
                "gateway CPU per request, 4 KB with two tools, closed loop: untranslated chat (\"direct\" column) vs Anthropic → OpenAI translated (\"gateway\" column), median of {n} rounds"
            ),
            us,
            median(requests[0].clone()),
            median(requests[1].clone()),
            None,
        ));
        let request_added = added(&requests);
        self.rows.push(Row::single(
            8,
            format!("CPU the translation adds per request (median of the {n} rounds' differences)"),
            us,
            request_added,
            Some(Budget::at_most(Judged::Value, 15.0)),
        ));
        let n = streams[0].len();
        let events = plan.translation_events;
        self.rows.push(Row::compare(
            8,
            format!(
                "gateway CPU per stream of {events} events {} ms apart ({} concurrent): untranslated (\"direct\" column) vs translated (\"gateway\" column), median of {n} rounds",
                plan.translation_interval.as_millis(),
                plan.translation_streams
            ),
            us,
            median(streams[0].clone()),
            median(streams[1].clone()),
            None,
        ));
        let stream_added = added(&streams);
        self.rows.push(Row::single(
            8,
            format!(
                "CPU the translation adds per stream, spread over its events (median of the rounds' differences per stream / {events})"
            ),
            us,
            stream_added / f64::from(events),
            None,
        ));
        // The stream's request is translated once, and that cost has its own budget above:
        // the per-event budget is judged on what is left per event, not charged it twice.
        self.rows.push(Row::single(
            8,
            "CPU the translation adds per streamed event, the request's translation taken out ((difference per stream − difference per request) / events)",
            us,
            (stream_added - request_added) / f64::from(events),
            Some(Budget::at_most(Judged::Value, 2.0)),
        ));
        // A translated stream is held to scenario 3's streaming budgets, against the same
        // stream untranslated through the same gateway.
        let of = |index: usize, pick: fn(&StreamTiming) -> f64| {
            median(timing[index].iter().map(pick).collect())
        };
        let micros = Unit::Micros;
        self.rows.push(Row::compare(
            8,
            "time to first event p50, untranslated (\"direct\" column) vs translated (\"gateway\" column), median of the rounds",
            micros,
            of(0, |t| t.0),
            of(1, |t| t.0),
            Some(Budget::at_most(Judged::Difference, 1_000.0)),
        ));
        self.rows.push(Row::compare(
            8,
            "time between events p99, untranslated vs translated, median of the rounds",
            micros,
            of(0, |t| t.1),
            of(1, |t| t.1),
            Some(Budget::at_most(Judged::Difference, 1_000.0)),
        ));
        self.notes.push(
            "Scenario 8 figures are the gateway's CPU time (all its threads) over each load run, divided by the requests or streams completed; a run also holds its unmeasured warm-up requests (one whole request per connection or stream, of the run's shape: 64 against tens of thousands of requests, 20 against 400 streams, which moves the per-event figure by about 0.01 µs).".into(),
        );
        Ok(())
    }

    /// Runs `mode` through `gateway` for each of `targets` (untranslated, translated), `rounds`
    /// times, taking turns (which one goes first alternates); returns the gateway's CPU time per
    /// completed request or stream, in microseconds, for each target and round.
    fn cpu_rounds(
        &mut self,
        gateway: &mut Gateway,
        targets: &[Target; 2],
        mode: Mode,
        rounds: usize,
        name: &str,
    ) -> Result<[Vec<f64>; 2]> {
        Ok(self.cpu_and_stream_rounds(gateway, targets, mode, rounds, name)?.0)
    }

    /// [`Bench::cpu_rounds`], also keeping each stream run's time to first event (p50) and
    /// time between events (p99), in µs, per target.
    fn cpu_and_stream_rounds(
        &mut self,
        gateway: &mut Gateway,
        targets: &[Target; 2],
        mode: Mode,
        rounds: usize,
        name: &str,
    ) -> Result<RoundFigures> {
        let mut cpu = [Vec::new(), Vec::new()];
        let mut timing = [Vec::new(), Vec::new()];
        for round in 0..rounds {
            for turn in 0..2 {
                let index = (round + turn) % 2;
                let target = &targets[index];
                let before = gateway.proc.cpu_ns()?;
                let report = self.checked_load(target, mode, None).with_context(|| {
                    format!("{} through the gateway, round {}", target.shape, round + 1)
                })?;
                let used = gateway.proc.cpu_ns()?.saturating_sub(before);
                gateway.proc.check_alive()?;
                if let Mode::Stream { streams, rounds: runs, events, .. } = mode {
                    let expected = streams as u64 * u64::from(runs) * u64::from(events);
                    if report.events != expected {
                        bail!(
                            "{}: {} events received, {expected} expected",
                            target.shape,
                            report.events
                        );
                    }
                }
                self.keep(&format!("{name}.round{}.{}", round + 1, target.shape), &report)?;
                cpu[index].push(used as f64 / 1_000.0 / report.ok.max(1) as f64);
                if let (Some(ttfe), Some(gap)) = (&report.ttfe, &report.gap) {
                    timing[index].push((ttfe.p50_us, gap.p99_us));
                }
            }
        }
        let [plain, translated] = &targets;
        let figures =
            serde_json::json!({ plain.shape.as_str(): cpu[0], translated.shape.as_str(): cpu[1] });
        self.keep(&format!("{name}.cpu_us_per_round"), &figures)?;
        Ok((cpu, timing))
    }

    // Scenario 9.
    fn redis_backend(&mut self) -> Result<()> {
        let plan = self.plan;
        let pin = self.pin.is_some();
        // Redis runs on the gateways' CPU: every request's round trip is then a wake-up on the
        // same core (no inter-processor interrupt, which costs this hypervisor tens of
        // microseconds), and the CPU Redis spends comes out of the gateways' core, so the
        // closed loop's ratio charges the Redis backend its whole cost.
        let mut redis = Redis::start(
            || pinned(pin, REDIS_CPU, Path::new("redis-server")),
            &self.work.join("redis"),
            &self.work.join("logs").join("redis.log"),
            &["--save", "", "--appendonly", "no"],
        )?;
        let version = redis.version()?;
        self.redis_url = Some(redis.url());
        let mut sqlite = self.start_gateway(&Layers::SQLITE_LIMITED)?;
        let mut shared = vec![self.start_gateway(&Layers::REDIS[0])?];

        // 1. The open loop at the fixed rate, SQLite and Redis taking turns round after round
        // (which one goes first alternates), as scenario 2 does, so that both see the same
        // spells of this machine's noise. Redis's counters are read around each run; the
        // Redis runs' deltas are the cost per request.
        let mode = Mode::Rate { rate: plan.rate, duration: plan.redis_rate_for };
        let (mut p50, mut p99) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
        let mut cost = RedisSample::default();
        let mut idle = RedisSample::default();
        let (mut requests, mut idle_s) = (0_u64, 0.0_f64);
        let mut redis_p50 = Vec::new();
        for round in 0..plan.redis_rate_rounds {
            for turn in 0..2 {
                let index = (round + turn) % 2;
                let gateway = if index == 0 { &mut sqlite } else { &mut shared[0] };
                let run = self.redis_load(&redis, &gateway.target, mode)?;
                gateway.proc.check_alive()?;
                redis.check_alive()?;
                let name = BACKENDS[index];
                self.keep(&format!("redis.open_loop.round{}.{name}", round + 1), &run.report)?;
                let counters = format!("redis.open_loop.round{}.{name}.redis_counters", round + 1);
                self.keep(&counters, &run.redis)?;
                let figures = latency(&run.report)?;
                p50[index].push(figures.p50_us);
                p99[index].push(figures.p99_us);
                if index == 1 {
                    cost.add(&run.redis);
                    requests += run.served;
                    redis_p50.push(figures.p50_us);
                } else {
                    // What Redis does while the Redis gateway is idle (its background work).
                    idle.add(&run.redis);
                    idle_s += run.wall_s;
                }
            }
        }
        let rate = plan.rate;
        let rounds = plan.redis_rate_rounds;
        let us = Unit::Micros;
        self.rows.push(Row::compare(
            9,
            format!("latency p50 at {rate} req/s: SQLite backend (\"direct\" column) vs Redis backend (\"gateway\" column), median of {rounds} rounds"),
            us,
            median(p50[0].clone()),
            median(p50[1].clone()),
            Some(Budget::at_most(Judged::Difference, 150.0)),
        ));
        self.rows.push(Row::compare(
            9,
            format!("latency p99 at {rate} req/s: SQLite vs Redis, median of {rounds} rounds"),
            us,
            median(p99[0].clone()),
            median(p99[1].clone()),
            None,
        ));
        let figures = RedisFigures::of(&cost, requests);
        self.keep("redis.open_loop.cost", &cost)?;
        self.keep("redis.open_loop.idle", &idle)?;
        self.keep("redis.open_loop.requests", &requests)?;
        self.keep("redis.open_loop.figures", &figures)?;
        self.redis_cost_rows(&figures, rate);

        // 2. The closed loop, as scenario 2: SQLite and Redis taking turns.
        let connections = self.plan.closed_connections;
        let mode = Mode::Closed { connections, duration: self.plan.closed_for, max_requests: None };
        let (mut rps, mut kept) = ([Vec::new(), Vec::new()], Vec::new());
        let mut gateway_cpu = [Vec::new(), Vec::new()];
        let mut saturated = RedisSample::default();
        let mut saturated_requests = 0_u64;
        for round in 0..plan.redis_closed_rounds {
            let mut pair = [0.0, 0.0];
            for turn in 0..2 {
                let index = (round + turn) % 2;
                let gateway = if index == 0 { &mut sqlite } else { &mut shared[0] };
                let cpu_before = gateway.proc.cpu_ns()?;
                let run = self.redis_load(&redis, &gateway.target, mode)?;
                let cpu = gateway.proc.cpu_ns()?.saturating_sub(cpu_before);
                gateway.proc.check_alive()?;
                redis.check_alive()?;
                let name = BACKENDS[index];
                self.keep(&format!("redis.closed_loop.round{}.{name}", round + 1), &run.report)?;
                gateway_cpu[index].push(cpu as f64 / 1_000.0 / run.served.max(1) as f64);
                if index == 1 {
                    saturated.add(&run.redis);
                    saturated_requests += run.served;
                }
                pair[index] = run.report.rps;
                rps[index].push(run.report.rps);
            }
            if pair[0] <= 0.0 {
                bail!("round {}: no throughput on SQLite", round + 1);
            }
            kept.push(pair[1] / pair[0]);
        }
        let rounds = kept.len();
        self.rows.push(Row::compare(
            9,
            format!("throughput, closed loop, {connections} connections: SQLite (\"direct\" column) vs Redis (\"gateway\" column), median of {rounds} rounds"),
            Unit::Rps,
            median(rps[0].clone()),
            median(rps[1].clone()),
            None,
        ));
        self.rows.push(Row::single(
            9,
            format!(
                "throughput kept on Redis, Redis ÷ SQLite (median of the {rounds} rounds' ratios)"
            ),
            Unit::Fraction,
            median(kept),
            Some(Budget::at_least(Judged::Value, 0.60)),
        ));
        self.rows.push(Row::compare(
            9,
            "gateway CPU per request at saturation (all its threads): SQLite vs Redis, median of the rounds",
            Unit::FineMicros,
            median(gateway_cpu[0].clone()),
            median(gateway_cpu[1].clone()),
            None,
        ));
        let at_saturation = RedisFigures::of(&saturated, saturated_requests);
        self.keep("redis.closed_loop.figures", &at_saturation)?;
        self.rows.push(Row::single(
            9,
            "Redis CPU per request at saturation (INFO cpu delta ÷ requests, closed loop)",
            Unit::FineMicros,
            at_saturation.cpu_us,
            None,
        ));
        drop(sqlite);

        // 3. One to three instances on the one Redis, the connections spread over them
        // round-robin; every instance on the gateways' CPU, with Redis.
        for layers in &Layers::REDIS[1..] {
            let gateway = self.start_gateway(layers)?;
            shared.push(gateway);
        }
        let mut totals: Vec<Vec<f64>> = vec![Vec::new(); shared.len()];
        let mut per_request: Vec<Vec<f64>> = vec![Vec::new(); shared.len()];
        for round in 0..plan.scale_rounds {
            for turn in 0..shared.len() {
                let count = (round + turn) % shared.len() + 1;
                let urls: Vec<&str> =
                    shared[..count].iter().map(|g| g.target.base_url.as_str()).collect();
                let target = Target { base_url: urls.join(" "), ..shared[0].target.clone() };
                let run = self.redis_load(&redis, &target, mode)?;
                for gateway in &mut shared {
                    gateway.proc.check_alive()?;
                }
                redis.check_alive()?;
                self.keep(
                    &format!("redis.scaling.round{}.instances{count}", round + 1),
                    &run.report,
                )?;
                totals[count - 1].push(run.report.rps);
                per_request[count - 1].push(run.redis.cpu_s * 1e6 / run.served.max(1) as f64);
            }
        }
        let rounds = plan.scale_rounds;
        let one = median(totals[0].clone());
        for (index, figures) in totals.iter().enumerate() {
            let count = index + 1;
            let total = median(figures.clone());
            self.rows.push(Row::single(
                9,
                format!("total throughput, closed loop, {count} instance(s) on one Redis, connections spread round-robin (median of {rounds} rounds)"),
                Unit::Rps,
                total,
                None,
            ));
            if count > 1 {
                self.rows.push(Row::single(
                    9,
                    format!("{count} instances ÷ 1 instance (this machine: 2 CPUs for Redis, the gateways, the mock and the load generator)"),
                    Unit::Fraction,
                    total / one,
                    None,
                ));
            }
        }
        let per_request: Vec<f64> = per_request.into_iter().map(median).collect();
        self.keep("redis.scaling.redis_cpu_us_per_request", &per_request)?;
        drop(shared);

        // 4. Once, the same open loop on a Redis that writes its AOF every second, as a
        // deployment that keeps its state would run it (deploy/ does).
        let mut aof = Redis::start(
            || pinned(pin, REDIS_CPU, Path::new("redis-server")),
            &self.work.join("redis-aof"),
            &self.work.join("logs").join("redis-aof.log"),
            &["--save", "", "--appendonly", "yes", "--appendfsync", "everysec"],
        )?;
        self.redis_url = Some(aof.url());
        let mut durable = self.start_gateway(&Layers::REDIS_AOF)?;
        let mode = Mode::Rate { rate: plan.rate, duration: plan.redis_rate_for };
        let run = self.redis_load(&aof, &durable.target, mode)?;
        durable.proc.check_alive()?;
        aof.check_alive()?;
        self.keep("redis.aof.open_loop", &run.report)?;
        self.keep("redis.aof.redis", &run.redis)?;
        let with_aof = RedisFigures::of(&run.redis, run.served);
        self.rows.push(Row::compare(
            9,
            "with appendonly yes, appendfsync everysec (one run): Redis CPU per request, no AOF (\"direct\" column, open loop above) vs AOF (\"gateway\" column)",
            Unit::FineMicros,
            figures.cpu_us,
            with_aof.cpu_us,
            None,
        ));
        self.rows.push(Row::compare(
            9,
            format!("with appendonly yes, appendfsync everysec (one run): latency p50 at {rate} req/s, no AOF (median above) vs AOF"),
            us,
            median(redis_p50),
            latency(&run.report)?.p50_us,
            None,
        ));
        drop(durable);
        drop(aof);
        self.redis_url = None;

        self.notes.push(format!(
            "Scenario 9: redis-server {version}, started by the harness on a loopback port with `--save \"\" --appendonly no` (the last rows: `--appendonly yes --appendfsync everysec`), pinned to CPU {REDIS_CPU}, the gateway(s) to CPU {GATEWAY_CPU}; the mock and the load generator on CPU {CLIENT_CPU}. This machine has 2 CPUs shared by Redis, the gateways, the mock and the load generator: the scaling rows measure how instances share one core with Redis, not how Redis scales. Every gateway has all layers of scenario 5's \"all\" set, and its client key minute limits and a monthly quota far above the load (nothing is refused; every request is checked and reserved); Redis gateways: `state.redis.timeout: 200ms`, `on_unavailable: local`, each its own `server.instance_id`. Redis figures are deltas of `INFO commandstats` and `INFO cpu` over the Redis runs of the open loop ({requests} requests, warm-ups included), INFO itself left out; the hot path's script calls are counted by the reserve script's one `HGETALL` (the key's quota) per call. Redis's CPU while the Redis gateway sat idle: {:.1} ms per second.",
            idle.cpu_s * 1e3 / idle_s.max(1e-9),
        ));
        Ok(())
    }

    /// Scenario 9's rows of Redis's cost per request and of how many gateways one Redis
    /// serves (`docs/scale.md`'s arithmetic: a Redis core kept at most 70 % busy).
    fn redis_cost_rows(&mut self, figures: &RedisFigures, rate: u32) {
        let per = Unit::Decimal;
        let rows = [
            (
                "Redis round trips per request on the hot path (reserve script calls ÷ requests)",
                per,
                figures.hot_path,
            ),
            (
                "Redis script calls per request off the path (settlement and state batches, amortised)",
                per,
                figures.off_path,
            ),
            (
                "Redis commands per request in all (INFO commandstats, the scripts' redis.call included)",
                per,
                figures.commands,
            ),
            (
                "of which inside the scripts (every command but EVALSHA/EVAL, per request)",
                per,
                figures.inner,
            ),
            (
                "Redis time executing commands per request (INFO commandstats usec of EVALSHA/EVAL)",
                Unit::FineMicros,
                figures.script_us,
            ),
            (
                "Redis CPU per request c (INFO cpu delta ÷ requests)",
                Unit::FineMicros,
                figures.cpu_us,
            ),
        ];
        for (measure, unit, value) in rows {
            self.rows.push(Row::single(9, measure, unit, value, None));
        }
        // c µs per request is c ms of CPU in each second at 1,000 requests/s.
        self.rows.push(Row::single(
            9,
            format!("Redis CPU per 1,000 req/s (ms of CPU per second; measured at {rate} req/s)"),
            Unit::FineMillis,
            figures.cpu_us,
            None,
        ));
        let serves = 0.7e6 / figures.cpu_us;
        self.rows.push(Row::single(
            9,
            "requests/s one Redis core serves at 70 % busy (R = 0.7 / c)",
            Unit::Rps,
            serves,
            None,
        ));
        for each in [1_000.0, 5_000.0] {
            self.rows.push(Row::single(
                9,
                format!("gateways one Redis serves at {each:.0} req/s each (R ÷ {each:.0})"),
                Unit::Decimal,
                serves / each,
                None,
            ));
        }
    }

    /// [`Bench::checked_load`] with Redis's counters read around it.
    fn redis_load(&self, redis: &Redis, target: &Target, mode: Mode) -> Result<RedisRun> {
        let served = self.mock_served()?;
        let before = redis.sample()?;
        let started = Instant::now();
        let report = self.checked_load(target, mode, None)?;
        let wall_s = started.elapsed().as_secs_f64();
        let after = redis.sample()?;
        let served = self.mock_served()?.saturating_sub(served);
        Ok(RedisRun { report, redis: after.since(&before), served, wall_s })
    }
}

/// Scenario 9's two backends, in the order of its figures.
const BACKENDS: [&str; 2] = ["sqlite", "redis"];

/// One load run of scenario 9 with what Redis did meanwhile.
struct RedisRun {
    report: LoadReport,
    /// Redis's counters over the run ([`RedisSample::since`]).
    redis: RedisSample,
    /// Requests the mock answered, the load generator's warm-ups included (they went
    /// through Redis too).
    served: u64,
    /// The run's wall time, the load generator's start and warm-up included.
    wall_s: f64,
}

/// What a request costs Redis, from the counters of some runs and the requests they served.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
struct RedisFigures {
    /// Reserve script calls per request: the script reads the client key's quota hash with
    /// one `HGETALL` per call, and nothing else sends `HGETALL` while requests run.
    hot_path: f64,
    /// The other script calls per request: settlement batches and the state store's writes.
    off_path: f64,
    /// Every command Redis counted, per request (inner `redis.call`s included).
    commands: f64,
    /// Every command but the script calls themselves, per request.
    inner: f64,
    /// Microseconds Redis spent in the script calls, per request.
    script_us: f64,
    /// Redis's CPU (user + system) per request, in microseconds.
    cpu_us: f64,
}

impl RedisFigures {
    fn of(delta: &RedisSample, requests: u64) -> Self {
        let n = requests.max(1) as f64;
        let scripts = delta.calls("evalsha") + delta.calls("eval");
        let reserves = delta.calls("hgetall");
        let script_usec = ["evalsha", "eval"]
            .iter()
            .filter_map(|name| delta.commands.get(*name))
            .map(|stat| stat.usec)
            .sum::<u64>();
        Self {
            hot_path: reserves as f64 / n,
            off_path: scripts.saturating_sub(reserves) as f64 / n,
            commands: delta.total_calls() as f64 / n,
            inner: delta.total_calls().saturating_sub(scripts) as f64 / n,
            script_us: script_usec as f64 / n,
            cpu_us: delta.cpu_s * 1e6 / n,
        }
    }
}

/// A stream run's time to first event (p50) and time between events (p99), in µs.
type StreamTiming = (f64, f64);

/// Per target (untranslated, translated): the CPU µs per request or stream of each round, and
/// each stream round's timing.
type RoundFigures = ([Vec<f64>; 2], [Vec<StreamTiming>; 2]);

fn scenario_name(number: u8) -> &'static str {
    match number {
        1 => "fixed rate, added latency",
        2 => "closed loop throughput",
        3 => "streaming",
        4 => "open streams memory",
        5 => "layer costs",
        6 => "per-IP limiter",
        7 => "cold start and idle memory",
        8 => "translation (Anthropic client, OpenAI provider)",
        _ => "Redis backend (SQLite vs Redis, 1 to 3 instances, Redis cost per request)",
    }
}

/// `taskset -c CPU program`, or `program` when not pinning.
fn pinned(pin: bool, cpu: u8, program: &Path) -> Command {
    if pin {
        let mut command = Command::new("taskset");
        command.arg("-c").arg(cpu.to_string()).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// A description of the pinning, or `None` when it is off or impossible.
fn pinning(wanted: bool) -> Option<String> {
    // Not `available_parallelism`: it honours this process's own affinity, and the runner
    // itself runs pinned to the client CPU.
    let cpus = std::fs::read_to_string("/proc/cpuinfo")
        .map(|info| info.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(1);
    let taskset = Command::new("taskset")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    (wanted && taskset && cpus >= 2).then(|| {
        format!("taskset: gateway on CPU {GATEWAY_CPU}; mock and load generator on CPU {CLIENT_CPU} ({cpus} CPUs)")
    })
}

/// The `addr` of the gateway's `listening` log line.
fn listening_addr(line: &str) -> Option<String> {
    let entry: Value = serde_json::from_str(line).ok()?;
    (entry["msg"] == "listening").then(|| entry["addr"].as_str().map(str::to_owned))?
}

fn latency(report: &LoadReport) -> Result<crate::summary::Summary> {
    report.latency.context("no latency figures")
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// How long a load run should take, to bound the wait for it.
fn expected_duration(mode: Mode) -> Duration {
    match mode {
        Mode::Rate { duration, .. } | Mode::Closed { duration, .. } => duration,
        Mode::Stream { rounds, events, interval, .. } => interval * events * rounds,
    }
}

/// A throwaway CA and a certificate for 127.0.0.1 signed by it, written to `dir`.
fn make_tls(dir: &Path) -> Result<TlsFiles> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).context("bench CA")?;
    ca.distinguished_name.push(DnType::CommonName, "cliproxy bench CA (throwaway)");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().context("bench CA key")?;
    let ca_cert = ca.self_signed(&ca_key).context("bench CA certificate")?;
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .context("bench server certificate")?;
    leaf.distinguished_name.push(DnType::CommonName, "cliproxy bench");
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().context("bench server key")?;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).context("signing the bench certificate")?;
    let files = TlsFiles {
        ca_pem: ca_cert.pem().into_bytes(),
        cert_file: dir.join("cert.pem"),
        key_file: dir.join("key.pem"),
    };
    std::fs::write(&files.cert_file, format!("{}{}", leaf_cert.pem(), ca_cert.pem()))
        .with_context(|| format!("cannot write {}", files.cert_file.display()))?;
    let mut key = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&files.key_file)
        .with_context(|| format!("cannot create {}", files.key_file.display()))?;
    key.write_all(leaf_key.serialize_pem().as_bytes())
        .with_context(|| format!("cannot write {}", files.key_file.display()))?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::generate().unwrap()
    }

    #[test]
    fn the_gateway_config_loads_with_every_layer_on() {
        let dir = tempfile_dir("config");
        let keys = keys();
        let tls = make_tls(&dir).unwrap();
        for (layers, tls) in
            [(Layers::ALL, None), (Layers::NO_AUDIT_METRICS, None), (Layers::TLS, Some(&tls))]
        {
            let yaml = gateway_config(&dir, &layers, "http://127.0.0.1:9", &keys, tls, None);
            let config = cliproxy_server::config::Config::from_yaml(&yaml)
                .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
            let text = format!("{config:?}");
            assert!(!text.contains(&keys.client), "the client key is redacted in Debug");
            assert!(yaml.contains("127.0.0.0/8") && yaml.contains("encryption: {enabled: true"));
            assert_eq!(yaml.contains("audit: {enabled: true"), layers.audit_metrics, "{yaml}");
            assert_eq!(yaml.contains("tls: {enabled: true"), layers.tls, "{yaml}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn scenario_9_configs_load_with_limits_and_their_backend() {
        let dir = tempfile_dir("config-9");
        let keys = keys();
        let url = "redis://127.0.0.1:6390";
        for layers in
            [Layers::SQLITE_LIMITED, Layers::REDIS[0], Layers::REDIS[2], Layers::REDIS_AOF]
        {
            let yaml = gateway_config(&dir, &layers, "http://127.0.0.1:9", &keys, None, Some(url));
            let config = cliproxy_server::config::Config::from_yaml(&yaml)
                .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
            let text = format!("{config:?}");
            assert!(!text.contains(&keys.client), "the client key is redacted in Debug");
            assert!(yaml.contains(KEY_LIMITS), "{yaml}");
            assert_eq!(yaml.contains("backend: redis"), layers.redis, "{yaml}");
            assert_eq!(yaml.contains(url), layers.redis, "{yaml}");
            let named = format!("instance_id: \"{}\"", layers.name);
            assert_eq!(yaml.contains(&named), layers.redis, "{yaml}");
        }
        // Without a running Redis a Redis variant is not silently put on SQLite: the runner
        // refuses it (`config_path`), and the config itself falls back only when asked.
        let yaml = gateway_config(&dir, &Layers::ALL, "http://127.0.0.1:9", &keys, None, Some(url));
        assert!(!yaml.contains("backend: redis") && !yaml.contains(KEY_LIMITS), "{yaml}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_listening_line_is_recognised() {
        let line = r#"{"msg":"listening","level":"INFO","addr":"127.0.0.1:40123"}"#;
        assert_eq!(listening_addr(line).as_deref(), Some("127.0.0.1:40123"));
        assert_eq!(listening_addr(r#"{"msg":"metrics listening","addr":"127.0.0.1:9"}"#), None);
        assert_eq!(listening_addr("listening 127.0.0.1:1"), None);
    }

    #[test]
    fn median_and_expected_durations() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
        let stream =
            Mode::Stream { streams: 3, rounds: 2, events: 5, interval: Duration::from_millis(10) };
        assert_eq!(expected_duration(stream), Duration::from_millis(100));
    }

    #[test]
    fn an_unknown_scenario_is_refused() {
        let options = RunOptions {
            server: PathBuf::from("/nonexistent"),
            out: PathBuf::from("/nonexistent"),
            quick: true,
            scenarios: vec![10],
            limiter_output: None,
            pin: false,
            command: String::new(),
        };
        let error = run(&options).unwrap_err().to_string();
        assert!(error.contains("no scenario 10"), "{error}");
    }

    #[test]
    fn redis_figures_split_the_hot_path_from_the_batches() {
        // 1,000 requests: 1,000 reserves (one HGETALL each) and 150 batch calls, 12 commands
        // inside each reserve and 20 inside each batch, 0.05 s of Redis CPU.
        let text = "cmdstat_evalsha:calls=1150,usec=60000\r\n\
                    cmdstat_hgetall:calls=1000,usec=900\r\n\
                    cmdstat_hget:calls=11000,usec=5000\r\n\
                    cmdstat_hset:calls=3000,usec=2000\r\n";
        let delta = RedisSample {
            commands: crate::redis::parse_commandstats(text),
            cpu_s: 0.05,
            cpu_ns: 50_000_000,
        };
        let figures = RedisFigures::of(&delta, 1_000);
        assert_eq!(figures.hot_path, 1.0);
        assert_eq!(figures.off_path, 0.15);
        assert_eq!(figures.commands, 16.15);
        assert_eq!(figures.inner, 15.0);
        assert_eq!(figures.script_us, 60.0);
        assert!((figures.cpu_us - 50.0).abs() < 1e-9, "{figures:?}");
    }

    fn tempfile_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("cliproxy-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
