//! The policy sandbox of Strata, as a crate of its own: wasmtime, the
//! `strata:policy` contract (`wit/policy.wit`), the plain values a policy is
//! given and answers (`facts`), and the built-in components. The `strata`
//! server and the light authoring tool `strata-policy` both build on it; it
//! knows nothing of catalogs, queries or HTTP, so it builds in minutes.
//!
//! Its modules keep their place in ARCHITECTURE.md's layers: `sandbox`
//! (rank 2), `facts` (1), `schema`, `tier`, `digest`, `text`, `sync` (0).
//! The `strata` crate re-exports them under the same paths.

pub mod builtins;
pub mod digest;
pub mod facts;
pub mod sandbox;
pub mod schema;
pub mod sync;
pub mod text;
pub mod tier;
