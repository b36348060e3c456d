//! Tree blobs: one directory each, its nodes sorted by name bytes (names are bytes, not UTF-8).
//! Identical directories serialize to identical bytes and so dedupe. A directory too large for
//! one blob is stored as sorted pieces under a small root listing each piece's first name, so no
//! single blob grows with the directory.

use crate::error::Result;
use crate::repo::ids::BlobId;
use crate::repo::serial;
use serde::{Deserialize, Serialize};

/// What a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NodeKind {
    /// A regular file; its content is a list of data blobs.
    File,
    /// A directory; its entries are a subtree blob.
    Dir,
    /// A symbolic link; its target is in `target`.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A Unix domain socket (recorded, restored as nothing: sockets cannot be re-created empty).
    Socket,
    /// A character device; its number is in `rdev`.
    CharDevice,
    /// A block device; its number is in `rdev`.
    BlockDevice,
}

/// One extended attribute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    /// Attribute name, e.g. `user.comment`.
    pub name: Vec<u8>,
    /// Attribute value.
    pub value: Vec<u8>,
}

/// One directory entry with everything needed to restore it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// File name bytes.
    pub name: Vec<u8>,
    /// What it is.
    pub kind: NodeKind,
    /// Permission bits including setuid, setgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Owner name at backup time, if known.
    pub user: String,
    /// Group name at backup time, if known.
    pub group: String,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime: i64,
    /// Status change time, nanoseconds since the Unix epoch.
    pub ctime: i64,
    /// Access time, nanoseconds since the Unix epoch.
    pub atime: i64,
    /// Size in bytes (files: content length; symlinks: target length).
    pub size: u64,
    /// Inode number at backup time: detects unchanged files and joins hard links.
    pub inode: u64,
    /// Device of the file system it lived on.
    pub device: u64,
    /// Hard link count.
    pub links: u64,
    /// Device number of a device node.
    pub rdev: u64,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<Xattr>,
    /// Symlink target bytes; empty otherwise.
    pub target: Vec<u8>,
    /// Data blobs of a file, in order.
    pub content: Vec<BlobId>,
    /// Tree blob of a directory.
    pub subtree: Option<BlobId>,
}

impl Node {
    /// What makes two nodes the same content: kind and chunks, link target or device number,
    /// not attributes. The history view's versions and hard links (restore, dump) compare it.
    pub fn content_key(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update([self.kind as u8]);
        match self.kind {
            NodeKind::File => {
                for id in &self.content {
                    h.update(id.0);
                }
            }
            NodeKind::Symlink => h.update(&self.target),
            _ => h.update(self.rdev.to_le_bytes()),
        }
        h.finalize().into()
    }

    /// Roughly the memory this node holds, itself and its heap parts, for caches that count
    /// what they keep.
    pub fn memory_size(&self) -> usize {
        std::mem::size_of::<Node>()
            + self.name.capacity()
            + self.user.capacity()
            + self.group.capacity()
            + self.target.capacity()
            + self.content.capacity() * std::mem::size_of::<BlobId>()
            + self
                .xattrs
                .iter()
                .map(|x| std::mem::size_of::<Xattr>() + x.name.capacity() + x.value.capacity())
                .sum::<usize>()
    }

    /// A node of `kind` with permission bits `mode`, owned by `owner` (uid, gid), all times
    /// `time`, and nothing else yet: what a newly made file, directory or link starts as.
    pub fn new(kind: NodeKind, mode: u32, owner: (u32, u32), time: i64) -> Node {
        Node {
            name: Vec::new(),
            kind,
            mode: mode & 0o7777,
            uid: owner.0,
            gid: owner.1,
            user: String::new(),
            group: String::new(),
            mtime: time,
            ctime: time,
            atime: time,
            size: 0,
            inode: 0,
            device: 0,
            links: if kind == NodeKind::Dir { 2 } else { 1 },
            rdev: 0,
            xattrs: Vec::new(),
            target: Vec::new(),
            content: Vec::new(),
            subtree: None,
        }
    }
}

/// Why a node's name cannot be a directory entry, or `None` when it can. A name is one path
/// component: not empty, not `.` or `..`, no `/` and no NUL, at most 255 bytes (NAME_MAX). A
/// tree holding anything else was crafted or damaged: joined to a path it would climb out of the
/// directory it belongs to, so readers skip such entries and `check` reports them.
pub fn invalid_name(name: &[u8]) -> Option<&'static str> {
    match name {
        [] => Some("empty name"),
        b"." | b".." => Some("name is . or .."),
        _ if name.contains(&b'/') => Some("name contains '/'"),
        _ if name.contains(&0) => Some("name contains NUL"),
        _ if name.len() > MAX_NAME_LEN => Some("name longer than 255 bytes"),
        _ => None,
    }
}

/// Deepest directory nesting any walk of a tree descends into (restore, ls, check's and repair's
/// walks, a stage counting its parent). Deeper paths cannot be opened by name on Linux (PATH_MAX
/// is 4096 bytes, two per level at the least), and a crafted tree could nest without end.
pub const MAX_DEPTH: usize = 1024;

/// The longest name a directory entry may have, as on Linux file systems (NAME_MAX).
pub const MAX_NAME_LEN: usize = 255;

/// One piece of a split directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    /// Name of the first node in the piece.
    pub first_name: Vec<u8>,
    /// Tree blob holding the piece's nodes.
    pub tree: BlobId,
}

/// The content of a tree blob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tree {
    /// A whole directory (or one piece of a split one).
    Nodes(Vec<Node>),
    /// A split directory: its pieces in name order.
    Pieces(Vec<Piece>),
}

impl Tree {
    /// Serializes the tree.
    pub fn encode(&self) -> Vec<u8> {
        serial::encode(self)
    }

    /// Parses a tree blob's plaintext; `id` names it in errors.
    pub fn decode(bytes: &[u8], id: &BlobId) -> Result<Tree> {
        let tree: Tree = serial::decode(bytes, &format!("tree {id}"))?;
        if let Tree::Nodes(nodes) = &tree
            && nodes.windows(2).any(|w| w[0].name >= w[1].name)
        {
            return Err(crate::Error::corrupt(
                format!("tree {id}"),
                "names not sorted and unique",
            ));
        }
        Ok(tree)
    }
}

/// Splits sorted `nodes` into consecutive runs whose encoding stays under `limit` bytes (a
/// single node larger than the limit gets a run of its own).
pub fn split_nodes(nodes: Vec<Node>, limit: usize) -> Vec<Vec<Node>> {
    let mut pieces = vec![Vec::new()];
    let mut size = 0;
    for node in nodes {
        let node_size = postcard::experimental::serialized_size(&node).unwrap_or(limit);
        let current = pieces.last_mut().expect("never empty");
        if size + node_size > limit && !current.is_empty() {
            pieces.push(Vec::new());
            size = 0;
        }
        size += node_size;
        pieces.last_mut().expect("never empty").push(node);
    }
    pieces
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub fn node(name: &[u8]) -> Node {
        Node {
            name: name.to_vec(),
            kind: NodeKind::File,
            mode: 0o644,
            uid: 1,
            gid: 2,
            user: "u".into(),
            group: "g".into(),
            mtime: 1,
            ctime: 2,
            atime: 3,
            size: 4,
            inode: 5,
            device: 6,
            links: 1,
            rdev: 0,
            xattrs: vec![Xattr {
                name: b"user.a".to_vec(),
                value: vec![0xff, 0],
            }],
            target: Vec::new(),
            content: vec![BlobId([9; 32])],
            subtree: None,
        }
    }

    #[test]
    fn split_keeps_order_and_bounds_size() {
        let nodes: Vec<Node> = (0..1000u32)
            .map(|i| node(format!("{i:05}").as_bytes()))
            .collect();
        let pieces = split_nodes(nodes.clone(), 4096);
        assert!(pieces.len() > 10);
        for piece in &pieces {
            assert!(Tree::Nodes(piece.clone()).encode().len() <= 4096 + 16);
        }
        assert_eq!(pieces.concat(), nodes);
    }

    #[test]
    fn names_that_are_not_one_path_component_are_invalid() {
        for bad in [
            &b""[..],
            b".",
            b"..",
            b"a/b",
            b"/etc",
            b"a\0b",
            &[b'x'; 256],
        ] {
            assert!(invalid_name(bad).is_some(), "{bad:?} accepted");
        }
        for good in [&b"a"[..], b"...", b".hidden", b"\xff\xfe", &[b'x'; 255]] {
            assert_eq!(invalid_name(good), None, "{good:?} refused");
        }
    }

    #[test]
    fn unsorted_tree_is_rejected() {
        let bytes = Tree::Nodes(vec![node(b"b"), node(b"a")]).encode();
        assert!(Tree::decode(&bytes, &BlobId::default()).is_err());
    }

    proptest! {
        #[test]
        fn tree_round_trips(names in proptest::collection::btree_set(proptest::collection::vec(any::<u8>(), 1..20), 0..20),
                            mtime in any::<i64>(), size in any::<u64>()) {
            let nodes: Vec<Node> = names.iter().map(|n| Node { mtime, size, ..node(n) }).collect();
            let tree = Tree::Nodes(nodes);
            prop_assert_eq!(Tree::decode(&tree.encode(), &BlobId::default()).unwrap(), tree);
        }

        #[test]
        fn tree_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Tree::decode(&bytes, &BlobId::default());
        }
    }
}
