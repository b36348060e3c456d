//! `diff`: what changed between two snapshots, or one path in them.
//!
//! Both trees are walked side by side in name order. A directory whose tree id is the same on
//! both sides holds the same entries and is skipped without reading; a directory that exists on
//! one side only is walked whole and reported entry by entry. Changes are handed to the caller
//! as they are found, so memory is one directory per level, whatever the size of the diff.
//!
//! A file's change is *content* when its chunks (a link's target, a device's number, or its
//! kind) differ, *metadata* when only its mode, owner, modification time or xattrs do. A
//! directory reports metadata changes but not its times: they move whenever its entries do.
//!
//! Like every walk of a tree (see [`crate::ops::walk`]) the diff is iterative, refuses nesting
//! deeper than [`MAX_DEPTH`] and counts its work against [`MAX_WALK_WORK`].

use crate::error::{Error, Result};
use crate::ops::walk::MAX_WALK_WORK;
use crate::repo::Repository;
use crate::repo::index::Index;
use crate::repo::tree::{MAX_DEPTH, Node, NodeKind};
use std::ffi::OsStr;
use std::iter::Peekable;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// How an entry differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// Only in the second snapshot.
    Added,
    /// Only in the first.
    Removed,
    /// In both, with other content.
    Modified,
    /// In both, same content, other metadata.
    Metadata,
}

/// One difference, as found.
#[derive(Debug)]
pub struct Difference<'a> {
    /// The entry's path from the snapshots' root.
    pub path: &'a Path,
    /// How it differs.
    pub change: Change,
    /// The entry in the first snapshot, if there.
    pub before: Option<&'a Node>,
    /// The entry in the second snapshot, if there.
    pub after: Option<&'a Node>,
}

/// Counts of one kind of entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Added.
    pub added: u64,
    /// Removed.
    pub removed: u64,
    /// Other content.
    pub modified: u64,
    /// Metadata only.
    pub metadata: u64,
}

/// What a diff found, in totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DiffSummary {
    /// Regular files.
    pub files: Counts,
    /// Directories.
    pub dirs: Counts,
    /// Links, devices, fifos, sockets.
    pub others: Counts,
    /// Bytes of the files added.
    pub added_bytes: u64,
    /// Bytes of the files removed.
    pub removed_bytes: u64,
    /// Bytes of modified files before and after.
    pub modified_bytes_before: u64,
    /// Bytes of modified files after.
    pub modified_bytes_after: u64,
    /// Directories skipped because both sides have the same tree.
    pub trees_skipped: u64,
}

type Entries = Peekable<std::vec::IntoIter<Node>>;

/// One directory open on both sides.
struct Frame {
    path: PathBuf,
    before: Entries,
    after: Entries,
}

/// Compares `before` with `after` (the entries of a directory, or one node each, at `base`)
/// and everything below them, calling `report` for each difference, parents first.
pub fn diff(
    repo: &Repository,
    index: &Index,
    before: Vec<Node>,
    after: Vec<Node>,
    base: &Path,
    report: &mut dyn FnMut(&Difference) -> Result<()>,
) -> Result<DiffSummary> {
    let mut summary = DiffSummary::default();
    let mut work = 0u64;
    let mut stack = vec![Frame {
        path: base.to_path_buf(),
        before: before.into_iter().peekable(),
        after: after.into_iter().peekable(),
    }];
    while let Some(frame) = stack.last_mut() {
        let (old, new) = match (frame.before.peek(), frame.after.peek()) {
            (None, None) => {
                stack.pop();
                continue;
            }
            (Some(o), Some(n)) if o.name == n.name => (frame.before.next(), frame.after.next()),
            (Some(o), Some(n)) if o.name < n.name => (frame.before.next(), None),
            (Some(_), None) => (frame.before.next(), None),
            _ => (None, frame.after.next()),
        };
        let name = old.as_ref().or(new.as_ref()).map(|n| n.name.clone());
        let path = frame
            .path
            .join(OsStr::from_bytes(&name.unwrap_or_default()));
        work += 1;
        if work > MAX_WALK_WORK {
            return Err(Error::Invalid(format!(
                "{}: the snapshots' trees expand to more than {MAX_WALK_WORK} entries: \
                 damaged or crafted, not compared",
                path.display()
            )));
        }
        let mut below = (Vec::new(), Vec::new());
        match (&old, &new) {
            (Some(o), Some(n)) if o.kind == n.kind => {
                let change = if o.kind == NodeKind::Dir {
                    if o.subtree == n.subtree {
                        summary.trees_skipped += 1;
                    } else {
                        below = (read(repo, index, o)?, read(repo, index, n)?);
                    }
                    (!same_metadata(o, n)).then_some(Change::Metadata)
                } else if !same_content(o, n) {
                    Some(Change::Modified)
                } else {
                    (!same_metadata(o, n)).then_some(Change::Metadata)
                };
                if let Some(change) = change {
                    count(&mut summary, change, o, n);
                    report(&Difference {
                        path: &path,
                        change,
                        before: Some(o),
                        after: Some(n),
                    })?;
                }
            }
            _ => {
                // On one side only, or of another kind: removed, then added.
                if let Some(o) = &old {
                    count(&mut summary, Change::Removed, o, o);
                    report(&Difference {
                        path: &path,
                        change: Change::Removed,
                        before: Some(o),
                        after: None,
                    })?;
                    below.0 = read(repo, index, o)?;
                }
                if let Some(n) = &new {
                    count(&mut summary, Change::Added, n, n);
                    report(&Difference {
                        path: &path,
                        change: Change::Added,
                        before: None,
                        after: Some(n),
                    })?;
                    below.1 = read(repo, index, n)?;
                }
            }
        }
        if !below.0.is_empty() || !below.1.is_empty() {
            if stack.len() >= MAX_DEPTH {
                return Err(Error::Invalid(format!(
                    "{}: directories nested deeper than {MAX_DEPTH} levels: damaged or \
                     crafted, not compared",
                    path.display()
                )));
            }
            stack.push(Frame {
                path,
                before: below.0.into_iter().peekable(),
                after: below.1.into_iter().peekable(),
            });
        }
    }
    Ok(summary)
}

/// A directory node's entries (none for anything else).
fn read(repo: &Repository, index: &Index, node: &Node) -> Result<Vec<Node>> {
    match (node.kind, node.subtree) {
        (NodeKind::Dir, Some(tree)) => repo.read_tree(index, &tree),
        _ => Ok(Vec::new()),
    }
}

/// Same kind assumed: the same bytes, link target or device.
fn same_content(a: &Node, b: &Node) -> bool {
    match a.kind {
        NodeKind::File => a.content == b.content,
        NodeKind::Symlink => a.target == b.target,
        NodeKind::Dir => a.subtree == b.subtree,
        _ => a.rdev == b.rdev,
    }
}

/// The same mode, owner and xattrs, and for anything but a directory the same modification
/// time.
fn same_metadata(a: &Node, b: &Node) -> bool {
    a.mode == b.mode
        && a.uid == b.uid
        && a.gid == b.gid
        && a.xattrs == b.xattrs
        && (a.kind == NodeKind::Dir || a.mtime == b.mtime)
}

fn count(summary: &mut DiffSummary, change: Change, before: &Node, after: &Node) {
    let counts = match after.kind {
        NodeKind::File => &mut summary.files,
        NodeKind::Dir => &mut summary.dirs,
        _ => &mut summary.others,
    };
    match change {
        Change::Added => counts.added += 1,
        Change::Removed => counts.removed += 1,
        Change::Modified => counts.modified += 1,
        Change::Metadata => counts.metadata += 1,
    }
    if after.kind != NodeKind::File {
        return;
    }
    match change {
        Change::Added => summary.added_bytes += after.size,
        Change::Removed => summary.removed_bytes += before.size,
        Change::Modified => {
            summary.modified_bytes_before += before.size;
            summary.modified_bytes_after += after.size;
        }
        Change::Metadata => {}
    }
}
