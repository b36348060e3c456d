//! Repositories of small packs and the damage tests of self-healing packs do to them.

use super::{Env, pseudo_random};
use std::cmp::Reverse;
use std::fs;
use std::path::{Path, PathBuf};

/// A repository of 256 KiB packs (with `init_args` besides) holding `files` incompressible
/// files of 300 KB, backed up from its `src`; returns the source and the packs, largest first.
pub fn small_packs(files: u64, seed: u64, init_args: &[&str]) -> (Env, PathBuf, Vec<PathBuf>) {
    let mut args = vec!["--pack-size", "256KiB"];
    args.extend_from_slice(init_args);
    let env = Env::with_repo(&args);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..files {
        fs::write(src.join(format!("f{i}")), pseudo_random(seed + i, 300_000)).unwrap();
    }
    env.ok(&["backup", src.to_str().unwrap()]);
    let packs = largest_first(env.repo_files("data"));
    (env, src, packs)
}

/// `files` ordered by size, largest first.
pub fn largest_first(mut files: Vec<PathBuf>) -> Vec<PathBuf> {
    files.sort_by_key(|p| Reverse(fs::metadata(p).unwrap().len()));
    files
}

/// The parity object of the pack stored at `pack`.
pub fn parity_of(env: &Env, pack: &Path) -> PathBuf {
    let name = pack.file_name().unwrap().to_str().unwrap();
    env.repo().join("parity").join(&name[..2]).join(name)
}

/// Overwrites 4 KiB sector `sector` of `file` with zeros (as much of it as the file holds; the
/// file is read-only in the store).
pub fn zero_sector(file: &Path, sector: u64) {
    use std::os::unix::fs::PermissionsExt;
    let mut bytes = fs::read(file).unwrap();
    let start = (sector as usize * 4096).min(bytes.len());
    let end = (start + 4096).min(bytes.len());
    bytes[start..end].fill(0);
    fs::set_permissions(file, fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(file, bytes).unwrap();
}
