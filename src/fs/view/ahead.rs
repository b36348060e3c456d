//! Reading ahead of a walk through a snapshot: `cp -a`, `rsync`, `tar` and a file manager's
//! thumbnailer read a directory's files in order, then go on to the next directory in tree
//! order — the order the backup stored them in, so the next files lie next to each other in the
//! same packs. From the first file read, the view plans the files that come next in tree order
//! (into subdirectories, then on past the directory's end) up to a share of the cache, and reads
//! them by pack in merged ranges ([`crate::fetch::batch`]), several reads in flight. Each time
//! the walk reaches a directory the plan entered, the plan is kept a full share ahead of it.
//!
//! Chunks of files the kernel already knows go straight into its page cache
//! ([`crate::fs::kernel_pages`]); the others wait in the view's cache, where their reads are
//! answered without a round trip. Only trees already parsed are walked: the trees below a
//! listed directory are fetched ahead on their own ([`super::trees`]), and a plan that reaches
//! one not yet here waits for the walk to arrive there.

use super::trees::{Children, fetch_below};
use super::*;
use crate::fetch::batch::plan_reads;
use std::collections::{HashMap, HashSet};

/// The share of the cache a plan keeps ahead of the walk.
const AHEAD_SHARE: usize = 8;
/// Directories remembered as planned, across plans.
const DONE_DIRS: usize = 1 << 16;
/// What each node a plan passes counts against its share besides its bytes: a snapshot of
/// millions of empty files or directories (one tree a crafted repository repeats) is walked a
/// share at a time like any other, not to its end under the plan's lock.
const NODE_COST: u64 = 512;

/// The plan of what a walk reads next.
#[derive(Default)]
pub(super) struct ReadAhead {
    snapshot: Option<SnapshotId>,
    /// Where the plan stopped: the directories it is walking, deepest last.
    cursor: Vec<Frame>,
    /// Plaintext bytes planned since the plan started.
    planned: u64,
    /// Directories the plan entered, with `planned` when it did: a walk arriving at one tells
    /// how far it has got.
    marks: HashMap<u64, u64>,
    /// The directory whose tree the plan waits for.
    waiting_at: Option<u64>,
    /// Directories whose cached chunks were offered to the kernel once the walk read there.
    offered: HashSet<u64>,
    /// The file whose first read started the plan: its reads fetch it (and follow its stream),
    /// and the kernel keeps what they return.
    reading: Option<u64>,
    /// Directories whose files a plan (this one or an earlier) has read ahead: `cp -a` goes
    /// through a directory's entries in the order of their inode numbers, so a new plan often
    /// starts in a directory an earlier one covered, whose chunks the kernel holds now (and the
    /// cache has let go). Their files are passed over, not read again.
    done: Option<LruCache<u64, ()>>,
}

impl ReadAhead {
    /// Records that the plan enters directory `dir`; true when its files are still to be read.
    fn enter(&mut self, dir: u64) -> bool {
        let done = self.done.get_or_insert_with(|| {
            LruCache::new(NonZeroUsize::new(DONE_DIRS).expect("a non-zero constant"))
        });
        done.put(dir, ()).is_none()
    }
}

struct Frame {
    ino: u64,
    children: Children,
    next: usize,
    /// Whether the directory's files are to be read (not done by an earlier plan).
    files: bool,
}

/// A chunk planned: the bytes of file `ino` (of `size` bytes) at `offset`.
struct Planned {
    id: BlobId,
    ino: u64,
    offset: u64,
    size: u64,
    /// The kernel has an inode for the file, so can keep the bytes in its page cache.
    known: bool,
}

impl View {
    /// The walk has arrived at directory `dir`: listing it, or `reading` one of its files (this
    /// inode) for the first time, `missed` when its first chunk is neither cached nor on its way
    /// (what was read ahead there was let go before the walk came, or nothing was). A walk the
    /// plan foresaw keeps the plan a share ahead; a file read elsewhere starts a new plan at the
    /// start of its directory (`cp -a` reads a directory's entries in the order of their inode
    /// numbers, which is not the order of their names). A listing alone never starts one
    /// (`find` and `ls -R` read no file).
    pub(super) fn arrived_at(&self, dir: u64, reading: Option<u64>, missed: bool) {
        let budget = (self.fetcher.cache.capacity() / AHEAD_SHARE) as u64;
        let mut guard = self.ahead.lock();
        let ahead = &mut *guard;
        let mark = match ahead.marks.get(&dir) {
            // A planned directory whose chunks are gone is planned again, from its start.
            _ if missed => None,
            Some(&mark) => Some(mark),
            None if ahead.waiting_at == Some(dir) => Some(ahead.planned),
            None => None,
        };
        if let (Some(_), Some(file)) = (mark, reading)
            && ahead.offered.insert(dir)
        {
            self.offer_cached(dir, file, budget);
        }
        match (mark, reading) {
            (Some(mark), _) => {
                if ahead.planned >= mark.saturating_add(budget / 2) {
                    return;
                }
                ahead.marks.retain(|_, at| *at >= mark);
                let marks = &ahead.marks;
                ahead.offered.retain(|dir| marks.contains_key(dir));
                let until = mark.saturating_add(budget);
                self.extend(ahead, until);
            }
            (None, Some(file)) => {
                let Some(started) = self.plan_from(dir, file) else {
                    return;
                };
                let mut done = ahead.done.take();
                if let Some(done) = done.as_mut() {
                    done.pop(&dir);
                }
                *ahead = started;
                ahead.done = done;
                let files = ahead.enter(dir);
                if let Some(frame) = ahead.cursor.last_mut() {
                    frame.files = files;
                }
                self.extend(ahead, budget);
            }
            (None, None) => {}
        }
    }

    /// Offers the kernel the cached chunks of directory `dir`'s files: the plan read them before
    /// the kernel knew the files (it learns them from the listing), and a chunk in the kernel's
    /// page cache is a read that never reaches the view. File `reading` is left to its reads;
    /// entries past what a plan's `budget` passes are not looked at.
    fn offer_cached(&self, dir: u64, reading: u64, budget: u64) {
        let Some(entry) = self.inodes.get(dir) else {
            return;
        };
        let Entry::Node { snapshot, node, .. } = &*entry else {
            return;
        };
        let Some(children) = node.subtree.and_then(|t| self.trees.peek(&t)) else {
            return;
        };
        let index = self.catalog.contents().index.clone();
        let passed = usize::try_from(budget / NODE_COST).unwrap_or(usize::MAX);
        for (i, file) in children.iter().enumerate().take(passed) {
            if file.kind != NodeKind::File || !offerable(file) {
                continue;
            }
            let ino = node_child_ino(dir, i, snapshot, file);
            if ino == reading || self.inodes.get(ino).is_none() {
                continue;
            }
            let mut offset = 0u64;
            for id in &file.content {
                let (Some(at), Some(plain)) = (index.get(id), self.fetcher.cache.get(id)) else {
                    break;
                };
                self.kernel_pages.offer(ino, offset, *id, plain, file.size);
                offset += u64::from(at.entry.raw_len);
            }
        }
    }

    /// A plan starting at directory `dir`, whose file `reading` is being read.
    fn plan_from(&self, dir: u64, reading: u64) -> Option<ReadAhead> {
        let entry = self.inodes.get(dir)?;
        let Entry::Node { snapshot, node, .. } = &*entry else {
            return None;
        };
        let children = self.trees.peek(&node.subtree?)?;
        let mut plan = ReadAhead {
            snapshot: Some(*snapshot),
            reading: Some(reading),
            ..ReadAhead::default()
        };
        plan.marks.insert(dir, 0);
        plan.offered.insert(dir);
        plan.cursor.push(Frame {
            ino: dir,
            children,
            next: 0,
            files: true,
        });
        Some(plan)
    }

    /// Walks the plan on until `until` bytes are planned, the snapshot ends or a tree is not
    /// here yet, and starts reading what it planned.
    fn extend(&self, ahead: &mut ReadAhead, until: u64) {
        let Some(snapshot) = ahead.snapshot else {
            return;
        };
        let per_file = until.saturating_sub(ahead.planned) / 2;
        let index = self.catalog.contents().index.clone();
        let mut wanted = Vec::new();
        ahead.waiting_at = None;
        while ahead.planned < until {
            ahead.planned = ahead.planned.saturating_add(NODE_COST);
            let Some(frame) = ahead.cursor.last_mut() else {
                break;
            };
            let Some(child) = frame.children.get(frame.next).cloned() else {
                let done = ahead.cursor.pop().expect("a frame was there");
                if ahead.cursor.is_empty()
                    && let Some(mut up) = self.frame_above(done.ino, &snapshot)
                {
                    up.files = ahead.enter(up.ino);
                    ahead.cursor.push(up);
                }
                continue;
            };
            let ino = node_child_ino(frame.ino, frame.next, &snapshot, &child);
            match child.kind {
                NodeKind::Dir => {
                    let children = match child.subtree {
                        None => Some(Arc::new(Vec::new())),
                        Some(tree) => self.trees.peek(&tree),
                    };
                    let Some(children) = children else {
                        ahead.waiting_at = Some(ino);
                        self.fetch_trees_below(child.subtree.into_iter().collect());
                        break;
                    };
                    frame.next += 1;
                    ahead.marks.insert(ino, ahead.planned);
                    let files = ahead.enter(ino);
                    ahead.cursor.push(Frame {
                        ino,
                        children,
                        next: 0,
                        files,
                    });
                }
                // Counted as covered: a plan over directories done before moves on through
                // them by their size, not node by node to the end of the snapshot.
                NodeKind::File if !frame.files || Some(ino) == ahead.reading => {
                    frame.next += 1;
                    ahead.planned = ahead.planned.saturating_add(child.size);
                }
                NodeKind::File => {
                    frame.next += 1;
                    let known = offerable(&child) && self.inodes.get(ino).is_some();
                    let (mut offset, mut taken) = (0u64, 0u64);
                    for id in &child.content {
                        let Some(at) = index.get(id) else {
                            break;
                        };
                        if taken >= per_file {
                            break;
                        }
                        let len = u64::from(at.entry.raw_len);
                        wanted.push(Planned {
                            id: *id,
                            ino,
                            offset,
                            size: child.size,
                            known,
                        });
                        offset += len;
                        taken += len;
                    }
                    ahead.planned = ahead.planned.saturating_add(taken);
                }
                _ => frame.next += 1,
            }
        }
        self.read_planned(wanted);
    }

    /// The frame that goes on past directory `ino` in its parent, when the kernel still knows
    /// both and the parent is a directory of the same snapshot.
    fn frame_above(&self, ino: u64, snapshot: &SnapshotId) -> Option<Frame> {
        let entry = self.inodes.get(ino)?;
        let Entry::Node { parent, node, .. } = &*entry else {
            return None;
        };
        let parent_entry = self.inodes.get(*parent)?;
        let Entry::Node {
            snapshot: theirs,
            node: parent_node,
            ..
        } = &*parent_entry
        else {
            return None;
        };
        if theirs != snapshot {
            return None;
        }
        let children = self.trees.peek(&parent_node.subtree?)?;
        let at = children
            .binary_search_by(|c| c.name.as_slice().cmp(&node.name))
            .ok()?;
        Some(Frame {
            ino: *parent,
            children,
            next: at + 1,
            files: true,
        })
    }

    /// Reads the planned chunks by pack on the read-ahead workers, offering each to
    /// the kernel for the files it knows; chunks already cached are offered at once.
    fn read_planned(&self, wanted: Vec<Planned>) {
        let mut files: HashMap<BlobId, Vec<Planned>> = HashMap::new();
        let mut ids = Vec::with_capacity(wanted.len());
        for chunk in wanted {
            if let Some(plain) = self.fetcher.cache.get(&chunk.id) {
                if chunk.known {
                    self.kernel_pages
                        .offer(chunk.ino, chunk.offset, chunk.id, plain, chunk.size);
                }
                continue;
            }
            ids.push(chunk.id);
            if chunk.known {
                files.entry(chunk.id).or_default().push(chunk);
            }
        }
        let index = self.catalog.contents().index.clone();
        let files = Arc::new(files);
        for read in plan_reads(&self.fetcher.cache, &index, &ids) {
            let (fetcher, kernel, files) = (
                self.fetcher.clone(),
                self.kernel_pages.clone(),
                files.clone(),
            );
            self.ahead_pool.spawn_ahead(move || {
                read.run(&fetcher, |id, plain| {
                    for file in files.get(id).into_iter().flatten() {
                        kernel.offer(file.ino, file.offset, *id, plain.clone(), file.size);
                    }
                });
            });
        }
    }

    /// Fetches the trees `level` and those below them ahead of a walk, on a worker.
    pub(super) fn fetch_trees_below(&self, level: Vec<BlobId>) {
        if level.is_empty() {
            return;
        }
        let (fetcher, trees) = (self.fetcher.clone(), self.trees.clone());
        let index = self.catalog.contents().index.clone();
        let budget = self.fetcher.cache.capacity() / AHEAD_SHARE;
        let parallel = self.opts.read_workers;
        self.ahead_pool.spawn(move || {
            fetch_below(&fetcher, &index, &trees, level, budget, parallel);
        });
    }
}

/// Whether a file's read-ahead chunks may go into the kernel's page cache before it asks. Not
/// those of hard-linked files: they share one inode number, and the backup read each link on
/// its own, so two links may hold different bytes (a file changed between the reads, or a tree
/// written by a liar) — their pages are only ever what a read of the link returned.
fn offerable(file: &Node) -> bool {
    file.links <= 1
}
