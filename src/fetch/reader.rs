//! Verified reads at any offset of a file stored as a list of chunks. A read that straddles
//! chunk boundaries is joined from each chunk; every chunk comes through the shared cache, so
//! it is verified once and then served from memory. Sequential readers get the next chunks
//! fetched ahead of them in parallel.

use crate::error::{Error, Result};
use crate::fetch::cache::{BlobCache, Plain};
use crate::repo::Repository;
use crate::repo::blob::open_blob;
use crate::repo::ids::{BlobId, PackId};
use crate::repo::index::{BlobLocation, Index};
use crate::repo::pack::{PackEntry, pack_name};
use std::collections::HashMap;
use std::sync::Arc;

/// Chunks smaller than this are fetched together with their neighbours in the pack.
pub const SMALL_CHUNK: u32 = 256 << 10;
/// How many bytes of a pack are read around a small chunk. Files of one directory are stored
/// side by side, so copying a tree of small files then finds most of them already verified.
pub const NEIGHBOUR_WINDOW: u64 = 2 << 20;

/// Everything a reader needs to turn a blob id into verified plaintext.
pub struct Fetcher {
    /// The repository.
    pub repo: Arc<Repository>,
    /// The cache of verified plaintext.
    pub cache: Arc<BlobCache>,
}

impl Fetcher {
    /// The verified plaintext of `id`, from the cache or the repository. A small chunk's pack
    /// neighbours (from `neighbours`, the index's blobs by pack) are verified and cached too.
    pub fn blob(
        &self,
        index: &Index,
        neighbours: Option<&HashMap<PackId, Vec<PackEntry>>>,
        id: &BlobId,
    ) -> Result<Plain> {
        self.cache.get_or_fetch(*id, || {
            let at = index.get(id).ok_or(Error::MissingBlob(*id))?;
            match neighbours.and_then(|n| n.get(&at.pack)) {
                Some(blobs) if at.entry.sealed_len < SMALL_CHUNK => {
                    self.with_neighbours(&at, blobs)
                }
                _ => self.repo.read_blob(&at),
            }
        })
    }

    /// Reads the window of the pack that starts at `at`, caches the neighbours that verify,
    /// and returns `at`'s plaintext (re-read on its own if it fails in the window).
    fn with_neighbours(&self, at: &BlobLocation, blobs: &[PackEntry]) -> Result<Vec<u8>> {
        let first = blobs.partition_point(|e| e.offset < at.entry.offset);
        let start = u64::from(at.entry.offset);
        let window: Vec<&PackEntry> = blobs[first..]
            .iter()
            .take_while(|e| {
                u64::from(e.offset) + u64::from(e.sealed_len) - start <= NEIGHBOUR_WINDOW
            })
            .collect();
        let Some(last) = window.last() else {
            return self.repo.read_blob(at);
        };
        let end = u64::from(last.offset) + u64::from(last.sealed_len);
        let Ok(bytes) = self
            .repo
            .backend()
            .get(&pack_name(&at.pack), Some(start..end))
        else {
            return self.repo.read_blob(at);
        };
        let mut own = None;
        for entry in window {
            let from = (u64::from(entry.offset) - start) as usize;
            let Some(sealed) = bytes.get(from..from + entry.sealed_len as usize) else {
                break;
            };
            if entry.id == at.entry.id {
                own = open_blob(self.repo.key(), &entry.meta(), sealed).ok();
            } else if !self.cache.contains(&entry.id)
                && let Ok(plain) = open_blob(self.repo.key(), &entry.meta(), sealed)
            {
                self.cache.offer(entry.id, plain);
            }
        }
        match own {
            Some(plain) => Ok(plain),
            None => self.repo.read_blob(at),
        }
    }
}

/// One file's chunks and where each starts.
pub struct FileReader {
    content: Vec<BlobId>,
    /// `starts[i]` is the offset of chunk `i`; `starts[len]` is the file size.
    starts: Vec<u64>,
}

impl FileReader {
    /// A reader over `content`, with chunk sizes from the index.
    pub fn new(index: &Index, content: &[BlobId]) -> Result<FileReader> {
        let mut starts = Vec::with_capacity(content.len() + 1);
        let mut offset = 0u64;
        for id in content {
            starts.push(offset);
            offset += u64::from(index.get(id).ok_or(Error::MissingBlob(*id))?.entry.raw_len);
        }
        starts.push(offset);
        Ok(FileReader {
            content: content.to_vec(),
            starts,
        })
    }

    /// The file's size.
    pub fn size(&self) -> u64 {
        *self.starts.last().expect("never empty")
    }

    /// The chunk holding byte `offset`.
    pub fn chunk_at(&self, offset: u64) -> usize {
        self.starts
            .partition_point(|&s| s <= offset)
            .saturating_sub(1)
    }

    /// The ids of chunks `from..to` (clamped to the file).
    pub fn chunks(&self, from: usize, to: usize) -> &[BlobId] {
        let end = to.min(self.content.len());
        &self.content[from.min(end)..end]
    }

    /// The chunk range of a read that lies inside one chunk: (chunk index, from, to).
    fn within_one_chunk(&self, offset: u64, size: usize) -> Option<(usize, usize, usize)> {
        let end = (offset + size as u64).min(self.size());
        let i = self.chunk_at(offset);
        (offset < end && end <= self.starts[i + 1]).then(|| {
            (
                i,
                (offset - self.starts[i]) as usize,
                (end - self.starts[i]) as usize,
            )
        })
    }

    /// A read inside one cached chunk, served from the cache without copying: the chunk and
    /// the range of it to send.
    pub fn cached_slice(
        &self,
        fetcher: &Fetcher,
        offset: u64,
        size: usize,
    ) -> Option<(Plain, std::ops::Range<usize>)> {
        let (i, from, to) = self.within_one_chunk(offset, size)?;
        Some((fetcher.cache.get(&self.content[i])?, from..to))
    }

    /// The bytes at `offset`, only if every chunk they need is cached (never fetches).
    pub fn read_cached(&self, fetcher: &Fetcher, offset: u64, size: usize) -> Option<Vec<u8>> {
        let end = (offset + size as u64).min(self.size());
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut i = self.chunk_at(offset);
        while offset < end && i < self.content.len() && self.starts[i] < end {
            let plain = fetcher.cache.get(&self.content[i])?;
            let from = offset.max(self.starts[i]) - self.starts[i];
            let to = end.min(self.starts[i + 1]) - self.starts[i];
            out.extend_from_slice(&plain[from as usize..to as usize]);
            i += 1;
        }
        Some(out)
    }

    /// Reads up to `size` bytes at `offset`. On a damaged chunk the error says which chunk
    /// offset failed, so the caller can name it.
    pub fn read_at(
        &self,
        fetcher: &Fetcher,
        index: &Index,
        neighbours: Option<&HashMap<PackId, Vec<PackEntry>>>,
        offset: u64,
        size: usize,
    ) -> Result<Vec<u8>, ReadError> {
        let end = (offset + size as u64).min(self.size());
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        if offset >= end {
            return Ok(out);
        }
        let mut i = self.chunk_at(offset);
        while i < self.content.len() && self.starts[i] < end {
            let plain = fetcher
                .blob(index, neighbours, &self.content[i])
                .map_err(|error| ReadError {
                    chunk_offset: self.starts[i],
                    blob: self.content[i],
                    error: Box::new(error),
                })?;
            let from = offset.max(self.starts[i]) - self.starts[i];
            let to = end.min(self.starts[i + 1]) - self.starts[i];
            out.extend_from_slice(&plain[from as usize..to as usize]);
            i += 1;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_ranges_are_clamped_and_never_reversed() {
        let reader = FileReader {
            content: vec![BlobId([1; 32]); 3],
            starts: vec![0, 10, 20, 30],
        };
        assert_eq!(reader.chunks(1, 9).len(), 2);
        assert!(reader.chunks(5, 2).is_empty());
        assert!(reader.chunks(2, 1).is_empty());
        assert_eq!(reader.chunk_at(0), 0);
        assert_eq!(reader.chunk_at(10), 1);
        assert_eq!(reader.chunk_at(29), 2);
    }
}

/// A read that hit a chunk it could not fetch or verify.
#[derive(Debug)]
pub struct ReadError {
    /// Where the chunk starts in the file.
    pub chunk_offset: u64,
    /// The chunk.
    pub blob: BlobId,
    /// Why (names the pack when the blob is damaged).
    pub error: Box<Error>,
}
