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
}
