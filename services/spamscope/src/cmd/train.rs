//! `spamscope train`: fit the message score model on labelled CSV files.

use std::path::PathBuf;

use anyhow::Result;
use spamscope_detect::score::{self, ScoreModel, TrainedOn};

use crate::exit::Exit;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Labelled CSV files (UCI YouTube Spam Collection: CONTENT, CLASS).
    #[arg(required = true, value_name = "CSV")]
    pub files: Vec<PathBuf>,
    /// Where to write the model (JSON).
    #[arg(long, short)]
    pub out: PathBuf,
}

/// One labelled CSV file: its path, bytes (for the content hash) and rows.
#[derive(Debug)]
pub struct LabelledFile {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub rows: Vec<(String, bool)>,
}

/// Reads labelled rows of every file, with what the model records of each.
pub fn read_labelled(files: &[PathBuf]) -> Result<Vec<LabelledFile>> {
    files
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p)
                .map_err(|e| Exit::data(format!("{}: cannot read: {e}", p.display())))?;
            let rows = score::read_labelled(&bytes)
                .map_err(|e| Exit::data(format!("{}: {e}", p.display())))?;
            if rows.is_empty() {
                return Err(Exit::data(format!("{}: no labelled rows", p.display())));
            }
            Ok(LabelledFile {
                path: p.clone(),
                bytes,
                rows,
            })
        })
        .collect()
}

pub fn run(args: Args) -> Result<()> {
    let data = read_labelled(&args.files)?;
    let mut rows = Vec::new();
    let mut trained_on = Vec::new();
    for LabelledFile {
        path,
        bytes,
        rows: r,
    } in &data
    {
        trained_on.push(TrainedOn {
            file: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            content_hash: score::content_hash(bytes),
            rows: r.len(),
        });
        rows.extend(r.iter().cloned());
    }
    let model = ScoreModel::train(&rows, trained_on);
    std::fs::write(&args.out, model.to_json() + "\n")
        .map_err(|e| Exit::usage(format!("{}: cannot write: {e}", args.out.display())))?;
    eprintln!(
        "trained on {} rows from {} files: {} weights, written to {}",
        rows.len(),
        data.len(),
        model.weights.len(),
        args.out.display()
    );
    Ok(())
}
