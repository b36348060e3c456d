//! The snapshot filters `forget` and `copy` share (`--host`, `--tag`, `--path`), with the
//! meaning restic gives them.

use cairn::repo::snapshot::Snapshot;

/// Which snapshots a command works on.
#[derive(clap::Args, Clone, Default)]
pub struct SnapshotFilter {
    /// Only snapshots of this host (repeatable: any).
    #[arg(long)]
    pub host: Vec<String>,
    /// Only snapshots with all of these tags (`a,b`; repeatable: any of the lists).
    #[arg(long)]
    pub tag: Vec<String>,
    /// Only snapshots that include this path (repeatable: all of them).
    #[arg(long)]
    pub path: Vec<String>,
}

impl SnapshotFilter {
    /// Whether `snapshot` passes every filter given.
    pub fn keeps(&self, snapshot: &Snapshot) -> bool {
        let tags = tag_lists(&self.tag);
        (self.host.is_empty() || self.host.contains(&snapshot.hostname))
            && (tags.is_empty()
                || tags
                    .iter()
                    .any(|l| l.iter().all(|t| snapshot.tags.contains(t))))
            && self.path.iter().all(|p| snapshot.paths.contains(p))
    }
}

/// `a,b` lists of tags, empty names dropped.
pub fn tag_lists(specs: &[String]) -> Vec<Vec<String>> {
    specs
        .iter()
        .map(|s| {
            s.split(',')
                .filter(|t| !t.is_empty())
                .map(String::from)
                .collect()
        })
        .collect()
}
