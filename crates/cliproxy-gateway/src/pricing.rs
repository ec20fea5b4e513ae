//! Prices and the cost of a request: the `pricing:` section, the built-in list prices, the
//! table that looks a model up, and the cost of a usage under a price.
//!
//! Money is integer micro-dollars throughout: a price is micro-dollars per 1M tokens
//! ([`Price`]), a cost is micro-dollars ([`MicroUsd`]). Prices are parsed from their decimal
//! text (a YAML number is read back as the shortest decimal that denotes it), so `0.1` is
//! exactly 100 000 micro-dollars and sums of prices never drift as `f64` sums do.
//!
//! A request is priced under the name the provider bills: the upstream name of an alias
//! (`ModelEntry::upstream_name`), otherwise the name the client asked for. A model without a
//! price has no cost ([`PriceTable::lookup`] gives `None`): it is shown as unpriced, never as
//! free.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use cliproxy_core::glob_match;
use cliproxy_core::money::{MICROS_PER_USD, UsdAmount, UsdError, format_usd};
use serde::Deserialize;

use crate::usage::Usage;

/// Prices are per this many tokens.
const TOKENS_PER_PRICE: u128 = 1_000_000;

/// The highest price accepted, in micro-dollars per 1M tokens ($10,000): no provider lists
/// anything near it, so a larger figure is a typo (a misplaced decimal point, cents for
/// dollars) that would otherwise bill every request a thousandfold.
const MAX_PRICE: u64 = 10_000 * MICROS_PER_USD;

/// An amount of money in micro-dollars (millionths of a US dollar). `Display` writes it as a
/// decimal number of dollars with six decimals: `125` is `0.000125`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct MicroUsd(pub u64);

impl fmt::Display for MicroUsd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_usd(self.0))
    }
}

/// A model's price, in micro-dollars per 1M tokens of each kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    /// Prompt (input) tokens.
    pub input: u64,
    /// Generated (output) tokens.
    pub output: u64,
    /// Prompt tokens read from the provider's prompt cache.
    pub cache_read: u64,
    /// Prompt tokens written to the provider's prompt cache.
    pub cache_write: u64,
}

impl Price {
    /// The cost of `usage` under this price: each kind of token times its price per 1M
    /// tokens, summed in `u128` (no product of two `u64` can overflow it) and divided by 1M
    /// once, rounded UP to the next micro-dollar, so that a request that used any priced token
    /// never costs zero and many small requests are never billed less than their sum. A cost
    /// beyond `u64::MAX` micro-dollars (only reachable with absurd token counts) saturates.
    ///
    /// Cached prompt tokens are part of `usage.input_tokens` (the usage reader puts them
    /// there for every provider), so they are priced once: at the cache-read or cache-write
    /// price, and only the rest of the prompt at the input price.
    pub fn cost(&self, usage: Usage) -> MicroUsd {
        let cache_read = usage.cache_read_tokens.min(usage.input_tokens);
        let cache_write = usage.cache_write_tokens.min(usage.input_tokens - cache_read);
        let uncached = usage.input_tokens - cache_read - cache_write;
        let total = u128::from(uncached) * u128::from(self.input)
            + u128::from(cache_read) * u128::from(self.cache_read)
            + u128::from(cache_write) * u128::from(self.cache_write)
            + u128::from(usage.output_tokens) * u128::from(self.output);
        MicroUsd(u64::try_from(total.div_ceil(TOKENS_PER_PRICE)).unwrap_or(u64::MAX))
    }
}

/// The `pricing:` section: prices by model name or `*` glob, in USD per 1M tokens. Entries
/// override the built-in ones of the same name.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct PricingConfig {
    /// `pricing.models:` — `{"<model or glob>": {input, output, cache_read, cache_write}}`.
    pub models: BTreeMap<String, PriceConfig>,
}

/// One `pricing.models` entry as written: USD per 1M tokens, as YAML numbers or strings.
/// `input` and `output` are required; a missing `cache_read` or `cache_write` costs what an
/// input token costs (never less: an unknown price is not taken as a discount).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PriceConfig {
    /// USD per 1M prompt tokens.
    pub input: Option<Amount>,
    /// USD per 1M generated tokens.
    pub output: Option<Amount>,
    /// USD per 1M prompt tokens read from the cache; defaults to `input`.
    pub cache_read: Option<Amount>,
    /// USD per 1M prompt tokens written to the cache; defaults to `input`.
    pub cache_write: Option<Amount>,
}

/// A price as written: a YAML number (`2.5`) or a string (`"2.50"`). It is turned into
/// micro-dollars by [`PricingConfig::check`], which names the key of any bad one.
pub type Amount = UsdAmount;

impl PricingConfig {
    /// The configured prices in micro-dollars, or the problems, each naming its key
    /// (`pricing.models."gpt-4o".input`), for the configuration check to report.
    pub fn check(&self) -> Result<BTreeMap<String, Price>, Vec<String>> {
        let mut prices = BTreeMap::new();
        let mut problems = Vec::new();
        for (model, entry) in &self.models {
            let key = |field: &str| format!("pricing.models.\"{model}\".{field}");
            let mut read = |field: &str, amount: &Option<Amount>| match amount {
                None => None,
                Some(amount) => match parse_amount(amount) {
                    Ok(micros) => Some(micros),
                    Err(e) => {
                        problems.push(format!("`{}`: {e}", key(field)));
                        None
                    }
                },
            };
            let input = read("input", &entry.input);
            let output = read("output", &entry.output);
            let cache_read = read("cache_read", &entry.cache_read);
            let cache_write = read("cache_write", &entry.cache_write);
            if model.is_empty() {
                problems.push("`pricing.models` has an empty model name".to_owned());
            }
            for (field, given) in [("input", &entry.input), ("output", &entry.output)] {
                if given.is_none() {
                    problems.push(format!("`{}`: missing required key", key(field)));
                }
            }
            if let (Some(input), Some(output)) = (input, output) {
                let price = Price {
                    input,
                    output,
                    cache_read: cache_read.unwrap_or(input),
                    cache_write: cache_write.unwrap_or(input),
                };
                prices.insert(model.clone(), price);
            }
        }
        if problems.is_empty() { Ok(prices) } else { Err(problems) }
    }
}

/// The price table: the built-in list prices overridden by the configured ones, looked up
/// by the name the provider bills.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    exact: HashMap<String, Price>,
    /// Longest pattern first.
    globs: Vec<(String, Price)>,
}

impl PriceTable {
    /// The built-in prices ([`BUILT_IN`]) with `config`'s entries over them.
    pub fn new(config: &PricingConfig) -> Result<Self, Vec<String>> {
        let mut all: BTreeMap<String, Price> = BUILT_IN
            .iter()
            .map(|&(name, input, output, cache_read, cache_write)| {
                (name.to_owned(), Price { input, output, cache_read, cache_write })
            })
            .collect();
        all.extend(config.check()?);
        let mut table = Self::default();
        for (name, price) in all {
            if name.contains('*') {
                table.globs.push((name, price));
            } else {
                table.exact.insert(name, price);
            }
        }
        // Longest pattern first, as routing does; the stable sort keeps name order among
        // equals (the map above is sorted), so a lookup never depends on hash order.
        table.globs.sort_by_key(|glob| std::cmp::Reverse(glob.0.len()));
        Ok(table)
    }

    /// The price of `model` (the provider's name for it): an exact entry, else the longest
    /// matching glob, else `None` (unpriced).
    pub fn lookup(&self, model: &str) -> Option<Price> {
        if let Some(price) = self.exact.get(model) {
            return Some(*price);
        }
        self.globs.iter().find(|(pattern, _)| glob_match(pattern, model)).map(|g| g.1)
    }
}

/// Parses a price in USD per 1M tokens into micro-dollars, exactly.
fn parse_amount(amount: &Amount) -> Result<u64, String> {
    amount.micros(MAX_PRICE).map_err(|e| match e {
        UsdError::NotDecimal(text) => {
            format!("`{text}` is not a decimal number of USD per 1M tokens (like 2.50)")
        }
        UsdError::Negative => "is negative; a price is at least 0".to_owned(),
        UsdError::TooPrecise => {
            "has more than 6 decimals (prices are kept in micro-dollars)".to_owned()
        }
        UsdError::TooLarge { .. } => {
            "is above $10000 per 1M tokens; is the decimal point misplaced?".to_owned()
        }
        other => other.to_string(),
    })
}

/// `$x` as micro-dollars per 1M tokens, for the table below.
const fn usd(dollars: u64, micros: u64) -> u64 {
    dollars * MICROS_PER_USD + micros
}

/// The built-in prices: the providers' public list prices for standard (not batch, not
/// priority) requests of the first price tier (prompts up to 200k tokens where the price
/// depends on length), written on 2026-12-07 from the providers' price pages as known then
/// (check them: docs/pricing.md). Name, input, output, cache read, cache write, in
/// micro-dollars per 1M tokens. A `-2*` glob prices a model's dated snapshots
/// (`gpt-4o-2024-08-06`, `claude-sonnet-4-5-20250929`) as the model. OpenAI and Gemini charge
/// no extra for writing the cache (Gemini bills cache storage by the hour, which a request
/// does not show): their cache-write price is the input price. Anthropic's is its 5-minute
/// cache write (1.25 × input). docs/pricing.md says how to override them.
pub const BUILT_IN: &[(&str, u64, u64, u64, u64)] = &[
    // OpenAI.
    ("gpt-4o", usd(2, 500_000), usd(10, 0), usd(1, 250_000), usd(2, 500_000)),
    ("gpt-4o-2*", usd(2, 500_000), usd(10, 0), usd(1, 250_000), usd(2, 500_000)),
    ("gpt-4o-mini", usd(0, 150_000), usd(0, 600_000), usd(0, 75_000), usd(0, 150_000)),
    ("gpt-4o-mini-2*", usd(0, 150_000), usd(0, 600_000), usd(0, 75_000), usd(0, 150_000)),
    ("gpt-4.1", usd(2, 0), usd(8, 0), usd(0, 500_000), usd(2, 0)),
    ("gpt-4.1-2*", usd(2, 0), usd(8, 0), usd(0, 500_000), usd(2, 0)),
    ("gpt-4.1-mini", usd(0, 400_000), usd(1, 600_000), usd(0, 100_000), usd(0, 400_000)),
    ("gpt-4.1-mini-2*", usd(0, 400_000), usd(1, 600_000), usd(0, 100_000), usd(0, 400_000)),
    ("gpt-4.1-nano", usd(0, 100_000), usd(0, 400_000), usd(0, 25_000), usd(0, 100_000)),
    ("gpt-4.1-nano-2*", usd(0, 100_000), usd(0, 400_000), usd(0, 25_000), usd(0, 100_000)),
    ("o3", usd(2, 0), usd(8, 0), usd(0, 500_000), usd(2, 0)),
    ("o3-2*", usd(2, 0), usd(8, 0), usd(0, 500_000), usd(2, 0)),
    ("o4-mini", usd(1, 100_000), usd(4, 400_000), usd(0, 275_000), usd(1, 100_000)),
    ("o4-mini-2*", usd(1, 100_000), usd(4, 400_000), usd(0, 275_000), usd(1, 100_000)),
    ("gpt-5", usd(1, 250_000), usd(10, 0), usd(0, 125_000), usd(1, 250_000)),
    ("gpt-5-2*", usd(1, 250_000), usd(10, 0), usd(0, 125_000), usd(1, 250_000)),
    ("gpt-5-mini", usd(0, 250_000), usd(2, 0), usd(0, 25_000), usd(0, 250_000)),
    ("gpt-5-mini-2*", usd(0, 250_000), usd(2, 0), usd(0, 25_000), usd(0, 250_000)),
    // Anthropic.
    ("claude-opus-4-1", usd(15, 0), usd(75, 0), usd(1, 500_000), usd(18, 750_000)),
    ("claude-opus-4-1-2*", usd(15, 0), usd(75, 0), usd(1, 500_000), usd(18, 750_000)),
    ("claude-sonnet-4", usd(3, 0), usd(15, 0), usd(0, 300_000), usd(3, 750_000)),
    ("claude-sonnet-4-2*", usd(3, 0), usd(15, 0), usd(0, 300_000), usd(3, 750_000)),
    ("claude-sonnet-4-5", usd(3, 0), usd(15, 0), usd(0, 300_000), usd(3, 750_000)),
    ("claude-sonnet-4-5-2*", usd(3, 0), usd(15, 0), usd(0, 300_000), usd(3, 750_000)),
    ("claude-haiku-4-5", usd(1, 0), usd(5, 0), usd(0, 100_000), usd(1, 250_000)),
    ("claude-haiku-4-5-2*", usd(1, 0), usd(5, 0), usd(0, 100_000), usd(1, 250_000)),
    ("claude-3-5-haiku", usd(0, 800_000), usd(4, 0), usd(0, 80_000), usd(1, 0)),
    ("claude-3-5-haiku-2*", usd(0, 800_000), usd(4, 0), usd(0, 80_000), usd(1, 0)),
    ("claude-3-5-haiku-latest", usd(0, 800_000), usd(4, 0), usd(0, 80_000), usd(1, 0)),
    // Gemini.
    ("gemini-2.5-pro", usd(1, 250_000), usd(10, 0), usd(0, 125_000), usd(1, 250_000)),
    ("gemini-2.5-flash", usd(0, 300_000), usd(2, 500_000), usd(0, 30_000), usd(0, 300_000)),
    ("gemini-2.0-flash", usd(0, 100_000), usd(0, 400_000), usd(0, 25_000), usd(0, 100_000)),
];

#[cfg(test)]
mod tests {
    use figment::Figment;
    use figment::providers::{Format, Yaml};

    use super::*;

    fn config(yaml: &str) -> PricingConfig {
        Figment::from(Yaml::string(yaml)).extract().unwrap()
    }

    fn table(yaml: &str) -> PriceTable {
        PriceTable::new(&config(yaml)).unwrap()
    }

    fn error(yaml: &str) -> String {
        config(yaml).check().unwrap_err().join("; ")
    }

    #[test]
    fn prices_are_parsed_exactly_from_numbers_and_strings() {
        let prices = config(
            "models:\n  a: {input: 2.50, output: '10.00', cache_read: 1.25, cache_write: '3.125'}\n  b: {input: 0.1, output: 0.2}\n  c: {input: 0, output: 10000}\n  d: {input: '0.000001', output: 7}\n  e: {input: 1.15, output: 1.001}\n",
        )
        .check()
        .unwrap();
        assert_eq!(
            prices["a"],
            Price {
                input: 2_500_000,
                output: 10_000_000,
                cache_read: 1_250_000,
                cache_write: 3_125_000
            }
        );
        // 0.1 + 0.2 is 0.30000000000000004 in f64; in micro-dollars it is exact.
        let b = prices["b"];
        assert_eq!(b.input + b.output, 300_000);
        assert_eq!(
            (b.cache_read, b.cache_write),
            (100_000, 100_000),
            "cache prices default to input"
        );
        assert_eq!((prices["c"].input, prices["c"].output), (0, 10_000_000_000));
        assert_eq!((prices["d"].input, prices["d"].output), (1, 7_000_000));
        // 1.001 × 1e6 in f64 is 1000999.9999999999, truncated to 1000999: read as a decimal,
        // it is exact.
        assert_eq!((prices["e"].input, prices["e"].output), (1_150_000, 1_001_000));
    }

    #[test]
    fn every_bad_price_is_refused_naming_its_key() {
        for (yaml, expected) in [
            (
                "models:\n  gpt-4o: {input: -1, output: 1}\n",
                "`pricing.models.\"gpt-4o\".input`: is negative",
            ),
            (
                "models:\n  gpt-4o: {input: '-0.5', output: 1}\n",
                "`pricing.models.\"gpt-4o\".input`: is negative",
            ),
            (
                "models:\n  gpt-4o: {input: .nan, output: 1}\n",
                "`pricing.models.\"gpt-4o\".input`: `NaN` is not a decimal",
            ),
            (
                "models:\n  gpt-4o: {input: .inf, output: 1}\n",
                "`pricing.models.\"gpt-4o\".input`: `inf` is not a decimal",
            ),
            (
                "models:\n  gpt-4o: {input: 1, output: 0.0000001}\n",
                "`pricing.models.\"gpt-4o\".output`: has more than 6 decimals",
            ),
            (
                "models:\n  gpt-4o: {input: 1, output: '1.1234567'}\n",
                "`pricing.models.\"gpt-4o\".output`: has more than 6 decimals",
            ),
            (
                "models:\n  gpt-4o: {input: 10000.000001, output: 1}\n",
                "`pricing.models.\"gpt-4o\".input`: is above $10000",
            ),
            (
                "models:\n  gpt-4o: {input: '99999999999999999999999', output: 1}\n",
                "`pricing.models.\"gpt-4o\".input`: is above $10000",
            ),
            (
                "models:\n  gpt-4.1: {input: 1, output: 1, cache_read: 'NaN'}\n",
                "`pricing.models.\"gpt-4.1\".cache_read`: `NaN` is not a decimal",
            ),
            (
                "models:\n  m: {input: 1, output: 1, cache_write: '1.'}\n",
                "`pricing.models.\"m\".cache_write`: `1.` is not a decimal",
            ),
            (
                "models:\n  m: {input: 1, output: 1, cache_write: '.5'}\n",
                "`pricing.models.\"m\".cache_write`: `.5` is not a decimal",
            ),
            (
                "models:\n  m: {input: '1e3', output: 1}\n",
                "`pricing.models.\"m\".input`: `1e3` is not a decimal",
            ),
            ("models:\n  m: {output: 1}\n", "`pricing.models.\"m\".input`: missing required key"),
            ("models:\n  m: {input: 1}\n", "`pricing.models.\"m\".output`: missing required key"),
            ("models:\n  '': {input: 1, output: 1}\n", "`pricing.models` has an empty model name"),
        ] {
            let error = error(yaml);
            assert!(error.contains(expected), "{yaml}: {error}");
        }
        // Two bad prices: both named.
        let error = error("models:\n  a: {input: -1, output: '2.0000001'}\n");
        assert!(error.contains("\"a\".input") && error.contains("\"a\".output"), "{error}");
        // An unknown key or a price of the wrong type is refused by the types.
        let unknown: Result<PricingConfig, _> =
            Figment::from(Yaml::string("models:\n  m: {input: 1, output: 1, cache: 1}\n"))
                .extract();
        assert!(unknown.is_err());
        let list: Result<PricingConfig, _> =
            Figment::from(Yaml::string("models:\n  m: {input: [1], output: 1}\n")).extract();
        assert!(list.is_err());
    }

    #[test]
    fn exact_beats_glob_longest_glob_wins_and_config_overrides_built_in() {
        let prices = table(
            "models:\n  'gpt-*': {input: 1, output: 1}\n  'gpt-4*': {input: 2, output: 2}\n  gpt-4o: {input: '3.5', output: 4}\n  'my-*': {input: 5, output: 5}\n",
        );
        assert_eq!(
            prices.lookup("gpt-4o").map(|p| p.input),
            Some(3_500_000),
            "config beats built-in"
        );
        assert_eq!(
            prices.lookup("gpt-4o-2024-08-06").map(|p| p.input),
            Some(2_500_000),
            "built-in glob gpt-4o-2* is the longest"
        );
        assert_eq!(
            prices.lookup("gpt-4.5").map(|p| p.input),
            Some(2_000_000),
            "gpt-4* is longer than gpt-*"
        );
        assert_eq!(
            prices.lookup("gpt-4.1").map(|p| p.input),
            Some(2_000_000),
            "exact built-in beats any glob"
        );
        assert_eq!(prices.lookup("gpt-3.5").map(|p| p.input), Some(1_000_000));
        assert_eq!(prices.lookup("my-model").map(|p| p.output), Some(5_000_000));
        assert_eq!(prices.lookup("llama-3"), None, "unpriced");
        assert_eq!(prices.lookup(""), None);
    }

    #[test]
    fn the_built_in_table_prices_every_listed_model() {
        let prices = table("{}");
        for model in [
            "gpt-4o",
            "gpt-4o-mini",
            "gpt-4.1",
            "gpt-4.1-mini",
            "gpt-4.1-nano",
            "o3",
            "o4-mini",
            "gpt-5",
            "gpt-5-mini",
            "claude-opus-4-1",
            "claude-sonnet-4",
            "claude-sonnet-4-5",
            "claude-haiku-4-5",
            "claude-3-5-haiku",
            "gemini-2.5-pro",
            "gemini-2.5-flash",
            "gemini-2.0-flash",
        ] {
            let price = prices.lookup(model).unwrap_or_else(|| panic!("{model} unpriced"));
            assert!(price.input > 0 && price.output >= price.input, "{model}: {price:?}");
        }
        // A dated snapshot is its model's price; a different model is not.
        assert_eq!(prices.lookup("claude-sonnet-4-5-20250929"), prices.lookup("claude-sonnet-4-5"));
        assert_eq!(prices.lookup("gpt-4o-mini-2024-07-18"), prices.lookup("gpt-4o-mini"));
        assert_eq!(prices.lookup("gpt-5-nano"), None, "not billed as gpt-5");
        assert_eq!(prices.lookup("gemini-2.5-flash-lite"), None, "not billed as flash");
        // Anthropic's cache writes cost more than input.
        let sonnet = prices.lookup("claude-sonnet-4-5").unwrap();
        assert!(sonnet.cache_write > sonnet.input && sonnet.cache_read < sonnet.input);
    }

    #[test]
    fn cost_is_exact_rounded_up_and_never_overflows() {
        let price = Price { input: 2_500_000, output: 10_000_000, cache_read: 0, cache_write: 0 };
        let cost = |input, output| price.cost(Usage::new(input, output));
        // 10 input and 10 output tokens of gpt-4o: 25 + 100 micro-dollars.
        assert_eq!(cost(10, 10), MicroUsd(125));
        assert_eq!(cost(10, 10).to_string(), "0.000125");
        assert_eq!(cost(1_000_000, 1_000_000).to_string(), "12.500000");
        assert_eq!(cost(0, 0), MicroUsd(0));
        // A third of a micro-dollar rounds up: a priced token never costs nothing.
        let cheap = Price { input: 1, output: 1, cache_read: 1, cache_write: 1 };
        assert_eq!(cheap.cost(Usage::new(1, 0)), MicroUsd(1));
        assert_eq!(cheap.cost(Usage::new(1_000_000, 0)), MicroUsd(1));
        assert_eq!(cheap.cost(Usage::new(1_000_001, 0)), MicroUsd(2));
        // A billion tokens at the highest price: $10M, exact.
        let dear = Price { input: MAX_PRICE, output: MAX_PRICE, cache_read: 0, cache_write: 0 };
        let billion = Usage::new(1_000_000_000, 0);
        assert_eq!(dear.cost(billion).to_string(), "10000000.000000");
        // The largest token counts saturate instead of wrapping.
        let max = Usage::new(u64::MAX, u64::MAX);
        assert_eq!(dear.cost(max), MicroUsd(u64::MAX));
        let all_cached = Usage {
            cache_read_tokens: u64::MAX,
            cache_write_tokens: u64::MAX,
            ..Usage::new(u64::MAX, u64::MAX)
        };
        assert_eq!(dear.cost(all_cached), MicroUsd(u64::MAX));
        assert_eq!(MicroUsd(u64::MAX).to_string(), "18446744073709.551615");
    }

    /// Issue 22: each kind of token is priced at its own price, and cached prompt tokens
    /// (part of the prompt count) are priced once, as cache tokens, not also as input.
    #[test]
    fn cache_tokens_are_priced_apart_and_once() {
        // claude-sonnet-4-5: $3 input, $15 output, $0.30 cache read, $3.75 cache write.
        let sonnet = PriceTable::new(&PricingConfig::default())
            .unwrap()
            .lookup("claude-sonnet-4-5")
            .unwrap();
        // 1M prompt tokens of which 600k read from the cache and 300k written to it, 100k
        // output: 100k × $3 + 600k × $0.30 + 300k × $3.75 + 100k × $15 = $0.30 + $0.18 +
        // $1.125 + $1.50.
        let usage = Usage {
            input_tokens: 1_000_000,
            output_tokens: 100_000,
            cache_read_tokens: 600_000,
            cache_write_tokens: 300_000,
        };
        assert_eq!(sonnet.cost(usage).to_string(), "3.105000");
        // gpt-4o: 2006 prompt tokens of which 1920 cached, 300 output: 86 × $2.50 + 1920 ×
        // $1.25 + 300 × $10 per 1M = 215 + 2400 + 3000 micro-dollars.
        let gpt = PriceTable::new(&PricingConfig::default()).unwrap().lookup("gpt-4o").unwrap();
        let usage = Usage { cache_read_tokens: 1920, ..Usage::new(2006, 300) };
        assert_eq!(gpt.cost(usage), MicroUsd(5615));
        // Cache figures past the prompt are cut to it: never a negative uncached part.
        let usage = Usage { cache_read_tokens: 50, cache_write_tokens: 50, ..Usage::new(10, 0) };
        let price = Price { input: 1_000_000, output: 0, cache_read: 2_000_000, cache_write: 0 };
        assert_eq!(price.cost(usage), MicroUsd(20));
    }
}
