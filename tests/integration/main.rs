//! End-to-end tests against the real `strata` binary.

mod architecture;
mod auth;
mod compaction;
mod durability;
mod edge;
mod flight;
mod hostile_sql;
mod influx;
mod ingest;
mod integrity;
mod lifecycle;
mod metrics;
mod partition_ops;
mod partitioning;
mod policies;
mod policy_limits;
mod query;
mod read_cache;
mod routing_hash;
mod s3;
mod s3_cache;
mod s3_faults;
mod s3_lifecycle;
mod sql_api;
mod storage;
mod support;
