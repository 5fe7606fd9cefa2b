//! Strata: a time-series and event store whose data lifecycle is code.
//!
//! See ARCHITECTURE.md for the map of these modules and their invariants.
//!
//! The library exists for the `strata` binary (`cli`) and the integration
//! tests, which open a store and a query engine in-process (`config`,
//! `store`, `query`), embed the built-in policy components (`policy`) and
//! name components by digest (`digest`), and drive storage targets through
//! their contract (`storage`). Everything else is crate-internal.

pub(crate) mod buffer;
pub(crate) mod catalog;
pub mod cli;
pub mod config;
pub(crate) mod data_dir;
pub use strata_sandbox::digest;
pub(crate) mod error;
pub(crate) use strata_sandbox::facts;
pub(crate) mod failpoint;
pub(crate) mod flight;
pub(crate) mod http;
pub(crate) mod ingest;
pub(crate) mod lifecycle;
pub(crate) mod names;
pub(crate) mod parquet_file;
pub(crate) mod period;
pub mod policy;
pub mod query;
pub(crate) use strata_sandbox::sandbox;
pub(crate) mod schema;
pub(crate) mod server;
pub mod storage;
pub mod store;
pub(crate) use strata_sandbox::sync;
pub(crate) use strata_sandbox::text;
pub(crate) use strata_sandbox::tier;
pub(crate) mod time;
pub(crate) mod token;
pub(crate) mod wal;
