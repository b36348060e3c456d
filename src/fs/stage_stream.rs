//! Sequential writes into a FUSE stage, cut and stored off the request thread.
//!
//! rsync waits for each WRITE's answer before it sends the next request, so whatever the answer
//! waits for is on the copy's critical path. Chunking and hashing a file's bytes took about a
//! sixth of the request thread's time (SHA-256 alone 15 %, measured with perf on rsync of
//! linux/): here a WRITE only copies its bytes into a queue, and one thread cuts each file's
//! stream in order and hands the chunks to the packer, whose sealer compresses and encrypts
//! them. Whoever needs a file's chunk ids (a read, a truncation, the commit) waits for its
//! stream to drain ([`Stream::wait`]).

use crate::error::{Error, Result};
use crate::fs::stage_file::STREAM_BATCH;
use crate::ingest::chunker::{ChunkerConfig, StreamChunker};
use crate::ingest::packer::Packer;
use crate::repo::ids::{BlobId, BlobKind};
use parking_lot::{Condvar, Mutex};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};
use std::thread::JoinHandle;

/// Bytes written but not yet cut, across all files, at most: past this a WRITE waits.
const QUEUED_BYTES: usize = 32 << 20;

/// One file's sequential content: what is cut so far, and what is still queued.
pub struct Stream {
    state: Mutex<StreamState>,
    drained: Condvar,
}

struct StreamState {
    /// `None` once its last bytes were cut.
    chunker: Option<StreamChunker>,
    chunks: Vec<(BlobId, u64)>,
    /// Pieces queued and not yet cut.
    queued: usize,
    /// Why storing failed, if it did (nothing more is cut then).
    failed: Option<String>,
}

impl Stream {
    /// The chunk ids and lengths, once every queued piece is cut and the stream finished.
    pub fn wait(&self) -> Result<Vec<(BlobId, u64)>> {
        let mut state = self.state.lock();
        while state.queued > 0 {
            self.drained.wait(&mut state);
        }
        if let Some(why) = &state.failed {
            return Err(Error::Invalid(format!(
                "storing a file written to the stage: {why}"
            )));
        }
        if state.chunker.is_some() {
            return Err(Error::Invalid(
                "a stage file's stream was not finished".into(),
            ));
        }
        Ok(state.chunks.clone())
    }
}

/// A piece of a stream to cut: bytes, or its end.
struct Piece {
    stream: Arc<Stream>,
    /// `None`: the stream ends here.
    bytes: Option<Vec<u8>>,
}

/// The bytes queued, shared with the cutting thread.
#[derive(Default)]
struct Budget {
    queued: Mutex<usize>,
    freed: Condvar,
}

/// The cutting thread and its queue.
pub struct Cutter {
    config: ChunkerConfig,
    queue: Mutex<Option<Sender<Piece>>>,
    budget: Arc<Budget>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Cutter {
    /// Starts the thread, storing into `packer`.
    pub fn start(packer: Arc<Packer>, config: ChunkerConfig) -> Result<Cutter> {
        let (queue, pieces) = std::sync::mpsc::channel();
        let budget = Arc::new(Budget::default());
        let thread = {
            let budget = budget.clone();
            std::thread::Builder::new()
                .name("cairn-cut".into())
                .spawn(move || cut_all(&pieces, &packer, &budget))
                .map_err(|e| Error::Invalid(format!("starting the stage's cutting thread: {e}")))?
        };
        Ok(Cutter {
            config,
            queue: Mutex::new(Some(queue)),
            budget,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// A new stream, for a file written from its first byte.
    pub fn stream(&self) -> Arc<Stream> {
        Arc::new(Stream {
            state: Mutex::new(StreamState {
                chunker: Some(StreamChunker::new(self.config, STREAM_BATCH)),
                chunks: Vec::new(),
                queued: 0,
                failed: None,
            }),
            drained: Condvar::new(),
        })
    }

    /// Queues `bytes` at the end of `stream`, waiting while too much is queued.
    pub fn push(&self, stream: &Arc<Stream>, bytes: &[u8]) -> Result<()> {
        {
            let mut queued = self.budget.queued.lock();
            while *queued > 0 && *queued + bytes.len() > QUEUED_BYTES {
                self.budget.freed.wait(&mut queued);
            }
            *queued += bytes.len();
        }
        self.send(stream, Some(bytes.to_vec()))
    }

    /// Queues the end of `stream`: its last bytes are cut.
    pub fn finish(&self, stream: &Arc<Stream>) -> Result<()> {
        self.send(stream, None)
    }

    fn send(&self, stream: &Arc<Stream>, bytes: Option<Vec<u8>>) -> Result<()> {
        stream.state.lock().queued += 1;
        let piece = Piece {
            stream: stream.clone(),
            bytes,
        };
        let sent = self
            .queue
            .lock()
            .as_ref()
            .is_some_and(|queue| queue.send(piece).is_ok());
        if sent {
            return Ok(());
        }
        let mut state = stream.state.lock();
        state.queued -= 1;
        state.failed = Some("the stage's cutting thread ended".into());
        Err(Error::Invalid("the stage's cutting thread ended".into()))
    }

    /// Cuts what is queued, then ends the thread (which lets go of the packer).
    pub fn stop(&self) {
        self.queue.lock().take();
        if let Some(thread) = self.thread.lock().take()
            && thread.join().is_err()
        {
            tracing::error!("stage: the cutting thread panicked");
        }
    }
}

/// The thread: cuts each piece in the order queued, which is each stream's order.
fn cut_all(pieces: &Receiver<Piece>, packer: &Packer, budget: &Budget) {
    for Piece { stream, bytes } in pieces {
        let len = bytes.as_ref().map_or(0, Vec::len);
        {
            let mut state = stream.state.lock();
            if state.failed.is_none()
                && let Err(e) = cut(&mut state, bytes.as_deref(), packer)
            {
                state.failed = Some(e.to_string());
            }
            state.queued -= 1;
            if state.queued == 0 {
                stream.drained.notify_all();
            }
        }
        let mut queued = budget.queued.lock();
        *queued -= len;
        budget.freed.notify_all();
    }
}

/// Cuts one piece of a stream (`None`: its end) and stores the chunks now final.
fn cut(state: &mut StreamState, bytes: Option<&[u8]>, packer: &Packer) -> Result<()> {
    let StreamState {
        chunker, chunks, ..
    } = state;
    let store = |chunk: &[u8]| -> Result<()> {
        chunks.push((packer.add(BlobKind::Data, chunk)?, chunk.len() as u64));
        Ok(())
    };
    match (bytes, chunker.as_mut()) {
        (Some(bytes), Some(open)) => open.push(bytes, store),
        (None, Some(_)) => match chunker.take() {
            Some(open) => open.finish(store),
            None => Ok(()),
        },
        (_, None) => Err(Error::Invalid("bytes written after a stream ended".into())),
    }
}
