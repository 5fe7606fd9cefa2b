//! Fail points: named places where a test can make the process die, or make
//! a storage operation misbehave, to prove that a fault at that exact step
//! loses nothing.
//!
//! Enabled only through the `STRATA_FAILPOINTS` environment variable, read
//! once at start: a comma-separated list of `point` or `point=action`.
//!
//! - A step ([`STEPS`], e.g. `lifecycle.move.after_copy`) takes only `abort`,
//!   the default: the process dies there as `kill -9` would.
//! - A storage operation, `storage.<put|get|delete>.<target>`, takes
//!   `error` (the operation fails with a `StorageError`), `short` (a put
//!   stores only the first half of the bytes, a get returns only the first
//!   half; both report success), `corrupt` (one byte flipped, success
//!   reported) or `abort` (the process dies before the operation). A delete
//!   takes only `error` or `abort`. The target is wrapped in
//!   the storage layer's `Faulty` wrapper at start-up; without such a point no target
//!   is wrapped.
//!
//! - A step in [`DELAYABLE_STEPS`] also takes `delay`: the request waits
//!   there for a second, which opens a race window a test can aim at.
//!
//! In production the list is empty and [`hit`] is one load and a length check.

use std::sync::OnceLock;

use crate::names::TargetName;

/// What an enabled fail point does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The process aborts.
    Abort,
    /// The storage operation returns an error.
    Error,
    /// The storage operation moves only half the bytes and reports success.
    Short,
    /// The storage operation flips one byte and reports success.
    Corrupt,
    /// The step waits a second ([`DELAYABLE_STEPS`] only).
    Delay,
}

impl Action {
    fn parse(raw: &str) -> Option<Action> {
        match raw {
            "abort" => Some(Action::Abort),
            "error" => Some(Action::Error),
            "short" => Some(Action::Short),
            "corrupt" => Some(Action::Corrupt),
            "delay" => Some(Action::Delay),
            _ => None,
        }
    }
}

/// A storage operation a fault can be injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageOp {
    /// `StorageTarget::put`.
    Put,
    /// `StorageTarget::get` (and `get_range`).
    Get,
    /// `StorageTarget::delete`.
    Delete,
}

impl StorageOp {
    fn parse(raw: &str) -> Option<StorageOp> {
        match raw {
            "put" => Some(StorageOp::Put),
            "get" => Some(StorageOp::Get),
            "delete" => Some(StorageOp::Delete),
            _ => None,
        }
    }

    /// The operation's name in a fail point.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageOp::Put => "put",
            StorageOp::Get => "get",
            StorageOp::Delete => "delete",
        }
    }
}

/// Every step [`hit`] is called with, in the order data passes them.
pub const STEPS: &[&str] = &[
    "ingest.after_seal_check",
    "wal.before_fsync",
    "local.put.before_dir_sync",
    "flush.after_file_write",
    "flush.before_seal",
    "flush.after_commit",
    "lifecycle.move.after_copy",
    "lifecycle.move.after_commit",
    "lifecycle.archive.after_write",
    "lifecycle.archive.after_commit",
    "lifecycle.delete.after_commit",
    "lifecycle.sweep.after_delete",
    "compaction.after_checkpoint",
    "compaction.after_write",
    "compaction.after_commit",
    "compaction.read_back",
    "query.native.before_file",
];

/// Steps that can also `corrupt` the bytes they read back, where a
/// target-wide `storage.get.<target>=corrupt` would break other steps first
/// (a compaction's read-back, on the hot target that flushes verify too).
pub const CORRUPTIBLE_STEPS: &[&str] = &["compaction.read_back"];

/// Steps that can `delay`: a write between its check of the partitions'
/// read-only flags and its rows reaching the buffers (the seal race), and
/// the native query executor before it opens each file (a query that
/// outlives its deadline there).
pub const DELAYABLE_STEPS: &[&str] = &["ingest.after_seal_check", "query.native.before_file"];

/// How long a `delay` waits.
pub const DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// One enabled point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailPoint {
    /// The point's name.
    pub name: String,
    /// What it does.
    pub action: Action,
}

/// Parses a `STRATA_FAILPOINTS` value. Malformed entries are errors; a step
/// name that is not in [`STEPS`] is accepted (it may belong to code newer
/// than the list) and reported by [`check`].
pub fn parse(raw: &str) -> Result<Vec<FailPoint>, String> {
    let mut points = Vec::new();
    for entry in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, action) = match entry.split_once('=') {
            None => (entry, Action::Abort),
            Some((name, action)) => (
                name.trim(),
                Action::parse(action.trim()).ok_or_else(|| {
                    format!("fail point {entry:?}: the action must be abort, error, short, corrupt or delay")
                })?,
            ),
        };
        if let Some(rest) = name.strip_prefix("storage.") {
            let (op, target) = rest.split_once('.').unwrap_or((rest, ""));
            let op = StorageOp::parse(op)
                .ok_or_else(|| format!("fail point {entry:?}: a storage point is storage.<put|get|delete>.<target>"))?;
            TargetName::parse(target).map_err(|e| format!("fail point {entry:?}: {e}"))?;
            if op == StorageOp::Delete && matches!(action, Action::Short | Action::Corrupt) {
                return Err(format!("fail point {entry:?}: a delete can only error or abort"));
            }
            if action == Action::Delay {
                return Err(format!("fail point {entry:?}: only {DELAYABLE_STEPS:?} can delay"));
            }
        } else if action == Action::Corrupt && CORRUPTIBLE_STEPS.contains(&name)
            || action == Action::Delay && DELAYABLE_STEPS.contains(&name)
        {
        } else if action != Action::Abort {
            return Err(format!(
                "fail point {entry:?}: only storage.<op>.<target> points can error, short or corrupt \
                 (and {CORRUPTIBLE_STEPS:?} can corrupt)"
            ));
        }
        points.push(FailPoint { name: name.to_string(), action });
    }
    Ok(points)
}

static ENABLED: OnceLock<Vec<FailPoint>> = OnceLock::new();

fn enabled() -> &'static [FailPoint] {
    ENABLED.get_or_init(|| {
        std::env::var("STRATA_FAILPOINTS").map(|raw| parse(&raw).unwrap_or_default()).unwrap_or_default()
    })
}

/// Checks `STRATA_FAILPOINTS` at start-up: a malformed value is an error
/// (so a typo never makes a fault test pass by doing nothing), enabled
/// points are logged, step names the code does not know are warned about.
pub fn check() -> Result<(), String> {
    let Ok(raw) = std::env::var("STRATA_FAILPOINTS") else { return Ok(()) };
    let points = parse(&raw).map_err(|e| format!("STRATA_FAILPOINTS: {e}"))?;
    for point in &points {
        if !point.name.starts_with("storage.") && !STEPS.contains(&point.name.as_str()) {
            tracing::warn!(point = %point.name, known = ?STEPS, "STRATA_FAILPOINTS names an unknown step");
        }
    }
    if !points.is_empty() {
        tracing::warn!(?points, "fail points enabled: this process will fail on purpose");
    }
    Ok(())
}

/// Aborts the process (as `kill -9` would) if step `name` is enabled.
pub fn hit(name: &str) {
    let enabled = enabled();
    if !enabled.is_empty() && enabled.iter().any(|p| p.name == name && p.action == Action::Abort) {
        abort(name);
    }
}

/// How long step `name` is to wait (see [`DELAYABLE_STEPS`]), if at all.
pub fn delay(name: &str) -> Option<std::time::Duration> {
    let enabled = enabled();
    (!enabled.is_empty() && enabled.iter().any(|p| p.name == name && p.action == Action::Delay)).then_some(DELAY)
}

/// Whether step `name` is to corrupt what it read (see [`CORRUPTIBLE_STEPS`]).
pub fn corrupts(name: &str) -> bool {
    let enabled = enabled();
    !enabled.is_empty() && enabled.iter().any(|p| p.name == name && p.action == Action::Corrupt)
}

/// Aborts the process at fail point `name`.
pub fn abort(name: &str) -> ! {
    eprintln!("strata: fail point {name} reached; aborting");
    std::process::abort();
}

/// The faults enabled for the operations of storage target `target`.
pub fn storage_faults(target: &str) -> Vec<(StorageOp, Action)> {
    enabled()
        .iter()
        .filter_map(|p| {
            let (op, name) = p.name.strip_prefix("storage.")?.split_once('.')?;
            (name == target).then(|| StorageOp::parse(op).map(|op| (op, p.action))).flatten()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_parse_with_their_actions() {
        let points =
            parse(" lifecycle.move.after_copy, storage.put.warm=error,storage.get.big-disk=corrupt ,").unwrap();
        let pairs: Vec<(&str, Action)> = points.iter().map(|p| (p.name.as_str(), p.action)).collect();
        assert_eq!(
            pairs,
            [
                ("lifecycle.move.after_copy", Action::Abort),
                ("storage.put.warm", Action::Error),
                ("storage.get.big-disk", Action::Corrupt)
            ]
        );
        assert_eq!(parse("").unwrap(), []);
        assert_eq!(parse("storage.delete.cold=abort").unwrap()[0].action, Action::Abort);
    }

    #[test]
    fn malformed_points_are_refused() {
        for bad in [
            "storage.put.warm=explode",
            "lifecycle.move.after_copy=error",
            "compaction.after_write=corrupt",
            "compaction.read_back=error",
            "storage.put.warm=",
            "storage.copy.warm=error",
            "storage.put=error",
            "storage.put.../x=error",
            "storage.put.Warm=short",
            "storage.delete.warm=short",
            "storage.delete.warm=corrupt",
            "lifecycle.move.after_copy=delay",
            "storage.put.warm=delay",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
        let delayed = parse("ingest.after_seal_check=delay").unwrap();
        assert_eq!(delayed[0].action, Action::Delay);
    }
}
