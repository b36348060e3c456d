//! The stage's directory tree in memory: a copy-on-write view of the parent snapshot.
//!
//! Directories of the parent are read only when first entered, so an `rsync` that finds most of
//! a tree unchanged reads the trees it walks and no file content. Each inode holds the snapshot
//! node it will become (metadata, symlink target, xattrs) and, for files, the body. On commit
//! every directory that was entered is written as a tree again — identical trees dedup to the
//! same blob — and every directory that was not keeps its parent's tree id.

use crate::error::{Error, Result};
use crate::fs::stage_file::{Body, Store};
use crate::ingest::packer::Packer;
use crate::repo::Repository;
use crate::repo::ids::BlobId;
use crate::repo::index::Index;
use crate::repo::snapshot::Summary;
use crate::repo::tree::{MAX_DEPTH, Node, NodeKind};
use crate::repo::tree_sum::{SumError, Tally, sum_below};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The root directory's inode number, as FUSE fixes it.
pub const ROOT: u64 = 1;

/// Why an operation on the tree is refused, as the errno the kernel expects.
#[derive(Debug)]
pub enum TreeError {
    /// errno to answer with.
    Errno(i32),
    /// The repository failed (reading a parent tree, storing content).
    Repo(Error),
}

impl From<Error> for TreeError {
    fn from(e: Error) -> Self {
        TreeError::Repo(e)
    }
}

/// Result of a tree operation.
pub type TreeResult<T> = std::result::Result<T, TreeError>;

fn errno<T>(code: i32) -> TreeResult<T> {
    Err(TreeError::Errno(code))
}

/// One file, directory, link or special file.
pub struct Inode {
    /// What it will be in the snapshot (its `name` is set from the entry at commit).
    pub node: Node,
    /// A file's content, shared with the handles writing it.
    pub body: Option<Arc<Mutex<Body>>>,
    /// A directory's entries, `None` until the parent's tree is read.
    entries: Option<BTreeMap<Vec<u8>, u64>>,
    /// Entries in directories pointing here (hard links).
    names: u32,
    /// Lookups the kernel holds.
    lookups: u64,
    /// Open handles.
    pub opens: u32,
}

impl Inode {
    /// Whether no directory names it any more (unlinked while open, as `fstat` then shows).
    pub fn unlinked(&self) -> bool {
        self.names == 0
    }

    fn new(node: Node, store: &Store) -> Inode {
        let body = (node.kind == NodeKind::File).then(|| {
            Arc::new(Mutex::new(Body::from_parent(
                store,
                &node.content,
                node.size,
            )))
        });
        let entries = (node.kind == NodeKind::Dir && node.subtree.is_none()).then(BTreeMap::new);
        Inode {
            node,
            body,
            entries,
            names: 1,
            lookups: 0,
            opens: 0,
        }
    }

    /// The size to show: a file's current length.
    pub fn size(&self) -> u64 {
        match &self.body {
            Some(body) => body.lock().size(),
            None => self.node.size,
        }
    }
}

/// Every inode of the stage.
pub struct StageTree {
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
}

/// New nodes get inode numbers from here up, far from a snapshot's recorded numbers, which the
/// snapshot keeps for files the stage did not replace.
const FIRST_NEW_INO: u64 = 1 << 48;

impl StageTree {
    /// A tree whose root is `root` (a directory node, perhaps with a parent's subtree).
    pub fn new(root: Node, store: &Store) -> StageTree {
        let mut inodes = HashMap::new();
        let mut inode = Inode::new(root, store);
        inode.lookups = u64::MAX / 2;
        inodes.insert(ROOT, inode);
        StageTree {
            inodes,
            next_ino: FIRST_NEW_INO,
        }
    }

    /// An inode.
    pub fn get(&self, ino: u64) -> TreeResult<&Inode> {
        self.inodes.get(&ino).ok_or(TreeError::Errno(libc::ENOENT))
    }

    /// An inode, to change it.
    pub fn get_mut(&mut self, ino: u64) -> TreeResult<&mut Inode> {
        self.inodes
            .get_mut(&ino)
            .ok_or(TreeError::Errno(libc::ENOENT))
    }

    /// The entries of directory `ino`, reading the parent's tree the first time.
    fn entries(&mut self, ino: u64, store: &Store) -> TreeResult<&mut BTreeMap<Vec<u8>, u64>> {
        let inode = self.get(ino)?;
        if inode.node.kind != NodeKind::Dir {
            return errno(libc::ENOTDIR);
        }
        if inode.entries.is_none() {
            let tree = inode
                .node
                .subtree
                .expect("unloaded directories have a tree");
            let nodes = store.repo.read_tree(store.index, &tree)?;
            let mut entries = BTreeMap::new();
            let mut subdirs = 0;
            for node in nodes {
                let child = self.next_ino;
                self.next_ino += 1;
                entries.insert(node.name.clone(), child);
                subdirs += u64::from(node.kind == NodeKind::Dir);
                self.inodes.insert(child, Inode::new(node, store));
            }
            let dir = self.get_mut(ino)?;
            dir.entries = Some(entries);
            // As on ext4: itself, its `.`, and each subdirectory's `..`.
            dir.node.links = 2 + subdirs;
        }
        Ok(self.get_mut(ino)?.entries.as_mut().expect("loaded above"))
    }

    /// Calls `add(name, ino, inode)` for the entries of directory `dir` after the first `skip`,
    /// in name order, until it returns true (the reply is full).
    pub fn list(
        &mut self,
        dir: u64,
        skip: usize,
        store: &Store,
        mut add: impl FnMut(&[u8], u64, &Inode) -> bool,
    ) -> TreeResult<()> {
        self.entries(dir, store)?;
        let entries = self.get(dir)?.entries.as_ref().expect("loaded above");
        for (name, child) in entries.iter().skip(skip) {
            // Every named entry has its inode (an inode goes only when its last name did).
            let inode = self.inodes.get(child).ok_or(TreeError::Errno(libc::EIO))?;
            if add(name, *child, inode) {
                break;
            }
        }
        Ok(())
    }

    /// Resolves `name` in `parent` and counts a kernel lookup.
    pub fn lookup(&mut self, parent: u64, name: &[u8], store: &Store) -> TreeResult<u64> {
        let ino = *self
            .entries(parent, store)?
            .get(name)
            .ok_or(TreeError::Errno(libc::ENOENT))?;
        self.get_mut(ino)?.lookups += 1;
        Ok(ino)
    }

    /// The inode named `name` in `parent`, if any, without counting a kernel lookup.
    pub fn child(&mut self, parent: u64, name: &[u8], store: &Store) -> TreeResult<Option<u64>> {
        Ok(self.entries(parent, store)?.get(name).copied())
    }

    /// Counts a lookup the kernel made by other means (readdirplus, create).
    pub fn remember(&mut self, ino: u64) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.lookups += 1;
        }
    }

    /// The kernel forgot `count` lookups.
    pub fn forget(&mut self, ino: u64, count: u64) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.lookups = inode.lookups.saturating_sub(count);
        }
        self.reap(ino);
    }

    /// Drops `ino` once nothing holds it: no name, no kernel lookup, no open handle.
    pub fn reap(&mut self, ino: u64) {
        if self
            .inodes
            .get(&ino)
            .is_some_and(|i| i.lookups == 0 && i.names == 0 && i.opens == 0)
        {
            self.inodes.remove(&ino);
        }
    }

    /// Adds `node` as `name` in `parent`; fails if the name is taken.
    pub fn insert(
        &mut self,
        parent: u64,
        name: &[u8],
        node: Node,
        store: &Store,
    ) -> TreeResult<u64> {
        let ino = self.next_ino;
        let entries = self.entries(parent, store)?;
        if entries.contains_key(name) {
            return errno(libc::EEXIST);
        }
        entries.insert(name.to_vec(), ino);
        self.next_ino += 1;
        let is_dir = node.kind == NodeKind::Dir;
        let mut inode = Inode::new(node, store);
        inode.lookups = 1;
        inode.node.inode = ino;
        self.inodes.insert(ino, inode);
        self.touch_dir(parent);
        if is_dir {
            self.count_subdir(parent, 1);
        }
        Ok(ino)
    }

    /// Adds another name for file `ino` (a hard link).
    pub fn link(&mut self, ino: u64, parent: u64, name: &[u8], store: &Store) -> TreeResult<()> {
        if self.get(ino)?.node.kind == NodeKind::Dir {
            return errno(libc::EPERM);
        }
        let entries = self.entries(parent, store)?;
        if entries.contains_key(name) {
            return errno(libc::EEXIST);
        }
        entries.insert(name.to_vec(), ino);
        let inode = self.get_mut(ino)?;
        inode.names += 1;
        inode.node.links = u64::from(inode.names);
        inode.node.ctime = now_nanos();
        inode.lookups += 1;
        self.touch_dir(parent);
        Ok(())
    }

    /// Removes `name` from `parent`; `dir` says whether rmdir (true) or unlink (false) asked.
    pub fn remove(&mut self, parent: u64, name: &[u8], dir: bool, store: &Store) -> TreeResult<()> {
        let ino = *self
            .entries(parent, store)?
            .get(name)
            .ok_or(TreeError::Errno(libc::ENOENT))?;
        let is_dir = self.get(ino)?.node.kind == NodeKind::Dir;
        match (dir, is_dir) {
            (true, false) => return errno(libc::ENOTDIR),
            (false, true) => return errno(libc::EISDIR),
            (true, true) if !self.entries(ino, store)?.is_empty() => {
                return errno(libc::ENOTEMPTY);
            }
            _ => {}
        }
        self.entries(parent, store)?.remove(name);
        self.unname(ino);
        self.touch_dir(parent);
        if is_dir {
            self.count_subdir(parent, -1);
        }
        Ok(())
    }

    /// One name of `ino` is gone: its link count drops and its ctime moves on (the other names
    /// of a hard-linked file see both, as on ext4).
    fn unname(&mut self, ino: u64) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.names = inode.names.saturating_sub(1);
            if inode.node.kind != NodeKind::Dir {
                inode.node.links = u64::from(inode.names.max(1));
            }
            inode.node.ctime = now_nanos();
        }
        self.reap(ino);
    }

    /// A subdirectory came into (`+1`) or left (`-1`) directory `dir`: its `..` is a link to
    /// `dir`.
    fn count_subdir(&mut self, dir: u64, change: i64) {
        if let Some(inode) = self.inodes.get_mut(&dir) {
            inode.node.links = inode.node.links.saturating_add_signed(change).max(2);
        }
    }

    /// Moves `name` in `parent` to `new_name` in `new_parent`, replacing what is there as
    /// rename(2) does. `no_replace` refuses to replace.
    pub fn rename(
        &mut self,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
        no_replace: bool,
        store: &Store,
    ) -> TreeResult<()> {
        let ino = *self
            .entries(parent, store)?
            .get(name)
            .ok_or(TreeError::Errno(libc::ENOENT))?;
        let moving_dir = self.get(ino)?.node.kind == NodeKind::Dir;
        if moving_dir && self.is_within(new_parent, ino) {
            return errno(libc::EINVAL);
        }
        let existing = self.entries(new_parent, store)?.get(new_name).copied();
        if let Some(target) = existing {
            if target == ino {
                return Ok(());
            }
            if no_replace {
                return errno(libc::EEXIST);
            }
            let target_dir = self.get(target)?.node.kind == NodeKind::Dir;
            match (moving_dir, target_dir) {
                (true, false) => return errno(libc::ENOTDIR),
                (false, true) => return errno(libc::EISDIR),
                (true, true) if !self.entries(target, store)?.is_empty() => {
                    return errno(libc::ENOTEMPTY);
                }
                _ => {}
            }
            self.unname(target);
            if target_dir {
                self.count_subdir(new_parent, -1);
            }
        }
        self.entries(parent, store)?.remove(name);
        self.entries(new_parent, store)?
            .insert(new_name.to_vec(), ino);
        self.touch_dir(parent);
        self.touch_dir(new_parent);
        if moving_dir {
            self.count_subdir(parent, -1);
            self.count_subdir(new_parent, 1);
        }
        // As ext4 does, a renamed entry's ctime moves on.
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.node.ctime = now_nanos();
        }
        Ok(())
    }

    /// Whether directory `ino` is `ancestor` or lies below it.
    fn is_within(&self, ino: u64, ancestor: u64) -> bool {
        if ino == ancestor {
            return true;
        }
        // Directories have one name each; search the loaded tree for a path down from ancestor.
        let mut pending = vec![ancestor];
        while let Some(dir) = pending.pop() {
            let Some(entries) = self.inodes.get(&dir).and_then(|i| i.entries.as_ref()) else {
                continue;
            };
            for child in entries.values() {
                if *child == ino {
                    return true;
                }
                if self
                    .inodes
                    .get(child)
                    .is_some_and(|i| i.node.kind == NodeKind::Dir)
                {
                    pending.push(*child);
                }
            }
        }
        false
    }

    /// A directory's content changed: its times move on.
    fn touch_dir(&mut self, dir: u64) {
        if let Some(inode) = self.inodes.get_mut(&dir) {
            let now = now_nanos();
            inode.node.mtime = now;
            inode.node.ctime = now;
        }
    }

    /// The snapshot node for `ino` named `name`: file bodies stored, entered directories
    /// written as trees. Unentered directories keep their parent's tree.
    /// `summary` counts the files, directories and bytes.
    pub fn commit_node(
        &mut self,
        ino: u64,
        name: &[u8],
        store: &Store,
        packer: &Packer,
        summary: &mut Summary,
    ) -> Result<Node> {
        let inode = self
            .inodes
            .get(&ino)
            .ok_or_else(|| Error::Invalid(format!("inode {ino} vanished")))?;
        let mut node = inode.node.clone();
        node.name = name.to_vec();
        if let Some(body) = &inode.body {
            let mut body = body.lock();
            body.settle(store)?;
            node.size = body.size();
            node.content = body.content().unwrap_or_default();
            summary.files += 1;
            summary.bytes += node.size;
        }
        if node.kind == NodeKind::Dir {
            summary.dirs += 1;
        }
        if !node.xattrs.is_empty() {
            *summary.xattr_nodes.get_or_insert(0) += 1;
        }
        match (inode.entries.clone(), node.subtree) {
            (Some(entries), _) => {
                let mut children = Vec::with_capacity(entries.len());
                for (child_name, child) in &entries {
                    children.push(self.commit_node(*child, child_name, store, packer, summary)?);
                }
                node.subtree = Some(packer.store_tree(children)?);
            }
            // Never entered: the parent's tree stands, and is only read to be counted.
            (None, Some(tree)) => count_subtree(store.repo, store.index, &tree, summary)?,
            (None, None) => {}
        }
        Ok(node)
    }
}

/// Adds the files, directories, bytes and nodes with xattrs below `tree` to `summary`: a stage
/// counts what it keeps of the parent without walking it. The parent snapshot may have been
/// crafted: [`sum_below`] reads each distinct subtree once, in a loop, so neither a deep tree nor
/// one naming a subtree over and over costs more than its stored size.
pub fn count_subtree(
    repo: &Repository,
    index: &Index,
    tree: &BlobId,
    summary: &mut Summary,
) -> Result<()> {
    let mut memo = HashMap::new();
    let counts = sum_below(repo, index, *tree, 0, &mut memo, &Counts::of, &|_| false).map_err(
        |e| match e {
            SumError::Repo(e) => e,
            SumError::TooDeep | SumError::Over => Error::Invalid(format!(
                "the parent snapshot's directories nest deeper than {MAX_DEPTH} levels"
            )),
        },
    )?;
    counts.add_to(summary);
    Ok(())
}

/// Adds one node (not what is below it) to `summary`.
pub fn count_node(node: &Node, summary: &mut Summary) {
    Counts::of(node).add_to(summary);
}

/// What [`count_subtree`] adds up, saturating (a crafted tree may claim anything).
#[derive(Clone, Default)]
struct Counts {
    files: u64,
    dirs: u64,
    bytes: u64,
    xattr_nodes: u64,
}

impl Tally for Counts {
    fn add(&mut self, other: &Counts) {
        self.files = self.files.saturating_add(other.files);
        self.dirs = self.dirs.saturating_add(other.dirs);
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.xattr_nodes = self.xattr_nodes.saturating_add(other.xattr_nodes);
    }
}

impl Counts {
    /// What one node adds.
    fn of(node: &Node) -> Counts {
        let mut counts = Counts {
            xattr_nodes: u64::from(!node.xattrs.is_empty()),
            ..Counts::default()
        };
        match node.kind {
            NodeKind::File => {
                counts.files = 1;
                counts.bytes = node.size;
            }
            NodeKind::Dir => counts.dirs = 1,
            _ => {}
        }
        counts
    }

    fn add_to(&self, summary: &mut Summary) {
        summary.files = summary.files.saturating_add(self.files);
        summary.dirs = summary.dirs.saturating_add(self.dirs);
        summary.bytes = summary.bytes.saturating_add(self.bytes);
        if self.xattr_nodes > 0 {
            let total = summary.xattr_nodes.get_or_insert(0);
            *total = total.saturating_add(self.xattr_nodes);
        }
    }
}

/// Now, in nanoseconds since the epoch.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
