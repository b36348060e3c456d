//! The packer: the tail of the ingest pipeline. It takes plaintext blobs from many threads,
//! drops those the repository or this run already has, seals the rest (on the caller's thread,
//! or on background sealer threads when the caller must not wait: the stage answers the kernel
//! from its FUSE threads) into packs of one kind,
//! verifies every finished pack from its final bytes, and hands it to uploader threads through a
//! bounded queue. After each pack is stored its blobs go into the pending index segment, which
//! is written every few packs and at the end.
//!
//! Guarantee: when [`Packer::finish`] returns `Ok`, every blob passed in is durably stored and
//! indexed (or was already). Any storage or verification error is sticky: later calls fail fast.

use crate::error::{Error, Result};
use crate::ingest::IngestLimits;
use crate::ingest::dictionary_choice::{Admit, DictionaryChoice, Held, pick_dictionary};
use crate::ingest::groups::{Gathered, Groups};
use crate::ingest::level::{Level, dictionary_level};
use crate::ingest::sample::SampleRules;
use crate::ingest::sealers::{SealJob, Sealers};
use crate::repo::blob::{
    Compression, MAX_GROUP_LEN, SealedBlob, SealedGroup, seal_blob, seal_group,
};
use crate::repo::crypto::MasterKey;
use crate::repo::dictionary::Dictionary;
use crate::repo::ids::{BlobId, BlobKind, PackId};
use crate::repo::index::{BlobLocation, Index, MAX_SEGMENT_BLOBS, Segment, SegmentPack};
use crate::repo::pack::{FinishedPack, PackBuilder, pack_name, verify_pack};
use crate::repo::parity::{self, parity_name};
use crate::repo::tree::{Node, Piece, Tree, split_nodes};
use crate::repo::witness::Witness;
use crate::repo::{Repository, config::Params};
use crossbeam_channel::{Receiver, Sender, bounded};
use parking_lot::Mutex;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
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
    /// The highest zstd level the job compressed at (above the repository's only under
    /// `--compression auto` with a store slower than the compression).
    pub top_level: i32,
}

/// Test hook: runs on every plaintext between hashing and sealing, to simulate memory
/// corruption there and prove the pre-upload check catches it.
pub type CorruptHook = Arc<dyn Fn(&mut Vec<u8>) + Send + Sync>;

/// How long [`Packer::locate`] waits, with nothing uploading, before it ships the open packs
/// again.
const RESHIP_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

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
    corrupt_hook: OnceLock<CorruptHook>,
    /// Which dictionary small data blobs get.
    choice: DictionaryChoice,
    /// The level blobs are compressed at.
    level: Level,
    /// Packs shipped to the uploaders and not yet stored (or dropped after a failure).
    uploading: AtomicU64,
    /// The solid group small data blobs are gathered into.
    groups: Groups,
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
            // The parity first: a pack is never stored without it, and a job stopped between
            // the two leaves only a parity object without a pack, which prune removes.
            if self.repo.config().params.parity() {
                let kind = pack.entries.first().map_or(BlobKind::Data, |e| e.kind);
                let parity = parity::for_pack(&pack.bytes, &pack.id, kind)?;
                self.repo.backend().put(&parity_name(&pack.id), &parity)?;
            }
            self.repo.backend().put(&pack_name(&pack.id), &pack.bytes)?;
            tracing::debug!(
                "stored pack {} with {:?}",
                pack.id.short(),
                pack.entries
                    .iter()
                    .map(|e| e.id.short())
                    .collect::<Vec<_>>()
            );
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
            let blobs: usize = pending.0.packs.iter().map(|p| p.blobs.len()).sum();
            if pending.1 >= self.limits.index_flush_packs || blobs >= MAX_SEGMENT_BLOBS {
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

    /// How to compress with `dictionary` (or alone) at the job's level now.
    fn compression<'d>(&self, dictionary: Option<&'d Dictionary>) -> Compression<'d> {
        let level = self.level.now();
        Compression {
            level: match dictionary {
                Some(_) => dictionary_level(level),
                None => level,
            },
            dictionary,
        }
    }

    /// `plaintext`, through the test hook that corrupts it when one is installed.
    fn hooked<'p>(&self, plaintext: &'p [u8]) -> Cow<'p, [u8]> {
        match self.corrupt_hook.get() {
            Some(hook) => {
                let mut copy = plaintext.to_vec();
                hook(&mut copy);
                Cow::Owned(copy)
            }
            None => Cow::Borrowed(plaintext),
        }
    }

    /// Compresses and encrypts one blob whose id was computed from `plaintext`.
    fn seal(
        &self,
        kind: BlobKind,
        id: BlobId,
        plaintext: &[u8],
        dictionary: Option<&Dictionary>,
    ) -> SealedBlob {
        let how = self.compression(dictionary);
        seal_blob(&self.key, id, kind, &self.hooked(plaintext), how)
    }

    /// Compresses and encrypts a gathered solid group.
    fn seal_group(&self, group: &Gathered) -> SealedGroup {
        let how = self.compression(group.dictionary.as_deref());
        seal_group(&self.key, &group.plaintext, how)
    }

    /// Seals a blob into `sink` — a small data blob into the solid group being gathered, which
    /// is sealed into `sink` once full.
    fn pack(
        &self,
        sink: &Sink,
        kind: BlobKind,
        id: BlobId,
        witness: Witness,
        plaintext: &[u8],
        dictionary: Option<Arc<Dictionary>>,
    ) -> Result<()> {
        if !self.groups.joins(kind, plaintext.len()) {
            return sink.append(
                &self.seal(kind, id, plaintext, dictionary.as_deref()),
                witness,
            );
        }
        match self
            .groups
            .add(id, witness, &self.hooked(plaintext), dictionary)
        {
            Some(full) => sink.append_group(full),
            None => Ok(()),
        }
    }

    /// Seals one blob into `sink`, or holds it for the dictionary choice. `witness` is what was
    /// noted while its id was computed.
    fn take(
        &self,
        sink: &Sink,
        kind: BlobKind,
        id: BlobId,
        witness: Witness,
        plaintext: Cow<[u8]>,
    ) -> Result<()> {
        match self.choice.admit(kind, id, witness, plaintext) {
            Admit::Seal(dictionary, plaintext) => {
                self.pack(sink, kind, id, witness, &plaintext, dictionary)
            }
            Admit::Held => Ok(()),
            Admit::Decide(sample) => self.decide(sink, sample),
        }
    }

    /// Chooses the dictionary on `sample`, then seals the sample and what was held meanwhile.
    /// Whatever happens — a failure to choose, to seal, or a panic — every held blob is sealed
    /// or the job is failed, and waiters are released.
    fn decide(&self, sink: &Sink, sample: Vec<Held>) -> Result<()> {
        let release = ReleaseOnDrop(self);
        // A job that has failed stores nothing more, a dictionary least of all.
        let dictionary = match self.check() {
            Ok(()) => pick_dictionary(
                &self.repo,
                &self.choice,
                &sample,
                self.level.now(),
                !self.dry_run,
                self.limits.dictionary_sample,
            )
            .unwrap_or_else(|e| {
                tracing::warn!("no compression dictionary for this job: {e}");
                None
            }),
            Err(_) => None,
        };
        let held = self.choice.chosen(dictionary.clone());
        let sealed = sample.iter().chain(&held).try_for_each(|blob| {
            self.check()?;
            let (kind, id, witness) = (blob.kind, blob.id, blob.witness);
            self.pack(sink, kind, id, witness, &blob.plaintext, dictionary.clone())
        });
        drop(release);
        sealed.or_else(|e| {
            // The callers whose blobs these were have returned: the job must fail.
            self.fail(e);
            self.check()
        })
    }

    /// Makes the dictionary choice if nobody has, waits until every held blob is sealed, and
    /// seals the solid group gathered so far: before a job ends or reads back what it wrote.
    fn settle(&self, sink: &Sink) -> Result<()> {
        let decided = match self.choice.decide_now() {
            Some(sample) => self.decide(sink, sample),
            None => Ok(()),
        };
        self.choice.wait_settled();
        decided?;
        match self.groups.take() {
            Some(last) => sink.append_group(last),
            None => Ok(()),
        }
    }
}

/// Releases whoever waits for the dictionary choice when dropped, also while unwinding from a
/// panic in the middle of it (a waiter would otherwise wait for ever); blobs it held then are
/// not stored, and the job fails.
struct ReleaseOnDrop<'a>(&'a Shared);

impl Drop for ReleaseOnDrop<'_> {
    fn drop(&mut self) {
        if self.0.choice.release() {
            self.0.fail(Error::Invalid(
                "blobs held for the compression dictionary were not stored (a sealer panicked)"
                    .into(),
            ));
        }
    }
}

/// Where sealed blobs go: the open pack of each kind, and the queue to the uploaders. Shared by
/// the packer and its sealer threads; the queue closes when the last holder drops it.
struct Sink {
    shared: Arc<Shared>,
    builders: [Mutex<PackBuilder>; 2],
    params: Params,
    queue: Sender<FinishedPack>,
}

/// Room a data pack reserves past the largest blob or group that can fill it, for its header
/// (a 16 MiB pack of small files has one of tens of KiB; one shipped at
/// [`crate::repo::pack::MAX_PACK_BLOBS`] can reach 10 MiB, and grows its buffer once, by
/// what it lacks). Reserving only the pack's size, every pack outgrew its buffer as it was
/// filled and finished, and was moved into one twice as large.
const PACK_HEADER_ROOM: usize = 1 << 20;

/// An empty pack of `kind`: data packs reserve all they can hold up front, tree packs grow.
fn empty_pack(kind: BlobKind, params: &Params) -> PackBuilder {
    let capacity = match kind {
        BlobKind::Data => {
            params.pack_size as usize
                + params.chunk_max.max(MAX_GROUP_LEN) as usize
                + PACK_HEADER_ROOM
        }
        BlobKind::Tree => 0,
    };
    PackBuilder::new(kind, capacity)
}

impl Sink {
    /// Puts a sealed blob (with its id's `witness`) into the open pack of its kind,
    /// shipping the pack once full.
    fn append(&self, sealed: &SealedBlob, witness: Witness) -> Result<()> {
        self.add_to(sealed.kind, |builder| builder.add(sealed, witness))
    }

    /// Adds to the open pack of `kind` with `add`, and ships the pack once full.
    fn add_to(&self, kind: BlobKind, add: impl FnOnce(&mut PackBuilder)) -> Result<()> {
        let target = match kind {
            BlobKind::Data => self.params.pack_size,
            BlobKind::Tree => self.params.tree_pack_size,
        } as usize;
        let full = {
            let mut builder = self.builders[slot(kind)].lock();
            add(&mut builder);
            builder
                .is_full(target)
                .then(|| std::mem::replace(&mut *builder, empty_pack(kind, &self.params)))
        };
        match full {
            Some(builder) => self.ship(builder),
            None => Ok(()),
        }
    }

    /// Seals a gathered solid group into the open data pack, shipping the pack once full.
    fn append_group(&self, group: Gathered) -> Result<()> {
        let sealed = self.shared.seal_group(&group);
        self.add_to(BlobKind::Data, |builder| {
            builder.add_group(&sealed, &group.members)
        })
    }

    /// Ships the open packs, however full.
    fn ship_open(&self) -> Result<()> {
        for kind in [BlobKind::Data, BlobKind::Tree] {
            let builder = std::mem::replace(
                &mut *self.builders[slot(kind)].lock(),
                empty_pack(kind, &self.params),
            );
            if !builder.is_empty() {
                self.ship(builder)?;
            }
        }
        Ok(())
    }

    /// Finishes, verifies and queues one pack.
    fn ship(&self, builder: PackBuilder) -> Result<()> {
        let pack = builder.finish(&self.shared.key);
        if let Err(e) = verify_pack(&self.shared.key, self.shared.repo.as_ref(), &pack) {
            // The original error is kept for `finish`; callers here see the sticky stop.
            self.shared.fail(e);
            return self.shared.check();
        }
        self.shared
            .level
            .adapt(self.queue.is_full(), self.queue.is_empty());
        self.shared.uploading.fetch_add(1, Ordering::SeqCst);
        if self.queue.send(pack).is_err() {
            self.shared.uploading.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::Invalid("uploader threads stopped".into()));
        }
        self.shared.check()
    }
}

/// Dedupes, seals, packs, verifies and stores blobs for one ingest job.
pub struct Packer {
    shared: Arc<Shared>,
    index: Arc<Index>,
    /// Packs not to de-duplicate against (condemned by a prune, or gone): their blobs are
    /// stored again.
    unusable: HashSet<PackId>,
    seen: Mutex<HashSet<BlobId>>,
    params: Params,
    /// `None` once finished (dropping it closes the upload queue).
    sink: Option<Arc<Sink>>,
    sealers: Option<Sealers>,
    uploaders: Vec<JoinHandle<()>>,
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
            corrupt_hook: OnceLock::new(),
            choice: DictionaryChoice::new(params.dictionaries(), &limits),
            level: Level::new(limits.compression, params.compression),
            groups: Groups::new(params.pack_size as usize, params.groups()),
            uploading: AtomicU64::new(0),
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
                        shared.uploading.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        let sink = Arc::new(Sink {
            shared: shared.clone(),
            builders: [
                Mutex::new(empty_pack(BlobKind::Data, &params)),
                Mutex::new(empty_pack(BlobKind::Tree, &params)),
            ],
            params: params.clone(),
            queue: tx,
        });
        let sealers = (limits.sealer_threads > 0).then(|| {
            let sink = sink.clone();
            Sealers::start(limits.sealer_threads, limits.sealing_bytes, move |job| {
                let shared = &sink.shared;
                // After a failure keep draining, so producers never wait on a dead queue.
                if shared.error.lock().is_none()
                    && let Err(e) = shared.take(
                        &sink,
                        job.kind,
                        job.id,
                        job.witness,
                        Cow::Owned(job.plaintext),
                    )
                {
                    shared.fail(e);
                }
            })
        });
        Packer {
            params,
            shared,
            index,
            unusable: HashSet::new(),
            seen: Mutex::new(HashSet::new()),
            sink: Some(sink),
            sealers,
            uploaders,
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

    /// Stops de-duplicating against `packs`: a blob held only by them is stored again. A
    /// writer passes what [`crate::repo::writer::WriterSession::unusable_packs`] found.
    pub fn avoid_packs(&mut self, packs: HashSet<PackId>) {
        self.unusable = packs;
    }

    /// Whether the repository holds `id` in a pack this job may count on.
    fn in_repository(&self, id: &BlobId) -> bool {
        if self.unusable.is_empty() {
            self.index.contains(id)
        } else {
            self.index.contains_outside(id, &self.unusable)
        }
    }

    /// Trains a compression dictionary, if the job needs one, on small files picked across
    /// these trees (a backup's sources) rather than on its first blobs.
    pub fn sample_dictionaries_across(&self, trees: SampleRules) {
        self.shared.choice.sample_across(trees);
    }

    /// Installs the test hook that corrupts plaintext between hashing and sealing (once).
    pub fn set_corrupt_hook(&mut self, hook: CorruptHook) {
        let _ = self.shared.corrupt_hook.set(hook);
    }

    fn sink(&self) -> Result<&Sink> {
        self.sink
            .as_deref()
            .ok_or_else(|| Error::Invalid("the packer has finished".into()))
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
        self.in_repository(id) || self.seen.lock().contains(id)
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
        if let Some(sealers) = &self.sealers {
            sealers.wait_idle();
        }
        self.shared.settle(self.sink()?)?;
        self.sink()?.ship_open()?;
        let deadline = std::time::Instant::now() + UPLOAD_WAIT;
        let mut shipped = std::time::Instant::now();
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
            // The blob may have been in a solid group another thread took to seal just before
            // the groups were settled above: that group reaches an open pack only after. Once
            // every shipped pack is stored and the blob is still not, it is in an open pack or
            // group: they are shipped again (not while an upload is under way, which would
            // make small packs while a store is slow).
            if shipped.elapsed() > RESHIP_AFTER && self.shared.uploading.load(Ordering::SeqCst) == 0
            {
                self.shared.settle(self.sink()?)?;
                self.sink()?.ship_open()?;
                shipped = std::time::Instant::now();
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    /// Stores `plaintext` unless it is already stored; returns its id. With sealer threads
    /// the blob is only hashed here and stored before [`Packer::finish`] returns.
    pub fn add(&self, kind: BlobKind, plaintext: &[u8]) -> Result<BlobId> {
        self.shared.check()?;
        // The pre-upload verification checks the sealed blob against the witness: any change to
        // these bytes or to the id from here on is caught ([`Witness`]).
        let (id, witness) = Witness::name(plaintext, |p| self.shared.key.blob_id(p).0);
        let id = BlobId(id);
        if self.in_repository(&id) || !self.seen.lock().insert(id) {
            return Ok(id);
        }
        self.shared.stats.new_blobs.fetch_add(1, Ordering::Relaxed);
        self.shared
            .stats
            .new_bytes
            .fetch_add(plaintext.len() as u64, Ordering::Relaxed);
        match &self.sealers {
            Some(sealers) => sealers.submit(SealJob {
                kind,
                id,
                witness,
                plaintext: plaintext.to_vec(),
            })?,
            None => self
                .shared
                .take(self.sink()?, kind, id, witness, Cow::Borrowed(plaintext))?,
        }
        Ok(id)
    }

    /// Stores what is still in the builders, waits for every upload, writes the last index
    /// segment. Only after this returns `Ok` may a snapshot reference the blobs. After a
    /// failure it returns the first error recorded (the cause), whatever other threads saw.
    pub fn finish(mut self) -> Result<PackerTotals> {
        if let Some(mut sealers) = self.sealers.take()
            && !sealers.stop()
        {
            self.shared
                .fail(Error::Invalid("a sealer thread panicked".into()));
        }
        let result = self
            .sink()
            .and_then(|sink| self.shared.settle(sink).and_then(|()| sink.ship_open()));
        // The last holder of the sink: dropping it closes the queue, so the uploaders end.
        drop(self.sink.take());
        for handle in self.uploaders.drain(..) {
            if handle.join().is_err() {
                self.shared
                    .fail(Error::Invalid("an uploader thread panicked".into()));
            }
        }
        parity::release_spare_encoder();
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
            top_level: self.shared.level.top(),
        })
    }
}

impl Drop for Packer {
    fn drop(&mut self) {
        if let Some(mut sealers) = self.sealers.take() {
            sealers.stop();
        }
        drop(self.sink.take());
        for handle in self.uploaders.drain(..) {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
#[path = "packer_tests.rs"]
mod tests;
