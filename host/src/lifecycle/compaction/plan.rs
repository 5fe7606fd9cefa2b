//! The compaction planner: which of a partition's files merge into which.
//! Pure, and tested table-driven.

use crate::config::CompactionConfig;

/// A live file as the planner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanFile {
    /// Catalog id.
    pub id: i64,
    /// Size in bytes.
    pub bytes: u64,
    /// Earliest row time, ns.
    pub min_time_ns: i64,
}

/// What the planner takes from `[lifecycle.compaction]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanSettings {
    /// Plan only when at least this many files are small.
    pub min_files: usize,
    /// Files below this size are small, in bytes.
    pub small_file_bytes: u64,
    /// A chunk's inputs add up to at most this, in bytes.
    pub target_file_bytes: u64,
    /// A chunk merges at most this many files.
    pub chunk_files: usize,
}

impl From<&CompactionConfig> for PlanSettings {
    fn from(config: &CompactionConfig) -> PlanSettings {
        PlanSettings {
            min_files: config.min_files,
            small_file_bytes: config.small_file_bytes,
            target_file_bytes: config.target_file_bytes,
            chunk_files: config.chunk_files,
        }
    }
}

/// Plans a compaction job: the chunks, each the ids of the files it merges
/// into one. Only small files take part, and only when there are at least
/// `min_files` of them. They are taken in time order (so each output covers
/// a narrow time range and prunes well) and split into as few chunks as
/// `chunk_files` allows, of nearly equal size, so no lone file is left over
/// (unless chunks are pairs: then an odd file out waits for the next job);
/// a chunk also ends before its inputs would pass `target_file_bytes`. A
/// chunk of one file would merge nothing and is dropped. Pure.
pub fn plan(files: &[PlanFile], settings: &PlanSettings) -> Vec<Vec<i64>> {
    let mut small: Vec<PlanFile> = files.iter().copied().filter(|f| f.bytes < settings.small_file_bytes).collect();
    if small.len() < settings.min_files.max(2) {
        return Vec::new();
    }
    small.sort_by_key(|f| (f.min_time_ns, f.id));
    // n files in k chunks: the first n % k chunks take one file more.
    let chunk_count = small.len().div_ceil(settings.chunk_files.max(2));
    let (base, longer) = (small.len() / chunk_count, small.len() % chunk_count);
    let files_in = |chunk: usize| base + usize::from(chunk < longer);
    let mut chunks = Vec::new();
    let mut chunk_number = 0;
    let mut current: Vec<i64> = Vec::new();
    let mut current_bytes = 0u64;
    for file in small {
        let full = current.len() >= files_in(chunk_number)
            || current_bytes.saturating_add(file.bytes) > settings.target_file_bytes;
        if !current.is_empty() && full {
            if current.len() >= 2 {
                chunks.push(std::mem::take(&mut current));
            }
            current.clear();
            current_bytes = 0;
            chunk_number += 1;
        }
        current.push(file.id);
        current_bytes = current_bytes.saturating_add(file.bytes);
    }
    if current.len() >= 2 {
        chunks.push(current);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const SETTINGS: PlanSettings =
        PlanSettings { min_files: 4, small_file_bytes: 100, target_file_bytes: 1_000, chunk_files: 4 };

    /// Files with ids 1..=n, `bytes` each, the earliest time descending with
    /// the id so that time order and id order differ.
    fn files(n: i64, bytes: u64) -> Vec<PlanFile> {
        (1..=n).map(|id| PlanFile { id, bytes, min_time_ns: 1_000 - id }).collect()
    }

    #[test]
    fn planning_merges_small_files_in_time_order_in_balanced_chunks() {
        /// Name, files, settings, the expected chunks.
        type Case = (&'static str, Vec<PlanFile>, PlanSettings, Vec<Vec<i64>>);
        let cases: &[Case] = &[
            ("too few small files", files(3, 10), SETTINGS, vec![]),
            ("exactly min_files", files(4, 10), SETTINGS, vec![vec![4, 3, 2, 1]]),
            // 10 files, 4 per chunk at most: three chunks of 4, 3, 3 rather than 4, 4, 2.
            ("balanced", files(10, 10), SETTINGS, vec![vec![10, 9, 8, 7], vec![6, 5, 4], vec![3, 2, 1]]),
            // 5 files, 4 per chunk at most: 3 + 2, never 4 + a lone file.
            ("no lone file", files(5, 10), SETTINGS, vec![vec![5, 4, 3], vec![2, 1]]),
            (
                "large files stay out",
                vec![
                    PlanFile { id: 1, bytes: 10, min_time_ns: 1 },
                    PlanFile { id: 2, bytes: 100, min_time_ns: 2 },
                    PlanFile { id: 3, bytes: 10, min_time_ns: 3 },
                    PlanFile { id: 4, bytes: 5_000, min_time_ns: 4 },
                    PlanFile { id: 5, bytes: 10, min_time_ns: 5 },
                    PlanFile { id: 6, bytes: 10, min_time_ns: 6 },
                ],
                SETTINGS,
                vec![vec![1, 3, 5, 6]],
            ),
            (
                "large files do not count towards min_files",
                vec![
                    PlanFile { id: 1, bytes: 10, min_time_ns: 1 },
                    PlanFile { id: 2, bytes: 500, min_time_ns: 2 },
                    PlanFile { id: 3, bytes: 10, min_time_ns: 3 },
                    PlanFile { id: 4, bytes: 500, min_time_ns: 4 },
                ],
                SETTINGS,
                vec![],
            ),
            // 90 + 90 + 90 > 250: a chunk ends before passing target_file_bytes.
            (
                "byte budget",
                files(4, 90),
                PlanSettings { target_file_bytes: 250, ..SETTINGS },
                vec![vec![4, 3], vec![2, 1]],
            ),
            // Every pair is over budget: nothing would merge.
            ("no pair fits", files(4, 90), PlanSettings { target_file_bytes: 100, ..SETTINGS }, vec![]),
            (
                "equal times fall back to the id",
                (1..=4).map(|id| PlanFile { id, bytes: 1, min_time_ns: 7 }).collect(),
                SETTINGS,
                vec![vec![1, 2, 3, 4]],
            ),
        ];
        for (name, input, settings, expected) in cases {
            assert_eq!(&plan(input, settings), expected, "{name}");
        }
    }

    #[test]
    fn every_small_file_is_planned_at_most_once_and_chunks_respect_their_limits() {
        for n in 2..80 {
            for chunk_files in 2..9 {
                let settings =
                    PlanSettings { min_files: 2, small_file_bytes: 100, target_file_bytes: 1_000, chunk_files };
                let chunks = plan(&files(n, 10), &settings);
                let planned: Vec<i64> = chunks.iter().flatten().copied().collect();
                let unique: HashSet<i64> = planned.iter().copied().collect();
                assert_eq!(planned.len(), unique.len(), "n={n} chunk_files={chunk_files}");
                // Pairs only (chunk_files = 2) leave an odd file out for the next job.
                let left_out = if chunk_files == 2 { n % 2 } else { 0 };
                assert_eq!(planned.len() as i64, n - left_out, "every file is merged: n={n} chunk_files={chunk_files}");
                assert!(chunks.iter().all(|c| (2..=chunk_files).contains(&c.len())), "{chunks:?}");
                let (shortest, longest) =
                    (chunks.iter().map(Vec::len).min().unwrap(), chunks.iter().map(Vec::len).max().unwrap());
                assert!(longest - shortest <= 1, "balanced: {chunks:?}");
            }
        }
    }
}
