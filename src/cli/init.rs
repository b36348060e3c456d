//! `cairn init`: create a repository with one password, optionally with the chunker and
//! blob-id parameters of another (`--copy-params-from`), so that copies between them
//! de-duplicate.

use crate::cli::{Globals, parse_size};
use anyhow::Result;
use cairn::repo::Repository;
use cairn::repo::config::Params;
use cairn::repo::keys::KdfParams;
use std::time::Duration;

/// Options of `init`.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  cairn -r /srv/backup init\n  cairn -r s3:https://s3.example.com/bucket/cairn init --pack-size 32MiB\n  cairn -r /mnt/usb/backup init --copy-params-from /srv/backup"
)]
pub struct Args {
    /// argon2id memory in MiB (at most 1024: key files asking for more are refused when read).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=i64::from(cairn::repo::keys::MAX_KDF_MEMORY_MIB)))]
    kdf_memory: u32,
    /// Target time of one key derivation in milliseconds (the passes are calibrated to it).
    #[arg(long, default_value_t = 500)]
    kdf_time: u64,
    /// Target size of data packs.
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    pack_size: u64,
    /// zstd compression level (1-22).
    #[arg(long, default_value_t = cairn::repo::config::DEFAULT_COMPRESSION)]
    compression: i32,
    /// Smallest chunk; files below it are one blob.
    #[arg(long, default_value = "512KiB", value_parser = parse_size, conflicts_with = "copy_params_from")]
    chunk_min: u64,
    /// Average chunk.
    #[arg(long, default_value = "1MiB", value_parser = parse_size, conflicts_with = "copy_params_from")]
    chunk_avg: u64,
    /// Largest chunk.
    #[arg(long, default_value = "8MiB", value_parser = parse_size, conflicts_with = "copy_params_from")]
    chunk_max: u64,
    /// Take the chunker and blob-id parameters of this repository (its chunk sizes, chunker
    /// seed and id key; not its password or encryption key), so that copies between the two
    /// de-duplicate. Its password: --from-password-file, else CAIRN_FROM_PASSWORD, else a prompt.
    #[arg(long, value_name = "REPO")]
    copy_params_from: Option<std::ffi::OsString>,
    /// The password of the --copy-params-from repository, from this file.
    #[arg(long, env = "CAIRN_FROM_PASSWORD_FILE", value_name = "FILE")]
    from_password_file: Option<std::path::PathBuf>,
    /// Retries of a transient store error (with exponential backoff) before it counts.
    #[arg(long, default_value_t = cairn::repo::config::DEFAULT_RETRIES)]
    retries: u32,
    /// Store a parity object beside every pack, so damaged sectors heal without the original
    /// files (about 2.7 % more space): `on` or `off`.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    parity: String,
    /// Compress solid groups of small files with dictionaries trained on the repository's own
    /// small files: `on` or `off`. Off by default: in groups, small files have their
    /// neighbours' window, and on source trees groups are as small at the repository's level
    /// alone as one level lower with a dictionary, for less CPU (older builds of cairn refuse
    /// a repository with dictionaries).
    #[arg(long, default_value = "off", value_parser = ["on", "off"])]
    dictionaries: String,
    /// Compress small files together in solid groups (each still proven by its own id): `on`
    /// or `off`. Off makes a repository that builds of cairn older than groups can read,
    /// where every blob is compressed alone (larger and slower on source trees).
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    groups: String,
}

fn to_u32(value: u64, what: &str) -> Result<u32> {
    u32::try_from(value).map_err(|_| anyhow::anyhow!("{what} {value} is too large"))
}

/// Runs `init`.
pub fn run(globals: &Globals, args: Args) -> Result<u8> {
    let backend = globals.backend()?;
    let params = Params {
        pack_size: to_u32(args.pack_size, "pack size")?,
        compression: args.compression,
        chunk_min: to_u32(args.chunk_min, "chunk size")?,
        chunk_avg: to_u32(args.chunk_avg, "chunk size")?,
        chunk_max: to_u32(args.chunk_max, "chunk size")?,
        retries: Some(args.retries),
        parity: Some(args.parity == "on"),
        dictionaries: Some(args.dictionaries == "on"),
        groups: Some(args.groups == "on"),
        ..Params::default()
    };
    params.validate().map_err(anyhow::Error::msg)?;
    let password = globals.password(true)?;
    let kdf = KdfParams::calibrate(args.kdf_memory, Duration::from_millis(args.kdf_time))?;
    let location = backend.location();
    let repo = match &args.copy_params_from {
        None => Repository::init(backend, &password, kdf, params)?,
        Some(from) => {
            let source =
                crate::cli::open_source(globals, from, args.from_password_file.as_deref())?;
            Repository::init_like(backend, &password, kdf, params, &source)?
        }
    };
    if globals.json {
        println!(
            "{}",
            serde_json::json!({ "id": repo.config().id, "repository": location })
        );
    } else if !globals.quiet {
        println!(
            "created repository {} at {location}",
            &repo.config().id[..8]
        );
    }
    Ok(0)
}
