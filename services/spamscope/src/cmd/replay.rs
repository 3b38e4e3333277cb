//! `spamscope replay`: run the detector over chat files, or count what they
//! hold (`--stats`).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use spamscope_chat::replay::{Pacer, Speed};
use spamscope_chat::stats::{Stats, StatsBuilder};
use spamscope_detect::{Detector, ScoreModel, json};
use spamscope_proto::v1::{DetectorOutput, detector_output::Kind};

use crate::exit::Exit;
use spamscope_detector::cli::ParamsArgs;
use spamscope_ingest::files::{Admission, next_event, open, report_malformed, report_order};

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
    /// Also run a policy file (TOML, see the README's "Acting on spam") and
    /// print what it suggests and would do, every channel in dry-run:
    /// nothing is sent to a platform (kinds "record", "nuke_suggested" and
    /// "moderator" with --json).
    #[arg(long, value_name = "FILE", conflicts_with = "stats")]
    pub policy: Option<PathBuf>,
    /// Replay speed: 0 or "max" as fast as possible, 1 real time, N for N×.
    #[arg(long, default_value = "max")]
    pub speed: Speed,
    /// Events dated more than this many seconds after the wall clock are
    /// refused (counted, the first named on stderr), as a detector replica
    /// refuses them; an archive dated past today (a synthetic one) needs
    /// more.
    #[arg(long, default_value_t = DEFAULT_MAX_AHEAD_S,
          value_parser = clap::value_parser!(u64).range(60..))]
    pub max_ahead_s: u64,
    #[command(flatten)]
    pub params: ParamsArgs,
}

const DEFAULT_MAX_AHEAD_S: u64 = spamscope_chat::admit::DEFAULT_MAX_AHEAD_MS.unsigned_abs() / 1000;

/// The files are read as they are replayed (`spamscope_chat::streaming`):
/// memory does not grow with their size. What was malformed or skipped in
/// them is reported at the end.
pub fn run(args: Args) -> Result<()> {
    let layer = if args.stats {
        serde_json::Value::Null
    } else {
        args.params.layer()?
    };
    let mut source = open(&args.files)?;
    if args.stats {
        // Counted as they are in the files, refused events included.
        let mut counts = StatsBuilder::default();
        while let Some(ev) = next_event(&mut source)? {
            counts.add(&ev);
        }
        report_malformed(source.files());
        report_order(&source);
        for f in source.files() {
            counts.add_malformed(f.parsed.malformed.len() as u64);
            for (kind, n) in &f.parsed.skipped_by_kind {
                counts.add_skipped_kind(kind, *n);
            }
        }
        return print_stats_of(counts, args.json);
    }
    let mut engine = match &args.policy {
        Some(p) => Some(spamscope_act::Engine::new(
            spamscope_detector::cli::policy_file(p, false)?,
        )),
        None => None,
    };
    let mut acts: Vec<spamscope_act::Output> = Vec::new();
    let mut detector = Detector::new(Arc::new(ScoreModel::bundled())).with_scores(args.scores);
    let mut out: Vec<DetectorOutput> = Vec::new();
    detector
        .set_default_params(layer, &mut out)
        .map_err(|e| Exit::usage(e.to_string()))?;

    // On a terminal only (indicatif draws nothing otherwise).
    let progress = ProgressBar::new_spinner();
    progress.set_style(
        ProgressStyle::with_template("{spinner} {pos} events {per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let max_ahead_ms = i64::try_from(args.max_ahead_s.saturating_mul(1000)).unwrap_or(i64::MAX);
    let mut admission = Admission::new(max_ahead_ms);
    let mut replayed = 0usize;
    let mut summary = Summary::default();
    let mut pacer = Pacer::new(args.speed);
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    let started = Instant::now();
    while let Some(ev) = next_event(&mut source)? {
        if !admission.admit(&ev) {
            continue;
        }
        replayed += 1;
        let wait = if pacer.paced() {
            pacer.delay(ev.ts_ms, Instant::now())
        } else {
            std::time::Duration::ZERO
        };
        if !wait.is_zero() {
            w.flush()?;
            std::thread::sleep(wait);
        }
        out.clear();
        detector.handle(&ev, &mut out);
        if let Some(engine) = engine.as_mut() {
            acts.clear();
            engine.on_chat(&ev, &mut acts);
            for o in &out {
                engine.on_detector(o, &mut acts);
            }
        }
        summary.messages += u64::from(matches!(
            ev.kind,
            Some(spamscope_proto::v1::chat_event::Kind::Message(_))
        ));
        for o in &out {
            if args.json {
                json::write_json(&mut w, o)?;
                writeln!(w)?;
            } else {
                // The table's summary (not kept for JSON lines).
                summary.note(o);
                if !matches!(o.kind, Some(Kind::MessageScore(_))) {
                    progress.suspend(|| print_row(&mut w, o))?;
                }
            }
        }
        for a in &acts {
            if args.json {
                serde_json::to_writer(&mut w, a)?;
                writeln!(w)?;
            } else {
                summary.note_act(a);
                progress.suspend(|| print_act(&mut w, a))?;
            }
        }
        acts.clear();
        progress.inc(1);
    }
    progress.finish_and_clear();
    let elapsed = started.elapsed();
    w.flush()?;
    report_malformed(source.files());
    report_order(&source);
    admission.finish();
    if !args.json {
        if let Some(e) = &engine {
            summary.left_to_moderators = e.counts().left_to_moderators;
        }
        summary.print(&mut w, &detector, replayed, elapsed)?;
    }
    w.flush()?;
    Ok(())
}

fn print_stats_of(b: StatsBuilder, as_json: bool) -> Result<()> {
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

/// What the summary prints of a spam event.
#[derive(Debug)]
struct EventLine {
    spam: bool,
    class: &'static str,
    count: u64,
    unique_users: u64,
    fingerprint: String,
    text: String,
}

/// A row for what a policy suggests or would do.
fn print_act(w: &mut impl Write, a: &spamscope_act::Output) -> std::io::Result<()> {
    use spamscope_act::{ActionKind, Output};
    match a {
        Output::Record(r) => {
            let what = match r.action.kind {
                ActionKind::Timeout { seconds } => format!("timeout {seconds}s"),
                k => k.name().to_owned(),
            };
            writeln!(
                w,
                "{}  ACTION      {:<24} {:<20} {:<12} {:<9} {} [{}]",
                clock(r.at_ms),
                truncate(&r.stream, 24),
                truncate(&r.action.target.user_login, 20),
                what,
                r.status.name(),
                truncate(&r.evidence, 80),
                r.by
            )
        }
        Output::NukeSuggested(n) => writeln!(
            w,
            "{}  SUGGEST     {:<24} nuke {} #{} ({} users) [{}]",
            clock(n.at_ms),
            truncate(&n.stream, 24),
            n.class,
            n.event_id,
            n.users,
            n.by
        ),
        Output::CommandResult(c) => writeln!(
            w,
            "{}  COMMAND     {:<24} {} {}",
            clock(c.at_ms),
            truncate(&c.stream, 24),
            c.command_id,
            if c.error.is_empty() { "done" } else { &c.error }
        ),
        Output::Moderator(_) => Ok(()),
    }
}

#[derive(Debug, Default)]
struct Summary {
    messages: u64,
    decisions: u64,
    /// With a policy: actions by status, nukes suggested, moderators'
    /// own actions.
    actions: std::collections::BTreeMap<&'static str, u64>,
    acted_users: std::collections::BTreeSet<(String, String)>,
    nukes_suggested: u64,
    moderator_actions: u64,
    left_to_moderators: u64,
    policy: bool,
    /// Final state of each spam event, by (stream, event id): what the
    /// summary prints of it, not the whole event (a long replay has many).
    events: std::collections::BTreeMap<(String, u64), EventLine>,
    triggers: std::collections::BTreeMap<String, u64>,
}

impl Summary {
    fn note_act(&mut self, a: &spamscope_act::Output) {
        use spamscope_act::Output;
        self.policy = true;
        match a {
            Output::Record(r) => {
                *self.actions.entry(r.status.name()).or_default() += 1;
                if matches!(r.status, spamscope_act::Status::DryRun) {
                    self.acted_users
                        .insert((r.stream.clone(), r.action.target.user_login.clone()));
                }
            }
            Output::NukeSuggested(_) => self.nukes_suggested += 1,
            Output::Moderator(_) => self.moderator_actions += 1,
            Output::CommandResult(_) => {}
        }
    }

    fn note(&mut self, o: &DetectorOutput) {
        match &o.kind {
            Some(Kind::SpamEvent(e)) => {
                let line = EventLine {
                    spam: e.spam,
                    class: spamscope_detect::classes::class_name(e.class()),
                    count: e.count,
                    unique_users: e.unique_users,
                    fingerprint: e.fingerprint.clone(),
                    text: truncate(&e.text, 50),
                };
                match self.events.get_mut(&(e.stream_id.clone(), e.event_id)) {
                    Some(l) => *l = line,
                    None => {
                        self.events.insert((e.stream_id.clone(), e.event_id), line);
                    }
                }
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
            let c = by_class.entry(e.class).or_default();
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
        if self.policy {
            let by: Vec<String> = self
                .actions
                .iter()
                .map(|(s, n)| format!("{s} {n}"))
                .collect();
            writeln!(
                w,
                "  policy (dry-run)       actions: {}; users it would act on {}; nukes suggested {}; moderators' own actions {}; left to the moderators (already held) {}",
                if by.is_empty() {
                    "none".to_owned()
                } else {
                    by.join(", ")
                },
                self.acted_users.len(),
                self.nukes_suggested,
                self.moderator_actions,
                self.left_to_moderators
            )?;
        }
        let mut top: Vec<(&(String, u64), &EventLine)> = self.events.iter().collect();
        top.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.1.cmp(&b.0.1)));
        writeln!(w, "  largest spam events")?;
        for ((stream, _), e) in top.iter().filter(|e| e.1.spam).take(10) {
            writeln!(
                w,
                "    {:<22} {:>5} msgs {:>4} users  {:<10} {}  \"{}\"",
                truncate(stream, 22),
                e.count,
                e.unique_users,
                e.class,
                e.fingerprint,
                e.text
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
