//! The pruner's steps in the model: phase 1 (read, condemn, record sessions), the claim, and
//! phase 2 (wait, drop lapsed sessions, read again, rewrite the index, delete), each decision
//! made by the commands' own rules.

use super::*;

impl State {
    /// Phase 2's wait: on to drop the lapsed sessions once every recorded one has ended or
    /// lapsed, else back to idle.
    fn ready(&self, gid: u8, guard: Safeguards) -> Pruner {
        let Some((_, Some(recorded))) = self.garbage[usize::from(gid)] else {
            return Pruner::Idle;
        };
        let mut present = recorded & self.sessions;
        if guard.phase2_lists_sessions {
            present |= members(self.listed_sessions(guard))
                .filter(|w| self.writers[usize::from(*w)].seen_garbage & bit(gid) == 0)
                .fold(0, |m, w| m | bit(w));
        }
        let open = members(present).any(|w| self.leases[usize::from(w)] != Lease::Lapsed);
        if open {
            Pruner::Idle
        } else {
            Pruner::P2DropSessions {
                gid,
                lapsed: present,
            }
        }
    }

    /// What a pruner reads first (garbage files, or the index and pack listing), with the rest
    /// of `view` left for the second read.
    fn first_read(&self, guard: Safeguards) -> View {
        if guard.garbage_first {
            View {
                condemned: self.condemned(),
                ..View::default()
            }
        } else {
            View {
                indexed: self.indexed,
                stored: self.stored,
                ..View::default()
            }
        }
    }

    /// `first` completed by the second read.
    fn second_read(&self, guard: Safeguards, first: View) -> View {
        if guard.garbage_first {
            View {
                indexed: self.indexed,
                stored: self.stored,
                ..first
            }
        } else {
            View {
                condemned: self.condemned(),
                ..first
            }
        }
    }

    pub(super) fn pruner_step(&self, p: usize, guard: Safeguards, out: &mut Vec<State>) {
        let runs = (GARBAGE_SLOTS / guard.pruners) as u8;
        let mut s = *self;
        let next = match self.pruners[p] {
            Pruner::Idle => {
                if self.phase1_runs[p] < runs {
                    let mut s = *self;
                    s.phase1_runs[p] += 1;
                    s.pruners[p] = Pruner::P1Read;
                    out.push(s);
                }
                for (gid, file) in self.garbage.iter().enumerate() {
                    if file.is_some() {
                        let mut s = *self;
                        s.pruners[p] = Pruner::P2Check { gid: gid as u8 };
                        out.push(s);
                    }
                }
                return;
            }
            Pruner::P1Read => Pruner::P1First {
                used: self.snapshots,
            },
            Pruner::P1First { used } => Pruner::P1Second {
                used,
                view: self.first_read(guard),
            },
            Pruner::P1Second { used, view } => {
                let view = self.second_read(guard, view);
                let (index, by_pack, sizes) = real_view(view.indexed, view.stored);
                let limits = PlanLimits {
                    max_unused: 1.0,
                    max_repack: 0,
                };
                let condemned = packs(view.condemned);
                match rules::plan(&sizes, &by_pack, &index, &blobs(used), &condemned, limits) {
                    Ok(plan) if !plan.condemned().is_empty() => Pruner::P1Write {
                        doomed: mask_of(&plan.condemned()),
                    },
                    // Nothing to condemn, or a used blob nowhere stored (prune refuses).
                    _ => Pruner::Idle,
                }
            }
            Pruner::P1Write { doomed } => {
                let gid = p as u8 * runs + self.phase1_runs[p] - 1;
                s.garbage[usize::from(gid)] = Some((doomed, None));
                Pruner::P1List { gid }
            }
            Pruner::P1List { gid } => {
                if let Some((_, sessions)) = &mut s.garbage[usize::from(gid)] {
                    *sessions = Some(self.listed_sessions(guard));
                }
                Pruner::Idle
            }
            Pruner::P2Check { gid } => match self.garbage[usize::from(gid)] {
                None => Pruner::Idle,
                Some((_, None)) => {
                    if let Some((_, sessions)) = &mut s.garbage[usize::from(gid)] {
                        *sessions = Some(self.listed_sessions(guard));
                    }
                    Pruner::Idle
                }
                Some(_) if guard.claims => {
                    s.claims[p] = gid + 1;
                    Pruner::P2Claimed { gid }
                }
                Some(_) => self.ready(gid, guard),
            },
            Pruner::P2Claimed { gid } => {
                let contested = (0..guard.pruners).any(|q| q != p && self.claims[q] == gid + 1);
                let next = if contested {
                    Pruner::Idle
                } else {
                    self.ready(gid, guard)
                };
                if next == Pruner::Idle {
                    s.claims[p] = 0;
                }
                next
            }
            Pruner::P2DropSessions { gid, lapsed } => {
                s.sessions &= !lapsed;
                Pruner::P2Read { gid }
            }
            Pruner::P2Read { gid } => Pruner::P2First {
                gid,
                used: self.snapshots,
            },
            Pruner::P2First { gid, used } => Pruner::P2Second {
                gid,
                used,
                view: self.first_read(guard),
            },
            Pruner::P2Second { gid, used, view } => match self.garbage[usize::from(gid)] {
                None => Pruner::Idle,
                Some((here, _)) => {
                    let view = self.second_read(guard, view);
                    let (index, by_pack, _) = real_view(view.indexed, view.stored);
                    let here: Vec<PackId> = members(here).map(pid).collect();
                    let used = if guard.revive {
                        blobs(used)
                    } else {
                        HashSet::new()
                    };
                    let (delete, _) = rules::deletable(
                        &here,
                        &by_pack,
                        &index,
                        &used,
                        &packs(view.stored),
                        &packs(view.condemned),
                    );
                    Pruner::P2Index {
                        gid,
                        delete: mask_of(&delete),
                    }
                }
            },
            Pruner::P2Index { gid, delete } => {
                s.indexed &= !delete;
                Pruner::P2Delete { gid, delete }
            }
            Pruner::P2Delete { gid, delete } => {
                s.stored &= !delete;
                Pruner::P2Done { gid }
            }
            Pruner::P2Done { gid } => {
                s.garbage[usize::from(gid)] = None;
                s.claims[p] = 0;
                Pruner::Idle
            }
        };
        s.pruners[p] = next;
        out.push(s);
    }
}
