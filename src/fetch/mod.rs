//! Fetch: getting verified plaintext out of packs. [`cache`] keeps verified chunks in a
//! byte-bounded LRU and merges concurrent fetches; [`reader`] serves any byte range of a file. [`packs`] streams the wanted blobs of one
//! pack with as few reads as possible — the whole pack when most of it is wanted and it fits the
//! read window (its SHA-256 then checked against its name), merged byte ranges otherwise — so a
//! pack larger than any buffer still restores, one bounded window at a time. [`batch`] reads
//! ahead of the mount's readers the same way, by pack and in merged ranges.

pub mod batch;
pub mod cache;
pub mod packs;
pub mod reader;
