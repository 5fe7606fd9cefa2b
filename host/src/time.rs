//! Wall-clock time as Strata counts it: nanoseconds since the Unix epoch
//! (`i64`), written and read as RFC 3339 in UTC.

use chrono::{DateTime, SecondsFormat, Utc};

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> i64 {
    Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// RFC 3339 in UTC with as many fractional digits as needed.
pub fn rfc3339(ns: i64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(ns).to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Parses an RFC 3339 timestamp into nanoseconds since the epoch.
pub fn parse_rfc3339(text: &str) -> Result<i64, String> {
    let time = DateTime::parse_from_rfc3339(text).map_err(|e| format!("invalid RFC 3339 timestamp {text:?}: {e}"))?;
    time.timestamp_nanos_opt().ok_or_else(|| format!("timestamp {text:?} out of range"))
}

/// Nanoseconds in a second.
pub const SECOND_NS: i64 = 1_000_000_000;

/// The units of a duration, each with its nanoseconds.
const DURATION_UNITS_NS: [(&str, i64); 9] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", SECOND_NS),
    ("m", 60 * SECOND_NS),
    ("h", 3_600 * SECOND_NS),
    ("d", 86_400 * SECOND_NS),
    ("w", 604_800 * SECOND_NS),
];

/// Why text is not a duration; each caller words it for its own setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationError {
    /// It does not start with a count of ASCII digits that fits an `i64`.
    Count,
    /// Its unit is unknown, or finer than the caller accepts.
    Unit,
    /// It is zero, or longer than `i64` nanoseconds hold (~292 years).
    Range,
}

/// Parses a count and a unit with nothing between or around them (`30d`,
/// `500ms`) into positive nanoseconds. Units: `ns`, `us` (or `µs`), `ms`,
/// `s`, `m`, `h`, `d`, `w`; those shorter than `shortest_unit_ns` are refused.
pub fn parse_duration_ns(raw: &str, shortest_unit_ns: i64) -> Result<i64, DurationError> {
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (digits, unit) = raw.split_at(split);
    let count: i64 = digits.parse().map_err(|_| DurationError::Count)?;
    let unit_ns = DURATION_UNITS_NS
        .iter()
        .find(|(name, ns)| *name == unit && *ns >= shortest_unit_ns)
        .map(|(_, ns)| *ns)
        .ok_or(DurationError::Unit)?;
    match count.checked_mul(unit_ns) {
        Some(ns) if ns > 0 => Ok(ns),
        _ => Err(DurationError::Range),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_nanoseconds() {
        for ns in [0, 1, 1_700_000_000_123_456_789, -1_000_000_001] {
            assert_eq!(parse_rfc3339(&rfc3339(ns)), Ok(ns));
        }
        assert_eq!(rfc3339(1_000_000_000), "1970-01-01T00:00:01Z");
        assert!(parse_rfc3339("yesterday").is_err());
    }

    #[test]
    fn durations_are_a_count_and_a_unit() {
        let cases: &[(&str, i64, Result<i64, DurationError>)] = &[
            ("10ns", 1, Ok(10)),
            ("1µs", 1, Ok(1_000)),
            ("500ms", 1, Ok(500_000_000)),
            ("90m", 1, Ok(5_400 * SECOND_NS)),
            ("2w", SECOND_NS, Ok(1_209_600 * SECOND_NS)),
            ("500ms", SECOND_NS, Err(DurationError::Unit)),
            ("10", 1, Err(DurationError::Unit)),
            ("1y", 1, Err(DurationError::Unit)),
            ("1 d", 1, Err(DurationError::Unit)),
            ("", 1, Err(DurationError::Count)),
            ("m", 1, Err(DurationError::Count)),
            ("-1s", 1, Err(DurationError::Count)),
            ("99999999999999999999d", 1, Err(DurationError::Count)),
            ("0s", 1, Err(DurationError::Range)),
            ("106752d", 1, Err(DurationError::Range)),
        ];
        for (raw, shortest, expected) in cases {
            assert_eq!(parse_duration_ns(raw, *shortest), *expected, "{raw:?}");
        }
    }
}
