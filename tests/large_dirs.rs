//! Directories too large for one tree blob are split into pieces; they back up, list and
//! restore like any other.

mod common;

use cairn::ingest::IngestLimits;
use cairn::ingest::archiver::{BackupOptions, ParentChoice, backup};
use cairn::ingest::patterns::Patterns;
use cairn::ingest::progress::Progress;
use cairn::ops::restore::{RestoreOptions, RestoreProgress, restore};
use cairn::repo::Repository;
use cairn::repo::config::Params;
use cairn::repo::tree::Tree;
use std::fs;
use std::path::Path;
use std::sync::Arc;

#[test]
fn directory_larger_than_a_tree_blob_is_split_and_restores_whole() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(cairn::backend::local::LocalBackend::new(
        dir.path().join("repo"),
    ));
    let params = Params {
        tree_split_size: 4096,
        ..Params::default()
    };
    let repo = Arc::new(Repository::init(backend, b"pw", common::FAST_KDF, params).unwrap());
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..2000 {
        fs::write(src.join(format!("entry-{i:05}")), format!("{i}")).unwrap();
    }
    let opts = BackupOptions {
        paths: vec![src.clone()],
        excludes: Patterns::none(),
        one_file_system: false,
        tags: vec![],
        hostname: "h".into(),
        parent: ParentChoice::Latest,
        dry_run: false,
        lease: cairn::repo::writer::Lease::configured(),
        limits: IngestLimits::default(),
    };
    let outcome = backup(repo.clone(), &opts, &Progress::default(), None).unwrap();
    let index = repo.load_index().unwrap();
    let root = repo.read_tree(&index, &outcome.snapshot.tree).unwrap();
    let dir_tree = root[0].subtree.unwrap();
    let blob = repo.read_blob(&index.get(&dir_tree).unwrap()).unwrap();
    let Tree::Pieces(pieces) = Tree::decode(&blob, &dir_tree).unwrap() else {
        panic!("expected a split directory")
    };
    assert!(pieces.len() > 10, "{} pieces", pieces.len());
    assert_eq!(repo.read_tree(&index, &dir_tree).unwrap().len(), 2000);

    let target = dir.path().join("restored");
    let ropts = RestoreOptions {
        target: target.clone(),
        include: Patterns::none(),
        exclude: Patterns::none(),
        verify: true,
        read_window: 32 << 20,
        overwrite: Default::default(),
        delete: false,
    };
    let done = restore(
        &repo,
        &index,
        &outcome.snapshot,
        Path::new(""),
        &ropts,
        &RestoreProgress::default(),
    )
    .unwrap();
    assert!(done.errors.is_empty(), "{:?}", done.errors);
    common::assert_same_tree(&src, &target.join("src"));

    // Unchanged re-backup re-uses the split tree as a parent, reading nothing.
    let again = backup(repo.clone(), &opts, &Progress::default(), None).unwrap();
    assert_eq!(again.snapshot.summary.files_read, 0);
}
