//! The `strata` command.

use clap::Parser;

/// Keeps freed memory in the process. By default glibc serves every request
/// buffer and column above 128 KiB with a fresh mmap and returns it on free,
/// so each request faults (and zeroes) its memory in again: that was a third
/// of ingest CPU. Buffers up to 32 MiB now come from the heap and the heap is
/// trimmed only past 512 MiB of free space.
#[allow(unsafe_code)]
fn keep_freed_memory() {
    // SAFETY: mallopt only changes allocator tuning parameters; it is called
    // first thing in main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 * 1024 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 * 1024 * 1024);
    }
}

/// Prints a command's error on one line and exits with its code (see
/// `cli::client`: 1 refused or failed, 2 usage, 3 connection). Only the
/// message chain is printed, never a backtrace: these are the user's
/// errors, not the program's.
fn exit_with(error: &anyhow::Error) -> ! {
    let code = match error.downcast_ref::<strata::cli::client::CliError>() {
        Some(error) => {
            eprintln!("error: {error}");
            error.exit_code()
        }
        None => {
            eprintln!("error: {error:#}");
            strata::cli::client::EXIT_FAILURE
        }
    };
    std::process::exit(code)
}

fn main() {
    keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(error) = strata::cli::run(strata::cli::Cli::parse()) {
        exit_with(&error);
    }
}
