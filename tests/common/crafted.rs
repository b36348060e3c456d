//! Repositories as an attacker who holds the password would write them: trees with any names,
//! modes and shapes, stored through the library with a valid key, so tests can show what cairn
//! does with hostile content rather than with damaged bytes.

use super::Env;
use cairn::backend::local::LocalBackend;
use cairn::ingest::IngestLimits;
use cairn::ingest::packer::Packer;
use cairn::repo::Repository;
use cairn::repo::ids::BlobKind;
use cairn::repo::snapshot::{Snapshot, Summary};
use cairn::repo::tree::{Node, NodeKind, Piece, Tree};
use std::sync::Arc;

/// Builds trees the way an attacker with the password would: any names, any modes.
pub struct Crafter {
    repo: Arc<Repository>,
    packer: Option<Packer>,
}

impl Crafter {
    pub fn new(env: &Env) -> Crafter {
        let backend = Arc::new(LocalBackend::new(env.repo()));
        let repo = Arc::new(Repository::open(backend, b"correct horse").unwrap());
        let index = Arc::new(repo.load_index().unwrap());
        let packer = Packer::new(repo.clone(), index, IngestLimits::default(), false);
        Crafter {
            repo,
            packer: Some(packer),
        }
    }

    pub fn packer(&self) -> &Packer {
        self.packer.as_ref().unwrap()
    }

    pub fn node(name: &[u8], kind: NodeKind, mode: u32) -> Node {
        let mut node = Node::new(kind, mode, (4321, 4321), 1_000_000_000);
        node.name = name.to_vec();
        node
    }

    pub fn file(&self, name: &[u8], mode: u32, content: &[u8]) -> Node {
        let mut node = Crafter::node(name, NodeKind::File, mode);
        node.content = vec![self.packer().add(BlobKind::Data, content).unwrap()];
        node.size = content.len() as u64;
        node
    }

    pub fn symlink(name: &[u8], target: &[u8]) -> Node {
        let mut node = Crafter::node(name, NodeKind::Symlink, 0o777);
        node.target = target.to_vec();
        node
    }

    /// A directory node over `children` (sorted here, as a tree must be to decode).
    pub fn dir(&self, name: &[u8], mode: u32, mut children: Vec<Node>) -> Node {
        children.sort_by(|a, b| a.name.cmp(&b.name));
        let mut node = Crafter::node(name, NodeKind::Dir, mode);
        node.subtree = Some(self.packer().store_tree(children).unwrap());
        node
    }

    /// A directory stored as two pieces that both hold a node called like `first[0]`'s name.
    pub fn overlapping_pieces(&self, name: &[u8], first: Vec<Node>, second: Vec<Node>) -> Node {
        let mut pieces = Vec::new();
        for part in [first, second] {
            let first_name = part[0].name.clone();
            let tree = self.packer().store_tree(part).unwrap();
            pieces.push(Piece { first_name, tree });
        }
        let root = self
            .packer()
            .add(BlobKind::Tree, &Tree::Pieces(pieces).encode())
            .unwrap();
        let mut node = Crafter::node(name, NodeKind::Dir, 0o755);
        node.subtree = Some(root);
        node
    }

    /// Stores everything, then a snapshot whose root holds `root`.
    pub fn commit(self, root: Vec<Node>) {
        self.commit_labelled(root, "attacker", &[]);
    }

    /// [`Crafter::commit`] with a summary claiming `files` files and `dirs` directories.
    pub fn commit_claiming(self, root: Vec<Node>, files: u64, dirs: u64) {
        self.commit_with(root, "attacker", &[], (files, dirs));
    }

    /// [`Crafter::commit`] with the given host name and tags.
    pub fn commit_labelled(self, root: Vec<Node>, host: &str, tags: &[&str]) {
        self.commit_with(root, host, tags, (3, 3));
    }

    fn commit_with(mut self, mut root: Vec<Node>, host: &str, tags: &[&str], claims: (u64, u64)) {
        root.sort_by(|a, b| a.name.cmp(&b.name));
        let tree = self.packer().store_tree(root).unwrap();
        self.packer.take().unwrap().finish().unwrap();
        let snapshot = Snapshot {
            time: 1_700_000_000_000_000_000,
            hostname: host.into(),
            username: "mallory".into(),
            paths: vec!["/crafted".into()],
            tags: tags.iter().map(|t| t.to_string()).collect(),
            parent: None,
            tree,
            program_version: "crafted".into(),
            copied_from: None,
            summary: Summary {
                files: claims.0,
                dirs: claims.1,
                ..Summary::default()
            },
        };
        self.repo.save_snapshot(&snapshot).unwrap();
    }
}
