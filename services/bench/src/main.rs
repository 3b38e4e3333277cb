//! `spamscope-bench`: benchmarks of the running system, kept out of the
//! production `spamscope` binary. `make bench` runs both after the
//! criterion benches.

#![forbid(unsafe_code)]

mod common;
mod detector_loop;
mod history;
mod memory;
mod pipeline;

/// The same allocator as the `spamscope` binary, so the numbers are its.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "spamscope-bench",
    version,
    about = "Benchmarks of the running spamscope system"
)]
struct Cli {
    #[command(subcommand)]
    what: pipeline::BenchWhat,
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                spamscope_runtime::exit::USAGE
            } else {
                0
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    if let Err(e) = pipeline::run(cli.what) {
        eprintln!("spamscope-bench: {e:#}");
        std::process::exit(spamscope_runtime::exit::code_for(&e));
    }
}
