//! The `cairn` command: parses arguments, runs one command, prints its one-line error if any,
//! and exits with restic's codes (0 ok, 1 error, 2 usage, 3 partial backup, 10 no repository,
//! 12 wrong password).

mod cli;

use std::process::ExitCode;

/// Large buffers (chunks, packs) are allocated and freed by many threads. glibc would otherwise
/// raise its mmap threshold after the first frees and keep freed chunk buffers in per-thread
/// arenas, so resident memory would grow past the configured cache bounds.
fn bound_allocator_retention() {
    // Above the common 1 MiB chunk, so chunk buffers are reused from the heap rather than
    // mapped and zero-filled afresh each time; larger ones are returned to the system at once.
    const MMAP_THRESHOLD: libc::c_int = 4 << 20;
    const ARENAS: libc::c_int = 4;
    // SAFETY: mallopt only adjusts allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}

fn main() -> ExitCode {
    bound_allocator_retention();
    match cli::run() {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("cairn: {}", cli::one_line(&error));
            ExitCode::from(cli::exit_code(&error))
        }
    }
}
