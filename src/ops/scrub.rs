//! `cairn scrub`: every pack verified against its name and its parity, and healed in place —
//! sectors the device cannot read included — without the password. Parity is over the encrypted bytes and a pack is named by their
//! SHA-256, so the machine that holds the repository can scrub it without ever holding a key.

use crate::backend::Backend;
use crate::backend::salvage::{Salvaged, read_salvaging};
use crate::digest::sha256;
use crate::error::{Error, Result};
use crate::repo::config::{Config, MAX_CONFIG_LEN};
use crate::repo::dictionary;
use crate::repo::heal::{put_if_stored, put_parity_of_stored};
use crate::repo::ids::PackId;
use crate::repo::parity::{self, Parity, SECTOR, TREE_DENSITY, largest_object, parity_name};
use parking_lot::Mutex;
use rayon::prelude::*;
use serde::Serialize;

/// What a scrub found and did.
#[derive(Debug, Default, Serialize)]
pub struct ScrubReport {
    /// Packs read.
    pub packs: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Packs rebuilt from their parity and written back under their names.
    pub healed: Vec<PackId>,
    /// Sectors those heals rebuilt.
    pub sectors_healed: u64,
    /// Damaged packs their parity cannot rebuild, with why (`repair packs` salvages them).
    pub beyond_repair: Vec<(PackId, String)>,
    /// Sound packs whose parity was missing or damaged and was written anew from them.
    pub parity_rewritten: Vec<PackId>,
    /// Compression dictionaries one of whose two copies was damaged, rewritten from the other.
    pub dictionaries_mended: Vec<String>,
    /// Compression dictionaries with neither copy intact, with why.
    pub dictionaries_lost: Vec<(String, String)>,
}

/// Scrubs every pack of the repository in `backend`, calling `progress` with bytes read.
pub fn scrub(backend: &dyn Backend, progress: &(dyn Fn(u64) + Sync)) -> Result<ScrubReport> {
    let config = backend.get_bounded("config", MAX_CONFIG_LEN)?;
    let params = Config::unauthenticated_params(&config)?;
    let largest = params.largest_pack();
    let keeps_parity = params.parity();
    let packs = backend.list("data/")?;
    let report = Mutex::new(ScrubReport::default());
    packs.par_iter().try_for_each(|object| -> Result<()> {
        let Some(id) = object
            .name
            .rsplit('/')
            .next()
            .and_then(|hex| PackId::from_hex(hex).ok())
        else {
            return Ok(());
        };
        // One pack's failure (unreadable, too large) is that pack's outcome, not the scrub's.
        let outcome = scrub_pack(backend, &id, largest, keeps_parity)
            .unwrap_or_else(|e| Outcome::BeyondRepair(format!("cannot be scrubbed: {e}")));
        progress(object.size);
        let mut report = report.lock();
        report.packs += 1;
        report.bytes += object.size;
        match outcome {
            Outcome::Sound => {}
            Outcome::Healed(sectors) => {
                report.healed.push(id);
                report.sectors_healed += sectors;
            }
            Outcome::BeyondRepair(why) => report.beyond_repair.push((id, why)),
            Outcome::ParityRewritten => report.parity_rewritten.push(id),
        }
        Ok(())
    })?;
    let mut report = report.into_inner();
    scrub_dictionaries(backend, &mut report)?;
    report.healed.sort();
    report.beyond_repair.sort();
    report.parity_rewritten.sort();
    Ok(report)
}

/// Checks both copies of every compression dictionary against its name and rewrites a damaged
/// copy from the intact one (no key needed: the name is the hash of a sealed copy).
fn scrub_dictionaries(backend: &dyn Backend, report: &mut ScrubReport) -> Result<()> {
    for (zstd_id, id) in dictionary::list(backend)? {
        let name = dictionary::dict_name(zstd_id, &id);
        let stored = match dictionary::read_stored(backend, &name) {
            Ok(stored) => stored,
            Err(Error::NotFound(_)) => continue,
            Err(e) => {
                report.dictionaries_lost.push((name, e.to_string()));
                continue;
            }
        };
        let inspected = dictionary::inspect(&id, &stored);
        match (inspected.intact, inspected.whole) {
            (Some(_), true) => {}
            (Some(intact), false) => {
                backend.put(&name, &dictionary::mirrored(intact))?;
                report.dictionaries_mended.push(name);
            }
            (None, _) => report
                .dictionaries_lost
                .push((name, "neither copy matches its name".into())),
        }
    }
    Ok(())
}

/// What became of one pack.
enum Outcome {
    Sound,
    Healed(u64),
    BeyondRepair(String),
    ParityRewritten,
}

/// Verifies one pack and heals it, or its parity, in place.
fn scrub_pack(
    backend: &dyn Backend,
    pack: &PackId,
    largest: u64,
    keeps_parity: bool,
) -> Result<Outcome> {
    let name = crate::repo::pack::pack_name(pack);
    // The parity first, read around its own lost sectors (it may lie on the same failing
    // disk): it says how many lost sectors of the pack are worth reading around.
    let (object, parity_lost) = match read_salvaging(
        backend,
        &parity_name(pack),
        largest_object(largest),
        SECTOR as u64,
        usize::MAX,
    ) {
        Ok(read) => (Some(read.bytes), !read.lost.is_empty()),
        Err(Error::NotFound(_)) => (None, false),
        Err(e) => return Err(e),
    };
    let parsed = object.as_deref().map(|o| Parity::parse(o, pack));
    let most_lost = match &parsed {
        Some(Ok(parity)) => parity.recovery_sectors() as usize,
        _ => 0,
    };
    let Salvaged { bytes, lost } =
        match read_salvaging(backend, &name, largest, SECTOR as u64, most_lost) {
            Ok(read) => read,
            // Deleted by a prune since the listing: nothing to scrub.
            Err(Error::NotFound(_)) => return Ok(Outcome::Sound),
            Err(e) => return Err(e),
        };
    // The parity's sector checks first: a pack they find damaged is healed without hashing
    // the damaged bytes first (the heal is proven by the hash of what it rebuilds).
    let damage = match &parsed {
        Some(Ok(parity)) => Some(parity.damage(&bytes, &lost)),
        _ => None,
    };
    let damaged_by_parity = damage.as_ref().is_some_and(|d| !d.bad_sectors.is_empty());
    if !damaged_by_parity && lost.is_empty() && sha256(&bytes) == pack.0 {
        let sound = match (&parsed, &damage) {
            // A parity with lost sectors is written anew, even if what it lost was spare.
            (Some(Ok(_)), Some(damage)) => !parity_lost && damage.bad_recovery == 0,
            (None, _) => !keeps_parity,
            _ => false,
        };
        if sound {
            return Ok(Outcome::Sound);
        }
        // Without the key the pack's kind is unknown: a rebuilt parity keeps the density the
        // old one names, or takes the denser one.
        let density = object
            .as_deref()
            .and_then(parity::density_of)
            .unwrap_or(TREE_DENSITY);
        put_parity_of_stored(backend, pack, &parity::build(&bytes, pack, density))?;
        return Ok(Outcome::ParityRewritten);
    }
    let (parity, damage) = match (parsed, damage) {
        (Some(Ok(parity)), Some(damage)) => (parity, damage),
        (Some(Err(e)), _) => {
            return Ok(Outcome::BeyondRepair(format!("damaged; its parity: {e}")));
        }
        _ => {
            return Ok(Outcome::BeyondRepair(
                "damaged, and it has no parity".into(),
            ));
        }
    };
    let bad = damage.bad_sectors.len() as u64;
    let healed = parity.heal_damage(&bytes, &damage);
    // A parity whose table disagrees with a pack that is sound after all (crafted, or a bug)
    // heals nothing: the pack's name decides, and the parity is written anew.
    let unchanged = healed.as_ref().map_or(true, |healed| *healed == bytes);
    if unchanged && lost.is_empty() && sha256(&bytes) == pack.0 {
        let density =
            parity::density_of(object.as_deref().unwrap_or_default()).unwrap_or(TREE_DENSITY);
        put_parity_of_stored(backend, pack, &parity::build(&bytes, pack, density))?;
        return Ok(Outcome::ParityRewritten);
    }
    match healed {
        Ok(healed) => match put_if_stored(backend, pack, &healed) {
            Ok(()) => Ok(Outcome::Healed(bad)),
            // Deleted by a prune since it was read: nothing left to heal.
            Err(Error::NotFound(_)) => Ok(Outcome::Sound),
            Err(e) => Err(e),
        },
        Err(e) => Ok(Outcome::BeyondRepair(format!("damaged: {e}"))),
    }
}
