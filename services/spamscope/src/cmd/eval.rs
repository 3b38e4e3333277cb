//! `spamscope eval`: how well the detector does on real data.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use serde_json::{Value, json};
use spamscope_chat::replay;
use spamscope_detect::eval::{self, ClassificationReport};
use spamscope_detect::score::{ScoreModel, TrainedOn, content_hash};

use crate::cmd::params::ParamsArgs;
use crate::cmd::replay::{read, report_malformed};
use crate::cmd::train::{LabelledFile, read_labelled};
use crate::exit::Exit;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["labeled", "moderation"])))]
pub struct Args {
    /// Labelled CSV files (CONTENT, CLASS): precision, recall, F1, accuracy,
    /// PR-AUC of the message score. A file the model was trained on is
    /// scored by a model trained on the other files given (leave one out).
    #[arg(long, num_args = 1.., value_name = "CSV")]
    pub labeled: Vec<PathBuf>,
    /// Chat logs with moderator actions: flagged users against the users
    /// moderators acted on.
    #[arg(long, num_args = 1.., value_name = "FILE")]
    pub moderation: Vec<PathBuf>,
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

fn moderation(args: &Args, model: ScoreModel) -> Result<Value> {
    let files = read(&args.moderation)?;
    report_malformed(&files);
    let events = replay::merge(files);
    let mut layer = args.params.layer()?;
    if !args.with_moderation_triggers
        && let (Value::Object(l), Value::Object(p)) = (&mut layer, eval::predictive_params())
    {
        for (k, v) in p {
            l.entry(k).or_insert(v);
        }
    }
    let r = eval::moderation(&events, layer, Arc::new(model))
        .map_err(|e| Exit::usage(e.to_string()))?;
    if !args.json {
        println!(
            "moderated users {}  flagged {}  true positives {}",
            r.moderated_users, r.flagged_users, r.true_positives
        );
        println!(
            "precision {:.3}  recall {:.3}  F1 {:.3}  median lead time {}",
            r.precision,
            r.recall,
            r.f1,
            r.lead_time_median_s.map_or("-".to_owned(), |s| format!(
                "{s:.1} s (positive: flagged before the moderators acted)"
            ))
        );
        println!(
            "spam events {}  deletions of unknown messages {}",
            r.spam_events, r.unattributed_deletions
        );
        if !r.unacted_flags.is_empty() {
            println!("flagged, no moderator action:");
            for f in &r.unacted_flags {
                println!(
                    "  {:<28} {:<24} {}",
                    f.stream,
                    f.user,
                    f.triggers.join(", ")
                );
            }
        }
        if !r.missed.is_empty() {
            println!("moderated, not flagged: {}", r.missed.join(", "));
        }
    }
    let mut v = serde_json::to_value(&r)?;
    if let Value::Object(o) = &mut v
        && !args.labeled.is_empty()
    {
        // Both asked for: keep the labelled metrics at the top level and the
        // moderation report under its own key.
        let inner = Value::Object(std::mem::take(o));
        o.insert("moderation".into(), inner);
    }
    Ok(v)
}
