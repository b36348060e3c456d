//! `cairn key list|add|remove|passwd`: the passwords that open the repository.

use crate::cli::{Globals, prompt_password};
use anyhow::{Result, bail};
use cairn::repo::keys::KdfParams;
use std::time::Duration;

/// Options of `key`.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  cairn key list\n  CAIRN_NEW_PASSWORD=... cairn key add\n  cairn key passwd"
)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// List key files.
    List,
    /// Add a password (read from CAIRN_NEW_PASSWORD, --new-password-file, or a prompt).
    Add(NewKey),
    /// Remove a key file by id prefix (not the one in use).
    Remove {
        /// Key id prefix.
        id: String,
    },
    /// Change the password in use: add a new key, then remove the one used to open.
    Passwd(NewKey),
}

#[derive(clap::Args)]
struct NewKey {
    /// Read the new password from this file.
    #[arg(long)]
    new_password_file: Option<std::path::PathBuf>,
    /// argon2id memory in MiB.
    #[arg(long, default_value_t = 64)]
    kdf_memory: u32,
    /// Target key derivation time in milliseconds.
    #[arg(long, default_value_t = 500)]
    kdf_time: u64,
}

fn new_password(args: &NewKey) -> Result<Vec<u8>> {
    if let Some(file) = &args.new_password_file {
        let text = std::fs::read(file)?;
        return Ok(text
            .split(|&b| b == b'\n')
            .next()
            .unwrap_or_default()
            .to_vec());
    }
    if let Some(pw) = std::env::var_os("CAIRN_NEW_PASSWORD") {
        return Ok(std::os::unix::ffi::OsStrExt::as_bytes(pw.as_os_str()).to_vec());
    }
    prompt_password("new password: ", true)
}

/// Runs `key`.
pub fn run(globals: &Globals, args: Args) -> Result<u8> {
    let repo = globals.open()?;
    match args.action {
        Action::List => {
            let keys = repo.keys()?;
            if globals.json {
                let list: Vec<_> = keys
                    .iter()
                    .map(|(id, k)| serde_json::json!({
                        "id": id.to_hex(), "current": *id == repo.key_id(), "created": k.created,
                        "hostname": k.hostname, "username": k.username,
                    }))
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                println!(" {:<8}  {:<12}  {:<12}  created", "id", "user", "host");
                for (id, k) in keys {
                    let mark = if id == repo.key_id() { '*' } else { ' ' };
                    println!(
                        "{mark}{:<8}  {:<12}  {:<12}  {}",
                        id.short(),
                        k.username,
                        k.hostname,
                        k.created
                    );
                }
            }
        }
        Action::Add(new) => {
            let kdf = KdfParams::calibrate(new.kdf_memory, Duration::from_millis(new.kdf_time))?;
            let id = repo.add_key(&new_password(&new)?, kdf)?;
            println!("added key {}", id.short());
        }
        Action::Remove { id } => {
            let matches: Vec<_> = repo
                .keys()?
                .into_iter()
                .filter(|(k, _)| k.to_hex().starts_with(&id))
                .collect();
            match matches.as_slice() {
                [(key, _)] => {
                    repo.remove_key(*key)?;
                    println!("removed key {}", key.short());
                }
                [] => bail!("no key matches {id:?}"),
                _ => bail!("{} keys match {id:?}: give more digits", matches.len()),
            }
        }
        Action::Passwd(new) => {
            let kdf = KdfParams::calibrate(new.kdf_memory, Duration::from_millis(new.kdf_time))?;
            let added = repo.add_key(&new_password(&new)?, kdf)?;
            let old = repo.key_id();
            repo.backend().delete(&format!("keys/{old}"))?;
            println!(
                "password changed: key {} replaces {}",
                added.short(),
                old.short()
            );
        }
    }
    Ok(0)
}
