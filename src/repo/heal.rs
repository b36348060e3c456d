//! Healing a pack in place from its parity ([`crate::repo::parity`]): the pack is rebuilt from
//! what is still readable and written back under its own name. The rebuilt bytes hash to that
//! name, so they are the bytes the index already describes: nothing else changes.

use crate::backend::Backend;
use crate::backend::salvage::{is_unreadable, read_salvaging};
use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::repo::ids::PackId;
use crate::repo::pack::pack_name;
use crate::repo::parity::{Parity, SECTOR, largest_object, parity_name};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// What the parity of a pack made of what the store holds of it.
pub enum Rebuilt {
    /// The pack's bytes, rebuilt (and proven by its name).
    Healed(Vec<u8>),
    /// The pack read back sound by its parity and its name: a blob that fails there has a
    /// wrong index entry, or its reads failed in passing.
    Sound(Vec<u8>),
    /// Why its parity cannot rebuild it: too much damage, or a parity that is unusable or does
    /// not rebuild it. Decided by what is stored, so worth remembering.
    Beyond(String),
}

/// The bytes of `pack` rebuilt from what the store holds of it (sectors the device cannot read
/// count as lost) and its parity, without writing anything. An error is the store's:
/// [`Error::NotFound`] for a pack without parity.
pub fn healed_pack(repo: &Repository, pack: &PackId) -> Result<Rebuilt> {
    let name = pack_name(pack);
    let largest = repo.config().params.largest_pack();
    // The parity may lie on the same failing disk: read around its lost sectors too (each has
    // a CRC, and one copy of its table may be lost).
    let object = read_salvaging(
        repo.backend().as_ref(),
        &parity_name(pack),
        largest_object(largest),
        SECTOR as u64,
        usize::MAX,
    )?;
    let parity = match Parity::parse(&object.bytes, pack) {
        Ok(parity) => parity,
        Err(e) => return Ok(Rebuilt::Beyond(format!("its parity is unusable: {e}"))),
    };
    if parity.pack_len() > largest {
        return Ok(Rebuilt::Beyond(
            "its parity claims a pack larger than any this repository writes".into(),
        ));
    }
    // Not what a cache kept of the damaged bytes.
    repo.backend().forget_cached(&name, None);
    let most = parity.recovery_sectors();
    let read = match read_salvaging(
        repo.backend().as_ref(),
        &name,
        largest,
        SECTOR as u64,
        most as usize,
    ) {
        Ok(read) => read,
        Err(e) if is_unreadable(&e) => {
            return Ok(Rebuilt::Beyond(format!(
                "more of its sectors cannot be read than its parity rebuilds ({most})"
            )));
        }
        Err(e) => return Err(e),
    };
    Ok(match parity.heal(&read.bytes, &read.lost) {
        Err(e) => Rebuilt::Beyond(e.to_string()),
        Ok(healed) if read.lost.is_empty() && healed == read.bytes => Rebuilt::Sound(healed),
        Ok(healed) => Rebuilt::Healed(healed),
    })
}

/// Heals `pack` in the store: rebuilt from its parity ([`healed_pack`]) and written back under
/// its name (the local store writes a temporary file, syncs it and renames it over the pack).
/// A pack its parity cannot heal, or finds sound, is an error saying so.
pub fn heal_in_place(repo: &Repository, pack: &PackId) -> Result<()> {
    match healed_pack(repo, pack)? {
        Rebuilt::Healed(healed) => put_if_stored(repo.backend().as_ref(), pack, &healed),
        Rebuilt::Sound(_) => Err(Error::corrupt(
            pack_name(pack),
            "its bytes are sound by its parity and its name: what fails there is its index \
             entries",
        )),
        Rebuilt::Beyond(why) => Err(Error::corrupt(pack_name(pack), why)),
    }
}

/// Writes the healed bytes of `pack` back under its name, unless a prune deleted it since it was
/// read (it is not brought back). These jobs run without a writer's session, so a prune does
/// not wait for them: a pack deleted between the check and the write comes back unindexed,
/// which `check` notes and the next prune removes.
pub fn put_if_stored(backend: &dyn Backend, pack: &PackId, healed: &[u8]) -> Result<()> {
    let name = pack_name(pack);
    backend.stat(&name)?;
    backend.put(&name, healed)
}

/// Stores `object` as the parity of `pack`, and removes it again if a prune deleted the pack
/// meanwhile (jobs that write parity beside existing packs hold no writer's session): an orphan
/// left by a narrower race is noted by `check` and removed by the next prune.
pub fn put_parity_of_stored(backend: &dyn Backend, pack: &PackId, object: &[u8]) -> Result<()> {
    backend.put(&parity_name(pack), object)?;
    match backend.stat(&pack_name(pack)) {
        Err(Error::NotFound(_)) => backend.delete(&parity_name(pack)),
        _ => Ok(()),
    }
}

/// Packs healed in memory for reads ([`healed_pack`]), so the other blobs of a damaged pack are
/// served without healing it again: a few held (at most [`HealedPacks::set_budget`]'s bytes,
/// at least one pack), one heal at a time (readers of a pack being healed wait for that heal
/// rather than start their own), one log line per pack, and a pack that cannot be healed
/// remembered as such, so its other blobs fail at once instead of each reading it whole again.
pub struct HealedPacks {
    /// What is held and remembered: locked only to look up or insert, never across a heal.
    state: parking_lot::Mutex<Healed>,
    /// Held through one heal.
    healing: parking_lot::Mutex<()>,
    budget: AtomicU64,
    write_back: AtomicBool,
}

/// What [`HealedPacks`] holds.
struct Healed {
    packs: lru::LruCache<PackId, Arc<Vec<u8>>>,
    held: u64,
    /// Packs that could not be healed, with why (the most recent [`MAX_REMEMBERED`]).
    beyond: lru::LruCache<PackId, String>,
}

/// Memory for healed packs unless a command says otherwise: two packs of the default size.
const DEFAULT_BUDGET: u64 = 32 << 20;

/// Packs remembered as beyond healing: enough for any repository's damaged packs to fail at
/// once, bounded whatever a store answers.
const MAX_REMEMBERED: usize = 4096;

impl Default for HealedPacks {
    fn default() -> Self {
        HealedPacks {
            state: parking_lot::Mutex::new(Healed {
                packs: lru::LruCache::unbounded(),
                held: 0,
                beyond: lru::LruCache::new(
                    std::num::NonZeroUsize::new(MAX_REMEMBERED)
                        .unwrap_or(std::num::NonZeroUsize::MIN),
                ),
            }),
            healing: parking_lot::Mutex::new(()),
            budget: AtomicU64::new(DEFAULT_BUDGET),
            write_back: AtomicBool::new(false),
        }
    }
}

impl HealedPacks {
    /// The memory healed packs may hold (a command charges it to its own budget); one pack is
    /// always held, whatever its size.
    pub fn set_budget(&self, bytes: u64) {
        self.budget.store(bytes, Ordering::Relaxed);
    }

    /// Whether a pack healed for a read is also written back to the store under its name
    /// (`--heal-write`); otherwise the store is never written to.
    pub fn set_write_back(&self, on: bool) {
        self.write_back.store(on, Ordering::Relaxed);
    }

    /// The copy of `pack` healed in memory, if one is held.
    pub fn held(&self, pack: &PackId) -> Option<Arc<Vec<u8>>> {
        self.state.lock().packs.get(pack).cloned()
    }

    /// What is known of `pack` already: its healed copy, or why it cannot be healed.
    fn known(&self, pack: &PackId) -> Option<Result<Arc<Vec<u8>>>> {
        let mut state = self.state.lock();
        if let Some(bytes) = state.packs.get(pack) {
            return Some(Ok(bytes.clone()));
        }
        let why = state.beyond.get(pack)?;
        Some(Err(if why.is_empty() {
            Error::NotFound(parity_name(pack))
        } else {
            Error::Invalid(why.clone())
        }))
    }

    /// `pack` as rebuilt from its parity ([`healed_pack`]): one held, or healed now (with one
    /// log line), written back to the store only if [`HealedPacks::set_write_back`] said so.
    pub fn get(&self, repo: &Repository, pack: &PackId) -> Result<Arc<Vec<u8>>> {
        if let Some(known) = self.known(pack) {
            return known;
        }
        let _one_at_a_time = self.healing.lock();
        // Healed (or found beyond healing) by the heal this one waited for.
        if let Some(known) = self.known(pack) {
            return known;
        }
        let bytes = match healed_pack(repo, pack) {
            Ok(Rebuilt::Healed(bytes)) => {
                if self.write_back.load(Ordering::Relaxed) {
                    self.write_back(repo, pack, &bytes);
                } else {
                    tracing::warn!(
                        "pack {pack} is damaged: its blobs are read from a copy healed from its \
                         parity (`cairn scrub` or `cairn repair packs` heals it in the store)"
                    );
                }
                Arc::new(bytes)
            }
            // Proven sound: its blobs are opened from these bytes (each still verified), and
            // nothing is remembered against it, should it be damaged later.
            Ok(Rebuilt::Sound(bytes)) => Arc::new(bytes),
            Ok(Rebuilt::Beyond(why)) => {
                let why = format!("pack {pack} cannot be healed from its parity: {why}");
                tracing::warn!("{why}");
                self.state.lock().beyond.put(*pack, why.clone());
                return Err(Error::Invalid(why));
            }
            // No parity (a repository without, or a pack a prune deleted since): nothing to
            // say beyond the read's own error.
            Err(e @ Error::NotFound(_)) => {
                self.state.lock().beyond.put(*pack, String::new());
                return Err(e);
            }
            // A store that failed to answer may answer the next read.
            Err(e) => {
                tracing::warn!("pack {pack}: healing it from its parity failed: {e}");
                return Err(e);
            }
        };
        let budget = self.budget.load(Ordering::Relaxed);
        let mut state = self.state.lock();
        state.held += bytes.len() as u64;
        state.packs.put(*pack, bytes.clone());
        while state.held > budget && state.packs.len() > 1 {
            if let Some((_, dropped)) = state.packs.pop_lru() {
                state.held -= dropped.len() as u64;
            }
        }
        Ok(bytes)
    }

    /// Writes a healed pack back under its name ([`put_if_stored`]). A failure leaves the
    /// damaged pack, and says so.
    fn write_back(&self, repo: &Repository, pack: &PackId, bytes: &[u8]) {
        match put_if_stored(repo.backend().as_ref(), pack, bytes) {
            Ok(()) => tracing::warn!(
                "pack {pack} was damaged: healed from its parity and written back to the store"
            ),
            Err(e) => tracing::warn!(
                "pack {pack} is damaged: its blobs are read from a copy healed from its parity, \
                 but writing it back failed: {e}"
            ),
        }
    }
}
