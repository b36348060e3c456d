//! `cairn repair parity`: a sound parity object for every stored pack — the packs of a
//! repository made before parity existed, or packs whose parity was lost or damaged — without
//! touching a pack or the index.

use crate::backend::salvage::read_salvaging;
use crate::digest::sha256;
use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::repo::heal::put_parity_of_stored;
use crate::repo::ids::{BlobKind, PackId};
use crate::repo::pack::pack_name;
use crate::repo::parity::{self, Parity, SECTOR, largest_object, parity_name};
use crate::repo::stored::read_pack_header;
use rayon::prelude::*;
use serde::Serialize;

/// What `repair parity` did.
#[derive(Debug, Default, Serialize)]
pub struct ParityRepair {
    /// Packs read.
    pub packs: usize,
    /// Packs that got a new parity object (theirs was missing or damaged).
    pub written: Vec<PackId>,
    /// Packs whose bytes do not match their name: no parity is made from damaged bytes
    /// (`repair packs` first).
    pub damaged: Vec<PackId>,
    /// Packs that could not be read or given parity, with why (the others still are).
    pub failed: Vec<(PackId, String)>,
}

/// What became of one pack.
enum Outcome {
    Sound,
    Written,
    Damaged,
    Failed(String),
}

/// Reads every stored pack and writes a parity object for each that has no sound one.
pub fn repair_parity(repo: &Repository, progress: &(dyn Fn(u64) + Sync)) -> Result<ParityRepair> {
    let listed = repo.backend().list("data/")?;
    let outcomes: Vec<(PackId, Outcome)> = listed
        .par_iter()
        .filter_map(|object| {
            let hex = object.name.rsplit('/').next()?;
            let pack = PackId::from_hex(hex).ok()?;
            // One pack's failure is that pack's outcome, not the whole repair's.
            let outcome =
                give_parity(repo, &pack).unwrap_or_else(|e| Outcome::Failed(e.to_string()));
            progress(object.size);
            Some((pack, outcome))
        })
        .collect();
    let mut report = ParityRepair {
        packs: outcomes.len(),
        ..ParityRepair::default()
    };
    for (pack, outcome) in outcomes {
        match outcome {
            Outcome::Sound => {}
            Outcome::Written => report.written.push(pack),
            Outcome::Damaged => report.damaged.push(pack),
            Outcome::Failed(why) => report.failed.push((pack, why)),
        }
    }
    report.written.sort();
    report.damaged.sort();
    report.failed.sort();
    Ok(report)
}

/// Gives `pack` a sound parity object unless it has one.
fn give_parity(repo: &Repository, pack: &PackId) -> Result<Outcome> {
    let largest = repo.config().params.largest_pack();
    let bytes = match repo.backend().get_bounded(&pack_name(pack), largest) {
        Ok(bytes) => bytes,
        // Deleted by a prune since the listing.
        Err(Error::NotFound(_)) => return Ok(Outcome::Sound),
        Err(e) => return Err(e),
    };
    if sha256(&bytes) != pack.0 {
        return Ok(Outcome::Damaged);
    }
    // A parity with sectors the device cannot read is read around, found unsound and replaced.
    let sound = match read_salvaging(
        repo.backend().as_ref(),
        &parity_name(pack),
        largest_object(largest),
        SECTOR as u64,
        usize::MAX,
    ) {
        Ok(object) => {
            object.lost.is_empty()
                && Parity::parse(&object.bytes, pack).is_ok_and(|parity| parity.fits(&bytes))
        }
        Err(Error::NotFound(_)) => false,
        Err(e) => return Err(e),
    };
    if sound {
        return Ok(Outcome::Sound);
    }
    let kind = read_pack_header(repo, pack, bytes.len() as u64)?
        .first()
        .map_or(BlobKind::Data, |e| e.kind);
    let object = parity::for_pack(&bytes, pack, kind)?;
    put_parity_of_stored(repo.backend().as_ref(), pack, &object)?;
    Ok(Outcome::Written)
}
