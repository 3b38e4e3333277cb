//! Reading chat files for a replay, with malformed lines reported.

use std::path::PathBuf;

use anyhow::Result;
use spamscope_chat::replay::{self, ReplayFile};
use spamscope_chat::streaming::{Replay, ReplayOptions};
use spamscope_proto::v1::ChatEvent;
use spamscope_runtime::exit::Exit;

/// How many malformed lines are reported one by one on stderr.
const MALFORMED_REPORTED: usize = 5;

/// Reads and parses `paths` (exit 65 on a file that cannot be used).
pub fn read(paths: &[PathBuf]) -> Result<Vec<ReplayFile>> {
    replay::read_files(paths).map_err(|e| Exit::data(e.to_string()))
}

/// Opens `paths` for a streaming replay: read as they are consumed,
/// merged by time (exit 65 on a file that cannot be used).
pub fn open(paths: &[PathBuf]) -> Result<Replay> {
    Replay::open(paths, ReplayOptions::default()).map_err(|e| Exit::data(e.to_string()))
}

/// The next event of a streaming replay; a file that breaks while it is
/// read exits 65 (the events before it were replayed).
pub fn next_event(replay: &mut Replay) -> Result<Option<ChatEvent>> {
    replay
        .next()
        .transpose()
        .map_err(|e| Exit::data(e.to_string()))
}

/// Says on stderr how many events came later in their file than the
/// replay's look-ahead (replayed where they came, out of time order).
pub fn report_order(replay: &Replay) {
    let n = replay.out_of_order();
    if n > 0 {
        eprintln!(
            "{n} events came more than {} s after later events of their file: replayed \
             where they came, out of time order",
            replay.options().look_ahead_ms / 1000
        );
    }
}

/// Which events a detector accepts ([`spamscope_chat::admit`], with the
/// wall clock when it was made); the others are counted and the first few
/// named on stderr, as the detector service sends them to the dead-letter
/// subject. Replays and the cluster so see the same chat.
#[derive(Debug)]
pub struct Admission {
    wall: i64,
    max_ahead_ms: i64,
    refused: usize,
}

impl Default for Admission {
    fn default() -> Self {
        Admission::new(spamscope_chat::admit::DEFAULT_MAX_AHEAD_MS)
    }
}

impl Admission {
    /// Refusing events dated more than `max_ahead_ms` after the wall clock
    /// now.
    pub fn new(max_ahead_ms: i64) -> Self {
        Admission {
            wall: spamscope_runtime::now_ms(),
            max_ahead_ms,
            refused: 0,
        }
    }

    /// Whether `ev` is accepted (a refusal is counted, and named while few).
    pub fn admit(&mut self, ev: &ChatEvent) -> bool {
        match spamscope_chat::admit::admit(ev, self.wall, self.max_ahead_ms) {
            Ok(()) => true,
            Err(why) => {
                self.refused += 1;
                if self.refused <= MALFORMED_REPORTED {
                    eprintln!(
                        "event {} of {} refused: {why}",
                        ev.event_id,
                        ev.stream_key()
                    );
                }
                false
            }
        }
    }

    /// Says how many more were refused than were named.
    pub fn finish(&self) {
        if self.refused > MALFORMED_REPORTED {
            eprintln!(
                "... and {} more events refused (counted, skipped)",
                self.refused - MALFORMED_REPORTED
            );
        }
    }
}

/// The events a detector accepts, in order ([`Admission`]).
pub fn admitted(events: Vec<ChatEvent>) -> Vec<ChatEvent> {
    let mut a = Admission::default();
    let kept: Vec<ChatEvent> = events.into_iter().filter(|ev| a.admit(ev)).collect();
    a.finish();
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
