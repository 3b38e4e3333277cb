//! `spamscope eval`: how well the detector does on real data.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use serde_json::{Value, json};
use spamscope_chat::replay;
use spamscope_detect::eval::{self, ClassificationReport};
use spamscope_detect::score::{ScoreModel, TrainedOn, content_hash};

use crate::cmd::train::{LabelledFile, read_labelled};
use crate::exit::Exit;
use spamscope_detector::cli::ParamsArgs;
use spamscope_ingest::files::{admitted, read, report_malformed};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["labeled", "moderation", "policy"])))]
pub struct Args {
    /// Labelled CSV files (CONTENT, CLASS): precision, recall, F1, accuracy,
    /// PR-AUC of the message score. A file the model was trained on is
    /// scored by a model trained on the other files given (leave one out).
    #[arg(long, num_args = 1.., value_name = "CSV")]
    pub labeled: Vec<PathBuf>,
    /// Chat logs with moderator actions (plain or gzip): flagged users
    /// against the users moderators acted on. Each file is replayed on its
    /// own (a recording).
    #[arg(long, num_args = 1.., value_name = "FILE")]
    pub moderation: Vec<PathBuf>,
    /// Backtest a policy file (TOML, see the README's "Acting on spam"):
    /// what it would have done over the chat logs given (LOGS, or
    /// --moderation), every channel in dry-run, compared with what the
    /// moderators did.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Chat logs to backtest --policy on (plain or gzip).
    #[arg(value_name = "LOGS", requires = "policy")]
    pub logs: Vec<PathBuf>,
    /// Labels of the moderated users (normvio-dev's `labels.json`: channel,
    /// user, label, action_ms, file): recall for spam-like categories and
    /// for the rest apart.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// Also measure at these sensitivities (comma-separated, e.g.
    /// `0.5,1,2`): flags per 1,000 chatters against recall (with
    /// --moderation), or the policy's agreement with the moderators and
    /// the share of moderated users it covers, and which sensitivity
    /// matched them best (with --policy).
    #[arg(long, value_name = "S,S,...", value_delimiter = ',')]
    pub curve: Vec<f64>,
    /// Keep the triggers fed by moderator actions on (by default they are
    /// off, so the detector is scored on what it finds by itself).
    #[arg(long)]
    pub with_moderation_triggers: bool,
    /// Score model file (default: the bundled model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Score threshold for a message to count as spam.
    #[arg(long, default_value_t = 0.5)]
    pub threshold: f64,
    /// One JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub params: ParamsArgs,
}

pub fn run(args: Args) -> Result<()> {
    let model = match &args.model {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| Exit::usage(format!("--model {}: {e}", p.display())))?;
            ScoreModel::from_json(&text)
                .map_err(|e| Exit::usage(format!("--model {}: {e}", p.display())))?
        }
        None => ScoreModel::bundled(),
    };
    if args.labels.is_some() && args.moderation.is_empty() && args.policy.is_none() {
        return Err(Exit::usage("--labels needs --moderation or --policy"));
    }
    if !args.curve.is_empty() && args.moderation.is_empty() && args.policy.is_none() {
        return Err(Exit::usage("--curve needs --moderation or --policy"));
    }
    if let Some(s) = args.curve.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(Exit::usage(format!(
            "--curve: {s} is not a sensitivity (a number above 0)"
        )));
    }
    if let Some(policy) = &args.policy {
        return backtest(&args, policy, model);
    }
    let mut report = serde_json::Map::new();
    if !args.labeled.is_empty() {
        report = labelled(&args, &model)?;
    }
    if !args.moderation.is_empty() {
        let m = moderation(&args, model)?;
        if let Value::Object(o) = m {
            report.extend(o);
        }
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &Value::Object(report))?;
        writeln!(out)?;
    }
    Ok(())
}

fn labelled(args: &Args, model: &ScoreModel) -> Result<serde_json::Map<String, Value>> {
    let data = read_labelled(&args.labeled)?;
    let mut pooled: Vec<(f64, bool)> = Vec::new();
    let mut per_file = Vec::new();
    for (i, LabelledFile { path, bytes, rows }) in data.iter().enumerate() {
        let (scorer, how) = if model.was_trained_on(bytes) {
            // Never evaluate on training data: train on the other files.
            let others: Vec<&LabelledFile> = data
                .iter()
                .enumerate()
                .filter(|(j, d)| *j != i && content_hash(&d.bytes) != content_hash(bytes))
                .map(|(_, d)| d)
                .collect();
            if others.is_empty() {
                return Err(Exit::usage(format!(
                    "{}: the model was trained on this file; give other labelled files to \
                     cross-validate against, or a --model not trained on it",
                    path.display()
                )));
            }
            let train_rows: Vec<(String, bool)> =
                others.iter().flat_map(|d| d.rows.iter().cloned()).collect();
            let names: Vec<TrainedOn> = others
                .iter()
                .map(|d| TrainedOn {
                    file: d.path.display().to_string(),
                    content_hash: content_hash(&d.bytes),
                    rows: d.rows.len(),
                })
                .collect();
            (
                ScoreModel::train(&train_rows, names),
                "cross-validated (model trained on the other files)",
            )
        } else {
            (model.clone(), "model")
        };
        let scored: Vec<(f64, bool)> = rows
            .iter()
            .map(|(t, y)| (f64::from(scorer.content_probability(t)), *y))
            .collect();
        let r = eval::classification(&scored, args.threshold);
        if !args.json {
            print_classification(&path.display().to_string(), how, &r);
        }
        per_file.push(json!({"file": path.display().to_string(), "scored_by": how, "report": r}));
        pooled.extend(scored);
    }
    let all = eval::classification(&pooled, args.threshold);
    if !args.json {
        print_classification("all files", "pooled", &all);
    }
    let mut m = serde_json::Map::new();
    m.insert("precision".into(), json!(all.precision));
    m.insert("recall".into(), json!(all.recall));
    m.insert("f1".into(), json!(all.f1));
    m.insert("accuracy".into(), json!(all.accuracy));
    m.insert("pr_auc".into(), json!(all.pr_auc));
    m.insert("rows".into(), json!(all.rows));
    m.insert("files".into(), Value::Array(per_file));
    Ok(m)
}

fn print_classification(name: &str, how: &str, r: &ClassificationReport) {
    println!(
        "{name:<48} rows {:>5}  precision {:.3}  recall {:.3}  F1 {:.3}  accuracy {:.3}  PR-AUC {:.3}  ({how})",
        r.rows, r.precision, r.recall, r.f1, r.accuracy, r.pr_auc
    );
}

fn read_labels(args: &Args) -> Result<Option<Vec<eval::Label>>> {
    Ok(match &args.labels {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| Exit::data(format!("--labels {}: cannot read: {e}", p.display())))?;
            Some(
                eval::parse_labels(&text)
                    .map_err(|e| Exit::data(format!("--labels {}: {e}", p.display())))?,
            )
        }
        None => None,
    })
}

/// The params layer of the command line, with the triggers fed by
/// moderator actions off unless asked for.
fn eval_params(args: &Args) -> Result<Value> {
    let mut layer = args.params.layer()?;
    if !args.with_moderation_triggers
        && let (Value::Object(l), Value::Object(p)) = (&mut layer, eval::predictive_params())
    {
        for (k, v) in p {
            l.entry(k).or_insert(v);
        }
    }
    Ok(layer)
}

/// A recording's events (merged, admitted) and its name.
fn recording(path: &std::path::Path) -> Result<(String, Vec<spamscope_proto::v1::ChatEvent>)> {
    let files = read(std::slice::from_ref(&path.to_path_buf()))?;
    report_malformed(&files);
    let events = admitted(replay::merge(files));
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    Ok((name, events))
}

fn moderation(args: &Args, model: ScoreModel) -> Result<Value> {
    let labels = read_labels(args)?;
    let layer = eval_params(args)?;
    let model = Arc::new(model);
    // The default point first, then the curve's.
    let mut points: Vec<Option<f64>> = vec![None];
    points.extend(args.curve.iter().map(|s| Some(*s)));
    let mut runs: Vec<Vec<eval::RecordingRun>> = vec![Vec::new(); points.len()];
    for path in &args.moderation {
        let (name, events) = recording(path)?;
        for (i, point) in points.iter().enumerate() {
            let mut l = layer.clone();
            if let (Some(s), Value::Object(o)) = (point, &mut l) {
                o.insert("sensitivity".into(), json!(s));
            }
            let mut run = eval::run_recording(&name, &events, l, Arc::clone(&model))
                .map_err(|e| Exit::usage(e.to_string()))?;
            if let Some(labels) = &labels {
                eval::apply_labels(&mut run.truth, labels, &name);
            }
            runs[i].push(run);
        }
    }
    let labelled = labels.is_some();
    let r = eval::score(&runs[0], labelled);
    let curve: Vec<Value> = points
        .iter()
        .zip(&runs)
        .skip(1)
        .map(|(s, rs)| {
            let c = eval::score(rs, labelled);
            json!({
                "sensitivity": s,
                "flags_per_1000_chatters": c.flags_per_1000_chatters,
                "flagged_users": c.flagged_users,
                "precision": c.precision,
                "recall": c.recall,
                "spam_like_recall": c.spam_like.recall,
                "spam_like_lead_time_median_s": c.spam_like.lead_time_median_s,
                "other_recall": c.other.as_ref().map(|o| o.recall),
            })
        })
        .collect();
    if !args.json {
        print_moderation(&r, labelled, &curve);
    }
    let mut v = serde_json::to_value(&r)?;
    if let Value::Object(o) = &mut v {
        if !curve.is_empty() {
            o.insert("curve".into(), Value::Array(curve));
        }
        if !args.labeled.is_empty() {
            // Both asked for: keep the labelled metrics at the top level and
            // the moderation report under its own key.
            let inner = Value::Object(std::mem::take(o));
            o.insert("moderation".into(), inner);
        }
    }
    Ok(v)
}

/// Flagged users no moderator acted on, listed one by one up to this many.
const UNACTED_LISTED: usize = 40;

fn lead(s: Option<f64>) -> String {
    s.map_or("-".to_owned(), |s| format!("{s:.1} s"))
}

fn print_moderation(r: &eval::ModerationReport, labelled: bool, curve: &[Value]) {
    println!(
        "recordings {}  chatters {}  moderated users {}  flagged {} ({:.1} per 1,000 chatters)  true positives {}",
        r.recordings,
        r.chatters,
        r.moderated_users,
        r.flagged_users,
        r.flags_per_1000_chatters,
        r.true_positives
    );
    println!(
        "precision {:.3}  recall {:.3}  F1 {:.3}  median lead time {} (positive: flagged before the moderators acted)",
        r.precision,
        r.recall,
        r.f1,
        lead(r.lead_time_median_s)
    );
    if labelled {
        println!(
            "spam-like categories: recall {:.3} ({} of {})  median lead {}",
            r.spam_like.recall,
            r.spam_like.caught,
            r.spam_like.moderated_users,
            lead(r.spam_like.lead_time_median_s)
        );
        if let Some(o) = &r.other {
            println!(
                "other categories:     recall {:.3} ({} of {})  median lead {}",
                o.recall,
                o.caught,
                o.moderated_users,
                lead(o.lead_time_median_s)
            );
        }
    }
    let events: Vec<String> = r
        .spam_events
        .iter()
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    println!(
        "spam events: {}  deletions of unknown messages {}",
        if events.is_empty() {
            "none".to_owned()
        } else {
            events.join(", ")
        },
        r.unattributed_deletions
    );
    let by: Vec<String> = r
        .by_trigger
        .iter()
        .map(|(t, (n, tp))| format!("{t} {n} ({tp} moderated)"))
        .collect();
    println!("flags by strongest evidence: {}", by.join(", "));
    if !curve.is_empty() {
        println!("sensitivity  flags/1000  precision  recall  spam-like recall  spam-like lead");
        for c in curve {
            println!(
                "{:>11}  {:>10.1}  {:>9.3}  {:>6.3}  {:>16.3}  {:>14}",
                c["sensitivity"],
                c["flags_per_1000_chatters"].as_f64().unwrap_or(0.0),
                c["precision"].as_f64().unwrap_or(0.0),
                c["recall"].as_f64().unwrap_or(0.0),
                c["spam_like_recall"].as_f64().unwrap_or(0.0),
                lead(c["spam_like_lead_time_median_s"].as_f64())
            );
        }
    }
    if !r.unacted_flags.is_empty() {
        println!("flagged, no moderator action ({}):", r.unacted_flags.len());
        for f in r.unacted_flags.iter().take(UNACTED_LISTED) {
            println!(
                "  {:<28} {:<24} {}",
                f.stream,
                f.user,
                f.triggers.join(", ")
            );
        }
        if r.unacted_flags.len() > UNACTED_LISTED {
            println!(
                "  ... and {} more (--json lists them all)",
                r.unacted_flags.len() - UNACTED_LISTED
            );
        }
    }
    if !r.missed.is_empty() {
        let shown: Vec<&str> = r.missed.iter().take(60).map(String::as_str).collect();
        println!(
            "moderated, not flagged ({}): {}{}",
            r.missed.len(),
            shown.join(", "),
            if r.missed.len() > shown.len() {
                ", ..."
            } else {
                ""
            }
        );
    }
}

fn backtest(args: &Args, policy_file: &std::path::Path, model: ScoreModel) -> Result<()> {
    let policies = spamscope_detector::cli::policy_file(policy_file, false)?;
    let logs: Vec<&PathBuf> = args.logs.iter().chain(&args.moderation).collect();
    if logs.is_empty() {
        return Err(Exit::usage(
            "--policy needs chat logs to run over (LOGS...)",
        ));
    }
    let labels = read_labels(args)?;
    let layer = eval_params(args)?;
    let mut recordings = Vec::new();
    for path in logs {
        let (name, events) = recording(path)?;
        let mut truth = spamscope_act::backtest::truth_of(&events);
        if let Some(l) = &labels {
            eval::apply_labels(&mut truth, l, &name);
        }
        recordings.push((name, events, truth));
    }
    let model = Arc::new(model);
    let r = spamscope_act::backtest::run(&recordings, &policies, layer.clone(), Arc::clone(&model))
        .map_err(|e| Exit::usage(e.to_string()))?;
    // The same policy at other sensitivities: which matched the
    // moderators best (F1 of agreement and coverage, every suggestion
    // accepted).
    let curve = spamscope_act::backtest::curve(&recordings, &policies, &layer, &model, &args.curve)
        .map_err(|e| Exit::usage(e.to_string()))?;
    let best = spamscope_act::backtest::best(&curve);
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &spamscope_act::backtest::report_json(&r, &curve))?;
        writeln!(out)?;
        return Ok(());
    }
    print_backtest(&mut out, &r)?;
    if !curve.is_empty() {
        writeln!(
            out,
            "sensitivity  users/1000  agreement  moderated covered     F1  (every suggestion accepted)"
        )?;
        for c in &curve {
            writeln!(
                out,
                "{:>11}  {:>10.1}  {:>9.3}  {:>17.3}  {:>5.3}{}",
                c.sensitivity,
                c.users_per_1000_chatters,
                c.agreement,
                c.moderated_covered,
                c.f1,
                if Some(c.sensitivity) == best {
                    "  <- matched the moderators best"
                } else {
                    ""
                }
            )?;
        }
    }
    Ok(())
}

fn print_backtest(
    out: &mut impl Write,
    r: &spamscope_act::backtest::BacktestReport,
) -> std::io::Result<()> {
    writeln!(
        out,
        "recordings {}  chatters {}  moderated users {}  (every channel in dry-run)",
        r.recordings, r.chatters, r.moderated_users
    )?;
    for (name, s) in [
        ("on its own (auto rules)", &r.auto),
        ("if every suggestion were accepted", &r.if_accepted),
    ] {
        writeln!(
            out,
            "{name}: {} actions on {} users ({:.1} per 1,000 chatters); {} of them moderated too (agreement {:.3}); {:.3} of the moderated users covered",
            s.actions,
            s.users,
            s.users_per_1000_chatters,
            s.users_moderated,
            s.agreement,
            s.moderated_covered
        )?;
    }
    let nukes: Vec<String> = r
        .nukes_suggested
        .iter()
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    writeln!(
        out,
        "suggested: nukes {}; flagged users {}; protected users spared {}; left to the moderators (they had acted already) {}",
        if nukes.is_empty() {
            "none".to_owned()
        } else {
            nukes.join(", ")
        },
        r.users_suggested,
        r.protected_users,
        r.left_to_moderators
    )?;
    writeln!(
        out,
        "rule                      mode     users  moderated  agreement  median lead  actions"
    )?;
    for (rule, x) in &r.rules {
        let acts: Vec<String> = x.actions.iter().map(|(k, n)| format!("{k} {n}")).collect();
        writeln!(
            out,
            "{rule:<25} {:<8} {:>5}  {:>9}  {:>9.3}  {:>11}  {}",
            x.mode,
            x.users,
            x.users_moderated,
            x.agreement,
            lead(x.lead_time_median_s),
            acts.join(", ")
        )?;
    }
    if !r.examples.is_empty() {
        writeln!(out, "first actions:")?;
        for e in &r.examples {
            let what = match e.action.kind {
                spamscope_act::ActionKind::Timeout { seconds } => format!("timeout {seconds}s"),
                k => k.name().to_owned(),
            };
            writeln!(
                out,
                "  {:<22} {:<20} {:<12} {:<9} {}",
                e.stream,
                e.action.target.user_login,
                what,
                e.status.name(),
                e.evidence
            )?;
        }
    }
    Ok(())
}
