//! End-to-end tests against the real `strata` binary.

mod architecture;
mod auth;
mod compaction;
mod durability;
mod edge;
mod hostile_sql;
mod ingest;
mod integrity;
mod lifecycle;
mod partitioning;
mod policies;
mod policy_limits;
mod query;
mod s3;
mod storage;
mod support;
