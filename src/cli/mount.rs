//! `cairn mount DIR [SNAP[:PATH]]`: serve snapshots as a read-only file system, in the
//! foreground, until Ctrl-C, SIGTERM or `fusermount3 -u DIR`.

use crate::cli::{
    Globals, block_stop_signals, fuse_config, parse_size, split_snapshot_path, unmount,
};
use anyhow::{Context, Result, bail};
use cairn::backend::disk_cache::DiskCached;
use cairn::fs::view::{Scope, View, ViewOptions, snapshot_root};
use cairn::ops::walk::resolve;
use cairn::repo::tree::NodeKind;
use fuser::{MountOption, SessionACL};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Options of `mount`.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  cairn mount /mnt/cairn            then: ls /mnt/cairn/history/home/me/notes.txt/\n  cairn mount /mnt/snap latest:home/me --cache-size 1GiB"
)]
pub struct Args {
    /// Empty directory to mount on.
    dir: PathBuf,
    /// Mount only this snapshot (id prefix, `latest`, `latest~N`), or a directory in it (`:PATH`).
    snapshot: Option<String>,
    /// Memory for verified file chunks; reads larger than this still work.
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    cache_size: u64,
    /// Let other users (and root) see the mount; needs `user_allow_other` for non-root users.
    #[arg(long)]
    allow_other: bool,
    /// Keep what is read from the repository's store (index, snapshots, pack ranges) in this
    /// directory too (in its private subdirectory `cairn-cache`), so a remote repository is
    /// not asked twice; optional.
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// The most the --cache-dir directory holds; the oldest files go first.
    #[arg(long, default_value = "2GiB", value_parser = parse_size, requires = "cache_dir")]
    cache_dir_size: u64,
    /// Write a damaged pack healed from its parity back to the store (by default it is healed
    /// in memory only, and the store is not written to).
    #[arg(long)]
    heal_write: bool,
}

/// How long a signalled stop waits for the session to end by itself.
const UNMOUNT_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Raises the kernel's readahead for the mount to 1 MiB (its FUSE cap), when permitted, so
/// sequential reads arrive in large requests rather than 128 KiB ones.
fn raise_readahead(dir: &Path) {
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    let dev = meta.dev();
    let path = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    );
    if let Err(e) = std::fs::write(&path, "1024") {
        tracing::debug!("cannot raise readahead ({path}): {e}");
    }
}

/// Lets the allocator keep a few chunks' worth of freed memory at the top of its heaps. `main`
/// fixes glibc's mmap threshold, which leaves its trim threshold at 128 KiB: every chunk buffer
/// freed at the top of a heap went back to the system and the next one was faulted in again,
/// page by page (about 100,000 faults per GiB streamed). The cache's bound still hands memory
/// back once the process is resident beyond its slack. Only the view: it frees a chunk for
/// every chunk it reads; the other commands keep their smaller footprint.
fn keep_freed_chunk_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts an allocator parameter.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
    }
}

/// Runs `mount`.
pub fn run(globals: &Globals, args: Args) -> Result<u8> {
    let signals = block_stop_signals()?;
    keep_freed_chunk_memory();

    if !args.dir.is_dir() {
        bail!("{} is not a directory", args.dir.display());
    }
    let repo = match &args.cache_dir {
        None => globals.open()?,
        // A directory of cairn's own inside the one given, opened once and checked private
        // (with the path above it): eviction removes files there, and another user must not
        // plant, read or redirect any.
        Some(dir) => globals.open_through(|store| {
            let cached = DiskCached::open(store, dir, args.cache_dir_size)?;
            Ok(Arc::new(cached))
        })?,
    };
    let scope = match &args.snapshot {
        None => Scope::All,
        Some(spec) => {
            let (spec, path) = split_snapshot_path(spec);
            let (id, snapshot) = repo.find_snapshot(spec)?;
            let node = if path.trim_matches('/').is_empty() {
                snapshot_root(
                    &id.short(),
                    &snapshot,
                    (
                        nix::unistd::geteuid().as_raw(),
                        nix::unistd::getegid().as_raw(),
                    ),
                )
            } else {
                let index = repo.load_index()?;
                let start = resolve(&repo, &index, &snapshot, Path::new(path))?;
                match start.node {
                    Some(node) if node.kind == NodeKind::Dir => node,
                    _ => bail!("{path} is not a directory in snapshot {}", id.short()),
                }
            };
            Scope::One {
                snapshot: id,
                node: Box::new(node),
            }
        }
    };
    // A quarter of the memory holds damaged packs healed from their parity (at least one is
    // held whatever its size), the rest verified chunks.
    let healing = args.cache_size / 4;
    repo.healed_packs().set_budget(healing);
    repo.healed_packs().set_write_back(args.heal_write);
    let opts = ViewOptions {
        cache_bytes: usize::try_from(args.cache_size - healing).unwrap_or(usize::MAX),
        read_workers: globals.connections.max(ViewOptions::default().read_workers),
        ..ViewOptions::default()
    };
    let view = View::new(repo, scope, opts)?;
    let kernel_pages = view.kernel_pages();
    let acl = if args.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    let config = fuse_config(
        vec![
            MountOption::RO,
            MountOption::FSName("cairn".into()),
            MountOption::NoAtime,
            // The kernel checks modes and owners against the recorded attributes.
            MountOption::DefaultPermissions,
        ],
        acl,
    );
    let session = fuser::spawn_mount(view, &args.dir, &config).with_context(|| {
        format!(
            "mounting on {} (is fuse3 installed and /dev/fuse available?)",
            args.dir.display()
        )
    })?;
    kernel_pages.connect(session.notifier());
    raise_readahead(&args.dir);
    if !globals.quiet {
        eprintln!(
            "serving on {}; Ctrl-C or `fusermount3 -u {}` to unmount",
            args.dir.display(),
            args.dir.display()
        );
    }
    let dir = args.dir.clone();
    let quiet = globals.quiet;
    std::thread::spawn(move || {
        if signals.wait().is_ok() {
            unmount(&dir);
            // A lazy unmount waits for open files to close before the session ends. Do not
            // wait for them: when this process exits the kernel aborts the connection, and
            // those files fail with ENOTCONN instead of keeping a stopped mount alive.
            std::thread::sleep(UNMOUNT_GRACE);
            if !quiet {
                eprintln!(
                    "unmounted {} (files still open there were closed)",
                    dir.display()
                );
            }
            std::process::exit(0);
        }
    });
    session.join().context("file system session")?;
    if !globals.quiet {
        eprintln!("unmounted {}", args.dir.display());
    }
    Ok(0)
}
