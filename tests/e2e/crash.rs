//! Crash consistency (issue 9, item 3; issue 17): the real binary is killed with SIGKILL at
//! random moments while credential writes, quota updates and audit writes are in flight, many
//! times over (`CLIPROXY_CRASH_ITERATIONS`, default 200; `CLIPROXY_CRASH_SEED` replays a run;
//! `cargo xtask crash` sets both). Each run before a kill lasts several flush intervals, so that
//! a gateway which never flushes (or flushes late) loses usage older than one interval and
//! fails. After every kill: every credential file decrypts and no temporary file is left, every
//! acknowledged credential write is there, the quota usage the restarted gateway reports (the
//! `cliproxy_quota_remaining` metric, which must be there) lies between the acknowledged usage
//! less what was answered within one flush interval (plus a stated margin) of the kill and the
//! acknowledged usage plus what was in flight, and the oldest usage lost was answered no more
//! than that long before the kill; the audit chain verifies up to its last complete line (a
//! torn last line is tolerated and counted), and every request answered before that cut-off
//! has its audit line, found by request id (its own line, or for a refused key the summary line
//! that lists its id), in the log the restarted gateway continues. Each
//! lane restarts its gateway on the same directories for ten kills, then moves to fresh ones.
//!
//! Client keys and usage history (issue 22): the drivers also create client keys through the
//! management API at random moments (so that some kills land during a creation) and send part
//! of their requests with them. After every restart each acknowledged key (201 with the key)
//! is listed and answers 200; a key listed but never acknowledged must be one whose creation
//! the kill cut off; every row of the store's `client_keys` table is listed (none is broken
//! or hidden). The requests the usage history (`GET /v0/management/usage?by=key`) holds for the
//! lane's keys lie between the acknowledged requests less those answered within one flush
//! interval plus the margin of the kill and the acknowledged requests plus those in flight.
//!
//! The random delay before each kill is the experiment, not synchronisation: it draws the
//! moment of the crash from a seeded generator, so that a failure reproduces with its seed.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cliproxy_e2e::disk::*;
use cliproxy_e2e::*;
use reqwest::Method;
use serde_json::{Value, json};

const CATEGORY: &str = "crash-consistency";
/// `state.flush_interval` of the runs: short, so that runs of several intervals keep the whole
/// test about as quick as it was with runs of at most 250 ms and an interval of 100 ms.
const FLUSH: Duration = Duration::from_millis(40);
/// Gateways killed and restarted side by side (each on its own directories).
const LANES: u64 = 4;
/// What a kill may lose on top of one flush interval: the writer thread's wake-up and commit
/// (SQLite WAL, no fsync at commit), the audit writer's batching (it writes within about
/// 10 ms), and the scheduling of four gateways and their drivers on two shared cores. A
/// gateway that never flushes, or flushes at ten times the interval, loses usage answered
/// longer ago than this in most runs, since runs last at least `MIN_RUN`.
const MARGIN: Duration = Duration::from_millis(160);
/// Kills on the same directories before a lane moves to fresh ones: the audit log, which
/// every kill verifies from its first line, then stays short instead of growing (and taking
/// longer to verify) with every kill of the lane.
const KILLS_PER_DIRECTORY: u64 = 10;
/// Concurrent drivers per gateway, each a random mix of the three kinds of work.
const DRIVERS: u64 = 2;
/// Credentials a driver keeps at most (it adds until it has these many).
const MAX_CREDENTIALS_PER_DRIVER: usize = 4;
/// One draw of a driver's work in this many creates a client key: rare next to the rest,
/// since every acknowledged key is checked with a request after each later restart of its
/// directories (about one creation per driver and run, some 15 keys per directory: some 300
/// creations and 1,800 checks in the 200 kills), yet often enough that some kills land during
/// a creation (4 to 9 of the 200 in the runs measured).
const KEY_CREATION_ONE_IN: u64 = 96;
/// The models a created client key may use: the one the drivers ask for, so that the key
/// serves them, and a value the listing after a restart must show unchanged.
const KEY_MODELS: &str = "mock-*";
/// The name of the config file's client key ([`CLIENT_KEY`] in [`faults_config`]).
const CONFIG_KEY_NAME: &str = "e2e";
/// The shortest and longest random run before a kill: five to seven flush intervals, all of
/// them at least one interval plus the margin.
const MIN_RUN: Duration = FLUSH.saturating_mul(5);
const MAX_RUN: Duration = FLUSH.saturating_mul(7);
const _: () = assert!(MIN_RUN.as_millis() >= FLUSH.as_millis() + MARGIN.as_millis());

/// A small seeded generator (SplitMix64): reproducible kill points without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What a lane found, summed over the lanes for the report.
#[derive(Default, Debug)]
struct Tally {
    iterations: u64,
    kills_credential: u64,
    kills_quota: u64,
    kills_audit: u64,
    credentials_checked: u64,
    torn_audit_lines: u64,
    /// Largest shortfall of stored usage below the acknowledged usage (tokens).
    max_drift_below: u64,
    /// Largest shortfall allowed (what one flush interval held) at that point.
    bound_at_max_drift: u64,
    /// Largest excess of stored usage above the acknowledged usage (tokens).
    max_drift_above: u64,
    /// The oldest answered usage lost by a kill: milliseconds between its answer and the kill.
    max_lost_age_ms: u64,
    /// Kills that lost some acknowledged usage (the age above is measured on these).
    kills_losing_usage: u64,
    acked_requests: u64,
    acked_credential_writes: u64,
    /// Answered requests whose audit line was looked up (by request id) and found after a
    /// restart: those answered before the cut-off of one flush interval plus the margin.
    audit_lines_checked: u64,
    /// Request ids found in summary lines (refused keys past the first of their address and
    /// second): the summaries were written, and in time, or the check above fails.
    audit_ids_in_summaries: u64,
    /// Kills with a client key creation in flight (counted apart from the kinds above: a
    /// creation may be in flight beside any of them).
    kills_key_creation: u64,
    /// Client key creations acknowledged (201 with the key).
    keys_created: u64,
    /// Creations in flight at a kill whose key was stored all the same (listed after the
    /// restart): the kill landed after the write, before the answer.
    keys_landed: u64,
    /// Acknowledged keys found listed and answering 200 after restarts (a key counts once per
    /// restart).
    keys_checked: u64,
    /// Largest shortfall of the usage history's requests below the acknowledged ones.
    max_history_lost: u64,
    /// Largest shortfall allowed (the requests answered within one flush interval plus the
    /// margin of the kill) at that point.
    bound_at_max_history_lost: u64,
    /// Largest excess of the usage history's requests above the acknowledged ones.
    max_history_above: u64,
    /// The oldest request lost from the usage history by a kill: milliseconds between its
    /// answer and the kill.
    max_history_lost_age_ms: u64,
}

impl Tally {
    fn add(&mut self, other: &Self) {
        self.iterations += other.iterations;
        self.kills_credential += other.kills_credential;
        self.kills_quota += other.kills_quota;
        self.kills_audit += other.kills_audit;
        self.credentials_checked += other.credentials_checked;
        self.torn_audit_lines += other.torn_audit_lines;
        self.acked_requests += other.acked_requests;
        self.acked_credential_writes += other.acked_credential_writes;
        self.audit_lines_checked += other.audit_lines_checked;
        self.audit_ids_in_summaries += other.audit_ids_in_summaries;
        self.kills_losing_usage += other.kills_losing_usage;
        self.kills_key_creation += other.kills_key_creation;
        self.keys_created += other.keys_created;
        self.keys_landed += other.keys_landed;
        self.keys_checked += other.keys_checked;
        if other.max_history_lost >= self.max_history_lost {
            self.max_history_lost = other.max_history_lost;
            self.bound_at_max_history_lost = other.bound_at_max_history_lost;
        }
        self.max_history_above = self.max_history_above.max(other.max_history_above);
        self.max_history_lost_age_ms =
            self.max_history_lost_age_ms.max(other.max_history_lost_age_ms);
        if other.max_drift_below >= self.max_drift_below {
            self.max_drift_below = other.max_drift_below;
            self.bound_at_max_drift = other.bound_at_max_drift;
        }
        self.max_drift_above = self.max_drift_above.max(other.max_drift_above);
        self.max_lost_age_ms = self.max_lost_age_ms.max(other.max_lost_age_ms);
    }
}

/// A credential operation: a write of a token, or a deletion.
#[derive(Clone, Debug, PartialEq, Eq)]
enum CredOp {
    Put(String, String),
    Delete(String),
}

/// What the drivers share with the lane: acknowledgements, and what is in flight.
#[derive(Default)]
struct Driven {
    stop: AtomicBool,
    /// id → token of every credential whose last acknowledged operation was a write.
    present: Mutex<BTreeMap<String, String>>,
    /// Per driver, the credential operation in flight (its answer not yet read). Each driver
    /// owns its credential ids, so that the operations on one id are never concurrent.
    cred_in_flight: Mutex<BTreeMap<u64, CredOp>>,
    acked_cred_ops: AtomicU64,
    /// Proxied requests sent and not yet answered.
    chats_in_flight: AtomicU64,
    /// Tokens of the proxied requests answered 200, with the time of each answer.
    acked: Mutex<Vec<(Instant, u64)>>,
    /// Tokens one request is charged (all requests are the same).
    per_request: AtomicU64,
    /// Audit-only requests (a refused key, a credential listing) in flight.
    audit_in_flight: AtomicU64,
    /// Every answered request: when its answer was read, its `x-request-id`, and the
    /// `event_type` of the audit line it must have written.
    answered: Mutex<Vec<Answered>>,
    /// name → key of every client key whose creation was acknowledged (201 with the key) on
    /// these directories, in this run and the runs before.
    keys: Mutex<BTreeMap<String, String>>,
    /// Per driver, the name of the client key whose creation is in flight.
    key_in_flight: Mutex<BTreeMap<u64, String>>,
    acked_key_creations: AtomicU64,
}

/// One answered request, to be found in the audit log.
#[derive(Clone, Debug)]
struct Answered {
    at: Instant,
    request_id: String,
    event_type: &'static str,
}

impl Driven {
    /// Notes a request whose answer was read completely just now, with the audit line it owes.
    fn answered(&self, request_id: String, event_type: &'static str) {
        self.answered.lock().unwrap().push(Answered { at: Instant::now(), request_id, event_type });
    }
}

/// The `x-request-id` of an answer (every answer carries one).
fn request_id(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("every answer carries x-request-id")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    let iterations: u64 = std::env::var("CLIPROXY_CRASH_ITERATIONS")
        .ok()
        .map(|v| v.parse().expect("CLIPROXY_CRASH_ITERATIONS is a number"))
        .unwrap_or(200);
    let seed: u64 = std::env::var("CLIPROXY_CRASH_SEED")
        .ok()
        .map(|v| v.parse().expect("CLIPROXY_CRASH_SEED is a number"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!(
        "crash consistency: {iterations} kills, seed {seed} (replay with CLIPROXY_CRASH_SEED={seed})"
    );
    let started = Instant::now();
    let lanes = LANES.min(iterations.max(1));
    let mut handles = Vec::new();
    for lane in 0..lanes {
        let count = iterations / lanes + u64::from(lane < iterations % lanes);
        handles.push(tokio::spawn(run_lane(lane, count, seed.wrapping_add(lane))));
    }
    let mut total = Tally::default();
    for handle in handles {
        let tally = handle.await.unwrap_or_else(|e| {
            std::panic::resume_unwind(e.into_panic());
        });
        total.add(&tally);
    }
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("crash consistency: {total:?} in {seconds:.1} s (seed {seed})");
    assert_eq!(total.iterations, iterations);
    if iterations >= 50 {
        // The kill points must actually land in the middle of the work, and the checks must
        // have had something to check.
        assert!(total.kills_credential > 0, "no kill during a credential write: {total:?}");
        assert!(total.kills_quota > 0, "no kill during a quota update: {total:?}");
        assert!(total.acked_requests > 0 && total.acked_credential_writes > 0, "{total:?}");
        assert!(total.audit_lines_checked > 0, "no audit line was looked up: {total:?}");
        assert!(total.audit_ids_in_summaries > 0, "no refused key was summarised: {total:?}");
        assert!(total.keys_created > 0 && total.keys_checked > 0, "no client key: {total:?}");
    }
    let test = "sigkill_at_random_moments_loses_nothing_acknowledged";
    // One scenario, repeated: the kills are iterations, not distinct cases.
    report::cases(CATEGORY, test, 1);
    report::iterations(CATEGORY, test, usize::try_from(iterations).unwrap_or(usize::MAX));
    report::figure(CATEGORY, "iterations (SIGKILLs)", iterations, "kills");
    report::figure(CATEGORY, "seed (CLIPROXY_CRASH_SEED)", seed.to_string(), "");
    report::figure(
        CATEGORY,
        "kills with a credential write in flight",
        total.kills_credential,
        "kills",
    );
    report::figure(
        CATEGORY,
        "kills with a proxied request (quota update) but no credential write in flight",
        total.kills_quota,
        "kills",
    );
    report::figure(
        CATEGORY,
        "kills with only audit-writing requests in flight",
        total.kills_audit,
        "kills",
    );
    report::figure(
        CATEGORY,
        "credentials checked after kills",
        total.credentials_checked,
        "credentials",
    );
    report::figure(
        CATEGORY,
        "acknowledged credential writes",
        total.acked_credential_writes,
        "writes",
    );
    report::figure(CATEGORY, "acknowledged proxied requests", total.acked_requests, "requests");
    report::figure(
        CATEGORY,
        "max quota usage lost (below acknowledged)",
        total.max_drift_below,
        "tokens",
    );
    report::figure(
        CATEGORY,
        "bound at that kill (one flush interval of usage)",
        total.bound_at_max_drift,
        "tokens",
    );
    report::figure(
        CATEGORY,
        "max quota usage above acknowledged (in flight)",
        total.max_drift_above,
        "tokens",
    );
    report::figure(
        CATEGORY,
        "oldest answered usage lost (answered this long before the kill)",
        total.max_lost_age_ms,
        "ms",
    );
    report::figure(
        CATEGORY,
        "kills that lost some acknowledged usage",
        total.kills_losing_usage,
        "kills",
    );
    report::figure(
        CATEGORY,
        "allowed age of lost usage and audit lines (one flush interval + margin)",
        (FLUSH + MARGIN).as_millis() as u64,
        "ms",
    );
    report::figure(
        CATEGORY,
        "acknowledged requests found in the audit log by request id",
        total.audit_lines_checked,
        "requests",
    );
    report::figure(
        CATEGORY,
        "refused requests found by id in a summary line",
        total.audit_ids_in_summaries,
        "requests",
    );
    report::figure(
        CATEGORY,
        "run before each kill",
        format!("{}-{} ms", MIN_RUN.as_millis(), MAX_RUN.as_millis()),
        "",
    );
    report::figure(CATEGORY, "client keys created (acknowledged)", total.keys_created, "keys");
    report::figure(
        CATEGORY,
        "kills with a client key creation in flight",
        total.kills_key_creation,
        "kills",
    );
    report::figure(
        CATEGORY,
        "creations cut off by a kill found stored (listed after the restart)",
        total.keys_landed,
        "keys",
    );
    report::figure(
        CATEGORY,
        "acknowledged client keys checked after restarts (listed, answered 200)",
        total.keys_checked,
        "keys",
    );
    report::figure(
        CATEGORY,
        "max usage-history requests lost (below acknowledged)",
        total.max_history_lost,
        "requests",
    );
    report::figure(
        CATEGORY,
        "usage-history bound at that kill (requests answered within one flush interval + margin)",
        total.bound_at_max_history_lost,
        "requests",
    );
    report::figure(
        CATEGORY,
        "max usage-history requests above acknowledged (in flight)",
        total.max_history_above,
        "requests",
    );
    report::figure(
        CATEGORY,
        "oldest usage-history request lost (answered this long before the kill)",
        total.max_history_lost_age_ms,
        "ms",
    );
    report::figure(CATEGORY, "state.flush_interval", FLUSH.as_millis() as u64, "ms");
    report::figure(CATEGORY, "torn audit lines seen", total.torn_audit_lines, "lines");
    report::figure(CATEGORY, "total duration", (seconds * 10.0).round() / 10.0, "s");
}

/// One lane: `count` kills, on fresh directories every `KILLS_PER_DIRECTORY` kills.
async fn run_lane(lane: u64, count: u64, seed: u64) -> Tally {
    let mut rng = Rng(seed);
    let mut tally = Tally::default();
    let mut first = 0;
    while first < count {
        let kills = KILLS_PER_DIRECTORY.min(count - first);
        tally.add(&run_directories(lane, first, kills, seed, &mut rng).await);
        first += kills;
    }
    tally
}

/// One gateway's directories, killed `count` times (iterations `first..first + count` of the
/// lane), then started a last time.
async fn run_directories(lane: u64, first: u64, count: u64, seed: u64, rng: &mut Rng) -> Tally {
    let harness = Harness::new();
    let base = harness.config_path().parent().unwrap().to_owned();
    let audit = base.join("audit").join("audit.log");
    let state = base.join("state").join("state.db");
    faults_config(
        &harness,
        "http://127.0.0.1:9",
        &audit,
        &state,
        &format!("{}ms", FLUSH.as_millis()),
    );
    let mut tally = Tally::default();
    let mut present: BTreeMap<String, String> = BTreeMap::new();
    let mut keys = KeyBook::default();
    // What the last kill left to check once the gateway is back.
    let mut after_kill: Option<AfterKill> = None;
    let mut audit_index = AuditIndex::default();
    for iteration in first..first + count {
        let context = format!("lane {lane}, iteration {iteration} (seed {seed})");
        // Restart on the same directories: it must come up, read back the usage and continue
        // the audit log.
        let mut gateway = harness.start().await;
        // Both read before any request of this run, each of which would add to them; side
        // by side, since the lane waits for them before its next run.
        let (now_stored, history) = tokio::join!(
            stored_usage(&gateway, &context),
            stored_history(&gateway, &context, &keys)
        );
        let keys_in_flight = after_kill.as_ref().map(|l| l.keys_in_flight.clone());
        if let Some(last) = after_kill.take() {
            last.check(&context, now_stored, history, &audit, &mut audit_index, &mut tally);
        }

        let driven = Arc::new(Driven::default());
        *driven.present.lock().unwrap() = present.clone();
        // The client keys: every acknowledged one listed and working, through `driven`, so
        // that the requests of the check count as acknowledged usage of this run.
        keys.check(
            &gateway,
            &state,
            &keys_in_flight.unwrap_or_default(),
            &context,
            &driven,
            &mut tally,
        )
        .await;
        *driven.keys.lock().unwrap() = keys.acked.clone();
        let workers: Vec<_> = (0..DRIVERS)
            .map(|driver| {
                let ids = format!("c{lane}-d{driver}-i{iteration}");
                tokio::spawn(drive(gateway.url(), driven.clone(), driver, ids, rng.next()))
            })
            .collect();
        // The experiment: run for a random time of several flush intervals, then crash.
        let spread = (MAX_RUN - MIN_RUN).as_millis() as u64;
        tokio::time::sleep(MIN_RUN + Duration::from_millis(rng.below(spread + 1))).await;
        // What was in flight at the kill, to classify it (a snapshot: an operation may start
        // between it and the kill).
        let cred_at_kill = !driven.cred_in_flight.lock().unwrap().is_empty();
        let key_at_kill = !driven.key_in_flight.lock().unwrap().is_empty();
        let chats_at_kill = driven.chats_in_flight.load(Ordering::SeqCst);
        let audit_in_flight = driven.audit_in_flight.load(Ordering::SeqCst);
        let killed_at = Instant::now();
        gateway.kill().await;
        driven.stop.store(true, Ordering::SeqCst);
        for worker in workers {
            worker.await.unwrap();
        }
        // Once the drivers have stopped, what they still hold as in flight is exactly what
        // the kill cut off (or what was sent after it and never arrived): the uncertain part.
        let cred_in_flight = driven.cred_in_flight.lock().unwrap().clone();
        let chats_in_flight = driven.chats_in_flight.load(Ordering::SeqCst);
        if cred_at_kill {
            tally.kills_credential += 1;
        } else if chats_at_kill > 0 {
            tally.kills_quota += 1;
        } else if audit_in_flight > 0 {
            tally.kills_audit += 1;
        }
        if key_at_kill {
            tally.kills_key_creation += 1;
        }
        tally.iterations += 1;
        // The keys acknowledged so far; those in flight at the kill are looked for after the
        // restart.
        keys.acked = driven.keys.lock().unwrap().clone();
        tally.keys_created += driven.acked_key_creations.load(Ordering::SeqCst);
        let keys_in_flight: Vec<String> =
            driven.key_in_flight.lock().unwrap().values().cloned().collect();

        // Credentials: every file loads and decrypts; every acknowledged one is there with
        // its token; the one in flight is there or not, old or new.
        let on_disk: BTreeMap<String, String> = vault(&harness)
            .load_all()
            .unwrap_or_else(|e| panic!("{context}: a credential file does not load: {e}"))
            .into_iter()
            .map(|c| {
                let cliproxy_vault::CredentialSecret::ApiKey(token) = &c.secret else {
                    panic!("{context}: {} is not an API key", c.id)
                };
                (c.id.clone(), token.expose().to_owned())
            })
            .collect();
        let mut acknowledged = driven.present.lock().unwrap().clone();
        for op in cred_in_flight.values() {
            match op {
                CredOp::Put(id, token) => {
                    let old = acknowledged.get(id).cloned();
                    let now = on_disk.get(id).cloned();
                    assert!(
                        now == old || now.as_deref() == Some(token.as_str()),
                        "{context}: credential {id} in flight is {now:?}, neither the old {old:?} nor the new"
                    );
                    match now {
                        Some(now) => acknowledged.insert(id.clone(), now),
                        None => acknowledged.remove(id),
                    };
                }
                CredOp::Delete(id) => {
                    if !on_disk.contains_key(id) {
                        acknowledged.remove(id);
                    }
                }
            }
        }
        assert_eq!(
            on_disk, acknowledged,
            "{context}: the stored credentials differ from the acknowledged ones"
        );
        tally.credentials_checked += on_disk.len() as u64;
        present = on_disk;
        let temps: Vec<PathBuf> = std::fs::read_dir(harness.auth_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().contains(".tmp-")))
            .collect();
        // A temporary file of a write killed half-way may exist until the next start (which
        // removes it); the one before must have been cleaned.
        assert!(temps.len() <= 1, "{context}: temporary files left behind: {temps:?}");

        // Audit: the chain verifies up to its last complete line; a torn last line is noted.
        let (ok, report) = audit_verify(&audit);
        assert!(ok, "{context}: the audit chain does not verify:\n{report}");
        if report.contains("no newline") {
            tally.torn_audit_lines += 1;
        }

        // Quota and audit lines: what the next start must find. The cut-off is one flush
        // interval plus the margin before the kill: usage answered earlier must be stored,
        // requests answered earlier must have their audit line.
        let cutoff = FLUSH + MARGIN;
        let acked_list = driven.acked.lock().unwrap().clone();
        let acked_now: u64 = acked_list.iter().map(|(_, t)| t).sum();
        let recent: u64 = acked_list
            .iter()
            .filter(|(at, _)| killed_at.duration_since(*at) <= cutoff)
            .map(|(_, t)| t)
            .sum();
        let per_request = driven.per_request.load(Ordering::SeqCst).max(1);
        let acked_total = now_stored + acked_now;
        // The usage history, by requests: the same accounting with a count for the tokens.
        let requests_acked = history + acked_list.len() as u64;
        let requests_recent =
            acked_list.iter().filter(|(at, _)| killed_at.duration_since(*at) <= cutoff).count();
        let answered = driven.answered.lock().unwrap().clone();
        tally.acked_requests += acked_list.len() as u64;
        tally.acked_credential_writes += driven.acked_cred_ops.load(Ordering::SeqCst);
        after_kill = Some(AfterKill {
            acked: acked_total,
            lower: acked_total - recent,
            upper: acked_total + chats_in_flight * (per_request + 64),
            acks_newest_first: acked_list
                .iter()
                .rev()
                .map(|(at, tokens)| (killed_at.duration_since(*at).as_millis() as u64, *tokens))
                .collect(),
            owed: answered
                .into_iter()
                .filter(|answer| killed_at.duration_since(answer.at) > cutoff)
                .collect(),
            requests_acked,
            requests_lower: requests_acked - requests_recent as u64,
            requests_upper: requests_acked + chats_in_flight,
            keys_in_flight,
        });
    }
    // A last start: the gateway comes up cleanly on what the last kill left.
    let gateway = harness.start().await;
    assert_eq!(readiness(&gateway).await.0, 200, "{}", gateway.logs());
    let context = format!("lane {lane}, start after iteration {} (seed {seed})", first + count - 1);
    let (now_stored, history) =
        tokio::join!(stored_usage(&gateway, &context), stored_history(&gateway, &context, &keys));
    let keys_in_flight = after_kill.as_ref().map(|l| l.keys_in_flight.clone());
    if let Some(last) = after_kill.take() {
        last.check(&context, now_stored, history, &audit, &mut audit_index, &mut tally);
    }
    let checks = Arc::new(Driven::default());
    let in_flight = keys_in_flight.unwrap_or_default();
    keys.check(&gateway, &state, &in_flight, &context, &checks, &mut tally).await;
    let temps = std::fs::read_dir(harness.auth_dir())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().contains(".tmp-"))
        .count();
    assert_eq!(temps, 0, "lane {lane}: the start left temporary files in auth.dir");
    tally.audit_ids_in_summaries = audit_index.in_summaries;
    tally
}

/// What a kill left for the restarted gateway to show.
struct AfterKill {
    /// The acknowledged usage (tokens).
    acked: u64,
    /// The least usage that may be read back: the acknowledged usage less what was answered
    /// within one flush interval plus the margin of the kill.
    lower: u64,
    /// The most: the acknowledged usage plus the requests in flight.
    upper: u64,
    /// The answered usage of the last run: (milliseconds before the kill, tokens), newest
    /// first.
    acks_newest_first: Vec<(u64, u64)>,
    /// The requests answered before the cut-off, whose audit lines must be in the log.
    owed: Vec<Answered>,
    /// The requests of the lane's keys acknowledged (answered 200), those before the run
    /// (read back at its start) included.
    requests_acked: u64,
    /// The fewest requests the usage history may hold: the acknowledged ones less those
    /// answered within one flush interval plus the margin of the kill.
    requests_lower: u64,
    /// The most: the acknowledged ones plus those in flight (none counted twice).
    requests_upper: u64,
    /// The names of the client keys whose creation was in flight at the kill.
    keys_in_flight: Vec<String>,
}

impl AfterKill {
    /// Checks the usage the restarted gateway reports (`stored`), the requests its usage
    /// history holds (`history`) and the audit log.
    fn check(
        &self,
        context: &str,
        stored: u64,
        history: u64,
        audit: &std::path::Path,
        index: &mut AuditIndex,
        tally: &mut Tally,
    ) {
        // The age of the oldest lost usage: the lost tokens are the newest answers (the
        // writer commits in order), so they are covered from the newest answer backwards.
        let lost = self.acked.saturating_sub(stored);
        let mut covered = 0;
        let mut oldest_lost_ms = None;
        for (age, tokens) in &self.acks_newest_first {
            if covered >= lost {
                break;
            }
            covered += tokens;
            oldest_lost_ms = Some(*age);
        }
        if let Some(age) = oldest_lost_ms {
            tally.kills_losing_usage += 1;
            tally.max_lost_age_ms = tally.max_lost_age_ms.max(age);
            let allowed = (FLUSH + MARGIN).as_millis() as u64;
            assert!(
                age <= allowed,
                "{context}: usage answered {age} ms before the kill was lost ({lost} of {} \
                 acknowledged tokens); at most one flush interval ({FLUSH:?}) plus the margin \
                 ({MARGIN:?}) may be lost",
                self.acked
            );
        }
        assert!(
            (self.lower..=self.upper).contains(&stored),
            "{context}: the quota usage read back is {stored}, expected {}..={} (acknowledged {})",
            self.lower,
            self.upper,
            self.acked
        );
        if self.acked > stored && self.acked - stored >= tally.max_drift_below {
            tally.max_drift_below = self.acked - stored;
            tally.bound_at_max_drift = self.acked - self.lower;
        }
        tally.max_drift_above = tally.max_drift_above.max(stored.saturating_sub(self.acked));

        // The usage history: as the quota usage, by requests.
        assert!(
            (self.requests_lower..=self.requests_upper).contains(&history),
            "{context}: the usage history holds {history} requests of the lane's keys, expected \
             {}..={} (acknowledged {}): at most those answered within one flush interval \
             ({FLUSH:?}) plus the margin ({MARGIN:?}) of the kill may be lost, and none counted \
             twice",
            self.requests_lower,
            self.requests_upper,
            self.requests_acked
        );
        if self.requests_acked > history && self.requests_acked - history >= tally.max_history_lost
        {
            tally.max_history_lost = self.requests_acked - history;
            tally.bound_at_max_history_lost = self.requests_acked - self.requests_lower;
        }
        tally.max_history_above =
            tally.max_history_above.max(history.saturating_sub(self.requests_acked));
        // The age of the oldest request lost from the history, for the report: the beat hands
        // over every request finished since the last one, so a kill loses the newest answers.
        // (The bound above already limits it to one flush interval plus the margin.)
        let lost = self.requests_acked.saturating_sub(history);
        if let Some(index) = lost.checked_sub(1)
            && let Some((age, _)) = self.acks_newest_first.get(index as usize)
        {
            tally.max_history_lost_age_ms = tally.max_history_lost_age_ms.max(*age);
        }

        // Every request answered before the cut-off has its audit line, found by request id
        // and event type.
        let logged = index.update(audit);
        let missing: Vec<String> = self
            .owed
            .iter()
            .filter(|a| !logged.contains(&(a.request_id.clone(), a.event_type.to_owned())))
            .map(|a| format!("{} ({})", a.request_id, a.event_type))
            .collect();
        assert!(
            missing.is_empty(),
            "{context}: {} of {} requests answered more than {:?} before the kill have no \
             audit line, first: {:?}",
            missing.len(),
            self.owed.len(),
            FLUSH + MARGIN,
            &missing[..missing.len().min(5)]
        );
        tally.audit_lines_checked += self.owed.len() as u64;
    }
}

/// The usage the gateway reports (`cliproxy_quota_remaining` of `demo` below the quota); the
/// metric is required, since a missing one would read as no usage at all.
async fn stored_usage(gateway: &Gateway, context: &str) -> u64 {
    let metrics = metrics_addr(gateway).await;
    let remaining =
        metric(metrics, "cliproxy_quota_remaining{provider=\"demo\"}").await.unwrap_or_else(|| {
            panic!("{context}: cliproxy_quota_remaining{{provider=\"demo\"}} is not in /metrics")
        });
    QUOTA - remaining as u64
}

/// The requests the usage history (`GET /v0/management/usage?by=key`, the last 24 hours, all
/// of a lane's run) holds for the lane's keys: the config file's and those `keys` created.
/// A group that is not one of them fails: the history counts only what the lane sent.
async fn stored_history(gateway: &Gateway, context: &str, keys: &KeyBook) -> u64 {
    let (status, report) =
        manage_with(gateway, MANAGEMENT_KEY, Method::GET, "/usage?by=key", None).await;
    assert_eq!(status, 200, "{context}: GET /v0/management/usage: {report}");
    let mut requests = 0;
    for bucket in report["buckets"].as_array().expect("the usage report has buckets") {
        let group = bucket["group"].as_str().expect("a bucket names its key");
        assert!(
            group == CONFIG_KEY_NAME || keys.acked.contains_key(group),
            "{context}: the usage history has requests of `{group}`, not a key the lane used: \
             {report}"
        );
        requests += bucket["requests"].as_u64().expect("a bucket counts its requests");
    }
    assert_eq!(report["totals"]["requests"], json!(requests), "{context}: {report}");
    requests
}

/// The client keys created on one gateway's directories.
#[derive(Default)]
struct KeyBook {
    /// name → key of every key whose creation was acknowledged (201 with the key).
    acked: BTreeMap<String, String>,
    /// Keys whose creation was in flight at a kill and that were stored all the same.
    landed: BTreeSet<String>,
}

impl KeyBook {
    /// After a restart: every acknowledged key is listed and answers 200 (through `driven`,
    /// which counts the requests); a key listed but never acknowledged was in flight at the
    /// kill (`in_flight`; noted as landed); every listed key shows what it was created with;
    /// and every row of the store's `client_keys` table is listed, so that no stored key is
    /// broken or hidden from the gateway.
    async fn check(
        &mut self,
        gateway: &Gateway,
        state: &std::path::Path,
        in_flight: &[String],
        context: &str,
        driven: &Arc<Driven>,
        tally: &mut Tally,
    ) {
        let (status, list) =
            manage_with(gateway, MANAGEMENT_KEY, Method::GET, "/client-keys", None).await;
        assert_eq!(status, 200, "{context}: GET /v0/management/client-keys: {list}");
        let listed: Vec<&Value> = list["client_keys"]
            .as_array()
            .expect("the listing has client_keys")
            .iter()
            .filter(|k| k["source"] == "store")
            .collect();
        let mut listed_ids = BTreeSet::new();
        let mut listed_names = BTreeSet::new();
        for view in &listed {
            let name = view["name"].as_str().expect("a listed key has a name").to_owned();
            if !self.acked.contains_key(&name) && !self.landed.contains(&name) {
                assert!(
                    in_flight.contains(&name),
                    "{context}: client key {name} is listed but its creation was neither \
                     acknowledged nor in flight at the kill"
                );
                self.landed.insert(name.clone());
                tally.keys_landed += 1;
            }
            assert!(
                view["models"] == json!([KEY_MODELS])
                    && view["disabled"] == json!(false)
                    && view["hint"].as_str().is_some_and(|h| h.starts_with("cpk-")),
                "{context}: client key {name} is not listed as it was created: {view}"
            );
            listed_ids.insert(view["id"].as_str().expect("a listed key has an id").to_owned());
            listed_names.insert(name);
        }
        assert_eq!(
            stored_key_ids(state),
            listed_ids,
            "{context}: the rows of the store's client_keys table and the keys listed differ"
        );
        // Each acknowledged key answers a request: all at once, since the lane waits for
        // them before its next run.
        let http = client();
        let mut requests = tokio::task::JoinSet::new();
        for (name, key) in &self.acked {
            assert!(
                listed_names.contains(name),
                "{context}: the acknowledged client key {name} is not listed after the kill"
            );
            let (http, url, driven) = (http.clone(), gateway.url(), Arc::clone(driven));
            let (name, key) = (name.clone(), key.clone());
            requests.spawn(async move { chat_with(&http, &url, &driven, &key, &name).await });
        }
        while let Some(answered) = requests.join_next().await {
            let answered = answered.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
            assert!(answered, "{context}: the gateway went away during the key check");
            tally.keys_checked += 1;
        }
    }
}

/// The ids of the rows of the state store's `client_keys` table, read beside the running
/// gateway (a read-only connection; SQLite's write-ahead log lets it read while the gateway
/// writes).
fn stored_key_ids(state: &std::path::Path) -> BTreeSet<String> {
    let conn =
        rusqlite::Connection::open_with_flags(state, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the state store");
    let mut query = conn.prepare("SELECT id FROM client_keys").expect("query client_keys");
    query
        .query_map([], |row| row.get::<_, String>(0))
        .expect("read client_keys")
        .map(|id| id.expect("a client_keys row"))
        .collect()
}

/// (request id, event type) of every complete line of the audit log, and of every request id
/// a summary line lists (`details.request_ids`), read on from where the last read stopped (the log only grows; a torn last line is left for the next read, and the
/// next start cuts it off, so it is never counted).
#[derive(Default)]
struct AuditIndex {
    offset: usize,
    events: HashSet<(String, String)>,
    /// Request ids read from summary lines' `request_ids`.
    in_summaries: u64,
}

impl AuditIndex {
    fn update(&mut self, file: &std::path::Path) -> &HashSet<(String, String)> {
        let bytes = std::fs::read(file).unwrap_or_default();
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |at| at + 1);
        if complete > self.offset {
            let text = String::from_utf8_lossy(&bytes[self.offset..complete]);
            for line in text.lines() {
                let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                let Some(kind) = entry["event_type"].as_str() else { continue };
                if let Some(id) = entry["request_id"].as_str() {
                    self.events.insert((id.to_owned(), kind.to_owned()));
                }
                // Refused keys past the first of their address and second are written in a
                // summary line that lists their request ids (within one flush interval, as
                // the lines of their own would be): each id listed there is accounted for as
                // one line. A summary that had to leave ids out is not counted for them, so
                // an owed request among those still fails the check.
                for id in entry["details"]["request_ids"].as_array().into_iter().flatten() {
                    if let Some(id) = id.as_str() {
                        self.events.insert((id.to_owned(), kind.to_owned()));
                        self.in_summaries += 1;
                    }
                }
            }
            self.offset = complete;
        }
        &self.events
    }
}

/// One driver: until stopped, a random mix of credential writes through the management API
/// (adds, overwrites and deletions of its own ids, `ids` a prefix unique to the driver and the
/// run), proxied requests (each updates the quota
/// usage and writes audit lines) and requests that only write audit lines (a refused client
/// key, a credential listing).
async fn drive(url: String, driven: Arc<Driven>, driver: u64, ids: String, seed: u64) {
    let http = client();
    let mut rng = Rng(seed);
    let mut n = 0u64;
    while !driven.stop.load(Ordering::SeqCst) {
        n += 1;
        // Credential writes take longest (two fsyncs); drawn less often, so that kills also
        // land while only requests are in flight. Key creations are rarer still (see
        // `KEY_CREATION_ONE_IN`).
        let done = if rng.below(KEY_CREATION_ONE_IN) == 0 {
            key_op(&http, &url, &driven, driver, &ids, n).await
        } else {
            match rng.below(6) {
                0 => credential_op(&http, &url, &driven, driver, &ids, n, &mut rng).await,
                1..=3 => chat_op(&http, &url, &driven, &mut rng).await,
                _ => audit_op(&http, &url, &driven, n).await,
            }
        };
        if !done {
            return;
        }
    }
}

/// One credential write or deletion; `false` when the gateway is gone.
async fn credential_op(
    http: &reqwest::Client,
    url: &str,
    driven: &Driven,
    driver: u64,
    ids: &str,
    n: u64,
    rng: &mut Rng,
) -> bool {
    // The ids this driver wrote in this run and the runs before (the driver's part of the
    // prefix, up to the run): its own, so that no other driver touches them concurrently.
    let owner = ids.rsplit_once("-i").map_or(ids, |(owner, _)| owner);
    let mine: Vec<String> = driven
        .present
        .lock()
        .unwrap()
        .keys()
        .filter(|id| id.starts_with(&format!("{owner}-")))
        .cloned()
        .collect();
    // Past a few credentials per driver, writes overwrite or delete rather than add: the set
    // every check and every start decrypts stays small, instead of growing with each kill.
    let draw = if mine.len() >= MAX_CREDENTIALS_PER_DRIVER { rng.below(2) } else { rng.below(4) };
    let op = match draw {
        0 if !mine.is_empty() => {
            CredOp::Delete(mine[rng.below(mine.len() as u64) as usize].clone())
        }
        // Overwrite one: old or new after a kill, never neither.
        1 if !mine.is_empty() => {
            let id = mine[rng.below(mine.len() as u64) as usize].clone();
            CredOp::Put(id, format!("sk-crash-{ids}-{n}-overwrite"))
        }
        _ => CredOp::Put(format!("{ids}-{n}"), format!("sk-crash-{ids}-{n}-token")),
    };
    driven.cred_in_flight.lock().unwrap().insert(driver, op.clone());
    let request = match &op {
        CredOp::Put(id, token) => http
            .post(format!("{url}/v0/management/auths"))
            .json(&json!({"provider": "oa", "type": "api_key", "token": token, "id": id})),
        CredOp::Delete(id) => {
            http.request(Method::DELETE, format!("{url}/v0/management/auths/oa/{id}"))
        }
    };
    let Ok(response) = request.header("x-management-key", MANAGEMENT_KEY).send().await else {
        return false;
    };
    let status = response.status();
    let id = request_id(&response);
    if response.bytes().await.is_err() {
        return false;
    }
    assert!(status.is_success(), "{op:?} answered {status}");
    driven.answered(id, "credential_access");
    {
        let mut present = driven.present.lock().unwrap();
        match &op {
            CredOp::Put(id, token) => present.insert(id.clone(), token.clone()),
            CredOp::Delete(id) => present.remove(id),
        };
    }
    driven.acked_cred_ops.fetch_add(1, Ordering::SeqCst);
    driven.cred_in_flight.lock().unwrap().remove(&driver);
    true
}

/// One client key creation (`name` from the driver's prefix `ids`, `n`); `false` when the
/// gateway is gone. Acknowledged (201 with the key), the key joins those the drivers use and
/// every restart checks; cut off, its name is left in flight.
async fn key_op(
    http: &reqwest::Client,
    url: &str,
    driven: &Driven,
    driver: u64,
    ids: &str,
    n: u64,
) -> bool {
    let name = format!("k-{ids}-{n}");
    driven.key_in_flight.lock().unwrap().insert(driver, name.clone());
    let sent = http
        .post(format!("{url}/v0/management/client-keys"))
        .header("x-management-key", MANAGEMENT_KEY)
        .json(&json!({"name": name, "models": [KEY_MODELS]}))
        .send()
        .await;
    let Ok(response) = sent else { return false };
    let status = response.status();
    let id = request_id(&response);
    let Ok(body) = response.json::<Value>().await else { return false };
    let key = body["key"].as_str().map(str::to_owned);
    // The key goes to the sweep before anything else can show it.
    if let Some(key) = &key {
        sweep::plant(key);
    }
    assert_eq!(status, 201, "creating client key {name}: {}", body["error"]);
    let key = key.unwrap_or_else(|| panic!("the creation of {name} answered 201 without a key"));
    driven.keys.lock().unwrap().insert(name, key);
    driven.answered(id, "config_change");
    driven.acked_key_creations.fetch_add(1, Ordering::SeqCst);
    driven.key_in_flight.lock().unwrap().remove(&driver);
    true
}

/// One proxied request, with the config file's client key or, one in two once the lane has
/// some, a key it created; `false` when the gateway is gone.
async fn chat_op(http: &reqwest::Client, url: &str, driven: &Driven, rng: &mut Rng) -> bool {
    let created = {
        let keys = driven.keys.lock().unwrap();
        if keys.is_empty() || rng.below(2) == 0 {
            None
        } else {
            let at = rng.below(keys.len() as u64) as usize;
            keys.iter().nth(at).map(|(name, key)| (name.clone(), key.clone()))
        }
    };
    match created {
        Some((name, key)) => chat_with(http, url, driven, &key, &name).await,
        None => chat_with(http, url, driven, CLIENT_KEY, CONFIG_KEY_NAME).await,
    }
}

/// One proxied request with the client key `key` (named `name`), which must be answered 200;
/// `false` when the gateway is gone.
async fn chat_with(
    http: &reqwest::Client,
    url: &str,
    driven: &Driven,
    key: &str,
    name: &str,
) -> bool {
    driven.chats_in_flight.fetch_add(1, Ordering::SeqCst);
    let sent = http
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": "mock-1", "max_tokens": 64,
                      "messages": [{"role": "user", "content": "Hello there"}]}))
        .send()
        .await;
    let Ok(response) = sent else { return false };
    let status = response.status();
    let id = request_id(&response);
    let Ok(body) = response.json::<serde_json::Value>().await else { return false };
    assert_eq!(status, 200, "a request with client key {name}: {body}");
    let tokens = body["usage"]["total_tokens"].as_u64().expect("usage in the reply");
    driven.per_request.store(tokens, Ordering::SeqCst);
    driven.acked.lock().unwrap().push((Instant::now(), tokens));
    driven.answered(id, "provider_request");
    driven.chats_in_flight.fetch_sub(1, Ordering::SeqCst);
    true
}

/// One request that only writes audit lines; `false` when the gateway is gone.
async fn audit_op(http: &reqwest::Client, url: &str, driven: &Driven, n: u64) -> bool {
    driven.audit_in_flight.fetch_add(1, Ordering::SeqCst);
    let (request, event_type) = if n.is_multiple_of(2) {
        let refused = http
            .get(format!("{url}/v1/models"))
            .bearer_auth("cpk-crash-wrong-key-0123456789abcdef");
        (refused, "auth_failure")
    } else {
        let listing = http
            .get(format!("{url}/v0/management/auths"))
            .header("x-management-key", MANAGEMENT_KEY);
        (listing, "credential_access")
    };
    let Ok(response) = request.send().await else { return false };
    let id = request_id(&response);
    if response.bytes().await.is_err() {
        return false;
    }
    driven.answered(id, event_type);
    driven.audit_in_flight.fetch_sub(1, Ordering::SeqCst);
    true
}
/// Quota usage is on disk within one `state.flush_interval` of the answer (SPEC §5: a kill
/// loses at most one interval), measured with a long interval so that the bound is clear of
/// scheduling noise.
///
/// The moment of the commit is not when this test happens to look: it is the modification
/// time the kernel stamped on the SQLite write-ahead log when the writer thread wrote the
/// commit (nothing else writes to the database here). So the test's own polling delay, which
/// a loaded machine can stretch at will, is not part of the measurement; only the gateway's
/// own delay is, against one interval plus a stated margin.
#[tokio::test]
async fn quota_usage_is_durable_within_one_flush_interval() {
    let harness = Harness::new();
    let base = harness.config_path().parent().unwrap().to_owned();
    let state = base.join("state").join("state.db");
    let wal = base.join("state").join("state.db-wal");
    faults_config(&harness, "http://127.0.0.1:9", &base.join("audit.log"), &state, "1s");
    let gateway = harness.start().await;
    let http = client();
    let interval = Duration::from_secs(1);
    // The writer thread's wake-up after its timed wait and the commit (WAL, no fsync), on a
    // machine whose two cores are shared: half an interval.
    let margin = Duration::from_millis(500);
    let mut used = 0;
    let mut rounds = Vec::new();
    for round in 0..4 {
        let before = std::fs::metadata(&wal).and_then(|m| m.modified()).ok();
        let (status, tokens) = chat(&http, &gateway).await;
        assert_eq!(status, 200);
        let answered = std::time::SystemTime::now();
        used += tokens;
        // A bounded poll of the database: the writer thread gives no event to wait on. The
        // deadline only ends a test whose usage never arrives; it is not the bound checked.
        let deadline = Instant::now() + 10 * interval;
        loop {
            let conn = rusqlite::Connection::open_with_flags(
                &state,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .unwrap();
            let stored: i64 = conn
                .query_row(
                    "SELECT coalesce(sum(tokens), 0) FROM quota_usage WHERE scope = 'provider'",
                    [],
                    |row| row.get(0),
                )
                .unwrap();
            if stored as u64 >= used {
                break;
            }
            assert!(Instant::now() < deadline, "round {round}: usage never reached the disk");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let committed = std::fs::metadata(&wal).and_then(|m| m.modified()).unwrap();
        assert!(
            before.is_none_or(|before| committed > before),
            "round {round}: the usage is stored but the write-ahead log was not written"
        );
        // The commit may be stamped a clock tick before the test read the time of the answer
        // (the answer and the usage are settled together); that counts as no delay.
        let took = committed.duration_since(answered).unwrap_or_default();
        rounds.push(took);
        assert!(
            took <= interval + margin,
            "round {round}: usage was committed {took:?} after the answer; at most one flush \
             interval ({interval:?}, plus {margin:?} for the commit) may be lost on a crash"
        );
    }
    let worst = rounds.iter().max().copied().unwrap_or_default();
    let test = "quota_usage_is_durable_within_one_flush_interval";
    report::cases(CATEGORY, test, 1);
    report::iterations(CATEGORY, test, rounds.len());
    report::figure(
        CATEGORY,
        "worst time from answer to durable usage (flush_interval 1 s)",
        worst.as_millis() as u64,
        "ms",
    );
}
