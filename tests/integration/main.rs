//! End-to-end tests against the real `strata` binary.

mod auth;
mod compaction;
mod durability;
mod hostile_sql;
mod edge;
mod ingest;
mod integrity;
mod lifecycle;
mod partitioning;
mod policies;
mod policy_limits;
mod query;
mod storage;
mod support;
