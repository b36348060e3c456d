//! Content-defined chunking with FastCDC (normalization level 1, seeded from the master key so
//! chunk boundaries reveal nothing about content). Reads a file in bounded batches and hands out
//! whole chunks; a chunk cut short by the end of a batch is carried into the next one, so the
//! boundaries are the same as one pass over the whole file would give.

use crate::repo::config::Params;
use fastcdc::v2020::{FastCDC, Normalization};
use std::io::{self, Read};

/// Chunk sizes and seed of one repository.
#[derive(Clone, Copy, Debug)]
pub struct ChunkerConfig {
    min: usize,
    avg: usize,
    max: usize,
    seed: u64,
}

impl ChunkerConfig {
    /// The chunker for a repository's parameters and gear seed.
    pub fn new(params: &Params, seed: u64) -> Self {
        ChunkerConfig {
            min: params.chunk_min as usize,
            avg: params.chunk_avg as usize,
            max: params.chunk_max as usize,
            seed,
        }
    }

    /// The largest chunk.
    pub fn max(&self) -> usize {
        self.max
    }
}

/// Reads `source` in batches of about `batch` bytes and calls `on_batch` with the complete
/// chunks of each, in order. Returns the bytes read. Memory is one batch plus one chunk.
pub fn for_each_batch<R: Read, E: From<io::Error>>(
    config: &ChunkerConfig,
    mut source: R,
    size_hint: u64,
    batch: usize,
    mut on_batch: impl FnMut(Vec<&[u8]>) -> Result<(), E>,
) -> Result<u64, E> {
    // A batch must hold a whole maximum chunk, or a cut could fall outside it.
    let capacity = batch.max(2 * config.max);
    let first = usize::try_from(size_hint.saturating_add(1))
        .unwrap_or(capacity)
        .min(capacity);
    let mut buf = Vec::with_capacity(first);
    let mut total = 0u64;
    loop {
        let want = capacity - buf.len();
        let before = buf.len();
        (&mut source).take(want as u64).read_to_end(&mut buf)?;
        let read = buf.len() - before;
        total += read as u64;
        let eof = read < want;
        if buf.is_empty() {
            return Ok(total);
        }
        let mut chunks: Vec<&[u8]> = FastCDC::with_level_and_seed(
            &buf,
            config.min,
            config.avg,
            config.max,
            Normalization::Level1,
            config.seed,
        )
        .map(|c| &buf[c.offset..c.offset + c.length])
        .collect();
        let carried = if eof {
            0
        } else {
            chunks.pop().map_or(0, |c| c.len())
        };
        on_batch(chunks)?;
        if eof {
            return Ok(total);
        }
        let keep_from = buf.len() - carried;
        buf.drain(..keep_from);
        if buf.capacity() < capacity {
            buf.reserve(capacity - buf.len());
        }
    }
}

/// The chunker fed by pushes rather than a reader: for data that arrives in pieces (writes into
/// the stage). It cuts exactly where [`for_each_batch`] cuts the same bytes, so content written
/// through the stage dedups with the same content backed up. Holds at most `capacity` bytes
/// plus one push.
pub struct StreamChunker {
    config: ChunkerConfig,
    capacity: usize,
    buf: Vec<u8>,
}

impl StreamChunker {
    /// A chunker that cuts whenever `batch` bytes (at least two maximum chunks) are buffered.
    pub fn new(config: ChunkerConfig, batch: usize) -> Self {
        let capacity = batch.max(2 * config.max);
        StreamChunker {
            config,
            capacity,
            buf: Vec::new(),
        }
    }

    /// Bytes buffered and not yet cut.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Adds `data`; calls `on_chunk` with each chunk that is now final.
    pub fn push<E>(
        &mut self,
        data: &[u8],
        on_chunk: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= self.capacity {
            self.cut(false, on_chunk)?;
        }
        Ok(())
    }

    /// Cuts what is left; every chunk is final.
    pub fn finish<E>(mut self, on_chunk: impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        self.cut(true, on_chunk)
    }

    fn cut<E>(
        &mut self,
        last: bool,
        mut on_chunk: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let cuts: Vec<(usize, usize)> = FastCDC::with_level_and_seed(
            &self.buf,
            self.config.min,
            self.config.avg,
            self.config.max,
            Normalization::Level1,
            self.config.seed,
        )
        .map(|c| (c.offset, c.length))
        .collect();
        // The last chunk may only have ended because the buffer did: keep it for more data.
        let keep = if last {
            cuts.len()
        } else {
            cuts.len().saturating_sub(1)
        };
        for &(offset, length) in &cuts[..keep] {
            on_chunk(&self.buf[offset..offset + length])?;
        }
        let done = cuts[..keep].last().map_or(0, |&(o, l)| o + l);
        self.buf.drain(..done);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ChunkerConfig {
        let params = Params {
            chunk_min: 4096,
            chunk_avg: 16384,
            chunk_max: 65536,
            ..Params::default()
        };
        ChunkerConfig::new(&params, 42)
    }

    fn cut(data: &[u8], batch: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for_each_batch::<_, io::Error>(&config(), data, data.len() as u64, batch, |chunks| {
            out.extend(chunks.into_iter().map(<[u8]>::to_vec));
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn batch_size_does_not_move_boundaries() {
        let mut data = vec![0u8; 1 << 20];
        crate::repo::crypto::fill_random(&mut data);
        let whole = cut(&data, 4 << 20);
        assert!(whole.len() > 20);
        assert_eq!(cut(&data, 1), whole);
        assert_eq!(cut(&data, 200_000), whole);
        assert_eq!(whole.concat(), data);
    }

    #[test]
    fn small_and_empty_inputs() {
        assert!(cut(b"", 1 << 20).is_empty());
        assert_eq!(cut(b"abc", 1 << 20), vec![b"abc".to_vec()]);
    }

    #[test]
    fn seed_changes_boundaries() {
        let mut data = vec![0u8; 1 << 20];
        crate::repo::crypto::fill_random(&mut data);
        let mut other = config();
        other.seed = 7;
        let mut a = Vec::new();
        for_each_batch::<_, io::Error>(&other, &data[..], 0, 1 << 20, |c| {
            a.extend(c.iter().map(|c| c.len()));
            Ok(())
        })
        .unwrap();
        let b: Vec<usize> = cut(&data, 1 << 20).iter().map(Vec::len).collect();
        assert_ne!(a, b);
    }

    #[test]
    fn pushed_pieces_cut_where_a_reader_cuts() {
        let mut data = vec![0u8; 700_000];
        crate::repo::crypto::fill_random(&mut data);
        let expected = cut(&data, 1 << 17);
        for piece in [1usize, 4096, 65536, 100_003, 1 << 20] {
            let mut stream = StreamChunker::new(config(), 1 << 17);
            let mut got: Vec<Vec<u8>> = Vec::new();
            for part in data.chunks(piece) {
                stream
                    .push::<()>(part, |c| {
                        got.push(c.to_vec());
                        Ok(())
                    })
                    .unwrap();
                assert!(stream.buffered() <= (1 << 17) + piece);
            }
            stream
                .finish::<()>(|c| {
                    got.push(c.to_vec());
                    Ok(())
                })
                .unwrap();
            assert_eq!(got, expected, "pieces of {piece}");
        }
    }
}
