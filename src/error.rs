//! The library's one error type. Every variant names what went wrong and where (the file, the
//! pack, the blob), so that `main` can print it as one line and map it to an exit code.

use crate::repo::ids::{BlobId, PackId};
use std::path::PathBuf;

/// Result with the library's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong below the command line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No repository at the given location (exit code 10, like restic).
    #[error("no repository at {0}")]
    NoRepository(String),
    /// No key file accepted the password (exit code 12, like restic).
    #[error("wrong password: no key in the repository opens with it")]
    WrongPassword,
    /// A repository object the store does not have.
    #[error("{0} not found in the repository")]
    NotFound(String),
    /// The store failed to read or write an object.
    #[error("storage error on {name}: {source}")]
    Storage {
        name: String,
        source: std::io::Error,
    },
    /// A repository file that does not parse or does not authenticate.
    #[error("{file} is damaged: {reason}")]
    Corrupt { file: String, reason: String },
    /// A blob whose tag or content id does not check.
    #[error("blob {blob} in pack {pack} is damaged: {reason}")]
    BadBlob {
        pack: PackId,
        blob: BlobId,
        reason: String,
    },
    /// A blob compressed with a dictionary the repository does not have, or that does not
    /// open: the blob's own bytes may be sound, so nothing heals or replaces its pack for it.
    #[error("blob {blob} in pack {pack} cannot be read: {reason}")]
    NoDictionary {
        pack: PackId,
        blob: BlobId,
        reason: String,
    },
    /// A blob a tree or snapshot references that no index lists.
    #[error("blob {0} is not in the index")]
    MissingBlob(BlobId),
    /// A pack failed its in-memory check before upload: the data was corrupted between hashing
    /// and storing (bad RAM, a bug). Nothing of it was stored.
    #[error("pack verification before upload failed for blob {blob}: {reason}")]
    PackVerify { blob: BlobId, reason: String },
    /// A local file or directory the job was asked to read or write.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A snapshot selector that matches nothing, or more than one thing.
    #[error("{0}")]
    Selector(String),
    /// Anything the user asked for that cannot be done as asked.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// Wraps an I/O error with the local path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A repository file that failed to parse or authenticate.
    pub fn corrupt(file: impl Into<String>, reason: impl ToString) -> Self {
        Error::Corrupt {
            file: file.into(),
            reason: reason.to_string(),
        }
    }
}
