//! `spamscope-bench core`: the detector loop alone over chat files, every
//! input parsed before the clock starts. It is spamscope's half of the
//! side-by-side race with the seed detector (`scripts/seed_race.py`), and
//! takes the seed harness's options: one stream per file set, or
//! `--copies N --passes P` (the input N times, each copy a new stream,
//! timed P times in one process).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use serde_json::json;
use spamscope_chat::replay;
use spamscope_detect::{Detector, ScoreModel};
use spamscope_ingest::files::read;
use spamscope_proto::v1::{ChatEvent, DetectorOutput, chat_event::Kind, detector_output};

#[derive(Debug, clap::Args)]
pub struct CoreArgs {
    /// Chat files (any format `spamscope replay` reads), merged by time.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// The input this many times, each copy under its own stream id.
    #[arg(long, default_value_t = 1,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    pub copies: usize,
    /// Timed passes over the whole workload (a new detector each pass).
    #[arg(long, default_value_t = 1,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000))]
    pub passes: usize,
}

/// What one pass produced, to show both tools did the work.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    decisions: u64,
    spam_event_updates: u64,
}

fn pass(model: &Arc<ScoreModel>, events: &[ChatEvent]) -> (f64, Tally) {
    let mut d = Detector::new(Arc::clone(model));
    let mut out: Vec<DetectorOutput> = Vec::with_capacity(64);
    let mut t = Tally::default();
    let started = Instant::now();
    for ev in events {
        out.clear();
        d.handle(ev, &mut out);
        for o in &out {
            match o.kind {
                Some(detector_output::Kind::Decision(_)) => t.decisions += 1,
                Some(detector_output::Kind::SpamEvent(_)) => t.spam_event_updates += 1,
                _ => {}
            }
        }
    }
    (started.elapsed().as_secs_f64(), t)
}

pub fn run(a: CoreArgs) -> Result<()> {
    let parse_started = Instant::now();
    let files = read(&a.files)?;
    // Every event, as the seed harness feeds it (no admission: the seed
    // has none, and the repeated inputs run years past today).
    let base = replay::merge(files);
    let records = base
        .iter()
        .filter(|e| !matches!(e.kind, Some(Kind::StreamEnded(_))))
        .count();
    let events: Vec<ChatEvent> = if a.copies == 1 {
        base
    } else {
        let mut all = Vec::with_capacity(base.len() * a.copies);
        for c in 0..a.copies {
            all.extend(base.iter().map(|ev| {
                let mut e = ev.clone();
                e.stream_id = format!("{}-c{c}", e.stream_id);
                e
            }));
        }
        all
    };
    let parse_s = parse_started.elapsed().as_secs_f64();
    let model = Arc::new(ScoreModel::bundled());
    let mut times = Vec::with_capacity(a.passes);
    let mut tally = Tally::default();
    for _ in 0..a.passes {
        let (s, t) = pass(&model, &events);
        times.push(s);
        tally = t;
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let per_pass = (records * a.copies) as f64;
    println!(
        "{}",
        json!({
            "tool": "spamscope",
            "files": a.files,
            "copies": a.copies,
            "passes": a.passes,
            "records_per_pass": records * a.copies,
            "events_per_pass": events.len(),
            "parse_s": round4(parse_s),
            "pass_s": times.iter().map(|&s| round4(s)).collect::<Vec<_>>(),
            "median_s": round4(median),
            "median_records_per_s": (per_pass / median).round(),
            "decisions": tally.decisions,
            "spam_event_updates": tally.spam_event_updates,
        })
    );
    Ok(())
}

fn round4(s: f64) -> f64 {
    (s * 1e4).round() / 1e4
}
