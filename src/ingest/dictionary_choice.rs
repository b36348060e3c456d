//! Which compression dictionary a job's small data blobs get ([`crate::repo::dictionary`]).
//!
//! The first small data blobs of a job are held, not sealed, until they make a sample
//! ([`IngestLimits::dictionary_sample`](crate::ingest::IngestLimits)): then one thread decides
//! — the repository's dictionary that compresses the sample best, when it gains, else a new
//! one trained on the sample and stored, else none — and the held blobs and every later small
//! data blob are sealed with that choice. Blobs that arrive while it decides are held too, up
//! to a bound, then compressed alone. A job that ends (or must read back a blob) before the
//! sample is full decides on what it holds. A new dictionary is trained on files picked across
//! the job's trees when the job has trees to pick from ([`crate::ingest::sample`]), not on the
//! held blobs, which are one corner of them.

use crate::error::Result;
use crate::ingest::IngestLimits;
use crate::ingest::level::dictionary_level;
use crate::ingest::sample::{SampleRules, sample_small_files};
use crate::repo::Repository;
use crate::repo::blob::{Compression, compressed};
use crate::repo::dictionary::{self, Dictionary};
use crate::repo::ids::{BlobId, BlobKind};
use crate::repo::witness::Witness;
use parking_lot::{Condvar, Mutex};
use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

/// Data blobs at most this large are compressed with a dictionary: small files, which start
/// with an empty window. Measured on linux/ (zstd 1.5.7, one thread, level 3): blobs up to
/// 64 KiB gain 17.9 MB with a dictionary at level 3, blobs up to 512 KiB the same 17.9 MB,
/// while compressing with a dictionary costs more CPU per byte at every size; in first backups
/// of linux/ (2 runs each) the bound at 16 KiB gave 257-259 MB in 8.4-8.8 s, at 64 KiB 255-256
/// MB in 8.6-9.2 s. 32 KiB sits between (docs/DEPARTURES.md 38).
pub const DICTIONARY_MAX_BLOB: usize = 32 << 10;

/// Sample compression must shrink by at least this share (in hundredths) with a dictionary for
/// the dictionary to be used, or a newly trained one kept.
const DICTIONARY_GAIN_PERCENT: usize = 2;

/// A blob held until the choice is made.
pub struct Held {
    /// Data or tree (only data blobs are held).
    pub kind: BlobKind,
    /// Its id.
    pub id: BlobId,
    /// What was noted while its id was computed.
    pub witness: Witness,
    /// Its plaintext.
    pub plaintext: Vec<u8>,
}

/// What to do with a blob offered to the choice.
pub enum Admit<'a> {
    /// Seal it now, with this dictionary (or alone).
    Seal(Option<Arc<Dictionary>>, Cow<'a, [u8]>),
    /// Held; it will be sealed by whoever makes the choice.
    Held,
    /// The sample is full: the caller decides on these blobs, then calls [`DictionaryChoice::chosen`].
    Decide(Vec<Held>),
}

enum Phase {
    /// Holding blobs for the sample.
    Sampling,
    /// One thread is deciding; blobs arriving meanwhile are held (bounded).
    Deciding,
    /// Decided; `sealing` while the decider still seals the blobs held meanwhile.
    Chosen {
        dictionary: Option<Arc<Dictionary>>,
        sealing: bool,
    },
}

struct State {
    phase: Phase,
    held: Vec<Held>,
    held_bytes: usize,
}

/// One job's dictionary choice.
pub struct DictionaryChoice {
    enabled: bool,
    sample_bytes: usize,
    /// Where a sample for training may be picked from: the trees a backup reads.
    trees: OnceLock<SampleRules>,
    state: Mutex<State>,
    settled: Condvar,
}

impl DictionaryChoice {
    /// The choice for a job in a repository that uses dictionaries (`enabled`) or not.
    pub fn new(enabled: bool, limits: &IngestLimits) -> DictionaryChoice {
        DictionaryChoice {
            enabled,
            sample_bytes: limits.dictionary_sample,
            trees: OnceLock::new(),
            state: Mutex::new(State {
                phase: Phase::Sampling,
                held: Vec::new(),
                held_bytes: 0,
            }),
            settled: Condvar::new(),
        }
    }

    /// Trains dictionaries on files picked across these trees (what the job backs up).
    pub fn sample_across(&self, trees: SampleRules) {
        let _ = self.trees.set(trees);
    }

    /// A sample for training, picked across the job's trees; empty when it has none.
    fn walked_sample(&self) -> Vec<Vec<u8>> {
        self.trees.get().map_or_else(Vec::new, |trees| {
            sample_small_files(trees, self.sample_bytes, DICTIONARY_MAX_BLOB)
        })
    }

    /// Offers one blob about to be sealed.
    pub fn admit<'a>(
        &self,
        kind: BlobKind,
        id: BlobId,
        witness: Witness,
        plaintext: Cow<'a, [u8]>,
    ) -> Admit<'a> {
        if !self.enabled || kind != BlobKind::Data || plaintext.len() > DICTIONARY_MAX_BLOB {
            return Admit::Seal(None, plaintext);
        }
        let mut state = self.state.lock();
        let hold_limit = match &state.phase {
            Phase::Chosen { dictionary, .. } => return Admit::Seal(dictionary.clone(), plaintext),
            Phase::Sampling => usize::MAX,
            // Bounds the memory held while the decider trains.
            Phase::Deciding => 4 * self.sample_bytes,
        };
        if state.held_bytes + plaintext.len() > hold_limit {
            return Admit::Seal(None, plaintext);
        }
        state.held_bytes += plaintext.len();
        state.held.push(Held {
            kind,
            id,
            witness,
            plaintext: plaintext.into_owned(),
        });
        if matches!(state.phase, Phase::Sampling) && state.held_bytes >= self.sample_bytes {
            state.phase = Phase::Deciding;
            state.held_bytes = 0;
            return Admit::Decide(std::mem::take(&mut state.held));
        }
        Admit::Held
    }

    /// Decides now on what is held, if nobody has begun to: for a job that ends, or must read
    /// back a blob, before its sample is full. `None` when the choice is made or being made.
    pub fn decide_now(&self) -> Option<Vec<Held>> {
        let mut state = self.state.lock();
        if !matches!(state.phase, Phase::Sampling) {
            return None;
        }
        state.phase = Phase::Deciding;
        state.held_bytes = 0;
        Some(std::mem::take(&mut state.held))
    }

    /// Records the decider's choice and returns the blobs held while it decided, for it to
    /// seal; it calls [`DictionaryChoice::release`] when they are in packs.
    pub fn chosen(&self, dictionary: Option<Arc<Dictionary>>) -> Vec<Held> {
        let mut state = self.state.lock();
        state.phase = Phase::Chosen {
            dictionary,
            sealing: true,
        };
        state.held_bytes = 0;
        std::mem::take(&mut state.held)
    }

    /// The decider is done with every blob held (sealed, or the job failed): waiters go on.
    /// Called also when the decider panicked before it chose, which then means none; returns
    /// whether blobs held were dropped so (the job must then fail).
    pub fn release(&self) -> bool {
        let mut state = self.state.lock();
        let dropped = match &mut state.phase {
            Phase::Chosen { sealing, .. } => {
                *sealing = false;
                false
            }
            _ => {
                state.phase = Phase::Chosen {
                    dictionary: None,
                    sealing: false,
                };
                state.held_bytes = 0;
                !std::mem::take(&mut state.held).is_empty()
            }
        };
        self.settled.notify_all();
        dropped
    }

    /// Waits until the choice is made and every held blob is sealed.
    pub fn wait_settled(&self) {
        let mut state = self.state.lock();
        while !matches!(state.phase, Phase::Chosen { sealing: false, .. }) {
            self.settled.wait(&mut state);
        }
    }
}

/// The repository's dictionary that compresses the `held` blobs best by at least
/// [`DICTIONARY_GAIN_PERCENT`] (blobs alone at `level`, with a dictionary one lower); else, when
/// `may_train` and the held blobs are at least a quarter of `sample_target` bytes, one trained
/// on a sample picked across the job's trees by `choice` where it can (else the held blobs)
/// and stored, if it gains that much on that sample, loses nothing on the held blobs and the
/// repository has room for it; else none.
pub fn pick_dictionary(
    repo: &Repository,
    choice: &DictionaryChoice,
    held: &[Held],
    level: i32,
    may_train: bool,
    sample_target: usize,
) -> Result<Option<Arc<Dictionary>>> {
    if held.is_empty() {
        return Ok(None);
    }
    let size = |blobs: &[&[u8]], dictionary: Option<&Dictionary>| -> usize {
        let level = match dictionary {
            Some(_) => dictionary_level(level),
            None => level,
        };
        blobs
            .iter()
            .map(|blob| {
                let how = Compression { level, dictionary };
                compressed(blob, how).map_or(blob.len(), |c| c.len())
            })
            .sum()
    };
    let gains = |with: usize, alone: usize| with * 100 <= alone * (100 - DICTIONARY_GAIN_PERCENT);
    let held: Vec<&[u8]> = held.iter().map(|b| b.plaintext.as_slice()).collect();
    let alone = size(&held, None);
    let (existing, taken) = repo.dictionaries()?;
    let best = existing
        .iter()
        .map(|d| (size(&held, Some(d)), d))
        .min_by_key(|(size, _)| *size);
    if let Some((with, best)) = best
        && gains(with, alone)
    {
        return Ok(Some(best.clone()));
    }
    if !may_train || existing.len() >= dictionary::MAX_DICTIONARIES {
        return Ok(None);
    }
    let enough =
        |blobs: &[&[u8]]| blobs.iter().map(|b| b.len()).sum::<usize>() >= sample_target / 4;
    // Only a job with enough small data of its own trains one (an incremental run with a few
    // new files does not add dictionaries to the repository).
    if !enough(&held) {
        return Ok(None);
    }
    let walked = choice.walked_sample();
    let walked: Vec<&[u8]> = walked.iter().map(Vec::as_slice).collect();
    // Files picked across the job's trees first; the held blobs when there are none, or when
    // what they give is refused.
    let samples = match enough(&walked) {
        true => vec![walked, held.clone()],
        false => vec![held.clone()],
    };
    for sample in samples {
        let Some(trained) = dictionary::train(&sample, dictionary::fresh_zstd_id(&taken)) else {
            continue;
        };
        let candidate = dictionary::seal(repo.key(), trained)?;
        // It must gain on what it was trained for, and lose nothing on the blobs at hand: files
        // planted where the walks go cannot make the job compress worse.
        if !gains(size(&sample, Some(&candidate.0)), size(&sample, None))
            || size(&held, Some(&candidate.0)) > alone
        {
            continue;
        }
        let stored = repo.store_dictionary(candidate)?;
        tracing::info!(
            "stored compression dictionary {} ({} bytes, trained on {} files)",
            stored.id.short(),
            stored.bytes().len(),
            sample.len()
        );
        return Ok(Some(stored));
    }
    Ok(None)
}
