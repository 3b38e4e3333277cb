//! `spamscope replay`: read chat files and report on them.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use spamscope_chat::replay::{self, ReplayFile};
use spamscope_chat::stats::{Stats, StatsBuilder};

use crate::exit::Exit;

/// How many malformed lines are reported one by one on stderr.
const MALFORMED_REPORTED: usize = 5;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Chat files; the format of each is recognised from its content.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Print counts per event kind, users, malformed lines and the time span.
    #[arg(long)]
    pub stats: bool,
    /// Machine-readable output (one JSON object).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let files = read(&args.files)?;
    report_malformed(&files);
    let (malformed, skipped) = files.iter().fold((0, 0), |(m, s), f| {
        (m + f.parsed.malformed.len() as u64, s + f.parsed.skipped)
    });
    let events = replay::merge(files);
    if !args.stats {
        return Err(Exit::usage(
            "replay without --stats needs the detector, which is not built yet",
        ));
    }
    let mut b = StatsBuilder::default();
    for ev in &events {
        b.add(ev);
    }
    b.add_malformed(malformed);
    b.add_skipped(skipped);
    let stats = b.finish();
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &stats)?;
        writeln!(out)?;
    } else {
        print_stats(&mut out, &stats)?;
    }
    Ok(())
}

/// Reads every file; an unreadable or unrecognised one is a data error.
pub fn read(paths: &[PathBuf]) -> Result<Vec<ReplayFile>> {
    replay::read_files(paths).map_err(|e| Exit::data(e.to_string()))
}

/// Reports the first malformed lines with file and line number on stderr.
pub fn report_malformed(files: &[ReplayFile]) {
    let all: Vec<_> = replay::malformed(files).collect();
    for (path, m) in all.iter().take(MALFORMED_REPORTED) {
        eprintln!("{}:{}: malformed: {}", path.display(), m.line, m.reason);
    }
    if all.len() > MALFORMED_REPORTED {
        eprintln!(
            "... and {} more malformed lines (counted, skipped)",
            all.len() - MALFORMED_REPORTED
        );
    }
}

fn print_stats(out: &mut impl Write, s: &Stats) -> std::io::Result<()> {
    let span = match (s.first_ts_ms, s.last_ts_ms) {
        (Some(a), Some(b)) => format!("{} .. {} ({:.1} min)", a, b, (b - a) as f64 / 60_000.0),
        _ => "-".into(),
    };
    let rows = [
        ("events", s.events.to_string()),
        ("messages", s.messages.to_string()),
        ("deletions", s.deletions.to_string()),
        ("timeouts", s.timeouts.to_string()),
        ("bans", s.bans.to_string()),
        ("chat clears", s.chat_clears.to_string()),
        ("room states", s.room_states.to_string()),
        ("supports", s.supports.to_string()),
        ("notices", s.notices.to_string()),
        ("users", s.users.to_string()),
        ("streams", s.streams.to_string()),
        ("malformed", s.malformed.to_string()),
        ("skipped", s.skipped.to_string()),
        ("time span (ms)", span),
    ];
    for (k, v) in rows {
        writeln!(out, "{k:<16}{v}")?;
    }
    for (stream, n) in &s.messages_by_stream {
        writeln!(out, "  {stream:<30}{n} messages")?;
    }
    Ok(())
}
