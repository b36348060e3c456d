//! Sums a value over every node below a tree, reading each distinct subtree once.
//!
//! Why: a tree may name one subtree many times (identical directories dedupe; a crafted tree
//! can name the next level twice at every level and expand to 2^40 paths from 80 nodes). Summing
//! per distinct subtree and adding that sum as often as the subtree is named costs the stored
//! size, not the expanded one. It is a loop, not recursion, so no depth overflows the stack;
//! deeper than `MAX_DEPTH` is an error. Used to count a tree's work before walking it and to
//! count what a stage's untouched parent directories hold.

use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::repo::ids::BlobId;
use crate::repo::index::Index;
use crate::repo::tree::{MAX_DEPTH, Node, NodeKind};
use std::collections::HashMap;

/// A value that adds up (saturating: a crafted tree may claim anything).
pub trait Tally: Clone + Default {
    /// Adds `other` into `self`.
    fn add(&mut self, other: &Self);
}

impl Tally for u64 {
    fn add(&mut self, other: &u64) {
        *self = self.saturating_add(*other);
    }
}

/// Why a sum stopped.
#[derive(Debug)]
pub enum SumError {
    /// Directories nest deeper than allowed.
    TooDeep,
    /// `over` said the running sum is too large.
    Over,
    /// A tree did not read.
    Repo(Error),
}

impl From<Error> for SumError {
    fn from(e: Error) -> SumError {
        SumError::Repo(e)
    }
}

/// The sum of `value(node)` over every node below `tree` (not counting a node for `tree`
/// itself). `levels_above` is how many directory levels the caller's walk already holds, so
/// the depth bound means the same as in that walk; `over` stops the sum as soon as a running
/// total exceeds what the caller allows. `memo` keeps the sum of every subtree finished, and
/// may be shared between calls over one snapshot.
pub fn sum_below<T: Tally>(
    repo: &Repository,
    index: &Index,
    tree: BlobId,
    levels_above: usize,
    memo: &mut HashMap<BlobId, T>,
    value: &dyn Fn(&Node) -> T,
    over: &dyn Fn(&T) -> bool,
) -> std::result::Result<T, SumError> {
    /// One directory being summed: its tree, the entries not yet added, the sum so far.
    struct Frame<T> {
        tree: BlobId,
        entries: std::vec::IntoIter<Node>,
        sum: T,
    }
    if let Some(known) = memo.get(&tree) {
        return Ok(known.clone());
    }
    let open = |tree: BlobId| -> Result<Frame<T>> {
        Ok(Frame {
            tree,
            entries: repo.read_tree(index, &tree)?.into_iter(),
            sum: T::default(),
        })
    };
    let mut stack = vec![open(tree)?];
    loop {
        let frame = stack
            .last_mut()
            .expect("the loop returns when the stack empties");
        let Some(child) = frame.entries.next() else {
            let done = stack.pop().expect("the frame above");
            memo.insert(done.tree, done.sum.clone());
            match stack.last_mut() {
                Some(parent) => parent.sum.add(&done.sum),
                None => return Ok(done.sum),
            }
            continue;
        };
        frame.sum.add(&value(&child));
        let sub = child.subtree.filter(|_| child.kind == NodeKind::Dir);
        if let Some(below) = sub.and_then(|s| memo.get(&s)) {
            frame.sum.add(below);
        }
        if over(&frame.sum) {
            return Err(SumError::Over);
        }
        if let Some(sub) = sub.filter(|s| !memo.contains_key(s)) {
            if stack.len() + levels_above >= MAX_DEPTH {
                return Err(SumError::TooDeep);
            }
            stack.push(open(sub)?);
        }
    }
}
