//! Serde for durations written as `30s`, `5m`, `1h`, `30d` or `250ms`, for config files. Use
//! it as `#[serde(with = "cliproxy_core::duration")]`.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Reads `30s`, `5m`, `1h`, `30d`, `250ms` (or a bare `0`). A number without a unit is an
/// error that shows how to write it.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Number(u64),
    }
    match Raw::deserialize(d)? {
        Raw::Text(text) => humantime::parse_duration(text.trim()).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{text}` is not a duration ({e}); write it like 30s, 5m, 1h or 30d"
            ))
        }),
        Raw::Number(0) => Ok(Duration::ZERO),
        Raw::Number(n) => {
            Err(serde::de::Error::custom(format!("`{n}` has no unit; write it like {n}s or {n}ms")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Holder {
        #[serde(with = "crate::duration")]
        d: Duration,
    }

    fn parse(text: &str) -> Result<Duration, String> {
        serde_json::from_str::<Holder>(&format!("{{\"d\": {text}}}"))
            .map(|h| h.d)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn units_are_required_and_read() {
        assert_eq!(parse("\"30s\""), Ok(Duration::from_secs(30)));
        assert_eq!(parse("\"5m\""), Ok(Duration::from_secs(300)));
        assert_eq!(parse("\"30d\""), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse("\"250ms\""), Ok(Duration::from_millis(250)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert!(parse("30").unwrap_err().contains("has no unit; write it like 30s"));
        assert!(parse("\"soon\"").unwrap_err().contains("is not a duration"));
    }
}
