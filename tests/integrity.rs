//! `check` and `repair` against real damage: bits flipped at random places in stored packs, a
//! deleted pack, lost index files, a truncated pack; and backups run through a store that fails,
//! flips bits, shortens reads and "crashes" at random steps. Whatever happens, either the backup
//! completes and every byte reads back, or it fails and no snapshot references missing data.

mod common;

use cairn::backend::Backend;
use cairn::backend::faulty::{FaultPlan, FaultyBackend, RandomFaults};
use cairn::backend::local::LocalBackend;
use cairn::ingest::IngestLimits;
use cairn::ingest::archiver::{BackupOptions, ParentChoice, backup};
use cairn::ingest::patterns::Patterns;
use cairn::ingest::progress::Progress;
use cairn::ops::check::{CheckOptions, CheckReport, DataSubset, Inventory, Problem, check};
use cairn::ops::repair::{REPAIRED_TAG, repair_index, repair_packs, repair_snapshots};
use cairn::ops::restore::{RestoreOptions, RestoreProgress, restore};
use cairn::repo::Repository;
use cairn::repo::config::Params;
use cairn::repo::ids::{BlobId, PackId};
use cairn::repo::index::{Index, Segment};
use cairn::repo::pack::{PackEntry, pack_name};
use cairn::repo::snapshot::Snapshot;
use common::{FAST_KDF, assert_same_tree, pseudo_random};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn small_packs() -> Params {
    Params {
        pack_size: 256 << 10,
        chunk_min: 16 << 10,
        chunk_avg: 32 << 10,
        chunk_max: 128 << 10,
        ..Params::default()
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    store: Arc<FaultyBackend>,
    repo: Arc<Repository>,
    src: PathBuf,
}

impl Fixture {
    /// A repository with small packs and a source tree of `files` files of `size` bytes each.
    fn new(files: u64, size: usize) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FaultyBackend::new(
            Arc::new(LocalBackend::new(dir.path().join("repo"))),
            FaultPlan::default(),
        ));
        let repo =
            Arc::new(Repository::init(store.clone(), b"pw", FAST_KDF, small_packs()).unwrap());
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        for i in 0..files {
            let name = if i % 2 == 0 {
                format!("file{i}")
            } else {
                format!("sub/file{i}")
            };
            fs::write(src.join(name), pseudo_random(i + 1, size)).unwrap();
        }
        Fixture {
            dir,
            store,
            repo,
            src,
        }
    }

    fn backup(&self) -> cairn::Result<Snapshot> {
        let opts = BackupOptions {
            paths: vec![self.src.clone()],
            excludes: Patterns::none(),
            one_file_system: false,
            tags: vec![],
            hostname: "test".into(),
            parent: ParentChoice::Nothing,
            dry_run: false,
            lease: cairn::repo::writer::Lease::configured(),
            limits: IngestLimits {
                index_flush_packs: 1,
                ..IngestLimits::default()
            },
        };
        backup(self.repo.clone(), &opts, &Progress::default(), None).map(|o| o.snapshot)
    }

    fn check(&self, read_data: bool) -> CheckReport {
        let opts = CheckOptions {
            read_data: read_data.then_some(DataSubset::All),
            ..CheckOptions::default()
        };
        check(&self.repo, &opts, &|_| {}).unwrap()
    }

    fn pack_path(&self, pack: &PackId) -> PathBuf {
        self.dir.path().join("repo").join(pack_name(pack))
    }

    fn data_bytes(&self) -> u64 {
        self.store
            .list("data/")
            .unwrap()
            .iter()
            .map(|o| o.size)
            .sum()
    }

    /// Restores `snapshot` and returns where its copy of the source is.
    fn restore(&self, snapshot: &Snapshot, name: &str) -> PathBuf {
        self.restore_with(&self.repo.load_index().unwrap(), snapshot, name)
    }

    /// [`Fixture::restore`] through `index`.
    fn restore_with(&self, index: &Index, snapshot: &Snapshot, name: &str) -> PathBuf {
        let target = self.dir.path().join(name);
        let opts = RestoreOptions {
            target: target.clone(),
            include: Patterns::none(),
            exclude: Patterns::none(),
            verify: true,
            read_window: 1 << 20,
            overwrite: Default::default(),
            delete: false,
        };
        let outcome = restore(
            &self.repo,
            index,
            snapshot,
            Path::new(""),
            &opts,
            &RestoreProgress::default(),
        )
        .unwrap();
        assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
        target.join("src")
    }

    /// The source file (relative path under `src`) each data blob belongs to.
    fn owners(&self, snapshot: &Snapshot) -> HashMap<BlobId, String> {
        let index = self.repo.load_index().unwrap();
        let mut owners = HashMap::new();
        let mut pending = vec![(snapshot.tree, String::new())];
        while let Some((tree, path)) = pending.pop() {
            for node in self.repo.read_tree(&index, &tree).unwrap() {
                let child = format!("{path}/{}", String::from_utf8_lossy(&node.name));
                for id in &node.content {
                    owners.insert(*id, child.clone());
                }
                if let Some(sub) = node.subtree {
                    pending.push((sub, child));
                }
            }
        }
        owners
    }
}

/// A pack holding file content, and its entries.
fn file_pack<'a>(
    inventory: &'a Inventory,
    owners: &HashMap<BlobId, String>,
) -> (&'a PackId, &'a Vec<PackEntry>) {
    inventory
        .by_pack
        .iter()
        .find(|(_, e)| owners.contains_key(&e[0].id))
        .unwrap()
}

fn flip(path: &Path, offset: u64, bit: u8) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 1 << bit;
    // Pack files are read-only once stored; the test writes through that on purpose.
    let mut perms = fs::metadata(path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    fs::set_permissions(path, perms).unwrap();
    fs::write(path, bytes).unwrap();
}

fn next(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *state >> 33
}

#[test]
fn every_one_of_1000_flipped_bits_is_found_and_named() {
    let fx = Fixture::new(8, 300 << 10);
    let snapshot = fx.backup().unwrap();
    assert!(fx.check(true).is_healthy());
    let owners = fx.owners(&snapshot);
    let inventory = Inventory::load(&fx.repo).unwrap();
    let mut packs: Vec<(PackId, u64)> = inventory.stored.iter().map(|(p, s)| (*p, *s)).collect();
    packs.sort();
    let total: u64 = packs.iter().map(|(_, s)| s).sum();
    let mut rng = 42u64;
    let mut named = 0;
    for _ in 0..1000 {
        // A position uniformly over all stored pack bytes.
        let mut at = next(&mut rng) % total;
        let (pack, _) = *packs
            .iter()
            .find(|(_, size)| {
                let here = at < *size;
                if !here {
                    at -= size;
                }
                here
            })
            .unwrap();
        let bit = (next(&mut rng) % 8) as u8;
        flip(&fx.pack_path(&pack), at, bit);
        let report = fx.check(true);
        assert!(!report.is_healthy(), "flip at {pack}+{at} went unnoticed");
        let hit = inventory.by_pack[&pack]
            .iter()
            .find(|e| u64::from(e.offset) <= at && at < u64::from(e.offset + e.sealed_len));
        if let Some(entry) = hit.filter(|e| owners.contains_key(&e.id)) {
            let damaged = report
                .problems
                .iter()
                .find(|p| p.blob() == Some(entry.id))
                .unwrap_or_else(|| panic!("blob {} not reported: {report:?}", entry.id));
            let Problem::DamagedBlob { uses, .. } = damaged else {
                panic!("{damaged:?}");
            };
            let expected = owners[&entry.id].clone();
            assert!(
                uses.iter().any(|u| u.path == expected),
                "{expected} not named in {uses:?}"
            );
            named += 1;
        }
        flip(&fx.pack_path(&pack), at, bit);
    }
    assert!(named > 900, "only {named} flips landed in data blobs");
    assert!(fx.check(true).is_healthy());
}

#[test]
fn repair_packs_from_the_source_restores_full_health_after_flipped_bits() {
    let fx = Fixture::new(8, 300 << 10);
    let snapshot = fx.backup().unwrap();
    let inventory = Inventory::load(&fx.repo).unwrap();
    // One flip inside a blob of each of three data packs, and one in a pack header.
    let mut data_packs: Vec<&PackId> = inventory
        .by_pack
        .iter()
        .filter(|(_, e)| e[0].kind == cairn::repo::ids::BlobKind::Data)
        .map(|(p, _)| p)
        .collect();
    data_packs.sort();
    // A flip in a solid group damages every member of it: each is named.
    let mut damaged = 0;
    for pack in data_packs.iter().take(3) {
        // Any blob of the pack: the job's last pack may hold only one.
        let entries = &inventory.by_pack[*pack];
        let entry = entries[entries.len() - 1];
        flip(&fx.pack_path(pack), u64::from(entry.offset) + 40, 3);
        let sharing = inventory.by_pack[*pack]
            .iter()
            .filter(|e| e.offset == entry.offset);
        damaged += sharing.count();
    }
    let last = data_packs[3];
    flip(&fx.pack_path(last), inventory.stored[last] - 20, 0);
    // Beyond what parity heals (they have none): salvage and the source must.
    for pack in data_packs.iter().take(4) {
        fx.store
            .delete(&cairn::repo::parity::parity_name(pack))
            .unwrap();
    }
    let report = fx.check(true);
    assert_eq!(
        report
            .problems
            .iter()
            .filter(|p| matches!(p, Problem::DamagedBlob { .. }))
            .count(),
        damaged,
        "{report:?}"
    );
    let repaired = repair_packs(&fx.repo, std::slice::from_ref(&fx.src), &|_| {}).unwrap();
    assert_eq!(
        repaired.damaged_packs.len(),
        4,
        "{repaired:?} after {report:?}"
    );
    assert_eq!(repaired.recreated, damaged, "{repaired:?}");
    assert!(
        repaired.still_missing.is_empty(),
        "{repaired:?} after {report:?}"
    );
    assert_eq!(repaired.removed_packs, 4);
    let after = fx.check(true);
    assert!(after.is_healthy(), "{after:?}");
    assert!(after.unindexed_packs.is_empty());
    assert_same_tree(&fx.src, &fx.restore(&snapshot, "restored"));
}

#[test]
fn lost_index_files_are_reported_and_rebuilt_from_pack_headers() {
    let fx = Fixture::new(4, 200 << 10);
    let snapshot = fx.backup().unwrap();
    let packs = fx.store.list("data/").unwrap().len();
    for file in fx.store.list("index/").unwrap() {
        fx.store.delete(&file.name).unwrap();
    }
    let report = fx.check(false);
    assert_eq!(report.unindexed_packs.len(), packs);
    assert!(
        report
            .problems
            .iter()
            .all(|p| matches!(p, Problem::MissingBlob { .. })),
        "{report:?}"
    );
    assert!(!report.is_healthy());
    let rebuilt = repair_index(&fx.repo).unwrap();
    assert_eq!(rebuilt.packs_indexed, packs);
    assert!(rebuilt.unreadable_packs.is_empty());
    let after = fx.check(true);
    assert!(after.is_healthy(), "{after:?}");
    assert!(after.unindexed_packs.is_empty());
    assert_same_tree(&fx.src, &fx.restore(&snapshot, "restored"));
}

#[test]
fn a_deleted_pack_is_reported_with_its_files_and_recreated_from_the_source() {
    let fx = Fixture::new(4, 200 << 10);
    let snapshot = fx.backup().unwrap();
    let owners = fx.owners(&snapshot);
    let inventory = Inventory::load(&fx.repo).unwrap();
    let (pack, entries) = file_pack(&inventory, &owners);
    fs::remove_file(fx.pack_path(pack)).unwrap();
    let report = fx.check(false);
    let missing: Vec<&Problem> = report
        .problems
        .iter()
        .filter(|p| matches!(p, Problem::MissingPack { .. }))
        .collect();
    assert_eq!(missing.len(), 1, "{report:?}");
    assert!(
        matches!(missing[0], Problem::MissingPack { pack: p, blobs, stale: false } if p == pack && *blobs == entries.len())
    );
    let repaired = repair_packs(&fx.repo, std::slice::from_ref(&fx.src), &|_| {}).unwrap();
    assert_eq!(repaired.recreated, entries.len(), "{repaired:?}");
    assert!(fx.check(true).is_healthy());
    assert_same_tree(&fx.src, &fx.restore(&snapshot, "restored"));
}

#[test]
fn an_old_index_file_replayed_after_repair_packs_is_named_stale_and_reads_fall_back() {
    let fx = Fixture::new(4, 200 << 10);
    let snapshot = fx.backup().unwrap();
    let owners = fx.owners(&snapshot);
    let inventory = Inventory::load(&fx.repo).unwrap();
    let (pack, _) = file_pack(&inventory, &owners);
    let index_dir = fx.dir.path().join("repo/index");
    let old_index: Vec<(PathBuf, Vec<u8>)> = fs::read_dir(&index_dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let bytes = fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    fs::remove_file(fx.pack_path(pack)).unwrap();
    repair_packs(&fx.repo, std::slice::from_ref(&fx.src), &|_| {}).unwrap();
    assert!(fx.check(true).is_healthy());
    // The old index files come back (a sync from a backup copy): they name the deleted pack.
    for (path, bytes) in &old_index {
        if !path.exists() {
            fs::write(path, bytes).unwrap();
        }
    }
    let report = fx.check(false);
    let missing: Vec<&Problem> = report
        .problems
        .iter()
        .filter(|p| matches!(p, Problem::MissingPack { .. }))
        .collect();
    assert_eq!(missing.len(), 1, "{report:?}");
    assert!(
        matches!(missing[0], Problem::MissingPack { pack: p, stale: true, .. } if p == pack),
        "{report:?}"
    );
    assert!(missing[0].to_string().contains("stale"));
    // Restore reads every blob from the pack that holds it now, even when the stale entries
    // come first (the index built with the old files first).
    let key = fx.repo.key();
    let mut files: Vec<PathBuf> = fs::read_dir(&index_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort_by_key(|p| !old_index.iter().any(|(old, _)| old == p));
    let segments = files
        .iter()
        .map(|p| Segment::open(key, "index", &fs::read(p).unwrap()).unwrap())
        .collect();
    let index = Index::from_segments(segments);
    let (_, entries) = file_pack(&inventory, &owners);
    assert_eq!(index.get(&entries[0].id).unwrap().pack, *pack);
    assert_same_tree(&fx.src, &fx.restore_with(&index, &snapshot, "restored"));
}

#[test]
fn a_truncated_pack_is_reported_and_what_is_lost_is_dropped_by_repair_snapshots() {
    let fx = Fixture::new(4, 200 << 10);
    let snapshot = fx.backup().unwrap();
    let owners = fx.owners(&snapshot);
    let inventory = Inventory::load(&fx.repo).unwrap();
    let (pack, entries) = file_pack(&inventory, &owners);
    let size = inventory.stored[pack];
    let file = fs::OpenOptions::new()
        .write(true)
        .open(fx.pack_path(pack))
        .unwrap();
    file.set_len(size / 2).unwrap();
    let report = fx.check(false);
    assert!(
        report
            .problems
            .iter()
            .any(|p| matches!(p, Problem::ShortPack { pack: p, .. } if p == pack)),
        "{report:?}"
    );
    // Without the source, the blobs beyond the cut are lost for good.
    let repaired = repair_packs(&fx.repo, &[], &|_| {}).unwrap();
    assert!(!repaired.still_missing.is_empty());
    assert!(repaired.salvaged < entries.len());
    let broken: Vec<String> = owners
        .iter()
        .filter(|(id, _)| repaired.still_missing.contains(id))
        .map(|(_, path)| path.clone())
        .collect();
    let fixed = repair_snapshots(&fx.repo, true).unwrap();
    assert_eq!(fixed.repaired.len(), 1);
    let mut removed = fixed.repaired[0].removed.clone();
    removed.sort();
    let mut expected = broken.clone();
    expected.sort();
    expected.dedup();
    assert_eq!(removed, expected);
    let after = fx.check(true);
    assert!(after.is_healthy(), "{after:?}");
    let (_, new) = fx.repo.find_snapshot("latest").unwrap();
    assert!(new.tags.iter().any(|t| t == REPAIRED_TAG));
    let restored = fx.restore(&new, "restored");
    for path in &expected {
        let rel = path.trim_start_matches("/src/");
        assert!(!restored.join(rel).exists(), "{rel} should be gone");
        // Drop it from the source too, keeping its directory's times, then compare the rest.
        let file = fx.src.join(rel);
        let parent = file.parent().unwrap().to_path_buf();
        let meta = fs::metadata(&parent).unwrap();
        fs::remove_file(&file).unwrap();
        filetime::set_file_times(
            &parent,
            filetime::FileTime::from_last_access_time(&meta),
            filetime::FileTime::from_last_modification_time(&meta),
        )
        .unwrap();
    }
    assert_same_tree(&fx.src, &restored);
}

#[test]
fn random_fault_schedules_never_leave_a_snapshot_with_missing_data() {
    let clean = Fixture::new(6, 2 << 20);
    clean.backup().unwrap();
    let clean_bytes = clean.data_bytes();
    let (mut completed, mut failed) = (0, 0);
    for seed in 0..16u64 {
        let fx = Fixture::new(6, 2 << 20);
        let crash = (seed % 2 == 0).then_some(20 + seed * 7);
        fx.store.set_plan(FaultPlan {
            random: Some(RandomFaults {
                seed,
                per_mille: 15,
            }),
            crash_after_calls: crash,
            ..FaultPlan::default()
        });
        let outcome = fx.backup();
        fx.store.set_plan(FaultPlan::default());
        let report = fx.check(true);
        assert!(report.is_healthy(), "seed {seed}: {report:?}");
        let snapshots = fx.repo.snapshots().unwrap();
        match outcome {
            Ok(snapshot) => {
                assert_eq!(snapshots.len(), 1, "seed {seed}");
                assert_same_tree(&fx.src, &fx.restore(&snapshot, "restored"));
                completed += 1;
            }
            Err(e) => {
                // A crash right after the snapshot write also fails the read-back that would
                // confirm it and the removal of the snapshot: the error then names it (and
                // check above found it whole).
                assert!(
                    snapshots.is_empty() || e.to_string().contains("cairn forget"),
                    "seed {seed}: {e}"
                );
                // The rerun stores again at most what was in flight at the crash.
                let snapshot = fx.backup().unwrap();
                let again = fx.data_bytes().saturating_sub(clean_bytes);
                assert!(
                    again * 10 < clean_bytes,
                    "seed {seed}: {again} of {clean_bytes} bytes stored twice ({e})"
                );
                assert!(fx.check(true).is_healthy());
                assert_same_tree(&fx.src, &fx.restore(&snapshot, "restored"));
                failed += 1;
            }
        }
    }
    // Both paths were taken: transient faults were ridden out, crashes stopped backups.
    assert!(
        completed >= 4 && failed >= 4,
        "{completed} completed, {failed} failed"
    );
}

#[test]
fn retries_are_set_at_init_and_kept_in_the_config() {
    let env = common::Env::with_repo(&["--retries", "3"]);
    assert_eq!(env.json(&["cat", "config"])["retries"], 3);
}

#[test]
fn the_command_line_reports_damage_with_file_paths_and_exit_code_1_and_repairs_it() {
    let (env, src) = common::backed_up_tree();
    let clean = env.ok(&["check", "--read-data"]);
    assert!(clean.contains("no errors"), "{clean}");
    let subset = env.json(&["check", "--read-data-subset", "1/2"]);
    assert!(subset["problems"].as_array().unwrap().is_empty());
    // Damage the largest pack (a data pack) in its first blob.
    let largest = env
        .repo_files("data")
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    flip(&largest, 100, 2);
    let out = env.run(&["check", "--read-data"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("is damaged") && text.contains(":/src/"),
        "{text}"
    );
    let out = env.run(&["--json", "check", "--read-data"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = report["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p["kind"] == "damaged_blob" && !p["uses"].as_array().unwrap().is_empty())
    );
    env.ok(&["repair", "packs", "--from", src.to_str().unwrap()]);
    env.ok(&["check", "--read-data"]);
    env.ok(&["repair", "index"]);
    env.ok(&["check"]);
}

/// A fixture with two snapshots, the first forgotten: a prune then repacks the packs both
/// shared and deletes the rest. Returns it with the kept snapshot.
fn forgotten_first() -> (Fixture, Snapshot) {
    let fx = Fixture::new(8, 300 << 10);
    fx.backup().unwrap();
    let first = fx.repo.snapshots().unwrap()[0].0;
    for i in [0u64, 3, 6] {
        let name = if i % 2 == 0 {
            format!("file{i}")
        } else {
            format!("sub/file{i}")
        };
        fs::write(fx.src.join(name), pseudo_random(100 + i, 200 << 10)).unwrap();
    }
    let kept = fx.backup().unwrap();
    fx.store.delete(&format!("snapshots/{first}")).unwrap();
    (fx, kept)
}

fn prune_options() -> cairn::ops::prune::PruneOptions {
    cairn::ops::prune::PruneOptions {
        limits: Default::default(),
        dry_run: false,
        now: true,
        lease: cairn::repo::writer::Lease::configured(),
    }
}

fn prune_now(repo: &Arc<Repository>) -> cairn::Result<cairn::ops::prune::PruneReport> {
    cairn::ops::prune::prune(repo, &prune_options(), &|_, _, _| {})
}

#[test]
fn a_prune_killed_at_any_step_leaves_a_healthy_repository_and_the_next_run_finishes_it() {
    let (reference, _) = forgotten_first();
    let start = reference.store.calls();
    let report = prune_now(&reference.repo).unwrap();
    assert!(
        report.deleted_packs > 0 && report.repacked_packs > 0,
        "{report:?}"
    );
    let steps = reference.store.calls() - start;
    assert!(steps > 30, "a prune of {steps} steps");
    let final_bytes = reference.data_bytes();
    // Every step for the first 40, then every fifth: each is a fresh repository.
    let points: Vec<u64> = (0..steps).filter(|k| *k < 40 || k % 5 == 0).collect();
    let mut killed_count = 0;
    for &k in &points {
        let (fx, kept) = forgotten_first();
        fx.store.set_plan(FaultPlan {
            crash_after_calls: Some(fx.store.calls() + k),
            ..FaultPlan::default()
        });
        let killed = prune_now(&fx.repo);
        fx.store.set_plan(FaultPlan::default());
        // The "kill" is simulated in this process, which lives on: the claim a killed prune
        // leaves on a garbage file lapses once its process is gone (tests/prune.rs shows it),
        // so it is removed here as that would make it ignored.
        for claim in fx.store.list("garbage/").unwrap() {
            if claim.name.contains(".claim.") {
                fx.store.delete(&claim.name).unwrap();
            }
        }
        // A fixture's pack layout, and so its prune's number of steps, varies a little with
        // the upload race: the last few points may fall after its end.
        killed_count += usize::from(killed.is_err());
        let between = fx.check(true);
        assert!(between.is_healthy(), "killed at step {k}: {between:?}");
        // A killed phase 1 may leave a garbage file whose sessions are recorded only on the
        // next run: two runs finish any prune.
        prune_now(&fx.repo).unwrap();
        prune_now(&fx.repo).unwrap();
        let after = fx.check(true);
        assert!(
            after.is_healthy(),
            "after a prune killed at step {k}: {after:?}"
        );
        assert!(fx.store.list("garbage/").unwrap().is_empty(), "step {k}");
        // Killed between a pack and its parity: the orphan parity is gone too.
        let ids = |prefix: &str| -> Vec<String> {
            let mut ids: Vec<String> = (fx.store.list(prefix).unwrap().into_iter())
                .map(|o| o.name.rsplit('/').next().unwrap().to_string())
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(ids("parity/"), ids("data/"), "step {k}");
        // Converged: nothing left to condemn or repack, and as small as an unbroken prune
        // leaves it (pack boundaries differ from run to run: the uploads race).
        let dry = cairn::ops::prune::prune(
            &fx.repo,
            &cairn::ops::prune::PruneOptions {
                dry_run: true,
                ..prune_options()
            },
            &|_, _, _| {},
        )
        .unwrap();
        assert_eq!(
            (dry.condemned_packs, dry.repacked_packs),
            (0, 0),
            "step {k}: {dry:?}"
        );
        let bytes = fx.data_bytes();
        assert!(
            bytes.abs_diff(final_bytes) * 50 < final_bytes,
            "step {k}: {bytes} bytes, an unbroken prune leaves {final_bytes}"
        );
        assert_same_tree(&fx.src, &fx.restore(&kept, "restored"));
    }
    assert!(
        killed_count + 5 >= points.len(),
        "only {killed_count} of {} prunes were killed",
        points.len()
    );
}
