//! Chunking files while the copy runs: fanotify (as root) or inotify (in a user namespace,
//! [`super::dir_watch`]) reports each file of the overlay closed after writing, and a thread chunks, compresses, encrypts and packs it through the writer's
//! pipeline, so by the time the copy ends most of its content is stored.
//!
//! What it chunked is recorded by inode with the size, mtime and ctime the file had; the commit
//! uses a record only when the upper file still has all four ([`Records::content_of`]), and
//! chunks again whatever changed since. ctime is the kernel's and moves with every write,
//! truncate and attribute change, so a file changed again after it was chunked is never stored
//! as it was. rsync sets a file's mode, owner and times and renames it just after closing it,
//! each of which moves its ctime, so a file is chunked [`SETTLE`] after its close: by then
//! those are done and the record matches at commit.

use super::dir_watch::{Closed, DirWatches};
use super::namespace::Namespace;
use crate::error::{Error, Result};
use crate::ingest::chunker::ChunkerConfig;
use crate::ingest::content::{FileError, store_content};
use crate::ingest::packer::Packer;
use crate::repo::ids::BlobId;
use nix::fcntl::OFlag;
use nix::sys::fanotify::{EventFFlags, Fanotify, InitFlags, MarkFlags, MaskFlags};
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long after its close a file is chunked (see the module's comment).
const SETTLE: Duration = Duration::from_millis(50);
/// Closed files waiting to settle, each holding a descriptor; past this, reading events waits
/// (the kernel queues them).
const PENDING_FILES: usize = 512;
/// How often the thread looks for a stop while no event comes.
const POLL: Duration = Duration::from_millis(20);

/// A file's content as chunked, with the attributes it had then.
pub struct Chunked {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    /// The content ids, in order.
    pub content: Vec<BlobId>,
}

/// What the watcher chunked, by inode number.
#[derive(Default)]
pub struct Records {
    by_inode: Mutex<HashMap<u64, Chunked>>,
}

impl Records {
    /// The content recorded for a file with these attributes, if the file has not changed since.
    pub fn content_of(&self, meta: &std::fs::Metadata) -> Option<Vec<BlobId>> {
        let records = self.by_inode.lock();
        let record = records.get(&meta.ino())?;
        let same = record.size == meta.size()
            && record.mtime == (meta.mtime(), meta.mtime_nsec())
            && record.ctime == (meta.ctime(), meta.ctime_nsec());
        same.then(|| record.content.clone())
    }

    /// Forgets every record: after lost events, none can be trusted to be the latest.
    fn clear(&self) {
        self.by_inode.lock().clear();
    }
}

/// The thread chunking closed files; [`Watcher::stop`] ends it.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// What the watching thread works with.
pub struct Chunking {
    /// Where content goes.
    pub packer: Arc<Packer>,
    /// How content is cut.
    pub chunker: ChunkerConfig,
    /// Bytes of a file read at a time.
    pub read_batch: usize,
    /// Where results go.
    pub records: Arc<Records>,
}

/// Where closed files are reported from.
enum Source {
    /// fanotify on the whole mount (root): each event carries a descriptor of the file.
    Mount(Fanotify),
    /// inotify on every directory (a user namespace, where fanotify cannot watch a mount).
    Dirs(DirWatches),
}

impl Source {
    /// Opens the source for the overlay mounted on `target`.
    fn open(target: &Path, namespace: Namespace) -> Result<Source> {
        let fail = |what: &str, e: nix::Error| {
            Error::Invalid(format!("watching {} ({what}): {e}", target.display()))
        };
        if namespace == Namespace::User {
            let dirs = DirWatches::new(target).map_err(|e| fail("inotify", e))?;
            return Ok(Source::Dirs(dirs));
        }
        let group = Fanotify::init(
            InitFlags::FAN_CLASS_NOTIF
                | InitFlags::FAN_CLOEXEC
                | InitFlags::FAN_NONBLOCK
                | InitFlags::FAN_UNLIMITED_QUEUE,
            // Non-blocking: opening a fifo someone closed after writing must not wait for a
            // writer.
            EventFFlags::try_from(
                OFlag::O_RDONLY | OFlag::O_LARGEFILE | OFlag::O_NOATIME | OFlag::O_NONBLOCK,
            )
            .map_err(|e| fail("flags", e))?,
        )
        .map_err(|e| fail("fanotify_init", e))?;
        group
            .mark(
                MarkFlags::FAN_MARK_ADD | MarkFlags::FAN_MARK_MOUNT,
                MaskFlags::FAN_CLOSE_WRITE,
                nix::fcntl::AT_FDCWD,
                Some(target),
            )
            .map_err(|e| fail("fanotify_mark", e))?;
        Ok(Source::Mount(group))
    }

    /// Adds what happened since the last call to `out`; false once nothing more is queued.
    fn read(&mut self, out: &mut Vec<Closed>) -> Result<bool> {
        let failed = |e: nix::Error| Error::Invalid(format!("reading file events: {e}"));
        let group = match self {
            Source::Dirs(dirs) => return dirs.read(out).or_else(interrupted).map_err(failed),
            Source::Mount(group) => group,
        };
        let events = match group.read_events() {
            Ok(events) => events,
            Err(nix::Error::EAGAIN) => return Ok(false),
            Err(e) => return interrupted(e).map_err(failed),
        };
        for event in &events {
            match event.fd() {
                // The queue overflowed: some closes went unreported.
                None => out.push(Closed::Lost),
                Some(fd) => {
                    if let Ok(owned) = fd.try_clone_to_owned() {
                        out.push(Closed::File(File::from(owned)));
                    }
                }
            }
        }
        Ok(!events.is_empty())
    }
}

/// An interrupted read is read again.
fn interrupted(e: nix::Error) -> nix::Result<bool> {
    match e {
        nix::Error::EINTR => Ok(true),
        e => Err(e),
    }
}

impl Watcher {
    /// Watches the overlay mounted on `target` (in `namespace`).
    pub fn start(target: &Path, namespace: Namespace, chunking: Chunking) -> Result<Watcher> {
        let mut source = Source::open(target, namespace)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("cairn-chunk".into())
            .spawn(move || {
                if let Source::Dirs(dirs) = &mut source {
                    dirs.watch_existing();
                }
                if let Err(e) = watch(&mut source, &chunking, &stopping) {
                    // Nothing is lost: the commit stores what was not recorded.
                    tracing::error!("stage: storing files as they are closed stopped: {e}");
                }
            })
            .map_err(|e| Error::Invalid(format!("starting the chunking thread: {e}")))?;
        Ok(Watcher { stop, thread })
    }

    /// Ends the thread at once, the file it reads abandoned and the files waiting dropped: the
    /// commit stores whatever has no record.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        if self.thread.join().is_err() {
            tracing::error!("stage: the chunking thread panicked");
        }
    }
}

/// The thread's loop: reads events into a queue of settling files and chunks each once settled,
/// until told to stop.
fn watch(source: &mut Source, chunking: &Chunking, stop: &AtomicBool) -> Result<()> {
    let mut pending: VecDeque<(Instant, Closed)> = VecDeque::new();
    let mut closed = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        while pending.len() < PENDING_FILES && source.read(&mut closed)? {
            let now = Instant::now();
            for file in closed.drain(..) {
                match file {
                    Closed::Lost => chunking.records.clear(),
                    file => pending.push_back((now, file)),
                }
            }
        }
        match pending.front() {
            Some((at, _)) if at.elapsed() >= SETTLE || pending.len() >= PENDING_FILES => {
                std::thread::sleep(SETTLE.saturating_sub(at.elapsed()));
                if let Some((file, again)) =
                    pending.pop_front().and_then(|(_, closed)| closed.open())
                {
                    chunk(&file, again, chunking, stop)?;
                }
            }
            Some((at, _)) => std::thread::sleep(SETTLE.saturating_sub(at.elapsed()).min(POLL)),
            None => std::thread::sleep(POLL),
        }
    }
    Ok(())
}

/// Reads a file until told to stop.
struct Stoppable<'a> {
    file: &'a File,
    stop: &'a AtomicBool,
}

impl std::io::Read for Stoppable<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.stop.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("the stage is committing"));
        }
        self.file.read(buf)
    }
}

/// Chunks the file an event reports (`again`: it may have been reported before) and records it,
/// unless it changed while read or is not a regular file on an overlay. A repository error ends
/// the watch (the commit reports it).
fn chunk(file: &File, again: bool, chunking: &Chunking, stop: &AtomicBool) -> Result<()> {
    let Ok(before) = file.metadata() else {
        return Ok(());
    };
    // Not a file, or not on an overlay: a path the copy changed under the watcher led outside
    // the stage (a file elsewhere is never read, and its inode number never recorded).
    let on_overlay = nix::sys::statfs::fstatfs(file)
        .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::OVERLAYFS_SUPER_MAGIC);
    if !before.is_file() || !on_overlay {
        return Ok(());
    }
    // Reported again (renamed after its close) with nothing changed since it was chunked. A
    // close is always chunked: on a kernel with coarse timestamps a rewrite of the same size
    // may leave all three as they were.
    if again && chunking.records.content_of(&before).is_some() {
        return Ok(());
    }
    let stored = store_content(
        &chunking.chunker,
        &chunking.packer,
        Stoppable { file, stop },
        before.size(),
        chunking.read_batch,
    );
    let (content, read) = match stored {
        Ok(done) => done,
        Err(FileError::Local(_)) => return Ok(()),
        Err(FileError::Repo(e)) => return Err(e),
    };
    let Ok(after) = file.metadata() else {
        return Ok(());
    };
    let unchanged = read == after.size()
        && after.size() == before.size()
        && (after.mtime(), after.mtime_nsec()) == (before.mtime(), before.mtime_nsec())
        && (after.ctime(), after.ctime_nsec()) == (before.ctime(), before.ctime_nsec());
    let mut records = chunking.records.by_inode.lock();
    if unchanged {
        records.insert(
            after.ino(),
            Chunked {
                size: read,
                mtime: (after.mtime(), after.mtime_nsec()),
                ctime: (after.ctime(), after.ctime_nsec()),
                content,
            },
        );
    } else {
        records.remove(&after.ino());
    }
    Ok(())
}
