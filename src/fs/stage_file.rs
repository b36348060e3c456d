//! The content of one file in the stage.
//!
//! A file starts as the parent snapshot's chunks (or empty). Written sequentially from offset 0
//! — what `rsync` and `cp` do — it is cut and stored as it arrives, by the stage's cutting
//! thread ([`crate::fs::stage_stream`]), holding at most a batch of bytes (two maximum chunks)
//! per file and the cutter's queue in memory. Any other write (out of order, into existing content,
//! a truncation to a non-zero size) first copies the file into an unlinked local spool file;
//! the spool is chunked and stored when the last handle closes. Reads see the current content in
//! every state: stored chunks are fetched and verified like every read.

use crate::error::{Error, Result};
use crate::fetch::cache::{BlobCache, Plain};
use crate::fs::stage_stream::{Cutter, Stream};
use crate::ingest::chunker::{ChunkerConfig, for_each_batch};
use crate::ingest::packer::Packer;
use crate::repo::Repository;
use crate::repo::ids::{BlobId, BlobKind};
use crate::repo::index::Index;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// Bytes of a sequential write held before they are cut: 0 asks for the least the chunker
/// allows, two maximum chunks.
pub(crate) const STREAM_BATCH: usize = 0;

/// What file operations need from the stage: where blobs come from and go to.
pub struct Store<'a> {
    /// The repository.
    pub repo: &'a Repository,
    /// Its index when the stage started.
    pub index: &'a Index,
    /// Where new blobs go, and where blobs stored since the start are found.
    pub packer: &'a Packer,
    /// Verified plaintext chunks.
    pub cache: &'a BlobCache,
    /// How content is cut.
    pub chunker: &'a ChunkerConfig,
    /// Where spool files are made.
    pub spool_dir: &'a Path,
    /// Cuts sequential writes off the request thread.
    pub cutter: &'a Cutter,
}

impl Store<'_> {
    /// A blob's verified plaintext, from the repository or from what this stage stored.
    fn blob(&self, id: &BlobId) -> Result<Plain> {
        self.cache.get_or_fetch(*id, || {
            let at = match self.index.get(id) {
                Some(at) => at,
                None => self.packer.locate(id)?.ok_or(Error::MissingBlob(*id))?,
            };
            self.repo.read_blob(&at)
        })
    }

    /// Stores one chunk; returns it with its length.
    fn store(&self, chunk: &[u8]) -> Result<(BlobId, u64)> {
        Ok((self.packer.add(BlobKind::Data, chunk)?, chunk.len() as u64))
    }

    /// The plaintext length of a stored blob, if the index has it.
    pub fn length_of(&self, id: &BlobId) -> Option<u64> {
        self.index.get(id).map(|at| u64::from(at.entry.raw_len))
    }
}

/// A file's content.
pub enum Body {
    /// In the repository: chunk ids and lengths.
    Stored { chunks: Vec<(BlobId, u64)> },
    /// Being written sequentially, cut by the cutting thread; `ended` once the last handle
    /// closed (its last bytes are queued for cutting then).
    Streaming {
        stream: Arc<Stream>,
        size: u64,
        ended: bool,
    },
    /// Copied into an unlinked local file, for writes in any order.
    Spooled { file: File, size: u64 },
    /// The parent's content, with chunks the index does not have: kept as it is (the snapshot
    /// references the same chunks), but every read fails rather than serve shifted bytes.
    Unreadable { content: Vec<BlobId>, size: u64 },
}

impl Body {
    /// An empty file.
    pub fn empty() -> Body {
        Body::Stored { chunks: Vec::new() }
    }

    /// The parent's content of a file recorded as `size` bytes in chunks `content`.
    pub fn from_parent(store: &Store, content: &[BlobId], size: u64) -> Body {
        let chunks: Option<Vec<(BlobId, u64)>> = content
            .iter()
            .map(|id| store.length_of(id).map(|len| (*id, len)))
            .collect();
        match chunks {
            Some(chunks) if chunks.iter().map(|(_, len)| len).sum::<u64>() == size => {
                Body::Stored { chunks }
            }
            _ => Body::Unreadable {
                content: content.to_vec(),
                size,
            },
        }
    }

    /// The current length.
    pub fn size(&self) -> u64 {
        match self {
            Body::Stored { chunks } => chunks.iter().map(|(_, len)| len).sum(),
            Body::Streaming { size, .. }
            | Body::Spooled { size, .. }
            | Body::Unreadable { size, .. } => *size,
        }
    }

    /// The chunk ids, once the content is stored (see [`Body::settle`]).
    pub fn content(&self) -> Option<Vec<BlobId>> {
        match self {
            Body::Stored { chunks } => Some(chunks.iter().map(|(id, _)| *id).collect()),
            Body::Unreadable { content, .. } => Some(content.clone()),
            _ => None,
        }
    }

    /// Writes `data` at `offset`.
    pub fn write(&mut self, store: &Store, offset: u64, data: &[u8]) -> Result<()> {
        let size = self.size();
        match self {
            Body::Stored { chunks } if chunks.is_empty() && offset == 0 => {
                *self = Body::Streaming {
                    stream: store.cutter.stream(),
                    size: 0,
                    ended: false,
                };
                self.write(store, offset, data)
            }
            Body::Streaming {
                stream,
                size,
                ended: false,
            } if offset == *size => {
                store.cutter.push(stream, data)?;
                *size += data.len() as u64;
                Ok(())
            }
            Body::Spooled { file, size } => {
                file.write_all_at(data, offset)
                    .map_err(|e| Error::io(store.spool_dir, e))?;
                *size = (*size).max(offset + data.len() as u64);
                Ok(())
            }
            _ => {
                self.spool(store)?;
                debug_assert!(matches!(self, Body::Spooled { .. }) && self.size() == size);
                self.write(store, offset, data)
            }
        }
    }

    /// Up to `len` bytes at `offset`.
    pub fn read(&mut self, store: &Store, offset: u64, len: usize) -> Result<Vec<u8>> {
        if let Body::Streaming { .. } = self {
            self.settle(store)?;
        }
        let end = (offset + len as u64).min(self.size());
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity((end - offset) as usize);
        match self {
            Body::Spooled { file, .. } => {
                out.resize((end - offset) as usize, 0);
                file.read_exact_at(&mut out, offset)
                    .map_err(|e| Error::io(store.spool_dir, e))?;
            }
            Body::Stored { chunks } => {
                let mut start = 0u64;
                for (id, chunk_len) in chunks.iter() {
                    let chunk_end = start + chunk_len;
                    if chunk_end > offset && start < end {
                        let plain = store.blob(id)?;
                        let from = offset.max(start) - start;
                        let to = end.min(chunk_end) - start;
                        let piece = plain
                            .get(from as usize..to as usize)
                            .ok_or(Error::MissingBlob(*id))?;
                        out.extend_from_slice(piece);
                    }
                    start = chunk_end;
                    if start >= end {
                        break;
                    }
                }
            }
            Body::Unreadable { content, .. } => {
                return Err(Error::Invalid(format!(
                    "the parent's content of this file is not in the index ({} chunks)",
                    content.len()
                )));
            }
            Body::Streaming { .. } => unreachable!("settled above"),
        }
        Ok(out)
    }

    /// Sets the length to `len`.
    pub fn truncate(&mut self, store: &Store, len: u64) -> Result<()> {
        if len == self.size() {
            return Ok(());
        }
        if len == 0 {
            *self = Body::empty();
            return Ok(());
        }
        if !matches!(self, Body::Spooled { .. }) {
            self.spool(store)?;
        }
        if let Body::Spooled { file, size } = self {
            file.set_len(len)
                .map_err(|e| Error::io(store.spool_dir, e))?;
            *size = len;
        }
        Ok(())
    }

    /// The last handle closed: a sequential write's last bytes are queued for cutting, without
    /// waiting for them.
    pub fn close(&mut self, store: &Store) -> Result<()> {
        if let Body::Streaming { stream, ended, .. } = self
            && !*ended
        {
            *ended = true;
            store.cutter.finish(stream)?;
        }
        Ok(())
    }

    /// Stores whatever is not stored yet, leaving [`Body::Stored`]: a sequential write is cut
    /// to its end (waiting for the cutting thread), a spool file is chunked.
    pub fn settle(&mut self, store: &Store) -> Result<()> {
        self.close(store)?;
        match std::mem::replace(self, Body::empty()) {
            Body::Stored { chunks } => *self = Body::Stored { chunks },
            unreadable @ Body::Unreadable { .. } => *self = unreadable,
            Body::Streaming {
                stream,
                size,
                ended,
            } => match stream.wait() {
                Ok(chunks) => *self = Body::Stored { chunks },
                Err(e) => {
                    *self = Body::Streaming {
                        stream,
                        size,
                        ended,
                    };
                    return Err(e);
                }
            },
            Body::Spooled { mut file, size } => {
                let mut chunks = Vec::new();
                file.seek(SeekFrom::Start(0))
                    .map_err(|e| Error::io(store.spool_dir, e))?;
                let read = for_each_batch::<_, SettleError>(
                    store.chunker,
                    (&mut file).take(size),
                    size,
                    STREAM_BATCH,
                    |batch| {
                        for chunk in batch {
                            chunks.push(store.store(chunk).map_err(SettleError::Store)?);
                        }
                        Ok(())
                    },
                );
                match read {
                    Ok(_) => *self = Body::Stored { chunks },
                    Err(SettleError::Read(e)) => {
                        *self = Body::Spooled { file, size };
                        return Err(Error::io(store.spool_dir, e));
                    }
                    Err(SettleError::Store(e)) => {
                        *self = Body::Spooled { file, size };
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }

    /// Copies the current content into a new spool file.
    fn spool(&mut self, store: &Store) -> Result<()> {
        self.settle(store)?;
        let Body::Stored { chunks } = self else {
            return Err(Error::Invalid(
                "the parent's content of this file is not in the index".into(),
            ));
        };
        let file = spool_file(store.spool_dir)?;
        let mut at = 0u64;
        for (id, len) in chunks.iter() {
            let plain = store.blob(id)?;
            file.write_all_at(&plain, at)
                .map_err(|e| Error::io(store.spool_dir, e))?;
            at += len;
        }
        *self = Body::Spooled { file, size: at };
        Ok(())
    }
}

/// Reading a spool file, or storing its chunks.
enum SettleError {
    Read(std::io::Error),
    Store(Error),
}

impl From<std::io::Error> for SettleError {
    fn from(e: std::io::Error) -> Self {
        SettleError::Read(e)
    }
}

/// A new local file that no name points to: it vanishes when closed, or if the process dies.
/// Made with O_TMPFILE, so it never has a name another user could open (where the file system
/// lacks it, made 0600 and unlinked at once); only its owner can read it either way.
fn spool_file(dir: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let unnamed = File::options()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir);
    match unnamed {
        Ok(file) => return Ok(file),
        Err(e) if !matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR)) => {
            return Err(Error::io(dir, e));
        }
        Err(_) => {}
    }
    let mut suffix = [0u8; 12];
    crate::repo::crypto::fill_random(&mut suffix);
    let path = dir.join(format!(".cairn-spool-{}", hex::encode(suffix)));
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_spool_file_has_no_name_and_only_its_owner_may_read_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = spool_file(dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert_eq!(file.metadata().unwrap().mode() & 0o777, 0o600);
        file.write_all(b"staged plaintext").unwrap();
        file.rewind().unwrap();
        let mut back = String::new();
        file.read_to_string(&mut back).unwrap();
        assert_eq!(back, "staged plaintext");
    }
}
