//! Amounts of US dollars as exact integers of micro-dollars (millionths of a dollar): parsed
//! from their decimal text, never through a float sum, so that prices, costs and budgets add
//! up exactly.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Micro-dollars in one dollar.
pub const MICROS_PER_USD: u64 = 1_000_000;

/// An amount as written in a config file or a JSON body: a number (`2.5`) or a string holding
/// a decimal number (`"2.50"`). [`UsdAmount::micros`] turns it into micro-dollars exactly.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum UsdAmount {
    /// A number. Its shortest decimal form is what is read, so `0.1` is exactly 100 000
    /// micro-dollars.
    Number(f64),
    /// A decimal number as text.
    Text(String),
}

/// Why an amount of dollars was refused. The text says what is wrong; the caller adds which
/// key or field held it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UsdError {
    /// Not a number, or not a plain decimal (`1e3`, `1,5`, `$2`); holds at most 20 characters
    /// of it.
    NotDecimal(String),
    /// Below zero.
    Negative,
    /// More than six decimals: amounts are kept in micro-dollars.
    TooPrecise,
    /// More than the largest amount the caller accepts, in micro-dollars.
    TooLarge {
        /// The largest accepted, in micro-dollars.
        max: u64,
    },
}

impl fmt::Display for UsdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotDecimal(text) => {
                write!(f, "`{text}` is not a decimal number of US dollars (like 2.50)")
            }
            Self::Negative => f.write_str("is negative; it must be at least 0"),
            Self::TooPrecise => {
                f.write_str("has more than 6 decimals (amounts are kept in micro-dollars)")
            }
            Self::TooLarge { max } => write!(
                f,
                "is above ${}; is the decimal point misplaced?",
                format_usd(*max).trim_end_matches('0').trim_end_matches('.')
            ),
        }
    }
}

impl std::error::Error for UsdError {}

impl UsdAmount {
    /// The amount in micro-dollars, refused when negative, not a decimal, more precise than a
    /// micro-dollar or above `max` micro-dollars.
    pub fn micros(&self, max: u64) -> Result<u64, UsdError> {
        match self {
            Self::Number(n) if n.is_nan() || n.is_infinite() => {
                Err(UsdError::NotDecimal(n.to_string()))
            }
            Self::Number(n) if n.is_sign_negative() && *n != 0.0 => Err(UsdError::Negative),
            // `f64`'s `Display` writes the shortest decimal that reads back as the same
            // number, never in exponent form: `2.5` for `2.50`, `0.1` for `0.1`.
            Self::Number(n) => parse_usd(&n.abs().to_string(), max),
            Self::Text(text) => parse_usd(text.trim(), max),
        }
    }
}

/// Parses `123.456789` (at most six decimals) into micro-dollars, refusing anything above
/// `max` micro-dollars.
pub fn parse_usd(text: &str, max: u64) -> Result<u64, UsdError> {
    if text.starts_with('-') {
        return Err(UsdError::Negative);
    }
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || text.ends_with('.') {
        return Err(UsdError::NotDecimal(text.chars().take(20).collect()));
    }
    if fraction.len() > 6 {
        return Err(UsdError::TooPrecise);
    }
    let too_large = UsdError::TooLarge { max };
    let whole = whole.trim_start_matches('0');
    // 13 digits of dollars is already beyond any `max` a caller has reason to set, and keeps
    // the product below `u64::MAX`.
    if whole.len() > 13 {
        return Err(too_large);
    }
    let whole: u64 =
        if whole.is_empty() { 0 } else { whole.parse().map_err(|_| too_large.clone())? };
    let fraction: u64 = format!("{fraction:0<6}").parse().unwrap_or(0);
    let micros = whole * MICROS_PER_USD + fraction;
    if micros > max { Err(too_large) } else { Ok(micros) }
}

/// Writes micro-dollars as dollars with six decimals: `125` is `0.000125`.
pub fn format_usd(micros: u64) -> String {
    format!("{}.{:06}", micros / MICROS_PER_USD, micros % MICROS_PER_USD)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_read_exactly_and_bad_ones_refused() {
        let max = 10_000 * MICROS_PER_USD;
        let ok = |a: UsdAmount| a.micros(max).unwrap();
        assert_eq!(ok(UsdAmount::Number(0.1)), 100_000);
        assert_eq!(ok(UsdAmount::Number(2.5)), 2_500_000);
        assert_eq!(ok(UsdAmount::Text(" 0.000001 ".into())), 1);
        assert_eq!(ok(UsdAmount::Text("0010.50".into())), 10_500_000);
        assert_eq!(ok(UsdAmount::Number(-0.0)), 0);
        let err = |a: UsdAmount| a.micros(max).unwrap_err();
        assert_eq!(err(UsdAmount::Number(-1.0)), UsdError::Negative);
        assert_eq!(err(UsdAmount::Text("-1".into())), UsdError::Negative);
        assert_eq!(err(UsdAmount::Text("0.0000001".into())), UsdError::TooPrecise);
        assert_eq!(err(UsdAmount::Text("10000.000001".into())), UsdError::TooLarge { max });
        assert_eq!(err(UsdAmount::Text("99999999999999999999".into())), UsdError::TooLarge { max });
        assert!(matches!(err(UsdAmount::Number(f64::NAN)), UsdError::NotDecimal(_)));
        for bad in ["", ".5", "5.", "1e3", "1,5", "$2", "0x10", "1.2.3"] {
            assert!(matches!(err(UsdAmount::Text(bad.into())), UsdError::NotDecimal(_)), "{bad}");
        }
        let long = "x".repeat(100);
        let echoed = err(UsdAmount::Text(long)).to_string();
        assert!(echoed.contains(&"x".repeat(20)) && !echoed.contains(&"x".repeat(21)), "{echoed}");
        assert_eq!(
            UsdError::TooLarge { max }.to_string(),
            "is above $10000; is the decimal point misplaced?"
        );
    }

    #[test]
    fn amounts_are_written_with_six_decimals() {
        assert_eq!(format_usd(125), "0.000125");
        assert_eq!(format_usd(12_500_000), "12.500000");
        assert_eq!(format_usd(u64::MAX), "18446744073709.551615");
    }
}
