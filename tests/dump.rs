//! `dump`: a directory's tar, extracted by GNU tar, equals the source in bytes and metadata
//! (modes, owners, nanosecond times, links, xattrs, devices, names that are not UTF-8, paths
//! longer than ustar holds); a file's bytes; a zip read back; damage is an error, not bytes.

mod common;

use common::{Env, assert_same_tree, backed_up_tree};
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// Runs `cairn dump ARGS`, insisting on success; its standard output.
fn dump(env: &Env, args: &[&str]) -> Vec<u8> {
    let mut all = vec!["dump"];
    all.extend_from_slice(args);
    let out = env.run(&all);
    assert!(
        out.status.success(),
        "dump {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Extracts a tar stream with GNU tar, keeping everything it can.
fn untar(archive: &[u8], into: &Path) {
    fs::create_dir_all(into).unwrap();
    let mut tar = Command::new("tar")
        .args([
            "-x",
            "--xattrs",
            "--xattrs-include=*",
            "--numeric-owner",
            "-p",
            "-C",
        ])
        .arg(into)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(tar.stdin.as_mut().unwrap(), archive).unwrap();
    let out = tar.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_directory_dumped_as_tar_extracts_to_the_source() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    common::make_tree(&src);
    // A path longer than a ustar header holds, under a name that is not UTF-8.
    let long = src
        .join(OsStr::from_bytes(b"n\xffot-utf8"))
        .join("x".repeat(120))
        .join("y".repeat(150));
    fs::create_dir_all(&long).unwrap();
    fs::write(long.join("z".repeat(200)), b"deep").unwrap();
    std::os::unix::fs::symlink("t".repeat(180), long.join("long-link")).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let archive = dump(&env, &["latest:src"]);
    let out = env.path("untarred");
    untar(&archive, &out);
    assert_same_tree(&src, &out.join("src"));
    // The whole snapshot: its root's entries at the top.
    let whole = dump(&env, &["latest"]);
    let out = env.path("whole");
    untar(&whole, &out);
    assert_same_tree(&src, &out.join("src"));
}

#[test]
fn a_file_dumps_as_its_bytes_and_other_kinds_are_refused() {
    let (env, src) = backed_up_tree();
    assert_eq!(
        dump(&env, &["latest:src/dir/big.bin"]),
        fs::read(src.join("dir/big.bin")).unwrap()
    );
    assert_eq!(dump(&env, &["latest:/src/empty"]), b"");
    let out = env.run(&["dump", "latest:src/link"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("symlink"));
    let out = env.run(&["dump", "latest:src/nothing"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in the snapshot"));
}

#[test]
fn a_directory_dumped_as_zip_reads_back() {
    let (env, src) = backed_up_tree();
    let bytes = dump(&env, &["latest:src/dir", "--archive", "zip"]);
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut read = |name: &str| {
        let mut file = zip.by_name(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mode = file.unix_mode();
        let mut data = Vec::new();
        file.read_to_end(&mut data).unwrap();
        (data, mode)
    };
    let (big, _) = read("dir/big.bin");
    assert_eq!(big, fs::read(src.join("dir/big.bin")).unwrap());
    let (text, mode) = read("dir/deeper/text.txt");
    assert_eq!(text, fs::read(src.join("dir/deeper/text.txt")).unwrap());
    assert_eq!(mode.unwrap() & 0o7777, 0o600);
    // The hard link of src/small.txt outside the dumped directory is stored as the file (its
    // first appearance in the archive).
    let (linked, _) = read("dir/hardlink");
    assert_eq!(linked, b"hello, world\n");
    // A name that is not UTF-8 (src/ has one) is refused, not replaced.
    let out = env.run(&["dump", "latest:src", "--archive", "zip"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("use --archive tar"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A file with --archive is an archive of one entry.
    let one = dump(&env, &["latest:src/small.txt", "--archive", "tar"]);
    let mut archive = tar::Archive::new(std::io::Cursor::new(one));
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["small.txt"]);
    // Its entries, itself and deeper/text.txt.
    assert_eq!(
        zip.len(),
        fs::read_dir(src.join("dir")).unwrap().count() + 2
    );
}

#[test]
fn a_damaged_chunk_fails_the_dump_naming_it() {
    let (env, _src) = backed_up_tree();
    // Beyond what parity heals: it has none left.
    fs::remove_dir_all(env.repo().join("parity")).unwrap();
    // The largest pack holds big.bin's chunks: flip a byte in its middle.
    let mut packs: Vec<_> = env.id_files("data");
    packs.sort_by_key(|p| fs::metadata(p).unwrap().len());
    let pack = packs.last().unwrap();
    let mut bytes = fs::read(pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    fs::write(pack, &bytes).unwrap();
    let out = env.run(&["dump", "latest:src"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("big.bin"), "{err}");
    let pack_name = pack.file_name().unwrap().to_string_lossy().into_owned();
    assert!(err.contains(&pack_name[..8]), "{err}");
}
