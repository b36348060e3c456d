//! Storing one file's content: chunked in bounded batches, the chunks of a batch deduplicated,
//! sealed and packed in parallel. Backup calls it for each changed file it walks; the overlay
//! stage calls it for each file as the copy closes it, and at commit for the files it missed.

use crate::error::Error;
use crate::ingest::chunker::{ChunkerConfig, for_each_batch};
use crate::ingest::packer::Packer;
use crate::repo::ids::{BlobId, BlobKind};
use rayon::prelude::*;
use std::io::{self, Read};

/// Why one file's content could not be stored.
pub enum FileError {
    /// The local file: a warning, the job goes on.
    Local(io::Error),
    /// The repository: fatal.
    Repo(Error),
}

impl From<io::Error> for FileError {
    fn from(e: io::Error) -> Self {
        FileError::Local(e)
    }
}

/// Chunks and stores what `source` holds (about `size_hint` bytes), `batch` bytes at a time;
/// returns the content ids in order and the bytes read. Memory is one batch plus one chunk.
pub fn store_content<R: Read>(
    chunker: &ChunkerConfig,
    packer: &Packer,
    source: R,
    size_hint: u64,
    batch: usize,
) -> Result<(Vec<BlobId>, u64), FileError> {
    let mut content = Vec::new();
    let read = for_each_batch::<_, FileError>(chunker, source, size_hint, batch, |chunks| {
        let ids = if chunks.len() == 1 {
            vec![
                packer
                    .add(BlobKind::Data, chunks[0])
                    .map_err(FileError::Repo)?,
            ]
        } else {
            chunks
                .par_iter()
                .map(|c| packer.add(BlobKind::Data, c))
                .collect::<Result<Vec<_>, Error>>()
                .map_err(FileError::Repo)?
        };
        content.extend(ids);
        Ok(())
    })?;
    Ok((content, read))
}
