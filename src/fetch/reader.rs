//! Verified reads at any offset of a file stored as a list of chunks. A read that straddles
//! chunk boundaries is joined from each chunk; every chunk comes through the shared cache, so
//! it is verified once and then served from memory. Sequential readers get the next chunks
//! fetched ahead of them in parallel.

use crate::error::{Error, Result};
use crate::fetch::cache::{BlobCache, Plain};
use crate::repo::Repository;
use crate::repo::ids::BlobId;
use crate::repo::index::Index;
use crate::repo::repository::{check_is_tree, join_tree, valid_nodes};
use crate::repo::tree::{Node, Tree};
use std::sync::Arc;

/// Reads the index again when a pack that the given index names is gone; `None` when no
/// fresher one is had.
pub type IndexReload = Arc<dyn Fn(&Index) -> Option<Arc<Index>> + Send + Sync>;

/// Everything a reader needs to turn a blob id into verified plaintext.
pub struct Fetcher {
    /// The repository.
    pub repo: Arc<Repository>,
    /// The cache of verified plaintext.
    pub cache: Arc<BlobCache>,
    /// How a long-running reader (the mount) follows a prune that moved blobs to new packs.
    pub reload: Option<IndexReload>,
}

impl Fetcher {
    /// The verified plaintext of `id`, from the cache or the repository. When every pack the
    /// index names for it is gone, the index is read again once and the blob looked up there.
    pub fn blob(&self, index: &Index, id: &BlobId) -> Result<Plain> {
        self.cache.get_or_fetch(*id, || {
            let at = index.get(id).ok_or(Error::MissingBlob(*id))?;
            let _room = self.cache.reserve(at.entry.open_bytes());
            match self.repo.read_indexed(index, id) {
                Err(Error::NotFound(pack)) => match self.reload.as_ref().and_then(|r| r(index)) {
                    Some(fresh) => self.repo.read_indexed(&fresh, id),
                    None => Err(Error::NotFound(pack)),
                },
                other => other,
            }
        })
    }

    /// A tree's nodes, through the cache as [`Fetcher::blob`] (so a tree a read ahead is
    /// fetching is waited for, not asked for again), with the same fallback. The parsed nodes are
    /// the caller's to keep: the plaintext leaves the cache.
    pub fn tree(&self, index: &Index, id: &BlobId) -> Result<Vec<Node>> {
        let nodes = join_tree(id, |piece| {
            check_is_tree(index, piece)?;
            let plain = self.blob(index, piece)?;
            self.cache.forget(piece);
            Tree::decode(&plain, piece)
        })?;
        Ok(valid_nodes(id, nodes))
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

    /// The end of the run of at most `count` chunks from `from` that holds at most `bytes` —
    /// but at least one chunk, so a reader always has the next one fetched ahead.
    pub fn run_end(&self, from: usize, count: usize, bytes: u64) -> usize {
        let last = from.saturating_add(count).min(self.content.len());
        let mut end = from;
        while end < last && (end == from || self.starts[end + 1] - self.starts[from] <= bytes) {
            end += 1;
        }
        end
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
        let plain = fetcher.cache.get(&self.content[i])?;
        (to <= plain.len()).then_some((plain, from..to))
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
            out.extend_from_slice(plain.get(from as usize..to as usize)?);
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
                .blob(index, &self.content[i])
                .map_err(|error| ReadError {
                    chunk_offset: self.starts[i],
                    blob: self.content[i],
                    error: Box::new(error),
                })?;
            let from = offset.max(self.starts[i]) - self.starts[i];
            let to = end.min(self.starts[i + 1]) - self.starts[i];
            let bytes = plain
                .get(from as usize..to as usize)
                .ok_or_else(|| ReadError {
                    chunk_offset: self.starts[i],
                    blob: self.content[i],
                    error: Box::new(Error::corrupt(
                        self.content[i].to_string(),
                        "shorter than the index says",
                    )),
                })?;
            out.extend_from_slice(bytes);
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

    #[test]
    fn runs_ahead_hold_at_most_their_bytes_but_one_chunk() {
        let reader = FileReader {
            content: vec![BlobId([1; 32]); 4],
            starts: vec![0, 10, 30, 40, 100],
        };
        assert_eq!(
            reader.run_end(0, 9, 30),
            2,
            "10 + 20 bytes fit, the next 10 do not"
        );
        assert_eq!(reader.run_end(0, 9, 40), 3);
        assert_eq!(reader.run_end(0, 2, 1000), 2, "no more than asked");
        assert_eq!(reader.run_end(3, 9, 5), 4, "one chunk even when larger");
        assert_eq!(reader.run_end(4, 9, 1000), 4, "nothing past the end");
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
