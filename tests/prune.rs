//! Prune without locks (DESIGN §6). The duplicacy race step by step — two backups de-duplicate
//! against data only a forgotten snapshot used while a prune condemns and sweeps it — a writer
//! that starts after condemnation, a writer paused past its lease, a writer whose session a
//! prune removed, dead writers' sessions, idempotence after a kill, and the space a prune
//! gives back. Library steps where the order must be exact, the binary everywhere else.

mod common;

use cairn::backend::local::LocalBackend;
use cairn::backend::{Backend, ObjectInfo};
use cairn::ingest::IngestLimits;
use cairn::ingest::archiver::{BackupOptions, ParentChoice, PreparedBackup, prepare_backup};
use cairn::ingest::patterns::Patterns;
use cairn::ingest::progress::Progress;
use cairn::ops::prune::rules::PlanLimits;
use cairn::ops::prune::{PruneOptions, PruneReport, condemn, sweep};
use cairn::repo::Repository;
use cairn::repo::garbage::GarbageFile;
use cairn::repo::session::{self, SessionFile};
use cairn::repo::writer::{Lease, now_secs};
use common::{Env, assert_same_tree, pseudo_random};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const HOUR: Lease = Lease {
    secs: 3600,
    margin_secs: 3600,
};

fn quiet(_: &str, _: u64, _: u64) {}

fn open(env: &Env) -> Arc<Repository> {
    let backend = Arc::new(LocalBackend::new(env.repo()));
    Arc::new(Repository::open(backend, b"correct horse").expect("open"))
}

fn backup_options(src: &Path, lease: Lease) -> BackupOptions {
    BackupOptions {
        paths: vec![src.to_path_buf()],
        excludes: Patterns::none(),
        one_file_system: false,
        tags: vec![],
        hostname: "racer".into(),
        parent: ParentChoice::Nothing,
        dry_run: false,
        limits: IngestLimits::default(),
        lease,
    }
}

fn prepare(repo: &Arc<Repository>, src: &Path, lease: Lease) -> PreparedBackup {
    prepare_backup(
        repo.clone(),
        &backup_options(src, lease),
        &Progress::default(),
        None,
    )
    .expect("prepare backup")
}

fn prune_options(now: bool, lease: Lease) -> PruneOptions {
    PruneOptions {
        limits: PlanLimits::default(),
        dry_run: false,
        now,
        lease,
    }
}

fn phase1(repo: &Arc<Repository>) -> PruneReport {
    let mut report = PruneReport::default();
    condemn(repo, &prune_options(false, HOUR), &mut report, &quiet).expect("condemn");
    report
}

fn phase2(repo: &Arc<Repository>, lease: Lease) -> PruneReport {
    let mut report = PruneReport::default();
    sweep(repo, lease, &mut report, &quiet).expect("sweep");
    report
}

/// A repository whose snapshots of `old/` are forgotten and whose snapshot of `kept/` stays:
/// the blobs of `old/` are then used by no snapshot.
fn forgotten_old_tree() -> (Env, PathBuf, PathBuf) {
    let env = Env::with_repo(&[]);
    let old = env.path("old");
    fs::create_dir_all(old.join("sub")).unwrap();
    fs::write(old.join("unique.bin"), pseudo_random(1, 3 << 20)).unwrap();
    fs::write(old.join("sub/small"), b"only the old snapshot had this").unwrap();
    let kept = env.path("kept");
    fs::create_dir_all(&kept).unwrap();
    fs::write(kept.join("k.bin"), pseudo_random(2, 1 << 20)).unwrap();
    // Twice: the first backup's reads set the directories' access times, which trees record;
    // from the second on, a backup of the unchanged tree makes the same trees.
    env.ok(&["backup", old.to_str().unwrap()]);
    env.ok(&["backup", old.to_str().unwrap()]);
    env.ok(&["backup", kept.to_str().unwrap()]);
    let ids = env.snapshot_ids();
    env.ok(&["forget", &ids[0], &ids[1]]);
    (env, old, kept)
}

fn restores_as(env: &Env, id: &str, src: &Path) {
    let target = env.path(&format!("restored-{}", &id[..8]));
    env.restore(&id[..8], &target, &[]);
    assert_same_tree(src, &target.join(src.file_name().unwrap()));
}

#[test]
fn the_duplicacy_race_two_backups_reuse_condemned_data_and_both_restore() {
    let (env, old, kept) = forgotten_old_tree();
    let repo = open(&env);
    let packs_before = env.repo_files("data").len();

    // Two backups of the same host and path start and de-duplicate against everything the
    // forgotten snapshot stored: they store nothing new.
    let first = prepare(&repo, &old, HOUR);
    let second = prepare(&repo, &old, HOUR);
    assert_eq!(first.snapshot().summary.new_blobs, 0);
    assert_eq!(second.snapshot().summary.new_blobs, 0);

    // The prune condemns those blobs' packs (no snapshot uses them) and records both sessions.
    let condemned = phase1(&repo);
    assert!(condemned.condemned_packs >= 2, "{condemned:?}");
    assert_eq!(env.id_files("garbage").len(), 1);

    // The first backup commits.
    let first = first.commit().expect("first commit").id.unwrap();

    // Phase 2 waits for the second backup's session: nothing is deleted.
    let waiting = phase2(&repo, HOUR);
    assert_eq!(waiting.waiting.len(), 1, "{waiting:?}");
    assert!(waiting.waiting[0].contains("backup on"), "{waiting:?}");
    assert_eq!(waiting.deleted_packs, 0);
    assert_eq!(env.repo_files("data").len(), packs_before);

    // The second backup commits; phase 2 then runs and takes back every condemned pack the
    // two snapshots use (the data, and the trees of the second forgotten snapshot); only the
    // first forgotten snapshot's trees, which neither backup made again, go.
    let second = second.commit().expect("second commit").id.unwrap();
    let swept = phase2(&repo, HOUR);
    assert_eq!(swept.garbage_done, 1, "{swept:?}");
    assert_eq!(swept.revived_packs, 2, "{swept:?}");
    assert_eq!(
        swept.deleted_packs + swept.revived_packs,
        condemned.condemned_packs,
        "{swept:?}"
    );
    assert!(env.id_files("garbage").is_empty());
    assert_eq!(
        env.repo_files("data").len(),
        packs_before - swept.deleted_packs as usize
    );

    env.ok(&["check", "--read-data"]);
    restores_as(&env, &first.to_hex(), &old);
    restores_as(&env, &second.to_hex(), &old);
    let kept_id = env.snapshot_ids()[0].clone();
    restores_as(&env, &kept_id, &kept);

    // Once both are forgotten too, a prune frees the data for real.
    env.ok(&["forget", &first.to_hex(), &second.to_hex()]);
    let out = env.json(&["prune", "--now"]);
    assert_eq!(out["report"]["deleted_packs"], swept.revived_packs, "{out}");
    env.ok(&["check", "--read-data"]);
    restores_as(&env, &kept_id, &kept);
}

#[test]
fn a_backup_that_starts_after_condemnation_stores_the_data_again() {
    let (env, old, _kept) = forgotten_old_tree();
    let repo = open(&env);
    let condemned = phase1(&repo);
    assert!(condemned.condemned_packs >= 2);

    let late = prepare(&repo, &old, HOUR);
    assert!(
        late.snapshot().summary.new_blobs >= 4,
        "condemned blobs were de-duplicated against: {:?}",
        late.snapshot().summary
    );
    // No session was open at condemnation: the sweep goes ahead while the late backup runs.
    let swept = phase2(&repo, HOUR);
    assert_eq!(swept.deleted_packs, condemned.condemned_packs, "{swept:?}");
    let id = late.commit().expect("commit").id.unwrap();
    env.ok(&["check", "--read-data"]);
    restores_as(&env, &id.to_hex(), &old);
}

#[test]
fn a_backup_paused_past_its_lease_refuses_to_commit_after_prune_gave_up_on_it() {
    let (env, old, _kept) = forgotten_old_tree();
    let repo = open(&env);
    let short = Lease::of_secs(1);
    let mut paused = prepare(&repo, &old, short);
    paused.session_mut().unwrap().stop_refreshing();
    phase1(&repo);
    // Lease (1 s) and margin (1 s) pass, counted in whole seconds.
    std::thread::sleep(std::time::Duration::from_millis(3200));
    let swept = phase2(&repo, short);
    assert_eq!(swept.sessions_removed, 1, "{swept:?}");
    assert!(swept.deleted_packs >= 2, "{swept:?}");
    let err = paused
        .commit()
        .err()
        .expect("a lapsed lease refuses the commit");
    assert!(err.to_string().contains("lease ran out"), "{err}");
    assert_eq!(env.snapshot_ids().len(), 1);
    env.ok(&["check", "--read-data"]);
}

#[test]
fn a_writer_whose_session_a_prune_removed_deletes_its_snapshot_and_fails() {
    let (env, old, _kept) = forgotten_old_tree();
    let repo = open(&env);
    let mut writer = prepare(&repo, &old, HOUR);
    phase1(&repo);
    // A prune that (wrongly, e.g. with a clock far ahead) counted the session as lapsed
    // removed it and deleted the condemned packs.
    let id = writer.session_mut().unwrap().id();
    session::remove(&repo, &id).unwrap();
    let swept = phase2(&repo, HOUR);
    assert!(swept.deleted_packs >= 2, "{swept:?}");
    let err = writer.commit().err().expect("the read-back catches it");
    assert!(err.to_string().contains("not committed"), "{err}");
    assert!(err.to_string().contains("it was removed"), "{err}");
    assert_eq!(env.snapshot_ids().len(), 1);
    env.ok(&["check", "--read-data"]);
}

#[test]
fn sessions_of_dead_writers_are_removed_and_live_ones_are_waited_for() {
    let (env, _old, _kept) = forgotten_old_tree();
    let repo = open(&env);
    let now = now_secs();
    // A writer of this host whose process is gone.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    let dead = SessionFile {
        pid: dead_pid,
        ..SessionFile::for_this_process("backup", now, 3600)
    };
    // A writer elsewhere, within its lease; and one elsewhere whose lease ran out long ago.
    let elsewhere = SessionFile {
        host: "another-host".into(),
        ..SessionFile::for_this_process("stage", now, 3600)
    };
    let stale = SessionFile {
        host: "another-host".into(),
        expires: now - 3 * 3600,
        ..SessionFile::for_this_process("backup", now - 4 * 3600, 3600)
    };
    for (n, file) in [(1u8, &dead), (2, &elsewhere), (3, &stale)] {
        let id = cairn::repo::ids::SessionId([n; 32]);
        session::write(&repo, &id, file).unwrap();
    }
    let out = env.json(&["prune", "--now"]);
    let report = &out["report"];
    assert_eq!(report["sessions_removed"], 2, "{out}");
    assert_eq!(report["deleted_packs"], 0, "{out}");
    let waiting = report["waiting"].as_array().unwrap();
    assert_eq!(waiting.len(), 1, "{out}");
    assert!(
        waiting[0]
            .as_str()
            .unwrap()
            .contains("stage on another-host"),
        "{out}"
    );
    assert_eq!(env.id_files("sessions").len(), 1);

    // The writer elsewhere finishes: the next prune deletes what was condemned.
    session::remove(&repo, &cairn::repo::ids::SessionId([2; 32])).unwrap();
    let out = env.json(&["prune"]);
    assert!(
        out["report"]["deleted_packs"].as_u64().unwrap() >= 2,
        "{out}"
    );
    assert!(env.id_files("garbage").is_empty());
    env.ok(&["check", "--read-data"]);
}

#[test]
fn prune_condemns_first_and_deletes_on_the_next_run_and_a_dry_run_changes_nothing() {
    let (env, _old, kept) = forgotten_old_tree();
    let files = |env: &Env| ["data", "index", "garbage"].map(|d| env.repo_files(d));
    let before = files(&env);
    let dry = env.ok(&["prune", "--dry-run"]);
    assert!(dry.contains("would be condemned"), "{dry}");
    assert_eq!(files(&env), before);
    let stats = env.json(&["stats"]);
    assert!(
        stats["usage"]["prune_would_free"].as_u64().unwrap() > 3 << 20,
        "{stats}"
    );

    let first = env.json(&["prune"]);
    assert!(
        first["report"]["condemned_packs"].as_u64().unwrap() >= 2,
        "{first}"
    );
    assert_eq!(first["report"]["deleted_packs"], 0, "{first}");
    assert_eq!(env.repo_files("data"), before[0]);
    assert_eq!(env.id_files("garbage").len(), 1);
    env.ok(&["check", "--read-data"]);
    let stats = env.json(&["stats"]);
    assert!(
        stats["usage"]["condemned_bytes"].as_u64().unwrap() > 3 << 20,
        "{stats}"
    );

    let second = env.json(&["prune"]);
    assert_eq!(
        second["report"]["deleted_packs"], first["report"]["condemned_packs"],
        "{second}"
    );
    assert_eq!(second["report"]["condemned_packs"], 0, "{second}");
    assert!(env.id_files("garbage").is_empty());
    env.ok(&["check", "--read-data"]);
    // Idempotent: nothing left to do.
    let third = env.json(&["prune", "--now"]);
    assert_eq!(third["report"]["deleted_packs"], 0, "{third}");
    assert_eq!(third["report"]["condemned_packs"], 0, "{third}");
    let id = env.snapshot_ids()[0].clone();
    restores_as(&env, &id, &kept);
}

#[test]
fn after_forgetting_all_but_the_newest_of_20_snapshots_the_repository_is_as_small_as_a_fresh_one() {
    let env = Env::with_repo(&["--pack-size", "1MiB"]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..40u64 {
        fs::write(src.join(format!("f{i}")), pseudo_random(i, 48 << 10)).unwrap();
    }
    for round in 0..20u64 {
        for j in 0..6u64 {
            let which = (round * 7 + j * 5) % 40;
            fs::write(
                src.join(format!("f{which}")),
                pseudo_random(1000 + round * 10 + j, 48 << 10),
            )
            .unwrap();
        }
        env.ok(&["backup", src.to_str().unwrap()]);
    }
    assert_eq!(env.snapshot_ids().len(), 20);
    let out = env.ok(&["forget", "--keep-last", "1", "--prune"]);
    assert!(out.contains("removed 19 snapshots"), "{out}");
    assert!(out.contains("packs deleted"), "{out}");
    env.ok(&["check", "--read-data"]);
    let id = env.snapshot_ids()[0].clone();
    restores_as(&env, &id, &src);

    let fresh = Env::with_repo(&["--pack-size", "1MiB"]);
    fresh.ok(&["backup", src.to_str().unwrap()]);
    let size = |env: &Env| -> u64 {
        ["data", "index", "snapshots"]
            .iter()
            .flat_map(|d| env.repo_files(d))
            .map(|f| fs::metadata(f).unwrap().len())
            .sum()
    };
    let (pruned, fresh_size) = (size(&env), size(&fresh));
    assert!(
        pruned as f64 <= fresh_size as f64 * 1.10,
        "pruned repository {pruned} bytes, fresh {fresh_size}"
    );
}

#[test]
fn a_killed_backup_leaves_nothing_a_prune_cannot_finish() {
    let env = Env::with_repo(&["--pack-size", "1MiB"]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..24u64 {
        fs::write(src.join(format!("f{i}")), pseudo_random(i, 1 << 20)).unwrap();
    }
    let kept = env.path("kept");
    fs::create_dir_all(&kept).unwrap();
    fs::write(kept.join("k"), b"kept").unwrap();
    env.ok(&["backup", kept.to_str().unwrap()]);
    let mut child = env
        .command(&["backup", src.to_str().unwrap()])
        .spawn()
        .unwrap();
    // Killed once it has stored a few packs (the kept snapshot has two).
    let packs = |env: &Env| env.id_files("data").len();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while packs(&env) < 5 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        env.snapshot_ids().len(),
        1,
        "the killed backup committed nothing"
    );
    assert_eq!(
        env.id_files("sessions").len(),
        1,
        "its session file stays behind"
    );
    // Its process is gone: the session lapses at once, and its packs are freed.
    let out = env.json(&["prune", "--now"]);
    assert_eq!(out["report"]["sessions_removed"], 1, "{out}");
    assert!(
        out["report"]["deleted_packs"].as_u64().unwrap() >= 2,
        "{out}"
    );
    assert!(env.id_files("sessions").is_empty());
    // What is left is the marker that the session was given up on.
    assert_eq!(env.repo_files("sessions").len(), 1);
    env.ok(&["check", "--read-data"]);
    let id = env.snapshot_ids()[0].clone();
    restores_as(&env, &id, &kept);
}

#[test]
fn an_index_entry_of_a_gone_pack_no_snapshot_uses_is_a_note_and_the_next_prune_drops_it() {
    let (env, _old, _kept) = forgotten_old_tree();
    // As two prunes rewriting one index file at once leave it: the forgotten data's pack is
    // gone, an index file still names it.
    let biggest = env
        .repo_files("data")
        .into_iter()
        .max_by_key(|f| fs::metadata(f).unwrap().len())
        .unwrap();
    fs::remove_file(&biggest).unwrap();
    let report = env.json(&["check"]);
    assert_eq!(report["problems"].as_array().unwrap().len(), 0, "{report}");
    assert_eq!(
        report["gone_unused_packs"].as_array().unwrap().len(),
        1,
        "{report}"
    );
    let out = env.json(&["prune"]);
    assert!(
        out["report"]["index_files_rewritten"].as_u64().unwrap() >= 1,
        "{out}"
    );
    let report = env.json(&["check"]);
    assert!(
        report["gone_unused_packs"].as_array().unwrap().is_empty(),
        "{report}"
    );
}

#[test]
fn a_garbage_file_another_prune_is_deleting_is_left_to_it_and_a_dead_prunes_claim_holds_nothing() {
    use cairn::repo::garbage;
    let (env, _old, _kept) = forgotten_old_tree();
    let repo = open(&env);
    phase1(&repo);
    let gid = garbage::list(&repo).unwrap()[0].0;
    // A prune on another machine is sweeping it.
    let elsewhere = SessionFile {
        host: "another-host".into(),
        ..SessionFile::for_this_process("prune", now_secs(), garbage::CLAIM_SECS)
    };
    let theirs = garbage::claim(&repo, &gid, &elsewhere)
        .unwrap()
        .expect("claimed");
    let out = env.json(&["prune"]);
    assert_eq!(out["report"]["deleted_packs"], 0, "{out}");
    let waiting = out["report"]["waiting"].as_array().unwrap();
    assert!(
        waiting[0].as_str().unwrap().contains("another prune"),
        "{out}"
    );
    garbage::release(&repo, theirs).unwrap();

    // A prune of this host that was killed: its process is gone, its claim holds nothing.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    let dead = SessionFile {
        pid: dead_pid,
        ..SessionFile::for_this_process("prune", now_secs(), garbage::CLAIM_SECS)
    };
    garbage::claim(&repo, &gid, &dead)
        .unwrap()
        .expect("claimed");
    let out = env.json(&["prune"]);
    assert!(
        out["report"]["deleted_packs"].as_u64().unwrap() >= 2,
        "{out}"
    );
    assert!(
        env.repo_files("garbage").is_empty(),
        "claims, recorded sessions and garbage file are gone"
    );
    env.ok(&["check", "--read-data"]);
}

#[test]
fn a_second_prune_while_one_runs_stops_with_an_error_and_changes_nothing() {
    use cairn::repo::garbage;
    let (env, _old, _kept) = forgotten_old_tree();
    let repo = open(&env);
    // A prune of another machine is running.
    let elsewhere = SessionFile {
        host: "another-host".into(),
        ..SessionFile::for_this_process("prune", now_secs(), garbage::CLAIM_SECS)
    };
    let theirs = garbage::claim_pruning(&repo, &elsewhere).unwrap();
    let before = env.repo_files("data");
    let out = env.run(&["prune", "--now"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another prune is running"), "{err}");
    assert_eq!(env.repo_files("data"), before);
    assert!(env.id_files("garbage").is_empty());
    // A dry run reads only: it goes ahead.
    env.ok(&["prune", "--dry-run"]);
    garbage::release(&repo, theirs).unwrap();
    let out = env.json(&["prune", "--now"]);
    assert!(
        out["report"]["deleted_packs"].as_u64().unwrap() >= 2,
        "{out}"
    );
}

/// A store whose listings lag: names under the hidden prefixes are left out of every listing
/// (each can still be read by name), as a store without list-after-write consistency shows a
/// file written a moment ago.
struct Lagging {
    inner: Arc<dyn Backend>,
    hidden: Mutex<Vec<String>>,
}

impl Lagging {
    fn over(env: &Env) -> Arc<Lagging> {
        Arc::new(Lagging {
            inner: Arc::new(LocalBackend::new(env.repo())),
            hidden: Mutex::new(Vec::new()),
        })
    }

    fn hide(&self, prefix: &str) {
        self.hidden.lock().unwrap().push(prefix.to_string());
    }

    fn show_all(&self) {
        self.hidden.lock().unwrap().clear();
    }
}

impl Backend for Lagging {
    fn get(&self, name: &str, range: Option<std::ops::Range<u64>>) -> cairn::Result<Vec<u8>> {
        self.inner.get(name, range)
    }
    fn put(&self, name: &str, data: &[u8]) -> cairn::Result<()> {
        self.inner.put(name, data)
    }
    fn put_if_absent(&self, name: &str, data: &[u8]) -> cairn::Result<bool> {
        self.inner.put_if_absent(name, data)
    }
    fn list(&self, prefix: &str) -> cairn::Result<Vec<ObjectInfo>> {
        let hidden = self.hidden.lock().unwrap().clone();
        Ok(self
            .inner
            .list(prefix)?
            .into_iter()
            .filter(|o| !hidden.iter().any(|h| o.name.starts_with(h.as_str())))
            .collect())
    }
    fn delete(&self, name: &str) -> cairn::Result<()> {
        self.inner.delete(name)
    }
    fn stat(&self, name: &str) -> cairn::Result<u64> {
        self.inner.stat(name)
    }
    fn location(&self) -> String {
        self.inner.location()
    }
}

fn open_through(store: &Arc<Lagging>) -> Arc<Repository> {
    Arc::new(Repository::open(store.clone(), b"correct horse").expect("open"))
}

/// Issue 22, 2(a): a prune whose session listing missed a running backup deletes the packs
/// that backup de-duplicated against; the backup's commit then finds them gone and fails,
/// removing its snapshot, instead of reporting it saved.
#[test]
fn a_lagging_session_listing_cannot_make_a_backup_report_deleted_data_saved() {
    let (env, old, kept) = forgotten_old_tree();
    let store = Lagging::over(&env);
    let repo = open_through(&store);
    let writer = prepare(&repo, &old, HOUR);
    assert_eq!(writer.snapshot().summary.new_blobs, 0);
    store.hide("sessions/");
    let mut report = PruneReport::default();
    cairn::ops::prune::prune(&repo, &prune_options(true, HOUR), &quiet)
        .map(|r| report = r)
        .expect("prune --now");
    assert!(report.deleted_packs >= 2, "{report:?}");
    let err = writer
        .commit()
        .err()
        .expect("the commit finds its data gone");
    assert!(err.to_string().contains("not committed"), "{err}");
    assert!(err.to_string().contains("it was removed"), "{err}");
    store.show_all();
    assert_eq!(env.snapshot_ids().len(), 1);
    env.ok(&["check", "--read-data"]);
    restores_as(&env, &env.snapshot_ids()[0].clone(), &kept);
}

/// Issue 22, 2(b): right after a backup, a snapshot listing that lags names no snapshot while
/// the index names packs: prune stops instead of deleting every pack.
#[test]
fn a_snapshot_listing_that_names_nothing_stops_prune() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.bin"), pseudo_random(3, 1 << 20)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let packs = env.repo_files("data").len();
    let store = Lagging::over(&env);
    store.hide("snapshots/");
    let repo = open_through(&store);
    let err = cairn::ops::prune::prune(&repo, &prune_options(true, HOUR), &quiet)
        .expect_err("prune refuses");
    assert!(err.to_string().contains("lists no snapshot"), "{err}");
    assert!(env.id_files("garbage").is_empty());
    assert_eq!(env.repo_files("data").len(), packs);
    env.ok(&["check", "--read-data"]);
}

/// Issue 22, 2(c): a key holder's garbage file condemns the packs a paused backup re-uses and
/// records no session. An honest `prune --now` does not trust that record alone: it waits for
/// the backup's session (which does not name the file as seen), deleting nothing it re-uses;
/// the backup, which cannot know the prune will wait, refuses to commit rather than risk it.
#[test]
fn a_garbage_file_recording_no_session_cannot_delete_what_a_paused_backup_reuses() {
    let (env, old, kept) = forgotten_old_tree();
    let repo = open(&env);
    let writer = prepare(&repo, &old, HOUR);
    assert_eq!(writer.snapshot().summary.new_blobs, 0);
    let packs: Vec<cairn::repo::ids::PackId> = env
        .id_files("data")
        .iter()
        .map(|p| {
            cairn::repo::ids::PackId::from_hex(p.file_name().unwrap().to_str().unwrap()).unwrap()
        })
        .collect();
    let crafted = cairn::repo::garbage::new_garbage_id();
    let lie = GarbageFile {
        created: 0,
        packs: packs.clone(),
        bytes: 0,
        sessions: None,
        orphan_parity: Vec::new(),
    };
    cairn::repo::garbage::write(&repo, &crafted, &lie).unwrap();
    cairn::repo::garbage::record_sessions(&repo, &crafted, &[]).unwrap();
    let report = cairn::ops::prune::prune(&repo, &prune_options(true, HOUR), &quiet).unwrap();
    assert_eq!(report.deleted_packs, 0, "{report:?}");
    assert!(
        report.waiting.iter().any(|w| w.contains("backup on")),
        "{report:?}"
    );
    assert_eq!(env.id_files("data").len(), packs.len());
    let err = writer
        .commit()
        .err()
        .expect("the commit does not count on the lie");
    assert!(err.to_string().contains("not committed"), "{err}");
    // With the backup gone, the lie is swept like any garbage file: what a snapshot uses stays.
    env.ok(&["prune", "--now"]);
    env.ok(&["check", "--read-data"]);
    restores_as(&env, &env.snapshot_ids()[0].clone(), &kept);
}

/// Issue 22, item 3: a `data/` listing that omits a live pack during a sweep, or while the
/// index is rebuilt, leaves its index entries in place (the pack is asked for by name first).
#[test]
fn a_data_listing_that_omits_a_live_pack_does_not_strip_the_index() {
    let (env, _old, kept) = forgotten_old_tree();
    let store = Lagging::over(&env);
    let repo = open_through(&store);
    phase1(&repo);
    let condemned: Vec<String> = cairn::repo::garbage::list(&repo)
        .unwrap()
        .iter()
        .flat_map(|(_, g)| g.packs.iter().map(|p| p.to_hex()))
        .collect();
    let live = env
        .id_files("data")
        .into_iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .find(|name| !condemned.contains(name))
        .expect("a live pack");
    store.hide(&format!("data/{}/{live}", &live[..2]));
    let swept = phase2(&repo, HOUR);
    assert!(swept.deleted_packs >= 2, "{swept:?}");
    // Nor does an index rebuilt from the store while the listing still omits it.
    cairn::ops::repair::repair_index(&repo).expect("repair index");
    store.show_all();
    let report = env.json(&["check", "--read-data"]);
    assert_eq!(report["problems"].as_array().unwrap().len(), 0, "{report}");
    restores_as(&env, &env.snapshot_ids()[0].clone(), &kept);
}

/// Issue 22, item 7: a stray file in `garbage/` (no key needed to put one there) is skipped
/// with a warning; a session claiming an endless lease from another host counts as claiming
/// the longest lease there is, and prune prints when that ends.
#[test]
fn a_stray_garbage_file_and_an_endless_session_do_not_stop_the_repository() {
    let (env, old, _kept) = forgotten_old_tree();
    fs::create_dir_all(env.repo().join("garbage")).unwrap();
    fs::write(env.repo().join("garbage/README"), b"not a garbage file").unwrap();
    let out = env
        .command(&["backup", old.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("garbage/README: not a garbage file name"),
        "{out:?}"
    );
    let repo = open(&env);
    let now = now_secs();
    let endless = SessionFile {
        host: "elsewhere".into(),
        lease_secs: i64::MAX,
        expires: i64::MAX,
        ..SessionFile::for_this_process("backup", now, 3600)
    };
    session::write(&repo, &session::new_session_id(), &endless).unwrap();
    env.ok(&["forget", &env.snapshot_ids().last().unwrap().clone()]);
    env.ok(&["prune"]);
    let out = env.json(&["prune"]);
    let waiting = out["report"]["waiting"][0].as_str().unwrap().to_string();
    assert!(waiting.contains("backup on elsewhere"), "{out}");
    let ends = chrono::DateTime::from_timestamp(now + 86_400, 0)
        .unwrap()
        .with_timezone(&chrono::Local)
        .format("%Y-%m-%d %H:%M")
        .to_string();
    assert!(
        waiting.contains(&ends),
        "expected the lease to end at {ends}: {waiting}"
    );
}
