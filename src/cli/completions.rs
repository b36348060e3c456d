//! `cairn completions SHELL`: the shell's completion script for every command and option,
//! generated from the same definitions the parser uses (clap_complete), so it never drifts.

use anyhow::Result;
use clap::CommandFactory;

/// Options of `completions`.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  cairn completions bash > /etc/bash_completion.d/cairn\n  \
cairn completions zsh > \"${fpath[1]}/_cairn\"\n  \
cairn completions fish > ~/.config/fish/completions/cairn.fish"
)]
pub struct Args {
    /// The shell to complete in.
    shell: clap_complete::Shell,
}

/// Runs `completions`.
pub fn run(args: Args) -> Result<u8> {
    let mut command = super::Cli::command();
    // Generated into memory: written to a closed pipe, clap_complete would panic.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "cairn", &mut script);
    std::io::Write::write_all(&mut std::io::stdout(), &script)
        .map_err(|e| cairn::Error::io("stdout", e))?;
    Ok(0)
}
