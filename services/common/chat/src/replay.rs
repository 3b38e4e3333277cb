//! Replay source: chat files → one event sequence in timestamp order.
//!
//! Each file's format is recognised from its content. Events of all files are
//! merged by timestamp (ties keep file order, so a deletion stays after the
//! message it follows in its file), and every stream ends with a
//! `StreamEnded` event right after its last event, as a live chat that
//! closes would. [`Pacer`] spaces events out in real time or N× real time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use spamscope_proto::v1::{ChatEvent, StreamEnded, chat_event::Kind};

use crate::format::{self, FormatError, Malformed, ParsedFile};
use crate::youtube::StreamContext;

/// One input file, parsed.
#[derive(Debug)]
pub struct ReplayFile {
    pub path: PathBuf,
    pub parsed: ParsedFile,
}

/// An input that cannot be replayed at all (unreadable, unknown format).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Format { path: PathBuf, source: FormatError },
}

/// The stream a YouTube file without ids belongs to: its file name up to the
/// first dot (`chilledcow-2020-11.chat-downloader.json` → `chilledcow-2020-11`;
/// standard input: `stdin`).
pub fn stream_context_for(path: &Path) -> StreamContext {
    if path.as_os_str() == STDIN {
        return StreamContext {
            video_id: "stdin".to_owned(),
            channel_id: String::new(),
        };
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("stream");
    let stem = name
        .split('.')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or(name);
    StreamContext {
        video_id: stem.to_owned(),
        channel_id: String::new(),
    }
}

/// Largest decompressed size of one compressed file: a bigger one is
/// refused rather than filling memory (a small file can inflate a
/// thousandfold).
pub const MAX_DECOMPRESSED_BYTES: u64 = 4 << 30;

/// The path that names standard input.
pub const STDIN: &str = "-";

/// How a file's bytes are compressed, from its first bytes (never its
/// name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn of(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// A file (`-`: standard input) opened for reading, decompressed as it is
/// read when it is gzip or zstd, with the compression found.
pub fn open(path: &Path) -> std::io::Result<(Box<dyn std::io::BufRead>, Compression)> {
    use std::io::BufRead as _;
    let input: Box<dyn std::io::Read> = if path.as_os_str() == STDIN {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(path)?)
    };
    let mut input = std::io::BufReader::with_capacity(1 << 16, input);
    let compression = Compression::of(input.fill_buf()?);
    let reader: Box<dyn std::io::BufRead> = match compression {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(std::io::BufReader::with_capacity(
            1 << 16,
            flate2::bufread::MultiGzDecoder::new(input),
        )),
        Compression::Zstd => Box::new(std::io::BufReader::with_capacity(
            1 << 16,
            zstd::stream::read::Decoder::with_buffer(input)?,
        )),
    };
    Ok((reader, compression))
}

/// Adds what was being done (`gzip: ...`) to an error met while reading.
fn reading_error(path: &Path, compression: Compression, e: std::io::Error) -> ReadError {
    let what = match compression {
        Compression::None => "read",
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
    };
    ReadError::Io {
        path: path.to_owned(),
        source: std::io::Error::new(e.kind(), format!("{what}: {e}")),
    }
}

/// The bytes of a file (`-`: standard input), decompressed when they are
/// gzip or zstd; refused past [`MAX_DECOMPRESSED_BYTES`].
pub fn read_bytes(path: &Path) -> Result<Vec<u8>, ReadError> {
    use std::io::Read as _;
    let (reader, compression) = open(path).map_err(|source| ReadError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut out = Vec::new();
    reader
        .take(MAX_DECOMPRESSED_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| reading_error(path, compression, e))?;
    if out.len() as u64 > MAX_DECOMPRESSED_BYTES {
        return Err(ReadError::Io {
            path: path.to_owned(),
            source: std::io::Error::other(format!(
                "more than {MAX_DECOMPRESSED_BYTES} bytes (decompressed); split the file"
            )),
        });
    }
    Ok(out)
}

/// Reads and parses one file (plain, gzip or zstd; `-`: standard input).
/// Line formats are parsed as they are read; JSON documents are read whole
/// (at most [`MAX_DECOMPRESSED_BYTES`]).
pub fn read_file(path: &Path) -> Result<ReplayFile, ReadError> {
    Ok(ReplayFile {
        path: path.to_owned(),
        parsed: read_into(path, None)?,
    })
}

/// [`read_file`]'s parse, each event handed to `sink` as it is parsed
/// when there is one ([`format::parse_reader_into`]).
pub fn read_into(path: &Path, sink: Option<format::EventSink>) -> Result<ParsedFile, ReadError> {
    let (reader, compression) = open(path).map_err(|source| ReadError::Io {
        path: path.to_owned(),
        source,
    })?;
    format::parse_reader_into(
        reader,
        &stream_context_for(path),
        MAX_DECOMPRESSED_BYTES,
        sink,
    )
    .map_err(|e| match e {
        format::ReadFailure::Io(e) => reading_error(path, compression, e),
        format::ReadFailure::Format(source) => ReadError::Format {
            path: path.to_owned(),
            source,
        },
    })
}

/// Reads every file; the first file that cannot be replayed is the error.
pub fn read_files<P: AsRef<Path>>(paths: &[P]) -> Result<Vec<ReplayFile>, ReadError> {
    paths.iter().map(|p| read_file(p.as_ref())).collect()
}

/// Malformed lines of all files, with the file they came from.
pub fn malformed(files: &[ReplayFile]) -> impl Iterator<Item = (&Path, &Malformed)> {
    files.iter().flat_map(|f| {
        f.parsed
            .malformed
            .iter()
            .map(move |m| (f.path.as_path(), m))
    })
}

/// Merges the files' events into timestamp order and appends a
/// `StreamEnded` after each stream's last event.
pub fn merge(files: Vec<ReplayFile>) -> Vec<ChatEvent> {
    let mut all: Vec<ChatEvent> = files.into_iter().flat_map(|f| f.parsed.events).collect();
    // Stable: equal timestamps keep their order within and across files.
    all.sort_by_key(|e| e.ts_ms);
    let mut last_index: HashMap<(i32, &str), usize> = HashMap::new();
    for (i, ev) in all.iter().enumerate() {
        last_index.insert((ev.platform, ev.stream_id.as_str()), i);
    }
    let mut ends_after: Vec<usize> = last_index.values().copied().collect();
    ends_after.sort_unstable();
    let ends: Vec<ChatEvent> = ends_after.iter().map(|&i| stream_ended(&all[i])).collect();
    let mut out = Vec::with_capacity(all.len() + ends.len());
    let mut ends = ends_after.into_iter().zip(ends).peekable();
    for (i, ev) in all.into_iter().enumerate() {
        out.push(ev);
        while let Some((_, end)) = ends.next_if(|(at, _)| *at == i) {
            out.push(end);
        }
    }
    out
}

/// The `StreamEnded` event that closes `last`'s stream at `last`'s time.
pub fn stream_ended(last: &ChatEvent) -> ChatEvent {
    ChatEvent {
        platform: last.platform,
        stream_id: last.stream_id.clone(),
        channel_id: last.channel_id.clone(),
        event_id: format!("end:{}", last.stream_key()),
        ts_ms: last.ts_ms,
        kind: Some(Kind::StreamEnded(StreamEnded {
            reason: "replay ended".into(),
        })),
    }
}

/// How fast a replay runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// As fast as the consumer takes events.
    Max,
    /// N× real time (1.0 = real time).
    Factor(f64),
}

impl std::str::FromStr for Speed {
    type Err = String;
    /// `0` or `max` → as fast as possible; `1` → real time; `10` → 10×.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(Speed::Max);
        }
        let f: f64 = s
            .trim_end_matches(['x', 'X'])
            .parse()
            .map_err(|_| format!("speed must be a number or \"max\", not {s:?}"))?;
        if !f.is_finite() || f < 0.0 {
            return Err(format!("speed must be finite and not negative, not {s}"));
        }
        Ok(if f == 0.0 {
            Speed::Max
        } else {
            Speed::Factor(f)
        })
    }
}

/// Spaces events out so that event time advances `speed`× as fast as wall
/// time. Pure: the caller passes `now` and sleeps for what it returns.
#[derive(Debug)]
pub struct Pacer {
    speed: Speed,
    origin: Option<(i64, Instant)>,
}

impl Pacer {
    pub fn new(speed: Speed) -> Self {
        Self {
            speed,
            origin: None,
        }
    }

    /// Whether events are spaced out at all (not [`Speed::Max`]): a caller
    /// can skip reading the clock when not.
    pub fn paced(&self) -> bool {
        self.speed != Speed::Max
    }

    /// How long to wait before emitting an event stamped `ts_ms`.
    pub fn delay(&mut self, ts_ms: i64, now: Instant) -> Duration {
        let Speed::Factor(f) = self.speed else {
            return Duration::ZERO;
        };
        let (ts0, t0) = *self.origin.get_or_insert((ts_ms, now));
        let event_elapsed_ms = (ts_ms - ts0).max(0) as f64 / f;
        let due = t0 + Duration::from_secs_f64(event_elapsed_ms / 1000.0);
        due.saturating_duration_since(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spamscope_proto::v1::{ChatMessage, Platform};

    fn msg(stream: &str, ts: i64, id: &str) -> ChatEvent {
        ChatEvent {
            platform: Platform::Twitch as i32,
            stream_id: stream.into(),
            event_id: id.into(),
            ts_ms: ts,
            kind: Some(Kind::Message(ChatMessage::default())),
            ..ChatEvent::default()
        }
    }

    fn file(events: Vec<ChatEvent>) -> ReplayFile {
        ReplayFile {
            path: PathBuf::from("x"),
            parsed: ParsedFile::with_events(events),
        }
    }

    #[test]
    fn merges_in_timestamp_order_and_ends_each_stream() {
        let out = merge(vec![
            file(vec![
                msg("a", 10, "a1"),
                msg("a", 5, "a0"),
                msg("a", 30, "a2"),
            ]),
            file(vec![msg("b", 7, "b0"), msg("b", 20, "b1")]),
        ]);
        let ids: Vec<&str> = out.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(
            ids,
            ["a0", "b0", "a1", "b1", "end:twitch.b", "a2", "end:twitch.a"]
        );
        assert!(out.windows(2).all(|w| w[0].ts_ms <= w[1].ts_ms));
    }

    #[test]
    fn speed_parsing() {
        assert_eq!("0".parse::<Speed>(), Ok(Speed::Max));
        assert_eq!("max".parse::<Speed>(), Ok(Speed::Max));
        assert_eq!("10x".parse::<Speed>(), Ok(Speed::Factor(10.0)));
        assert!("-1".parse::<Speed>().is_err());
        assert!("fast".parse::<Speed>().is_err());
    }

    #[test]
    fn pacer_scales_event_time() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Speed::Factor(10.0));
        assert_eq!(p.delay(1_000, t0), Duration::ZERO);
        assert_eq!(p.delay(11_000, t0), Duration::from_secs(1));
        assert_eq!(p.delay(11_000, t0 + Duration::from_secs(2)), Duration::ZERO);
        let mut max = Pacer::new(Speed::Max);
        assert_eq!(max.delay(1_000_000, t0), Duration::ZERO);
    }

    #[test]
    fn stream_context_from_file_name() {
        let c = stream_context_for(Path::new("/x/chilledcow-2020-11.chat-downloader.json"));
        assert_eq!(c.video_id, "chilledcow-2020-11");
    }
}
