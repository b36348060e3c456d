//! `cairn repair index | packs [--from PATH...] | parity | snapshots [--forget]`.

use crate::cli::Globals;
use anyhow::Result;
use cairn::ops::repair::{repair_index, repair_packs, repair_snapshots};
use cairn::ops::repair_parity::repair_parity;
use std::path::PathBuf;

/// The progress bar of a repair that reads every pack.
const READING_PACKS: &str = "{spinner} reading packs {bytes} {bytes_per_sec}";

/// Options of `repair`.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  cairn repair index\n  cairn repair packs --from /mnt/old-disk/backup\n  cairn repair snapshots --forget"
)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Rebuild the index from the pack headers (also when every index file is lost).
    Index,
    /// Heal damaged packs from their parity; salvage good blobs out of the others, re-create
    /// lost ones from source files, and remove those packs.
    Packs {
        /// Files or directories holding the original data, to re-create lost blobs from.
        #[arg(long = "from", value_name = "PATH")]
        from: Vec<PathBuf>,
    },
    /// Give every pack a sound parity object (an older repository's packs, or lost or damaged
    /// parity), without touching packs or the index.
    Parity,
    /// Write new snapshots (tagged `repaired`) without the files whose data is lost.
    Snapshots {
        /// Remove the original snapshots once the repaired ones are written.
        #[arg(long)]
        forget: bool,
    },
}

/// Runs `repair`.
pub fn run(globals: &Globals, args: Args) -> Result<u8> {
    let repo = globals.open()?;
    match args.what {
        What::Index => {
            let report = repair_index(&repo)?;
            if globals.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for (pack, reason) in &report.unreadable_packs {
                    println!("pack {pack} left unindexed: {reason}");
                }
                println!(
                    "indexed {} blobs in {} packs ({} index files written, {} removed)",
                    report.blobs_indexed,
                    report.packs_indexed,
                    report.files_written,
                    report.files_removed
                );
            }
            Ok(u8::from(!report.unreadable_packs.is_empty()))
        }
        What::Packs { from } => {
            let report = globals.counting_bytes(None, READING_PACKS, |progress| {
                repair_packs(&repo, &from, progress)
            })?;
            if globals.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for blob in &report.still_missing {
                    println!("still missing: blob {blob}");
                }
                for pack in &report.healed_packs {
                    println!("pack {pack}: healed from its parity");
                }
                println!(
                    "{} damaged packs: {} blobs salvaged, {} re-created from sources, {} still \
                     missing; {} packs removed",
                    report.damaged_packs.len(),
                    report.salvaged,
                    report.recreated,
                    report.still_missing.len(),
                    report.removed_packs
                );
                if !report.still_missing.is_empty() {
                    println!(
                        "run `cairn repair snapshots` to keep the rest of the affected snapshots"
                    );
                }
            }
            Ok(u8::from(!report.still_missing.is_empty()))
        }
        What::Parity => {
            let report = globals.counting_bytes(None, READING_PACKS, |progress| {
                repair_parity(&repo, progress)
            })?;
            if globals.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for pack in &report.damaged {
                    println!("pack {pack}: damaged, no parity made (`cairn repair packs` first)");
                }
                for (pack, why) in &report.failed {
                    println!("pack {pack}: {why}");
                }
                println!(
                    "{} packs: {} given parity, {} damaged, {} failed",
                    report.packs,
                    report.written.len(),
                    report.damaged.len(),
                    report.failed.len()
                );
            }
            Ok(u8::from(
                !report.damaged.is_empty() || !report.failed.is_empty(),
            ))
        }
        What::Snapshots { forget } => {
            let report = repair_snapshots(&repo, forget)?;
            if globals.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for fixed in &report.repaired {
                    println!(
                        "snapshot {} -> {} without {} paths:",
                        fixed.original.short(),
                        fixed.repaired.short(),
                        fixed.removed.len()
                    );
                    for path in &fixed.removed {
                        println!("  {path}");
                    }
                }
                for lost in &report.lost {
                    println!(
                        "snapshot {} has lost its root tree; nothing to keep",
                        lost.short()
                    );
                }
                println!(
                    "{} snapshots repaired, {} lost, {} originals removed",
                    report.repaired.len(),
                    report.lost.len(),
                    report.forgotten
                );
            }
            Ok(u8::from(!report.lost.is_empty()))
        }
    }
}
