//! `spamscope`: the one command line of the project.
//!
//! Thin binary: parses flags, runs the subcommand, maps errors to exit codes
//! (64 bad usage or config, 65 bad input data, 1 anything else).

#![forbid(unsafe_code)]

mod cmd;
mod config;
mod exit;

/// mimalloc instead of glibc malloc: glibc's `malloc_consolidate`, walking
/// millions of freed small chunks under an arena lock, stalled a detector
/// process's threads for 30–130 ms at a time (BENCHMARKS.md, "Where the time
/// goes").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "spamscope",
    version,
    about = "Find and compress spam in live-stream chat"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Replay chat files through the detector (Twitch IRC, YouTube innertube,
    /// chat-downloader JSON), or count what they hold with --stats.
    Replay(cmd::replay::Args),
    /// Measure the detector on real data: labelled comments or moderated chat.
    Eval(cmd::eval::Args),
    /// Train the message score model on labelled CSV files.
    Train(cmd::train::Args),
    /// Ingest role: publish chat to NATS JetStream by shard.
    Ingest(spamscope_ingest::cli::IngestArgs),
    /// Router role: place shards on detector replicas.
    Router(spamscope_router::cli::RouterArgs),
    /// Detector replica role: detect spam on the shards this replica owns.
    Detector(spamscope_detector::cli::DetectorArgs),
    /// Gateway role: gRPC / gRPC-web API and web UI, with the history writer.
    Gateway(spamscope_gateway::cli::GatewayRoleArgs),
    /// History writer role alone (with a Scylla history store).
    HistoryWriter(spamscope_history_writer::cli::HistoryWriterArgs),
    /// Actor role: send the actions channel policies decided to Twitch and
    /// YouTube, and publish each answer.
    Actor(spamscope_actor::cli::ActorArgs),
    /// Every role in one process (starts nats-server when no --nats-url).
    Standalone(Box<cmd::standalone::StandaloneArgs>),
    /// Look at and resize a running cluster (`ctl status`, `ctl scale`).
    Ctl(cmd::ctl::CtlArgs),
}

fn main() {
    let command = Cli::command();
    let argv = match config::apply(&command, std::env::args_os().collect()) {
        Ok(argv) => argv,
        Err(e) => {
            eprintln!("spamscope: {e:#}");
            std::process::exit(exit::code_for(&e));
        }
    };
    let cli = match command
        .try_get_matches_from(argv)
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let result = match cli.command {
        Command::Replay(args) => cmd::replay::run(args),
        Command::Eval(args) => cmd::eval::run(args),
        Command::Train(args) => cmd::train::run(args),
        Command::Ingest(args) => spamscope_ingest::cli::run(args),
        Command::Router(args) => spamscope_router::cli::run(args),
        Command::Detector(args) => spamscope_detector::cli::run(args),
        Command::Gateway(args) => spamscope_gateway::cli::run(args),
        Command::HistoryWriter(args) => spamscope_history_writer::cli::run(args),
        Command::Actor(args) => spamscope_actor::cli::run(args),
        Command::Standalone(args) => cmd::standalone::run(*args),
        Command::Ctl(args) => cmd::ctl::run(args),
    };
    if let Err(e) = result {
        eprintln!("spamscope: {e:#}");
        std::process::exit(exit::code_for(&e));
    }
}
