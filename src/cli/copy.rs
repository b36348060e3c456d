//! `cairn copy --from SRC [SNAPSHOT...]`: copies snapshots from another repository into this
//! one, verified, resumable, and never reporting a copy that is not complete.

use crate::cli::Globals;
use crate::cli::filter::SnapshotFilter;
use anyhow::Result;
use cairn::ingest::IngestLimits;
use cairn::ops::copy::{Copied, CopyOptions, copy_snapshots};
use cairn::repo::writer::Lease;
use indicatif::HumanBytes;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

/// Bytes of a source pack one reading thread holds at once.
const COPY_READ_WINDOW: usize = 8 << 20;

/// Options of `copy`.
#[derive(clap::Args)]
#[command(
    after_help = "Example: make a second repository that de-duplicates with the first, \
then copy this host's snapshots into it:\n  cairn -r s3:https://s3.example.com/bucket/cairn init \
--copy-params-from /srv/backup\n  cairn -r s3:https://s3.example.com/bucket/cairn copy --from \
/srv/backup --host $(hostname)"
)]
pub struct Args {
    /// The repository to copy from (a path, local:PATH or s3:URL).
    #[arg(long, env = "CAIRN_FROM_REPOSITORY", value_name = "REPO")]
    from: OsString,
    /// The password of the --from repository, from this file (else CAIRN_FROM_PASSWORD, else
    /// a prompt).
    #[arg(long, env = "CAIRN_FROM_PASSWORD_FILE", value_name = "FILE")]
    from_password_file: Option<PathBuf>,
    /// Snapshots to copy (ids or `latest`); all that pass the filters when none is given.
    snapshots: Vec<String>,
    #[command(flatten)]
    filter: SnapshotFilter,
}

/// Runs `copy`.
pub fn run(globals: &Globals, args: Args) -> Result<u8> {
    let source = Arc::new(crate::cli::open_source(
        globals,
        &args.from,
        args.from_password_file.as_deref(),
    )?);
    let dest = globals.open()?;
    let mut chosen = Vec::new();
    // Snapshot files of the source that do not open are left out by the listing (with a
    // warning each); the run then copies the rest and fails, naming them.
    let mut unreadable = Vec::new();
    if args.snapshots.is_empty() {
        for (name, opened) in source.snapshot_files()? {
            match opened {
                Ok(file) => chosen.push(file),
                // Damaged (it does not open): named at the end, after the rest is copied.
                Err(e @ cairn::Error::Corrupt { .. }) => {
                    tracing::warn!("{e}");
                    unreadable.push(name);
                }
                Err(e) => return Err(e.into()),
            }
        }
    } else {
        for spec in &args.snapshots {
            chosen.push(source.find_snapshot(spec)?);
        }
        chosen.sort_by_key(|(id, _)| *id);
        chosen.dedup_by_key(|(id, _)| *id);
    }
    chosen.retain(|(_, s)| args.filter.keeps(s));
    let opts = CopyOptions {
        lease: Lease::configured(),
        limits: IngestLimits {
            parallel_uploads: globals.connections,
            ..IngestLimits::default()
        },
        // Per reading thread, and there are --connections of them at least.
        read_window: COPY_READ_WINDOW,
    };
    let mut results = Vec::new();
    let mut report = |outcome: &Copied| {
        if globals.json {
            results.push(json_of(outcome));
        } else if !globals.quiet {
            match outcome {
                Copied::Now {
                    source,
                    copy,
                    blobs,
                    bytes,
                    dropped,
                } => {
                    for path in dropped {
                        eprintln!(
                            "warning: snapshot {}: {path} left out: its name is not a valid \
                             file name (damaged or crafted; restore skips it too)",
                            source.short()
                        );
                    }
                    println!(
                        "copied snapshot {} as {} ({blobs} new blobs, {})",
                        source.short(),
                        copy.short(),
                        HumanBytes(*bytes)
                    )
                }
                Copied::Already { source, copy } => println!(
                    "snapshot {} was already copied as {}",
                    source.short(),
                    copy.short()
                ),
            }
        }
    };
    let bar = globals.progress_bar(None, "{spinner} {elapsed_precise} {msg}");
    let rate = cairn::backend::stats::ReadRate::default();
    let copied = super::with_ticker(
        &bar,
        || super::store_traffic(&rate),
        || copy_snapshots(&source, &dest, chosen, &opts, &mut report),
    );
    // The snapshots finished before a failure are reported as such, and only they.
    if globals.json {
        println!("{}", serde_json::Value::Array(results));
    }
    copied?;
    if !unreadable.is_empty() {
        anyhow::bail!(
            "{} snapshot file(s) of {} did not read and were not copied: {}",
            unreadable.len(),
            source.backend().location(),
            unreadable.join(", ")
        );
    }
    Ok(0)
}

fn json_of(outcome: &Copied) -> serde_json::Value {
    match outcome {
        Copied::Now {
            source,
            copy,
            blobs,
            bytes,
            dropped,
        } => serde_json::json!({
            "source": source.to_hex(), "copy": copy.to_hex(), "status": "copied",
            "new_blobs": blobs, "new_bytes": bytes, "dropped": dropped,
        }),
        Copied::Already { source, copy } => serde_json::json!({
            "source": source.to_hex(), "copy": copy.to_hex(), "status": "already_copied",
        }),
    }
}
