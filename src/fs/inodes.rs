//! Inode numbers and the table of live inodes.
//!
//! Numbers are derived, not allocated, so the same (snapshot, path) gets the same number in every
//! mount: an entry of a snapshot's directory is a number drawn from its parent's number and its
//! snapshot, plus its index in name order ([`node_child_ino`]), any other a hash of its parent's
//! number and its name; hard-linked files hash their snapshot, device and original inode
//! instead, so they share one. The table holds only inodes the kernel has looked up and not yet
//! forgotten, so its size follows what is in use, not the size of the repository.

use crate::fs::history::{Source, Version};
use crate::fs::node_path::NodePath;
use crate::repo::ids::SnapshotId;
use crate::repo::tree::Node;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

/// The root directory's number, fixed by FUSE.
pub const ROOT: u64 = 1;

/// A directory made up by the view rather than stored in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum VirtualDir {
    /// The mount point.
    Root,
    /// `snapshots/`: one directory per snapshot, named by its time.
    Snapshots,
    /// `ids/`: links by short id.
    Ids,
    /// `hosts/`: one directory per host.
    Hosts,
    /// `hosts/<host>/`: links to that host's snapshots.
    Host(String),
    /// `tags/`: one directory per tag.
    Tags,
    /// `tags/<tag>/`: links to snapshots with that tag.
    Tag(String),
    /// `history/`: every snapshot's root merged.
    History,
}

impl Entry {
    /// Roughly the memory a live inode holds: the entry, its table slot, its path and its node
    /// (counted here too although a cached tree may share it: over-counting keeps the bound).
    pub fn memory_size(&self) -> usize {
        const SLOT: usize = 64;
        SLOT + std::mem::size_of::<Entry>()
            + match self {
                Entry::Virtual(_) => 0,
                Entry::Link { target, .. } => target.capacity(),
                Entry::Node { node, path, .. } => node.memory_size() + path.own_memory(),
                // What it shares with its merge is counted by the merge cache, which keeps the
                // merges of live inodes.
                Entry::History { path, .. } => path.own_memory(),
            }
    }
}

/// What an inode is.
#[derive(Clone, Debug)]
pub enum Entry {
    /// A made-up directory.
    Virtual(VirtualDir),
    /// A made-up symlink (`latest`, `ids/<id>`, …) with its target and time.
    Link {
        /// Where it points.
        target: String,
        /// Its time (the snapshot's), nanoseconds.
        time: i64,
    },
    /// A node of a snapshot's tree (a snapshot's root is a synthesized directory node).
    Node {
        /// The snapshot it belongs to.
        snapshot: SnapshotId,
        /// The directory it was found in (for a hard-linked file, one of them).
        parent: u64,
        /// The node.
        node: Arc<Node>,
        /// Its path from the mount point, for log lines (shared with its parent's).
        path: NodePath,
    },
    /// A directory below `history/`: one path merged across snapshots.
    History {
        /// The key of the merge of `dirs` ([`crate::fs::history::sources_key`]).
        key: [u8; 32],
        /// The distinct trees the path has had as a directory, oldest first.
        dirs: Arc<[Source]>,
        /// Its distinct contents as anything else, oldest first.
        versions: Arc<[Version]>,
        /// Its path from the mount point, for log lines.
        path: NodePath,
    },
}

fn hash(parts: &[&[u8]]) -> u64 {
    let mut h = Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    let digest = h.finalize();
    // Keep clear of the small numbers FUSE and the root use.
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes")) | (1 << 63)
}

/// The number of a virtual directory.
pub fn virtual_ino(dir: &VirtualDir) -> u64 {
    match dir {
        VirtualDir::Root => ROOT,
        VirtualDir::Snapshots => hash(&[b"snapshots"]),
        VirtualDir::Ids => hash(&[b"ids"]),
        VirtualDir::Hosts => hash(&[b"hosts"]),
        VirtualDir::Tags => hash(&[b"tags"]),
        VirtualDir::Host(h) => hash(&[b"host", h.as_bytes()]),
        VirtualDir::Tag(t) => hash(&[b"tag", t.as_bytes()]),
        VirtualDir::History => hash(&[b"history"]),
    }
}

/// The number of the child at `index` (in name order) of `parent`, a directory of a snapshot:
/// a number drawn for the directory plus the index, so a directory's entries are numbered in
/// the order of their names. `cp -a` copies a directory's entries in the order of their inode
/// numbers (GNU's `savedir` sorts them so, for disks); in name order that is the order the
/// backup stored them in, which the mount reads ahead in. Two directories' ranges overlap with
/// about the chance two hashed numbers of their entries would collide. Hard-linked files of one
/// snapshot share theirs, as with [`child_ino`].
pub fn node_child_ino(parent: u64, index: usize, snapshot: &SnapshotId, node: &Node) -> u64 {
    if node.links > 1 && node.kind == crate::repo::tree::NodeKind::File {
        return child_ino(parent, &node.name, Some(snapshot), Some(node));
    }
    // The snapshot is drawn in too: a snapshot whose name (so whose root's number) another
    // one takes later must not hand its entries' numbers on to the newcomer's.
    let base = hash(&[b"dir", &parent.to_le_bytes(), &snapshot.0]);
    (base.wrapping_add(index as u64 + 1)) | (1 << 63)
}

/// The number of the child `name` of `parent`; hard-linked files of one snapshot share theirs.
pub fn child_ino(
    parent: u64,
    name: &[u8],
    snapshot: Option<&SnapshotId>,
    node: Option<&Node>,
) -> u64 {
    match (snapshot, node) {
        (Some(snap), Some(n)) if n.links > 1 && n.kind == crate::repo::tree::NodeKind::File => {
            hash(&[
                b"hardlink",
                &snap.0,
                &n.device.to_le_bytes(),
                &n.inode.to_le_bytes(),
            ])
        }
        _ => hash(&[b"child", &parent.to_le_bytes(), name]),
    }
}

/// Live inodes with the kernel's lookup counts.
#[derive(Default)]
pub struct InodeTable {
    live: Mutex<HashMap<u64, (Arc<Entry>, u64)>>,
}

impl InodeTable {
    /// Records that the kernel looked up `ino` once more, as `entry`: a path of `history/`
    /// gains versions as snapshots are made, so the newest lookup's entry replaces the one
    /// held. Returns the entry it replaced, if `ino` was live — or, when `ino` is live as
    /// something else ([`InodeTable::collides`]), that entry as the error, changing nothing.
    pub fn remember(&self, ino: u64, entry: Arc<Entry>) -> Result<Option<Arc<Entry>>, Arc<Entry>> {
        let mut live = self.live.lock();
        match live.get_mut(&ino) {
            Some(slot) if !same_place(&slot.0, &entry) => Err(slot.0.clone()),
            Some(slot) => {
                slot.1 += 1;
                Ok(Some(std::mem::replace(&mut slot.0, entry)))
            }
            None => {
                live.insert(ino, (entry, 1));
                Ok(None)
            }
        }
    }

    /// The entry `ino` is live as, when that is not `entry`'s place: numbers are hashes, and a
    /// repository written by a liar can make two entries' numbers meet. Serving one under the
    /// other's number would show one file's bytes under another's name.
    pub fn collides(&self, ino: u64, entry: &Entry) -> Option<Arc<Entry>> {
        let live = self.live.lock();
        let (held, _) = live.get(&ino)?;
        (!same_place(held, entry)).then(|| held.clone())
    }

    /// Records an inode the kernel never forgets (the root).
    pub fn pin(&self, ino: u64, entry: Arc<Entry>) {
        self.live.lock().insert(ino, (entry, u64::MAX / 2));
    }

    /// The entry of a live inode.
    pub fn get(&self, ino: u64) -> Option<Arc<Entry>> {
        self.live.lock().get(&ino).map(|(e, _)| e.clone())
    }

    /// The kernel forgot `count` lookups of `ino`; returns the entry if that was the last.
    pub fn forget(&self, ino: u64, count: u64) -> Option<Arc<Entry>> {
        let mut live = self.live.lock();
        let slot = live.get_mut(&ino)?;
        slot.1 = slot.1.saturating_sub(count);
        if slot.1 == 0 {
            return live.remove(&ino).map(|(entry, _)| entry);
        }
        None
    }
}

/// Whether two entries are one place of the mount: entries of one directory (numbered apart
/// within it, so one number there is one place: a snapshot's root whose name a newer snapshot
/// took, a version of `history/` renamed as snapshots come and go), or the links of one
/// hard-linked file of a snapshot.
fn same_place(held: &Entry, new: &Entry) -> bool {
    match (held, new) {
        (
            Entry::Node {
                snapshot: s1,
                parent: p1,
                node: n1,
                ..
            },
            Entry::Node {
                snapshot: s2,
                parent: p2,
                node: n2,
                ..
            },
        ) => {
            let linked = |n: &Node| n.links > 1 && n.kind == crate::repo::tree::NodeKind::File;
            p1 == p2
                || (s1 == s2
                    && linked(n1)
                    && linked(n2)
                    && (n1.device, n1.inode) == (n2.device, n2.inode))
        }
        (Entry::Node { .. }, _) | (_, Entry::Node { .. }) => false,
        _ => std::mem::discriminant(held) == std::mem::discriminant(new),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_stable_and_distinct() {
        let a = child_ino(ROOT, b"a", None, None);
        assert_eq!(a, child_ino(ROOT, b"a", None, None));
        assert_ne!(a, child_ino(ROOT, b"b", None, None));
        assert_ne!(a, child_ino(a, b"a", None, None));
        assert_ne!(
            virtual_ino(&VirtualDir::Host("x".into())),
            virtual_ino(&VirtualDir::Tag("x".into()))
        );
    }

    #[test]
    fn a_directorys_entries_are_numbered_in_name_order() {
        let snap = SnapshotId([1; 32]);
        let node = |name: &[u8]| {
            let mut n = crate::repo::tree::tests::node(name);
            n.kind = crate::repo::tree::NodeKind::File;
            n
        };
        let numbers: Vec<u64> = (0..100)
            .map(|i| node_child_ino(ROOT, i, &snap, &node(format!("{i:03}").as_bytes())))
            .collect();
        assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
        assert_ne!(
            node_child_ino(ROOT, 0, &snap, &node(b"a")),
            node_child_ino(numbers[0], 0, &snap, &node(b"a"))
        );
        let mut linked = node(b"x");
        linked.links = 2;
        assert_eq!(
            node_child_ino(ROOT, 3, &snap, &linked),
            node_child_ino(numbers[5], 7, &snap, &linked),
            "hard links share one number"
        );
    }

    #[test]
    fn forgotten_inodes_leave_the_table() {
        let table = InodeTable::default();
        let entry = Arc::new(Entry::Link {
            target: "x".into(),
            time: 0,
        });
        assert!(table.remember(5, entry.clone()).unwrap().is_none());
        assert!(table.remember(5, entry).unwrap().is_some());
        assert!(table.forget(5, 1).is_none());
        assert!(table.get(5).is_some());
        assert!(table.forget(5, 1).is_some());
        assert!(table.get(5).is_none());
    }

    /// A number live as one file is refused to another (numbers are hashes a liar can make
    /// meet), while the same place looked up again, or a hard link's other name, shares it.
    #[test]
    fn a_number_live_as_another_entry_is_refused() {
        let snap = SnapshotId([1; 32]);
        let at = |parent: u64, name: &[u8], links: u64| {
            let mut node = crate::repo::tree::tests::node(name);
            node.kind = crate::repo::tree::NodeKind::File;
            node.links = links;
            node.inode = 7;
            Arc::new(Entry::Node {
                snapshot: snap,
                parent,
                node: Arc::new(node),
                path: NodePath::root("x"),
            })
        };
        let table = InodeTable::default();
        assert!(table.remember(9, at(1, b"a", 1)).unwrap().is_none());
        assert!(table.remember(9, at(1, b"a2", 1)).unwrap().is_some());
        assert!(table.collides(9, &at(2, b"b", 1)).is_some());
        assert!(table.remember(9, at(2, b"b", 1)).is_err());
        assert!(table.remember(10, at(1, b"c", 2)).unwrap().is_none());
        assert!(table.collides(10, &at(3, b"d", 2)).is_none());
        assert_ne!(
            node_child_ino(ROOT, 0, &snap, &crate::repo::tree::tests::node(b"a")),
            node_child_ino(
                ROOT,
                0,
                &SnapshotId([2; 32]),
                &crate::repo::tree::tests::node(b"a")
            ),
            "a snapshot taking another's name takes none of its entries' numbers"
        );
    }
}
