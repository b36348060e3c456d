//! The repository format: keys, crypto, config, blobs, packs, index, trees, snapshots, and the
//! [`Repository`] handle that ties them to a backend, and the writer's half of the prune
//! protocol (sessions, adoption of what a failed job stored, what is stored and reachable). Nothing here knows about file systems being
//! backed up or FUSE; it stores and returns verified objects.

pub mod adopt;
pub mod blob;
pub mod config;
pub mod crypto;
pub mod dictionary;
pub mod garbage;
pub mod heal;
pub mod identity;
pub mod ids;
pub mod index;
pub mod keys;
pub mod opened_groups;
pub mod pack;
pub mod parity;
pub mod reach;
pub mod repository;
pub mod serial;
pub mod session;
pub mod snapshot;
pub mod stored;
pub mod tree;
pub mod tree_reads;
pub mod tree_sum;
pub mod witness;
pub mod writer;

pub use repository::Repository;
