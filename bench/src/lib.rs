//! The benchmark harness behind `cargo xtask bench`.
//!
//! Three roles, each its own process so that `taskset` can pin them apart (the gateway on
//! CPU 0, the rest on CPU 1):
//!
//! - `cliproxy-bench mock`: an OpenAI-format upstream on hyper 1, zero or fixed latency,
//!   JSON completions with `usage` and SSE streams of N events M ms apart ([`mock`]);
//! - `cliproxy-bench load`: the load generator: open-loop fixed rate measured from the
//!   scheduled send time (no coordinated omission), closed-loop maximum over N connections,
//!   concurrent streams; latencies in HDR histograms ([`load`]);
//! - `cliproxy-bench relay`: a bare TCP relay, the network hop alone, as a floor for the
//!   gateway's added latency ([`relay`]);
//! - `cliproxy-bench run`: the scenarios of issue 8, each direct to the mock and through the
//!   real `cliproxy-server`, reported as difference and ratio against the budgets
//!   ([`run`], [`Report`]); scenario 8 (issue 21) sets the gateway's translated path against
//!   its untranslated one, with the request shapes of [`Shape`]; scenario 9 (issue 23) sets
//!   the gateway on Redis (`state.backend: redis`, one to three instances on a
//!   `redis-server` the runner starts) against the gateway on SQLite, and reads what a
//!   request costs Redis from its own `INFO` counters.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use cliproxy_bench::{Mode, Shape, Target, load};
//!
//! let target = Target {
//!     base_url: "http://127.0.0.1:8317".into(),
//!     token: "cpk-…".into(),
//!     ca_pem: None,
//!     shape: Shape::Chat,
//! };
//! let report = load::run(&target, Mode::Rate { rate: 100, duration: Duration::from_secs(1) }, None).await?;
//! println!("p99 {:?} µs", report.latency.map(|s| s.p99_us));
//! # Ok(()) }
//! ```
//!
//! The public interface is: the mock ([`mock::serve`], [`MockOptions`], [`MockStats`]), the load
//! generator ([`load::run`], [`Mode`], [`Target`], [`Shape`], [`LoadReport`]), the runner ([`run`],
//! [`RunOptions`]), the report ([`Report`], [`Row`], [`Budget`]), and the small parsers
//! ([`vm_rss_kb`], [`limiter::parse`]).

pub mod limiter;
pub mod load;
pub mod mock;
mod procs;
mod redis;
pub mod relay;
mod report;
mod run;
mod shape;
mod summary;

pub use load::{LoadReport, Mode, Target};
pub use mock::{MockOptions, MockStats};
pub use procs::{Proc, cpu_ns, vm_rss_kb};
pub use report::{Budget, Judged, Report, Row, Unit, Verdict};
pub use run::{RunOptions, run};
pub use shape::Shape;
pub use summary::{Recorder, Summary};
