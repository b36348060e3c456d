//! Prune under load, bounded in time: three writers back up changing trees (some of their
//! content shared, so they de-duplicate against each other and against condemned data), one
//! loop forgets and prunes at once, another prunes in two phases, a mount reads files of
//! snapshots as they come and go, and backups and prunes are killed at random. Afterwards
//! `check --read-data` passes, every snapshot restores exactly, and no read of a snapshot that
//! still exists ever failed.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::{Env, pseudo_random};
use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::Mounted;

const WRITERS: u64 = 3;
const FILES: u64 = 8;

/// The content of file `file` at `version`: the first half of the files is the same for every
/// writer, so writers share blobs.
fn content(writer: u64, file: u64, version: u64) -> Vec<u8> {
    let owner = if file < FILES / 2 { 99 } else { writer };
    let size = (24 << 10) + file as usize * (37 << 10);
    pseudo_random(owner * 1_000_000 + file * 1_000 + version, size)
}

/// Writes the tree of `writer` at `versions`, with a MANIFEST naming them.
fn write_tree(dir: &Path, writer: u64, versions: &[u64]) {
    let mut manifest = String::new();
    for (file, version) in versions.iter().enumerate() {
        let file = file as u64;
        fs::write(
            dir.join(format!("f{file}")),
            content(writer, file, *version),
        )
        .unwrap();
        manifest.push_str(&format!("{file} {version}\n"));
    }
    fs::write(dir.join("MANIFEST"), manifest).unwrap();
}

/// Checks a copy of a writer's tree against its MANIFEST: every file exact, nothing else.
fn verify_tree(dir: &Path, writer: u64) -> Result<(), String> {
    let manifest =
        fs::read_to_string(dir.join("MANIFEST")).map_err(|e| format!("MANIFEST: {e}"))?;
    let mut expected: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for line in manifest.lines() {
        let (file, version) = line.split_once(' ').ok_or("bad manifest")?;
        let (file, version): (u64, u64) = (file.parse().unwrap(), version.parse().unwrap());
        expected.insert(format!("f{file}"), content(writer, file, version));
    }
    for (name, bytes) in &expected {
        let got = fs::read(dir.join(name)).map_err(|e| format!("{name}: {e}"))?;
        if &got != bytes {
            return Err(format!("{name}: wrong bytes"));
        }
    }
    let names: HashSet<String> = fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    if names.len() != expected.len() + 1 {
        return Err(format!("unexpected entries: {names:?}"));
    }
    Ok(())
}

/// A small random number generator, seeded so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Runs `cmd` to the end, or kills it after a random moment when `kill` says so. Returns
/// whether it ran to the end with success, and its stdout.
fn run(mut cmd: std::process::Command, rng: &mut Rng, kill: bool) -> (bool, String) {
    let mut child: Child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    if kill {
        std::thread::sleep(Duration::from_millis(rng.below(400)));
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn writers_pruners_and_a_mount_with_random_kills_lose_nothing() {
    let env = Arc::new(Env::with_repo(&["--pack-size", "1MiB"]));
    let seconds: u64 = std::env::var("CAIRN_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(45);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("stress seed {seed}, {seconds} s");
    for w in 0..WRITERS {
        let dir = env.path(&format!("w{w}"));
        fs::create_dir_all(&dir).unwrap();
        write_tree(&dir, w, &[0; FILES as usize]);
        env.ok(&["backup", dir.to_str().unwrap(), "--host", &format!("w{w}")]);
    }
    let mnt = Mounted::start(&env, "mount", &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let deleted_packs = Arc::new(AtomicU64::new(0));
    let failed_reads: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let reads = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();

    for w in 0..WRITERS {
        let (env, stop) = (env.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut rng = Rng(seed ^ ((w + 1) * 0x9E37_79B9));
            let dir = env.path(&format!("w{w}"));
            let mut versions = vec![0u64; FILES as usize];
            while !stop.load(Ordering::SeqCst) {
                for _ in 0..2 {
                    versions[rng.below(FILES) as usize] += 1;
                }
                write_tree(&dir, w, &versions);
                let cmd =
                    env.command(&["backup", dir.to_str().unwrap(), "--host", &format!("w{w}")]);
                let kill = rng.below(4) == 0;
                run(cmd, &mut rng, kill);
            }
        }));
    }
    {
        let (env, stop) = (env.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut rng = Rng(seed ^ 0xF0F0);
            while !stop.load(Ordering::SeqCst) {
                let cmd = env.command(&["forget", "--keep-last", "2", "--prune"]);
                let kill = rng.below(5) == 0;
                run(cmd, &mut rng, kill);
                std::thread::sleep(Duration::from_millis(rng.below(300)));
            }
        }));
    }
    {
        let (env, stop, deleted) = (env.clone(), stop.clone(), deleted_packs.clone());
        threads.push(std::thread::spawn(move || {
            let mut rng = Rng(seed ^ 0x0F0F);
            while !stop.load(Ordering::SeqCst) {
                let cmd = env.command(&["--json", "prune"]);
                let kill = rng.below(5) == 0;
                let (ok, out) = run(cmd, &mut rng, kill);
                if ok && let Ok(v) = serde_json::from_str::<serde_json::Value>(&out) {
                    deleted.fetch_add(
                        v["report"]["deleted_packs"].as_u64().unwrap_or(0),
                        Ordering::SeqCst,
                    );
                }
                std::thread::sleep(Duration::from_millis(rng.below(500)));
            }
        }));
    }
    {
        let (stop, failed, reads) = (stop.clone(), failed_reads.clone(), reads.clone());
        let ids = mnt.dir.join("ids");
        threads.push(std::thread::spawn(move || {
            let mut rng = Rng(seed ^ 0xABCD);
            while !stop.load(Ordering::SeqCst) {
                let Ok(listing) = fs::read_dir(&ids) else {
                    continue;
                };
                let names: Vec<String> = listing
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect();
                if names.is_empty() {
                    continue;
                }
                let short = &names[rng.below(names.len() as u64) as usize];
                let root = ids.join(short);
                let Ok(top) = fs::read_dir(&root) else {
                    continue;
                };
                for entry in top.flatten() {
                    let name = entry.file_name().into_string().unwrap();
                    let writer: u64 = name.trim_start_matches('w').parse().unwrap();
                    reads.fetch_add(1, Ordering::SeqCst);
                    if let Err(e) = verify_tree(&root.join(&name), writer) {
                        failed.lock().unwrap().push((short.clone(), e));
                    }
                }
            }
        }));
    }
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    mnt.stop();

    let check = env.run(&["check", "--read-data"]);
    assert!(
        check.status.success(),
        "seed {seed}: check failed: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let snapshots = env.json(&["snapshots"]);
    let mut existing = HashSet::new();
    for (i, s) in snapshots.as_array().unwrap().iter().enumerate() {
        let id = s["id"].as_str().unwrap();
        existing.insert(id[..8].to_string());
        let target = env.path(&format!("restored-{i}"));
        env.restore(&id[..8], &target, &[]);
        for entry in fs::read_dir(&target).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let writer: u64 = name.trim_start_matches('w').parse().unwrap();
            verify_tree(&target.join(&name), writer)
                .unwrap_or_else(|e| panic!("seed {seed}: snapshot {id} restores wrong: {e}"));
        }
    }
    let failed = failed_reads.lock().unwrap();
    let of_existing: Vec<&(String, String)> = failed
        .iter()
        .filter(|(short, _)| existing.contains(short))
        .collect();
    assert!(
        of_existing.is_empty(),
        "seed {seed}: reads of snapshots that still exist failed: {of_existing:?}\n{}",
        fs::read_to_string(env.path("mount.log")).unwrap_or_default()
    );
    let reads = reads.load(Ordering::SeqCst);
    let deleted = deleted_packs.load(Ordering::SeqCst);
    eprintln!(
        "{reads} tree reads through the mount ({} failed, of forgotten snapshots), {deleted} packs \
         deleted by the two-phase loop, {} snapshots left",
        failed.len(),
        existing.len()
    );
    assert!(
        reads > 20,
        "seed {seed}: only {reads} reads through the mount"
    );
    assert!(
        deleted > 0,
        "seed {seed}: the prune loop never deleted a pack"
    );
}
