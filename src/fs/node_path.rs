//! Paths from the mount point, for log lines, stored as a name and a link to the parent's path.
//!
//! Why not a string per inode: the view keeps an entry for every inode the kernel holds, and a
//! tree 100,000 levels deep (crafted, or just deep) would make each of its inodes hold a path of
//! up to 100,000 names — memory quadratic in the depth, gigabytes for one `find`. Linked, every
//! inode holds its own name and shares the rest with its parent. Dropping and printing walk the
//! chain in a loop, so no depth overflows the stack, and a printed path keeps only its last
//! [`SHOWN_COMPONENTS`] names.

use std::fmt;
use std::sync::Arc;

/// Names a printed path shows at most; deeper ones start with `…/`.
pub const SHOWN_COMPONENTS: usize = 64;

/// A path from the mount point: cheap to clone and to extend.
#[derive(Clone, Debug)]
pub struct NodePath(Arc<Part>);

#[derive(Debug)]
struct Part {
    parent: Option<NodePath>,
    name: Box<str>,
}

impl NodePath {
    /// A path of one name (a snapshot's directory, or the mounted root: `""`).
    pub fn root(name: &str) -> NodePath {
        NodePath(Arc::new(Part {
            parent: None,
            name: name.into(),
        }))
    }

    /// The path of `name` inside this one.
    pub fn child(&self, name: &[u8]) -> NodePath {
        NodePath(Arc::new(Part {
            parent: Some(self.clone()),
            name: String::from_utf8_lossy(name).into(),
        }))
    }

    /// The memory this path adds over its parent's: its own name and link.
    pub fn own_memory(&self) -> usize {
        std::mem::size_of::<Part>() + 16 + self.0.name.len()
    }
}

impl Drop for Part {
    /// Unlinks the chain of parents no one else holds one by one: the default drop would recurse
    /// once per level.
    fn drop(&mut self) {
        let mut next = self.parent.take();
        while let Some(path) = next {
            next = match Arc::try_unwrap(path.0) {
                Ok(mut part) => part.parent.take(),
                Err(_) => None,
            };
        }
    }
}

impl fmt::Display for NodePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = Vec::new();
        let mut at = Some(self);
        while let Some(path) = at {
            if names.len() == SHOWN_COMPONENTS {
                f.write_str("…/")?;
                break;
            }
            names.push(&path.0.name);
            at = path.0.parent.as_ref();
        }
        for (i, name) in names.iter().rev().enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_print_their_names_and_shorten_deep_ones() {
        let root = NodePath::root("snapshots/2026-01-01T00:00:00");
        let file = root.child(b"dir").child(b"f\xff");
        assert_eq!(
            file.to_string(),
            "snapshots/2026-01-01T00:00:00/dir/f\u{fffd}"
        );
        let mut deep = NodePath::root("");
        for _ in 0..100 {
            deep = deep.child(b"d");
        }
        let shown = deep.to_string();
        assert!(shown.starts_with("…/d/"), "{shown}");
        assert_eq!(shown.matches('d').count(), SHOWN_COMPONENTS);
    }

    #[test]
    fn a_chain_a_million_levels_deep_drops_without_overflowing_the_stack() {
        let mut deep = NodePath::root("");
        for _ in 0..1_000_000 {
            deep = deep.child(b"d");
        }
        drop(deep);
    }
}
