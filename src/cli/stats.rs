//! `cairn stats`: what the repository holds, how well it dedupes and compresses, and how much of
//! it no snapshot uses any more (after `forget`).

use crate::cli::Globals;
use anyhow::Result;
use cairn::ops::check::Inventory;
use cairn::ops::usage::usage;
use cairn::repo::ids::BlobKind;
use indicatif::HumanBytes;

/// Options of `stats`.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  cairn stats --json")]
pub struct Args {}

/// Runs `stats`.
pub fn run(globals: &Globals, _args: Args) -> Result<u8> {
    let repo = globals.open()?;
    let inventory = Inventory::load(&repo)?;
    let index = &inventory.index;
    let snapshots = repo.snapshots()?;
    let usage = usage(&repo, &inventory, &snapshots)?;
    let packs = repo.backend().list("data/")?;
    let pack_bytes: u64 = packs.iter().map(|p| p.size).sum();
    let (mut data_blobs, mut tree_blobs, mut raw, mut sealed) = (0u64, 0u64, 0u64, 0u64);
    for at in index.iter() {
        match at.entry.kind {
            BlobKind::Data => data_blobs += 1,
            BlobKind::Tree => tree_blobs += 1,
        }
        raw += u64::from(at.entry.raw_len);
        sealed += at.entry.stored_share();
    }
    let logical: u64 = snapshots.iter().map(|(_, s)| s.summary.bytes).sum();
    if globals.json {
        println!(
            "{}",
            serde_json::json!({
                "snapshots": snapshots.len(), "packs": packs.len(), "pack_bytes": pack_bytes,
                "data_blobs": data_blobs, "tree_blobs": tree_blobs, "raw_bytes": raw, "sealed_bytes": sealed,
                "snapshot_bytes": logical, "usage": usage,
            })
        );
        return Ok(0);
    }
    println!("snapshots:        {}", snapshots.len());
    println!(
        "packs:            {} ({})",
        packs.len(),
        HumanBytes(pack_bytes)
    );
    println!("blobs:            {data_blobs} data, {tree_blobs} tree");
    println!(
        "unique content:   {} (stored as {})",
        HumanBytes(raw),
        HumanBytes(sealed)
    );
    println!("all snapshots:    {}", HumanBytes(logical));
    println!(
        "unused:           {} blobs, {} (no snapshot references them)",
        usage.unused_blobs,
        HumanBytes(usage.unused_bytes)
    );
    println!(
        "                  {} packs wholly unused ({}), {} packs partly ({} of them unused)",
        usage.unused_packs,
        HumanBytes(usage.unused_pack_bytes),
        usage.mixed_packs,
        HumanBytes(usage.mixed_unused_bytes)
    );
    println!(
        "prune would free: {} (copying {} of live data){}",
        HumanBytes(usage.prune_would_free),
        HumanBytes(usage.prune_would_repack),
        if usage.condemned_packs > 0 {
            format!(
                "; {} of it in {} packs already condemned, deleted once running backups finish",
                HumanBytes(usage.condemned_bytes),
                usage.condemned_packs
            )
        } else {
            String::new()
        }
    );
    if pack_bytes > 0 {
        println!(
            "space saving:     {:.1}x",
            logical as f64 / pack_bytes as f64
        );
    }
    Ok(0)
}
