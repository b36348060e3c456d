//! Self-healing packs: every writer stores a parity object beside each pack, prune deletes them
//! together (and an orphan by the next run), and damage within a pack's parity — flipped bits,
//! zeroed sectors, across a whole repository — is reported with the files it touches and
//! healed with no source: by `repair packs`, by `scrub` without the password, and in memory by
//! every read.

mod common;

use cairn::repo::ids::PackId;
use common::damage::{largest_first, parity_of, small_packs, zero_sector};
use common::{assert_same_tree, pseudo_random};
use std::fs;
use std::path::PathBuf;

/// The packs a repository holds, by name, and the parity objects it holds, by pack name.
fn packs_and_parity(env: &common::Env) -> (Vec<PathBuf>, Vec<PathBuf>) {
    (env.repo_files("data"), env.repo_files("parity"))
}

#[test]
fn every_pack_a_writer_stores_has_its_parity_and_prune_deletes_them_together() {
    use cairn::repo::parity::Parity;
    let env = common::Env::with_repo(&["--pack-size", "64KiB"]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..6 {
        fs::write(src.join(format!("f{i}")), pseudo_random(i, 100_000)).unwrap();
    }
    env.ok(&["backup", src.to_str().unwrap()]);
    let (packs, parity) = packs_and_parity(&env);
    assert!(packs.len() > 4, "{packs:?}");
    assert_eq!(packs.len(), parity.len());
    for pack in &packs {
        let name = pack.file_name().unwrap().to_str().unwrap();
        let id = PackId::from_hex(name).unwrap();
        let object = fs::read(env.repo().join("parity").join(&name[..2]).join(name)).unwrap();
        let bytes = fs::read(pack).unwrap();
        let parity = Parity::parse(&object, &id).unwrap();
        assert!(parity.damage(&bytes, &[]).bad_sectors.is_empty());
        assert_eq!(parity.heal(&bytes, &[]).unwrap(), bytes);
    }

    // A second backup shares nothing with the first: forgetting the first frees its packs,
    // and their parity goes with them.
    fs::remove_dir_all(&src).unwrap();
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("other"), pseudo_random(99, 100_000)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    env.ok(&["forget", "--keep-last", "1", "--prune"]);
    let (packs, parity) = packs_and_parity(&env);
    let names = |files: &[PathBuf]| {
        let mut names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(&packs), names(&parity));

    let off = common::Env::with_repo(&["--parity", "off"]);
    off.ok(&["backup", src.to_str().unwrap()]);
    assert!(!off.repo_files("data").is_empty());
    assert!(off.repo_files("parity").is_empty());
}

#[test]
fn parity_a_prune_left_without_its_pack_is_reported_then_removed_by_the_next_prune() {
    let env = common::Env::with_repo(&["--pack-size", "64KiB"]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("first"), pseudo_random(7, 200_000)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let first_parity = env.repo_files("parity");
    let saved: Vec<(PathBuf, Vec<u8>)> = first_parity
        .iter()
        .map(|p| (p.clone(), fs::read(p).unwrap()))
        .collect();
    let first_packs: Vec<(PathBuf, Vec<u8>)> = env
        .repo_files("data")
        .iter()
        .map(|p| (p.clone(), fs::read(p).unwrap()))
        .collect();
    fs::remove_file(src.join("first")).unwrap();
    fs::write(src.join("second"), pseudo_random(8, 200_000)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    env.ok(&["forget", "--keep-last", "1", "--prune"]);
    // As a prune killed after deleting the packs and before their parity leaves it.
    let orphans: Vec<&(PathBuf, Vec<u8>)> = saved.iter().filter(|(p, _)| !p.exists()).collect();
    assert!(!orphans.is_empty());
    for (path, bytes) in &orphans {
        fs::write(path, bytes).unwrap();
    }
    let said = env.ok(&["check"]);
    assert!(
        said.contains(&format!("{} parity objects have no pack", orphans.len())),
        "{said}"
    );
    // Condemned like a pack no index lists (a writer may be about to store its pack), then
    // removed by the next prune, once every session open at the first has ended.
    let pruned = env.ok(&["prune"]);
    assert!(
        pruned.contains(&format!(
            "{} parity objects without their pack condemned",
            orphans.len()
        )),
        "{pruned}"
    );
    assert!(orphans.iter().all(|(p, _)| p.exists()));
    // One pack arrives after all, as a writer's that stored its parity first would: it is a
    // pack like any other (here one no index lists) and keeps its parity.
    let arrived = orphans
        .iter()
        .find_map(|(parity, _)| {
            first_packs
                .iter()
                .find(|(pack, _)| pack.file_name() == parity.file_name())
        })
        .unwrap();
    fs::write(&arrived.0, &arrived.1).unwrap();
    let arrived_parity = env
        .repo()
        .join("parity")
        .join(arrived.0.parent().unwrap().file_name().unwrap())
        .join(arrived.0.file_name().unwrap());
    let pruned = env.ok(&["prune"]);
    assert!(
        pruned.contains(&format!(
            "{} parity objects without their pack removed",
            orphans.len() - 1
        )),
        "{pruned}"
    );
    assert!(arrived.0.exists() && arrived_parity.exists());
    assert!(
        orphans
            .iter()
            .all(|(p, _)| *p == arrived_parity || !p.exists())
    );
    assert!(!env.ok(&["check"]).contains("have no pack"));
    // Unindexed, it is garbage: condemned by that prune, deleted by the next with its parity.
    env.ok(&["prune"]);
    assert!(!arrived.0.exists() && !arrived_parity.exists());
    let (packs, parity) = packs_and_parity(&env);
    assert_eq!(packs.len(), parity.len());
}

#[test]
fn damaged_sectors_are_reported_and_healed_from_parity_with_no_source() {
    let (env, src, packs) = small_packs(8, 100, &[]);
    let index_before = env.repo_files("index");
    // Two packs, four sectors each: within the limit of 4 a small pack has.
    for pack in &packs[..2] {
        for sector in [0, 3, 9, 20] {
            zero_sector(pack, sector);
        }
    }
    let out = env.run(&["check", "--read-data"]);
    assert!(!out.status.success());
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        said.matches("4 bad sectors, repairable from its parity")
            .count(),
        2,
        "{said}"
    );

    // The sources are gone: parity alone heals.
    fs::rename(&src, env.path("gone")).unwrap();
    let repaired = env.ok(&["repair", "packs"]);
    assert_eq!(
        repaired.matches("healed from its parity").count(),
        2,
        "{repaired}"
    );
    env.ok(&["check", "--read-data"]);
    assert_eq!(
        largest_first(env.repo_files("data")),
        packs,
        "pack names unchanged"
    );
    assert_eq!(env.repo_files("index"), index_before, "index unchanged");
    let target = env.path("restored");
    env.restore("latest", &target, &[]);
    assert_same_tree(&env.path("gone"), &target.join("src"));

    // One sector more than a group's recovery sectors: reported as beyond repair.
    for sector in [0, 2, 4, 6, 8] {
        zero_sector(&packs[0], sector);
    }
    let out = env.run(&["check", "--read-data"]);
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("5 bad sectors, not repairable from its parity (limit 4)"),
        "{said}"
    );
}

#[test]
fn scrub_heals_packs_and_rewrites_parity_without_the_password() {
    let (env, _src, packs) = small_packs(6, 200, &[]);
    let before: Vec<Vec<u8>> = packs.iter().map(|p| fs::read(p).unwrap()).collect();
    for sector in [1, 5, 7] {
        zero_sector(&packs[0], sector);
    }
    // One parity lost, one damaged: both are written anew from their sound packs.
    fs::remove_file(parity_of(&env, &packs[1])).unwrap();
    zero_sector(&parity_of(&env, &packs[2]), 0);
    let out = env
        .command(&["scrub"])
        .env_remove("CAIRN_PASSWORD")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("1 healed (3 sectors), 2 parity rewritten, 0 beyond repair"),
        "{said}"
    );
    let after: Vec<Vec<u8>> = packs.iter().map(|p| fs::read(p).unwrap()).collect();
    assert!(after == before, "packs are byte-exact again");
    env.ok(&["check", "--read-data"]);

    // Beyond its parity: reported, exit code 1, the pack left as it is.
    for sector in [0, 2, 4, 6, 8] {
        zero_sector(&packs[0], sector);
    }
    let damaged = fs::read(&packs[0]).unwrap();
    let out = env
        .command(&["scrub"])
        .env_remove("CAIRN_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 beyond repair"));
    assert_eq!(fs::read(&packs[0]).unwrap(), damaged);
}

#[test]
fn reads_heal_a_damaged_pack_in_memory_and_leave_the_store_as_it_is() {
    let (env, src, packs) = small_packs(4, 300, &[]);
    for pack in &packs {
        for sector in [2, 10] {
            zero_sector(pack, sector);
        }
    }
    let damaged: Vec<Vec<u8>> = packs.iter().map(|p| fs::read(p).unwrap()).collect();
    let target = env.path("restored");
    let out = env
        .command(&["restore", "latest", "--target", target.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_same_tree(&src, &target.join("src"));
    assert!(err.contains("healed from its parity"), "{err}");
    let dumped = env.run(&["dump", "latest:/src/f1"]);
    assert!(dumped.status.success());
    assert!(
        dumped.stdout == fs::read(src.join("f1")).unwrap(),
        "dump byte-exact"
    );
    let after: Vec<Vec<u8>> = packs.iter().map(|p| fs::read(p).unwrap()).collect();
    assert!(after == damaged, "the store is not written to");
}

#[test]
fn repair_parity_gives_an_older_repositorys_packs_parity_without_touching_them() {
    let (env, _src, packs) = small_packs(4, 400, &["--parity", "off"]);
    let before: Vec<Vec<u8>> = packs.iter().map(|p| fs::read(p).unwrap()).collect();
    let index = env.repo_files("index");
    assert!(env.repo_files("parity").is_empty());
    let said = env.ok(&["repair", "parity"]);
    assert!(
        said.contains(&format!("{} given parity, 0 damaged", packs.len())),
        "{said}"
    );
    assert_eq!(env.repo_files("parity").len(), packs.len());
    let after: Vec<Vec<u8>> = packs.iter().map(|p| fs::read(p).unwrap()).collect();
    assert!(after == before, "packs untouched");
    assert_eq!(env.repo_files("index"), index, "index untouched");
    // A second run finds nothing to do; the parity it wrote heals.
    assert!(env.ok(&["repair", "parity"]).contains("0 given parity"));
    // The largest pack: a tree pack may end before sector 1.
    zero_sector(&packs[0], 1);
    assert!(
        env.ok(&["repair", "packs"])
            .contains("healed from its parity")
    );
    env.ok(&["check", "--read-data"]);
}

/// A repository of a tree of some 40 MB (the common test tree and files of many sizes) in
/// 128 KiB packs, so a thousand damaged sectors spread over many packs stay within each one's
/// parity.
fn many_packs() -> (common::Env, PathBuf) {
    let env = common::Env::with_repo(&[
        "--pack-size",
        "128KiB",
        "--chunk-min",
        "16KiB",
        "--chunk-avg",
        "32KiB",
        "--chunk-max",
        "64KiB",
    ]);
    let src = env.path("src");
    common::make_tree(&src);
    for i in 0..120u64 {
        let dir = src.join(format!("d{}", i % 7));
        fs::create_dir_all(&dir).unwrap();
        let len = 1_000 + (i as usize * 7_919) % 700_000;
        fs::write(dir.join(format!("f{i}")), pseudo_random(900 + i, len)).unwrap();
    }
    env.ok(&["backup", src.to_str().unwrap()]);
    (env, src)
}

/// How a sector is damaged.
#[derive(Clone, Copy)]
enum Harm {
    FlipOneBit,
    Zero,
}

/// Damages `count` distinct sectors spread over every pack, at most as many in a pack as its
/// parity rebuilds; returns the packs damaged.
fn damage_across(env: &common::Env, count: usize, harm: Harm, seed: u64) -> Vec<PathBuf> {
    use cairn::repo::parity::{SECTOR, density_of, recovery_count};
    use std::os::unix::fs::PermissionsExt;
    let packs = env.repo_files("data");
    // Each pack's limit, from its parity's density.
    let mut room: Vec<(PathBuf, Vec<u8>, u32)> = packs
        .into_iter()
        .map(|pack| {
            let name = pack.file_name().unwrap().to_str().unwrap().to_string();
            let object = fs::read(env.repo().join("parity").join(&name[..2]).join(&name)).unwrap();
            let bytes = fs::read(&pack).unwrap();
            let n = bytes.len().div_ceil(SECTOR) as u32;
            let limit = recovery_count(n, density_of(&object).unwrap()).min(n);
            (pack, bytes, limit)
        })
        .collect();
    let total: u32 = room.iter().map(|r| r.2).sum();
    assert!(
        total as usize >= count,
        "room for {total} damaged sectors only"
    );
    let noise = pseudo_random(seed, count * 16 + 16);
    let mut chosen: Vec<std::collections::BTreeSet<usize>> = vec![Default::default(); room.len()];
    let mut done = 0;
    let mut k = 0;
    while done < count {
        let word = u64::from_le_bytes(
            noise[(k % count) * 16..(k % count) * 16 + 8]
                .try_into()
                .unwrap(),
        )
        .wrapping_add(k as u64 * 0x9E37_79B9_7F4A_7C15);
        k += 1;
        let p = (word % room.len() as u64) as usize;
        let sectors = room[p].1.len().div_ceil(SECTOR);
        let sector = ((word >> 20) % sectors as u64) as usize;
        if chosen[p].len() as u32 >= room[p].2 || !chosen[p].insert(sector) {
            continue;
        }
        let bytes = &mut room[p].1;
        let start = sector * SECTOR;
        let end = (start + SECTOR).min(bytes.len());
        match harm {
            Harm::FlipOneBit => {
                let at = start + (word >> 40) as usize % (end - start);
                bytes[at] ^= 1 << (word % 8);
            }
            // Zeroing changes a sector only if it held something else: count it only then.
            Harm::Zero if bytes[start..end].iter().all(|&b| b == 0) => {
                chosen[p].remove(&sector);
                continue;
            }
            Harm::Zero => bytes[start..end].fill(0),
        }
        done += 1;
    }
    let mut damaged = Vec::new();
    for ((pack, bytes, _), sectors) in room.iter().zip(&chosen) {
        if sectors.is_empty() {
            continue;
        }
        fs::set_permissions(pack, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(pack, bytes).unwrap();
        damaged.push(pack.clone());
    }
    damaged
}

/// Every stored pack with its bytes, in name order.
fn stored_packs(env: &common::Env) -> Vec<(PathBuf, Vec<u8>)> {
    let mut packs: Vec<(PathBuf, Vec<u8>)> = env
        .repo_files("data")
        .into_iter()
        .map(|p| {
            let bytes = fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    packs.sort();
    packs
}

/// A thousand damaged sectors (`harm`) across the packs of a real tree's repository: each pack
/// reported repairable with the files it touches, healed by `repair packs` with no source,
/// byte-exact, names and index unchanged.
fn a_thousand_damaged_sectors_heal(harm: Harm, seed: u64) {
    let (env, src) = many_packs();
    let packs_before = stored_packs(&env);
    let index_before = env.repo_files("index");
    let damaged = damage_across(&env, 1000, harm, seed);
    assert!(damaged.len() > 50, "{} packs damaged", damaged.len());

    let out = env.run(&["check", "--read-data"]);
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        said.matches("repairable from its parity").count(),
        damaged.len(),
        "{said}"
    );
    assert!(!said.contains("not repairable"), "{said}");
    // The files the damage touches are named.
    assert!(said.contains(":/src/d"), "{said}");

    fs::rename(&src, env.path("gone")).unwrap();
    let repaired = env.ok(&["repair", "packs"]);
    assert_eq!(
        repaired.matches("healed from its parity").count(),
        damaged.len(),
        "{repaired}"
    );
    env.ok(&["check", "--read-data"]);
    let packs_after = stored_packs(&env);
    assert!(
        packs_after == packs_before,
        "every pack byte-exact under its name"
    );
    assert_eq!(env.repo_files("index"), index_before, "index unchanged");
    let target = env.path("restored");
    env.restore("latest", &target, &[]);
    assert_same_tree(&env.path("gone"), &target.join("src"));
}

#[test]
fn a_thousand_flipped_bits_across_a_repository_heal_with_no_source() {
    a_thousand_damaged_sectors_heal(Harm::FlipOneBit, 1);
}

#[test]
fn a_thousand_zeroed_sectors_across_a_repository_heal_with_no_source() {
    a_thousand_damaged_sectors_heal(Harm::Zero, 2);
}
