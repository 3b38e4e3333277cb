//! `spamscope replay`: run the detector over chat files, or count what they
//! hold (`--stats`).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use spamscope_chat::replay::{self, Pacer, Speed};
use spamscope_chat::stats::{Stats, StatsBuilder};
use spamscope_detect::{Detector, ScoreModel, json};
use spamscope_proto::v1::{DetectorOutput, detector_output::Kind};

use crate::exit::Exit;
use spamscope_detector::cli::ParamsArgs;
use spamscope_ingest::files::{admitted, read, report_malformed};

/// Replays shorter than this get no progress bar.
const PROGRESS_MIN_EVENTS: usize = 20_000;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Chat files; the format of each is recognised from its content.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Only count events per kind, users, malformed lines and the time span.
    #[arg(long)]
    pub stats: bool,
    /// One JSON object per line (with --stats: exactly one object).
    #[arg(long)]
    pub json: bool,
    /// Also print the spam score of every message (kind "message_score").
    #[arg(long)]
    pub scores: bool,
    /// Replay speed: 0 or "max" as fast as possible, 1 real time, N for N×.
    #[arg(long, default_value = "max")]
    pub speed: Speed,
    #[command(flatten)]
    pub params: ParamsArgs,
}

pub fn run(args: Args) -> Result<()> {
    let files = read(&args.files)?;
    report_malformed(&files);
    let mut counts = StatsBuilder::default();
    for f in &files {
        counts.add_malformed(f.parsed.malformed.len() as u64);
        for (kind, n) in &f.parsed.skipped_by_kind {
            counts.add_skipped_kind(kind, *n);
        }
    }
    let events = replay::merge(files);
    if args.stats {
        // Counted as they are in the files, refused events included.
        return print_stats_of(&events, counts, args.json);
    }
    let events = admitted(events);
    let layer = args.params.layer()?;
    let mut detector = Detector::new(Arc::new(ScoreModel::bundled())).with_scores(args.scores);
    let mut out: Vec<DetectorOutput> = Vec::new();
    detector
        .set_default_params(layer, &mut out)
        .map_err(|e| Exit::usage(e.to_string()))?;

    let progress = if events.len() >= PROGRESS_MIN_EVENTS {
        let pb = ProgressBar::new(events.len() as u64);
        pb.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} events {per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        pb
    } else {
        ProgressBar::hidden()
    };
    let mut summary = Summary::default();
    let mut pacer = Pacer::new(args.speed);
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    let started = Instant::now();
    for ev in &events {
        let wait = pacer.delay(ev.ts_ms, Instant::now());
        if !wait.is_zero() {
            w.flush()?;
            std::thread::sleep(wait);
        }
        out.clear();
        detector.handle(ev, &mut out);
        summary.messages += u64::from(matches!(
            ev.kind,
            Some(spamscope_proto::v1::chat_event::Kind::Message(_))
        ));
        for o in &out {
            summary.note(o);
            if args.json {
                serde_json::to_writer(&mut w, &json::to_json(o))?;
                writeln!(w)?;
            } else if !matches!(o.kind, Some(Kind::MessageScore(_))) {
                progress.suspend(|| print_row(&mut w, o))?;
            }
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    let elapsed = started.elapsed();
    if !args.json {
        summary.print(&mut w, &detector, events.len(), elapsed)?;
    }
    w.flush()?;
    Ok(())
}

fn print_stats_of(
    events: &[spamscope_proto::v1::ChatEvent],
    mut b: StatsBuilder,
    as_json: bool,
) -> Result<()> {
    for ev in events {
        b.add(ev);
    }
    let stats = b.finish();
    let mut out = std::io::stdout().lock();
    if as_json {
        serde_json::to_writer(&mut out, &stats)?;
        writeln!(out)?;
    } else {
        print_stats(&mut out, &stats)?;
    }
    Ok(())
}

/// `HH:MM:SS` (UTC) of a millisecond timestamp.
fn clock(ms: i64) -> String {
    let s = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

/// A number as a person reads it: whole above 10, two decimals below.
fn number(v: f64) -> String {
    if v.abs() >= 10.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Visible text cut to `n` chars, for the table.
fn truncate(s: &str, n: usize) -> String {
    let s = spamscope_chat::normalize::strip_invisible(s);
    let mut t: String = s.chars().take(n).collect();
    if s.chars().count() > n {
        t.push('…');
    }
    t.replace(['\n', '\r'], " ")
}

pub fn print_row(w: &mut impl Write, o: &DetectorOutput) -> std::io::Result<()> {
    match &o.kind {
        Some(Kind::SpamEvent(e)) => writeln!(
            w,
            "{}  {}  {:<24} #{:<4} {:<6} {:<14} count {:>5}  users {:>4}  \"{}\"",
            clock(e.last_seen_ms),
            if e.spam { "SPAM EVENT" } else { "CROWD     " },
            truncate(&e.stream_id, 24),
            e.event_id,
            json::state_name(e.state),
            spamscope_detect::classes::class_name(e.class()),
            e.count,
            e.unique_users,
            truncate(&e.text, 60)
        ),
        Some(Kind::Decision(d)) => {
            let evidence: Vec<String> = d
                .triggers
                .iter()
                .map(|t| {
                    let mut s = format!(
                        "{} {} (threshold {}",
                        t.name,
                        number(t.observed),
                        number(t.threshold)
                    );
                    if t.norm > 0.0 {
                        s.push_str(&format!(", chat now {}", number(t.norm)));
                    }
                    s.push_str(&format!(") +{:.2}", t.contribution));
                    if !t.detail.is_empty() {
                        s.push_str(&format!(" [{}]", truncate(&t.detail, 40)));
                    }
                    s
                })
                .collect();
            let who = if d.user_login.is_empty() {
                &d.user_id
            } else {
                &d.user_login
            };
            writeln!(
                w,
                "{}  FLAGGED     {:<24} {:<20} suspicion {:.2}/{:.2}: {}",
                clock(d.at_ms),
                truncate(&d.stream_id, 24),
                truncate(who, 20),
                d.suspicion,
                d.flag_threshold,
                evidence.join(", ")
            )
        }
        _ => Ok(()),
    }
}

#[derive(Debug, Default)]
struct Summary {
    messages: u64,
    decisions: u64,
    /// Final state of each spam event, by (stream, event id).
    events: std::collections::BTreeMap<(String, u64), spamscope_proto::v1::SpamEvent>,
    triggers: std::collections::BTreeMap<String, u64>,
}

impl Summary {
    fn note(&mut self, o: &DetectorOutput) {
        match &o.kind {
            Some(Kind::SpamEvent(e)) => {
                self.events
                    .insert((e.stream_id.clone(), e.event_id), e.clone());
            }
            Some(Kind::Decision(d)) => {
                self.decisions += 1;
                for t in &d.triggers {
                    *self.triggers.entry(t.name.clone()).or_default() += 1;
                }
            }
            _ => {}
        }
    }

    fn print(
        &self,
        w: &mut impl Write,
        d: &Detector,
        events: usize,
        elapsed: std::time::Duration,
    ) -> std::io::Result<()> {
        let spam_messages: u64 = self
            .events
            .values()
            .filter(|e| e.spam)
            .map(|e| e.count)
            .sum();
        let spam_events = self.events.values().filter(|e| e.spam).count();
        let mut by_class: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
        for e in self.events.values() {
            let c = by_class
                .entry(spamscope_detect::classes::class_name(e.class()))
                .or_default();
            c.0 += 1;
            c.1 += e.count;
        }
        writeln!(w)?;
        writeln!(w, "summary")?;
        writeln!(
            w,
            "  events replayed        {events} in {:.2} s",
            elapsed.as_secs_f64()
        )?;
        writeln!(w, "  chat messages          {}", self.messages)?;
        writeln!(
            w,
            "  spam events            {spam_events} ({spam_messages} messages compressed into them)"
        )?;
        for (class, (n, msgs)) in &by_class {
            writeln!(w, "    {class:<22} {n} events, {msgs} messages")?;
        }
        writeln!(w, "  users flagged          {}", self.decisions)?;
        for (t, n) in &self.triggers {
            writeln!(w, "    {t:<22} {n}")?;
        }
        for (stream, c) in d.ended_streams() {
            if c.unknown_deletions > 0 {
                writeln!(
                    w,
                    "  {stream}: {} deletions of messages sent before the log starts (author unknown)",
                    c.unknown_deletions
                )?;
            }
        }
        let mut top: Vec<&spamscope_proto::v1::SpamEvent> = self.events.values().collect();
        top.sort_by(|a, b| b.count.cmp(&a.count).then(a.event_id.cmp(&b.event_id)));
        writeln!(w, "  largest spam events")?;
        for e in top.iter().filter(|e| e.spam).take(10) {
            writeln!(
                w,
                "    {:<22} {:>5} msgs {:>4} users  {:<10} {}  \"{}\"",
                truncate(&e.stream_id, 22),
                e.count,
                e.unique_users,
                spamscope_detect::classes::class_name(e.class()),
                e.fingerprint,
                truncate(&e.text, 50)
            )?;
        }
        Ok(())
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
        ("retractions", s.retractions.to_string()),
        ("timeouts", s.timeouts.to_string()),
        ("bans", s.bans.to_string()),
        ("removals", s.removals.to_string()),
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
    for (kind, n) in &s.skipped_by_kind {
        writeln!(out, "  skipped {kind:<28} {n}")?;
    }
    for (stream, n) in &s.messages_by_stream {
        writeln!(out, "  {stream:<30}{n} messages")?;
    }
    Ok(())
}
