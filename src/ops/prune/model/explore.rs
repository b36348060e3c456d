//! The explorer and the tests: every interleaving from the initial state, checked against a
//! property, with each safeguard shown necessary by leaving it out.

use super::*;

/// What an exploration looks for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Property {
    /// No snapshot ever references a blob that is not stored (but a live writer's, between
    /// its write and its check); and, where nothing lies, no writer is refused by the check.
    Whole,
    /// No writer reports success for a snapshot whose blob is not stored.
    HonestSuccess,
}

/// What an exploration found.
struct Explored {
    states: usize,
    violation: Option<String>,
    /// States in which the forgotten snapshot's pack was deleted: the prune did its job.
    freed: usize,
}

fn explore(guard: Safeguards) -> Explored {
    explore_for(guard, Property::Whole)
}

fn explore_for(guard: Safeguards, property: Property) -> Explored {
    let mut seen: HashSet<State> = HashSet::new();
    let mut stack = vec![State::initial()];
    let mut next = Vec::new();
    let mut freed = 0;
    while let Some(state) = stack.pop() {
        if !seen.insert(state) {
            continue;
        }
        let honest = !guard.liar && !guard.lagging_sessions;
        let violation = match property {
            Property::Whole => state
                .violation()
                .or_else(|| honest.then(|| state.false_refusal()).flatten()),
            Property::HonestSuccess => state.false_success(),
        };
        if let Some(v) = violation {
            return Explored {
                states: seen.len(),
                violation: Some(v),
                freed,
            };
        }
        if state.stored & bit(OLD_PACK) == 0 {
            freed += 1;
        }
        next.clear();
        state.successors(guard, &mut next);
        stack.extend(next.iter().filter(|s| !seen.contains(s)));
    }
    Explored {
        states: seen.len(),
        violation: None,
        freed,
    }
}

#[test]
fn no_interleaving_of_two_writers_a_crashing_pruner_and_a_forget_loses_a_blob() {
    let result = explore(SAFE);
    eprintln!("explored {} states", result.states);
    assert!(
        result.violation.is_none(),
        "{}",
        result.violation.unwrap_or_default()
    );
    assert!(
        result.states > 10_000,
        "explored only {} states",
        result.states
    );
    assert!(
        result.freed > 0,
        "no interleaving ever deleted the forgotten snapshot's pack"
    );
}

#[test]
fn each_safeguard_is_needed_the_model_finds_the_loss_without_it() {
    let no_margin = Safeguards {
        margin: false,
        ..SAFE
    };
    for (name, guard) in [
        ("margin (writer killed after its snapshot write)", no_margin),
        (
            "revive",
            Safeguards {
                revive: false,
                ..SAFE
            },
        ),
        (
            "read-back (margin broken, writers not killed)",
            Safeguards {
                read_back: false,
                writer_crashes: false,
                ..no_margin
            },
        ),
    ] {
        let result = explore(guard);
        assert!(
            result.violation.is_some(),
            "without the {name} no loss was found in {} states",
            result.states
        );
    }
    // The read-back is what saves a writer paused past the margin that lives to read it.
    let result = explore(Safeguards {
        writer_crashes: false,
        ..no_margin
    });
    assert!(
        result.violation.is_none(),
        "{}",
        result.violation.unwrap_or_default()
    );
}

#[test]
fn two_prunes_at_once_beside_a_writer_lose_nothing_when_they_read_garbage_before_packs() {
    let result = explore(TWO_PRUNERS);
    eprintln!("two pruners: explored {} states", result.states);
    assert!(
        result.violation.is_none(),
        "{}",
        result.violation.unwrap_or_default()
    );
    assert!(result.freed > 0);
    // Listing the packs first, a pack the other prune deletes in between looks like a usable
    // copy (the loss a review reproduced with two prune loops); and two sweeps of one garbage
    // file decide apart, one taking a pack back while the other deletes it.
    for (name, guard) in [
        (
            "garbage read first",
            Safeguards {
                garbage_first: false,
                ..TWO_PRUNERS
            },
        ),
        (
            "claims",
            Safeguards {
                claims: false,
                ..TWO_PRUNERS
            },
        ),
    ] {
        let result = explore(guard);
        assert!(
            result.violation.is_some(),
            "without {name}: no loss in {} states",
            result.states
        );
    }
}

impl Explored {
    /// Insists the property held in every state explored; returns the exploration.
    fn holds(self) -> Explored {
        assert!(
            self.violation.is_none(),
            "{}",
            self.violation.unwrap_or_default()
        );
        self
    }

    /// Insists the explorer found the property broken: `without` names what was left out.
    fn breaks(self, without: &str) {
        assert!(
            self.violation.is_some(),
            "without {without}: nothing found in {} states",
            self.states
        );
    }
}

#[test]
fn a_garbage_file_lying_about_its_sessions_loses_nothing_when_phase_2_lists_sessions() {
    let result = explore(LIAR).holds();
    eprintln!("liar: explored {} states", result.states);
    assert!(result.freed > 0);
    // Without guard 1 the lie deletes what a paused writer re-uses: guard 2 stops the writer
    // from reporting success, but a writer killed after its snapshot write leaves a snapshot
    // whose data is gone.
    let trusting = Safeguards {
        phase2_lists_sessions: false,
        ..LIAR
    };
    explore(trusting).breaks("guard 1 (trusting the recorded sessions alone)");
    explore_for(trusting, Property::HonestSuccess).holds();
    // And without guard 2 as well, the writer reports success for it.
    let neither = Safeguards {
        commit_confirms: false,
        ..trusting
    };
    explore_for(neither, Property::HonestSuccess).breaks("either guard");
}

#[test]
fn with_session_listings_that_lag_the_commit_check_keeps_every_success_true() {
    let lagging = Safeguards {
        lagging_sessions: true,
        ..LIAR
    };
    let result = explore_for(lagging, Property::HonestSuccess).holds();
    eprintln!("lagging listings: explored {} states", result.states);
    let unconfirmed = Safeguards {
        commit_confirms: false,
        ..lagging
    };
    explore_for(unconfirmed, Property::HonestSuccess).breaks("guard 2, listings lagging");
}
