//! The repository format: keys, crypto, config, blobs, packs, index, trees, snapshots, and the
//! [`Repository`] handle that ties them to a backend. Nothing here knows about file systems being
//! backed up or FUSE; it stores and returns verified objects.

pub mod blob;
pub mod config;
pub mod crypto;
pub mod garbage;
pub mod identity;
pub mod ids;
pub mod index;
pub mod keys;
pub mod pack;
pub mod repository;
pub mod serial;
pub mod session;
pub mod snapshot;
pub mod tree;
pub mod tree_sum;

pub use repository::Repository;
