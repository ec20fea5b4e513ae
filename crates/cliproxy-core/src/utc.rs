//! Unix seconds as UTC text, the two forms the workspace shows: RFC 3339 in messages (a quota's
//! reset time, a certificate's expiry) and a plain date and time in the CLI's tables. The
//! calendar is the `time` crate's; this module only fixes the forms, so every crate spells a
//! time the same way.

use time::macros::format_description;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// `2025-02-01T00:00:00Z`: RFC 3339 in UTC, whole seconds.
pub fn format_utc(unix_seconds: u64) -> String {
    // RFC 3339 formatting fails only for a year of more than four digits, which `at` clamps
    // away, or on a writer error, which a `String` never has.
    at(unix_seconds).format(&Rfc3339).unwrap_or_default()
}

/// `2025-02-01 00:00:00`: the date and time in UTC, as the CLI's tables show them.
pub fn format_utc_plain(unix_seconds: u64) -> String {
    let form = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    // As above: these fields never fail to format into a `String`.
    at(unix_seconds).format(form).unwrap_or_default()
}

/// Reads an RFC 3339 time in UTC (`2025-02-01T00:00:00Z`, fractions of a second dropped)
/// as Unix seconds; `None` for anything else, an offset other than `Z` or `+00:00` and a
/// time before 1970 included. The inverse of [`format_utc`] for what it writes.
pub fn parse_utc(text: &str) -> Option<u64> {
    let time = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    if !time.offset().is_utc() {
        return None;
    }
    u64::try_from(time.unix_timestamp()).ok()
}

/// 9999-12-31T23:59:59Z, the last second the `time` crate represents (without its
/// `large-dates`, which nothing here needs).
const LAST_SECOND: i64 = 253_402_300_799;

/// The time `unix_seconds` names; times after [`LAST_SECOND`], which no clock reaches, are
/// clamped to it.
fn at(unix_seconds: u64) -> OffsetDateTime {
    let seconds = i64::try_from(unix_seconds).unwrap_or(LAST_SECOND).min(LAST_SECOND);
    // In range by the clamp above, so the fallback is never taken.
    OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_of_known_times() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(format_utc_plain(0), "1970-01-01 00:00:00");
        assert_eq!(format_utc_plain(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(format_utc_plain(1_763_850_000), "2025-11-22 22:20:00");
    }

    #[test]
    fn rfc3339_in_utc_reads_back_and_the_rest_is_refused() {
        assert_eq!(parse_utc("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_utc("2024-02-29T23:59:59Z"), Some(1_709_251_199));
        assert_eq!(parse_utc("2024-02-29T23:59:59.75+00:00"), Some(1_709_251_199));
        assert_eq!(parse_utc(&format_utc(1_763_850_000)), Some(1_763_850_000));
        for bad in ["", "2024-02-29", "2024-02-29T23:59:59+01:00", "1969-12-31T23:59:59Z", "soon"] {
            assert_eq!(parse_utc(bad), None, "{bad}");
        }
    }

    #[test]
    fn times_past_the_year_9999_show_its_last_second() {
        assert_eq!(format_utc(u64::MAX), "9999-12-31T23:59:59Z");
        assert_eq!(format_utc_plain(253_402_300_800), "9999-12-31 23:59:59");
        assert_eq!(format_utc(253_402_300_799), "9999-12-31T23:59:59Z");
    }
}
