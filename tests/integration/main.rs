//! End-to-end tests against the real `strata` binary.

mod compaction;
mod durability;
mod edge;
mod ingest;
mod lifecycle;
mod partitioning;
mod policies;
mod query;
mod storage;
mod support;
