//! Strata: a time-series and event store whose data lifecycle is code.
//!
//! See ARCHITECTURE.md for the map of these modules and their invariants.

pub mod buffer;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod data_dir;
pub mod digest;
pub mod error;
pub mod facts;
pub mod failpoint;
pub mod http;
pub mod ingest;
pub mod lifecycle;
pub mod names;
pub mod parquet_file;
pub mod period;
pub mod policy;
pub mod query;
pub mod sandbox;
pub mod schema;
pub mod server;
pub mod storage;
pub mod store;
pub(crate) mod text;
pub mod tier;
pub mod time;
pub mod token;
pub mod wal;
