//! Recent writes per partition key, per dataset: a ring of one-minute
//! slots covering the last hour, each a map from key to rows and bytes
//! written. The write path adds one request's parts after they are durable
//! (one map update per key per request, never per row); the routing report
//! and `/metrics` read windows of it. In memory only: a restart starts the
//! windows empty (the catalog keeps the all-time totals).

use std::collections::{HashMap, VecDeque};

use rustc_hash::FxHashMap;
use std::sync::Mutex;

use crate::sync::Recover as _;

/// Nanoseconds in one slot.
const SLOT_NS: i64 = 60_000_000_000;
/// Slots kept: one hour.
pub const SLOTS: i64 = 60;

/// Rows and bytes written under one key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyCount {
    /// Rows written.
    pub rows: u64,
    /// Bytes written (the rows' Arrow IPC size, as logged).
    pub bytes: u64,
}

#[derive(Debug)]
struct Slot {
    minute: i64,
    keys: FxHashMap<String, KeyCount>,
}

/// One dataset's ring of per-key counters.
#[derive(Debug, Default)]
pub struct KeyWindows {
    slots: Mutex<VecDeque<Slot>>,
}

impl KeyWindows {
    /// Adds one request's `(key, rows, bytes)` parts at `now_ns`.
    pub fn record<'a>(&self, now_ns: i64, parts: impl IntoIterator<Item = (&'a str, u64, u64)>) {
        let minute = now_ns.div_euclid(SLOT_NS);
        let mut slots = self.slots.lock_or_recover();
        while slots.front().is_some_and(|s| s.minute <= minute - SLOTS) {
            slots.pop_front();
        }
        if slots.back().is_none_or(|s| s.minute < minute) {
            slots.push_back(Slot { minute, keys: FxHashMap::default() });
        }
        let slot = slots.back_mut().expect("a slot was just ensured");
        for (key, rows, bytes) in parts {
            let count = match slot.keys.get_mut(key) {
                Some(count) => count,
                None => slot.keys.entry(key.to_string()).or_default(),
            };
            count.rows += rows;
            count.bytes += bytes;
        }
    }

    /// Rows and bytes per key written in the `minutes` minutes up to
    /// `now_ns` (the current minute included; at most [`SLOTS`]).
    pub fn window(&self, now_ns: i64, minutes: i64) -> HashMap<String, KeyCount> {
        let minute = now_ns.div_euclid(SLOT_NS);
        let mut out: HashMap<String, KeyCount> = HashMap::new();
        for slot in self.slots.lock_or_recover().iter().filter(|s| s.minute > minute - minutes && s.minute <= minute) {
            for (key, count) in &slot.keys {
                let total = out.entry(key.clone()).or_default();
                total.rows += count.rows;
                total.bytes += count.bytes;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_sum_the_slots_they_cover_and_old_slots_fall_off() {
        let windows = KeyWindows::default();
        windows.record(0, [("a", 1, 10), ("b", 2, 20)]);
        windows.record(30 * SLOT_NS, [("a", 3, 30)]);
        windows.record(30 * SLOT_NS + 5, [("a", 1, 1)]);
        windows.record(61 * SLOT_NS, [("c", 5, 50)]);
        let hour = windows.window(61 * SLOT_NS, SLOTS);
        assert_eq!(hour.get("a"), Some(&KeyCount { rows: 4, bytes: 31 }));
        assert_eq!((hour.get("b"), hour.get("c").map(|c| c.rows)), (None, Some(5)));
        let minute = windows.window(61 * SLOT_NS + 1, 1);
        assert_eq!(minute.keys().collect::<Vec<_>>(), ["c"]);
        assert!(windows.window(200 * SLOT_NS, SLOTS).is_empty());
        assert_eq!(windows.slots.lock_or_recover().len(), 2, "minute 0 fell off");
    }
}
