//! Reading chat files for a replay, with malformed lines reported.

use std::path::PathBuf;

use anyhow::Result;
use spamscope_chat::replay::{self, ReplayFile};
use spamscope_proto::v1::ChatEvent;
use spamscope_runtime::exit::Exit;

/// How many malformed lines are reported one by one on stderr.
const MALFORMED_REPORTED: usize = 5;

/// Reads and parses `paths` (exit 65 on a file that cannot be used).
pub fn read(paths: &[PathBuf]) -> Result<Vec<ReplayFile>> {
    replay::read_files(paths).map_err(|e| Exit::data(e.to_string()))
}

/// The events a detector accepts ([`spamscope_chat::admit`], with the
/// wall clock now), in order; the others are counted and the first few
/// named on stderr, as the detector service sends them to the dead-letter
/// subject. Replays and the cluster so see the same chat.
pub fn admitted(events: Vec<ChatEvent>) -> Vec<ChatEvent> {
    let wall = spamscope_runtime::now_ms();
    let mut refused = 0usize;
    let kept: Vec<ChatEvent> = events
        .into_iter()
        .filter(|ev| {
            match spamscope_chat::admit::admit(
                ev,
                wall,
                spamscope_chat::admit::DEFAULT_MAX_AHEAD_MS,
            ) {
                Ok(()) => true,
                Err(why) => {
                    refused += 1;
                    if refused <= MALFORMED_REPORTED {
                        eprintln!(
                            "event {} of {} refused: {why}",
                            ev.event_id,
                            ev.stream_key()
                        );
                    }
                    false
                }
            }
        })
        .collect();
    if refused > MALFORMED_REPORTED {
        eprintln!(
            "... and {} more events refused (counted, skipped)",
            refused - MALFORMED_REPORTED
        );
    }
    kept
}

/// Reports on stderr, per file, the skipped kinds the parser does not know
/// and its notes, then the first malformed lines with file and line number.
pub fn report_malformed(files: &[ReplayFile]) {
    // Kinds the parser does not know, each named once per file, and what
    // a reader should know about a file's times.
    for f in files {
        for kind in &f.parsed.unknown_kinds {
            let n = f.parsed.skipped_by_kind.get(kind).copied().unwrap_or(0);
            eprintln!(
                "{}: {n} items of kind {kind:?} skipped: a kind spamscope does not know \
                 (counted under skipped_by_kind)",
                f.path.display()
            );
        }
        for note in &f.parsed.notes {
            eprintln!("{}: {note}", f.path.display());
        }
    }
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
