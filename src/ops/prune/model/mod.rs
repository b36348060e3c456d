//! An exhaustive model of the prune protocol (DESIGN §6): two writers, a pruner that crashes
//! and restarts, a forget, and leases that run out — and, apart, two pruners at once beside a
//! writer — explored over every interleaving of their steps. Invariant: **no snapshot
//! references a blob that is not stored** — except, for the moment between its write and its
//! read-back, the snapshot of a live writer, which the read-back then deletes.
//!
//! Decisions are the commands' own: [`rules::plan`] (phase 1), [`rules::deletable`] (phase 2)
//! and [`crate::repo::garbage::unusable_packs`] (the writer's de-duplication and read-back check) run on every
//! step that makes them. Abstracted, plainly: storage is a set of packs and index entries
//! (each read or write of one kind of file is one atomic step; a pruner reads the garbage
//! files and the pack listing in two steps, in the order the commands do); time is a
//! per-session lease state (fresh → expired → lapsed-past-margin) advanced at any moment,
//! except that a writer is not paused past the margin between its lease check and its
//! snapshot write (the assumption DESIGN §6 states), and a dead pruner's claim lapses at any
//! moment while a live one's does not; the one blob both writers need is the one only the
//! forgotten snapshot used; repacking is not modelled (it only adds copies before condemning).
//!
//! Each safeguard is shown necessary: without it the explorer finds a loss.
//!
//! Apart, the defence in depth against a key holder who writes a garbage file that lies about
//! the sessions it recorded (none), and against a store whose session listings lag (DESIGN §6):
//! phase 2 waits for every session it can list that neither a garbage file recorded nor says
//! it saw that garbage file (guard 1), and a commit confirms that the packs its snapshot uses
//! are stored and not condemned by a garbage file that will not wait for it (guard 2). With a
//! liar, guard 1 keeps every snapshot whole; without it a writer killed after its snapshot
//! write leaves one whose data is gone. With lagging listings no guard can keep a killed
//! writer's snapshot whole, and guard 2 is what keeps a writer from reporting success for a
//! snapshot whose data is deleted.

use super::rules::{self, PlanLimits};
use crate::repo::ids::{BlobId, BlobKind, PackId};
use crate::repo::index::{Index, Segment, SegmentPack};
use crate::repo::pack::PackEntry;
use std::collections::{HashMap, HashSet};

// Packs, snapshots and sessions are bits of a mask. Pack 0 holds the blob only the forgotten
// snapshot used (SHARED), pack 1 a blob a snapshot that stays uses (KEPT); writer `w` stores
// its own copy of SHARED in pack `2 + w` and commits snapshot `2 + w`. Snapshot 0 is the one
// forgotten, snapshot 1 the one that stays.
const SHARED: u8 = 1;
const KEPT: u8 = 2;
const OLD_PACK: u8 = 0;
const KEPT_PACK: u8 = 1;
const FORGOTTEN: u8 = 0;
const STAYS: u8 = 1;
/// Most writers and pruners a configuration explores.
const WRITERS: usize = 2;
const PRUNERS: usize = 2;
/// Garbage files honest pruners write at most: every pruner's phase-1 runs together (each may
/// crash and be resumed by a phase 2).
const GARBAGE_SLOTS: usize = 2;
/// The slot of the lying key holder's garbage file, after the honest ones.
const LIAR_SLOT: usize = GARBAGE_SLOTS;

fn bit(n: u8) -> u8 {
    1 << n
}

fn members(mask: u8) -> impl Iterator<Item = u8> {
    (0..8).filter(move |n| mask & bit(*n) != 0)
}

/// The blob pack `pack` holds, and the blob snapshot `snap` references.
fn blob_in(pack_or_snapshot: u8) -> u8 {
    if pack_or_snapshot == KEPT_PACK {
        KEPT
    } else {
        SHARED
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Lease {
    Fresh,
    /// Ran out: the writer may not commit; prune still waits (the margin).
    Expired,
    /// Past the margin: prune may treat the session as lapsed.
    Lapsed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Pc {
    Idle,
    LoadIndex,
    /// Reads the garbage files and the stored packs, then decides whether to de-duplicate.
    ReadGarbage,
    StorePack,
    IndexPack,
    CheckLease,
    WriteSnapshot,
    ReadBack,
    End,
    Done,
    Failed,
    /// Failed by the commit's check (guard 2) while its session was still its own.
    Refused,
    Crashed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Writer {
    pc: Pc,
    seen_index: u8,
    /// Garbage files (by slot) the writer read before it de-duplicated, which its session
    /// file then names.
    seen_garbage: u8,
}

/// A pruner's step. Reads of the garbage files and of the pack listing are separate steps
/// (`First`, `Second`), in the order [`Safeguards::garbage_first`] says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Pruner {
    Idle,
    P1Read,
    P1First {
        used: u8,
    },
    P1Second {
        used: u8,
        view: View,
    },
    P1Write {
        doomed: u8,
    },
    P1List {
        gid: u8,
    },
    P2Check {
        gid: u8,
    },
    /// Its claim on the garbage file is written; next it lists the others' claims.
    P2Claimed {
        gid: u8,
    },
    P2DropSessions {
        gid: u8,
        lapsed: u8,
    },
    P2Read {
        gid: u8,
    },
    P2First {
        gid: u8,
        used: u8,
    },
    P2Second {
        gid: u8,
        used: u8,
        view: View,
    },
    P2Index {
        gid: u8,
        delete: u8,
    },
    P2Delete {
        gid: u8,
        delete: u8,
    },
    P2Done {
        gid: u8,
    },
}

/// What a pruner read of the repository: condemned packs, indexed packs, stored packs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
struct View {
    condemned: u8,
    indexed: u8,
    stored: u8,
}

/// A garbage file: condemned packs, recorded sessions (`None` until recorded).
type Garbage = Option<(u8, Option<u8>)>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct State {
    stored: u8,
    indexed: u8,
    snapshots: u8,
    /// Session files present, by writer.
    sessions: u8,
    leases: [Lease; WRITERS],
    garbage: [Garbage; GARBAGE_SLOTS + 1],
    writers: [Writer; WRITERS],
    pruners: [Pruner; PRUNERS],
    phase1_runs: [u8; PRUNERS],
    /// Claims on garbage files, by pruner: `(garbage id + 1)`, 0 for none.
    claims: [u8; PRUNERS],
    forgotten: bool,
    /// The lying key holder wrote its garbage file.
    lied: bool,
}

/// Variants of the protocol the explorer runs; the correct one has every safeguard.
#[derive(Clone, Copy)]
struct Safeguards {
    /// Prune waits a margin past the lease (a writer is never paused past it between lease
    /// check and snapshot write).
    margin: bool,
    /// The writer reads its session back after the snapshot write.
    read_back: bool,
    /// Phase 2 takes back condemned packs that snapshots written since need.
    revive: bool,
    /// Writers may be killed at any step.
    writer_crashes: bool,
    /// Pruners read the garbage files before listing the packs.
    garbage_first: bool,
    /// A pruner claims a garbage file before sweeping it, and backs off if another did.
    claims: bool,
    /// Writers and pruners running; each pruner runs phase 1 `GARBAGE_SLOTS / pruners` times.
    writers: usize,
    pruners: usize,
    /// A key holder writes, once and at any moment, a garbage file condemning one stored pack
    /// and recording no session.
    liar: bool,
    /// Session listings see no session (a store whose listings lag, at its worst): neither
    /// phase 1's recording nor guard 1 sees any writer.
    lagging_sessions: bool,
    /// Guard 1: phase 2 also waits for every listed session not recorded by the garbage file
    /// and not naming it as seen.
    phase2_lists_sessions: bool,
    /// Guard 2: a commit confirms its blob is in a stored pack no garbage file condemns that
    /// will not wait for it (one that did not record it).
    commit_confirms: bool,
}

const SAFE: Safeguards = Safeguards {
    margin: true,
    read_back: true,
    revive: true,
    writer_crashes: true,
    garbage_first: true,
    // One pruner never meets another's claim: left out, it only adds states.
    claims: false,
    writers: 2,
    pruners: 1,
    liar: false,
    lagging_sessions: false,
    phase2_lists_sessions: true,
    commit_confirms: true,
};

/// A lying garbage file beside one writer and a pruner.
const LIAR: Safeguards = Safeguards {
    writers: 1,
    liar: true,
    ..SAFE
};

/// Two prunes at once beside one writer.
const TWO_PRUNERS: Safeguards = Safeguards {
    writers: 1,
    pruners: 2,
    claims: true,
    ..SAFE
};

fn pid(p: u8) -> PackId {
    PackId([p; 32])
}

fn bid(b: u8) -> BlobId {
    BlobId([b; 32])
}

fn entry(blob: u8) -> PackEntry {
    PackEntry {
        id: bid(blob),
        kind: BlobKind::Data,
        offset: 0,
        sealed_len: 100,
        raw_len: 100,
        compressed: false,
        group: None,
    }
}

/// The index, pack contents and stored sizes the real rules take, built from masks.
fn real_view(
    indexed: u8,
    stored: u8,
) -> (Index, HashMap<PackId, Vec<PackEntry>>, HashMap<PackId, u64>) {
    let by_pack: HashMap<PackId, Vec<PackEntry>> = members(indexed)
        .map(|p| (pid(p), vec![entry(blob_in(p))]))
        .collect();
    let packs = members(indexed)
        .map(|p| SegmentPack {
            pack: pid(p),
            blobs: vec![entry(blob_in(p))],
        })
        .collect();
    let sizes = members(stored).map(|p| (pid(p), 100)).collect();
    (
        Index::from_segments(vec![Segment { packs }]),
        by_pack,
        sizes,
    )
}

fn packs(mask: u8) -> HashSet<PackId> {
    members(mask).map(pid).collect()
}

fn mask_of<'a>(packs: impl IntoIterator<Item = &'a PackId>) -> u8 {
    packs.into_iter().fold(0, |m, p| m | bit(p.0[0]))
}

fn blobs(mask: u8) -> HashSet<BlobId> {
    members(mask).map(|s| bid(blob_in(s))).collect()
}

impl State {
    fn initial() -> State {
        let idle = Writer {
            pc: Pc::Idle,
            seen_index: 0,
            seen_garbage: 0,
        };
        State {
            stored: bit(OLD_PACK) | bit(KEPT_PACK),
            indexed: bit(OLD_PACK) | bit(KEPT_PACK),
            snapshots: bit(FORGOTTEN) | bit(STAYS),
            sessions: 0,
            leases: [Lease::Fresh; WRITERS],
            garbage: [None; GARBAGE_SLOTS + 1],
            writers: [idle; WRITERS],
            pruners: [Pruner::Idle; PRUNERS],
            phase1_runs: [0; PRUNERS],
            claims: [0; PRUNERS],
            forgotten: false,
            lied: false,
        }
    }

    /// The garbage files present, as a mask of slots.
    fn garbage_slots(&self) -> u8 {
        (0..self.garbage.len())
            .filter(|g| self.garbage[*g].is_some())
            .fold(0, |m, g| m | bit(g as u8))
    }

    /// The session files a listing returns now.
    fn listed_sessions(&self, guard: Safeguards) -> u8 {
        if guard.lagging_sessions {
            0
        } else {
            self.sessions
        }
    }

    /// Packs condemned by garbage files that will not wait for writer `w`: those that did not
    /// record it (guard 2's question; one it saw it avoided, one it did not see may hold what
    /// it re-used).
    fn condemned_without_waiting(&self, w: usize) -> u8 {
        self.garbage
            .iter()
            .flatten()
            .filter(|(_, recorded)| recorded.is_none_or(|r| r & bit(w as u8) == 0))
            .fold(0, |m, (packs, _)| m | packs)
    }

    /// A writer the commit's check refused while nothing lied: with honest garbage files and
    /// consistent listings, every garbage file records a writer or was read by it, so the
    /// check must never fail one.
    fn false_refusal(&self) -> Option<String> {
        (0..WRITERS)
            .find(|w| self.writers[*w].pc == Pc::Refused)
            .map(|w| format!("writer {w} refused with nothing lying: {self:?}"))
    }

    /// A writer reporting success for a snapshot whose blob is not stored.
    fn false_success(&self) -> Option<String> {
        (0..WRITERS).find_map(|w| {
            let own = 2 + w as u8;
            let succeeded = matches!(self.writers[w].pc, Pc::End | Pc::Done);
            let stored = members(self.stored).any(|p| blob_in(p) == blob_in(own));
            (succeeded && self.snapshots & bit(own) != 0 && !stored)
                .then(|| format!("writer {w} reports success, its blob is gone: {self:?}"))
        })
    }

    fn condemned(&self) -> u8 {
        self.garbage.iter().flatten().fold(0, |m, (p, _)| m | p)
    }

    /// Whether a writer that read `seen_index` may de-duplicate against SHARED, with the
    /// garbage files and stored packs as they are now: the writer's own rule.
    fn shared_usable(&self, seen_index: u8) -> bool {
        let (index, _, _) = real_view(seen_index, self.stored);
        let unusable = crate::repo::garbage::unusable_packs(
            index.packs(),
            &packs(self.stored),
            &packs(self.condemned()),
        );
        index.contains_outside(&bid(SHARED), &unusable)
    }

    /// The invariant: every snapshot's blob is stored, but for a live writer's snapshot
    /// between write and read-back.
    fn violation(&self) -> Option<String> {
        for snap in members(self.snapshots) {
            let pending = snap >= 2 && self.writers[usize::from(snap - 2)].pc == Pc::ReadBack;
            let blob = blob_in(snap);
            let stored = members(self.stored).any(|p| blob_in(p) == blob);
            if !pending && !stored {
                return Some(format!(
                    "snapshot {snap} references blob {blob}, not stored: {self:?}"
                ));
            }
        }
        None
    }

    fn successors(&self, guard: Safeguards, out: &mut Vec<State>) {
        for w in 0..guard.writers {
            out.extend(self.writer_step(w, guard));
            if guard.writer_crashes {
                out.extend(self.crash_writer(w));
            }
            out.extend(self.time_passes(w, guard));
        }
        for p in 0..guard.pruners {
            self.pruner_step(p, guard, out);
            if self.pruners[p] != Pruner::Idle {
                let mut crashed = *self;
                crashed.pruners[p] = Pruner::Idle;
                out.push(crashed);
            }
            // The claim of a pruner that died lapses in time (a live sweeper finishes within
            // its claim's lease: the same assumption as the writers' margin).
            if self.pruners[p] == Pruner::Idle && self.claims[p] != 0 {
                let mut lapsed = *self;
                lapsed.claims[p] = 0;
                out.push(lapsed);
            }
        }
        if !self.forgotten {
            out.push(State {
                forgotten: true,
                snapshots: self.snapshots & !bit(FORGOTTEN),
                ..*self
            });
        }
        if guard.liar && !self.lied {
            for pack in members(self.stored) {
                let mut lied = *self;
                lied.lied = true;
                lied.garbage[LIAR_SLOT] = Some((bit(pack), Some(0)));
                out.push(lied);
            }
        }
    }

    fn crash_writer(&self, w: usize) -> Option<State> {
        let alive = !matches!(
            self.writers[w].pc,
            Pc::Idle | Pc::Done | Pc::Failed | Pc::Refused | Pc::Crashed
        );
        alive.then(|| {
            let mut s = *self;
            s.writers[w].pc = Pc::Crashed;
            s
        })
    }

    fn time_passes(&self, w: usize, guard: Safeguards) -> Option<State> {
        if self.sessions & bit(w as u8) == 0 {
            return None;
        }
        let next = match self.leases[w] {
            Lease::Fresh => Lease::Expired,
            // The margin: no pause past it between the lease check and the snapshot write.
            Lease::Expired if guard.margin && self.writers[w].pc == Pc::WriteSnapshot => {
                return None;
            }
            Lease::Expired => Lease::Lapsed,
            Lease::Lapsed => return None,
        };
        let mut s = *self;
        s.leases[w] = next;
        Some(s)
    }

    fn writer_step(&self, w: usize, guard: Safeguards) -> Option<State> {
        let mut s = *self;
        let me = bit(w as u8);
        let own = 2 + w as u8;
        let writer = &mut s.writers[w];
        match writer.pc {
            Pc::Idle => {
                s.sessions |= me;
                s.leases[w] = Lease::Fresh;
                writer.pc = Pc::LoadIndex;
            }
            Pc::LoadIndex => {
                writer.seen_index = self.indexed;
                writer.pc = Pc::ReadGarbage;
            }
            Pc::ReadGarbage => {
                writer.seen_garbage = self.garbage_slots();
                writer.pc = if self.shared_usable(writer.seen_index) {
                    Pc::CheckLease
                } else {
                    Pc::StorePack
                };
            }
            Pc::StorePack => {
                s.stored |= bit(own);
                writer.pc = Pc::IndexPack;
            }
            Pc::IndexPack => {
                s.indexed |= bit(own);
                writer.pc = Pc::CheckLease;
            }
            Pc::CheckLease => {
                if self.leases[w] == Lease::Fresh {
                    writer.pc = Pc::WriteSnapshot;
                } else {
                    writer.pc = Pc::Failed;
                    s.sessions &= !me;
                }
            }
            Pc::WriteSnapshot => {
                s.snapshots |= bit(own);
                writer.pc = Pc::ReadBack;
            }
            Pc::ReadBack => {
                let mine = self.sessions & me != 0 || !guard.read_back;
                // A garbage file whose sessions are not recorded yet is recorded by the
                // writer's check, as the next prune would: the sessions listed, and itself.
                if guard.commit_confirms {
                    for file in s.garbage.iter_mut().flatten() {
                        if file.1.is_none() {
                            file.1 = Some(self.listed_sessions(guard) | me);
                        }
                    }
                }
                let unsafe_homes = State {
                    garbage: s.garbage,
                    ..*self
                }
                .condemned_without_waiting(w);
                let confirmed = !guard.commit_confirms
                    || members(self.indexed & self.stored & !unsafe_homes)
                        .any(|p| blob_in(p) == blob_in(own));
                if (mine || self.shared_usable(self.indexed)) && confirmed {
                    writer.pc = Pc::End;
                } else {
                    s.snapshots &= !bit(own);
                    writer.pc = if self.sessions & me != 0 && !confirmed {
                        Pc::Refused
                    } else {
                        Pc::Failed
                    };
                    s.sessions &= !me;
                }
            }
            Pc::End => {
                s.sessions &= !me;
                writer.pc = Pc::Done;
            }
            Pc::Done | Pc::Failed | Pc::Refused | Pc::Crashed => return None,
        }
        Some(s)
    }
}

mod explore;
mod pruner;
