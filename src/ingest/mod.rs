//! Ingest: turning local files into stored blobs and trees. The chunker cuts content, the packer
//! dedupes, seals, packs, verifies and stores blobs, the walker reads file-system metadata, and
//! the archiver drives them over a tree in parallel to make a snapshot.

pub mod archiver;
pub mod chunker;
pub mod content;
pub mod dictionary_choice;
pub mod groups;
pub mod level;
pub mod noatime;
pub mod packer;
pub mod patterns;
pub mod place;
pub mod progress;
pub mod sample;
pub mod sealers;
pub mod walker;

/// The bounds of an ingest job; each is a named limit, none a buried literal.
#[derive(Clone, Debug)]
pub struct IngestLimits {
    /// Packs finished but not yet stored; past this, producers wait (bounds memory).
    pub queued_packs: usize,
    /// Packs stored at once.
    pub parallel_uploads: usize,
    /// An index segment is written after this many packs, so an interrupted job's packs are found.
    pub index_flush_packs: usize,
    /// Bytes of one file read at a time before its chunks are processed in parallel.
    pub read_batch: usize,
    /// Remember where every stored blob is, so the job can read back what it wrote (the stage).
    pub track_locations: bool,
    /// Threads that compress and encrypt blobs in the background; 0 seals on the caller's
    /// thread (the backup's readers are already parallel; the stage's FUSE threads must not wait).
    pub sealer_threads: usize,
    /// Plaintext bytes waiting for the sealer threads; past this, callers wait (bounds memory).
    pub sealing_bytes: usize,
    /// Bytes of small data blobs held to choose (or train) a compression dictionary on
    /// ([`dictionary_choice`]): zstd trains a good dictionary on ~2 MiB of source files in a
    /// fifth of a second.
    pub dictionary_sample: usize,
    /// The zstd level, or `auto`.
    pub compression: CompressionMode,
}

/// How hard a job compresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompressionMode {
    /// The repository's level, raised while the store, not the CPU, is what the job waits for
    /// (finished packs queue up for upload), and lowered back to it when the store keeps up.
    Auto,
    /// This level, always.
    Fixed(i32),
}

impl Default for IngestLimits {
    fn default() -> Self {
        IngestLimits {
            queued_packs: 2,
            parallel_uploads: 2,
            index_flush_packs: 64,
            read_batch: 16 << 20,
            track_locations: false,
            sealer_threads: 0,
            sealing_bytes: 32 << 20,
            dictionary_sample: 2 << 20,
            compression: CompressionMode::Auto,
        }
    }
}
