//! The audit log as an operator and an auditor meet it: lines written through the file sink,
//! the chain continued across restarts and rotations, damage found by the verifier, and a
//! failing disk that neither blocks requests nor breaks the chain.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a failed expectation fails the test"
)]

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use cliproxy_audit::{
    Audit, AuditConfig, AuditSink, AuditWriter, Broken, Error, Event, EventType, FileSink, Metrics,
    MetricsConfig, Notice, Notify, OpenWriter, Plane, Problem, Severity, SinkFailure, SinkHealth,
    SinkOptions, SinkReport, What, verify_files,
};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Helpers.

/// The sink's notices, captured in order.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<Notice>>>);

impl Captured {
    fn notify(&self) -> Notify {
        let notices = self.0.clone();
        Arc::new(move |notice| notices.lock().unwrap().push(notice))
    }

    fn lines(&self) -> Vec<Notice> {
        self.0.lock().unwrap().clone()
    }

    /// What `pick` takes from each notice it matches.
    fn all<T>(&self, pick: impl Fn(&Notice) -> Option<T>) -> Vec<T> {
        self.lines().iter().filter_map(pick).collect()
    }
}

/// The sink's reports, captured.
#[derive(Clone, Default)]
struct Reports(Arc<Mutex<Vec<SinkReport>>>);

impl Reports {
    fn reporter(&self) -> cliproxy_audit::Reporter {
        let reports = self.0.clone();
        Arc::new(move |r| reports.lock().unwrap().push(r))
    }

    fn dropped(&self) -> u64 {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|r| if let SinkReport::EventsDropped(n) = r { *n } else { 0 })
            .sum()
    }

    fn count(&self, report: SinkReport) -> usize {
        self.0.lock().unwrap().iter().filter(|r| **r == report).count()
    }

    fn healthy_changes(&self) -> Vec<bool> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|r| if let SinkReport::Healthy(h) = r { Some(*h) } else { None })
            .collect()
    }
}

fn config(path: &Path) -> AuditConfig {
    let mut config = AuditConfig::default();
    config.enabled = true;
    config.file = path.to_owned();
    config
}

struct Opened {
    sink: FileSink,
    log: Captured,
    reports: Reports,
}

fn open_with(path: &Path, mut options: SinkOptions) -> Result<Opened, Error> {
    let log = Captured::default();
    let reports = Reports::default();
    options.notify = Some(log.notify());
    let sink = FileSink::open_with(&config(path), reports.reporter(), options)?;
    Ok(Opened { sink, log, reports })
}

fn open(path: &Path) -> Opened {
    open_with(path, SinkOptions::default()).unwrap()
}

/// A varied event: each kind in turn, with or without the optional fields.
fn event(i: u64) -> Event {
    let what = match i % 4 {
        0 => What::ProviderRequest {
            model: "gpt-4o".to_owned(),
            status: 200,
            duration: Duration::from_millis(i),
            upstream: Some(Duration::from_millis(1)),
            input_tokens: Some(i),
            output_tokens: None,
            cost: i.is_multiple_of(8).then_some(i * 3),
            credential: Some("openai-1".to_owned()),
            outcome: "complete",
            error: None,
            formats: None,
        },
        1 => What::AuthFailure { plane: Plane::Client, reason: "invalid_key", repeats: 0 },
        2 => What::SecurityViolation {
            rule: "per_ip_rate",
            rate_limit: true,
            detail: format!("quote \" backslash \\ newline \n #{i}"),
            repeats: 0,
        },
        _ => What::AuthSuccess,
    };
    let event = Event::new(what).ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, (i % 250) as u8)));
    if i.is_multiple_of(2) {
        event.user("alice").provider("openai").request_id(format!("req-{i}"))
    } else {
        event
    }
}

fn write_events(sink: &FileSink, range: std::ops::RangeInclusive<u64>) {
    for i in range {
        sink.write(&event(i));
    }
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    fs::write(path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
}

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap()
}

fn broken(paths: &[&Path]) -> Broken {
    match verify_files(paths) {
        Ok(v) => panic!("verified: {v}"),
        Err(b) => b,
    }
}

/// A file of `n` chained lines written by the sink.
fn chain_of(dir: &Path, n: u64) -> PathBuf {
    let path = dir.join("audit.log");
    let opened = open(&path);
    write_events(&opened.sink, 1..=n);
    opened.sink.flush();
    path
}

// ---------------------------------------------------------------------------------------------
// Writing and continuing the chain.

#[test]
fn lines_are_chained_in_the_fixed_shape_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let opened = open(&path);
    write_events(&opened.sink, 1..=200);
    opened.sink.flush();
    assert_eq!(opened.sink.health(), SinkHealth::Ok);

    let verified = verify_files(&[&path]).unwrap();
    assert_eq!(
        (verified.files, verified.lines, verified.first_seq, verified.last_seq),
        (1, 200, Some(1), Some(200))
    );
    assert!(verified.notes.is_empty(), "{:?}", verified.notes);

    let all = lines(&path);
    let first = json(&all[0]);
    let keys: Vec<&str> = first.as_object().unwrap().keys().map(String::as_str).collect();
    let mut expected = [
        "seq",
        "timestamp",
        "event_type",
        "provider",
        "user_id",
        "ip",
        "result",
        "request_id",
        "details",
        "prev_hash",
        "hash",
    ];
    // serde_json sorts keys; the order on disk is checked on the raw text below.
    expected.sort_unstable();
    assert_eq!(keys, expected);
    let mut at = 0;
    for key in [
        "\"seq\":1,",
        "\"timestamp\":",
        "\"event_type\":\"auth_failure\"",
        "\"provider\":null",
        "\"user_id\":null",
        "\"ip\":\"10.0.0.1\"",
        "\"result\":\"invalid_key\"",
        "\"request_id\":null",
        "\"details\":{\"plane\":\"client\"}",
        "\"prev_hash\":\"0000",
        "\"hash\":",
    ] {
        let found =
            all[0][at..].find(key).unwrap_or_else(|| panic!("{key} after {at}: {}", all[0]));
        at += found + key.len();
    }
    let stamp = first["timestamp"].as_str().unwrap();
    assert!(stamp.len() == 24 && stamp.ends_with('Z') && stamp.as_bytes()[19] == b'.', "{stamp}");
    let second = json(&all[1]);
    assert_eq!(second["prev_hash"], first["hash"]);
    assert_eq!(second["user_id"], "alice");
    assert_eq!(second["request_id"], "req-2");
    assert_eq!(second["details"]["detail"], "quote \" backslash \\ newline \n #2");

    // The head is told at open and at shutdown, for the caller's operational log.
    let opened_at = opened.log.all(|n| match n {
        Notice::Opened { path: file, head } => Some((file.clone(), head.seq, n.severity())),
        _ => None,
    });
    assert_eq!(opened_at, [(path.clone(), 0, Severity::Info)]);
    let Opened { sink, log, .. } = opened;
    drop(sink);
    let closed = log.all(|n| match n {
        Notice::Closed { head, .. } => Some(head.clone()),
        _ => None,
    });
    assert_eq!(closed.len(), 1, "{:?}", log.lines());
    assert_eq!(closed[0].seq, 200, "{:?}", closed[0]);
    assert_eq!(Some(closed[0].hash.as_str()), verified.head_hash.as_deref(), "{:?}", closed[0]);
}

#[test]
fn every_line_names_the_instance_that_wrote_it_and_the_chain_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let mut options = SinkOptions::default();
    // A name that needs escaping is written as JSON, not as raw bytes.
    options.instance = Some("gw-1\"x".to_owned());
    let opened = open_with(&path, options).unwrap();
    write_events(&opened.sink, 1..=5);
    drop(opened);
    let lines = lines(&path);
    assert!(lines.len() >= 5, "{lines:?}");
    for line in &lines {
        assert_eq!(json(line)["instance"], "gw-1\"x", "{line}");
        // Right after the timestamp, inside what the hash covers.
        assert!(line.contains("\",\"instance\":\"gw-1\\\"x\","), "{line}");
    }
    verify_files(&[&path]).unwrap();
    // A forged instance name breaks the line's hash.
    let forged: Vec<String> =
        lines.iter().map(|l| l.replacen("gw-1\\\"x", "gw-2\\\"x", 1)).collect();
    write_lines(&path, &forged);
    assert!(verify_files(&[&path]).is_err());
}

#[test]
fn a_restart_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    for round in 0..3 {
        let opened = open(&path);
        write_events(&opened.sink, round * 10 + 1..=round * 10 + 10);
        if round == 1 {
            let head = opened.log.all(|n| match n {
                Notice::Opened { head, .. } => Some(head.seq),
                _ => None,
            });
            assert_eq!(head, [10]);
        }
    }
    let verified = verify_files(&[&path]).unwrap();
    assert_eq!((verified.lines, verified.first_seq, verified.last_seq), (30, Some(1), Some(30)));
}

#[test]
fn a_torn_last_line_is_cut_off_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let path = chain_of(dir.path(), 5);
    let before = fs::metadata(&path).unwrap().len();
    OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"seq\":6,\"tim").unwrap();
    // The verifier calls it a crash, not tampering.
    let verified = verify_files(&[&path]).unwrap();
    assert_eq!(verified.lines, 5);
    assert!(verified.notes[0].contains("incomplete"), "{:?}", verified.notes);

    let opened = open(&path);
    let warning = opened.log.all(|n| match n {
        Notice::TornLineCut { path, bytes } => Some((path.clone(), *bytes, n.severity())),
        _ => None,
    });
    assert_eq!(warning, [(path.clone(), 13, Severity::Warning)], "{:?}", opened.log.lines());
    assert_eq!(fs::metadata(&path).unwrap().len(), before);
    write_events(&opened.sink, 6..=6);
    opened.sink.flush();
    let verified = verify_files(&[&path]).unwrap();
    assert_eq!((verified.lines, verified.last_seq, verified.notes.len()), (6, Some(6), 0));
}

#[test]
fn a_damaged_last_line_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = chain_of(dir.path(), 3);
    let good = lines(&path);

    let mut changed = good.clone();
    changed[2] = changed[2].replacen("\"seq\":3", "\"seq\":4", 1);
    write_lines(&path, &changed);
    let error = open_with(&path, SinkOptions::default()).err().unwrap();
    assert!(matches!(error, Error::Chain { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(!message.contains("logging."), "{message}");
    assert!(message.contains("changed"), "{message}");

    let mut junk = good.clone();
    junk.push("this is not an audit line".to_owned());
    write_lines(&path, &junk);
    let error = open_with(&path, SinkOptions::default()).err().unwrap();
    assert!(matches!(error, Error::Chain { .. }), "{error}");
    assert!(error.to_string().contains("not an audit line"), "{error}");
    // Nothing was written on top of it.
    assert_eq!(lines(&path), junk);
}

#[test]
fn reopen_after_logrotate_continues_the_chain_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let rotated = dir.path().join("audit.log.1");
    let opened = open(&path);
    write_events(&opened.sink, 1..=5);
    opened.sink.flush();
    fs::rename(&path, &rotated).unwrap();
    // Queued before the reopen: still goes to the renamed file.
    write_events(&opened.sink, 6..=7);
    opened.sink.reopen();
    write_events(&opened.sink, 8..=12);
    opened.sink.flush();
    let reopened = opened.log.all(|n| match n {
        Notice::Reopened { head, .. } => Some(head.seq),
        _ => None,
    });
    assert_eq!(reopened, [7], "{:?}", opened.log.lines());

    assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let both = verify_files(&[&rotated, &path]).unwrap();
    assert_eq!((both.files, both.lines, both.first_seq, both.last_seq), (2, 12, Some(1), Some(12)));

    let old = verify_files(&[&rotated]).unwrap();
    assert_eq!((old.lines, old.last_seq), (7, Some(7)));
    assert_eq!(old.notes.len(), 0);
    let current = verify_files(&[&path]).unwrap();
    assert_eq!((current.lines, current.first_seq), (5, Some(8)));
    assert!(current.notes[0].contains("starts at seq 8"), "{:?}", current.notes);

    let wrong_order = broken(&[&path, &rotated]);
    assert_eq!((wrong_order.file.as_path(), wrong_order.line), (rotated.as_path(), 1));
    assert!(matches!(wrong_order.problem, Problem::Backwards { at_file_start: true, .. }));
    assert!(wrong_order.to_string().contains("files out of order"), "{wrong_order}");
}

#[test]
fn the_file_is_0600_in_a_0700_directory_and_a_looser_mode_is_tightened() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("var/logs");
    let path = logs.join("audit.log");
    let opened = open(&path);
    write_events(&opened.sink, 1..=1);
    opened.sink.flush();
    assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(fs::metadata(&logs).unwrap().permissions().mode() & 0o777, 0o700);
    drop(opened);

    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let opened = open(&path);
    assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let warning = opened.log.all(|n| match n {
        Notice::ModeTightened { mode, .. } => Some(*mode),
        _ => None,
    });
    assert_eq!(warning, [0o644], "{:?}", opened.log.lines());
}

#[test]
fn the_events_filter_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let opened = open(&path);
    let sink: Arc<dyn AuditSink> = Arc::new(opened.sink);
    let mut audit_config = config(&path);
    audit_config.events = vec![EventType::AuthFailure, EventType::ProviderRequest];
    let metrics = Arc::new(Metrics::new(&MetricsConfig::default(), Vec::<String>::new()));
    let audit = Audit::with_sink(Some(sink), &audit_config, metrics, &[]);
    for i in 0..8 {
        audit.emit(event(i));
    }
    audit.flush();
    let types: Vec<String> =
        lines(&path).iter().map(|l| json(l)["event_type"].as_str().unwrap().to_owned()).collect();
    assert_eq!(types, ["provider_request", "auth_failure", "provider_request", "auth_failure"]);
    assert_eq!(verify_files(&[&path]).unwrap().lines, 4);
}

#[test]
fn no_secret_reaches_the_file() {
    let planted = "sk-planted-7f3a9c2e4b1d8f6a0c5e";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let opened = open(&path);
    write_events(&opened.sink, 1..=40);
    opened.sink.write(&Event::new(What::CredentialAccess {
        action: "export",
        credential: Some("openai-1".to_owned()),
        outcome: Err("denied".to_owned()),
    }));
    opened.sink.flush();
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 41);
    assert!(!text.contains(planted));
    let told = opened.log.lines();
    assert!(!format!("{told:?}").contains(planted));
    assert!(!told.iter().any(|n| n.to_string().contains(planted)));
}

// ---------------------------------------------------------------------------------------------
// Tampering: each named at the right line.

#[test]
fn a_flipped_byte_names_the_changed_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = chain_of(dir.path(), 10);
    let mut all = lines(&path);
    all[3] = all[3].replacen("10.0.0.4", "10.0.0.5", 1);
    write_lines(&path, &all);
    let b = broken(&[&path]);
    assert_eq!((b.line, b.seq, b.problem.clone()), (4, Some(4), Problem::Changed));
    assert!(
        b.to_string().ends_with("audit.log:4: seq 4: changed (hash does not match the line)"),
        "{b}"
    );
}

#[test]
fn a_deleted_line_is_named_as_removed() {
    let dir = tempfile::tempdir().unwrap();
    let path = chain_of(dir.path(), 10);
    let mut all = lines(&path);
    all.remove(4);
    write_lines(&path, &all);
    let b = broken(&[&path]);
    assert_eq!((b.line, b.seq), (5, Some(6)));
    assert!(b.to_string().ends_with("seq 5 missing: line removed"), "{b}");
}

#[test]
fn swapped_lines_are_named_as_reordered() {
    let dir = tempfile::tempdir().unwrap();
    let path = chain_of(dir.path(), 10);
    let mut all = lines(&path);
    all.swap(2, 6);
    write_lines(&path, &all);
    let b = broken(&[&path]);
    assert_eq!((b.line, b.seq), (3, Some(7)));
    assert!(matches!(b.problem, Problem::Reordered { expected: 3, .. }), "{b}");
    assert!(b.to_string().contains("lines reordered"), "{b}");
}

#[test]
fn a_changed_and_rehashed_line_breaks_the_next_link() {
    let dir = tempfile::tempdir().unwrap();
    let path = chain_of(dir.path(), 10);
    let mut all = lines(&path);
    let line = all[3].replacen("10.0.0.4", "10.0.0.9", 1);
    let cut = line.rfind(",\"hash\":\"").unwrap();
    let digest = ring::digest::digest(&ring::digest::SHA256, &line.as_bytes()[..cut]);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    all[3] = format!("{},\"hash\":\"{hex}\"}}", &line[..cut]);
    write_lines(&path, &all);
    let b = broken(&[&path]);
    assert_eq!((b.line, b.seq), (5, Some(5)));
    assert!(matches!(b.problem, Problem::PrevHash { .. }), "{b}");
}

// ---------------------------------------------------------------------------------------------
// A failing disk.

#[test]
fn a_full_disk_never_blocks_writes_and_keeps_the_backlog_bounded() {
    let dev_full = Path::new("/dev/full");
    let mut options = SinkOptions::default();
    options.backlog_lines = 1000;
    let opened = open_with(dev_full, options).unwrap();
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..100_000 {
        let one = Instant::now();
        opened.sink.write(&event(i));
        slowest = slowest.max(one.elapsed());
    }
    let elapsed = started.elapsed();
    eprintln!("100k writes on /dev/full: {elapsed:?} in all, slowest {slowest:?}");
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
    opened.sink.flush();

    let SinkHealth::Failing { error } = opened.sink.health() else {
        panic!("healthy on /dev/full")
    };
    assert!(matches!(&error, SinkFailure::Write { path, .. } if path == dev_full), "{error}");
    let error = error.to_string();
    assert!(error.contains("/dev/full"), "{error}");
    assert!(error.contains("No space left on device"), "{error}");
    // The library's text names the file, not a setting of the service embedding it.
    assert!(!error.contains("logging."), "{error}");
    // Every event is either held (at most 1000 lines) or counted as dropped.
    let dropped = opened.reports.dropped();
    assert!((99_000..100_000).contains(&dropped), "{dropped}");
    assert_eq!(opened.reports.healthy_changes(), [false]);
    assert!(opened.reports.count(SinkReport::WriteFailed) >= 1);
    // The failure notices are rate-limited.
    let errors = opened.log.all(|n| match n {
        Notice::Failed { failure: SinkFailure::Write { path, .. }, .. } => {
            Some((path.clone(), n.severity()))
        }
        _ => None,
    });
    assert!((1..=3).contains(&errors.len()), "{errors:?}");
    assert_eq!(errors[0], (dev_full.to_owned(), Severity::Error), "{errors:?}");
}

/// A file whose writes fail (after writing a few bytes, like ENOSPC mid-line) while `fail`
/// is set.
struct Flaky {
    file: File,
    fail: Arc<AtomicBool>,
    wrote_part: bool,
}

impl Write for Flaky {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.fail.load(Ordering::SeqCst) {
            return self.file.write(buf);
        }
        if !self.wrote_part && buf.len() > 10 {
            self.wrote_part = true;
            return self.file.write(&buf[..10]);
        }
        self.wrote_part = false;
        Err(io::Error::from_raw_os_error(28))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AuditWriter for Flaky {
    fn file_len(&mut self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}

#[test]
fn after_a_failing_disk_the_backlog_is_written_in_order_and_the_loss_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let fail = Arc::new(AtomicBool::new(false));
    let opener: OpenWriter = {
        let fail = fail.clone();
        Arc::new(move |path: &Path| {
            let file = OpenOptions::new().append(true).create(true).mode(0o600).open(path)?;
            Ok(Box::new(Flaky { file, fail: fail.clone(), wrote_part: false })
                as Box<dyn AuditWriter>)
        })
    };
    let mut options = SinkOptions::default();
    options.backlog_lines = 50;
    options.open = Some(opener);
    let opened = open_with(&path, options).unwrap();

    write_events(&opened.sink, 1..=5);
    opened.sink.flush();
    fail.store(true, Ordering::SeqCst);
    write_events(&opened.sink, 6..=85);
    opened.sink.flush();
    let SinkHealth::Failing { error } = opened.sink.health() else { panic!("healthy") };
    assert_eq!(error.path(), path, "{error}");
    // The partial line was cut off: the file still verifies.
    assert_eq!(verify_files(&[&path]).unwrap().lines, 5);

    fail.store(false, Ordering::SeqCst);
    opened.sink.flush();
    assert_eq!(opened.sink.health(), SinkHealth::Ok);
    assert_eq!(opened.reports.healthy_changes(), [false, true]);
    assert_eq!(opened.reports.dropped(), 30);
    let again = opened.log.all(|n| match n {
        Notice::WritableAgain { backlog_written, .. } => Some(*backlog_written),
        _ => None,
    });
    assert_eq!(again, [50], "{:?}", opened.log.lines());

    // 5 written, 50 held and written once the disk worked, then the loss of 30.
    let verified = verify_files(&[&path]).unwrap();
    assert_eq!((verified.lines, verified.last_seq), (56, Some(56)));
    let all = lines(&path);
    let held_last = json(&all[54]);
    assert_eq!(held_last["ip"], "10.0.0.55");
    let lost = json(&all[55]);
    assert_eq!(lost["event_type"], "security_violation");
    assert_eq!(lost["result"], "audit_events_lost");
    assert_eq!(lost["details"]["lost"], 30);

    // Back to normal: later events follow the loss line.
    write_events(&opened.sink, 86..=86);
    opened.sink.flush();
    assert_eq!(verify_files(&[&path]).unwrap().lines, 57);
}

/// A writer that blocks in its first write until told to go on.
struct Gate {
    file: File,
    entered: Option<mpsc::Sender<()>>,
    go: mpsc::Receiver<()>,
}

impl Write for Gate {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(entered) = self.entered.take() {
            entered.send(()).unwrap();
            self.go.recv().unwrap();
        }
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AuditWriter for Gate {
    fn file_len(&mut self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_full_channel_drops_events_and_the_chain_records_how_many() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let (entered_tx, entered) = mpsc::channel();
    let (go, go_rx) = mpsc::channel();
    let gate = Mutex::new(Some((entered_tx, go_rx)));
    let mut options = SinkOptions::default();
    options.channel_size = 4;
    options.open = Some(Arc::new(move |path: &Path| {
        let (entered, go) = gate.lock().unwrap().take().expect("opened once");
        let file = OpenOptions::new().append(true).create(true).open(path)?;
        Ok(Box::new(Gate { file, entered: Some(entered), go }) as Box<dyn AuditWriter>)
    }));
    let opened = open_with(&path, options).unwrap();

    write_events(&opened.sink, 1..=1);
    entered.recv().unwrap();
    // The writer is stuck in its first write: 4 events fit in the channel, 96 are dropped.
    write_events(&opened.sink, 2..=101);
    go.send(()).unwrap();
    opened.sink.flush();

    assert_eq!(opened.reports.dropped(), 96);
    let verified = verify_files(&[&path]).unwrap();
    assert_eq!(verified.lines, 6);
    let lost = json(&lines(&path)[5]);
    assert_eq!(
        (lost["result"].as_str(), lost["details"]["lost"].as_u64()),
        (Some("audit_events_lost"), Some(96))
    );
}

#[test]
fn long_lines_are_continued_across_a_restart_and_oversized_details_are_cut() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let big = |bytes: usize| {
        let mut details = serde_json::Map::new();
        details.insert("note".to_owned(), Value::String("x".repeat(bytes)));
        Event::new(What::ConfigChange {
            action: "reload",
            changed: vec!["server.port".to_owned()],
            details,
            outcome: Ok(()),
        })
    };
    {
        let opened = open(&path);
        // 200 KiB: longer than the first window the tail reader tries (64 KiB).
        opened.sink.write(&big(200 * 1024));
        opened.sink.write(&big(300 * 1024));
    }
    // A torn line longer than the first window too.
    OpenOptions::new().append(true).open(&path).unwrap().write_all(&[b'{'; 100_000]).unwrap();
    let opened = open(&path);
    let cut = opened.log.all(|n| match n {
        Notice::TornLineCut { bytes, .. } => Some(*bytes),
        _ => None,
    });
    assert_eq!(cut, [100_000]);
    opened.sink.write(&big(10));
    opened.sink.flush();
    let verified = verify_files(&[&path]).unwrap();
    assert_eq!((verified.lines, verified.last_seq), (3, Some(3)));
    let all = lines(&path);
    assert!(all[0].len() > 200 * 1024);
    assert_eq!(json(&all[1])["details"]["truncated"], true);
}

// ---------------------------------------------------------------------------------------------
// One writer per file, no symlinks.

#[test]
fn a_second_writer_on_the_same_file_is_refused_while_the_first_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let first = open(&path);
    write_events(&first.sink, 1..=3);
    first.sink.flush();

    // Another sink on the same file (flock: another open file, as in another process).
    let error = open_with(&path, SinkOptions::default()).err().expect("opened a held file");
    assert!(matches!(error, Error::Locked { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(!message.contains("logging."), "{message}");
    assert!(message.contains("another process holds it"), "{message}");

    // The first goes on with a sound chain, nothing cut or interleaved.
    write_events(&first.sink, 4..=6);
    first.sink.flush();
    assert_eq!(verify_files(&[&path]).unwrap().lines, 6);
    drop(first);

    // A real second process holding the file (util-linux `flock`), when there is one.
    // It waits for the lock, then holds it (`-o`: itself, not `cat`) until its stdin closes:
    // the sinks opened meanwhile soon find it held.
    match std::process::Command::new("flock")
        .arg("-o")
        .arg(&path)
        .arg("cat")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
    {
        Ok(mut child) => {
            let started = Instant::now();
            let mut refused = None;
            while started.elapsed() < Duration::from_secs(10) {
                match open_with(&path, SinkOptions::default()) {
                    // Not locked yet by the child: let go and try again.
                    Ok(opened) => drop(opened),
                    Err(e) => {
                        refused = Some(e);
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            drop(child.stdin.take());
            assert!(child.wait().unwrap().success());
            let error = refused.expect("never refused while `flock` held the file");
            assert!(matches!(error, Error::Locked { .. }), "{error}");
        }
        Err(e) => eprintln!("no `flock` command ({e}): the two-process check is skipped"),
    }

    // Once the holder is gone, the file opens and the chain continues.
    let second = open(&path);
    write_events(&second.sink, 7..=7);
    second.sink.flush();
    assert_eq!(verify_files(&[&path]).unwrap().lines, 7);
}

#[test]
fn reopen_onto_a_file_another_writer_holds_keeps_the_old_file_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let rotated = dir.path().join("audit.log.1");
    let first = open(&path);
    write_events(&first.sink, 1..=3);
    first.sink.flush();
    fs::rename(&path, &rotated).unwrap();
    let other = open(&path);

    first.sink.reopen();
    let SinkHealth::Failing { error } = first.sink.health() else {
        panic!("reopened onto a file another writer holds")
    };
    assert!(matches!(error, SinkFailure::Reopen { .. }), "{error}");
    let error = error.to_string();
    assert!(error.contains(&path.display().to_string()), "{error}");
    assert!(error.contains("another process holds it"), "{error}");
    assert!(error.contains("still writing to the file open before"), "{error}");
    let told = first.log.all(|n| match n {
        Notice::Failed { failure: SinkFailure::Reopen { path, .. }, .. } => Some(path.clone()),
        _ => None,
    });
    assert_eq!(told, std::slice::from_ref(&path));
    assert_eq!(first.reports.healthy_changes(), [false]);

    // Nothing is lost meanwhile: the events go on to the old file.
    write_events(&first.sink, 4..=5);
    first.sink.flush();
    assert_eq!(verify_files(&[&rotated]).unwrap().lines, 5);
    assert_eq!(fs::metadata(&path).unwrap().len(), 0);

    drop(other);
    first.sink.reopen();
    assert_eq!(first.sink.health(), SinkHealth::Ok);
    write_events(&first.sink, 6..=6);
    first.sink.flush();
    let both = verify_files(&[&rotated, &path]).unwrap();
    assert_eq!((both.lines, both.last_seq), (6, Some(6)));
}

#[test]
fn a_symlink_at_the_audit_path_is_refused_at_open_and_at_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let rotated = dir.path().join("audit.log.1");
    let target = dir.path().join("elsewhere");
    fs::write(&target, "keep me\n").unwrap();
    std::os::unix::fs::symlink(&target, &path).unwrap();

    let error = open_with(&path, SinkOptions::default()).err().expect("opened through a symlink");
    assert!(matches!(error, Error::Open { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("is a symbolic link"), "{message}");
    assert_eq!(fs::read_to_string(&target).unwrap(), "keep me\n");

    // At reopen: the old file stays in use and the health says why.
    fs::remove_file(&path).unwrap();
    let opened = open(&path);
    write_events(&opened.sink, 1..=2);
    opened.sink.flush();
    fs::rename(&path, &rotated).unwrap();
    std::os::unix::fs::symlink(&target, &path).unwrap();
    opened.sink.reopen();
    let SinkHealth::Failing { error } = opened.sink.health() else {
        panic!("reopened through a symlink")
    };
    assert!(error.to_string().contains("is a symbolic link"), "{error}");
    write_events(&opened.sink, 3..=3);
    opened.sink.flush();
    assert_eq!(verify_files(&[&rotated]).unwrap().lines, 3);
    assert_eq!(fs::read_to_string(&target).unwrap(), "keep me\n");
}

// ---------------------------------------------------------------------------------------------
// A last line without its newline.

#[test]
fn a_last_line_without_its_newline_is_checked_when_it_is_complete() {
    let dir = tempfile::tempdir().unwrap();
    let path = chain_of(dir.path(), 5);
    let good = lines(&path);
    let unterminated = |all: &[String]| fs::write(&path, all.join("\n")).unwrap();

    // Edited, and its newline dropped to pass for a crash: still a changed line.
    let mut edited = good.clone();
    edited[4] = edited[4].replacen("10.0.0.5", "10.0.0.6", 1);
    unterminated(&edited);
    let b = broken(&[&path]);
    assert_eq!((b.line, b.seq, b.problem.clone()), (5, Some(5), Problem::Changed));
    // Nor does the sink cut it off as a torn line and carry on.
    let error = open_with(&path, SinkOptions::default()).err().expect("opened on a changed line");
    assert!(matches!(error, Error::Chain { .. }), "{error}");
    assert!(error.to_string().contains("changed"), "{error}");

    // Edited and re-hashed: the link to the line before is checked too.
    let line = good[4].replacen("10.0.0.5", "10.0.0.6", 1);
    let cut = line.rfind(",\"hash\":\"").unwrap();
    let prefix =
        line[..cut].replacen(&json(&good[3])["hash"].as_str().unwrap()[..8], "00000000", 1);
    let digest = ring::digest::digest(&ring::digest::SHA256, prefix.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let mut rehashed = good.clone();
    rehashed[4] = format!("{prefix},\"hash\":\"{hex}\"}}");
    unterminated(&rehashed);
    let b = broken(&[&path]);
    assert_eq!((b.line, b.seq), (5, Some(5)));
    assert!(matches!(b.problem, Problem::PrevHash { .. }), "{b}");
    assert!(open_with(&path, SinkOptions::default()).is_err());

    // A sound line that only lacks its newline verifies, and the sink completes it.
    unterminated(&good);
    let verified = verify_files(&[&path]).unwrap();
    assert_eq!((verified.lines, verified.last_seq), (5, Some(5)));
    assert!(verified.notes.iter().any(|n| n.contains("no newline")), "{:?}", verified.notes);
    let opened = open(&path);
    write_events(&opened.sink, 6..=6);
    opened.sink.flush();
    let verified = verify_files(&[&path]).unwrap();
    assert_eq!((verified.lines, verified.last_seq, verified.notes.len()), (6, Some(6), 0));
    assert_eq!(lines(&path)[..5], good[..]);
}

// ---------------------------------------------------------------------------------------------
// Commands from several threads; a writer thread that dies.

#[test]
fn concurrent_commands_each_wait_for_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let old = dir.path().join("audit.log.old");
    let opened = open(&path);
    let stop = AtomicBool::new(false);
    let mut early = Vec::new();
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    opened.sink.flush();
                }
            });
        }
        for round in 0..500 {
            fs::rename(&path, &old).unwrap();
            opened.sink.reopen();
            // The reopen happened before reopen() returned: the new file is there and logged.
            let reopened =
                opened.log.all(|n| matches!(n, Notice::Reopened { .. }).then_some(())).len();
            if !path.exists() || reopened != round + 1 {
                early.push((round, path.exists(), reopened));
            }
            // Otherwise the next rename moves the old file again and the reopen is missed.
            while !path.exists() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        stop.store(true, Ordering::SeqCst);
    });
    assert!(early.is_empty(), "reopen() returned before the reopen: {early:?}");
    assert_eq!(opened.sink.health(), SinkHealth::Ok);
}

/// A writer that panics on write once armed.
struct Bomb {
    file: File,
    armed: Arc<AtomicBool>,
}

impl Write for Bomb {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.armed.load(Ordering::SeqCst) {
            panic!("the writer blew up (on purpose, in a test)");
        }
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AuditWriter for Bomb {
    fn file_len(&mut self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_writer_thread_that_dies_turns_the_health_failing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let armed = Arc::new(AtomicBool::new(false));
    let mut options = SinkOptions::default();
    options.open = Some({
        let armed = armed.clone();
        Arc::new(move |path: &Path| {
            let file = OpenOptions::new().append(true).create(true).open(path)?;
            Ok(Box::new(Bomb { file, armed: armed.clone() }) as Box<dyn AuditWriter>)
        })
    });
    let opened = open_with(&path, options).unwrap();
    write_events(&opened.sink, 1..=2);
    opened.sink.flush();
    assert_eq!(opened.sink.health(), SinkHealth::Ok);

    armed.store(true, Ordering::SeqCst);
    write_events(&opened.sink, 3..=3);
    // Returns although the writer is gone.
    opened.sink.flush();
    let SinkHealth::Failing { error } = opened.sink.health() else {
        panic!("healthy with the writer thread dead")
    };
    assert_eq!(error, SinkFailure::WriterDied { path: path.clone() });
    assert!(error.to_string().contains("writer thread"), "{error}");
    assert!(error.to_string().contains(&path.display().to_string()), "{error}");
    assert_eq!(opened.reports.healthy_changes(), [false]);
    let died = opened.log.all(|n| match n {
        Notice::Failed { failure: SinkFailure::WriterDied { .. }, .. } => Some(n.severity()),
        _ => None,
    });
    assert_eq!(died, [Severity::Error], "{:?}", opened.log.lines());

    // Later calls neither block nor panic.
    write_events(&opened.sink, 4..=5);
    opened.sink.reopen();
    opened.sink.flush();
    assert!(matches!(opened.sink.health(), SinkHealth::Failing { .. }));
    drop(opened);
    assert_eq!(verify_files(&[&path]).unwrap().lines, 2);
}

// ---------------------------------------------------------------------------------------------
// The head anchor and signed checkpoints (issue 18, item 10).

/// A head anchor in memory, standing in for the gateway's state store.
#[derive(Debug, Default, Clone)]
struct MemAnchor(Arc<Mutex<Option<cliproxy_audit::ChainHead>>>);

impl cliproxy_audit::HeadAnchor for MemAnchor {
    fn load(&self) -> Result<Option<cliproxy_audit::ChainHead>, String> {
        Ok(self.0.lock().unwrap().clone())
    }

    fn store(&self, head: &cliproxy_audit::ChainHead) {
        *self.0.lock().unwrap() = Some(head.clone());
    }
}

impl MemAnchor {
    fn seq(&self) -> Option<u64> {
        self.0.lock().unwrap().as_ref().map(|h| h.seq)
    }
}

fn signing_key() -> Arc<ring::signature::Ed25519KeyPair> {
    let pkcs8 =
        ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    Arc::new(ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap())
}

fn anchored_options(
    anchor: &MemAnchor,
    signer: Option<&Arc<ring::signature::Ed25519KeyPair>>,
) -> SinkOptions {
    let mut options = SinkOptions::default();
    options.anchor = Some(Arc::new(anchor.clone()));
    options.signer = signer.cloned();
    options
}

fn open_anchored(
    path: &Path,
    anchor: &MemAnchor,
    on_gap: cliproxy_audit::OnGap,
) -> Result<Opened, Error> {
    let log = Captured::default();
    let reports = Reports::default();
    let mut config = config(path);
    config.on_gap = on_gap;
    let mut options = anchored_options(anchor, None);
    options.notify = Some(log.notify());
    let sink = FileSink::open_with(&config, reports.reporter(), options)?;
    Ok(Opened { sink, log, reports })
}

#[test]
fn the_anchor_follows_what_is_synced_and_a_restart_on_the_same_file_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let anchor = MemAnchor::default();
    let opened = open_anchored(&path, &anchor, cliproxy_audit::OnGap::Refuse).unwrap();
    write_events(&opened.sink, 1..=10);
    opened.sink.flush();
    assert_eq!(anchor.seq(), Some(10), "a flush syncs and anchors the head");
    drop(opened);
    // An anchor behind the file (a crash between the fsync and the store's commit) is fine.
    *anchor.0.lock().unwrap() = Some(cliproxy_audit::ChainHead {
        seq: 4,
        hash: json(&lines(&path)[3])["hash"].as_str().unwrap().to_owned(),
    });
    let opened = open_anchored(&path, &anchor, cliproxy_audit::OnGap::Refuse).unwrap();
    write_events(&opened.sink, 11..=12);
    opened.sink.flush();
    assert_eq!(anchor.seq(), Some(12));
    assert!(verify_files(&[&path]).is_ok());
}

#[test]
fn a_cut_tail_or_a_deleted_file_is_refused_naming_the_anchor_and_on_gap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let anchor = MemAnchor::default();
    let opened = open_anchored(&path, &anchor, cliproxy_audit::OnGap::Refuse).unwrap();
    write_events(&opened.sink, 1..=10);
    drop(opened);
    let all = lines(&path);
    let head_hash = json(&all[9])["hash"].as_str().unwrap().to_owned();

    write_lines(&path, &all[..7]);
    let err = open_anchored(&path, &anchor, cliproxy_audit::OnGap::Refuse).err().unwrap();
    let text = err.to_string();
    assert!(matches!(err, Error::Gap { anchored_seq: 10, .. }), "{text}");
    assert!(text.contains("behind its head anchor"), "{text}");
    assert!(!text.contains("logging."), "no setting of the embedding service: {text}");
    assert!(text.contains(&head_hash), "the anchored hash is named: {text}");
    assert!(text.contains("the file ends at seq 7"), "{text}");

    // Cut by one line only.
    write_lines(&path, &all[..9]);
    let text =
        open_anchored(&path, &anchor, cliproxy_audit::OnGap::Refuse).err().unwrap().to_string();
    assert!(text.contains("the file ends at seq 9"), "{text}");

    // The right number of lines, but the last one is not the anchored one (replaced).
    let mut replaced = all[..9].to_vec();
    replaced.push(all[9].replace(&head_hash, &"0".repeat(64)));
    write_lines(&path, &replaced);
    let text =
        open_anchored(&path, &anchor, cliproxy_audit::OnGap::Refuse).err().unwrap().to_string();
    assert!(text.contains("not an audit line") || text.contains("changed"), "{text}");

    fs::remove_file(&path).unwrap();
    let text =
        open_anchored(&path, &anchor, cliproxy_audit::OnGap::Refuse).err().unwrap().to_string();
    assert!(text.contains("the file does not exist"), "{text}");
}

#[test]
fn with_on_gap_continue_the_gap_is_the_first_new_line_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let anchor = MemAnchor::default();
    let opened = open_anchored(&path, &anchor, cliproxy_audit::OnGap::Refuse).unwrap();
    write_events(&opened.sink, 1..=10);
    drop(opened);
    let all = lines(&path);
    write_lines(&path, &all[..6]);

    let opened = open_anchored(&path, &anchor, cliproxy_audit::OnGap::Continue).unwrap();
    assert_eq!(opened.reports.count(SinkReport::Gap), 1);
    let gap = opened.log.all(|n| match n {
        Notice::GapContinued { anchored, .. } => Some((anchored.seq, n.severity())),
        _ => None,
    });
    assert_eq!(gap, [(10, Severity::Error)], "{:?}", opened.log.lines());
    // Written at open, before any event.
    let now = lines(&path);
    assert_eq!(now.len(), 7);
    let gap = json(&now[6]);
    assert_eq!(gap["seq"], 7, "the chain the file holds goes on");
    assert_eq!(gap["event_type"], "security_violation");
    assert_eq!(gap["result"], "audit_log_gap");
    assert_eq!(gap["details"]["anchored_seq"], 10);
    assert!(gap["details"]["found"].as_str().unwrap().contains("ends at seq 6"), "{gap}");
    assert!(verify_files(&[&path]).is_ok());
    drop(opened);
    // The anchor now names the continued chain: the next start is clean.
    assert!(open_anchored(&path, &anchor, cliproxy_audit::OnGap::Refuse).is_ok());

    fs::remove_file(&path).unwrap();
    let opened = open_anchored(&path, &anchor, cliproxy_audit::OnGap::Continue).unwrap();
    let first = json(&lines(&path)[0]);
    assert_eq!((first["seq"].as_u64(), first["result"].as_str()), (Some(1), Some("audit_log_gap")));
    assert!(first["details"]["found"].as_str().unwrap().contains("does not exist"));
    assert_eq!(opened.reports.count(SinkReport::Gap), 1);
}

#[test]
fn a_rotated_file_that_continues_the_anchored_line_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let anchor = MemAnchor::default();
    let opened = open_anchored(&path, &anchor, cliproxy_audit::OnGap::Refuse).unwrap();
    write_events(&opened.sink, 1..=5);
    opened.sink.flush();
    fs::rename(&path, dir.path().join("audit.log.1")).unwrap();
    opened.sink.reopen();
    write_events(&opened.sink, 6..=8);
    drop(opened);
    assert_eq!(anchor.seq(), Some(8));
    assert!(open_anchored(&path, &anchor, cliproxy_audit::OnGap::Refuse).is_ok());
    // The anchor at the rotated file's last line and a new file starting right after it.
    let rotated = lines(&dir.path().join("audit.log.1"));
    *anchor.0.lock().unwrap() = Some(cliproxy_audit::ChainHead {
        seq: 5,
        hash: json(&rotated[4])["hash"].as_str().unwrap().to_owned(),
    });
    assert!(open_anchored(&path, &anchor, cliproxy_audit::OnGap::Refuse).is_ok());
    // A file that starts later than the line after the anchor has lost lines at its start.
    let current = lines(&path);
    write_lines(&path, &current[1..]);
    let text =
        open_anchored(&path, &anchor, cliproxy_audit::OnGap::Refuse).err().unwrap().to_string();
    assert!(text.contains("the file starts at seq 7"), "{text}");
}

fn signed_check(key: &ring::signature::Ed25519KeyPair) -> cliproxy_audit::SignedCheck {
    use ring::signature::KeyPair;
    cliproxy_audit::SignedCheck {
        public_key: key.public_key().as_ref().try_into().unwrap(),
        now: std::time::SystemTime::now(),
    }
}

fn open_signed(
    path: &Path,
    key: &Arc<ring::signature::Ed25519KeyPair>,
    every_lines: u64,
) -> Opened {
    let log = Captured::default();
    let reports = Reports::default();
    let mut config = config(path);
    config.checkpoint.every_lines = std::num::NonZeroU64::new(every_lines).unwrap();
    let mut options = SinkOptions::default();
    options.signer = Some(key.clone());
    options.notify = Some(log.notify());
    let sink = FileSink::open_with(&config, reports.reporter(), options).unwrap();
    Opened { sink, log, reports }
}

#[test]
fn signed_checkpoints_verify_and_a_cut_tail_is_found_offline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let key = signing_key();
    let opened = open_signed(&path, &key, 5);
    write_events(&opened.sink, 1..=12);
    drop(opened);
    let all = lines(&path);
    let kinds: Vec<String> = all
        .iter()
        .map(|l| json(l))
        .filter(|l| l["event_type"] == "audit_checkpoint")
        .map(|l| format!("{}@{}", l["result"].as_str().unwrap(), l["seq"]))
        .collect();
    // Start, one after every 5 lines (the checkpoint itself is not counted), shutdown.
    assert_eq!(kinds, ["start@1", "periodic@7", "periodic@13", "shutdown@16"], "{all:?}");
    let verified = cliproxy_audit::verify_files_signed(&[&path], Some(signed_check(&key))).unwrap();
    assert_eq!(verified.checkpoints, Some(4));
    assert!(verified.to_string().contains("4 signatures verified"), "{verified}");

    // Without a key: the chain verifies, and the output says checkpoints were not checked.
    let plain = verify_files(&[&path]).unwrap().to_string();
    assert!(plain.contains("checkpoints were not checked"), "{plain}");
    assert!(!plain.contains("cliproxy-server"), "the library's text names no command: {plain}");

    // Cut back past a periodic checkpoint: five lines follow the last one left (seq 7),
    // where one comes every five.
    write_lines(&path, &all[..12]);
    assert!(verify_files(&[&path]).is_ok(), "a hash chain alone cannot see a cut tail");
    let cut = cliproxy_audit::verify_files_signed(&[&path], Some(signed_check(&key))).unwrap_err();
    assert!(matches!(cut.problem, Problem::TailCut { after_seq: 7, .. }), "{cut}");
    assert!(cut.to_string().contains("the tail after seq 7 may have been cut"), "{cut}");

    // Cut to fewer lines than an interval after a checkpoint: caught by the checkpoint's age
    // once a periodic one would have been due.
    write_lines(&path, &all[..14]);
    let mut later = signed_check(&key);
    later.now += Duration::from_secs(301) + cliproxy_audit::CHECKPOINT_GRACE;
    let cut = cliproxy_audit::verify_files_signed(&[&path], Some(later)).unwrap_err();
    assert!(cut.to_string().contains("does not end with a shutdown checkpoint"), "{cut}");
    // A gateway still running (its last checkpoint recent) is not flagged.
    assert!(cliproxy_audit::verify_files_signed(&[&path], Some(signed_check(&key))).is_ok());
}

#[test]
fn a_forged_checkpoint_or_another_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let key = signing_key();
    drop(open_signed(&path, &key, 1000));
    let other = signing_key();
    let wrong =
        cliproxy_audit::verify_files_signed(&[&path], Some(signed_check(&other))).unwrap_err();
    assert!(matches!(wrong.problem, Problem::BadCheckpoint(_)), "{wrong}");
    assert!(wrong.to_string().contains("signature does not verify"), "{wrong}");

    // A checkpoint re-written by someone without the key: its line hash is made right again,
    // but the signature no longer covers what it says.
    let all = lines(&path);
    let mut line = json(&all[1]);
    line["details"]["every_secs"] = Value::from(86_400);
    let mut rehashed = rehash(&line);
    let mut forged = all.clone();
    forged[1] = std::mem::take(&mut rehashed);
    write_lines(&path, &forged);
    assert!(verify_files(&[&path]).is_ok(), "the chain itself is sound");
    let err = cliproxy_audit::verify_files_signed(&[&path], Some(signed_check(&key))).unwrap_err();
    assert!(err.to_string().contains("seq 2: bad checkpoint"), "{err}");
}

/// Serialises a line in the sink's field order with its hash made right again (what someone
/// who edits the last line and re-hashes it does).
fn rehash(line: &Value) -> String {
    let mut text = String::from("{");
    for key in [
        "seq",
        "timestamp",
        "event_type",
        "provider",
        "user_id",
        "ip",
        "result",
        "request_id",
        "details",
        "prev_hash",
    ] {
        if text.len() > 1 {
            text.push(',');
        }
        text.push_str(&format!("\"{key}\":{}", serde_json::to_string(&line[key]).unwrap()));
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let hash: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("{text},\"hash\":\"{hash}\"}}")
}

/// Any one byte of a signed log changed (to a few values) never verifies as the whole log with
/// the key: only a changed final newline passes, as a torn last line (what the fuzz target's
/// signed mode checks at random, here over every position).
#[test]
fn no_single_byte_change_of_a_signed_log_verifies_as_the_whole_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let key = signing_key();
    let opened = open_signed(&path, &key, 1000);
    write_events(&opened.sink, 1..=2);
    drop(opened);
    let original = fs::read(&path).unwrap();
    let whole = cliproxy_audit::verify_files_signed(&[&path], Some(signed_check(&key))).unwrap();
    assert_eq!((whole.lines, whole.checkpoints), (4, Some(2)));
    let tampered = dir.path().join("tampered.log");
    let mut passed = 0;
    for at in 0..original.len() {
        for value in [b'0', b'x', b'\n', b'"'] {
            if original[at] == value {
                continue;
            }
            let mut bytes = original.clone();
            bytes[at] = value;
            fs::write(&tampered, &bytes).unwrap();
            if let Ok(v) =
                cliproxy_audit::verify_files_signed(&[&tampered], Some(signed_check(&key)))
            {
                assert!(v.lines < 4 && !v.notes.is_empty(), "byte {at} = {value}: {v}");
                assert_eq!(at, original.len() - 1, "only the final newline: {v}");
                passed += 1;
            }
        }
    }
    assert!(passed <= 4);
}

// ---------------------------------------------------------------------------------------------
// Embedding: the trait, the section and plain values.

/// A sink of the embedder's own: it keeps the events, and fails when told to.
#[derive(Debug, Default)]
struct MemorySink {
    events: Mutex<Vec<EventType>>,
    failing: AtomicBool,
    flushes: Mutex<u32>,
}

impl AuditSink for MemorySink {
    fn write(&self, event: &Event) {
        self.events.lock().unwrap().push(event.event_type());
    }

    fn health(&self) -> SinkHealth {
        if self.failing.load(Ordering::SeqCst) {
            let error = "quota exceeded".to_owned();
            SinkHealth::Failing { error: SinkFailure::Write { path: "memory".into(), error } }
        } else {
            SinkHealth::Ok
        }
    }

    fn reopen(&self) {}

    fn flush(&self) {
        *self.flushes.lock().unwrap() += 1;
    }
}

#[test]
fn any_sink_serves_behind_the_trait_object() {
    let sink = Arc::new(MemorySink::default());
    // What the gateway holds: the trait object (the trait is object-safe, or this fails to
    // compile).
    let held: Arc<dyn AuditSink> = sink.clone();
    let metrics = Arc::new(Metrics::new(&MetricsConfig::default(), []));
    let audit = Audit::new(Some(held), metrics.clone());
    assert!(audit.enabled());
    audit.emit(Event::new(What::AuthSuccess).user("alice"));
    let refused = What::AuthFailure { plane: Plane::Client, reason: "invalid_key", repeats: 0 };
    audit.emit(Event::new(refused));
    audit.flush();
    assert_eq!(*sink.events.lock().unwrap(), [EventType::AuthSuccess, EventType::AuthFailure]);
    assert_eq!(*sink.flushes.lock().unwrap(), 1);
    assert_eq!(audit.failing(), None);

    sink.failing.store(true, Ordering::SeqCst);
    let failing = audit.failing().map(|f| f.to_string());
    assert_eq!(failing.as_deref(), Some("cannot write the audit log memory: quota exceeded"));

    // The section's event selection applies to any sink.
    let only_failures = AuditConfig::new("unused.log").with_events([EventType::AuthFailure]);
    let audit = Audit::with_sink(Some(sink.clone()), &only_failures, metrics, &[]);
    audit.emit(Event::new(What::AuthSuccess));
    assert_eq!(sink.events.lock().unwrap().len(), 2, "an unselected type is not written");
}

#[test]
fn the_section_or_plain_values_build_the_file_sink() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logs").join("audit.log");
    let metrics = || Arc::new(Metrics::new(&MetricsConfig::default(), []));

    // The plain constructor is the section an operator would write with only the file.
    let section: AuditConfig =
        serde_json::from_value(serde_json::json!({"enabled": true, "file": path})).unwrap();
    assert_eq!(AuditConfig::new(&path), section);
    let tuned = AuditConfig::new(&path)
        .with_on_gap(cliproxy_audit::OnGap::Continue)
        .with_checkpoints(std::num::NonZeroU64::new(5).unwrap(), Duration::ZERO);
    assert_eq!(tuned.on_gap, cliproxy_audit::OnGap::Continue);
    assert_eq!(tuned.checkpoint.every_lines.get(), 5);
    assert_eq!(tuned.checkpoint.every, Duration::from_secs(1), "raised to the 1s minimum");

    // Off: no sink.
    assert!(AuditConfig::default().build(metrics(), SinkOptions::default()).unwrap().is_none());

    // On: the hash-chained file, reporting to the metrics.
    let sink = section.build(metrics(), SinkOptions::default()).unwrap().unwrap();
    sink.write(&event(1));
    sink.flush();
    drop(sink);
    assert_eq!(verify_files(&[&path]).unwrap().lines, 1);

    // From a bare path: the same chain goes on.
    let sink = FileSink::open_path(&path, SinkOptions::default()).unwrap();
    assert_eq!(sink.path(), path);
    sink.write(&event(2));
    sink.flush();
    let verified = verify_files(&[&path]).unwrap();
    assert_eq!((verified.lines, verified.last_seq), (2, Some(2)));
}
