//! The `strata` command.

use clap::Parser;

/// Tunes glibc's allocator. By default it serves every request buffer and
/// column above 128 KiB with a fresh mmap and returns it on free, so each
/// request faults (and zeroes) its memory in again: that was a third of
/// ingest CPU. Buffers up to 32 MiB now come from the heap and the heap is
/// trimmed only past 512 MiB of free space. And each thread that allocates
/// under contention gets an arena of its own (up to 8 per core), each
/// keeping what its threads freed: on 2 cores, ingesting 4 M rows peaked
/// at 500 MB with 2 arenas and 330 MB with 1, at the same throughput and
/// CPU within noise, so there is one per 8 cores. A setting given in glibc's
/// environment variables (`MALLOC_ARENA_MAX`, `MALLOC_TRIM_THRESHOLD_`,
/// `MALLOC_MMAP_THRESHOLD_`) is left as given.
#[allow(unsafe_code)]
fn tune_allocator() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let settings = [
        ("MALLOC_MMAP_THRESHOLD_", libc::M_MMAP_THRESHOLD, 32 * 1024 * 1024),
        ("MALLOC_TRIM_THRESHOLD_", libc::M_TRIM_THRESHOLD, 512 * 1024 * 1024),
        ("MALLOC_ARENA_MAX", libc::M_ARENA_MAX, cores.div_ceil(8) as i32),
    ];
    for (variable, parameter, value) in settings {
        if std::env::var_os(variable).is_none() {
            // SAFETY: mallopt only changes allocator tuning parameters; it is
            // called first thing in main, before any other thread exists.
            unsafe {
                libc::mallopt(parameter, value);
            }
        }
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
    tune_allocator();
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
