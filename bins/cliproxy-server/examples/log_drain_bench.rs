//! The figure behind keeping the hand-written JSON log drain (`src/logging/json.rs`): the
//! nanoseconds one access-log record costs through it and through `slog_json`, the generic
//! drain it replaced, on the same records in the same run.
//!
//! Both drains format the gateway's access line (the 17 key-values of `finish.rs`) into a
//! buffer behind a mutex, as the server's `LineDrain` does, take the time themselves, and hand
//! the finished line to the same counter; neither writes to a file or a channel, so what is
//! measured is the formatting alone. The rounds alternate which drain goes first, and the
//! minimum and the median of the rounds are printed for each.
//!
//! Before measuring it checks that the two drains write the same line (the hand-written one
//! promises `slog_json`'s output): the same keys in the same order with the same values,
//! the timestamp aside.
//!
//! Run it with `cargo run --release -p cliproxy-server --example log_drain_bench`. A debug
//! build runs fewer records and says its figures mean nothing; it still checks the lines.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "an example")]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime};

use slog::{Drain, Logger, o};

// The drain under test, compiled from the binary's own source: the module is private to the
// binary (no library API reaches it), and a copy kept here could drift from what runs.
#[path = "../src/logging/json.rs"]
mod json;

/// Records per drain per round: enough for a round to take tens of milliseconds in a release
/// build, so the clock's resolution does not count.
const RECORDS: u32 = if cfg!(debug_assertions) { 2_000 } else { 100_000 };
/// Rounds per drain; the first one of each is a warm-up and is not counted.
const ROUNDS: usize = 11;

fn main() {
    let hand = Arc::new(Out::default());
    let generic = Arc::new(Out::default());
    let hand_log = Logger::root(HandWritten::new(Arc::clone(&hand)), o!());
    let generic_drain = slog_json::Json::new(Sink::new(Arc::clone(&generic)))
        .add_default_keys()
        .set_flush(true)
        .build();
    let generic_log = Logger::root(Mutex::new(generic_drain).ignore_res(), o!());
    let access = Access::typical();

    // The two lines agree, timestamps aside: the figures compare equal work.
    let hand_line = capture(&hand, || access.log(&hand_log));
    let generic_line = capture(&generic, || access.log(&generic_log));
    let hand_fields = fields_without_ts(&hand_line);
    assert_eq!(hand_fields, fields_without_ts(&generic_line));
    assert_eq!(hand_fields.len(), 19, "msg, level and 17 key-values: {hand_line}");
    println!("one record ({} bytes): {}", hand_line.len(), hand_line.trim_end());

    let mut hand_ns = Vec::with_capacity(ROUNDS);
    let mut generic_ns = Vec::with_capacity(ROUNDS);
    for round in 0..=ROUNDS {
        let (first, second) =
            if round % 2 == 0 { (&hand_log, &generic_log) } else { (&generic_log, &hand_log) };
        let a = access.time(first);
        let b = access.time(second);
        // Round 0 warms the caches and the allocator up.
        if round == 0 {
            continue;
        }
        let (h, g) = if round % 2 == 0 { (a, b) } else { (b, a) };
        hand_ns.push(h);
        generic_ns.push(g);
    }
    let lines = u64::from(RECORDS) * ROUNDS as u64 + u64::from(RECORDS) + 1;
    assert_eq!(hand.lines.load(Ordering::Relaxed), lines, "every record made a line");
    assert_eq!(generic.lines.load(Ordering::Relaxed), lines, "every record made a line");

    let (hand_min, hand_median) = min_median(&mut hand_ns);
    let (generic_min, generic_median) = min_median(&mut generic_ns);
    if cfg!(debug_assertions) {
        println!("debug build: these figures mean nothing; run it with --release");
    }
    println!(
        "{RECORDS} records x {ROUNDS} rounds per drain, ns per record (min / median of the rounds):"
    );
    println!("  hand-written (logging/json.rs): {hand_min:7.0} / {hand_median:7.0}");
    println!("  slog_json:                      {generic_min:7.0} / {generic_median:7.0}");
    println!("  slog_json / hand-written (medians): {:.2}x", generic_median / hand_median);
}

/// The fields of the access line `finish.rs` writes for a finished streaming request.
struct Access {
    request_id: String,
    method: &'static str,
    path: String,
    peer: SocketAddr,
    status: u16,
    stream: bool,
    result: &'static str,
    client: Option<String>,
    model: Option<String>,
    provider: Option<String>,
    credential: Option<String>,
    attempts: u32,
    client_ip: IpAddr,
    input_tokens: u64,
    output_tokens: u64,
    elapsed_ms: f64,
    error: Option<String>,
}

impl Access {
    fn typical() -> Self {
        Self {
            request_id: "req-01JF3Q8W5ZK2V7XG4M9TB6HCNR".to_owned(),
            method: "POST",
            path: "/v1/chat/completions".to_owned(),
            peer: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 20, 30, 40)), 51734),
            status: 200,
            stream: true,
            result: "ok",
            client: Some("ci-agent".to_owned()),
            model: Some("gpt-4o-mini".to_owned()),
            provider: Some("openai".to_owned()),
            credential: Some("openai-2".to_owned()),
            attempts: 1,
            client_ip: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
            input_tokens: 1843,
            output_tokens: 412,
            elapsed_ms: 1234.5678,
            error: None,
        }
    }

    /// One access line, with the key-values and value kinds of `finish.rs`'s `access_line!`
    /// (borrowed strings, options, numbers, a `Display` address and a formatted duration).
    #[inline(never)]
    fn log(&self, log: &Logger) {
        slog::info!(log, "request";
            "request_id" => &self.request_id,
            "method" => self.method,
            "path" => &self.path,
            "peer" => self.peer,
            "status" => self.status,
            "stream" => self.stream,
            "result" => self.result,
            "client" => self.client.as_deref(),
            "model" => self.model.as_deref(),
            "provider" => self.provider.as_deref(),
            "credential" => self.credential.as_deref(),
            "attempts" => self.attempts,
            "client_ip" => %self.client_ip,
            "input_tokens" => self.input_tokens,
            "output_tokens" => self.output_tokens,
            "duration_ms" => %format_args!("{:.2}", self.elapsed_ms),
            "error" => self.error.as_deref()
        );
    }

    /// Nanoseconds per record over [`RECORDS`] records.
    fn time(&self, log: &Logger) -> f64 {
        let start = Instant::now();
        for _ in 0..RECORDS {
            self.log(log);
        }
        start.elapsed().as_nanos() as f64 / f64::from(RECORDS)
    }
}

/// Where both drains hand their finished lines: a count, and a copy of a line when asked.
#[derive(Default)]
struct Out {
    lines: AtomicU64,
    capture: AtomicBool,
    captured: Mutex<Vec<u8>>,
}

impl Out {
    fn take(&self, line: &[u8]) {
        self.lines.fetch_add(1, Ordering::Relaxed);
        if self.capture.load(Ordering::Relaxed) {
            *self.captured.lock().unwrap_or_else(PoisonError::into_inner) = line.to_vec();
        }
    }
}

/// The line `log` makes through the drain that hands its lines to `out`.
fn capture(out: &Out, log: impl FnOnce()) -> String {
    out.capture.store(true, Ordering::Relaxed);
    log();
    out.capture.store(false, Ordering::Relaxed);
    String::from_utf8(out.captured.lock().unwrap().clone()).unwrap()
}

/// The hand-written drain as the server's `LineDrain` runs it: one line buffer behind a
/// mutex, cleared and refilled per record.
struct HandWritten {
    line: Mutex<Vec<u8>>,
    out: Arc<Out>,
}

impl HandWritten {
    fn new(out: Arc<Out>) -> Self {
        Self { line: Mutex::new(Vec::with_capacity(512)), out }
    }
}

impl Drain for HandWritten {
    type Ok = ();
    type Err = slog::Never;

    fn log(
        &self,
        record: &slog::Record<'_>,
        values: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
        let mut line = self.line.lock().unwrap_or_else(PoisonError::into_inner);
        line.clear();
        json::write_record(&mut line, record, values, SystemTime::now());
        self.out.take(&line);
        Ok(())
    }
}

/// `slog_json`'s writer: it gathers the pieces of a record and hands the line over when the
/// drain flushes it at the end of the record.
struct Sink {
    line: Vec<u8>,
    out: Arc<Out>,
}

impl Sink {
    fn new(out: Arc<Out>) -> Self {
        Self { line: Vec::with_capacity(512), out }
    }
}

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.take(&self.line);
        self.line.clear();
        Ok(())
    }
}

/// A line's keys and values in order, without `ts`.
fn fields_without_ts(line: &str) -> Vec<(String, serde_json::Value)> {
    // `serde_json`'s own map keeps the order only with a feature this workspace does not
    // turn on; the keys are read in order by deserialising into a list of pairs.
    let map: OrderedFields = serde_json::from_str(line).unwrap();
    map.0.into_iter().filter(|(key, _)| key != "ts").collect()
}

/// A JSON object's members in the order they are written.
struct OrderedFields(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for OrderedFields {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = OrderedFields;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<OrderedFields, A::Error> {
                let mut fields = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    fields.push(entry);
                }
                Ok(OrderedFields(fields))
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

/// The minimum and the median of `values`.
fn min_median(values: &mut [f64]) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    (values[0], values[values.len() / 2])
}
