//! Closed files of a stage in a user namespace, from inotify. fanotify cannot watch a mount
//! there, and inotify watches one directory at a time: every directory of the stage is watched,
//! the parent's from the start and those the copy makes as it makes them.
//!
//! Nothing depends on an event arriving: a file closed in a directory before its watch was
//! added, a directory past the watch limit or a queue overflow only means the commit chunks
//! that file itself ([`super::upper`]). Files are opened by path, which the copy may have
//! changed meanwhile: whatever is opened must be on the overlay ([`super::watch`] checks).

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Directories watched at most: each holds its path in memory and a kernel watch. Never more
/// than half the user's watches (`fs.inotify.max_user_watches`), which other programs need too,
/// and the parent's directories only half of that: those the copy makes come first.
const WATCHED_DIRS: usize = 65_536;

/// What a directory's watch reports: files closed after writing, files renamed into it (rsync
/// closes a file under a temporary name and renames it at once, so the close may be reported
/// after the name is gone), and directories made in it, to watch in turn.
const MASK: AddWatchFlags = AddWatchFlags::IN_CLOSE_WRITE
    .union(AddWatchFlags::IN_MOVED_TO)
    .union(AddWatchFlags::IN_CREATE)
    .union(AddWatchFlags::IN_ONLYDIR)
    .union(AddWatchFlags::IN_DONT_FOLLOW);

/// Files found in a directory the copy made, before its watch was added, at most.
const SCANNED_FILES: usize = 512;

/// A file the copy closed, or the news that some went unreported.
pub enum Closed {
    /// The file, opened just after its close was reported.
    File(File),
    /// A file renamed into a watched directory, opened just after: rsync renames each file it
    /// closed a moment before, so this is usually a second report of the same content.
    Renamed(File),
    /// A file found in a directory when its watch was added (the copy may have closed it
    /// before), opened when chunked.
    Found(PathBuf),
    /// Events were lost: no record can be trusted to be the latest.
    Lost,
}

impl Closed {
    /// The file to chunk, if it can still be opened, and whether it may be one already chunked
    /// since its last close (then a record that still matches it stands).
    pub fn open(self) -> Option<(File, bool)> {
        match self {
            Closed::File(file) => Some((file, false)),
            Closed::Renamed(file) => Some((file, true)),
            Closed::Found(path) => open_closed(&path).ok().map(|file| (file, true)),
            Closed::Lost => None,
        }
    }
}

/// inotify watches on a stage's directories.
pub struct DirWatches {
    inotify: Inotify,
    /// The path of each watched directory.
    dirs: HashMap<WatchDescriptor, PathBuf>,
    /// Watches this user's programs may hold in all (the kernel's limit), if known.
    limit: usize,
    /// No more watches can be added now (our limit or the kernel's).
    full: bool,
}

impl DirWatches {
    /// Watches the stage's top directory.
    pub fn new(top: &Path) -> nix::Result<DirWatches> {
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)?;
        let wd = inotify.add_watch(top, MASK)?;
        let dirs = HashMap::from([(wd, top.to_path_buf())]);
        let kernel = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
            .ok()
            .and_then(|n| n.trim().parse::<usize>().ok())
            .unwrap_or(8_192);
        Ok(DirWatches {
            inotify,
            dirs,
            limit: WATCHED_DIRS.min(kernel / 2),
            full: false,
        })
    }

    /// Watches every directory below the top one that exists now (the parent's).
    pub fn watch_existing(&mut self) {
        let whole = self.limit;
        self.limit = whole / 2;
        let top: Vec<PathBuf> = self.dirs.values().cloned().collect();
        for dir in top {
            self.watch_below(dir, None);
        }
        self.limit = whole;
        self.full = false;
    }

    /// Watches the directories below `dir` (itself watched). With `found`, the files there are
    /// added to it: a directory the copy just made may hold files it closed before the watch.
    fn watch_below(&mut self, dir: PathBuf, mut found: Option<&mut Vec<Closed>>) {
        let mut scanned = 0;
        let mut queue = VecDeque::from([dir]);
        while let Some(dir) = queue.pop_front() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                let path = entry.path();
                if kind.is_dir() {
                    if self.watch(&path) {
                        queue.push_back(path);
                    }
                } else if let Some(found) = found.as_deref_mut()
                    && kind.is_file()
                    && scanned < SCANNED_FILES
                {
                    scanned += 1;
                    found.push(Closed::Found(path));
                }
            }
        }
    }

    /// Adds a watch on `dir`; false if none was added.
    fn watch(&mut self, dir: &Path) -> bool {
        if self.full || self.dirs.len() >= self.limit {
            self.full = true;
            return false;
        }
        match self.inotify.add_watch(dir, MASK) {
            Ok(wd) => {
                self.dirs.insert(wd, dir.to_path_buf());
                true
            }
            Err(nix::Error::ENOSPC) => {
                tracing::debug!("stage: no more inotify watches; the commit chunks the rest");
                self.full = true;
                false
            }
            Err(_) => false,
        }
    }

    /// Adds what happened since the last call to `out`; false once nothing more is queued.
    pub fn read(&mut self, out: &mut Vec<Closed>) -> nix::Result<bool> {
        let events = match self.inotify.read_events() {
            Ok(events) => events,
            Err(nix::Error::EAGAIN) => return Ok(false),
            Err(e) => return Err(e),
        };
        for event in events {
            if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                out.push(Closed::Lost);
                continue;
            }
            if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                // A watched directory went away: its watch is free again.
                self.dirs.remove(&event.wd);
                self.full = false;
                continue;
            }
            let (Some(dir), Some(name)) = (self.dirs.get(&event.wd), event.name) else {
                continue;
            };
            let path = dir.join(name);
            if event.mask.contains(AddWatchFlags::IN_ISDIR) {
                if self.watch(&path) {
                    self.watch_below(path, Some(out));
                }
            } else if event.mask.contains(AddWatchFlags::IN_CLOSE_WRITE)
                && let Ok(file) = open_closed(&path)
            {
                out.push(Closed::File(file));
            } else if event.mask.contains(AddWatchFlags::IN_MOVED_TO)
                && let Ok(file) = open_closed(&path)
            {
                out.push(Closed::Renamed(file));
            }
        }
        Ok(true)
    }
}

/// Opens a closed file to chunk: never through a link, never waiting (a fifo).
fn open_closed(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
}
