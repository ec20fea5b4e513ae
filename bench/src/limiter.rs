//! The figures of `cargo bench -p cliproxy-netguard --bench limiter` (the per-IP limiter's
//! own benchmark, run by `cargo xtask bench` and parsed here rather than rewritten).

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// What the report takes from the limiter benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LimiterFigures {
    /// One check of a known address that is admitted, in ns.
    pub check_ns: f64,
    /// One check of a never-seen address during the spray, in ns.
    pub spray_check_ns: f64,
    /// The benchmark process's RSS before the sprays, kB.
    pub rss_before_kb: f64,
    /// After the 1,000,000-address spray, kB.
    pub rss_after_spray_kb: f64,
    /// After `evict_idle`, kB.
    pub rss_after_eviction_kb: f64,
    /// Addresses still tracked after eviction.
    pub tracked_after_eviction: f64,
}

/// Parses the benchmark's table (`label   value [unit]` lines).
pub fn parse(output: &str) -> Result<LimiterFigures> {
    let mut values = BTreeMap::new();
    for line in output.lines() {
        let mut words: Vec<&str> = line.split_whitespace().collect();
        if matches!(words.last(), Some(&"ns" | &"kB")) {
            words.pop();
        }
        let Some((value, label)) = words.split_last() else { continue };
        if let Ok(value) = value.parse::<f64>() {
            values.insert(label.join(" "), value);
        }
    }
    let get = |label: &str| {
        values
            .get(label)
            .copied()
            .with_context(|| format!("the limiter benchmark printed no `{label}` line"))
    };
    Ok(LimiterFigures {
        check_ns: get("check, hot key, admitted")?,
        spray_check_ns: get("check, spray of new addresses")?,
        rss_before_kb: get("RSS before")?,
        rss_after_spray_kb: get("RSS after the spray")?,
        rss_after_eviction_kb: get("RSS after eviction")?,
        tracked_after_eviction: get("tracked after eviction")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "\
per-IP limiter (default: 10/s, burst 20, max_tracked 100000)
measure                                             value
check, hot key, admitted                          31.4 ns
check, hot key, refused                           29.0 ns
global check (one atomic)                          4.2 ns
check, spray of new addresses                    112.7 ns
spray: addresses sent                         1000000
spray: admitted                               1000000
spray: tracked afterwards (len)                100000
limiter capacity                               131072
check, spray, frozen clock (worst case)          98.1 ns
frozen spray: admitted                         123456
frozen spray: tracked afterwards               100000
RSS before                                       2048 kB
RSS after the spray                             14336 kB
RSS after both sprays                           26624 kB
evicted by evict_idle()                        100000
tracked after eviction                              0
RSS after eviction                              26000 kB
RSS growth during the sprays                    24576 kB
";

    #[test]
    fn the_benchmark_table_is_parsed() {
        let figures = parse(OUTPUT).unwrap();
        assert_eq!(figures.check_ns, 31.4);
        assert_eq!(figures.spray_check_ns, 112.7);
        assert_eq!(figures.rss_before_kb, 2048.0);
        assert_eq!(figures.rss_after_spray_kb, 14_336.0);
        assert_eq!(figures.rss_after_eviction_kb, 26_000.0);
        assert_eq!(figures.tracked_after_eviction, 0.0);
    }

    #[test]
    fn a_missing_line_is_an_error_naming_it() {
        let cut: String = OUTPUT
            .lines()
            .filter(|l| !l.starts_with("RSS after eviction"))
            .collect::<Vec<_>>()
            .join("\n");
        let error = parse(&cut).unwrap_err().to_string();
        assert!(error.contains("RSS after eviction"), "{error}");
    }
}
