//! Snapshot manifests: who, when, what paths, and the root tree. Sealed, named by the SHA-256 of
//! the file, written last and create-if-absent, so a snapshot exists only once everything it
//! references is stored.

use crate::error::Result;
use crate::repo::crypto::MasterKey;
use crate::repo::ids::{BlobId, SnapshotId};
use crate::repo::serial;
use serde::{Deserialize, Serialize};

const SNAPSHOT_AAD: &[u8] = b"cairn snapshot";

/// Largest snapshot file read or written: its paths, tags and summary, with room for a backup of
/// tens of thousands of paths.
pub const MAX_SNAPSHOT_LEN: u64 = 16 << 20;

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
    /// Nodes with extended attributes; `None` in snapshots written before they were counted
    /// (format version 1). A mount whose snapshots all have none tells the kernel to stop asking
    /// for them: `cp -a` asks three times per file.
    pub xattr_nodes: Option<u64>,
}

/// The summary as format version 1 wrote it.
#[derive(Deserialize)]
struct SummaryV1 {
    files: u64,
    dirs: u64,
    bytes: u64,
    files_read: u64,
    new_blobs: u64,
    new_bytes: u64,
    stored_bytes: u64,
    duration_ms: u64,
    warnings: u64,
}

/// A snapshot as format version 1 wrote it.
#[derive(Deserialize)]
struct SnapshotV1 {
    time: i64,
    hostname: String,
    username: String,
    paths: Vec<String>,
    tags: Vec<String>,
    parent: Option<SnapshotId>,
    tree: BlobId,
    program_version: String,
    summary: SummaryV1,
}

impl From<SnapshotV1> for Snapshot {
    fn from(old: SnapshotV1) -> Snapshot {
        let s = old.summary;
        Snapshot {
            time: old.time,
            hostname: old.hostname,
            username: old.username,
            paths: old.paths,
            tags: old.tags,
            parent: old.parent,
            tree: old.tree,
            program_version: old.program_version,
            summary: Summary {
                files: s.files,
                dirs: s.dirs,
                bytes: s.bytes,
                files_read: s.files_read,
                new_blobs: s.new_blobs,
                new_bytes: s.new_bytes,
                stored_bytes: s.stored_bytes,
                duration_ms: s.duration_ms,
                warnings: s.warnings,
                xattr_nodes: None,
            },
            copied_from: None,
        }
    }
}

/// Version 2: before [`Snapshot::copied_from`].
#[derive(Deserialize)]
struct SnapshotV2 {
    time: i64,
    hostname: String,
    username: String,
    paths: Vec<String>,
    tags: Vec<String>,
    parent: Option<SnapshotId>,
    tree: BlobId,
    program_version: String,
    summary: Summary,
}

impl From<SnapshotV2> for Snapshot {
    fn from(old: SnapshotV2) -> Snapshot {
        Snapshot {
            time: old.time,
            hostname: old.hostname,
            username: old.username,
            paths: old.paths,
            tags: old.tags,
            parent: old.parent,
            tree: old.tree,
            program_version: old.program_version,
            summary: old.summary,
            copied_from: None,
        }
    }
}

/// The snapshot format written today: version 2 added [`Summary::xattr_nodes`], version 3
/// [`Snapshot::copied_from`].
const SNAPSHOT_VERSION: u8 = 3;

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
    /// The snapshot of another repository this one is a copy of (`cairn copy`): how a re-run
    /// knows the copy is complete and skips it.
    pub copied_from: Option<SnapshotId>,
}

impl Snapshot {
    /// Seals the snapshot for storage.
    pub fn seal(&self, key: &MasterKey) -> Vec<u8> {
        key.seal(
            &serial::encode_version(SNAPSHOT_VERSION, self),
            SNAPSHOT_AAD,
        )
    }

    /// Parses a snapshot's plaintext, of any format version written so far.
    pub fn decode(plain: &[u8], name: &str) -> Result<Snapshot> {
        match serial::split_version(plain, name)? {
            (1, body) => serial::decode_body::<SnapshotV1>(body, name).map(Snapshot::from),
            (2, body) => serial::decode_body::<SnapshotV2>(body, name).map(Snapshot::from),
            (SNAPSHOT_VERSION, body) => serial::decode_body(body, name),
            (version, _) => Err(serial::unknown_version(version, name)),
        }
    }

    /// Opens and parses a stored snapshot; `name` is used in errors.
    pub fn open(key: &MasterKey, name: &str, sealed: &[u8]) -> Result<Snapshot> {
        let plain = key
            .open(sealed, SNAPSHOT_AAD)
            .map_err(|e| crate::Error::corrupt(name, e))?;
        Snapshot::decode(&plain, name)
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
                copied_from: Some(SnapshotId([5; 32])),
            };
            prop_assert_eq!(Snapshot::open(&key, "s", &snap.seal(&key)).unwrap(), snap);
        }

        #[test]
        fn snapshot_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Snapshot::decode(&bytes, "s");
        }
    }

    /// The fields of format version 1, in its order, as a writer of that version encoded them.
    #[derive(Serialize)]
    struct WrittenV1 {
        time: i64,
        hostname: String,
        username: String,
        paths: Vec<String>,
        tags: Vec<String>,
        parent: Option<SnapshotId>,
        tree: BlobId,
        program_version: String,
        summary: [u64; 9],
    }

    #[test]
    fn version_2_snapshots_still_open_as_no_copy() {
        let snap = Snapshot {
            time: 9,
            hostname: "h".into(),
            username: "u".into(),
            paths: vec!["/p".into()],
            tags: vec![],
            parent: None,
            tree: BlobId([4; 32]),
            program_version: "cairn 0.1.0".into(),
            summary: Summary::default(),
            copied_from: None,
        };
        // Version 2 is version 3 without the last field.
        let mut written = serial::encode_version(SNAPSHOT_VERSION, &snap);
        assert_eq!(written.pop(), Some(0), "None is one zero byte in postcard");
        written[0] = 2;
        assert_eq!(Snapshot::decode(&written, "s").unwrap(), snap);
    }

    #[test]
    fn version_1_snapshots_still_open_without_an_xattr_count() {
        let old = WrittenV1 {
            time: 7,
            hostname: "h".into(),
            username: "u".into(),
            paths: vec!["/p".into()],
            tags: vec!["t".into()],
            parent: None,
            tree: BlobId([4; 32]),
            program_version: "cairn 0.1.0".into(),
            summary: [1, 2, 3, 4, 5, 6, 7, 8, 9],
        };
        let snap = Snapshot::decode(&serial::encode_version(1, &old), "s").unwrap();
        assert_eq!(snap.hostname, "h");
        assert_eq!(snap.tree, BlobId([4; 32]));
        assert_eq!(snap.summary.files, 1);
        assert_eq!(snap.summary.warnings, 9);
        assert_eq!(snap.summary.xattr_nodes, None);
        let err = Snapshot::decode(&serial::encode_version(4, &old), "s").unwrap_err();
        assert!(
            err.to_string().contains("unknown format version 4"),
            "{err}"
        );
    }
}
