//! Recognising a chat file's format from its content (never its name) and
//! parsing all of it.
//!
//! Recognised: raw Twitch IRC lines; the recent-messages JSON wrapper
//! `{"messages": ["<irc line>", ...]}`; chat-downloader JSON of every
//! version (an array, or one object per line); yt-dlp's `live_chat.json`
//! (one `replayChatItemAction` per line) and innertube actions (an array,
//! one action, or a whole `get_live_chat` / `get_live_chat_replay`
//! response); a bare innertube renderer object; Twitch VOD chat JSON
//! (TwitchDownloader's `{streamer, video, comments}` and v5 comment
//! objects).
//!
//! Nothing is dropped silently: lines and items that do not parse are
//! [`Malformed`] with their number (a JSON document that breaks says the
//! byte where), items that carry no chat event are counted by kind, and
//! kinds this parser does not know are listed apart so readers name them.
//! A file with no items, or with items but no chat event among them, is an
//! error that says what it held.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use spamscope_proto::v1::ChatEvent;

use crate::twitch_vod::{self, VodContext};
use crate::youtube::StreamContext;
use crate::{ParseError, chat_downloader, irc, twitch, youtube};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    IrcLines,
    RecentMessages,
    ChatDownloader,
    InnertubeActions,
    InnertubeRenderer,
    TwitchVod,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::IrcLines => "twitch-irc",
            Format::RecentMessages => "recent-messages-json",
            Format::ChatDownloader => "chat-downloader-json",
            Format::InnertubeActions => "youtube-innertube",
            Format::InnertubeRenderer => "youtube-innertube-renderer",
            Format::TwitchVod => "twitch-vod-json",
        }
    }
}

/// A line or item that did not parse; `line` is 1-based (a line number for
/// line formats, an item number for JSON arrays).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    pub line: usize,
    pub reason: String,
}

/// Where a file's events go as they are parsed, when they are not held in
/// [`ParsedFile::events`] ([`parse_reader_into`]).
pub type EventSink = Box<dyn FnMut(ChatEvent) + Send>;

/// An [`EventSink`] in a [`ParsedFile`].
#[derive(Default)]
struct Sink(Option<EventSink>);

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Sink(..)"
        } else {
            "Sink(none)"
        })
    }
}

/// Everything one file held.
#[derive(Debug, Default)]
pub struct ParsedFile {
    pub format: Option<Format>,
    /// The events, in file order; empty when they went to a sink.
    pub events: Vec<ChatEvent>,
    /// How many events the file held (held or sent to the sink).
    pub event_count: u64,
    pub malformed: Vec<Malformed>,
    /// Valid lines or items that carry no chat event (PING, banners, ...).
    pub skipped: u64,
    /// `skipped` by the kind the file gives them (IRC command, action or
    /// message type).
    pub skipped_by_kind: BTreeMap<String, u64>,
    /// Skipped kinds this parser does not know: new platform features, or
    /// a format version it has not seen. Readers name each once.
    pub unknown_kinds: BTreeSet<String>,
    /// What a reader should know about the file's events (for instance
    /// that their times are offsets into a video).
    pub notes: Vec<String>,
    sink: Sink,
    /// Events without a time take the time of the event before (Twitch
    /// lines without `tmi-sent-ts`).
    fill_untimed: bool,
    last_ts: i64,
}

impl ParsedFile {
    fn new(format: Option<Format>) -> Self {
        ParsedFile {
            format,
            ..ParsedFile::default()
        }
    }

    /// A file of these events (tests, and callers that build events
    /// themselves).
    pub fn with_events(events: Vec<ChatEvent>) -> Self {
        ParsedFile {
            event_count: events.len() as u64,
            events,
            ..ParsedFile::default()
        }
    }

    /// Drops the sink the events went to (flushing what it holds).
    pub fn drop_sink(&mut self) {
        self.sink = Sink(None);
    }

    fn with_sink(mut self, sink: Option<EventSink>) -> Self {
        self.sink = Sink(sink);
        self
    }

    /// One event of the file, in file order: to the sink, or held.
    fn emit(&mut self, mut ev: ChatEvent) {
        if self.fill_untimed {
            if ev.ts_ms == 0 {
                ev.ts_ms = self.last_ts;
            } else {
                self.last_ts = ev.ts_ms;
            }
        }
        self.event_count += 1;
        match &mut self.sink.0 {
            Some(sink) => sink(ev),
            None => self.events.push(ev),
        }
    }

    /// Sends the held events to `sink` (a file read whole before its
    /// events could go out one by one).
    fn drain_into(&mut self, sink: Option<EventSink>) {
        if let Some(mut sink) = sink {
            std::mem::take(&mut self.events)
                .into_iter()
                .for_each(&mut sink);
            self.sink = Sink(Some(sink));
        }
    }

    fn skip(&mut self, kind: String, known: bool) {
        self.skipped += 1;
        if !known {
            self.unknown_kinds.insert(kind.clone());
        }
        *self.skipped_by_kind.entry(kind).or_default() += 1;
    }

    fn note(&mut self, note: &str) {
        if !self.notes.iter().any(|n| n == note) {
            self.notes.push(note.to_owned());
        }
    }

    /// `skipped_by_kind` as `kind N, kind N` (most first), for messages.
    pub fn skipped_summary(&self) -> String {
        let mut kinds: Vec<(&String, &u64)> = self.skipped_by_kind.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        kinds
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("not a recognised chat format: {0}")]
    Unrecognised(String),
    /// The format was recognised but the file holds no chat.
    #[error("no chat in this {format} file: {what}")]
    NoChat { format: &'static str, what: String },
}

/// Parses a whole file's bytes. YouTube items get their stream from `ctx`.
pub fn parse_bytes(bytes: &[u8], ctx: &StreamContext) -> Result<ParsedFile, FormatError> {
    parse_reader(bytes, ctx, u64::MAX).map_err(|e| match e {
        ReadFailure::Format(f) => f,
        // Reading from memory does not fail.
        ReadFailure::Io(e) => FormatError::Unrecognised(e.to_string()),
    })
}

/// Longest line a line format may have: a longer one is malformed and
/// skipped up to its newline, never held whole. (A Twitch IRC line is at
/// most a few KiB; the limit only bounds what one line can hold.)
pub const MAX_LINE_BYTES: usize = 4 << 20;

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadFailure {
    #[error("{0}")]
    Io(std::io::Error),
    #[error("{0}")]
    Format(FormatError),
}

impl From<std::io::Error> for ReadFailure {
    fn from(e: std::io::Error) -> Self {
        ReadFailure::Io(e)
    }
}

impl From<FormatError> for ReadFailure {
    fn from(e: FormatError) -> Self {
        ReadFailure::Format(e)
    }
}

/// Parses a file as it is read. Line formats (Twitch IRC, JSON lines such
/// as yt-dlp's `live_chat.json`) are read a line at a time, so a big log
/// is never in memory as bytes; a JSON document (an array or an object over
/// several lines) is read whole, at most `max_document` bytes.
pub fn parse_reader(
    r: impl std::io::BufRead,
    ctx: &StreamContext,
    max_document: u64,
) -> Result<ParsedFile, ReadFailure> {
    parse_reader_into(r, ctx, max_document, None)
}

/// [`parse_reader`], each event handed to `sink` as soon as it is parsed
/// (in file order) instead of held: a line format, a JSON array, JSON lines
/// and a TwitchDownloader file whose `streamer` comes before its
/// `comments` then hold no event in memory. The other JSON documents are
/// read whole first (at most `max_document` bytes), then sent.
pub fn parse_reader_into(
    mut r: impl std::io::BufRead,
    ctx: &StreamContext,
    max_document: u64,
    sink: Option<EventSink>,
) -> Result<ParsedFile, ReadFailure> {
    // Past a byte-order mark and blank lines (counted: line numbers are
    // the file's).
    let mut line_no = 0usize;
    let mut consumed = 0usize;
    let mut at_start = true;
    let first = loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Err(FormatError::Unrecognised("the file is empty".into()).into());
        }
        let mut skip = 0;
        if at_start && buf.starts_with(b"\xEF\xBB\xBF") {
            skip = 3;
        }
        at_start = false;
        let rest = &buf[skip..];
        match rest.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) => {
                line_no += rest[..i].iter().filter(|&&b| b == b'\n').count();
                let first = rest[i];
                // Keep the line's start: only whole blank lines go.
                let line_start = rest[..i]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |p| p + 1);
                r.consume(skip + line_start);
                consumed += skip + line_start;
                break first;
            }
            None => {
                line_no += rest.iter().filter(|&&b| b == b'\n').count();
                let n = buf.len();
                r.consume(n);
                consumed += n;
            }
        }
    };
    let parsed = match first {
        b'{' if first_json_line_broken(&mut r)? => {
            // JSON lines whose first line is cut short or garbled: that
            // line is counted malformed, the rest is read.
            read_json_lines(&mut r, JsonLines::new(sink), line_no, ctx)?
        }
        b'[' => {
            let vod = VodContext {
                stream_id: ctx.video_id.clone(),
                ..VodContext::default()
            };
            stream_array(&mut r, consumed, ctx, &vod, sink)?
        }
        b'{' => match stream_object(&mut r, consumed, ctx, max_document, sink)? {
            (TopObject::Streamed(parsed), _) => parsed,
            // One JSON value and more after it: JSON lines, read one at a
            // time (or, after a comma, items cut out of an array).
            (TopObject::Whole(v), sink) => match skip_ws(&mut r, &mut consumed)? {
                None => {
                    let mut parsed = parse_json_value(&v, ctx)?;
                    parsed.drain_into(sink);
                    parsed
                }
                Some(b',') => {
                    let first = serde_json::to_vec(&v).map_err(std::io::Error::other)?;
                    let mut parsed = parse_json(&read_rest(&mut r, first, max_document)?, ctx)?;
                    parsed.drain_into(sink);
                    parsed
                }
                Some(_) => {
                    let mut lines = JsonLines::new(sink);
                    lines.value(line_no + 1, v, ctx);
                    read_json_lines(&mut r, lines, line_no + 1, ctx)?
                }
            },
        },
        _ => {
            let mut lines = IrcLines::new(sink);
            let mut line = Vec::new();
            let mut n = line_no;
            while let Some(too_long) = read_line(&mut r, &mut line)? {
                n += 1;
                if !lines.line(n, &line, too_long) {
                    break;
                }
            }
            lines.finish()?
        }
    };
    Ok(require_chat(parsed)?)
}

/// Largest item of a JSON array: a bigger one is malformed and skipped,
/// never held whole.
pub const MAX_ITEM_BYTES: usize = 4 << 20;

/// How one value of an array was read.
enum ValueRead {
    /// Its bytes are in the buffer.
    Whole,
    /// Longer than [`MAX_ITEM_BYTES`]: skipped.
    TooBig,
    /// The input ended inside it.
    Ended,
}

/// Reads `r` past whitespace, counting `pos`; the next byte, if any.
fn skip_ws(r: &mut impl std::io::BufRead, pos: &mut usize) -> std::io::Result<Option<u8>> {
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(None);
        }
        match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) => {
                let b = buf[i];
                r.consume(i);
                *pos += i;
                return Ok(Some(b));
            }
            None => {
                let n = buf.len();
                r.consume(n);
                *pos += n;
            }
        }
    }
}

/// Reads one JSON value's bytes into `out` by its structure (brackets,
/// strings and escapes), without parsing it: objects and arrays up to their
/// closing bracket, strings up to their closing quote, other scalars up to
/// the next `,`, `]`, `}` or whitespace.
fn read_value(
    r: &mut impl std::io::BufRead,
    out: &mut Vec<u8>,
    pos: &mut usize,
    limit: usize,
) -> std::io::Result<ValueRead> {
    #[derive(PartialEq)]
    enum Shape {
        Container,
        Text,
        Bare,
    }
    out.clear();
    let mut shape = None;
    let (mut depth, mut in_string, mut escaped, mut too_big) = (0usize, false, false, false);
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            // A bare scalar may end the input; anything else is cut short.
            let whole = shape == Some(Shape::Bare) && !too_big;
            return Ok(if whole {
                ValueRead::Whole
            } else {
                ValueRead::Ended
            });
        }
        let mut end = None;
        let mut i = 0;
        while i < buf.len() {
            let b = buf[i];
            let sh = shape.get_or_insert(match b {
                b'{' | b'[' => Shape::Container,
                b'"' => Shape::Text,
                _ => Shape::Bare,
            });
            if *sh == Shape::Bare {
                if matches!(b, b',' | b']' | b'}') || b.is_ascii_whitespace() {
                    end = Some(i);
                    break;
                }
                i += 1;
                continue;
            }
            if in_string {
                if escaped {
                    escaped = false;
                    i += 1;
                    continue;
                }
                // Text is most of an item: jump to its next quote or escape.
                match memchr::memchr2(b'"', b'\\', &buf[i..]) {
                    None => i = buf.len(),
                    Some(j) => {
                        i += j;
                        if buf[i] == b'\\' {
                            escaped = true;
                        } else {
                            in_string = false;
                            if depth == 0 {
                                end = Some(i + 1);
                                break;
                            }
                        }
                        i += 1;
                    }
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = Some(i + 1);
                        break;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        let take = end.unwrap_or(buf.len());
        if out.len().saturating_add(take) > limit {
            too_big = true;
            out.clear();
        }
        if !too_big {
            out.extend_from_slice(&buf[..take]);
        }
        r.consume(take);
        *pos += take;
        if end.is_some() {
            return Ok(if too_big {
                ValueRead::TooBig
            } else {
                ValueRead::Whole
            });
        }
    }
}

/// A JSON array read one item at a time (at byte `pos` of the file, on its
/// `[`): each item is parsed as it comes, an item that does not parse is
/// malformed and the next one is read, and where the array breaks (a
/// download cut short) is reported with its byte offset after the items
/// before it.
fn stream_array(
    r: &mut impl std::io::BufRead,
    mut pos: usize,
    ctx: &StreamContext,
    vod: &VodContext,
    sink: Option<EventSink>,
) -> Result<ParsedFile, ReadFailure> {
    // At the `[` (past the indentation of its line).
    skip_ws(r, &mut pos)?;
    r.consume(1);
    pos += 1;
    let mut out = ParsedFile::new(None).with_sink(sink);
    let mut state = ItemState::default();
    // Items before the first whose format is known wait for it.
    let mut pending: Vec<(usize, Value)> = Vec::new();
    let mut format: Option<Format> = None;
    let mut buf = Vec::new();
    let mut n = 0usize;
    let mut broke: Option<(usize, &str)> = None;
    let mut handle = |n: usize,
                      v: Value,
                      format: &mut Option<Format>,
                      state: &mut ItemState,
                      out: &mut ParsedFile| {
        if format.is_none() {
            *format = item_format(&v).or_else(|| {
                v.as_str()
                    .filter(|s| s.starts_with(['@', ':']))
                    .map(|_| Format::RecentMessages)
            });
            match *format {
                None => {
                    pending.push((n, v));
                    return;
                }
                Some(f) => {
                    out.format = Some(f);
                    out.fill_untimed = f == Format::RecentMessages;
                    for (pn, pv) in pending.drain(..) {
                        parse_one(&pv, pn, f, ctx, vod, state, out);
                    }
                }
            }
        }
        if let Some(f) = *format {
            parse_one(&v, n, f, ctx, vod, state, out);
        }
    };
    match skip_ws(r, &mut pos)? {
        Some(b']') => r.consume(1),
        None => broke = Some((pos, "the file ends inside the array")),
        Some(_) => loop {
            n += 1;
            let start = pos;
            match read_value(r, &mut buf, &mut pos, MAX_ITEM_BYTES)? {
                // chat-downloader's items are read straight into their
                // fields, without a JSON tree; an item that reading refuses
                // (a key twice, not an object) takes the general way.
                ValueRead::Whole => match format
                    .filter(|f| *f == Format::ChatDownloader)
                    .and_then(|_| chat_downloader::Item::from_slice(&buf))
                {
                    Some(item) => parse_chat_downloader(&item, n, ctx, &mut state, &mut out),
                    None => match serde_json::from_slice::<Value>(&buf) {
                        Ok(v) => handle(n, v, &mut format, &mut state, &mut out),
                        Err(e) => out.malformed.push(Malformed {
                            line: n,
                            reason: format!(
                                "invalid JSON at byte {}: {e}",
                                start + byte_offset(&buf, &e)
                            ),
                        }),
                    },
                },
                ValueRead::TooBig => out.malformed.push(Malformed {
                    line: n,
                    reason: format!("item longer than {MAX_ITEM_BYTES} bytes (at byte {start})"),
                }),
                ValueRead::Ended => {
                    broke = Some((pos, "the file ends inside an item"));
                    break;
                }
            }
            match skip_ws(r, &mut pos)? {
                Some(b',') => {
                    r.consume(1);
                    pos += 1;
                    skip_ws(r, &mut pos)?;
                }
                Some(b']') => {
                    r.consume(1);
                    break;
                }
                Some(_) => {
                    broke = Some((pos, "expected `,` or `]`"));
                    break;
                }
                None => {
                    broke = Some((pos, "the file ends inside the array"));
                    break;
                }
            }
        },
    }
    if let Some((at, reason)) = broke {
        out.malformed.push(Malformed {
            line: n + 1,
            reason: format!(
                "the JSON array breaks at byte {at}: {reason}; nothing after it is read"
            ),
        });
    }
    if format.is_none() && !pending.is_empty() {
        return Err(FormatError::Unrecognised(
            "a JSON array of neither chat-downloader items, innertube actions, Twitch VOD \
             comments nor IRC lines"
                .into(),
        )
        .into());
    }
    Ok(out)
}

/// The first top-level JSON object of a file.
enum TopObject {
    /// A TwitchDownloader file: its `comments` parsed as they were read.
    Streamed(ParsedFile),
    /// Any other object, whole.
    Whole(Value),
}

/// Reads a top-level object (at byte `pos`, on its `{`) member by member:
/// a `comments` array (TwitchDownloader) is parsed an item at a time with
/// the `streamer` and `video` read before it, `embeddedData` (images) is
/// skipped unheld, and every other member is held, at most `max` bytes
/// together. The comments go to `sink` as they are read when `streamer`
/// came before them (the stream is known); otherwise they are held until
/// the object ends. The sink comes back unused with an object that is not
/// a TwitchDownloader file.
fn stream_object(
    r: &mut impl std::io::BufRead,
    mut pos: usize,
    ctx: &StreamContext,
    max: u64,
    mut sink: Option<EventSink>,
) -> Result<(TopObject, Option<EventSink>), ReadFailure> {
    let invalid = |at: usize, what: &str| -> ReadFailure {
        FormatError::Unrecognised(format!("invalid JSON at byte {at}: {what}")).into()
    };
    // At the `{` (past the indentation of its line).
    skip_ws(r, &mut pos)?;
    r.consume(1);
    pos += 1;
    let mut held = serde_json::Map::new();
    let mut held_bytes = 0usize;
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let mut comments: Option<ParsedFile> = None;
    let mut used_stream: Option<String> = None;
    let mut buf = Vec::new();
    if skip_ws(r, &mut pos)? == Some(b'}') {
        r.consume(1);
        return Ok((TopObject::Whole(Value::Object(held)), sink));
    }
    loop {
        let at = pos;
        if skip_ws(r, &mut pos)? != Some(b'"') {
            return Err(invalid(at, "expected a member name"));
        }
        if !matches!(read_value(r, &mut buf, &mut pos, 4096)?, ValueRead::Whole) {
            return Err(invalid(at, "a member name that does not end"));
        }
        let key: String = serde_json::from_slice(&buf).map_err(|e| invalid(at, &e.to_string()))?;
        if skip_ws(r, &mut pos)? != Some(b':') {
            return Err(invalid(pos, "expected `:`"));
        }
        r.consume(1);
        pos += 1;
        let next = skip_ws(r, &mut pos)?;
        let vstart = pos;
        if key == "comments" && next == Some(b'[') && comments.is_none() {
            let file = Value::Object(held.clone());
            let vod = VodContext::of_file(&file, &ctx.video_id);
            // A `streamer` after the comments may name another stream:
            // hold them until then.
            let now = if held.contains_key("streamer") {
                sink.take()
            } else {
                None
            };
            let parsed = stream_array(r, pos, ctx, &vod, now)?;
            used_stream = Some(vod.stream_id);
            let broke = parsed
                .malformed
                .last()
                .is_some_and(|m| m.reason.contains("breaks at byte"));
            comments = Some(parsed);
            if broke {
                // Cut short inside the comments: what came before is kept.
                break;
            }
            // Byte offsets past the comments are not counted on (messages
            // about later members name the array's start).
        } else {
            let room = if key == "embeddedData" {
                0
            } else {
                limit.saturating_sub(held_bytes)
            };
            match read_value(r, &mut buf, &mut pos, room)? {
                ValueRead::Whole => {
                    held_bytes += buf.len();
                    let v: Value = serde_json::from_slice(&buf)
                        .map_err(|e| invalid(vstart + byte_offset(&buf, &e), &e.to_string()))?;
                    held.insert(key, v);
                }
                ValueRead::TooBig if key == "embeddedData" => {}
                ValueRead::TooBig => {
                    return Err(ReadFailure::Io(std::io::Error::other(format!(
                        "a JSON document of more than {max} bytes; split it, or write it as \
                         JSON lines"
                    ))));
                }
                ValueRead::Ended => return Err(invalid(pos, "the file ends inside a value")),
            }
        }
        match skip_ws(r, &mut pos)? {
            Some(b',') => {
                r.consume(1);
                pos += 1;
            }
            Some(b'}') => {
                r.consume(1);
                break;
            }
            _ if comments.is_some() => break,
            _ => return Err(invalid(pos, "expected `,` or `}`")),
        }
    }
    match comments {
        Some(mut parsed) => {
            // `streamer` after `comments` (other writers than
            // TwitchDownloader): the stream is still the streamer's.
            let vod = VodContext::of_file(&Value::Object(held), &ctx.video_id);
            if used_stream.as_ref() != Some(&vod.stream_id) {
                for ev in &mut parsed.events {
                    ev.stream_id.clone_from(&vod.stream_id);
                    if ev.channel_id.is_empty() {
                        ev.channel_id.clone_from(&vod.channel_id);
                    }
                }
            }
            parsed.drain_into(sink);
            Ok((TopObject::Streamed(parsed), None))
        }
        None => Ok((TopObject::Whole(Value::Object(held)), sink)),
    }
}

/// `prefix` and the rest of `r`, refused past `max` bytes.
fn read_rest(
    r: &mut impl std::io::BufRead,
    mut prefix: Vec<u8>,
    max: u64,
) -> Result<Vec<u8>, ReadFailure> {
    use std::io::Read as _;
    r.take(max.saturating_sub(prefix.len() as u64).saturating_add(1))
        .read_to_end(&mut prefix)?;
    if prefix.len() as u64 > max {
        return Err(ReadFailure::Io(std::io::Error::other(format!(
            "a JSON document of more than {max} bytes; split it, or write it as JSON lines"
        ))));
    }
    Ok(prefix)
}

/// Reads one line into `buf` (without its `\n` or `\r`), keeping at most
/// [`MAX_LINE_BYTES`]: `Some(true)` when it was longer, `None` at the end.
fn read_line(r: &mut impl std::io::BufRead, buf: &mut Vec<u8>) -> std::io::Result<Option<bool>> {
    buf.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let avail = r.fill_buf()?;
        if avail.is_empty() {
            return Ok(any.then_some(too_long));
        }
        any = true;
        let (chunk, done) = match memchr::memchr(b'\n', avail) {
            Some(i) => (&avail[..i], Some(i + 1)),
            None => (avail, None),
        };
        let room = MAX_LINE_BYTES.saturating_sub(buf.len());
        if chunk.len() > room {
            too_long = true;
        }
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = done.unwrap_or(avail.len());
        r.consume(used);
        if done.is_some() {
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Ok(Some(too_long));
        }
    }
}

/// Every format treats an input without chat alike: no items at all, or
/// items of which none is a chat event, is an error that says what the
/// file held.
fn require_chat(parsed: ParsedFile) -> Result<ParsedFile, FormatError> {
    if parsed.event_count > 0 {
        return Ok(parsed);
    }
    let format = parsed.format.map_or("chat", Format::name);
    let what = match (parsed.skipped, parsed.malformed.first()) {
        (0, None) => "it holds no items".to_owned(),
        (0, Some(m)) => format!(
            "all {} items are malformed (item {}: {})",
            parsed.malformed.len(),
            m.line,
            m.reason
        ),
        (n, _) => format!(
            "{n} items, none a chat event ({}){}",
            parsed.skipped_summary(),
            parsed
                .malformed
                .first()
                .map(|m| format!(
                    "; {} malformed (item {}: {})",
                    parsed.malformed.len(),
                    m.line,
                    m.reason
                ))
                .unwrap_or_default()
        ),
    };
    Err(FormatError::NoChat { format, what })
}

/// Twitch IRC, a line at a time.
struct IrcLines {
    out: ParsedFile,
    any_valid: bool,
    untimed: twitch::UntimedIds,
}

impl IrcLines {
    fn new(sink: Option<EventSink>) -> Self {
        let mut out = ParsedFile::new(Some(Format::IrcLines)).with_sink(sink);
        out.fill_untimed = true;
        IrcLines {
            out,
            any_valid: false,
            untimed: twitch::UntimedIds::default(),
        }
    }

    /// Parses line `n`; false once the file is plainly not IRC (its first
    /// 20 lines are none).
    fn line(&mut self, n: usize, raw: &[u8], too_long: bool) -> bool {
        if raw.iter().all(u8::is_ascii_whitespace) && !too_long {
            return true;
        }
        let out = &mut self.out;
        if too_long {
            out.malformed.push(Malformed {
                line: n,
                reason: format!("line longer than {MAX_LINE_BYTES} bytes"),
            });
            return self.any_valid || n <= 20;
        }
        let result = std::str::from_utf8(raw)
            .map_err(|e| ParseError::new(format!("invalid UTF-8: {e}")))
            .and_then(|line| twitch::parse_line(line).map(|ev| (line, ev)));
        self.any_valid |= result.is_ok();
        match result {
            Ok((_, Some(mut ev))) => {
                self.untimed.apply(&mut ev);
                out.emit(ev);
            }
            Ok((line, None)) => {
                let command = irc::IrcLine::parse(line)
                    .map(|l| l.command.to_owned())
                    .unwrap_or_default();
                let known = twitch::is_known_command(&command);
                out.skip(command, known);
            }
            Err(e) => out.malformed.push(Malformed {
                line: n,
                reason: e.reason,
            }),
        }
        // A text file whose first lines are all not IRC is some other format.
        self.any_valid || n <= 20
    }

    fn finish(self) -> Result<ParsedFile, FormatError> {
        if !self.any_valid {
            let why = self
                .out
                .malformed
                .first()
                .map(|m| m.reason.clone())
                .unwrap_or_default();
            return Err(FormatError::Unrecognised(format!(
                "no line parses as Twitch IRC (first error: {why})"
            )));
        }
        Ok(self.out)
    }
}

/// Where a serde_json error points, as a byte offset into `bytes` (its
/// line and column are 1-based; the column counts bytes).
fn byte_offset(bytes: &[u8], e: &serde_json::Error) -> usize {
    let line_start: usize = bytes
        .split_inclusive(|&b| b == b'\n')
        .take(e.line().saturating_sub(1))
        .map(<[u8]>::len)
        .sum();
    (line_start + e.column().saturating_sub(1)).min(bytes.len())
}

fn json_error(bytes: &[u8], e: &serde_json::Error) -> String {
    format!(
        "invalid JSON at byte {} (line {}, column {}): {e}",
        byte_offset(bytes, e),
        e.line(),
        e.column()
    )
}

fn parse_json(bytes: &[u8], ctx: &StreamContext) -> Result<ParsedFile, FormatError> {
    let whole_err = match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => return parse_json_value(&v, ctx),
        Err(e) => e,
    };
    // Comma-separated items cut out of an array (copied from a response
    // body): `{...},\n{...},`.
    if let Some(v) = parse_as_array_fragment(bytes) {
        return parse_json_value(&v, ctx);
    }
    // One JSON object per line (chat-downloader --output x.jsonl, yt-dlp's
    // live_chat.json).
    if !bytes.contains(&b'\n') {
        return Err(FormatError::Unrecognised(json_error(bytes, &whole_err)));
    }
    let mut lines = JsonLines::default();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        lines.line(i + 1, line, false, ctx);
    }
    if lines.values == 0 {
        return Err(FormatError::Unrecognised(json_error(bytes, &whole_err)));
    }
    lines.finish()
}

/// Reads the rest of `r` into `lines` a line at a time, the first being
/// line `after + 1` of the file.
fn read_json_lines(
    r: &mut impl std::io::BufRead,
    mut lines: JsonLines,
    after: usize,
    ctx: &StreamContext,
) -> Result<ParsedFile, ReadFailure> {
    let mut n = after;
    let mut line = Vec::new();
    while let Some(too_long) = read_line(r, &mut line)? {
        n += 1;
        lines.line(n, &line, too_long, ctx);
    }
    Ok(lines.finish()?)
}

/// Whether the file at `r` (at a line starting with `{`) is JSON lines
/// whose first line is broken: that line is not JSON by itself and the next
/// one is a whole object. A document over several lines ("{" then
/// `"key": ...`) is not. Looks only at what is buffered (two lines of chat
/// fit a reader's buffer; if not, the file is read as a document).
fn first_json_line_broken(r: &mut impl std::io::BufRead) -> std::io::Result<bool> {
    use serde::de::IgnoredAny;
    let buf = r.fill_buf()?;
    let Some(end) = memchr::memchr(b'\n', buf) else {
        return Ok(false);
    };
    if serde_json::from_slice::<IgnoredAny>(&buf[..end]).is_ok() {
        return Ok(false);
    }
    let rest = &buf[end + 1..];
    let Some(end2) = memchr::memchr(b'\n', rest) else {
        return Ok(false);
    };
    let second = rest[..end2].trim_ascii();
    Ok(second.starts_with(b"{") && serde_json::from_slice::<IgnoredAny>(second).is_ok())
}

/// One JSON value per line, a line at a time.
#[derive(Default)]
struct JsonLines {
    out: ParsedFile,
    state: ItemState,
    values: usize,
}

impl JsonLines {
    fn new(sink: Option<EventSink>) -> Self {
        JsonLines {
            out: ParsedFile::default().with_sink(sink),
            ..JsonLines::default()
        }
    }

    fn line(&mut self, n: usize, raw: &[u8], too_long: bool, ctx: &StreamContext) {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if too_long {
            self.out.malformed.push(Malformed {
                line: n,
                reason: format!("line longer than {MAX_LINE_BYTES} bytes"),
            });
            return;
        }
        if raw.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        // In a file of chat-downloader items, an item is read straight
        // into its fields; anything else takes the general way.
        if self.out.format == Some(Format::ChatDownloader)
            && let Some(item) =
                chat_downloader::Item::from_slice(raw).filter(|i| i.is_chat_downloader())
        {
            self.values += 1;
            parse_chat_downloader(&item, n, ctx, &mut self.state, &mut self.out);
            return;
        }
        match serde_json::from_slice::<Value>(raw) {
            Ok(v) => self.value(n, v, ctx),
            Err(e) => self.out.malformed.push(Malformed {
                line: n,
                reason: json_error(raw, &e),
            }),
        }
    }

    fn value(&mut self, n: usize, v: Value, ctx: &StreamContext) {
        self.values += 1;
        let format = item_format(&v);
        self.out.format = self.out.format.or(format);
        match format {
            Some(f) => parse_one(
                &v,
                n,
                f,
                ctx,
                &VodContext::default(),
                &mut self.state,
                &mut self.out,
            ),
            None => self.out.malformed.push(Malformed {
                line: n,
                reason: "a JSON value that is no known chat item".into(),
            }),
        }
    }

    fn finish(self) -> Result<ParsedFile, FormatError> {
        if self.out.format.is_none() {
            return Err(FormatError::Unrecognised(
                "JSON lines that are neither chat-downloader items, innertube actions nor \
                 Twitch VOD comments"
                    .into(),
            ));
        }
        Ok(self.out)
    }
}

fn parse_as_array_fragment(bytes: &[u8]) -> Option<Value> {
    let trimmed = bytes.trim_ascii();
    let body = trimmed.strip_suffix(b",").unwrap_or(trimmed);
    if !body.starts_with(b"{") || !body.ends_with(b"}") {
        return None;
    }
    let mut wrapped = Vec::with_capacity(body.len() + 2);
    wrapped.push(b'[');
    wrapped.extend_from_slice(body);
    wrapped.push(b']');
    serde_json::from_slice(&wrapped).ok()
}

/// What one JSON object is, if it is anything we know.
fn item_format(v: &Value) -> Option<Format> {
    let obj = v.as_object()?;
    if twitch_vod::looks_like_comment(v) {
        return Some(Format::TwitchVod);
    }
    if chat_downloader::looks_like_item(v) {
        return Some(Format::ChatDownloader);
    }
    if obj
        .keys()
        .any(|k| k.ends_with("Action") || k.ends_with("Command"))
    {
        return Some(Format::InnertubeActions);
    }
    if obj
        .keys()
        .any(|k| k.starts_with("liveChat") && k.ends_with("Renderer"))
    {
        return Some(Format::InnertubeRenderer);
    }
    None
}

/// What the items of one file carry from one to the next.
#[derive(Default)]
struct ItemState {
    /// The time of the last event, for items that carry none.
    last_ts: i64,
    /// Ids of IRC lines without id or time (recent-messages).
    untimed: twitch::UntimedIds,
}

/// Parses item `n` (one JSON value) of a file in `format` into `out`.
/// Replay wrappers (`replayChatItemAction`, with the video offset beside
/// or inside) are opened and each action inside is parsed.
fn parse_one(
    v: &Value,
    n: usize,
    format: Format,
    ctx: &StreamContext,
    vod: &VodContext,
    state: &mut ItemState,
    out: &mut ParsedFile,
) {
    if format == Format::InnertubeActions
        && let Some(replay) = v.get("replayChatItemAction")
    {
        let offset_ms = replay
            .get("videoOffsetTimeMsec")
            .or_else(|| v.get("videoOffsetTimeMsec"))
            .and_then(|o| match o {
                Value::String(s) => s.parse::<i64>().ok(),
                other => other.as_i64(),
            });
        let Some(actions) = replay.get("actions").and_then(Value::as_array) else {
            out.malformed.push(Malformed {
                line: n,
                reason: "replayChatItemAction without actions".into(),
            });
            return;
        };
        for a in actions {
            // Actions without a time of their own (deletions) take the
            // last event's, or else the offset into the video.
            let fallback = if state.last_ts > 0 {
                state.last_ts
            } else {
                offset_ms.unwrap_or(0).max(1)
            };
            let r = youtube::parse_action(a, ctx, fallback);
            record(r, n, || youtube::action_kind(a), state, out);
        }
        return;
    }
    match format {
        Format::ChatDownloader => match chat_downloader::Item::from_value(v) {
            Ok(item) => parse_chat_downloader(&item, n, ctx, state, out),
            Err(e) => out.malformed.push(Malformed {
                line: n,
                reason: e.reason,
            }),
        },
        Format::InnertubeActions => record(
            youtube::parse_action(v, ctx, state.last_ts),
            n,
            || youtube::action_kind(v),
            state,
            out,
        ),
        Format::InnertubeRenderer => record(
            youtube::parse_item(v, ctx),
            n,
            || youtube::action_kind(v),
            state,
            out,
        ),
        Format::TwitchVod => record(
            twitch_vod::parse_comment(v, vod),
            n,
            || ("comment".to_owned(), true),
            state,
            out,
        ),
        Format::IrcLines | Format::RecentMessages => {
            let r = match v.as_str() {
                Some(line) => twitch::parse_line(line).map(|ev| {
                    ev.map(|mut ev| {
                        state.untimed.apply(&mut ev);
                        ev
                    })
                }),
                None => Err(ParseError::new("expected a string holding an IRC line")),
            };
            let kind = || {
                let command = v
                    .as_str()
                    .and_then(|l| irc::IrcLine::parse(l).ok())
                    .map(|l| l.command.to_owned())
                    .unwrap_or_default();
                let known = twitch::is_known_command(&command);
                (command, known)
            };
            record(r, n, kind, state, out);
        }
    }
}

/// Parses chat-downloader item `n` into `out`.
fn parse_chat_downloader(
    item: &chat_downloader::Item,
    n: usize,
    ctx: &StreamContext,
    state: &mut ItemState,
    out: &mut ParsedFile,
) {
    if item.is_legacy_twitch() {
        out.note(
            "Twitch VOD items of chat-downloader's first releases hold no wall-clock time: \
             their times are offsets into the video (from 1970-01-01)",
        );
    }
    let kind = || {
        let k = item.kind_name();
        let known = chat_downloader::is_known_kind(&k);
        (k, known)
    };
    record(item.parse(ctx, state.last_ts), n, kind, state, out);
}

fn record(
    r: Result<Option<ChatEvent>, ParseError>,
    n: usize,
    kind: impl FnOnce() -> (String, bool),
    state: &mut ItemState,
    out: &mut ParsedFile,
) {
    match r {
        Ok(Some(ev)) => {
            state.last_ts = ev.ts_ms;
            out.emit(ev);
        }
        Ok(None) => {
            let (k, known) = kind();
            out.skip(k, known);
        }
        Err(e) => out.malformed.push(Malformed {
            line: n,
            reason: e.reason,
        }),
    }
}

fn parse_json_value(v: &Value, ctx: &StreamContext) -> Result<ParsedFile, FormatError> {
    let mut vod = VodContext {
        stream_id: ctx.video_id.clone(),
        ..VodContext::default()
    };
    // Unwrap the containers innertube, recent-messages and TwitchDownloader
    // use.
    let (items, format): (Vec<&Value>, Format) =
        if let Some(messages) = v.get("messages").and_then(Value::as_array) {
            (messages.iter().collect(), Format::RecentMessages)
        } else if twitch_vod::looks_like_file(v) {
            vod = VodContext::of_file(v, &ctx.video_id);
            let comments = v.get("comments").and_then(Value::as_array);
            (comments.into_iter().flatten().collect(), Format::TwitchVod)
        } else if let Some(actions) = v
            .pointer("/continuationContents/liveChatContinuation/actions")
            .or_else(|| v.pointer("/contents/liveChatRenderer/actions"))
            .or_else(|| v.get("actions"))
            .and_then(Value::as_array)
        {
            (actions.iter().collect(), Format::InnertubeActions)
        } else if let Some(arr) = v.as_array() {
            if arr.is_empty() {
                return Ok(ParsedFile::new(None));
            }
            let format = arr
                .iter()
                .find_map(item_format)
                .or_else(|| {
                    arr.iter()
                        .any(|x| x.as_str().is_some_and(|s| s.starts_with(['@', ':'])))
                        .then_some(Format::RecentMessages)
                })
                .ok_or_else(|| {
                    FormatError::Unrecognised(
                        "a JSON array of neither chat-downloader items, innertube actions, \
                         Twitch VOD comments nor IRC lines"
                            .into(),
                    )
                })?;
            (arr.iter().collect(), format)
        } else if let Some(format) = item_format(v) {
            (vec![v], format)
        } else if v.get("authorName").is_some() && v.get("timestampUsec").is_some() {
            // A bare renderer body without its name (as some tools dump items).
            let name = if v.get("purchaseAmountText").is_some() {
                "liveChatPaidMessageRenderer"
            } else {
                "liveChatTextMessageRenderer"
            };
            let mut out = ParsedFile::new(Some(Format::InnertubeRenderer));
            let r = youtube::parse_renderer(name, v, ctx);
            record(
                r,
                1,
                || (name.to_owned(), true),
                &mut ItemState::default(),
                &mut out,
            );
            return Ok(out);
        } else {
            return Err(FormatError::Unrecognised(
                "a JSON object that is no known chat container".into(),
            ));
        };
    let mut out = ParsedFile::new(Some(format));
    out.fill_untimed = format == Format::RecentMessages;
    let mut state = ItemState::default();
    for (i, item) in items.into_iter().enumerate() {
        parse_one(item, i + 1, format, ctx, &vod, &mut state, &mut out);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> StreamContext {
        StreamContext {
            video_id: "vid".into(),
            channel_id: String::new(),
        }
    }

    #[test]
    fn detects_irc_and_counts_malformed() {
        let f = parse_bytes(
            b"@id=1;tmi-sent-ts=5 :a!a@a PRIVMSG #c :hi\r\n@badges=x\n:tmi.twitch.tv PING\n",
            &ctx(),
        )
        .unwrap();
        assert_eq!(f.format, Some(Format::IrcLines));
        assert_eq!(f.events.len(), 1);
        assert_eq!(f.skipped, 1);
        assert_eq!(f.malformed.len(), 1);
        assert_eq!(f.malformed[0].line, 2);
    }

    #[test]
    fn recent_messages_wrapper() {
        let f = parse_bytes(
            br#"{"messages": ["@id=1;tmi-sent-ts=5 :a!a@a PRIVMSG #c :hi", 3]}"#,
            &ctx(),
        )
        .unwrap();
        assert_eq!(f.format, Some(Format::RecentMessages));
        assert_eq!(f.events.len(), 1);
        assert_eq!(f.malformed.len(), 1);
    }

    #[test]
    fn unrecognised_content() {
        assert!(parse_bytes(b"", &ctx()).is_err());
        assert!(parse_bytes(b"hello there\nthis is prose\n", &ctx()).is_err());
        assert!(parse_bytes(br#"{"foo": 1}"#, &ctx()).is_err());
        assert!(parse_bytes(b"[1, 2, 3]", &ctx()).is_err());
        assert!(parse_bytes(b"{ not json", &ctx()).is_err());
    }

    /// A JSON-lines archive whose first line was cut short loses that line
    /// only (counted malformed), not the file.
    #[test]
    fn json_lines_with_a_broken_first_line() {
        let item = |id: &str| {
            format!(
                "{{\"message_type\":\"text_message\",\"id\":\"{id}\",\"timestamp\":1000,\"author\":\"x\",\"author_id\":\"U\",\"message\":\"hi\"}}"
            )
        };
        let text = format!(
            "{{\"message_type\":\"text_mes\n{}\n{}\n",
            item("a"),
            item("b")
        );
        let f = parse_bytes(text.as_bytes(), &ctx()).unwrap();
        assert_eq!(f.format, Some(Format::ChatDownloader));
        assert_eq!(f.events.len(), 2);
        assert_eq!(f.malformed.len(), 1);
        assert_eq!(f.malformed[0].line, 1);
        // A document over several lines is still one document.
        let doc = format!("{{\n\"messages\": [\n{}\n]}}\n", item("c"));
        assert!(!first_json_line_broken(&mut doc.as_bytes()).unwrap());
    }

    #[test]
    fn json_lines_of_chat_downloader_items() {
        let f = parse_bytes(
            b"{\"message_type\":\"text_message\",\"id\":\"a\",\"timestamp\":1000,\"author\":\"x\",\"author_id\":\"U\",\"message\":\"hi\"}\n{broken\n",
            &ctx(),
        )
        .unwrap();
        assert_eq!(f.format, Some(Format::ChatDownloader));
        assert_eq!(f.events.len(), 1);
        assert_eq!(f.malformed.len(), 1);
        assert_eq!(f.events[0].stream_id, "vid");
    }

    /// The items a direct reading of chat-downloader's fields refuses (a
    /// key given twice, an item that is no object) read as a JSON value
    /// reads them, in an array and in JSON lines alike.
    #[test]
    fn chat_downloader_items_read_directly_or_the_general_way_alike() {
        let items = [
            r#"{"message_type":"text_message","id":"a","timestamp":1000,"author":"x","author_id":"U","message":"one"}"#,
            r#"{"message_type":"text_message","id":"b","timestamp":2000,"author":"x","author_id":"U","message":"dropped","message":"two"}"#,
            r#""text_message""#,
            r#"{"message_type":"text_message","id":"c","timestamp":3000,"author":{"id":"U","name":"x"},"message":"th\u00e9ree \"quoted\""}"#,
        ];
        let array = format!("[\n{}\n]", items.join(",\n"));
        let lines = items.join("\n");
        for bytes in [array.as_bytes(), lines.as_bytes()] {
            let f = parse_bytes(bytes, &ctx()).unwrap();
            assert_eq!(f.format, Some(Format::ChatDownloader));
            let texts: Vec<&str> = f
                .events
                .iter()
                .filter_map(|e| match &e.kind {
                    Some(spamscope_proto::v1::chat_event::Kind::Message(m)) => {
                        Some(m.text.as_str())
                    }
                    _ => None,
                })
                .collect();
            assert_eq!(texts, ["one", "two", "th\u{e9}ree \"quoted\""]);
            assert_eq!(f.malformed.len(), 1, "{:?}", f.malformed);
            assert_eq!(f.malformed[0].line, 3);
        }
    }
}
