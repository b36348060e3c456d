//! Healing a pack in place from its parity ([`crate::repo::parity`]): the pack is rebuilt from
//! what is still readable and written back under its own name. The rebuilt bytes hash to that
//! name, so they are the bytes the index already describes: nothing else changes.

use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::repo::ids::PackId;
use crate::repo::pack::pack_name;
use crate::repo::parity::{Parity, largest_object, parity_name};
use std::sync::Arc;

/// The bytes of `pack` rebuilt from what the store holds of it and its parity, without writing
/// anything: an error says why it cannot be (no parity, too much damage, a parity that does not
/// rebuild the pack).
pub fn healed_pack(repo: &Repository, pack: &PackId) -> Result<Vec<u8>> {
    let name = pack_name(pack);
    let object = repo
        .backend()
        .get_bounded(
            &parity_name(pack),
            largest_object(repo.config().params.largest_pack()),
        )
        .map_err(|e| match e {
            Error::NotFound(_) => Error::corrupt(&name, "damaged, and it has no parity"),
            e => e,
        })?;
    let parity = Parity::parse(&object, pack)
        .map_err(|e| Error::corrupt(&name, format!("damaged, and its parity is unusable: {e}")))?;
    let largest = repo.config().params.largest_pack();
    if parity.pack_len() > largest {
        return Err(Error::corrupt(
            &name,
            "damaged, and its parity claims a pack larger than any this repository writes",
        ));
    }
    // Not what a cache kept of the damaged bytes.
    repo.backend().forget_cached(&name, None);
    let bytes = repo.backend().get_bounded(&name, largest)?;
    parity
        .heal(&bytes, &[])
        .map_err(|e| Error::corrupt(&name, format!("damaged: {e}")))
}

/// Heals `pack` in the store: rebuilt from its parity ([`healed_pack`]) and written back under
/// its name (the local store writes a temporary file, syncs it and renames it over the pack).
pub fn heal_in_place(repo: &Repository, pack: &PackId) -> Result<()> {
    let healed = healed_pack(repo, pack)?;
    repo.backend().put(&pack_name(pack), &healed)
}

/// The pack last healed in memory for reads, so the other blobs of a damaged pack are served
/// from it: at most one pack held, one heal at a time (the lock is held while healing, so
/// readers of the same pack wait for that heal rather than start their own).
#[derive(Default)]
pub struct HealedPacks {
    last: parking_lot::Mutex<Option<(PackId, Arc<Vec<u8>>)>>,
}

impl HealedPacks {
    /// `pack` as rebuilt from its parity ([`healed_pack`]): the one held, or healed now (with
    /// one log line), nothing written to the store.
    pub fn get(&self, repo: &Repository, pack: &PackId) -> Result<Arc<Vec<u8>>> {
        let mut last = self.last.lock();
        if let Some((held, bytes)) = &*last
            && held == pack
        {
            return Ok(bytes.clone());
        }
        let bytes = Arc::new(healed_pack(repo, pack)?);
        tracing::warn!(
            "pack {pack} is damaged: its blobs are read from a copy healed from its parity \
             (`cairn scrub` or `cairn repair packs` heals it in the store)"
        );
        *last = Some((*pack, bytes.clone()));
        Ok(bytes)
    }
}
