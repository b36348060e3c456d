//! The repository handle: a backend plus the unlocked master key and config. It stores and
//! loads the repository's objects — keys, config, index segments, snapshots, blobs — and checks
//! every one on the way in: file names against content hashes, seals against the key, blob
//! plaintext against its id.

use crate::backend::Backend;
use crate::backend::retry::RetryingBackend;
use crate::error::{Error, Result};
use crate::repo::blob::FindDictionary;
use crate::repo::config::{Config, DEFAULT_RETRIES, MAX_CONFIG_LEN, Params};
use crate::repo::crypto::{MasterKey, MasterSecrets};
use crate::repo::dictionary::{self, Dictionaries, Dictionary};
use crate::repo::identity;
use crate::repo::ids::{BlobId, BlobKind, IndexId, KeyId, PackId, SnapshotId, sha256};
use crate::repo::index::{BlobLocation, Index, MAX_SEGMENT_LEN, Segment};
use crate::repo::keys::{KdfParams, KeyFile, MAX_KEY_FILE_LEN};
use crate::repo::pack::pack_name;
use crate::repo::snapshot::{MAX_SNAPSHOT_LEN, Snapshot};
use crate::repo::tree::{Node, Tree, invalid_name};
use rayon::prelude::*;
use std::borrow::Cow;
use std::sync::Arc;

/// An open repository.
pub struct Repository {
    backend: Arc<dyn Backend>,
    key: Arc<MasterKey>,
    key_id: KeyId,
    config: Config,
    /// Packs this handle indexed, in order: a writer's commit confirms those indexed since its
    /// session began are still stored.
    indexed_here: parking_lot::Mutex<Vec<PackId>>,
    /// Trees read, and read around ([`crate::repo::tree_reads`]).
    tree_reads: crate::repo::tree_reads::TreeReads,
    /// A damaged pack healed in memory from its parity, for reads.
    healed: crate::repo::heal::HealedPacks,
    /// The compression dictionaries met so far.
    dictionaries: Dictionaries,
    /// The solid groups opened last, for their other members.
    groups: crate::repo::opened_groups::OpenedGroups,
}

/// Whether a key file's bytes hash to its name (a key's id is the SHA-256 of its file): a key
/// file damaged on the store would otherwise fail to open like a wrong password, and the user
/// would be told to find another password instead of a backup of the key.
fn intact_key_file(name: &str, bytes: &[u8]) -> Result<()> {
    if id_of(name) == hex::encode(sha256(bytes)) {
        Ok(())
    } else {
        Err(Error::corrupt(
            name,
            "its bytes do not hash to its name (restore the key file from a copy, or open the \
             repository with another key)",
        ))
    }
}

/// A blob's read error, with why its pack's parity did not heal it where that says more (a pack
/// without parity adds nothing; a store error stays what it is, the heal's failure is logged).
fn not_healed(first: Error, heal: Error) -> Error {
    match (first, heal) {
        (first, Error::NotFound(_)) => first,
        (Error::BadBlob { pack, blob, reason }, heal) => Error::BadBlob {
            pack,
            blob,
            reason: format!("{reason}; {heal}"),
        },
        (first, _) => first,
    }
}

/// The id part of an object name such as `snapshots/<id>`.
fn id_of(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// Reads a content-addressed object and checks it against its name; one that does not match is
/// read once more, so a transient read fault is not reported as damage.
/// Larger than `limit` (what its kind can be) it is refused unread.
fn get_addressed(backend: &dyn Backend, name: &str, limit: u64) -> Result<Vec<u8>> {
    let matches = |bytes: &[u8]| hex::encode(sha256(bytes)) == id_of(name);
    let mut bytes = backend.get_bounded(name, limit)?;
    if !matches(&bytes) {
        backend.forget_cached(name, None);
        bytes = backend.get_bounded(name, limit)?;
    }
    if !matches(&bytes) {
        return Err(Error::corrupt(
            name,
            "content does not match its name (damaged or truncated)",
        ));
    }
    Ok(bytes)
}

impl FindDictionary for Repository {
    fn dictionaries(
        &self,
        zstd_id: u32,
    ) -> std::result::Result<Vec<Arc<Dictionary>>, dictionary::FindError> {
        self.dictionaries
            .find(self.backend.as_ref(), &self.key, zstd_id)
    }
}

/// A snapshot file that opened: its id and content.
pub type SnapshotFile = (SnapshotId, Snapshot);

impl Repository {
    /// Creates a repository on an empty backend, with one key for `password`.
    pub fn init(
        backend: Arc<dyn Backend>,
        password: &[u8],
        kdf: KdfParams,
        params: Params,
    ) -> Result<Repository> {
        Repository::init_with_secrets(backend, password, kdf, params, MasterSecrets::generate())
    }

    /// Creates a repository whose chunk boundaries and blob ids are those of `from`, so that
    /// what is copied between them de-duplicates: the same chunker parameters, gear seed and id
    /// key, but an encryption key, config and password of its own.
    pub fn init_like(
        backend: Arc<dyn Backend>,
        password: &[u8],
        kdf: KdfParams,
        mut params: Params,
        from: &Repository,
    ) -> Result<Repository> {
        let theirs = &from.config.params;
        params.chunk_min = theirs.chunk_min;
        params.chunk_avg = theirs.chunk_avg;
        params.chunk_max = theirs.chunk_max;
        params.tree_split_size = theirs.tree_split_size;
        let mut secrets = MasterSecrets::generate();
        secrets.mac = from.key.secrets().mac;
        secrets.gear_seed = from.key.secrets().gear_seed;
        Repository::init_with_secrets(backend, password, kdf, params, secrets)
    }

    fn init_with_secrets(
        backend: Arc<dyn Backend>,
        password: &[u8],
        kdf: KdfParams,
        params: Params,
        secrets: MasterSecrets,
    ) -> Result<Repository> {
        params.validate().map_err(Error::Invalid)?;
        let backend: Arc<dyn Backend> = Arc::new(RetryingBackend::new(backend, params.retries()));
        if backend.stat("config").is_ok() {
            return Err(Error::Invalid(format!(
                "a repository already exists at {}",
                backend.location()
            )));
        }
        let key = MasterKey::new(secrets);
        let key_id = store_key(backend.as_ref(), key.secrets(), password, kdf)?;
        let config = Config::new(params);
        if !backend.put_if_absent("config", &config.to_json(&key))? {
            return Err(Error::Invalid(format!(
                "a repository was created at {} meanwhile",
                backend.location()
            )));
        }
        Ok(Repository {
            backend,
            key: Arc::new(key),
            key_id,
            config,
            indexed_here: Default::default(),
            tree_reads: Default::default(),
            healed: Default::default(),
            groups: Default::default(),
            dictionaries: Default::default(),
        })
    }

    /// Opens a repository with `password`.
    pub fn open(raw: Arc<dyn Backend>, password: &[u8]) -> Result<Repository> {
        let backend: Arc<dyn Backend> =
            Arc::new(RetryingBackend::new(raw.clone(), DEFAULT_RETRIES));
        let config_bytes = match backend.get_bounded("config", MAX_CONFIG_LEN) {
            Err(Error::NotFound(_)) => return Err(Error::NoRepository(backend.location())),
            other => other?,
        };
        let keys = backend.list("keys/")?;
        let mut last_corrupt = None;
        let mut intact_tried = false;
        for info in &keys {
            if KeyId::from_hex(id_of(&info.name)).is_err() {
                tracing::warn!("{}: not a key file name; ignored", info.name);
                continue;
            }
            let parsed = backend
                .get_bounded(&info.name, MAX_KEY_FILE_LEN)
                .and_then(|b| intact_key_file(&info.name, &b).map(|()| b))
                .and_then(|b| KeyFile::parse(&info.name, &b));
            let unlocked = parsed.and_then(|file| file.unlock(&info.name, password));
            match unlocked {
                Ok(Some(secrets)) => {
                    let key = MasterKey::new(secrets);
                    let config = Config::from_json(&key, &config_bytes)?;
                    let key_id = KeyId::from_hex(id_of(&info.name))
                        .map_err(|e| Error::corrupt(&info.name, e))?;
                    let retries = config.params.retries();
                    return Ok(Repository {
                        backend: Arc::new(RetryingBackend::new(raw, retries)),
                        key: Arc::new(key),
                        key_id,
                        config,
                        indexed_here: Default::default(),
                        tree_reads: Default::default(),
                        healed: Default::default(),
                        groups: Default::default(),
                        dictionaries: Default::default(),
                    });
                }
                Ok(None) => intact_tried = true,
                Err(e) => last_corrupt = Some(e),
            }
        }
        // A damaged key file is reported as the error only when no intact key was there to
        // try the password on; otherwise the password is wrong, and the damage a warning.
        match last_corrupt {
            Some(damage) if !intact_tried => Err(damage),
            Some(damage) => {
                tracing::warn!("{damage}");
                Err(Error::WrongPassword)
            }
            None => Err(Error::WrongPassword),
        }
    }

    /// Every compression dictionary the repository holds that opens (each read once), and
    /// every zstd id a stored dictionary's name takes: for a writer choosing one, or a new id.
    pub fn dictionaries(&self) -> Result<(Vec<Arc<Dictionary>>, Vec<u32>)> {
        self.dictionaries.all(self.backend.as_ref(), &self.key)
    }

    /// Stores a newly trained dictionary, as [`dictionary::seal`] sealed (re-opened and
    /// compared) it, and returns it ready for use. Returns only once it is durably stored, so
    /// no blob compressed with it can be stored before it.
    pub fn store_dictionary(&self, sealed: (Dictionary, Vec<u8>)) -> Result<Arc<Dictionary>> {
        let (dictionary, stored) = sealed;
        self.backend.put(
            &dictionary::dict_name(dictionary.zstd_id, &dictionary.id),
            &stored,
        )?;
        let dictionary = Arc::new(dictionary);
        self.dictionaries.insert(dictionary.clone());
        Ok(dictionary)
    }

    /// The store.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The master key.
    pub fn key(&self) -> &Arc<MasterKey> {
        &self.key
    }

    /// Damaged packs healed in memory for reads: a command sets their budget and whether they
    /// are written back (`--heal-write`).
    pub fn healed_packs(&self) -> &crate::repo::heal::HealedPacks {
        &self.healed
    }

    /// The parameters fixed at init.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The key file this handle was opened with.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Adds a key file for another password.
    pub fn add_key(&self, password: &[u8], kdf: KdfParams) -> Result<KeyId> {
        store_key(self.backend.as_ref(), self.key.secrets(), password, kdf)
    }

    /// Every key file.
    pub fn keys(&self) -> Result<Vec<(KeyId, KeyFile)>> {
        let mut out = Vec::new();
        for info in self.backend.list("keys/")? {
            let id =
                KeyId::from_hex(id_of(&info.name)).map_err(|e| Error::corrupt(&info.name, e))?;
            out.push((
                id,
                KeyFile::parse(
                    &info.name,
                    &self.backend.get_bounded(&info.name, MAX_KEY_FILE_LEN)?,
                )?,
            ));
        }
        Ok(out)
    }

    /// Removes a key file. The key this handle was opened with cannot be removed, so a user
    /// never removes the password they just proved they have and locks themselves out.
    pub fn remove_key(&self, id: KeyId) -> Result<()> {
        if id == self.key_id {
            return Err(Error::Invalid(
                "refusing to remove the key in use; open with another password".into(),
            ));
        }
        let name = format!("keys/{id}");
        self.backend.stat(&name)?;
        self.backend.delete(&name)
    }

    /// Loads every index segment, in parallel, into one in-memory index.
    pub fn load_index(&self) -> Result<Index> {
        let segments = self
            .index_files()?
            .into_iter()
            .map(|(_, segment)| segment)
            .collect::<Result<Vec<_>>>()?;
        Ok(Index::from_segments(segments))
    }

    /// Every index file, each opened on its own, so that one damaged file is reported in its
    /// place rather than failing the whole load (check and repair need the others).
    ///
    /// A prune rewrites an index file by writing the new one and then deleting the old: a file
    /// that vanishes between the listing and its read was replaced by one the listing may have
    /// missed, so the whole listing is read again (a few times, then it is an error).
    pub fn index_files(&self) -> Result<Vec<(String, Result<Segment>)>> {
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            let names = self.backend.list("index/")?;
            let files: Vec<(String, Result<Segment>)> = names
                .into_par_iter()
                .map(|info| {
                    let segment = get_addressed(self.backend.as_ref(), &info.name, MAX_SEGMENT_LEN)
                        .and_then(|bytes| Segment::open(&self.key, &info.name, &bytes));
                    (info.name, segment)
                })
                .collect();
            let vanished = files
                .iter()
                .any(|(_, s)| matches!(s, Err(Error::NotFound(_))));
            if !vanished || attempt == ATTEMPTS {
                return Ok(files);
            }
        }
        unreachable!("the last attempt returns")
    }

    /// Every snapshot file, each opened on its own (see [`Repository::index_files`]). One that
    /// vanishes between the listing and its read was forgotten meanwhile: it is left out.
    pub fn snapshot_files(&self) -> Result<Vec<(String, Result<SnapshotFile>)>> {
        let names = self.backend.list("snapshots/")?;
        Ok(names
            .into_par_iter()
            .map(|info| {
                let opened = SnapshotId::from_hex(id_of(&info.name))
                    .map_err(|e| Error::corrupt(&info.name, e))
                    .and_then(|id| {
                        let bytes =
                            get_addressed(self.backend.as_ref(), &info.name, MAX_SNAPSHOT_LEN)?;
                        Ok((id, Snapshot::open(&self.key, &info.name, &bytes)?))
                    });
                (info.name, opened)
            })
            .filter(|(_, opened)| !matches!(opened, Err(Error::NotFound(_))))
            .collect())
    }

    /// Stores an index segment.
    pub fn save_index_segment(&self, segment: &Segment) -> Result<IndexId> {
        let sealed = segment.seal(&self.key);
        if sealed.len() as u64 > MAX_SEGMENT_LEN {
            return Err(Error::Invalid(format!(
                "index segment of {} bytes exceeds the {MAX_SEGMENT_LEN}-byte limit (a writer bug)",
                sealed.len()
            )));
        }
        let id = IndexId(sha256(&sealed));
        self.backend.put(&format!("index/{id}"), &sealed)?;
        self.indexed_here
            .lock()
            .extend(segment.packs.iter().map(|sp| sp.pack));
        Ok(id)
    }

    /// How many packs this handle has indexed so far: where a writer session starts counting.
    pub fn packs_indexed_count(&self) -> usize {
        self.indexed_here.lock().len()
    }

    /// The packs this handle indexed (written or adopted) after the first `from`.
    pub fn packs_indexed_since(&self, from: usize) -> Vec<PackId> {
        self.indexed_here
            .lock()
            .get(from..)
            .unwrap_or_default()
            .to_vec()
    }

    /// Every snapshot, oldest first. A snapshot file that is damaged (does not parse, does not
    /// authenticate, is not a regular file, is too large) is left out with one log line, so one
    /// bad file does not hide every other snapshot (`check` reports it); any other failure to
    /// read one — the store not answering — is an error, never a shorter list.
    pub fn snapshots(&self) -> Result<Vec<(SnapshotId, Snapshot)>> {
        let names = self.backend.list("snapshots/")?;
        let read = names
            .par_iter()
            .map(|info| {
                let id = SnapshotId::from_hex(id_of(&info.name))
                    .map_err(|e| Error::corrupt(&info.name, e))?;
                let bytes = get_addressed(self.backend.as_ref(), &info.name, MAX_SNAPSHOT_LEN)?;
                Ok((id, Snapshot::open(&self.key, &info.name, &bytes)?))
            })
            .collect::<Vec<Result<_>>>();
        let mut snaps = Vec::with_capacity(read.len());
        for snapshot in read {
            match snapshot {
                Ok(snapshot) => snaps.push(snapshot),
                // Forgotten between the listing and the read.
                Err(Error::NotFound(_)) => {}
                Err(e @ Error::Corrupt { .. }) => {
                    tracing::warn!("{e}: left out (`cairn check` reports it)");
                }
                Err(e) => return Err(e),
            }
        }
        snaps.sort_by_key(|(id, s)| (s.time, *id));
        Ok(snaps)
    }

    /// Reads one snapshot by full id.
    pub fn snapshot(&self, id: SnapshotId) -> Result<Snapshot> {
        let name = format!("snapshots/{id}");
        Snapshot::open(
            &self.key,
            &name,
            &get_addressed(self.backend.as_ref(), &name, MAX_SNAPSHOT_LEN)?,
        )
    }

    /// Commits a snapshot: create-if-absent, so an existing snapshot is never replaced.
    pub fn save_snapshot(&self, snapshot: &Snapshot) -> Result<SnapshotId> {
        let sealed = snapshot.seal(&self.key);
        if sealed.len() as u64 > MAX_SNAPSHOT_LEN {
            return Err(Error::Invalid(format!(
                "the snapshot would take {} bytes, more than the {MAX_SNAPSHOT_LEN} a snapshot file \
                 may hold (too many paths or tags)",
                sealed.len()
            )));
        }
        let id = SnapshotId(sha256(&sealed));
        self.backend
            .put_if_absent(&format!("snapshots/{id}"), &sealed)?;
        Ok(id)
    }

    /// Reads and verifies one blob. A blob that fails verification (or cannot be read) is
    /// [read again](Repository::read_blob_again) before it is reported.
    pub fn read_blob(&self, at: &BlobLocation) -> Result<Vec<u8>> {
        self.read_blob_once(at).or_else(|first| match first {
            // The pack is not at fault: neither a second read nor a heal would help.
            Error::NoDictionary { .. } => Err(first),
            _ => self.read_blob_again(at),
        })
    }

    /// A blob whose first read failed verification or could not be read: from the copy of its
    /// pack healed in memory if one is held, else read once more (a transient fault is then not
    /// mistaken for damage at rest), else from its pack healed from its parity now
    /// ([`crate::repo::heal`]) — verified like any read. The store is not written to unless
    /// the command asked for it (`--heal-write`).
    pub fn read_blob_again(&self, at: &BlobLocation) -> Result<Vec<u8>> {
        if let Some(healed) = self.healed.held(&at.pack) {
            return self.open_in(&healed, at);
        }
        self.groups.forget(&at.pack);
        self.backend
            .forget_cached(&pack_name(&at.pack), Some(at.entry.sealed_range()));
        self.read_blob_once(at).or_else(|first| {
            if matches!(first, Error::NoDictionary { .. }) {
                return Err(first);
            }
            let healed = self
                .healed
                .get(self, &at.pack)
                .map_err(|heal| not_healed(first, heal))?;
            self.open_in(&healed, at)
        })
    }

    /// One read of a blob from the store, verified.
    fn read_blob_once(&self, at: &BlobLocation) -> Result<Vec<u8>> {
        if let Some(member) = self.groups.held_member(&self.key, at) {
            return member.map_err(|failure| failure.into_error(at.pack, at.entry.id));
        }
        let sealed = self
            .backend
            .get(&pack_name(&at.pack), Some(at.entry.sealed_range()))?;
        self.open_sealed(at, Cow::Owned(sealed))
    }

    /// Opens blob `at` from its sealed bytes, read by the caller: the solid group of a member is
    /// held for its other members.
    pub fn open_sealed(&self, at: &BlobLocation, sealed: Cow<[u8]>) -> Result<Vec<u8>> {
        self.groups
            .open(&self.key, self, at, sealed)
            .map_err(|failure| failure.into_error(at.pack, at.entry.id))
    }

    /// Blob `at` opened from `pack`, the bytes of its pack (healed), verified.
    fn open_in(&self, pack: &[u8], at: &BlobLocation) -> Result<Vec<u8>> {
        let start = at.entry.offset as usize;
        let sealed = pack
            .get(start..start + at.entry.sealed_len as usize)
            .ok_or_else(|| Error::corrupt(pack_name(&at.pack), "shorter than its index says"))?;
        self.open_sealed(at, Cow::Borrowed(sealed))
    }

    /// Reads and verifies blob `id` from the first of its locations that yields it. A blob
    /// listed in a pack that is gone (an old index file replayed after `repair packs`) is read
    /// from its next location, with one log line; only when none yields it is it an error (the
    /// first location's).
    /// Every reader lays files out by the first location's length, so a location that states
    /// another length (written by a key holder who lied) is never read: its bytes would not fit.
    pub fn read_indexed(&self, index: &Index, id: &BlobId) -> Result<Vec<u8>> {
        let mut first_error = None;
        let laid_out = index.get(id).map(|at| at.entry.raw_len);
        for at in index.locations(id) {
            if Some(at.entry.raw_len) != laid_out {
                first_error.get_or_insert(Error::BadBlob {
                    pack: at.pack,
                    blob: *id,
                    reason: "the index gives it another length in another pack".into(),
                });
                continue;
            }
            match self.read_blob(&at) {
                Ok(plain) => {
                    if let Some(e) = &first_error {
                        tracing::warn!(
                            "{e}; read it from pack {} instead (an index entry is stale: \
                             `cairn check` names it)",
                            at.pack
                        );
                    }
                    return Ok(plain);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or(Error::MissingBlob(*id)))
    }

    /// Reads a directory's nodes, joining the pieces of a split directory. Entries whose name is
    /// not a single path component ([`invalid_name`]) are left out with one log line: nothing
    /// that builds a path from a name (restore, ls, the mount) ever sees them. `check` and
    /// `repair` use [`Repository::read_tree_unfiltered`] to report and drop them.
    pub fn read_tree(&self, index: &Index, id: &BlobId) -> Result<Vec<Node>> {
        Ok(valid_nodes(id, self.read_tree_unfiltered(index, id)?))
    }

    /// A directory's nodes exactly as stored, invalid names included.
    pub fn read_tree_unfiltered(&self, index: &Index, id: &BlobId) -> Result<Vec<Node>> {
        join_tree(id, |piece| self.read_tree_blob(index, piece))
    }

    /// One tree blob as stored: a directory's nodes, or the pieces of a split directory (whose
    /// blobs a walk that marks what is used must count too).
    /// Trees come a window at a time ([`crate::repo::tree_reads`]); one that does not open
    /// there is read again on its own, from each of its locations, and reported.
    pub fn read_tree_blob(&self, index: &Index, id: &BlobId) -> Result<Tree> {
        check_is_tree(index, id)?;
        if let Some(plain) = self.tree_reads.kept(id) {
            return Tree::decode(&plain, id);
        }
        if let Some(at) = index.get(id)
            && let Some(plain) =
                self.tree_reads
                    .read_around(self.backend.as_ref(), &self.key, self, index, &at)
        {
            return Tree::decode(&plain, id);
        }
        Tree::decode(&self.read_indexed(index, id)?, id)
    }

    /// Finds a snapshot by `latest`, `latest~N`, or a unique id prefix.
    pub fn find_snapshot(&self, spec: &str) -> Result<(SnapshotId, Snapshot)> {
        if let Some(back) = spec.strip_prefix("latest") {
            let snaps = self.snapshots()?;
            // With a damaged snapshot file left out, "the newest" could be the wrong one.
            let listed = self.backend.list("snapshots/")?.len();
            if listed != snaps.len() {
                return Err(Error::Selector(format!(
                    "{} snapshot files are damaged (`cairn check` names them): {spec:?} could \
                     name the wrong snapshot; give an id",
                    listed - snaps.len()
                )));
            }
            let n: usize = match back.strip_prefix('~') {
                Some(n) => n
                    .parse()
                    .map_err(|_| Error::Selector(format!("bad snapshot selector {spec:?}")))?,
                None if back.is_empty() => 0,
                None => return Err(Error::Selector(format!("bad snapshot selector {spec:?}"))),
            };
            let count = snaps.len();
            return snaps.into_iter().rev().nth(n).ok_or_else(|| {
                Error::Selector(format!("{spec}: the repository has {count} snapshots"))
            });
        }
        // An id prefix is matched against every snapshot file, damaged ones included: a
        // damaged file must make a prefix ambiguous, not silently pick another snapshot.
        let wanted = spec.to_ascii_lowercase();
        let mut matching: Vec<String> = self
            .backend
            .list("snapshots/")?
            .into_iter()
            .map(|o| id_of(&o.name).to_string())
            .filter(|id| SnapshotId::from_hex(id).is_ok() && id.starts_with(&wanted))
            .collect();
        // A full id is that snapshot, whatever else shares its digits.
        if matching.contains(&wanted) {
            matching.retain(|id| *id == wanted);
        }
        match matching.len() {
            1 => {
                let name = matching.remove(0);
                let id = SnapshotId::from_hex(&name)
                    .map_err(|e| Error::corrupt(format!("snapshots/{name}"), e))?;
                Ok((id, self.snapshot(id)?))
            }
            0 => Err(Error::Selector(format!("no snapshot matches {spec:?}"))),
            n => Err(Error::Selector(format!(
                "{n} snapshots match {spec:?}: give more digits"
            ))),
        }
    }
}

fn store_key(
    backend: &dyn Backend,
    secrets: &MasterSecrets,
    password: &[u8],
    kdf: KdfParams,
) -> Result<KeyId> {
    let file = KeyFile::create(
        secrets,
        password,
        kdf,
        &identity::hostname(),
        &identity::username(),
    )?;
    let bytes = file.to_json();
    let id = KeyId(sha256(&bytes));
    backend.put(&format!("keys/{id}"), &bytes)?;
    Ok(id)
}

/// Refuses to read `id` as a tree unless the index says it is one.
pub fn check_is_tree(index: &Index, id: &BlobId) -> Result<()> {
    let at = index.get(id).ok_or(Error::MissingBlob(*id))?;
    if at.entry.kind != BlobKind::Tree {
        return Err(Error::corrupt(
            format!("tree {id}"),
            "indexed as a data blob",
        ));
    }
    Ok(())
}

/// A directory's nodes from tree `id`, read with `read` (one tree blob each): the nodes
/// themselves, or the pieces of a split directory joined.
pub fn join_tree(id: &BlobId, mut read: impl FnMut(&BlobId) -> Result<Tree>) -> Result<Vec<Node>> {
    match read(id)? {
        Tree::Nodes(nodes) => Ok(nodes),
        Tree::Pieces(pieces) => {
            let mut nodes = Vec::new();
            for piece in pieces {
                match read(&piece.tree)? {
                    Tree::Nodes(part) => nodes.extend(part),
                    Tree::Pieces(_) => {
                        return Err(Error::corrupt(
                            format!("tree {id}"),
                            "piece is itself split",
                        ));
                    }
                }
            }
            // Each piece is sorted on its own; joined, two pieces could still repeat a name (a
            // file and a link both called `x`): no reader may see that.
            if nodes.windows(2).any(|w| w[0].name >= w[1].name) {
                return Err(Error::corrupt(
                    format!("tree {id}"),
                    "pieces overlap: names not sorted and unique",
                ));
            }
            Ok(nodes)
        }
    }
}

/// `nodes` of tree `id` without entries whose names are not valid file names, with one log line
/// when there were any.
pub fn valid_nodes(id: &BlobId, mut nodes: Vec<Node>) -> Vec<Node> {
    let before = nodes.len();
    nodes.retain(|node| invalid_name(&node.name).is_none());
    if nodes.len() != before {
        tracing::warn!(
            "tree {id}: skipped {} entries whose names are not valid file names (damaged or \
             crafted; `cairn check` reports them, `cairn repair snapshots` drops them)",
            before - nodes.len()
        );
    }
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::local::LocalBackend;
    use crate::repo::blob::seal_blob;
    use crate::repo::index::SegmentPack;
    use crate::repo::pack::PackEntry;

    /// Readers lay a file out by the first location's length: a later location that states
    /// another (an index written by a liar) is never read, or its bytes would land where they
    /// do not fit (a reader slicing by the first length panicked on them).
    #[test]
    fn a_location_stating_another_length_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(LocalBackend::new(dir.path()));
        let kdf = KdfParams {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        };
        let repo = Repository::init(backend.clone(), b"pw", kdf, Params::default()).unwrap();
        let plain = b"a chunk of twenty bytes".to_vec();
        let id = repo.key().blob_id(&plain);
        let sealed = seal_blob(
            repo.key(),
            id,
            BlobKind::Data,
            &plain,
            crate::repo::blob::Compression::level(3),
        );
        let pack = PackId([7; 32]);
        backend.put(&pack_name(&pack), &sealed.bytes).unwrap();
        let entry = PackEntry {
            id,
            kind: BlobKind::Data,
            offset: 0,
            sealed_len: sealed.bytes.len() as u32,
            raw_len: sealed.raw_len,
            compressed: sealed.compressed,
            group: None,
        };
        let located = |pack, raw_len| Segment {
            packs: vec![SegmentPack {
                pack,
                blobs: vec![PackEntry { raw_len, ..entry }],
            }],
        };
        let honest = Index::from_segments(vec![located(pack, sealed.raw_len)]);
        assert_eq!(repo.read_indexed(&honest, &id).unwrap(), plain);
        // Listed first in a pack that is gone, with another length: the intact copy is not
        // read in its place.
        let lying = Index::from_segments(vec![
            located(PackId([9; 32]), sealed.raw_len + 5),
            located(pack, sealed.raw_len),
        ]);
        assert!(matches!(
            repo.read_indexed(&lying, &id),
            Err(Error::NotFound(_))
        ));
        let lying = Index::from_segments(vec![
            located(pack, sealed.raw_len + 5),
            located(pack, sealed.raw_len),
        ]);
        assert!(matches!(
            repo.read_indexed(&lying, &id),
            Err(Error::BadBlob { pack: p, .. }) if p == pack
        ));
    }
}
