//! End-to-end tests against the real `strata` binary.

mod auth;
mod compaction;
mod durability;
mod ingest;
mod lifecycle;
mod partitioning;
mod policies;
mod query;
mod storage;
mod support;
