//! What the store holds, read from it directly: the packs it lists and a pack's own header.
//! Writers (adoption of what a failed job stored, a commit's confirmation of what its snapshot
//! re-uses), prune and check all ask these questions, so the answers live below all of them.

use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::repo::ids::PackId;
use crate::repo::pack::{PackEntry, TRAILER_LEN, header_len_from_trailer, pack_name, parse_header};
use std::collections::HashMap;

/// Every pack in the store, by id, with its size.
pub fn stored_packs(repo: &Repository) -> Result<HashMap<PackId, u64>> {
    let mut stored = HashMap::new();
    for info in repo.backend().list("data/")? {
        let id = info.name.rsplit('/').next().unwrap_or_default();
        match PackId::from_hex(id) {
            Ok(pack) => {
                stored.insert(pack, info.size);
            }
            Err(_) => tracing::warn!("{}: not a pack name; ignored", info.name),
        }
    }
    Ok(stored)
}

/// The packs whose parity objects the store lists (`parity/<xx>/<pack id>`).
pub fn listed_parity(repo: &Repository) -> Result<Vec<PackId>> {
    Ok(repo
        .backend()
        .list("parity/")?
        .iter()
        .filter_map(|info| PackId::from_hex(info.name.rsplit('/').next()?).ok())
        .collect())
}

/// The packs a listing shows, and of `wanted` (packs the caller counts on) those it left out
/// that the store holds when asked by name: a listing that lags or omits a live pack must not
/// make it missing to a writer, check, repair or prune. One request per pack left out; none
/// when the listing is whole.
pub fn stored_packs_confirming(
    repo: &Repository,
    wanted: impl IntoIterator<Item = PackId>,
) -> Result<HashMap<PackId, u64>> {
    let mut stored = stored_packs(repo)?;
    let unlisted: Vec<PackId> = wanted
        .into_iter()
        .filter(|pack| !stored.contains_key(pack))
        .collect();
    for pack in unlisted {
        match repo.backend().stat(&pack_name(&pack)) {
            Ok(size) => {
                tracing::warn!(
                    "pack {}: stored, but the store's listing left it out (is its listing \
                     consistent?)",
                    pack.short()
                );
                stored.insert(pack, size);
            }
            Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(stored)
}

/// Reads a pack's header from its tail: the entries it lists.
pub fn read_pack_header(repo: &Repository, pack: &PackId, size: u64) -> Result<Vec<PackEntry>> {
    let name = pack_name(pack);
    let trailer_len = TRAILER_LEN as u64;
    if size < trailer_len {
        return Err(Error::corrupt(&name, "shorter than a pack trailer"));
    }
    let trailer = repo.backend().get(&name, Some(size - trailer_len..size))?;
    let header_len = u64::from(header_len_from_trailer(pack, &trailer)?);
    let header_end = size - trailer_len;
    let header_start = header_end
        .checked_sub(header_len)
        .ok_or_else(|| Error::corrupt(&name, "header longer than the pack"))?;
    let sealed = repo.backend().get(&name, Some(header_start..header_end))?;
    parse_header(repo.key(), pack, &sealed, header_start)
}
