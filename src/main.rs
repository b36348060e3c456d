//! The `cairn` command: parses arguments, runs one command, prints its one-line error if any,
//! and exits with restic's codes (0 ok, 1 error, 2 usage, 3 partial backup, 10 no repository,
//! 12 wrong password).

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("cairn: {}", cli::one_line(&error));
            ExitCode::from(cli::exit_code(&error))
        }
    }
}
