//! Snapshot manifests: who, when, what paths, and the root tree. Sealed, named by the SHA-256 of
//! the file, written last and create-if-absent, so a snapshot exists only once everything it
//! references is stored.

use crate::error::Result;
use crate::repo::crypto::MasterKey;
use crate::repo::ids::{BlobId, SnapshotId};
use crate::repo::serial;
use serde::{Deserialize, Serialize};

const SNAPSHOT_AAD: &[u8] = b"cairn snapshot";

/// What a backup run did, recorded in its snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Files in the snapshot.
    pub files: u64,
    /// Directories in the snapshot.
    pub dirs: u64,
    /// Bytes of file content in the snapshot.
    pub bytes: u64,
    /// Files whose content was read (the rest were unchanged from the parent).
    pub files_read: u64,
    /// Data blobs this run stored that the repository did not have.
    pub new_blobs: u64,
    /// Plaintext bytes of those new blobs.
    pub new_bytes: u64,
    /// Bytes of packs this run stored.
    pub stored_bytes: u64,
    /// Wall time of the run in milliseconds.
    pub duration_ms: u64,
    /// Files that could not be read completely (the snapshot is partial).
    pub warnings: u64,
}

/// One snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Start time, nanoseconds since the Unix epoch.
    pub time: i64,
    /// Host it was taken on.
    pub hostname: String,
    /// User who took it.
    pub username: String,
    /// Absolute paths backed up; the root tree holds one entry per path, named by its last component.
    pub paths: Vec<String>,
    /// User labels.
    pub tags: Vec<String>,
    /// The snapshot this one was compared against, if any.
    pub parent: Option<SnapshotId>,
    /// Root tree.
    pub tree: BlobId,
    /// Version of the program that wrote it.
    pub program_version: String,
    /// Statistics of the run.
    pub summary: Summary,
}

impl Snapshot {
    /// Seals the snapshot for storage.
    pub fn seal(&self, key: &MasterKey) -> Vec<u8> {
        key.seal(&serial::encode(self), SNAPSHOT_AAD)
    }

    /// Opens and parses a stored snapshot; `name` is used in errors.
    pub fn open(key: &MasterKey, name: &str, sealed: &[u8]) -> Result<Snapshot> {
        let plain = key
            .open(sealed, SNAPSHOT_AAD)
            .map_err(|e| crate::Error::corrupt(name, e))?;
        serial::decode(&plain, name)
    }

    /// Start time as a local date and time, for tables and mount directory names.
    pub fn local_time(&self) -> chrono::DateTime<chrono::Local> {
        chrono::DateTime::from_timestamp_nanos(self.time).with_timezone(&chrono::Local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::crypto::MasterSecrets;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn snapshot_round_trips(time in any::<i64>(), host in ".{0,20}", tags in proptest::collection::vec(".{0,8}", 0..4)) {
            let key = MasterKey::new(MasterSecrets::generate());
            let snap = Snapshot {
                time, hostname: host, username: "me".into(), paths: vec!["/a".into()], tags,
                parent: Some(SnapshotId([3; 32])), tree: BlobId([4; 32]), program_version: "x".into(),
                summary: Summary { files: 3, ..Summary::default() },
            };
            prop_assert_eq!(Snapshot::open(&key, "s", &snap.seal(&key)).unwrap(), snap);
        }

        #[test]
        fn snapshot_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = serial::decode::<Snapshot>(&bytes, "s");
        }
    }
}
