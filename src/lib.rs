//! cairn: a deduplicating, compressing, encrypting backup repository.
//!
//! Layers, one direction: `cli → ops, fs → ingest, fetch → repo → backend → digest, random`. The repository format is
//! written down in `docs/FORMAT.md`; this crate is the reference implementation of it.

pub mod backend;
pub mod digest;
pub mod error;
pub mod fetch;
pub mod fs;
pub mod ingest;
pub mod ops;
pub mod random;
pub mod repo;

pub use error::{Error, Result};
