//! The read-only view, mounted for real: copies out of it equal the source, random and
//! concurrent reads are exact, no cache size limits what can be read, damage fails only the
//! reads that touch it, new snapshots appear, and unmounting leaves nothing behind.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::{Env, assert_same_tree, backed_up_tree, pseudo_random};
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::time::{Duration, Instant};
use support::{Mounted, is_mounted, peak_rss_kib, wait_for};

#[test]
fn cp_a_of_a_snapshot_equals_the_source_in_bytes_and_metadata() {
    let (env, src) = backed_up_tree();
    let mnt = Mounted::start(&env, "mount", &[]);
    let out = env.path("copied");
    fs::create_dir_all(&out).unwrap();
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(mnt.dir.join("latest/src"))
        .arg(&out)
        .output()
        .unwrap();
    let cp_err = String::from_utf8_lossy(&cp.stderr);
    // cp cannot re-create a socket's listener; everything else must copy cleanly.
    assert!(
        cp.status.success() || cp_err.lines().all(|l| l.contains("socket")),
        "{cp_err}"
    );
    assert_same_tree(&src, &out.join("src"));
    // The same snapshot by id, by host, and the hard links share an inode in the mount.
    let snaps = env.json(&["snapshots"]);
    let short = snaps[0]["short_id"].as_str().unwrap();
    assert_eq!(
        fs::read(mnt.dir.join("ids").join(short).join("src/small.txt")).unwrap(),
        b"hello, world\n"
    );
    let host = snaps[0]["hostname"].as_str().unwrap();
    assert_eq!(
        fs::read_dir(mnt.dir.join("hosts").join(host))
            .unwrap()
            .count(),
        1
    );
    let a = fs::metadata(mnt.dir.join("latest/src/small.txt")).unwrap();
    let b = fs::metadata(mnt.dir.join("latest/src/dir/hardlink")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.nlink(), 2);
    mnt.stop();
}

#[test]
fn a_thousand_random_preads_equal_the_source() {
    let (env, src) = backed_up_tree();
    let mnt = Mounted::start(&env, "mount", &[]);
    let files = ["dir/big.bin", "dir/deeper/text.txt", "sparse", "small.txt"];
    let handles: Vec<(fs::File, Vec<u8>)> = files
        .iter()
        .map(|f| {
            (
                fs::File::open(mnt.dir.join("latest/src").join(f)).unwrap(),
                fs::read(src.join(f)).unwrap(),
            )
        })
        .collect();
    let noise = pseudo_random(99, 1000 * 24);
    for i in 0..1000 {
        let word = |k: usize| {
            u64::from_le_bytes(
                noise[i * 24 + k * 8..i * 24 + k * 8 + 8]
                    .try_into()
                    .unwrap(),
            )
        };
        let (file, expected) = &handles[(word(0) % handles.len() as u64) as usize];
        let offset = word(1) % (expected.len() as u64 + 10);
        let len = (word(2) % (300 << 10)) as usize;
        let mut buf = vec![0u8; len];
        let mut got = 0;
        while got < len {
            let n = file.read_at(&mut buf[got..], offset + got as u64).unwrap();
            if n == 0 {
                break;
            }
            got += n;
        }
        let start = (offset as usize).min(expected.len());
        let end = (offset as usize + len).min(expected.len());
        assert_eq!(
            &buf[..got],
            &expected[start..end],
            "read {i}: offset {offset}, length {len}"
        );
    }
    mnt.stop();
}

#[test]
fn eight_threads_reading_same_and_different_files() {
    let (env, src) = backed_up_tree();
    let mnt = Mounted::start(&env, "mount", &[]);
    let names = [
        "dir/big.bin",
        "dir/deeper/text.txt",
        "dir/big.bin",
        "sparse",
    ];
    std::thread::scope(|scope| {
        for t in 0..8 {
            let (mnt_dir, src) = (&mnt.dir, &src);
            scope.spawn(move || {
                let name = names[t % names.len()];
                for _ in 0..3 {
                    assert_eq!(
                        fs::read(mnt_dir.join("latest/src").join(name)).unwrap(),
                        fs::read(src.join(name)).unwrap()
                    );
                }
            });
        }
    });
    mnt.stop();
}

#[test]
fn repository_with_64mib_packs_reads_through_an_8mib_cache() {
    let env = Env::with_repo(&["--pack-size", "64MiB"]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), pseudo_random(3, 80 << 20)).unwrap();
    fs::write(src.join("b"), pseudo_random(4, 2 << 20)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let mnt = Mounted::start(&env, "mount", &["--cache-size", "8MiB"]);
    for name in ["a", "b"] {
        assert!(
            fs::read(mnt.dir.join("latest/src").join(name)).unwrap()
                == fs::read(src.join(name)).unwrap(),
            "{name}"
        );
    }
    let rss_kb = peak_rss_kib(mnt.pid());
    assert!(
        rss_kb < (8 + 64) << 10,
        "mount peak RSS {rss_kb} kB exceeds cache + 64 MiB"
    );
    mnt.stop();
}

#[test]
fn snapshots_without_xattrs_let_the_kernel_stop_asking_for_them() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/f"), b"plain").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let mnt = Mounted::start(&env, "mount", &[]);
    let file = mnt.dir.join("latest/src/d/f");
    // Not "no attributes" but "not supported": the kernel remembers that and asks no more.
    let listed = xattr::list(&file).map(|names| names.count());
    assert_eq!(
        listed.map_err(|e| e.raw_os_error()),
        Err(Some(libc::EOPNOTSUPP))
    );
    let copy = env.path("copy");
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg(mnt.dir.join("latest/src"))
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_tree(&src, &copy);
    mnt.stop();

    // One snapshot with xattrs in the repository, and every mount serves them again.
    xattr::set(src.join("d/f"), "user.k", b"v").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let mnt = Mounted::start(&env, "mount", &[]);
    let first = mnt.dir.join("snapshots").read_dir().unwrap().count();
    assert_eq!(first, 2);
    let latest = mnt.dir.join("latest/src/d/f");
    assert_eq!(xattr::get(&latest, "user.k").unwrap(), Some(b"v".to_vec()));
    mnt.stop();
}

#[test]
fn reading_a_file_of_a_directory_fetches_the_rest_ahead() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    let dir = src.join("dir");
    fs::create_dir_all(&dir).unwrap();
    for i in 0..20u64 {
        fs::write(dir.join(format!("f{i:02}")), pseudo_random(100 + i, 20_000)).unwrap();
    }
    env.ok(&["backup", src.to_str().unwrap()]);
    let mnt = Mounted::start(&env, "mount", &[]);
    let mounted = mnt.dir.join("latest/src/dir");
    // Listing first, as cp and rsync do, then one file read.
    assert_eq!(fs::read_dir(&mounted).unwrap().count(), 20);
    assert!(fs::read(mounted.join("f07")).unwrap() == fs::read(dir.join("f07")).unwrap());
    // Time for the fetch-ahead workers, generously: the other tests of this binary run beside
    // this one on two cores.
    std::thread::sleep(Duration::from_millis(3000));
    // With the packs gone, only chunks fetched ahead can still be served: from the kernel's
    // page cache, or from the mount's when the kernel let the pages go (this machine's DAMON
    // pageout scheme reclaims pages nobody has read within seconds: a failure seen in one run
    // in four under load before the mount kept such chunks).
    fs::rename(env.repo().join("data"), env.path("data-away")).unwrap();
    for i in (0..20u64).filter(|&i| i != 7) {
        let name = format!("f{i:02}");
        let read = fs::read(mounted.join(&name))
            .unwrap_or_else(|e| panic!("{name} was not fetched ahead: {e}"));
        assert!(read == fs::read(dir.join(&name)).unwrap(), "{name}");
    }
    mnt.stop();
}

#[test]
fn files_fetched_ahead_are_stored_in_the_kernel_page_cache() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    let dir = src.join("dir");
    fs::create_dir_all(&dir).unwrap();
    for i in 0..20u64 {
        fs::write(
            dir.join(format!("f{i:02}")),
            pseudo_random(200 + i, 10_000 + i as usize),
        )
        .unwrap();
    }
    env.ok(&["backup", src.to_str().unwrap()]);
    let mnt = Mounted::start(&env, "mount", &[]);
    let mounted = mnt.dir.join("latest/src/dir");
    assert_eq!(fs::read_dir(&mounted).unwrap().count(), 20);
    assert!(fs::read(mounted.join("f03")).unwrap() == fs::read(dir.join("f03")).unwrap());
    // Every page of the files not read yet becomes resident without a read: fincore maps the
    // file and asks mincore, which reads nothing.
    let resident = |name: &str| -> u64 {
        let out = std::process::Command::new("fincore")
            .args(["--bytes", "--noheadings", "--output", "RES"])
            .arg(mounted.join(name))
            .output()
            .expect("fincore (util-linux-extra) runs");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    };
    let others: Vec<String> = (0..20u64)
        .filter(|&i| i != 3)
        .map(|i| format!("f{i:02}"))
        .collect();
    let whole = |name: &str| fs::metadata(dir.join(name)).unwrap().len().div_ceil(4096) * 4096;
    wait_for("the directory's other files in the page cache", || {
        others.iter().all(|name| resident(name) == whole(name))
    });
    for name in &others {
        assert!(fs::read(mounted.join(name)).unwrap() == fs::read(dir.join(name)).unwrap());
    }
    mnt.stop();
}

#[test]
fn streaming_a_file_longer_than_the_cache_leaves_other_chunks_cached() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(src.join("a")).unwrap();
    fs::create_dir_all(src.join("b")).unwrap();
    let keep = pseudo_random(31, 1 << 20);
    fs::write(src.join("a/keep"), &keep).unwrap();
    fs::write(src.join("b/big"), pseudo_random(32, 160 << 20)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let mnt = Mounted::start(&env, "mount", &["--cache-size", "32MiB"]);
    let mounted = mnt.dir.join("latest/src");
    // A read in the middle (not a stream) caches `keep`'s chunks.
    let keep_file = fs::File::open(mounted.join("a/keep")).unwrap();
    let mut page = vec![0u8; 4096];
    keep_file.read_exact_at(&mut page, 4096).unwrap();
    assert!(page[..] == keep[4096..8192]);
    // The kernel forgets its copy of `keep`: from now on only the mount's cache can serve it.
    // SAFETY: posix_fadvise only drops clean page-cache pages of this open file.
    let dropped = unsafe {
        libc::posix_fadvise(
            std::os::fd::AsRawFd::as_raw_fd(&keep_file),
            0,
            0,
            libc::POSIX_FADV_DONTNEED,
        )
    };
    assert_eq!(dropped, 0);
    // Five times the cache, streamed.
    let big = fs::read(mounted.join("b/big")).unwrap();
    assert!(big == fs::read(src.join("b/big")).unwrap());
    fs::rename(env.repo().join("data"), env.path("data-away")).unwrap();
    keep_file
        .read_exact_at(&mut page, 4096)
        .unwrap_or_else(|e| panic!("streaming `big` pushed `keep` out of the cache: {e}"));
    assert!(page[..] == keep[4096..8192]);
    mnt.stop();
}

#[test]
fn a_file_read_again_from_the_start_is_fetched_ahead_again() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let data = pseudo_random(33, 24 << 20);
    fs::write(src.join("f"), &data).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let mnt = Mounted::start(&env, "mount", &[]);
    let path = mnt.dir.join("latest/src/f");
    assert!(fs::read(&path).unwrap() == data);
    let file = fs::File::open(&path).unwrap();
    // SAFETY: posix_fadvise only drops clean page-cache pages of this open file.
    let dropped = unsafe {
        libc::posix_fadvise(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            0,
            0,
            libc::POSIX_FADV_DONTNEED,
        )
    };
    assert_eq!(dropped, 0);
    // The second pass starts: its first reads set the fetching ahead going again.
    let mut got = vec![0u8; 1 << 20];
    for at in [0u64, 1 << 20] {
        file.read_exact_at(&mut got, at).unwrap();
        assert!(got[..] == data[at as usize..][..got.len()]);
    }
    std::thread::sleep(Duration::from_millis(1500));
    // With the packs gone, only chunks fetched ahead can serve the next 6 MiB.
    fs::rename(env.repo().join("data"), env.path("data-away")).unwrap();
    for at in (2u64..8).map(|mib| mib << 20) {
        file.read_exact_at(&mut got, at)
            .unwrap_or_else(|e| panic!("MiB {} was not fetched ahead: {e}", at >> 20));
        assert!(got[..] == data[at as usize..][..got.len()]);
    }
    mnt.stop();
}

/// Block `i` of the streaming test's file: unique (its number leads), but compressible, so the
/// repository stays small and the backup quick while the mount still caches full-size chunks.
fn stream_block(i: u64, block: &mut [u8]) {
    for (j, word) in block.chunks_exact_mut(8).enumerate() {
        let value = if j % 512 == 0 { i } else { (j as u64) & 0xff };
        word.copy_from_slice(&value.to_le_bytes());
    }
}

#[test]
fn streaming_10_gib_keeps_the_mount_under_its_cache_plus_64_mib() {
    // CAIRN_STREAM_GIB makes it shorter; the issue asks for 10 GiB.
    let gib: u64 = std::env::var("CAIRN_STREAM_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    const BLOCK: usize = 1 << 20;
    let env = Env::with_repo(&[]);
    let blocks = gib << 10;
    // Written through a stage, so no 10 GiB source file needs the disk (the repository stays
    // small: the blocks compress).
    let stage = Mounted::start(&env, "stage", &["--path", "/src", "--empty"]);
    {
        let file = fs::File::create(stage.dir.join("big")).unwrap();
        let mut out = std::io::BufWriter::with_capacity(BLOCK, file);
        let mut block = vec![0u8; BLOCK];
        for i in 0..blocks {
            stream_block(i, &mut block);
            std::io::Write::write_all(&mut out, &block).unwrap();
        }
        std::io::Write::flush(&mut out).unwrap();
    }
    env.ok(&["stage", "--commit", stage.dir.to_str().unwrap()]);
    stage.wait_exit();

    let cache_mib = 64;
    let mnt = Mounted::start(&env, "mount", &["--cache-size", "64MiB"]);
    let mut file = fs::File::open(mnt.dir.join("latest/src/big")).unwrap();
    let (mut got, mut want) = (vec![0u8; BLOCK], vec![0u8; BLOCK]);
    for i in 0..blocks {
        std::io::Read::read_exact(&mut file, &mut got).unwrap();
        stream_block(i, &mut want);
        assert!(got == want, "block {i} differs");
    }
    assert_eq!(std::io::Read::read(&mut file, &mut got).unwrap(), 0, "EOF");
    let rss_kib = peak_rss_kib(mnt.pid());
    eprintln!("mount peak RSS after {gib} GiB: {} MiB", rss_kib >> 10);
    assert!(
        rss_kib < (cache_mib + 64) << 10,
        "mount peak RSS {rss_kib} KiB over {cache_mib} MiB cache + 64 MiB after {gib} GiB"
    );
    mnt.stop();
}

/// The file offsets of `file`'s chunk that lives at `pack_offset` in `pack`.
fn damaged_range(env: &Env, pack: &str, pack_offset: u64, file: &str) -> (u64, u64) {
    let snap = env.json(&["cat", "snapshot", "latest"]);
    let root = env.json(&["cat", "tree", snap["tree"].as_str().unwrap()]);
    let dir = env.json(&["cat", "tree", root["nodes"][0]["subtree"].as_str().unwrap()]);
    let node = dir["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == file)
        .unwrap()
        .clone();
    let mut blobs = std::collections::HashMap::new();
    for index in env.repo_files("index") {
        let segment = env.json(&["cat", "index", index.file_name().unwrap().to_str().unwrap()]);
        for p in segment["packs"].as_array().unwrap() {
            for b in p["blobs"].as_array().unwrap() {
                blobs.insert(
                    b["id"].as_str().unwrap().to_string(),
                    (p["pack"].as_str().unwrap().to_string(), b.clone()),
                );
            }
        }
    }
    let mut offset = 0;
    for id in node["content"].as_array().unwrap() {
        let (p, b) = &blobs[id.as_str().unwrap()];
        let raw = b["raw_len"].as_u64().unwrap();
        let (start, len) = (
            b["offset"].as_u64().unwrap(),
            b["sealed_len"].as_u64().unwrap(),
        );
        if p == pack && (start..start + len).contains(&pack_offset) {
            return (offset, offset + raw);
        }
        offset += raw;
    }
    panic!("no chunk of {file} at {pack}:{pack_offset}");
}

#[test]
fn bit_flipped_pack_fails_exactly_the_reads_of_the_damaged_chunk() {
    // Without parity (with it, the read heals: tests/integrity.rs).
    let env = Env::with_repo(&[
        "--parity",
        "off",
        "--chunk-min",
        "64KiB",
        "--chunk-avg",
        "128KiB",
        "--chunk-max",
        "256KiB",
    ]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let data = pseudo_random(11, 2 << 20);
    fs::write(src.join("file"), &data).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let pack = env
        .repo_files("data")
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let pack_id = pack.file_name().unwrap().to_str().unwrap().to_string();
    let flip_at = fs::metadata(&pack).unwrap().len() / 3;
    let (bad_start, bad_end) = damaged_range(&env, &pack_id, flip_at, "file");
    let mut bytes = fs::read(&pack).unwrap();
    bytes[flip_at as usize] ^= 0x40;
    fs::write(&pack, bytes).unwrap();

    let mnt = Mounted::start(&env, "mount", &[]);
    // No readahead: each 4 KiB read is one request, so failures show at their true extent.
    let dev = fs::metadata(&mnt.dir).unwrap().dev();
    let bdi = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    );
    fs::write(&bdi, "0").unwrap();
    let file = fs::File::open(mnt.dir.join("latest/src/file")).unwrap();
    let mut buf = vec![0u8; 4096];
    for block in 0..(data.len() / 4096) as u64 {
        let offset = block * 4096;
        let touches_damage = offset < bad_end && offset + 4096 > bad_start;
        match file.read_at(&mut buf, offset) {
            Ok(n) => {
                assert!(
                    !touches_damage,
                    "block at {offset} inside damaged {bad_start}..{bad_end} was served"
                );
                assert_eq!(&buf[..n], &data[offset as usize..offset as usize + n]);
            }
            Err(e) => {
                assert!(
                    touches_damage,
                    "block at {offset} outside damaged {bad_start}..{bad_end} failed: {e}"
                );
                assert_eq!(e.raw_os_error(), Some(libc::EIO));
            }
        }
    }
    let log = mnt.log();
    assert!(
        log.contains(&pack_id) && log.contains("src/file") && log.contains("blob "),
        "{log}"
    );
    mnt.stop();
}

#[test]
fn snapshot_made_while_mounted_appears_without_remounting() {
    let (env, src) = backed_up_tree();
    let mnt = Mounted::start(&env, "mount", &[]);
    assert_eq!(fs::read_dir(mnt.dir.join("snapshots")).unwrap().count(), 1);
    fs::write(src.join("added-later"), b"new").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    wait_for("the new snapshot", || {
        fs::read_dir(mnt.dir.join("snapshots")).unwrap().count() == 2
    });
    wait_for("latest to move", || {
        fs::read(mnt.dir.join("latest/src/added-later")).is_ok_and(|b| b == b"new")
    });
    mnt.stop();
}

#[test]
fn a_snapshot_forgotten_while_mounted_disappears_within_2_s_and_open_files_still_read() {
    let (env, src) = backed_up_tree();
    fs::write(src.join("added-later"), b"new").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let mnt = Mounted::start(&env, "mount", &[]);
    assert_eq!(fs::read_dir(mnt.dir.join("snapshots")).unwrap().count(), 2);
    let open = fs::File::open(mnt.dir.join("latest/src/small.txt")).unwrap();
    let newest = env.json(&["snapshots"])[1]["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.ok(&["forget", &newest[..8]]);
    let start = Instant::now();
    wait_for("the forgotten snapshot to go", || {
        fs::read_dir(mnt.dir.join("snapshots")).unwrap().count() == 1
    });
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    // Its data is still stored (no prune): a file opened before reads whole.
    let mut text = String::new();
    std::io::Read::read_to_string(&mut &open, &mut text).unwrap();
    assert_eq!(text, "hello, world\n");
    mnt.stop();
}

#[test]
fn tags_hosts_and_latest_link_to_their_snapshots_and_statfs_counts_them() {
    let (env, src) = backed_up_tree();
    fs::write(src.join("tagged-only"), b"t").unwrap();
    env.ok(&["backup", "--tag", "nightly", src.to_str().unwrap()]);
    let mnt = Mounted::start(&env, "mount", &[]);
    let entries = |dir: &str| -> Vec<std::path::PathBuf> {
        let mut paths: Vec<_> = fs::read_dir(mnt.dir.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        paths.sort();
        paths
    };
    let snapshots = entries("snapshots");
    assert_eq!(snapshots.len(), 2);
    let tagged = entries("tags/nightly");
    assert_eq!(tagged.len(), 1, "only the tagged snapshot");
    assert!(
        fs::read_link(&tagged[0])
            .unwrap()
            .starts_with("../../snapshots")
    );
    assert_eq!(fs::read(tagged[0].join("src/tagged-only")).unwrap(), b"t");
    let newest = fs::canonicalize(mnt.dir.join("latest")).unwrap();
    assert_eq!(fs::canonicalize(&tagged[0]).unwrap(), newest);
    assert!(snapshots.contains(&newest));
    let snaps = env.json(&["snapshots"]);
    let host = snaps[0]["hostname"].as_str().unwrap();
    let by_host: Vec<_> = entries(&format!("hosts/{host}"))
        .iter()
        .map(|p| fs::canonicalize(p).unwrap())
        .collect();
    assert_eq!(by_host, snapshots);

    let stats = nix::sys::statvfs::statvfs(&mnt.dir).unwrap();
    let summed = |field: &str| -> u64 {
        snaps
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["summary"][field].as_u64().unwrap())
            .sum()
    };
    assert_eq!(stats.files() as u64, summed("files"));
    assert_eq!(
        stats.blocks() as u64 * stats.fragment_size() as u64,
        summed("bytes").div_ceil(4096) * 4096
    );
    assert_eq!(stats.blocks_available(), 0, "read-only: no room");
    mnt.stop();
}

#[test]
fn one_snapshot_path_mounted_as_the_root() {
    let (env, src) = backed_up_tree();
    let mnt = Mounted::start(&env, "mount", &["latest:src/dir"]);
    assert_eq!(
        fs::read(mnt.dir.join("deeper/text.txt")).unwrap(),
        fs::read(src.join("dir/deeper/text.txt")).unwrap()
    );
    assert!(!mnt.dir.join("snapshots").exists());
    mnt.stop();
}

#[test]
fn directory_of_100000_entries_lists_completely() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    let big = src.join("big");
    fs::create_dir_all(&big).unwrap();
    for i in 0..100_000 {
        fs::File::create(big.join(format!("f{i:06}"))).unwrap();
    }
    env.ok(&["backup", src.to_str().unwrap()]);
    let mnt = Mounted::start(&env, "mount", &[]);
    let mut names: Vec<String> = fs::read_dir(mnt.dir.join("latest/src/big"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 100_000);
    assert_eq!(names[0], "f000000");
    assert_eq!(names[99_999], "f099999");
    mnt.stop();
}

#[test]
fn fusermount_unmount_ends_the_process() {
    let (env, _src) = backed_up_tree();
    let mut mnt = Mounted::start(&env, "mount", &[]);
    let out = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg(&mnt.dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut child = mnt.child.take().unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "process outlived its mount"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!is_mounted(&mnt.dir));
}

#[test]
fn find_through_a_tree_100000_levels_deep_keeps_the_mount_within_its_budget() {
    let env = Env::with_repo(&[]);
    let crafter = common::crafted::Crafter::new(&env);
    let mut node = crafter.file(b"bottom", 0o644, b"deep");
    for _ in 0..100_000 {
        node = crafter.dir(b"d", 0o755, vec![node]);
    }
    crafter.commit(vec![node]);
    let mnt = Mounted::start(&env, "mount", &["--cache-size", "64MiB"]);
    let find = std::process::Command::new("find")
        .arg(mnt.dir.join("latest/"))
        .arg("-name")
        .arg("bottom")
        .output()
        .unwrap();
    let found = String::from_utf8_lossy(&find.stdout);
    assert_eq!(
        found.lines().count(),
        1,
        "{}",
        String::from_utf8_lossy(&find.stderr)
    );
    assert!(found.trim_end().ends_with("/d/bottom"));
    let rss_kib = peak_rss_kib(mnt.pid());
    assert!(
        rss_kib < (64 + 64) << 10,
        "mount peak RSS {rss_kib} KiB over 64 MiB cache + 64 MiB"
    );
    mnt.stop();
}

#[test]
fn invalid_names_hosts_and_tags_of_older_repositories_are_skipped_not_eio() {
    let env = Env::with_repo(&[]);
    let crafter = common::crafted::Crafter::new(&env);
    let dir = crafter.dir(
        b"dir",
        0o755,
        vec![
            crafter.file(b"good", 0o644, b"fine"),
            crafter.file(b"..", 0o644, b"dots"),
            crafter.file(b"a/b", 0o644, b"slash"),
            crafter.file(b"", 0o644, b"empty"),
        ],
    );
    crafter.commit_labelled(vec![dir], "../x", &["", "a/b", "ok"]);
    let mnt = Mounted::start(&env, "mount", &[]);
    let names = |p: &str| -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(mnt.dir.join(p))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names("latest/dir"), ["good"]);
    assert_eq!(fs::read(mnt.dir.join("latest/dir/good")).unwrap(), b"fine");
    assert_eq!(names("hosts"), Vec::<String>::new());
    assert_eq!(names("tags"), ["ok"]);
    assert_eq!(names("tags/ok").len(), 1);
    mnt.stop();
}

#[test]
fn after_a_prune_moves_a_blob_the_mount_finds_it_and_data_gone_fails_with_eio() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let big = pseudo_random(5, 4 << 20);
    let small = pseudo_random(6, 200 << 10);
    fs::write(src.join("big"), &big).unwrap();
    fs::write(src.join("small"), &small).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    // The second snapshot keeps only `small`, which stays in the first snapshot's pack.
    fs::remove_file(src.join("big")).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let ids = env.snapshot_ids();

    // A cache small enough that opening `big` reads ahead only its first chunk.
    let mnt = Mounted::start(&env, "mount", &["--cache-size", "8MiB"]);
    let opened_before =
        fs::File::open(mnt.dir.join("ids").join(&ids[0][..8]).join("src/big")).unwrap();

    // Forget the first snapshot and prune: its pack is mostly unused, so `small` is copied to a
    // new pack and the old one deleted, under the running mount.
    env.ok(&["forget", &ids[0]]);
    let out = env.json(&["prune", "--now"]);
    assert_eq!(out["report"]["repacked_packs"], 1, "{out}");
    assert!(
        out["report"]["deleted_packs"].as_u64().unwrap() >= 1,
        "{out}"
    );

    // The mount's index still names the deleted pack: it reads the index again and finds the
    // blob in its new pack.
    assert_eq!(fs::read(mnt.dir.join("latest/src/small")).unwrap(), small);
    // The forgotten snapshot's file, opened before, now has no data: EIO, never other bytes.
    let mut buf = vec![0u8; 4096];
    let err = opened_before
        .read_at(&mut buf, big.len() as u64 - 4096)
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    mnt.stop();
}

/// Issue 22, item 1: the cache directory is opened once and used through its descriptor. A
/// `cairn-cache` swapped for a link after the mount started is not followed (the cache keeps
/// writing, and evicting, in the directory it opened), and nothing in the link's target — files
/// named like cache files included — is written or removed.
#[test]
fn a_cache_dir_swapped_for_a_link_after_the_mount_starts_is_not_followed() {
    let (env, src) = common::backed_up_tree();
    let cache = env.path("cache");
    fs::create_dir(&cache).unwrap();
    let victim = env.path("victim");
    fs::create_dir(&victim).unwrap();
    let planted: Vec<String> = (0..4u8).map(hex_name).collect();
    for name in &planted {
        fs::write(victim.join(name), vec![7u8; 100 << 10]).unwrap();
    }
    let mnt = Mounted::start(
        &env,
        "mount",
        &[
            "--cache-dir",
            cache.to_str().unwrap(),
            "--cache-dir-size",
            "1MiB",
        ],
    );
    // What another user with write access to the path would do, done after the start.
    fs::rename(cache.join("cairn-cache"), cache.join("moved")).unwrap();
    std::os::unix::fs::symlink(&victim, cache.join("cairn-cache")).unwrap();
    let big = fs::read(src.join("dir/big.bin")).unwrap();
    assert_eq!(
        fs::read(mnt.dir.join("latest/src/dir/big.bin")).unwrap(),
        big
    );
    mnt.stop();
    let mut in_victim: Vec<String> = fs::read_dir(&victim)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    in_victim.sort();
    let mut expected = planted.clone();
    expected.sort();
    assert_eq!(
        in_victim, expected,
        "the link's target was written to or evicted from"
    );
    for name in &planted {
        assert_eq!(fs::read(victim.join(name)).unwrap(), vec![7u8; 100 << 10]);
    }
    let cached = fs::read_dir(cache.join("moved")).unwrap().count();
    assert!(
        cached > 0,
        "the cache wrote nothing to the directory it opened"
    );
}

/// Issue 22, item 1: a cache directory another user could change is refused before the mount
/// starts — below a directory others may write to (not sticky), or one owned by someone else.
#[test]
fn a_cache_dir_another_user_could_change_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let (env, _src) = common::backed_up_tree();
    let open = env.path("open-to-all");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    let mnt = env.path("mnt");
    fs::create_dir(&mnt).unwrap();
    let refused = |dir: &std::path::Path| {
        let out = env.run(&[
            "mount",
            mnt.to_str().unwrap(),
            "--cache-dir",
            dir.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        err.into_owned()
    };
    let err = refused(&open.join("cache"));
    assert!(err.contains("can be changed by another user"), "{err}");
    assert!(!open.join("cache").exists(), "nothing made below it");
    if common::is_root() {
        // Made by another user before cairn ran (as in a shared /tmp).
        let theirs = env.path("theirs");
        fs::create_dir(&theirs).unwrap();
        fs::create_dir(theirs.join("cairn-cache")).unwrap();
        fs::set_permissions(
            theirs.join("cairn-cache"),
            fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        let nobody = Some(nix::unistd::Uid::from_raw(65534));
        nix::unistd::chown(&theirs.join("cairn-cache"), nobody, None).unwrap();
        let err = refused(&theirs);
        assert!(
            err.contains("not a private directory of this user"),
            "{err}"
        );
        // A link given in the path leads to the same refusal: it is resolved, then checked.
        std::os::unix::fs::symlink(&theirs, env.path("link")).unwrap();
        let err = refused(&env.path("link"));
        assert!(
            err.contains("not a private directory of this user"),
            "{err}"
        );
    }
}

fn hex_name(i: u8) -> String {
    hex::encode([i; 32])
}
