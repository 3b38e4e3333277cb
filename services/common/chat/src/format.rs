//! Recognising a chat file's format from its content (never its name) and
//! parsing all of it.
//!
//! Recognised: raw Twitch IRC lines; the recent-messages JSON wrapper
//! `{"messages": ["<irc line>", ...]}`; chat-downloader JSON (an array, or one
//! object per line); innertube actions (an array, one action, or a whole
//! `get_live_chat` response); a bare innertube renderer object.

use serde_json::Value;
use spamscope_proto::v1::ChatEvent;

use crate::youtube::StreamContext;
use crate::{ParseError, chat_downloader, twitch, youtube};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    IrcLines,
    RecentMessages,
    ChatDownloader,
    InnertubeActions,
    InnertubeRenderer,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::IrcLines => "twitch-irc",
            Format::RecentMessages => "recent-messages-json",
            Format::ChatDownloader => "chat-downloader-json",
            Format::InnertubeActions => "youtube-innertube",
            Format::InnertubeRenderer => "youtube-innertube-renderer",
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

/// Everything one file held.
#[derive(Debug, Default)]
pub struct ParsedFile {
    pub format: Option<Format>,
    pub events: Vec<ChatEvent>,
    pub malformed: Vec<Malformed>,
    /// Valid lines or items that carry no chat event (PING, banners, ...).
    pub skipped: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("not a recognised chat format: {0}")]
    Unrecognised(String),
}

/// Parses a whole file's bytes. YouTube items get their stream from `ctx`.
pub fn parse_bytes(bytes: &[u8], ctx: &StreamContext) -> Result<ParsedFile, FormatError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let first = bytes.iter().copied().find(|b| !b.is_ascii_whitespace());
    match first {
        None => Err(FormatError::Unrecognised("the file is empty".into())),
        Some(b'[' | b'{') => parse_json(bytes, ctx),
        Some(_) => parse_irc_lines(bytes),
    }
}

fn parse_irc_lines(bytes: &[u8]) -> Result<ParsedFile, FormatError> {
    let mut out = ParsedFile {
        format: Some(Format::IrcLines),
        ..ParsedFile::default()
    };
    let mut any_valid = false;
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let result = std::str::from_utf8(raw)
            .map_err(|e| ParseError::new(format!("invalid UTF-8: {e}")))
            .and_then(twitch::parse_line);
        push(&mut out, i + 1, result);
        any_valid |= out.malformed.last().is_none_or(|m| m.line != i + 1);
        // A text file whose first lines are all not IRC is some other format.
        if !any_valid && i >= 20 {
            break;
        }
    }
    if !any_valid {
        let why = out
            .malformed
            .first()
            .map(|m| m.reason.clone())
            .unwrap_or_default();
        return Err(FormatError::Unrecognised(format!(
            "no line parses as Twitch IRC (first error: {why})"
        )));
    }
    fill_missing_timestamps(&mut out.events);
    Ok(out)
}

fn push(out: &mut ParsedFile, line: usize, r: Result<Option<ChatEvent>, ParseError>) {
    match r {
        Ok(Some(ev)) => out.events.push(ev),
        Ok(None) => out.skipped += 1,
        Err(e) => out.malformed.push(Malformed {
            line,
            reason: e.reason,
        }),
    }
}

/// Twitch lines without `tmi-sent-ts` get the time of the line before.
fn fill_missing_timestamps(events: &mut [ChatEvent]) {
    let mut last = 0;
    for ev in events {
        if ev.ts_ms == 0 {
            ev.ts_ms = last;
        } else {
            last = ev.ts_ms;
        }
    }
}

fn parse_json(bytes: &[u8], ctx: &StreamContext) -> Result<ParsedFile, FormatError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => parse_json_value(&v, ctx),
        Err(whole_err) => {
            // Comma-separated items cut out of an array (copied from a
            // response body): `{...},\n{...},`.
            if let Some(v) = parse_as_array_fragment(bytes) {
                return parse_json_value(&v, ctx);
            }
            // One JSON object per line (chat-downloader --output x.jsonl).
            let mut items = Vec::new();
            for line in bytes.split(|&b| b == b'\n') {
                if line.iter().all(u8::is_ascii_whitespace) {
                    items.push(None);
                    continue;
                }
                items.push(Some(serde_json::from_slice::<Value>(line)));
            }
            let parsed = items.iter().flatten().filter(|r| r.is_ok()).count();
            if parsed == 0 || !bytes.contains(&b'\n') {
                return Err(FormatError::Unrecognised(format!(
                    "invalid JSON: {whole_err}"
                )));
            }
            let mut out = ParsedFile::default();
            let mut last_ts = 0;
            for (i, item) in items.into_iter().enumerate() {
                match item {
                    None => {}
                    Some(Err(e)) => out.malformed.push(Malformed {
                        line: i + 1,
                        reason: format!("invalid JSON: {e}"),
                    }),
                    Some(Ok(v)) => {
                        let format = item_format(&v);
                        out.format = out.format.or(format);
                        let r =
                            parse_one(&v, format.unwrap_or(Format::ChatDownloader), ctx, last_ts);
                        if let Ok(Some(ev)) = &r {
                            last_ts = ev.ts_ms;
                        }
                        push(&mut out, i + 1, r);
                    }
                }
            }
            if out.format.is_none() {
                return Err(FormatError::Unrecognised(
                    "JSON lines that are neither chat-downloader items nor innertube actions"
                        .into(),
                ));
            }
            Ok(out)
        }
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

fn parse_one(
    v: &Value,
    format: Format,
    ctx: &StreamContext,
    last_ts: i64,
) -> Result<Option<ChatEvent>, ParseError> {
    match format {
        Format::ChatDownloader => chat_downloader::parse_item(v, ctx, last_ts),
        Format::InnertubeActions => youtube::parse_action(v, ctx, last_ts),
        Format::InnertubeRenderer => youtube::parse_item(v, ctx),
        Format::IrcLines | Format::RecentMessages => match v.as_str() {
            Some(line) => twitch::parse_line(line),
            None => Err(ParseError::new("expected a string holding an IRC line")),
        },
    }
}

fn parse_json_value(v: &Value, ctx: &StreamContext) -> Result<ParsedFile, FormatError> {
    // Unwrap the containers innertube and recent-messages use.
    let (items, format): (Vec<&Value>, Format) =
        if let Some(messages) = v.get("messages").and_then(Value::as_array) {
            (messages.iter().collect(), Format::RecentMessages)
        } else if let Some(actions) = v
            .pointer("/continuationContents/liveChatContinuation/actions")
            .or_else(|| v.pointer("/contents/liveChatRenderer/actions"))
            .or_else(|| v.get("actions"))
            .and_then(Value::as_array)
        {
            (flatten_replay(actions), Format::InnertubeActions)
        } else if let Some(arr) = v.as_array() {
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
                    "a JSON array of neither chat-downloader items, innertube actions nor IRC lines"
                        .into(),
                )
                })?;
            let items = if format == Format::InnertubeActions {
                flatten_replay(arr)
            } else {
                arr.iter().collect()
            };
            (items, format)
        } else if let Some(format) = item_format(v) {
            (vec![v], format)
        } else if v.get("authorName").is_some() && v.get("timestampUsec").is_some() {
            // A bare renderer body without its name (as some tools dump items).
            let name = if v.get("purchaseAmountText").is_some() {
                "liveChatPaidMessageRenderer"
            } else {
                "liveChatTextMessageRenderer"
            };
            let mut out = ParsedFile {
                format: Some(Format::InnertubeRenderer),
                ..ParsedFile::default()
            };
            push(&mut out, 1, youtube::parse_renderer(name, v, ctx));
            return Ok(out);
        } else {
            return Err(FormatError::Unrecognised(
                "a JSON object that is no known chat container".into(),
            ));
        };
    let mut out = ParsedFile {
        format: Some(format),
        ..ParsedFile::default()
    };
    let mut last_ts = 0;
    for (i, item) in items.into_iter().enumerate() {
        let r = parse_one(item, format, ctx, last_ts);
        if let Ok(Some(ev)) = &r {
            last_ts = ev.ts_ms;
        }
        push(&mut out, i + 1, r);
    }
    if matches!(format, Format::RecentMessages) {
        fill_missing_timestamps(&mut out.events);
    }
    Ok(out)
}

/// Chat replays wrap actions: `{"replayChatItemAction": {"actions": [...]}}`.
fn flatten_replay(actions: &[Value]) -> Vec<&Value> {
    let mut out = Vec::with_capacity(actions.len());
    for a in actions {
        match a
            .pointer("/replayChatItemAction/actions")
            .and_then(Value::as_array)
        {
            Some(inner) => out.extend(inner.iter()),
            None => out.push(a),
        }
    }
    out
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
}
