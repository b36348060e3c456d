//! The view's read path: per-file read state, recognising a sequential stream, and fetching
//! ahead of it (and of a directory whose files are being copied) on the read workers.

use super::*;
use crate::fetch::batch::plan_reads;

/// What reads of one file need: its chunk layout and where a sequential reader is. Kept per
/// inode, not per open, so the kernel need not send open and release at all.
pub(super) struct OpenFile {
    reader: FileReader,
    index: Arc<Index>,
    path: crate::fs::node_path::NodePath,
    /// Where the last read of the file ended.
    last_end: AtomicU64,
    prefetched_to: AtomicUsize,
    /// The chunks before this one were passed by the file's stream and dropped from the cache.
    passed_to: AtomicUsize,
}

impl OpenFile {
    /// Records a read of `offset..end`; true when it continues the file's stream: it starts
    /// where the last read ended, or — the kernel sends readahead requests in parallel and the
    /// workers answer them in any order — it is as large as readahead requests are and starts
    /// near there (a random reader's small reads landing nearby do not count: each would set
    /// off fetching ahead).
    pub(super) fn continues_stream(&self, offset: u64, end: u64) -> bool {
        let last_end = self.last_end.swap(end, Ordering::Relaxed);
        let near = offset.abs_diff(last_end) <= STREAM_SLACK && end - offset >= STREAM_READ_MIN;
        if offset == last_end || near {
            return true;
        }
        // Perhaps a new stream starts here: what was fetched ahead or passed was the old one's.
        self.prefetched_to.store(0, Ordering::Relaxed);
        self.passed_to.store(
            self.reader.chunk_at(offset.saturating_sub(STREAM_SLACK)),
            Ordering::Relaxed,
        );
        false
    }
}

impl View {
    /// Answers a read of `size` bytes at `offset` of file `ino`: from the cache on the session
    /// thread when the chunks are there, else on a worker; a read that continues the file's
    /// stream sets off fetching ahead.
    pub(super) fn serve_read(&self, ino: u64, offset: u64, size: u32, reply: ReplyData) {
        let file = match self.read_state(ino) {
            Ok(file) => file,
            Err(e) => return reply.error(e),
        };
        let fetcher = self.fetcher.clone();
        let prefetch = self.opts.prefetch_chunks;
        // Already verified and cached: answer here, without a hop to a worker (and, inside one
        // chunk, without a copy).
        if let Some((chunk, range)) = file.reader.cached_slice(&fetcher, offset, size as usize) {
            let end = offset + range.len() as u64;
            reply.data(&chunk[range]);
            if file.continues_stream(offset, end) {
                let ahead = self.ahead_pool.clone();
                self.pool
                    .spawn(move || follow_stream(&file, &fetcher, &ahead, offset..end, prefetch));
            }
            return;
        }
        if let Some(data) = file.reader.read_cached(&fetcher, offset, size as usize) {
            let end = offset + data.len() as u64;
            reply.data(&data);
            if file.continues_stream(offset, end) {
                let ahead = self.ahead_pool.clone();
                self.pool
                    .spawn(move || follow_stream(&file, &fetcher, &ahead, offset..end, prefetch));
            }
            return;
        }
        let ahead = self.ahead_pool.clone();
        self.pool.spawn(move || {
            match file
                .reader
                .read_at(&fetcher, &file.index, offset, size as usize)
            {
                Ok(data) => {
                    let end = offset + data.len() as u64;
                    reply.data(&data);
                    if file.continues_stream(offset, end) {
                        follow_stream(&file, &fetcher, &ahead, offset..end, prefetch);
                    }
                }
                Err(failed) => {
                    tracing::error!(
                        "read of {} at offset {} (chunk at {}): {}",
                        file.path,
                        offset,
                        failed.chunk_offset,
                        failed.error
                    );
                    reply.error(Errno::EIO);
                }
            }
        });
    }

    /// The read state of file `ino`, made on its first read.
    pub(super) fn read_state(&self, ino: u64) -> std::result::Result<Arc<OpenFile>, Errno> {
        if let Some(file) = self.read_states.lock().get(&ino) {
            return Ok(file.clone());
        }
        let entry = self.inodes.get(ino).ok_or(Errno::ENOENT)?;
        let Entry::Node {
            node, path, parent, ..
        } = &*entry
        else {
            return Err(Errno::EISDIR);
        };
        if node.kind != NodeKind::File {
            return Err(if node.kind == NodeKind::Dir {
                Errno::EISDIR
            } else {
                Errno::EINVAL
            });
        }
        let index = self.catalog.contents().index.clone();
        let reader = FileReader::new(&index, &node.content).map_err(|e| {
            tracing::error!("{path}: {e}");
            Errno::EIO
        })?;
        let file = Arc::new(OpenFile {
            reader,
            index,
            path: path.clone(),
            last_end: AtomicU64::new(0),
            prefetched_to: AtomicUsize::new(0),
            passed_to: AtomicUsize::new(0),
        });
        self.read_states.lock().put(ino, file.clone());
        // The first read of a file starts reading ahead of the walk, or keeps it going: waiting
        // for a second read measured 5 % slower for `cp -a` of linux/ (each file read before the
        // fetching starts is a round trip to a worker). A file manager opening one file fetches
        // the ones after it too.
        let missed = node
            .content
            .first()
            .is_some_and(|id| !self.fetcher.cache.has_or_coming(id));
        self.arrived_at(*parent, Some(ino), missed);
        Ok(file)
    }
}

/// A sequential reader has read `read`: drops the chunks it has passed by more than the slack
/// for stragglers (the kernel keeps them in its page cache; here they would only push out
/// what others still want, and a stream longer than the cache would empty it), and starts
/// fetching the `count` chunks after it that are neither cached nor on their way — no more than
/// a share of the cache, so a small cache is not filled by what lies ahead. The fetches run on
/// the read-ahead workers `pool`.
fn follow_stream(
    file: &OpenFile,
    fetcher: &Arc<Fetcher>,
    pool: &Workers,
    read: Range<u64>,
    count: usize,
) {
    let end = read.end;
    let behind = if read.start == 0 && end >= file.reader.size() {
        // The whole file in one reply (most files of a tree): no stragglers to wait for.
        file.reader.chunk_at(end)
    } else {
        file.reader.chunk_at(end.saturating_sub(STREAM_SLACK))
    };
    // Reads of the stream not recognised as its (arriving far out of order) are covered by the
    // next one that is.
    let passed = file.passed_to.swap(behind, Ordering::Relaxed);
    for id in file.reader.chunks(passed, behind) {
        fetcher.cache.forget(id);
    }
    if end >= file.reader.size() {
        return;
    }
    let next = file.reader.chunk_at(end) + 1;
    let upto = file.reader.run_end(
        next,
        count,
        (fetcher.cache.capacity() / STREAM_AHEAD_SHARE) as u64,
    );
    let from = file
        .prefetched_to
        .fetch_max(upto, Ordering::Relaxed)
        .max(next);
    // By pack in merged ranges, several reads in flight: enough bytes on their way to cover
    // a remote store's round trip. A failure is reported by the read that needs the chunk.
    for read in plan_reads(&fetcher.cache, &file.index, file.reader.chunks(from, upto)) {
        let fetcher = fetcher.clone();
        pool.spawn(move || read.run(&fetcher, |_, _| {}));
    }
}
