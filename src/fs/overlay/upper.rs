//! The commit of an overlay stage: the snapshot's tree from the parent's and the upper
//! directory.
//!
//! Only the upper directory is walked. A directory there is merged with the parent's directory
//! at the same path (unless it is opaque, or new): the parent's entries stay as they were —
//! nodes, content and subtree ids — except where the upper directory has an entry of the same
//! name, which replaces it, or a whiteout, which deletes it. Directories the copy never touched
//! are not in the upper directory and keep the parent's tree ids. Files are stored from the
//! watcher's records when unchanged since ([`super::watch`]), otherwise chunked here.

use crate::error::{Error, Result};
use crate::fs::overlay::namespace::Namespace;
use crate::fs::overlay::watch::Records;
use crate::fs::stage_tree::{count_node, count_subtree};
use crate::ingest::chunker::ChunkerConfig;
use crate::ingest::content::{FileError, store_content};
use crate::ingest::noatime;
use crate::ingest::packer::Packer;
use crate::ingest::walker::{OwnerNames, nanos, node_from_stat, read_xattrs};
use crate::repo::Repository;
use crate::repo::ids::BlobId;
use crate::repo::index::Index;
use crate::repo::snapshot::Summary;
use crate::repo::tree::{MAX_DEPTH, Node, NodeKind, Xattr};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// Marks a directory that hides the parent's directory of the same name (after overlayfs'
/// prefix).
const OPAQUE: &[u8] = b"opaque";

/// Upper inode numbers are recorded above this, clear of the numbers the parent's nodes keep
/// (restore links files of the same number and content).
const UPPER_INODES: u64 = 1 << 48;

/// The walk's inputs and what it adds up.
pub struct UpperWalk<'a> {
    /// The repository, for the parent's trees.
    pub repo: &'a Repository,
    /// Its index.
    pub index: &'a Index,
    /// Where new content and trees go.
    pub packer: &'a Packer,
    /// How content is cut.
    pub chunker: &'a ChunkerConfig,
    /// Bytes of a file read at a time.
    pub read_batch: usize,
    /// What the watcher chunked during the copy.
    pub records: &'a Records,
    /// Names of owners.
    pub owners: &'a OwnerNames,
    /// Files, directories and bytes of the snapshot.
    pub summary: Summary,
    /// Content of hard-linked upper files already stored, by inode.
    linked: HashMap<u64, Vec<BlobId>>,
    /// Walk the parent's directories the upper directory does not hold too: overlayfs indexed a
    /// file the parent holds under several names, which may be in any of them.
    pub descend_lower: bool,
    /// Where the overlay was mounted, which says where it keeps its own extended attributes.
    pub namespace: Namespace,
}

impl<'a> UpperWalk<'a> {
    /// A walk with nothing counted yet.
    pub fn new(
        repo: &'a Repository,
        index: &'a Index,
        packer: &'a Packer,
        chunker: &'a ChunkerConfig,
        records: &'a Records,
        owners: &'a OwnerNames,
    ) -> UpperWalk<'a> {
        UpperWalk {
            repo,
            index,
            packer,
            chunker,
            read_batch: crate::ingest::IngestLimits::default().read_batch,
            records,
            owners,
            summary: Summary {
                xattr_nodes: Some(0),
                ..Summary::default()
            },
            linked: HashMap::new(),
            descend_lower: false,
            namespace: Namespace::Root,
        }
    }

    /// The node of the stage's root, named `name`, from the upper directory `upper` over the
    /// parent's `root` (its subtree, if any, is the parent's content); `merged` is the overlay,
    /// read-only, for what the upper directory alone does not say.
    pub fn root(&mut self, upper: &Path, merged: &Path, name: &[u8], root: &Node) -> Result<Node> {
        let meta = std::fs::symlink_metadata(upper).map_err(|e| Error::io(upper, e))?;
        let mut node = self.upper_node(upper, merged, OsStr::from_bytes(name), &meta)?;
        node.subtree = Some(self.dir(Some(upper), merged, root.subtree, 0)?);
        Ok(node)
    }

    /// Stores the tree of upper directory `path` (the overlay's `merged`) merged over the
    /// parent's tree `lower`; with no upper directory, the parent's directory as the overlay
    /// shows it (walked only when a file with several names was copied up).
    fn dir(
        &mut self,
        path: Option<&Path>,
        merged: &Path,
        lower: Option<BlobId>,
        depth: usize,
    ) -> Result<BlobId> {
        if depth >= MAX_DEPTH {
            return Err(Error::Invalid(format!(
                "{}: directories nest deeper than {MAX_DEPTH} levels",
                merged.display()
            )));
        }
        let mut entries: BTreeMap<Vec<u8>, Node> = BTreeMap::new();
        let opaque = match path {
            Some(path) => xattr::get(path, OsStr::from_bytes(&self.overlay_xattr(OPAQUE)))
                .map_err(|e| Error::io(path, e))?
                .is_some_and(|v| v == b"y"),
            None => false,
        };
        if let (Some(tree), false) = (lower, opaque) {
            for node in self.repo.read_tree(self.index, &tree)? {
                entries.insert(node.name.clone(), node);
            }
        }
        let mut names = match path {
            Some(path) => noatime::list_dir(path).map_err(|e| Error::io(path, e))?,
            None => Vec::new(),
        };
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let mut done: Vec<Vec<u8>> = Vec::new();
        for name in names {
            let Some(path) = path else { break };
            let child = path.join(&name);
            let meta = std::fs::symlink_metadata(&child).map_err(|e| Error::io(&child, e))?;
            let key = name.as_bytes().to_vec();
            let below = entries.remove(&key);
            if is_whiteout(&meta) {
                continue;
            }
            let shown = merged.join(&name);
            let mut node = self.upper_node(&child, &shown, &name, &meta)?;
            if node.kind == NodeKind::Dir {
                let lower_dir = below
                    .filter(|n| n.kind == NodeKind::Dir)
                    .and_then(|n| n.subtree);
                node.subtree = Some(self.dir(Some(&child), &shown, lower_dir, depth + 1)?);
            }
            done.push(key.clone());
            entries.insert(key, node);
        }
        // The parent's entries the upper directory does not hold.
        for (name, node) in entries.iter_mut() {
            if done.binary_search(name).is_ok() {
                continue;
            }
            let shown = merged.join(OsStr::from_bytes(name));
            match (node.kind, node.subtree) {
                // A file the parent holds under several names, changed under another name: the
                // overlay shows it changed here too (index=on).
                (NodeKind::File, _) if node.links > 1 => {
                    let meta =
                        std::fs::symlink_metadata(&shown).map_err(|e| Error::io(&shown, e))?;
                    let same = meta.size() == node.size
                        && nanos(meta.mtime(), meta.mtime_nsec()) == node.mtime
                        && nanos(meta.ctime(), meta.ctime_nsec()) == node.ctime;
                    if same {
                        count_node(node, &mut self.summary);
                    } else {
                        *node = self.shared_file(&shown, OsStr::from_bytes(name), &meta)?;
                    }
                }
                (NodeKind::Dir, Some(tree)) if self.descend_lower => {
                    count_node(node, &mut self.summary);
                    node.subtree = Some(self.dir(None, &shown, Some(tree), depth + 1)?);
                }
                (NodeKind::Dir, Some(tree)) => {
                    count_node(node, &mut self.summary);
                    count_subtree(self.repo, self.index, &tree, &mut self.summary)?;
                }
                _ => count_node(node, &mut self.summary),
            }
        }
        self.packer.store_tree(entries.into_values().collect())
    }

    /// The node of an entry of the upper directory `path` (the overlay's `shown`), with its
    /// content stored (a directory's subtree is the caller's).
    fn upper_node(
        &mut self,
        path: &Path,
        shown: &Path,
        name: &OsStr,
        meta: &Metadata,
    ) -> Result<Node> {
        if meta.is_file() && meta.nlink() > 1 {
            let meta = std::fs::symlink_metadata(shown).map_err(|e| Error::io(shown, e))?;
            return self.shared_file(shown, name, &meta);
        }
        let mut node = self.node_at(path, name, meta);
        match node.kind {
            NodeKind::File => self.file_content(path, meta, &mut node)?,
            NodeKind::Symlink => match std::fs::read_link(path) {
                Ok(target) => node.target = target.as_os_str().as_bytes().to_vec(),
                Err(e) => return Err(Error::io(path, e)),
            },
            _ => {}
        }
        count_node(&node, &mut self.summary);
        Ok(node)
    }

    /// The node of what `path` holds (`meta`), with its user's extended attributes and its
    /// inode number above the parent's, without content.
    fn node_at(&self, path: &Path, name: &OsStr, meta: &Metadata) -> Node {
        let mut node = node_from_stat(name, &meta.into(), self.owners);
        node.inode = UPPER_INODES | meta.ino();
        node.xattrs = match read_xattrs(path) {
            Ok(all) => user_xattrs(all, self.namespace.overlay_xattrs()),
            Err(e) => {
                warn(path, format!("cannot read extended attributes: {e}"));
                Vec::new()
            }
        };
        node
    }

    /// A file with several names, as the overlay shows it at `shown` (`meta`): every name of it
    /// gets the overlay's inode number, the names still in the parent's directories included,
    /// so restore links them all again.
    fn shared_file(&mut self, shown: &Path, name: &OsStr, meta: &Metadata) -> Result<Node> {
        let mut node = self.node_at(shown, name, meta);
        self.file_content(shown, meta, &mut node)?;
        count_node(&node, &mut self.summary);
        Ok(node)
    }

    /// Fills a file's content: the watcher's record if the file is unchanged since, the content
    /// of another name of the same inode, or read now.
    fn file_content(&mut self, path: &Path, meta: &Metadata, node: &mut Node) -> Result<()> {
        if let Some(content) = self.records.content_of(meta) {
            node.content = content;
            return Ok(());
        }
        if let Some(content) = self.linked.get(&meta.ino()) {
            node.content = content.clone();
            return Ok(());
        }
        let stored = noatime::open_file(path)
            .map_err(FileError::Local)
            .and_then(|file| {
                store_content(
                    self.chunker,
                    self.packer,
                    &file,
                    meta.size(),
                    self.read_batch,
                )
            });
        match stored {
            Ok((content, read)) => {
                if read != meta.size() {
                    warn(path, "changed while being read; stored what was read");
                    node.size = read;
                }
                node.content = content;
            }
            Err(FileError::Local(e)) => {
                warn(path, format!("cannot read: {e}"));
                node.size = 0;
            }
            Err(FileError::Repo(e)) => return Err(e),
        }
        if meta.nlink() > 1 {
            self.linked.insert(meta.ino(), node.content.clone());
        }
        Ok(())
    }
}

impl UpperWalk<'_> {
    /// The name of overlayfs' own attribute `name`.
    fn overlay_xattr(&self, name: &[u8]) -> Vec<u8> {
        [self.namespace.overlay_xattrs(), name].concat()
    }
}

/// Reports what the walk could not read (it stores such a file empty, as backup does).
fn warn(path: &Path, what: impl std::fmt::Display) {
    tracing::warn!("{}: {what}", path.display());
}

/// A whiteout: the character device 0/0 overlayfs leaves where an entry was deleted.
fn is_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// The extended attributes a user set: overlayfs' own (starting with `overlay`) dropped, a
/// user's of the same prefix (escaped by overlayfs as `overlay` twice) given back its name.
fn user_xattrs(all: Vec<Xattr>, overlay: &[u8]) -> Vec<Xattr> {
    let escaped = [overlay, b"overlay."].concat();
    let mut kept = all
        .into_iter()
        .filter_map(|mut x| {
            if x.name.starts_with(&escaped) {
                x.name.drain(overlay.len()..escaped.len());
                Some(x)
            } else if x.name.starts_with(overlay) {
                None
            } else {
                Some(x)
            }
        })
        .collect::<Vec<_>>();
    kept.sort_by(|a, b| a.name.cmp(&b.name));
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x(name: &str) -> Xattr {
        Xattr {
            name: name.as_bytes().to_vec(),
            value: b"v".to_vec(),
        }
    }

    #[test]
    fn overlay_attributes_are_dropped_and_escaped_user_ones_restored() {
        let kept = user_xattrs(
            vec![
                x("trusted.overlay.opaque"),
                x("trusted.overlay.overlay.mine"),
                x("user.note"),
                x("trusted.other"),
            ],
            Namespace::Root.overlay_xattrs(),
        );
        let names: Vec<&[u8]> = kept.iter().map(|x| x.name.as_slice()).collect();
        assert_eq!(
            names,
            vec![
                b"trusted.other".as_slice(),
                b"trusted.overlay.mine",
                b"user.note"
            ]
        );
    }

    #[test]
    fn in_a_user_namespace_the_user_prefix_is_overlayfs_own() {
        let kept = user_xattrs(
            vec![
                x("user.overlay.opaque"),
                x("user.overlay.overlay.mine"),
                x("user.note"),
            ],
            Namespace::User.overlay_xattrs(),
        );
        let names: Vec<&[u8]> = kept.iter().map(|x| x.name.as_slice()).collect();
        assert_eq!(names, vec![b"user.note".as_slice(), b"user.overlay.mine"]);
    }
}
