//! End-to-end tests against the real `strata` binary.

mod durability;
mod ingest;
mod query;
mod policies;
mod support;
