//! Self-healing packs through the kernel: a repository on a disk that fails reads of lost
//! sectors (EIO, from a small pass-through FUSE file system) is restored, mounted and checked
//! byte-exact and scrubbed whole; a mount over a damaged pack serves exact bytes with one
//! warning and writes the store only when asked (`--heal-write`); a compression dictionary
//! with one copy lost still serves its files.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::damage::{parity_of, small_packs, zero_sector};
use common::{Env, assert_same_tree};
use std::fs;
use std::path::Path;
use support::Mounted;
use support::eio_fs::EioMount;

/// Every file of `src` read through `dir` (a mounted snapshot's copy of it) equals the source.
fn assert_reads_equal(src: &Path, dir: &Path) {
    for entry in fs::read_dir(src).unwrap() {
        let name = entry.unwrap().file_name();
        assert!(
            fs::read(dir.join(&name)).unwrap() == fs::read(src.join(&name)).unwrap(),
            "{name:?} differs"
        );
    }
}

/// `check --read-data` finds nothing wrong.
fn assert_clean(env: &Env) {
    let out = env.run(&["check", "--read-data"]);
    assert!(out.status.success(), "{}", said(&out));
}

/// `cairn scrub`, without the password.
fn scrub(env: &Env) -> std::process::Output {
    env.command(&["scrub"])
        .env_remove("CAIRN_PASSWORD")
        .output()
        .unwrap()
}

fn said(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn sectors_the_disk_cannot_read_are_read_around_healed_on_the_fly_and_scrubbed() {
    let (env, src, packs) = small_packs(6, 500, &[]);
    let originals: Vec<Vec<u8>> = packs[..2].iter().map(|p| fs::read(p).unwrap()).collect();
    let disk = EioMount::start(&env.repo(), &env.path("eio"));
    // Three lost sectors in each of the two largest packs: within the 4 a 256 KiB pack's
    // parity rebuilds.
    for pack in &packs[..2] {
        for sector in [1, 6, 11] {
            disk.lose_sector(pack, sector);
        }
    }
    let through = Env::at(disk.dir.to_str().unwrap().to_string());

    let target = through.path("restored");
    let out = through.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert!(out.status.success(), "{}", said(&out));
    assert_same_tree(&src, &target.join("src"));
    assert!(disk.failed_reads() > 0, "the lost sectors were read");
    assert_eq!(
        said(&out).matches("healed from its parity").count(),
        2,
        "one line per pack: {}",
        said(&out)
    );

    let mnt = Mounted::start(&through, "mount", &[]);
    assert_reads_equal(&src, &mnt.dir.join("latest/src"));
    let log = mnt.log();
    mnt.stop();
    assert_eq!(log.matches("healed from its parity").count(), 2, "{log}");

    let out = through.run(&["check", "--read-data"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        said(&out)
            .matches("3 bad sectors, repairable from its parity")
            .count(),
        2,
        "{}",
        said(&out)
    );

    // No password: the machine holding the disk heals it.
    let out = scrub(&through);
    assert!(out.status.success(), "{}", said(&out));
    assert!(
        said(&out).contains("2 healed (6 sectors)"),
        "{}",
        said(&out)
    );
    for (pack, original) in packs[..2].iter().zip(&originals) {
        assert!(fs::read(pack).unwrap() == *original, "{pack:?} byte-exact");
    }
    let failed = disk.failed_reads();
    assert_clean(&through);
    assert_eq!(disk.failed_reads(), failed, "the healed packs read clean");

    // The parity lies on the same disk: a sound pack whose parity lost a sector gets a new one.
    let parity = parity_of(&env, &packs[2]);
    let last = (fs::metadata(&parity).unwrap().len() - 1) / 4096;
    disk.lose_sector(&parity, last);
    let out = scrub(&through);
    assert!(out.status.success(), "{}", said(&out));
    assert!(
        said(&out).contains("0 healed (0 sectors), 1 parity rewritten"),
        "{}",
        said(&out)
    );
    assert_clean(&through);
}

#[test]
fn a_damaged_pack_is_served_exact_with_one_warning_and_written_only_when_asked() {
    let (env, src, packs) = small_packs(4, 600, &[]);
    let pack = &packs[0];
    let sound = fs::read(pack).unwrap();
    let damage = || {
        zero_sector(pack, 2);
        zero_sector(pack, 9);
        fs::read(pack).unwrap()
    };
    let damaged = damage();

    let mnt = Mounted::start(&env, "mount", &[]);
    assert_reads_equal(&src, &mnt.dir.join("latest/src"));
    let log = mnt.log();
    mnt.stop();
    assert_eq!(log.matches("healed from its parity").count(), 1, "{log}");
    assert!(
        fs::read(pack).unwrap() == damaged,
        "the store is not written to"
    );

    let mnt = Mounted::start(&env, "mount", &["--heal-write"]);
    assert_reads_equal(&src, &mnt.dir.join("latest/src"));
    let log = mnt.log();
    mnt.stop();
    assert!(log.contains("written back to the store"), "{log}");
    assert!(fs::read(pack).unwrap() == sound, "healed in the store");

    damage();
    let target = env.path("restored");
    env.restore("latest", &target, &["--heal-write"]);
    assert_same_tree(&src, &target.join("src"));
    assert!(fs::read(pack).unwrap() == sound, "healed in the store");
    env.ok(&["check", "--read-data"]);
}

#[test]
fn a_mount_serves_files_compressed_with_a_dictionary_even_with_one_copy_of_it_lost() {
    let env = Env::with_repo(&["--dictionaries", "on"]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..400 {
        let text: String = (0..40 + i % 30)
            .map(|line| {
                format!("static int probe_{i}_{line}(struct device *dev) {{ return {line}; }}\n")
            })
            .collect();
        fs::write(src.join(format!("f{i}.c")), text).unwrap();
    }
    env.ok(&["backup", src.to_str().unwrap()]);
    let dicts = env.repo_files("dicts");
    assert_eq!(dicts.len(), 1, "the small files got a dictionary");

    let mnt = Mounted::start(&env, "mount", &[]);
    assert_reads_equal(&src, &mnt.dir.join("latest/src"));
    mnt.stop();

    // The first copy's sector zeroed: the mount (a new process) finds the second.
    zero_sector(&dicts[0], 0);
    let mnt = Mounted::start(&env, "mount", &[]);
    assert_reads_equal(&src, &mnt.dir.join("latest/src"));
    mnt.stop();
    let out = scrub(&env);
    assert!(
        said(&out).contains("rewritten from the other"),
        "{}",
        said(&out)
    );
    assert_clean(&env);
}
