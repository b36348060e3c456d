//! `cairn restore SNAP[:PATH] --target DIR`: write a snapshot back to disk.

use crate::cli::{Globals, parse_size, split_snapshot_path, with_ticker};
use anyhow::{Result, bail};
use cairn::ingest::patterns::Patterns;
use cairn::ops::restore::{
    DEFAULT_READ_WINDOW, Overwrite, RestoreOptions, RestoreProgress, restore,
};
use indicatif::HumanBytes;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

/// Options of `restore`.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  cairn restore latest --target /tmp/restored --verify\n  cairn restore 1a2b3c4d:home/me/src --target ~/src --overwrite if-changed --delete"
)]
pub struct Args {
    /// Snapshot (id prefix, `latest`, `latest~N`), optionally with `:PATH` inside it.
    snapshot: String,
    /// Directory to restore into.
    #[arg(short, long)]
    target: PathBuf,
    /// Restore only paths matching this pattern (and what is below them).
    #[arg(short, long)]
    include: Vec<String>,
    /// Skip paths matching this pattern (and what is below them).
    #[arg(short, long)]
    exclude: Vec<String>,
    /// Re-read every restored file and compare it with the snapshot.
    #[arg(long)]
    verify: bool,
    /// Most bytes read from a pack at once; larger packs are read in ranges of this size.
    #[arg(long, default_value_t = DEFAULT_READ_WINDOW as u64, value_parser = parse_size)]
    cache_size: u64,
    /// What to do where the target already has an entry: always (replace it), if-changed (keep a
    /// file of equal size and mtime), if-newer (replace only with a newer one), never. An existing
    /// entry is replaced, never written through, so a link in the target is not followed.
    #[arg(long, default_value = "always")]
    overwrite: Overwrite,
    /// Remove what restored directories hold that the snapshot does not (filters respected).
    #[arg(long)]
    delete: bool,
    /// Write a damaged pack healed from its parity back to the store (by default it is healed
    /// in memory only, and the store is not written to).
    #[arg(long)]
    heal_write: bool,
}

/// Runs `restore`.
pub fn run(globals: &Globals, args: Args) -> Result<u8> {
    let repo = globals.open()?;
    repo.healed_packs().set_write_back(args.heal_write);
    let (spec, path) = split_snapshot_path(&args.snapshot);
    let (id, snapshot) = repo.find_snapshot(spec)?;
    let index = repo.load_index()?;
    let opts = RestoreOptions {
        target: args.target,
        include: Patterns::new(&args.include)?,
        exclude: Patterns::new(&args.exclude)?,
        verify: args.verify,
        read_window: usize::try_from(args.cache_size).unwrap_or(usize::MAX),
        overwrite: args.overwrite,
        delete: args.delete,
    };
    let progress = RestoreProgress::default();
    let bar = globals.progress_bar(None, "{spinner} {elapsed_precise} {msg}");
    let rate = cairn::backend::stats::ReadRate::default();
    let message = || {
        let done = HumanBytes(progress.bytes.load(Ordering::Relaxed));
        format!(
            "{done} of {}, {}",
            HumanBytes(progress.total.load(Ordering::Relaxed)),
            super::store_traffic(&rate)
        )
    };
    let outcome = with_ticker(&bar, message, || {
        restore(&repo, &index, &snapshot, Path::new(path), &opts, &progress)
    })?;
    for error in &outcome.errors {
        eprintln!("error: {error}");
    }
    if globals.json {
        println!(
            "{}",
            serde_json::json!({
                "snapshot": id.to_hex(), "files": outcome.files, "dirs": outcome.dirs, "others": outcome.others,
                "bytes": outcome.bytes, "verified": outcome.verified, "skipped": outcome.skipped, "deleted": outcome.deleted,
                "errors": outcome.errors,
            })
        );
    } else if !globals.quiet {
        println!(
            "restored {} files, {} dirs, {} other nodes, {} from snapshot {}",
            outcome.files,
            outcome.dirs,
            outcome.others,
            HumanBytes(outcome.bytes),
            id.short()
        );
        if outcome.skipped > 0 {
            println!("kept {} existing entries (--overwrite)", outcome.skipped);
        }
        if outcome.deleted > 0 {
            println!("deleted {} entries not in the snapshot", outcome.deleted);
        }
        if opts.verify {
            println!("verified {} files", outcome.verified);
        }
    }
    if !outcome.errors.is_empty() {
        bail!(
            "{} errors while restoring; first: {}",
            outcome.errors.len(),
            outcome.errors[0]
        );
    }
    Ok(0)
}
