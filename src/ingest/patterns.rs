//! Path patterns for `backup --exclude` and `restore --include/--exclude`, as restic users write
//! them: a pattern with a `/` matches the whole path (`/home/*/.cache`, `**/target`), one
//! without matches any file name (`*.o`, `.git`). A directory that matches is selected (or
//! skipped) with everything below it.

use crate::error::{Error, Result};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use std::ffi::OsStr;
use std::path::Path;

/// A compiled set of patterns.
#[derive(Clone)]
pub struct Patterns {
    paths: GlobSet,
    names: GlobSet,
}

impl Patterns {
    /// Compiles `patterns`; blank lines and `#` comments (from pattern files) are ignored.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Patterns> {
        let mut paths = GlobSetBuilder::new();
        let mut names = GlobSetBuilder::new();
        for pattern in patterns {
            let pattern = pattern.as_ref().trim();
            if pattern.is_empty() || pattern.starts_with('#') {
                continue;
            }
            let glob = GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .map_err(|e| Error::Invalid(format!("pattern {pattern:?}: {e}")))?;
            if pattern.contains('/') {
                paths.add(glob)
            } else {
                names.add(glob)
            };
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| Error::Invalid(format!("patterns: {e}")))
        };
        Ok(Patterns {
            paths: build(paths)?,
            names: build(names)?,
        })
    }

    /// Whether there are no patterns at all.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty() && self.names.is_empty()
    }

    /// Whether `path` or any directory above it matches.
    pub fn matches_path_or_parent(&self, path: &Path) -> bool {
        path.ancestors()
            .any(|p| p.file_name().is_some_and(|name| self.matches(p, name)))
    }

    /// Matches nothing.
    pub fn none() -> Patterns {
        Patterns::new::<&str>(&[]).expect("empty set compiles")
    }

    /// Whether the entry at `path` named `name` matches.
    pub fn matches(&self, path: &Path, name: &OsStr) -> bool {
        self.names.is_match(name) || self.paths.is_match(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_and_path_patterns() {
        let ex = Patterns::new(&["*.o", "/home/*/.cache", "# comment", ""]).unwrap();
        assert!(ex.matches(Path::new("/src/a.o"), OsStr::new("a.o")));
        assert!(!ex.matches(Path::new("/src/a.c"), OsStr::new("a.c")));
        assert!(ex.matches(Path::new("/home/me/.cache"), OsStr::new(".cache")));
        assert!(!ex.matches(Path::new("/home/me/x/.cache"), OsStr::new(".cache")));
    }
}
