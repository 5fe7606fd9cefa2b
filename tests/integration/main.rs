//! End-to-end tests against the real `strata` binary.

mod compaction;
mod durability;
mod hostile_sql;
mod ingest;
mod lifecycle;
mod partitioning;
mod policies;
mod query;
mod storage;
mod support;
