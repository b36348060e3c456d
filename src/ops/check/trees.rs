//! The snapshots' side of `check`: every tree of every snapshot read and its entries checked,
//! and, for each damaged or missing blob, every snapshot and path that uses it.

use super::{CheckReport, Problem, Use};
use crate::error::Error;
use crate::repo::Repository;
use crate::repo::ids::{BlobId, SnapshotId};
use crate::repo::index::Index;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{MAX_DEPTH, NodeKind, invalid_name};
use std::collections::{HashMap, HashSet};

/// Walks every distinct tree of every snapshot: each tree and data blob must be indexed and each
/// tree must read.
pub(super) fn check_snapshots(
    repo: &Repository,
    index: &Index,
    snapshots: &[(SnapshotId, Snapshot)],
    report: &mut CheckReport,
) {
    let mut visited: HashSet<BlobId> = HashSet::new();
    let mut pending: Vec<BlobId> = snapshots.iter().map(|(_, s)| s.tree).collect();
    let mut missing: HashSet<BlobId> = HashSet::new();
    while let Some(tree) = pending.pop() {
        if !visited.insert(tree) {
            continue;
        }
        if !index.contains(&tree) {
            missing.insert(tree);
            continue;
        }
        match repo.read_tree_unfiltered(index, &tree) {
            Ok(nodes) => {
                for node in nodes {
                    if let Some(reason) = invalid_name(&node.name) {
                        report.problems.push(Problem::InvalidName {
                            tree,
                            name: format!("{:?}", String::from_utf8_lossy(&node.name)),
                            reason,
                        });
                        continue;
                    }
                    if let Some(sub) = node.subtree {
                        pending.push(sub);
                    }
                    for id in &node.content {
                        if !index.contains(id) {
                            missing.insert(*id);
                        }
                    }
                }
            }
            Err(Error::MissingBlob(piece)) => {
                missing.insert(piece);
            }
            Err(Error::NoDictionary { pack, blob, reason }) => {
                report.problems.push(Problem::NoDictionary {
                    pack,
                    blob,
                    reason,
                    uses: Vec::new(),
                });
            }
            Err(e) => {
                let (pack, blob) = match &e {
                    Error::BadBlob { pack, blob, .. } => (*pack, *blob),
                    _ => (index.get(&tree).map(|at| at.pack).unwrap_or_default(), tree),
                };
                report.problems.push(Problem::DamagedBlob {
                    pack,
                    blob,
                    reason: e.to_string(),
                    uses: Vec::new(),
                });
            }
        }
    }
    report.trees = visited.len();
    let mut missing: Vec<BlobId> = missing.into_iter().collect();
    missing.sort();
    for blob in missing {
        report.problems.push(Problem::MissingBlob {
            blob,
            uses: Vec::new(),
        });
    }
}

/// Fills in, for every damaged or missing blob, every snapshot and path that uses it.
pub(super) fn attach_uses(
    repo: &Repository,
    index: &Index,
    snapshots: &[(SnapshotId, Snapshot)],
    report: &mut CheckReport,
) {
    let bad: HashSet<BlobId> = report.problems.iter().filter_map(Problem::blob).collect();
    if bad.is_empty() {
        return;
    }
    let uses = find_uses(repo, index, snapshots, &bad);
    for problem in &mut report.problems {
        if let Some(blob) = problem.blob()
            && let (Some(found), Some(slot)) = (uses.get(&blob), problem.uses_mut())
        {
            *slot = found.clone();
        }
    }
}

/// Every snapshot and path that uses one of `bad` (file content, or a directory's tree). Trees
/// known to hold none of them are not walked again in later snapshots.
pub fn find_uses(
    repo: &Repository,
    index: &Index,
    snapshots: &[(SnapshotId, Snapshot)],
    bad: &HashSet<BlobId>,
) -> HashMap<BlobId, Vec<Use>> {
    let mut uses: HashMap<BlobId, Vec<Use>> = HashMap::new();
    let mut clean: HashSet<BlobId> = HashSet::new();
    for (id, snapshot) in snapshots {
        let mut walker = UseWalker {
            repo,
            index,
            bad,
            snapshot: *id,
            uses: &mut uses,
            clean: &mut clean,
        };
        walker.walk(snapshot.tree, "", 0);
    }
    uses
}

struct UseWalker<'a> {
    repo: &'a Repository,
    index: &'a Index,
    bad: &'a HashSet<BlobId>,
    snapshot: SnapshotId,
    uses: &'a mut HashMap<BlobId, Vec<Use>>,
    clean: &'a mut HashSet<BlobId>,
}

impl UseWalker<'_> {
    /// Walks `tree` at `path`; returns whether anything below uses a bad blob.
    /// Deeper than [`MAX_DEPTH`] nothing is walked (a crafted tree could nest without end):
    /// the subtree counts as using a bad blob, so it is not remembered as clean.
    fn walk(&mut self, tree: BlobId, path: &str, depth: usize) -> bool {
        if self.clean.contains(&tree) {
            return false;
        }
        if depth >= MAX_DEPTH {
            return true;
        }
        let mut dirty = false;
        if self.bad.contains(&tree) {
            self.record(tree, if path.is_empty() { "/" } else { path });
            dirty = true;
        }
        // A tree that does not read has its own problem; nothing below it can be named.
        let Ok(nodes) = self.repo.read_tree(self.index, &tree) else {
            return true;
        };
        for node in nodes {
            let child = format!("{path}/{}", String::from_utf8_lossy(&node.name));
            if node.kind == NodeKind::File {
                for id in node.content.iter().filter(|id| self.bad.contains(*id)) {
                    self.record(*id, &child);
                    dirty = true;
                }
            }
            if let Some(sub) = node.subtree {
                dirty |= self.walk(sub, &child, depth + 1);
            }
        }
        if !dirty {
            self.clean.insert(tree);
        }
        dirty
    }

    fn record(&mut self, blob: BlobId, path: &str) {
        let found = self.uses.entry(blob).or_default();
        let used = Use {
            snapshot: self.snapshot,
            path: path.to_string(),
        };
        if !found.contains(&used) {
            found.push(used);
        }
    }
}
