//! The report: one row per figure, direct and through the gateway, the difference and the
//! ratio, the budget and whether it is met; rendered as a Markdown table and as JSON.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// The unit of a row's figures (how they are printed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Microseconds.
    Micros,
    /// Microseconds to two decimals (CPU time per request or per streamed event).
    FineMicros,
    /// Milliseconds.
    Millis,
    /// Milliseconds to two decimals (Redis's CPU per second).
    FineMillis,
    /// Nanoseconds.
    Nanos,
    /// Requests per second.
    Rps,
    /// Megabytes of 1024 kB (`/proc` counts in kB).
    Mb,
    /// A fraction, printed as a percentage.
    Fraction,
    /// A plain count.
    Count,
    /// A plain figure to two decimals (operations per request, gateways per Redis).
    Decimal,
}

impl Unit {
    fn format(self, value: f64) -> String {
        match self {
            Unit::Micros => format!("{value:.0} µs"),
            Unit::FineMicros => format!("{value:.2} µs"),
            Unit::Millis => format!("{value:.1} ms"),
            Unit::FineMillis => format!("{value:.2} ms"),
            Unit::Nanos => format!("{value:.1} ns"),
            Unit::Rps => format!("{value:.0}/s"),
            Unit::Mb => format!("{value:.1} MB"),
            Unit::Fraction => format!("{:.1}%", value * 100.0),
            Unit::Count => format!("{value:.0}"),
            Unit::Decimal => format!("{value:.2}"),
        }
    }

    fn format_signed(self, value: f64) -> String {
        let text = self.format(value);
        if value >= 0.0 { format!("+{text}") } else { text }
    }
}

/// Which figure of a row a budget judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Judged {
    /// The gateway figure minus the direct one (added latency).
    Difference,
    /// The gateway figure over the direct one (throughput kept).
    Ratio,
    /// The row's single value (RSS, cold start, a cost).
    Value,
}

/// A limit a figure must stay within.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// Which figure.
    pub judged: Judged,
    /// `true`: the figure must be at most `limit`; `false`: at least.
    pub at_most: bool,
    /// The limit, in the row's unit (a plain number for ratios).
    pub limit: f64,
}

impl Budget {
    /// The figure must be ≤ `limit`.
    pub fn at_most(judged: Judged, limit: f64) -> Self {
        Self { judged, at_most: true, limit }
    }

    /// The figure must be ≥ `limit`.
    pub fn at_least(judged: Judged, limit: f64) -> Self {
        Self { judged, at_most: false, limit }
    }

    /// Whether `value` is within the budget.
    pub fn met(&self, value: f64) -> bool {
        if self.at_most { value <= self.limit } else { value >= self.limit }
    }

    fn describe(&self, unit: Unit) -> String {
        let op = if self.at_most { "≤" } else { "≥" };
        let limit = match self.judged {
            Judged::Ratio => format!("{:.0}% of direct", self.limit * 100.0),
            Judged::Difference => format!("+{}", unit.format(self.limit)),
            Judged::Value => unit.format(self.limit),
        };
        format!("{op} {limit}")
    }
}

/// Whether a row meets its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    /// Within the budget.
    Pass,
    /// Outside it: reported, not a failure of the run.
    Miss,
    /// No budget for this figure.
    Info,
}

/// One figure of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The scenario number (1..=9).
    pub scenario: u8,
    /// What is measured.
    pub measure: String,
    /// The unit of `direct`, `gateway`, `value` and `difference`.
    pub unit: Unit,
    /// Direct to the mock.
    pub direct: Option<f64>,
    /// Through the gateway.
    pub gateway: Option<f64>,
    /// `gateway - direct`.
    pub difference: Option<f64>,
    /// `gateway / direct`.
    pub ratio: Option<f64>,
    /// The figure of a single-value row.
    pub value: Option<f64>,
    /// The budget, if the issue sets one.
    pub budget: Option<Budget>,
    /// Whether it is met.
    pub verdict: Verdict,
}

impl Row {
    /// A figure measured direct and through the gateway.
    pub fn compare(
        scenario: u8,
        measure: impl Into<String>,
        unit: Unit,
        direct: f64,
        gateway: f64,
        budget: Option<Budget>,
    ) -> Self {
        let difference = gateway - direct;
        let ratio = (direct != 0.0).then(|| gateway / direct);
        let mut row = Self {
            scenario,
            measure: measure.into(),
            unit,
            direct: Some(direct),
            gateway: Some(gateway),
            difference: Some(difference),
            ratio,
            value: None,
            budget,
            verdict: Verdict::Info,
        };
        row.verdict = row.judge();
        row
    }

    /// A single figure (memory, cold start, a cost computed from two gateway runs).
    pub fn single(
        scenario: u8,
        measure: impl Into<String>,
        unit: Unit,
        value: f64,
        budget: Option<Budget>,
    ) -> Self {
        let mut row = Self {
            scenario,
            measure: measure.into(),
            unit,
            direct: None,
            gateway: None,
            difference: None,
            ratio: None,
            value: Some(value),
            budget,
            verdict: Verdict::Info,
        };
        row.verdict = row.judge();
        row
    }

    fn judge(&self) -> Verdict {
        let Some(budget) = self.budget else { return Verdict::Info };
        let figure = match budget.judged {
            Judged::Difference => self.difference,
            Judged::Ratio => self.ratio,
            Judged::Value => self.value,
        };
        match figure {
            Some(value) if value.is_finite() && budget.met(value) => Verdict::Pass,
            _ => Verdict::Miss,
        }
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The command that reproduces this run.
    pub command: String,
    /// How the processes were pinned (or why they were not).
    pub pinning: String,
    /// Whether `--quick` durations were used.
    pub quick: bool,
    /// Seconds since the Unix epoch at the end of the run.
    pub finished_unix: u64,
    /// The figures.
    pub rows: Vec<Row>,
    /// Notes: scenarios not run and why, caveats.
    pub notes: Vec<String>,
    /// The raw measurements behind the rows, by name.
    pub raw: serde_json::Map<String, serde_json::Value>,
}

impl Report {
    /// The Markdown table with the command line and the notes.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| # | measure | direct | gateway | difference | ratio | budget | result |\n\
             |---|---|---:|---:|---:|---:|---|---|"
        );
        for row in &self.rows {
            let cell = |v: Option<f64>| v.map(|v| row.unit.format(v)).unwrap_or_else(|| "—".into());
            let (direct, gateway) = match row.value {
                Some(value) => ("—".to_owned(), row.unit.format(value)),
                None => (cell(row.direct), cell(row.gateway)),
            };
            let difference =
                row.difference.map(|v| row.unit.format_signed(v)).unwrap_or_else(|| "—".into());
            let ratio = row.ratio.map(|r| format!("{r:.2}×")).unwrap_or_else(|| "—".into());
            let budget = row.budget.map(|b| b.describe(row.unit)).unwrap_or_else(|| "—".into());
            let verdict = match row.verdict {
                Verdict::Pass => "PASS",
                Verdict::Miss => "**MISS**",
                Verdict::Info => "",
            };
            let _ = writeln!(
                out,
                "| {} | {} | {direct} | {gateway} | {difference} | {ratio} | {budget} | {verdict} |",
                row.scenario, row.measure
            );
        }
        let (pass, miss) = self.rows.iter().fold((0, 0), |(p, m), row| match row.verdict {
            Verdict::Pass => (p + 1, m),
            Verdict::Miss => (p, m + 1),
            Verdict::Info => (p, m),
        });
        let _ = writeln!(out, "\n{pass} within budget, {miss} missed.");
        let _ = writeln!(out, "\nPinning: {}.", self.pinning);
        if self.quick {
            let _ = writeln!(out, "\n`--quick`: short durations, figures are indicative only.");
        }
        for note in &self.notes {
            let _ = writeln!(out, "\n- {note}");
        }
        let _ = writeln!(out, "\nReproduce: `{}`", self.command);
        out
    }

    /// How many rows missed their budget.
    pub fn misses(&self) -> usize {
        self.rows.iter().filter(|row| row.verdict == Verdict::Miss).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn difference_and_ratio_are_judged() {
        let p50 = Row::compare(
            1,
            "p50",
            Unit::Micros,
            100.0,
            220.0,
            Some(Budget::at_most(Judged::Difference, 150.0)),
        );
        assert_eq!(p50.difference, Some(120.0));
        assert_eq!(p50.ratio, Some(2.2));
        assert_eq!(p50.verdict, Verdict::Pass);

        let p99 = Row::compare(
            1,
            "p99",
            Unit::Micros,
            100.0,
            1_200.0,
            Some(Budget::at_most(Judged::Difference, 1_000.0)),
        );
        assert_eq!(p99.verdict, Verdict::Miss);

        let rps = Row::compare(
            2,
            "req/s",
            Unit::Rps,
            10_000.0,
            4_400.0,
            Some(Budget::at_least(Judged::Ratio, 0.45)),
        );
        assert_eq!(rps.verdict, Verdict::Miss);
        let rps = Row::compare(
            2,
            "req/s",
            Unit::Rps,
            10_000.0,
            4_500.0,
            Some(Budget::at_least(Judged::Ratio, 0.45)),
        );
        assert_eq!(rps.verdict, Verdict::Pass, "the limit itself is within budget");
    }

    #[test]
    fn a_ratio_over_zero_is_a_miss_not_a_pass() {
        let row = Row::compare(
            2,
            "req/s",
            Unit::Rps,
            0.0,
            10.0,
            Some(Budget::at_least(Judged::Ratio, 0.45)),
        );
        assert_eq!(row.ratio, None);
        assert_eq!(row.verdict, Verdict::Miss);
        let row = Row::single(
            7,
            "cold start",
            Unit::Millis,
            f64::NAN,
            Some(Budget::at_most(Judged::Value, 100.0)),
        );
        assert_eq!(row.verdict, Verdict::Miss);
    }

    #[test]
    fn rows_without_budget_are_info() {
        let row = Row::single(6, "check cost", Unit::Nanos, 35.0, None);
        assert_eq!(row.verdict, Verdict::Info);
    }

    #[test]
    fn markdown_table_has_every_row_and_the_command() {
        let report = Report {
            command: "cargo xtask bench".into(),
            pinning: "gateway on CPU 0".into(),
            quick: false,
            finished_unix: 0,
            rows: vec![
                Row::compare(
                    1,
                    "latency p50",
                    Unit::Micros,
                    80.0,
                    190.0,
                    Some(Budget::at_most(Judged::Difference, 150.0)),
                ),
                Row::single(
                    7,
                    "idle RSS",
                    Unit::Mb,
                    25.5,
                    Some(Budget::at_most(Judged::Value, 20.0)),
                ),
                Row::single(6, "check cost", Unit::Nanos, 35.25, None),
            ],
            notes: vec!["scenario 6 not run".into()],
            raw: serde_json::Map::new(),
        };
        let text = report.markdown();
        assert!(
            text.contains(
                "| 1 | latency p50 | 80 µs | 190 µs | +110 µs | 2.38× | ≤ +150 µs | PASS |"
            ),
            "{text}"
        );
        assert!(
            text.contains("| 7 | idle RSS | — | 25.5 MB | — | — | ≤ 20.0 MB | **MISS** |"),
            "{text}"
        );
        assert!(text.contains("| 6 | check cost | — | 35.2 ns | — | — | — |  |"), "{text}");
        assert!(text.contains("1 within budget, 1 missed."), "{text}");
        assert!(text.contains("Reproduce: `cargo xtask bench`"), "{text}");
        assert!(text.contains("- scenario 6 not run"), "{text}");
        assert_eq!(report.misses(), 1);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["rows"][0]["verdict"], "PASS");
        assert_eq!(json["rows"][1]["verdict"], "MISS");
    }
}
