//! The view's lookup side: a directory's entries (stored trees, parsed once and cached within
//! the memory budget, and the made-up `snapshots/`, `ids/`, `hosts/`, `tags/`), inode numbers,
//! attributes and TTLs for what the kernel looks up and lists.

use super::*;
use crate::fs::node_path::NodePath;

impl View {
    /// The entries of a directory node, parsed once and kept in a cache that takes at most a
    /// [`TREE_SHARE`] of the memory budget and is charged against it. A directory fetched now
    /// (not ahead) starts fetching the trees below it.
    pub(super) fn children(&self, index: &Index, node: &Node) -> Result<Children> {
        let Some(tree) = node.subtree else {
            return Ok(Arc::new(Vec::new()));
        };
        if let Some(hit) = self.trees.get(&tree) {
            return Ok(hit);
        }
        let children = self.trees.insert(tree, self.fetcher.tree(index, &tree)?);
        self.fetch_trees_below(super::trees::subtrees(&children));
        Ok(children)
    }

    /// A directory node's entries for lookup and listing; a failure is logged with the path and
    /// becomes EIO.
    pub(super) fn dir_children(
        &self,
        node: &Node,
        path: &NodePath,
    ) -> std::result::Result<Children, Errno> {
        let contents = self.catalog.contents();
        self.children(&contents.index, node).map_err(|e| {
            tracing::error!("{path}: {e}");
            Errno::EIO
        })
    }

    /// The children of a made-up directory, by name.
    pub(super) fn virtual_children(
        &self,
        dir: &VirtualDir,
        contents: &Contents,
    ) -> Vec<(String, Entry)> {
        let link = |target: String, time: i64| Entry::Link { target, time };
        let snaps = &contents.snapshots;
        match dir {
            VirtualDir::Root => {
                let mut out: Vec<(String, Entry)> = [
                    ("snapshots", VirtualDir::Snapshots),
                    ("ids", VirtualDir::Ids),
                    ("hosts", VirtualDir::Hosts),
                    ("tags", VirtualDir::Tags),
                    ("history", VirtualDir::History),
                ]
                .into_iter()
                .map(|(n, d)| (n.to_string(), Entry::Virtual(d)))
                .collect();
                if let Some(last) = snaps.last() {
                    out.push((
                        "latest".into(),
                        link(format!("snapshots/{}", last.name), last.snapshot.time),
                    ));
                }
                out
            }
            VirtualDir::Snapshots => snaps
                .iter()
                .map(|s| {
                    let node = snapshot_root(&s.name, &s.snapshot, self.owner);
                    let path = NodePath::root(&format!("snapshots/{}", s.name));
                    (
                        s.name.clone(),
                        Entry::Node {
                            snapshot: s.id,
                            parent: virtual_ino(&VirtualDir::Snapshots),
                            node: Arc::new(node),
                            path,
                        },
                    )
                })
                .collect(),
            VirtualDir::Ids => snaps
                .iter()
                .map(|s| {
                    (
                        s.id.short(),
                        link(format!("../snapshots/{}", s.name), s.snapshot.time),
                    )
                })
                .collect(),
            VirtualDir::Hosts => snaps
                .iter()
                .map(|s| s.snapshot.hostname.clone())
                .filter(|h| shown_as_dir(h))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .map(|h| (h.clone(), Entry::Virtual(VirtualDir::Host(h))))
                .collect(),
            VirtualDir::Tags => snaps
                .iter()
                .flat_map(|s| s.snapshot.tags.iter().cloned())
                .filter(|t| shown_as_dir(t))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .map(|t| (t.clone(), Entry::Virtual(VirtualDir::Tag(t))))
                .collect(),
            VirtualDir::Host(h) => snaps
                .iter()
                .filter(|s| &s.snapshot.hostname == h)
                .map(|s| {
                    (
                        s.name.clone(),
                        link(format!("../../snapshots/{}", s.name), s.snapshot.time),
                    )
                })
                .collect(),
            VirtualDir::Tag(t) => snaps
                .iter()
                .filter(|s| s.snapshot.tags.contains(t))
                .map(|s| {
                    (
                        s.name.clone(),
                        link(format!("../../snapshots/{}", s.name), s.snapshot.time),
                    )
                })
                .collect(),
            // Its entries need not be UTF-8: see `history_children`.
            VirtualDir::History => Vec::new(),
        }
    }

    /// Calls `add(ino, offset, name, entry)` for the entries of directory `ino` from `offset`
    /// on (0 and 1 are `.` and `..`) until it returns true (the reply is full).
    pub(super) fn list(
        &self,
        ino: u64,
        offset: u64,
        mut add: impl FnMut(u64, u64, &OsStr, Entry) -> bool,
    ) -> std::result::Result<(), Errno> {
        let entry = self.inodes.get(ino).ok_or(Errno::ENOENT)?;
        if !matches!(&*entry, Entry::Virtual(_) | Entry::History { .. })
            && !matches!(&*entry, Entry::Node { node, .. } if node.kind == NodeKind::Dir)
        {
            return Err(Errno::ENOTDIR);
        }
        for (at, name) in [(0, "."), (1, "..")] {
            if offset <= at && add(ino, at + 1, OsStr::new(name), (*entry).clone()) {
                return Ok(());
            }
        }
        let skip = offset.saturating_sub(2) as usize;
        if let Some(dir) = self.history_dir(&entry) {
            let children = self.history_children(ino, &dir, None, skip)?;
            for (i, child) in children.into_iter().enumerate().map(|(i, c)| (i + skip, c)) {
                let name = OsStr::from_bytes(&child.name);
                if add(child.ino, (i + 3) as u64, name, child.entry) {
                    break;
                }
            }
            return Ok(());
        }
        match &*entry {
            Entry::Virtual(dir) => {
                let contents = self.refreshed();
                let children = self.virtual_children(dir, &contents);
                for (i, (name, child)) in children.into_iter().enumerate().skip(skip) {
                    let child_ino = self.ino_of(ino, name.as_bytes(), &child);
                    if add(child_ino, (i + 3) as u64, OsStr::new(&name), child) {
                        break;
                    }
                }
            }
            Entry::Node {
                snapshot,
                node,
                path,
                ..
            } => {
                let children = self.dir_children(node, path)?;
                if offset == 0 {
                    self.arrived_at(ino, None, false);
                }
                for (i, child) in children.iter().enumerate().skip(skip) {
                    let child_ino = node_child_ino(ino, i, snapshot, child);
                    let entry = child_entry(*snapshot, ino, path, child);
                    if add(
                        child_ino,
                        (i + 3) as u64,
                        OsStr::from_bytes(&child.name),
                        entry,
                    ) {
                        break;
                    }
                }
            }
            Entry::Link { .. } | Entry::History { .. } => return Err(Errno::ENOTDIR),
        }
        Ok(())
    }

    pub(super) fn ino_of(&self, parent: u64, name: &[u8], entry: &Entry) -> u64 {
        match entry {
            Entry::Virtual(dir) => virtual_ino(dir),
            Entry::Link { .. } | Entry::History { .. } => child_ino(parent, name, None, None),
            // A snapshot's root, a child of a made-up directory.
            Entry::Node { snapshot, node, .. } => {
                child_ino(parent, name, Some(snapshot), Some(node))
            }
        }
    }

    pub(super) fn attr(&self, ino: u64, entry: &Entry) -> FileAttr {
        let (kind, perm, size, nlink, uid, gid, rdev, mtime, ctime, atime) = match entry {
            Entry::Virtual(_) | Entry::History { .. } => {
                let time = self.catalog.contents().changed;
                (
                    FileType::Directory,
                    0o555,
                    0,
                    2,
                    self.owner.0,
                    self.owner.1,
                    0,
                    time,
                    time,
                    time,
                )
            }
            Entry::Link { target, time } => (
                FileType::Symlink,
                0o777,
                target.len() as u64,
                1,
                self.owner.0,
                self.owner.1,
                0,
                *time,
                *time,
                *time,
            ),
            Entry::Node { node, .. } => (
                file_type(node.kind),
                (node.mode & 0o7777) as u16,
                node.size,
                node.links.clamp(1, u64::from(u32::MAX)) as u32,
                node.uid,
                node.gid,
                node.rdev as u32,
                node.mtime,
                node.ctime,
                node.atime,
            ),
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: system_time(atime),
            mtime: system_time(mtime),
            ctime: system_time(ctime),
            crtime: system_time(mtime),
            kind,
            perm,
            nlink,
            uid,
            gid,
            rdev,
            blksize: 1 << 20,
            flags: 0,
        }
    }

    pub(super) fn ttl(entry: &Entry) -> Duration {
        match entry {
            Entry::Node { .. } => NODE_TTL,
            _ => VIRTUAL_TTL,
        }
    }

    /// Resolves `name` in directory `parent` to an inode number and entry.
    pub(super) fn find(
        &self,
        parent: u64,
        name: &[u8],
    ) -> std::result::Result<(u64, Entry), Errno> {
        let parent_entry = self.inodes.get(parent).ok_or(Errno::ENOENT)?;
        if let Some(dir) = self.history_dir(&parent_entry) {
            let child = self
                .history_children(parent, &dir, Some(name), 0)?
                .into_iter()
                .next()
                .ok_or(Errno::ENOENT)?;
            return Ok((child.ino, child.entry));
        }
        match &*parent_entry {
            Entry::Virtual(dir) => {
                let contents = self.refreshed();
                let entry = self
                    .virtual_children(dir, &contents)
                    .into_iter()
                    .find(|(n, _)| n.as_bytes() == name)
                    .map(|(_, e)| e)
                    .ok_or(Errno::ENOENT)?;
                Ok((self.ino_of(parent, name, &entry), entry))
            }
            Entry::Node {
                snapshot,
                node,
                path,
                ..
            } if node.kind == NodeKind::Dir => {
                let children = self.dir_children(node, path)?;
                let i = children
                    .binary_search_by(|n| n.name.as_slice().cmp(name))
                    .map_err(|_| Errno::ENOENT)?;
                Ok((
                    node_child_ino(parent, i, snapshot, &children[i]),
                    child_entry(*snapshot, parent, path, &children[i]),
                ))
            }
            _ => Err(Errno::ENOTDIR),
        }
    }
}

/// Whether a host name or tag can be a directory name under `hosts/` or `tags/`. Older
/// repositories may hold ones that cannot (`../x`, empty, with `/`): they are left out of those
/// directories (the catalog logs each once) rather than breaking the listing.
fn shown_as_dir(label: &str) -> bool {
    crate::repo::tree::invalid_name(label.as_bytes()).is_none()
}

/// The entry of `node`, a child of directory `parent` at `parent_path` in `snapshot`.
pub(super) fn child_entry(
    snapshot: SnapshotId,
    parent: u64,
    parent_path: &NodePath,
    node: &Arc<Node>,
) -> Entry {
    Entry::Node {
        snapshot,
        parent,
        node: node.clone(),
        path: parent_path.child(&node.name),
    }
}
