//! The packer: the tail of the ingest pipeline. It takes plaintext blobs from many threads,
//! drops those the repository or this run already has, seals the rest into packs of one kind,
//! verifies every finished pack from its final bytes, and hands it to uploader threads through a
//! bounded queue. After each pack is stored its blobs go into the pending index segment, which
//! is written every few packs and at the end.
//!
//! Guarantee: when [`Packer::finish`] returns `Ok`, every blob passed in is durably stored and
//! indexed (or was already). Any storage or verification error is sticky: later calls fail fast.

use crate::error::{Error, Result};
use crate::ingest::IngestLimits;
use crate::repo::blob::seal_blob;
use crate::repo::crypto::MasterKey;
use crate::repo::ids::{BlobId, BlobKind};
use crate::repo::index::{BlobLocation, Index, Segment, SegmentPack};
use crate::repo::pack::{FinishedPack, PackBuilder, pack_name, verify_pack};
use crate::repo::tree::{Node, Piece, Tree, split_nodes};
use crate::repo::{Repository, config::Params};
use crossbeam_channel::{Receiver, Sender, bounded};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

/// Counters of what the packer stored.
#[derive(Default)]
pub struct PackerStats {
    /// Blobs stored that the repository did not have.
    pub new_blobs: AtomicU64,
    /// Their plaintext bytes.
    pub new_bytes: AtomicU64,
    /// Pack bytes stored.
    pub stored_bytes: AtomicU64,
    /// Packs stored.
    pub packs: AtomicU64,
}

/// What a finished job stored.
#[derive(Clone, Copy, Debug, Default)]
pub struct PackerTotals {
    /// Blobs the repository did not have.
    pub new_blobs: u64,
    /// Their plaintext bytes.
    pub new_bytes: u64,
    /// Pack bytes stored.
    pub stored_bytes: u64,
    /// Packs stored.
    pub packs: u64,
}

/// Test hook: runs on every plaintext between hashing and sealing, to simulate memory
/// corruption there and prove the pre-upload check catches it.
pub type CorruptHook = Arc<dyn Fn(&mut Vec<u8>) + Send + Sync>;

/// How long [`Packer::locate`] waits for a shipped pack's upload.
const UPLOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

struct Shared {
    key: Arc<MasterKey>,
    repo: Arc<Repository>,
    error: Mutex<Option<Error>>,
    pending: Mutex<(Segment, usize)>,
    stats: PackerStats,
    limits: IngestLimits,
    dry_run: bool,
    /// Where each stored blob is, kept only when the job reads back what it wrote.
    locations: Option<Mutex<HashMap<BlobId, BlobLocation>>>,
}

impl Shared {
    fn fail(&self, error: Error) {
        self.error.lock().get_or_insert(error);
    }

    fn check(&self) -> Result<()> {
        match &*self.error.lock() {
            Some(e) => Err(Error::Invalid(format!(
                "stopped after an earlier error: {e}"
            ))),
            None => Ok(()),
        }
    }

    /// Stores one verified pack and records it for the index.
    fn store(&self, pack: FinishedPack) -> Result<()> {
        if !self.dry_run {
            self.repo.backend().put(&pack_name(&pack.id), &pack.bytes)?;
        }
        self.stats
            .stored_bytes
            .fetch_add(pack.bytes.len() as u64, Ordering::Relaxed);
        self.stats.packs.fetch_add(1, Ordering::Relaxed);
        if let Some(locations) = &self.locations {
            let mut locations = locations.lock();
            for entry in &pack.entries {
                locations.insert(
                    entry.id,
                    BlobLocation {
                        pack: pack.id,
                        entry: *entry,
                    },
                );
            }
        }
        let flush = {
            let mut pending = self.pending.lock();
            pending.0.packs.push(SegmentPack {
                pack: pack.id,
                blobs: pack.entries,
            });
            pending.1 += 1;
            if pending.1 >= self.limits.index_flush_packs {
                Some(std::mem::take(&mut *pending).0)
            } else {
                None
            }
        };
        match flush {
            Some(segment) => self.write_segment(&segment),
            None => Ok(()),
        }
    }

    fn write_segment(&self, segment: &Segment) -> Result<()> {
        if segment.packs.is_empty() || self.dry_run {
            return Ok(());
        }
        self.repo.save_index_segment(segment).map(drop)
    }
}

/// Dedupes, seals, packs, verifies and stores blobs for one ingest job.
pub struct Packer {
    shared: Arc<Shared>,
    index: Arc<Index>,
    seen: Mutex<HashSet<BlobId>>,
    builders: [Mutex<PackBuilder>; 2],
    params: Params,
    queue: Option<Sender<FinishedPack>>,
    uploaders: Vec<JoinHandle<()>>,
    corrupt_hook: Option<CorruptHook>,
}

fn slot(kind: BlobKind) -> usize {
    match kind {
        BlobKind::Data => 0,
        BlobKind::Tree => 1,
    }
}

impl Packer {
    /// A packer storing into `repo`, deduplicating against `index`.
    pub fn new(
        repo: Arc<Repository>,
        index: Arc<Index>,
        limits: IngestLimits,
        dry_run: bool,
    ) -> Packer {
        let params = repo.config().params.clone();
        let (tx, rx): (Sender<FinishedPack>, Receiver<FinishedPack>) = bounded(limits.queued_packs);
        let shared = Arc::new(Shared {
            key: repo.key().clone(),
            repo,
            error: Mutex::new(None),
            pending: Mutex::new((Segment::default(), 0)),
            stats: PackerStats::default(),
            limits: limits.clone(),
            dry_run,
            locations: limits.track_locations.then(|| Mutex::new(HashMap::new())),
        });
        let uploaders = (0..limits.parallel_uploads.max(1))
            .map(|_| {
                let rx = rx.clone();
                let shared = shared.clone();
                std::thread::spawn(move || {
                    for pack in rx {
                        // After a failure keep draining, so producers never block on a dead queue.
                        let healthy = shared.error.lock().is_none();
                        if healthy && let Err(e) = shared.store(pack) {
                            shared.fail(e);
                        }
                    }
                })
            })
            .collect();
        Packer {
            builders: [
                Mutex::new(PackBuilder::new(BlobKind::Data, params.pack_size as usize)),
                Mutex::new(PackBuilder::new(BlobKind::Tree, 0)),
            ],
            params,
            shared,
            index,
            seen: Mutex::new(HashSet::new()),
            queue: Some(tx),
            uploaders,
            corrupt_hook: None,
        }
    }

    /// Stores a directory's nodes as one tree blob, or as pieces under a small root when large.
    pub fn store_tree(&self, nodes: Vec<Node>) -> Result<BlobId> {
        let limit = self.params.tree_split_size as usize;
        let tree = Tree::Nodes(nodes);
        let bytes = tree.encode();
        if bytes.len() <= limit {
            return self.add(BlobKind::Tree, &bytes);
        }
        let Tree::Nodes(nodes) = tree else {
            unreachable!("built as nodes above")
        };
        let pieces = split_nodes(nodes, limit)
            .into_iter()
            .map(|piece| {
                let first_name = piece[0].name.clone();
                let tree = self.add(BlobKind::Tree, &Tree::Nodes(piece).encode())?;
                Ok(Piece { first_name, tree })
            })
            .collect::<Result<Vec<_>>>()?;
        self.add(BlobKind::Tree, &Tree::Pieces(pieces).encode())
    }

    /// Installs the test hook that corrupts plaintext between hashing and sealing.
    pub fn set_corrupt_hook(&mut self, hook: CorruptHook) {
        self.corrupt_hook = Some(hook);
    }

    /// The master key (for computing ids).
    pub fn key(&self) -> &MasterKey {
        &self.shared.key
    }

    /// What was stored so far.
    pub fn stats(&self) -> &PackerStats {
        &self.shared.stats
    }

    /// Whether the repository or this job already has `id`.
    pub fn is_known(&self, id: &BlobId) -> bool {
        self.index.contains(id) || self.seen.lock().contains(id)
    }

    /// Where a blob this job added is stored, so it can be read back before the job ends (the
    /// stage serves files just written). A blob still in an open pack has that pack shipped and
    /// its upload awaited. `None` for a blob this job never added. Needs
    /// [`IngestLimits::track_locations`].
    pub fn locate(&self, id: &BlobId) -> Result<Option<BlobLocation>> {
        let Some(locations) = &self.shared.locations else {
            return Ok(None);
        };
        if let Some(at) = locations.lock().get(id) {
            return Ok(Some(*at));
        }
        if !self.seen.lock().contains(id) {
            return Ok(None);
        }
        for (slot, kind) in [(0, BlobKind::Data), (1, BlobKind::Tree)] {
            let capacity = if kind == BlobKind::Data {
                self.params.pack_size as usize
            } else {
                0
            };
            let builder = std::mem::replace(
                &mut *self.builders[slot].lock(),
                PackBuilder::new(kind, capacity),
            );
            if !builder.is_empty() {
                self.ship(builder)?;
            }
        }
        let deadline = std::time::Instant::now() + UPLOAD_WAIT;
        loop {
            self.shared.check()?;
            if let Some(at) = locations.lock().get(id) {
                return Ok(Some(*at));
            }
            if std::time::Instant::now() > deadline {
                return Err(Error::Invalid(format!(
                    "blob {id} was not stored within {UPLOAD_WAIT:?}"
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    /// Stores `plaintext` unless it is already stored; returns its id.
    pub fn add(&self, kind: BlobKind, plaintext: &[u8]) -> Result<BlobId> {
        self.shared.check()?;
        let id = self.shared.key.blob_id(plaintext);
        if self.index.contains(&id) || !self.seen.lock().insert(id) {
            return Ok(id);
        }
        let sealed = match &self.corrupt_hook {
            Some(hook) => {
                let mut copy = plaintext.to_vec();
                hook(&mut copy);
                seal_blob(&self.shared.key, id, kind, &copy, self.params.compression)
            }
            None => seal_blob(
                &self.shared.key,
                id,
                kind,
                plaintext,
                self.params.compression,
            ),
        };
        self.shared.stats.new_blobs.fetch_add(1, Ordering::Relaxed);
        self.shared
            .stats
            .new_bytes
            .fetch_add(plaintext.len() as u64, Ordering::Relaxed);
        let target = match kind {
            BlobKind::Data => self.params.pack_size,
            BlobKind::Tree => self.params.tree_pack_size,
        } as usize;
        let full = {
            let mut builder = self.builders[slot(kind)].lock();
            builder.add(&sealed);
            if builder.len() >= target {
                let capacity = if kind == BlobKind::Data { target } else { 0 };
                Some(std::mem::replace(
                    &mut *builder,
                    PackBuilder::new(kind, capacity),
                ))
            } else {
                None
            }
        };
        if let Some(builder) = full {
            self.ship(builder)?;
        }
        Ok(id)
    }

    /// Finishes, verifies and queues one pack.
    fn ship(&self, builder: PackBuilder) -> Result<()> {
        let pack = builder.finish(&self.shared.key);
        if let Err(e) = verify_pack(&self.shared.key, &pack) {
            // The original error is kept for `finish`; callers here see the sticky stop.
            self.shared.fail(e);
            return self.shared.check();
        }
        let queue = self.queue.as_ref().expect("queue lives until finish");
        queue
            .send(pack)
            .map_err(|_| Error::Invalid("uploader threads stopped".into()))?;
        self.shared.check()
    }

    /// Stores what is still in the builders, waits for every upload, writes the last index
    /// segment. Only after this returns `Ok` may a snapshot reference the blobs. After a
    /// failure it returns the first error recorded (the cause), whatever other threads saw.
    pub fn finish(mut self) -> Result<PackerTotals> {
        let mut result = Ok(());
        for builder in &self.builders {
            let builder =
                std::mem::replace(&mut *builder.lock(), PackBuilder::new(BlobKind::Data, 0));
            if !builder.is_empty() && result.is_ok() {
                result = self.ship(builder);
            }
        }
        drop(self.queue.take());
        for handle in self.uploaders.drain(..) {
            if handle.join().is_err() {
                self.shared
                    .fail(Error::Invalid("an uploader thread panicked".into()));
            }
        }
        let segment = std::mem::take(&mut *self.shared.pending.lock()).0;
        // The first error recorded is the cause; later ones only say the job had stopped.
        let failed = self.shared.error.lock().take().or(result.err());
        if let Some(e) = failed {
            // Best effort: index the packs that did get stored, so a re-run re-uses them.
            let _ = self.shared.write_segment(&segment);
            return Err(e);
        }
        self.shared.write_segment(&segment)?;
        let stats = &self.shared.stats;
        Ok(PackerTotals {
            new_blobs: stats.new_blobs.load(Ordering::Relaxed),
            new_bytes: stats.new_bytes.load(Ordering::Relaxed),
            stored_bytes: stats.stored_bytes.load(Ordering::Relaxed),
            packs: stats.packs.load(Ordering::Relaxed),
        })
    }
}

impl Drop for Packer {
    fn drop(&mut self) {
        drop(self.queue.take());
        for handle in self.uploaders.drain(..) {
            let _ = handle.join();
        }
    }
}
