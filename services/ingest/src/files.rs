//! Reading chat files for a replay, with malformed lines reported.

use std::path::PathBuf;

use anyhow::Result;
use spamscope_chat::replay::{self, ReplayFile};
use spamscope_runtime::exit::Exit;

/// How many malformed lines are reported one by one on stderr.
const MALFORMED_REPORTED: usize = 5;

/// Reads and parses `paths` (exit 65 on a file that cannot be used).
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
