//! The view's parsed directories, and fetching them ahead of a walk.
//!
//! `find`, `ls -lR`, `cp -a` and a file manager walk down a snapshot one directory at a time;
//! fetched one at a time, each directory is a round trip to the store. So when a directory is
//! first listed, the trees of everything below it are fetched ahead level by level — each level
//! one batch of merged reads ([`crate::fetch::batch`]) — until a share of the cache is planned:
//! a walk then costs a few requests per level, not one per directory.

use crate::fetch::batch::plan_reads;
use crate::fetch::cache::BlobCache;
use crate::fetch::reader::Fetcher;
use crate::repo::ids::BlobId;
use crate::repo::index::Index;
use crate::repo::repository::valid_nodes;
use crate::repo::tree::{Node, NodeKind, Tree};
use lru::LruCache;
use parking_lot::Mutex;
use std::collections::HashSet;
use std::sync::Arc;

/// A directory's entries, shared with the inodes made from them.
pub(super) type Children = Arc<Vec<Arc<Node>>>;

struct Parsed {
    trees: LruCache<BlobId, (Children, usize)>,
    bytes: usize,
}

/// Parsed directories by tree id, taking at most `limit` bytes, charged against the cache's
/// budget.
pub(super) struct Trees {
    parsed: Mutex<Parsed>,
    budget: Arc<BlobCache>,
    limit: usize,
}

impl Trees {
    pub(super) fn new(budget: Arc<BlobCache>, limit: usize) -> Trees {
        Trees {
            parsed: Mutex::new(Parsed {
                trees: LruCache::unbounded(),
                bytes: 0,
            }),
            budget,
            limit,
        }
    }

    /// The entries of `tree` if parsed, as most recently used.
    pub(super) fn get(&self, tree: &BlobId) -> Option<Children> {
        self.parsed.lock().trees.get(tree).map(|(c, _)| c.clone())
    }

    /// The entries of `tree` if parsed, leaving its recency alone (a plan looking ahead).
    pub(super) fn peek(&self, tree: &BlobId) -> Option<Children> {
        self.parsed.lock().trees.peek(tree).map(|(c, _)| c.clone())
    }

    /// Keeps `nodes` as the entries of `tree`, making room by dropping the least recently used.
    pub(super) fn insert(&self, tree: BlobId, nodes: Vec<Node>) -> Children {
        let nodes: Vec<Arc<Node>> = nodes.into_iter().map(Arc::new).collect();
        let bytes = nodes.iter().map(|n| n.memory_size()).sum::<usize>();
        let nodes = Arc::new(nodes);
        let mut released = 0;
        {
            let mut parsed = self.parsed.lock();
            if let Some((_, old)) = parsed.trees.put(tree, (nodes.clone(), bytes)) {
                released += old;
                parsed.bytes -= old;
            }
            parsed.bytes += bytes;
            while parsed.bytes > self.limit && parsed.trees.len() > 1 {
                if let Some((_, (_, evicted))) = parsed.trees.pop_lru() {
                    released += evicted;
                    parsed.bytes -= evicted;
                }
            }
        }
        self.budget.discharge(released);
        self.budget.charge(bytes);
        nodes
    }
}

/// The subtrees of `children`'s directories.
pub(super) fn subtrees(children: &[Arc<Node>]) -> Vec<BlobId> {
    children
        .iter()
        .filter(|c| c.kind == NodeKind::Dir)
        .filter_map(|c| c.subtree)
        .collect()
}

/// What a tree counts against a [`fetch_below`]'s budget at least.
const MIN_TREE_BYTES: usize = 256;

/// Fetches the trees `level` and those below them, a level at a time, until `budget` bytes of
/// parsed entries are planned or the levels end. Each level's trees not parsed yet are read by
/// pack in merged ranges, `parallel` reads at a time. A tree that fails (or is split in pieces)
/// is left to the walk that reaches it, which reports it.
pub(super) fn fetch_below(
    fetcher: &Fetcher,
    index: &Index,
    trees: &Trees,
    mut level: Vec<BlobId>,
    budget: usize,
    parallel: usize,
) {
    let mut planned = 0usize;
    // A tree reached twice (the same directory stored in many places) is walked once.
    let mut seen = HashSet::new();
    while !level.is_empty() && planned < budget {
        let mut next = Vec::new();
        let mut wanted = Vec::new();
        for tree in level.into_iter().filter(|t| seen.insert(*t)) {
            match trees.peek(&tree) {
                Some(children) => next.extend(subtrees(&children)),
                None => wanted.push(tree),
            }
        }
        // No more trees than the budget's rest could hold, each counted at least a node: a
        // level of a million directories is read a budget at a time, as the walk gets there.
        wanted.truncate((budget.saturating_sub(planned) / MIN_TREE_BYTES).max(1));
        let mut reads = plan_reads(&fetcher.cache, index, &wanted)
            .into_iter()
            .peekable();
        // What the level's reads parsed: its bytes, and the trees below it (not the parsed
        // trees themselves, which the tree cache may let go).
        let found = Mutex::new((0usize, Vec::new()));
        while reads.peek().is_some() && planned + found.lock().0 < budget {
            let group: Vec<_> = reads.by_ref().take(parallel.max(1)).collect();
            std::thread::scope(|scope| {
                for read in group {
                    let found = &found;
                    scope.spawn(move || {
                        read.run(fetcher, |id, plain| {
                            fetcher.cache.forget(id);
                            if let Ok(Tree::Nodes(nodes)) = Tree::decode(plain, id) {
                                let children = trees.insert(*id, valid_nodes(id, nodes));
                                let bytes: usize = children.iter().map(|n| n.memory_size()).sum();
                                let mut found = found.lock();
                                found.0 += bytes.max(MIN_TREE_BYTES);
                                found.1.extend(subtrees(&children));
                            }
                        })
                    });
                }
            });
        }
        let (bytes, below) = found.into_inner();
        planned += bytes;
        next.extend(below);
        level = next;
    }
}
