//! `cairn backup PATH...`: make a snapshot.

use crate::cli::{EXIT_PARTIAL, Globals, parse_label, with_ticker};
use anyhow::{Context, Result};
use cairn::ingest::archiver::{BackupOptions, ParentChoice, backup};
use cairn::ingest::patterns::Patterns;
use cairn::ingest::progress::Progress;
use cairn::ingest::{CompressionMode, IngestLimits};
use indicatif::HumanBytes;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

/// Options of `backup`.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  cairn backup ~/ --exclude '*.o' --exclude ~/.cache --tag daily\n  cairn backup /etc /srv --one-file-system --dry-run"
)]
pub struct Args {
    /// Files and directories to back up.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Skip entries matching this pattern (a name like `*.o`, or a path like `/home/*/.cache`).
    #[arg(short = 'e', long)]
    exclude: Vec<String>,
    /// Read exclude patterns from this file, one per line.
    #[arg(long)]
    exclude_file: Vec<PathBuf>,
    /// Stay on the file system of each path.
    #[arg(short = 'x', long)]
    one_file_system: bool,
    /// Label the snapshot (repeatable).
    #[arg(long, value_parser = parse_label)]
    tag: Vec<String>,
    /// Host name to record (default: this machine's).
    #[arg(long, value_parser = parse_label)]
    host: Option<String>,
    /// Compare against this snapshot instead of the latest of the same host and paths.
    #[arg(long, conflicts_with = "force")]
    parent: Option<String>,
    /// Read every file, even unchanged ones.
    #[arg(long)]
    force: bool,
    /// Read and chunk everything, store nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// zstd level (1-22), or `auto`: the repository's level, raised while the store is slower
    /// than compression (a slow link) and back down once it keeps up.
    #[arg(long, default_value = "auto", value_parser = parse_compression)]
    compression: CompressionMode,
}

/// `auto` or a zstd level.
pub fn parse_compression(text: &str) -> std::result::Result<CompressionMode, String> {
    match text {
        "auto" => Ok(CompressionMode::Auto),
        level => match level.parse::<i32>() {
            Ok(level) if (1..=22).contains(&level) => Ok(CompressionMode::Fixed(level)),
            _ => Err(format!("`{level}` is neither `auto` nor a zstd level 1-22")),
        },
    }
}

/// Runs `backup`.
pub fn run(globals: &Globals, args: Args) -> Result<u8> {
    let repo = globals.open()?;
    let mut patterns = args.exclude.clone();
    for file in &args.exclude_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading exclude file {}", file.display()))?;
        patterns.extend(text.lines().map(str::to_string));
    }
    let parent = match (&args.parent, args.force) {
        (_, true) => ParentChoice::Nothing,
        (Some(spec), _) => ParentChoice::Id(repo.find_snapshot(spec)?.0),
        (None, _) => ParentChoice::Latest,
    };
    let opts = BackupOptions {
        paths: args.paths,
        excludes: Patterns::new(&patterns)?,
        one_file_system: args.one_file_system,
        tags: args.tag,
        hostname: args.host.unwrap_or_else(cairn::repo::identity::hostname),
        parent,
        dry_run: args.dry_run,
        limits: IngestLimits {
            parallel_uploads: globals.connections,
            compression: args.compression,
            ..IngestLimits::default()
        },
        lease: cairn::repo::writer::Lease::configured(),
    };
    let progress = Progress::default();
    let bar = globals.progress_bar(None, "{spinner} {elapsed_precise} {msg}");
    let message = || {
        format!(
            "{} files, {} ({} read)",
            progress.files.load(Ordering::Relaxed),
            HumanBytes(progress.bytes.load(Ordering::Relaxed)),
            HumanBytes(progress.bytes_read.load(Ordering::Relaxed)),
        )
    };
    let outcome = with_ticker(&bar, message, || {
        backup(repo.clone(), &opts, &progress, None)
    })?;
    let s = &outcome.snapshot.summary;
    let id = outcome.id.map(|id| id.to_hex());
    if globals.json {
        let json = serde_json::json!({
            "snapshot": id, "summary": s, "warnings": outcome.warnings, "dry_run": opts.dry_run,
            "top_level": outcome.top_level,
        });
        println!("{json}");
    } else if !globals.quiet {
        println!(
            "files: {} ({} read, {} unchanged), dirs: {}",
            s.files,
            s.files_read,
            s.files - s.files_read,
            s.dirs
        );
        println!(
            "content {}, new {} in {} blobs, stored {} in {:.1}s (compression up to level {})",
            HumanBytes(s.bytes),
            HumanBytes(s.new_bytes),
            s.new_blobs,
            HumanBytes(s.stored_bytes),
            s.duration_ms as f64 / 1000.0,
            outcome.top_level
        );
        match &id {
            Some(id) => println!("snapshot {} saved", &id[..8]),
            None => println!("dry run: nothing stored"),
        }
    }
    if !outcome.warnings.is_empty() {
        eprintln!(
            "warning: {} files could not be backed up completely (see above)",
            outcome.warnings.len()
        );
        return Ok(EXIT_PARTIAL);
    }
    Ok(0)
}
