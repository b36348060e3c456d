//! `cairn scrub`: every pack checked against its name and its parity and healed in place, with
//! no password. Exit code 1 when a damaged pack is beyond its parity.

use crate::cli::Globals;
use anyhow::Result;
use cairn::ops::scrub::scrub;

/// Options of `scrub`.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  cairn -r /srv/backup scrub\n  cairn -r /srv/backup --json scrub"
)]
pub struct Args {}

/// Runs `scrub`.
pub fn run(globals: &Globals, _args: Args) -> Result<u8> {
    let backend = globals.backend()?;
    let total: u64 = backend.list("data/")?.iter().map(|p| p.size).sum();
    let report = globals.counting_bytes(
        Some(total),
        "{spinner} scrubbing {bytes}/{total_bytes} {bytes_per_sec} {wide_bar} {eta}",
        |progress| scrub(backend.as_ref(), progress),
    )?;
    if globals.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for pack in &report.healed {
            println!("pack {pack}: healed from its parity");
        }
        for pack in &report.parity_rewritten {
            println!("pack {pack}: parity missing or damaged, written anew");
        }
        for (pack, why) in &report.beyond_repair {
            println!("pack {pack}: {why} (`cairn repair packs` salvages what it holds)");
        }
        for dictionary in &report.dictionaries_mended {
            println!("{dictionary}: one copy damaged, rewritten from the other");
        }
        for (dictionary, why) in &report.dictionaries_lost {
            println!("{dictionary}: {why} (`cairn check --read-data` names the files it affects)");
        }
        println!(
            "scrubbed {} packs ({} bytes): {} healed ({} sectors), {} parity rewritten, {} beyond repair",
            report.packs,
            report.bytes,
            report.healed.len(),
            report.sectors_healed,
            report.parity_rewritten.len(),
            report.beyond_repair.len()
        );
    }
    Ok(u8::from(
        !report.beyond_repair.is_empty() || !report.dictionaries_lost.is_empty(),
    ))
}
