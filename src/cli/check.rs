//! `cairn check [--read-data | --read-data-subset N/M|P%|SIZE]`: structure, and optionally
//! every byte of the selected packs. Exit code 1 when anything is wrong.

use crate::cli::{Globals, parse_size};
use anyhow::Result;
use cairn::ops::check::{CheckOptions, DataSubset, check};

/// Options of `check`.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  cairn check\n  cairn check --read-data-subset 10%\n  cairn check --read-data"
)]
pub struct Args {
    /// Also read every pack and verify every blob in it.
    #[arg(long)]
    read_data: bool,
    /// Read only part of the packs: `N/M` (part N of M), `P%` (random share) or a size.
    #[arg(long, value_name = "SUBSET", conflicts_with = "read_data", value_parser = parse_subset)]
    read_data_subset: Option<DataSubset>,
    /// Bytes of one pack held in memory at once while reading it.
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    window: u64,
}

/// Parses `--read-data-subset` while the arguments are read, so a bad one is a usage error.
fn parse_subset(text: &str) -> std::result::Result<DataSubset, String> {
    DataSubset::parse(text, parse_size)
}

/// Runs `check`.
pub fn run(globals: &Globals, args: Args) -> Result<u8> {
    let repo = globals.open()?;
    let read_data = match (&args.read_data_subset, args.read_data) {
        (Some(subset), _) => Some(subset.clone()),
        (None, true) => Some(DataSubset::All),
        (None, false) => None,
    };
    let opts = CheckOptions {
        read_data,
        window: usize::try_from(args.window).unwrap_or(usize::MAX),
    };
    let total: u64 = if opts.read_data.is_some() {
        repo.backend().list("data/")?.iter().map(|p| p.size).sum()
    } else {
        0
    };
    let report = globals.counting_bytes(
        Some(total),
        "{spinner} checking {bytes}/{total_bytes} {bytes_per_sec} {wide_bar} {eta}",
        |progress| check(&repo, &opts, progress),
    )?;
    let healthy = report.is_healthy();
    if globals.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for fault in &report.transient_faults {
            eprintln!("warning: transient read fault: {fault}");
        }
        for problem in &report.problems {
            println!("error: {problem}");
        }
        if !globals.quiet {
            if !report.unindexed_packs.is_empty() {
                println!(
                    "{} packs are in no index (left by an interrupted job; harmless: the next \
                     backup adopts them)",
                    report.unindexed_packs.len()
                );
            }
            if !report.orphan_parity.is_empty() {
                println!(
                    "{} parity objects have no pack (left by an interrupted job; harmless: the \
                     next prune removes them)",
                    report.orphan_parity.len()
                );
            }
            if !report.gone_unused_packs.is_empty() {
                println!(
                    "{} packs the index names are gone, but no snapshot uses their blobs (two \
                     prunes rewrote one index file at once; harmless; the next prune drops the \
                     entries)",
                    report.gone_unused_packs.len()
                );
            }
            if report.duplicate_entries > 0 {
                println!(
                    "{} duplicate index entries (harmless; `cairn repair index` removes them)",
                    report.duplicate_entries
                );
            }
            let read = if report.packs_read > 0 {
                format!(
                    ", read {} packs ({})",
                    report.packs_read,
                    indicatif::HumanBytes(report.bytes_read)
                )
            } else {
                String::new()
            };
            println!(
                "checked {} snapshots, {} trees, {} packs, {} blobs{read}: {}",
                report.snapshots,
                report.trees,
                report.packs,
                report.blobs,
                if healthy {
                    "no errors".to_string()
                } else {
                    format!("{} errors", report.problems.len())
                }
            );
        }
    }
    Ok(if healthy { 0 } else { 1 })
}
