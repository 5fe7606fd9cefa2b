//! Time buckets: which period a timestamp falls into, in UTC.
//!
//! Pure functions over nanosecond timestamps; the write path calls
//! [`Period::bucket`] once per distinct period, not once per row, through
//! [`BucketCache`].

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Timelike, Utc};
use serde::{Deserialize, Serialize};

/// The length of a partition's time bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// One UTC hour, label `2026-01-15T13`.
    Hour,
    /// One UTC day, label `2026-01-15`.
    #[default]
    Day,
    /// One ISO week (Monday to Monday), label `2026-W03`.
    Week,
    /// One calendar month, label `2026-01`.
    Month,
    /// One calendar quarter, label `2026-Q1`.
    Quarter,
    /// One calendar year, label `2026`.
    Year,
}

/// One bucket: `[start_ns, end_ns)` and its label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// The human label that names the bucket inside a partition id.
    pub label: String,
    /// Inclusive start, nanoseconds since the Unix epoch.
    pub start_ns: i64,
    /// Exclusive end, nanoseconds since the Unix epoch.
    pub end_ns: i64,
}

impl Bucket {
    /// Whether `ns` falls into this bucket.
    pub fn contains(&self, ns: i64) -> bool {
        self.start_ns <= ns && ns < self.end_ns
    }
}

fn to_ns(time: DateTime<Utc>) -> i64 {
    // Every bucket edge of a representable timestamp is representable except at
    // the far ends of the i64 range; saturate there rather than panic.
    time.timestamp_nanos_opt().unwrap_or(if time.year() < 1970 { i64::MIN } else { i64::MAX })
}

fn midnight(date: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).expect("midnight exists"))
}

impl Period {
    /// Parses `hour`, `day`, `week`, `month`, `quarter` or `year`.
    pub fn parse(raw: &str) -> Option<Period> {
        match raw {
            "hour" => Some(Period::Hour),
            "day" => Some(Period::Day),
            "week" => Some(Period::Week),
            "month" => Some(Period::Month),
            "quarter" => Some(Period::Quarter),
            "year" => Some(Period::Year),
            _ => None,
        }
    }

    /// The name used in TOML and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Hour => "hour",
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
            Period::Quarter => "quarter",
            Period::Year => "year",
        }
    }

    /// The first bucket start at or after `ns`.
    pub fn boundary_at_or_after(self, ns: i64) -> i64 {
        let bucket = self.bucket(ns);
        if bucket.start_ns == ns { ns } else { bucket.end_ns }
    }

    /// The bucket that contains `ns` (nanoseconds since the epoch, UTC).
    pub fn bucket(self, ns: i64) -> Bucket {
        let time = DateTime::<Utc>::from_timestamp_nanos(ns);
        let date = time.date_naive();
        let (label, start, end) = match self {
            Period::Hour => {
                let start = midnight(date) + chrono::Duration::hours(i64::from(time.hour()));
                let label = start.format("%Y-%m-%dT%H").to_string();
                (label, start, start + chrono::Duration::hours(1))
            }
            Period::Day => {
                let start = midnight(date);
                (date.format("%Y-%m-%d").to_string(), start, start + chrono::Duration::days(1))
            }
            Period::Week => {
                let iso = date.iso_week();
                let monday = NaiveDate::from_isoywd_opt(iso.year(), iso.week(), chrono::Weekday::Mon)
                    .expect("an ISO week has a Monday");
                let start = midnight(monday);
                let label = format!("{:04}-W{:02}", iso.year(), iso.week());
                (label, start, start + chrono::Duration::days(7))
            }
            Period::Month => {
                let first = NaiveDate::from_ymd_opt(date.year(), date.month(), 1).expect("day 1");
                let next = first.checked_add_months(chrono::Months::new(1)).expect("next month");
                (first.format("%Y-%m").to_string(), midnight(first), midnight(next))
            }
            Period::Quarter => {
                let quarter = (date.month() - 1) / 3;
                let first = NaiveDate::from_ymd_opt(date.year(), quarter * 3 + 1, 1).expect("quarter start");
                let next = first.checked_add_months(chrono::Months::new(3)).expect("next quarter");
                let label = format!("{:04}-Q{}", date.year(), quarter + 1);
                (label, midnight(first), midnight(next))
            }
            Period::Year => {
                let first = NaiveDate::from_ymd_opt(date.year(), 1, 1).expect("1 January");
                let next = NaiveDate::from_ymd_opt(date.year() + 1, 1, 1).expect("next 1 January");
                (format!("{:04}", date.year()), midnight(first), midnight(next))
            }
        };
        Bucket { label, start_ns: to_ns(start), end_ns: to_ns(end) }
    }
}

/// A dataset's partition specs over time: each period applies from its
/// `effective_from` (ns) until the next one's. The first applies from the
/// beginning of time. Every later `effective_from` is a bucket boundary of
/// both the period before it and its own (see [`Periods::boundary_after`]),
/// so no bucket of one spec overlaps a bucket of another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Periods {
    /// `(effective_from_ns, period)`, ascending; never empty.
    specs: Vec<(i64, Period)>,
}

impl From<Period> for Periods {
    fn from(period: Period) -> Periods {
        Periods { specs: vec![(i64::MIN, period)] }
    }
}

impl Periods {
    /// The specs from `first`, then `later` (`(effective_from_ns, period)`,
    /// ascending, each later than the one before).
    pub fn new(first: Period, later: &[(i64, Period)]) -> Periods {
        let mut specs = vec![(i64::MIN, first)];
        specs.extend(later.iter().copied());
        assert!(specs.windows(2).all(|pair| pair[0].0 < pair[1].0), "partition specs ascend");
        Periods { specs }
    }

    /// The period rows at `ns` are partitioned by.
    pub fn at(&self, ns: i64) -> Period {
        let index = self.specs.partition_point(|(from, _)| *from <= ns);
        self.specs[index.saturating_sub(1)].1
    }

    /// The latest spec's period and effective time.
    pub fn latest(&self) -> (i64, Period) {
        *self.specs.last().expect("never empty")
    }

    /// The bucket containing `ns`, by the spec in force at `ns`.
    pub fn bucket(&self, ns: i64) -> Bucket {
        self.at(ns).bucket(ns)
    }

    /// Every spec, oldest first: `(effective_from_ns, period)`.
    pub fn specs(&self) -> &[(i64, Period)] {
        &self.specs
    }

    /// The first instant at or after `not_before` that starts a bucket of
    /// both the latest period and `next`, where `next` can take over
    /// without any bucket straddling the change; `None` when none is found
    /// within 10,000 steps (which no pair of periods needs).
    pub fn boundary_after(&self, not_before: i64, next: Period) -> Option<i64> {
        let (from, current) = self.latest();
        let mut at = current.boundary_at_or_after(not_before.max(from));
        for _ in 0..10_000 {
            if next.boundary_at_or_after(at) == at {
                return Some(at);
            }
            at = current.boundary_at_or_after(next.bucket(at).end_ns);
        }
        None
    }
}

/// Remembers the last few buckets so that routing a batch computes calendar
/// math once per period rather than once per row.
#[derive(Debug)]
pub struct BucketCache {
    periods: Periods,
    recent: Vec<(Bucket, usize)>,
}

impl BucketCache {
    /// A cache for one period kind, or a dataset's specs over time.
    pub fn new(periods: impl Into<Periods>) -> BucketCache {
        BucketCache { periods: periods.into(), recent: Vec::new() }
    }

    /// The index (in order of first appearance) of the bucket containing `ns`.
    pub fn index_of(&mut self, ns: i64) -> usize {
        if let Some((_, index)) = self.recent.iter().find(|(bucket, _)| bucket.contains(ns)) {
            return *index;
        }
        let index = self.recent.len();
        self.recent.push((self.periods.bucket(ns), index));
        index
    }

    /// The buckets seen, in order of first appearance.
    pub fn into_buckets(self) -> Vec<Bucket> {
        self.recent.into_iter().map(|(bucket, _)| bucket).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().timestamp_nanos_opt().unwrap()
    }

    #[test]
    fn a_new_spec_starts_on_a_boundary_of_both_periods_and_routes_from_there() {
        let day = Periods::from(Period::Day);
        let noon = ns("2026-01-15T12:00:00Z");
        assert_eq!(day.boundary_after(noon, Period::Hour), Some(ns("2026-01-16T00:00:00Z")));
        assert_eq!(day.boundary_after(ns("2026-01-16T00:00:00Z"), Period::Hour), Some(ns("2026-01-16T00:00:00Z")));
        // 2026-06-01 is the first first-of-a-month on a Monday after mid-January.
        let week = Periods::from(Period::Week);
        assert_eq!(week.boundary_after(noon, Period::Month), Some(ns("2026-06-01T00:00:00Z")));
        let month = Periods::from(Period::Month);
        assert_eq!(month.boundary_after(noon, Period::Year), Some(ns("2027-01-01T00:00:00Z")));
        let changed = Periods::new(Period::Day, &[(ns("2026-01-16T00:00:00Z"), Period::Hour)]);
        assert_eq!(changed.bucket(ns("2026-01-15T23:59:00Z")).label, "2026-01-15");
        assert_eq!(changed.bucket(ns("2026-01-16T00:30:00Z")).label, "2026-01-16T00");
        assert_eq!(changed.at(i64::MIN), Period::Day);
        // A later change counts from the pending one.
        assert_eq!(changed.boundary_after(noon, Period::Month), Some(ns("2026-02-01T00:00:00Z")));
    }

    #[test]
    fn buckets_by_period() {
        let cases = [
            (Period::Hour, "2026-01-15T13:45:00Z", "2026-01-15T13", "2026-01-15T13:00:00Z", "2026-01-15T14:00:00Z"),
            (
                Period::Day,
                "2026-01-15T23:59:59.999999999Z",
                "2026-01-15",
                "2026-01-15T00:00:00Z",
                "2026-01-16T00:00:00Z",
            ),
            (Period::Week, "2026-01-15T10:00:00Z", "2026-W03", "2026-01-12T00:00:00Z", "2026-01-19T00:00:00Z"),
            // 1 January 2027 is a Friday and belongs to ISO week 53 of 2026.
            (Period::Week, "2027-01-01T00:00:00Z", "2026-W53", "2026-12-28T00:00:00Z", "2027-01-04T00:00:00Z"),
            (Period::Month, "2026-02-28T12:00:00Z", "2026-02", "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"),
            (Period::Month, "2026-12-31T12:00:00Z", "2026-12", "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"),
            (Period::Quarter, "2026-05-05T00:00:00Z", "2026-Q2", "2026-04-01T00:00:00Z", "2026-07-01T00:00:00Z"),
            (Period::Quarter, "2026-12-05T00:00:00Z", "2026-Q4", "2026-10-01T00:00:00Z", "2027-01-01T00:00:00Z"),
            (Period::Year, "2024-02-29T00:00:00Z", "2024", "2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z"),
            (Period::Day, "1969-12-31T23:00:00Z", "1969-12-31", "1969-12-31T00:00:00Z", "1970-01-01T00:00:00Z"),
        ];
        for (period, at, label, start, end) in cases {
            let bucket = period.bucket(ns(at));
            assert_eq!(bucket.label, label, "{period:?} {at}");
            assert_eq!(bucket.start_ns, ns(start), "{period:?} {at} start");
            assert_eq!(bucket.end_ns, ns(end), "{period:?} {at} end");
            assert!(bucket.contains(ns(at)));
        }
    }

    #[test]
    fn edges_belong_to_the_next_bucket() {
        let bucket = Period::Day.bucket(ns("2026-01-16T00:00:00Z"));
        assert_eq!(bucket.label, "2026-01-16");
        let before = Period::Day.bucket(ns("2026-01-16T00:00:00Z") - 1);
        assert_eq!(before.label, "2026-01-15");
    }

    #[test]
    fn cache_indexes_in_order_of_appearance() {
        let mut cache = BucketCache::new(Period::Day);
        let day = 86_400_000_000_000;
        assert_eq!(cache.index_of(5), 0);
        assert_eq!(cache.index_of(day + 5), 1);
        assert_eq!(cache.index_of(10), 0);
        assert_eq!(cache.into_buckets().len(), 2);
    }
}
