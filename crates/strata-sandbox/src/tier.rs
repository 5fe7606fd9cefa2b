//! Storage tiers: where a partition's files live, hottest first.

use serde::Serialize;

/// Storage tier of a partition, hottest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Recent data on the fastest storage target.
    Hot,
    /// Older data still queried now and then.
    Warm,
    /// Rarely queried data on cheap storage.
    Cold,
    /// Data kept on the archive storage target.
    Archived,
}

impl Tier {
    /// Parses `hot`, `warm`, `cold` or `archived` (the catalog's spelling).
    pub fn parse(raw: &str) -> Option<Tier> {
        match raw {
            "hot" => Some(Tier::Hot),
            "warm" => Some(Tier::Warm),
            "cold" => Some(Tier::Cold),
            "archived" => Some(Tier::Archived),
            _ => None,
        }
    }

    /// The name used in the catalog and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Hot => "hot",
            Tier::Warm => "warm",
            Tier::Cold => "cold",
            Tier::Archived => "archived",
        }
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_round_trip_and_order_hottest_first() {
        for tier in [Tier::Hot, Tier::Warm, Tier::Cold, Tier::Archived] {
            assert_eq!(Tier::parse(tier.as_str()), Some(tier));
        }
        assert!(Tier::Hot < Tier::Archived);
        assert_eq!(Tier::parse("lukewarm"), None);
    }
}
