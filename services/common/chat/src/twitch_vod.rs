//! Twitch VOD chat JSON to [`ChatEvent`]: TwitchDownloader's files
//! (`{FileInfo, streamer, video, comments: [...]}`) and bare comment objects
//! of the v5 comments API that older downloaders wrote (the schema of
//! TwitchDownloader's `comments[]`).
//!
//! A comment has `_id`, `created_at` (RFC 3339), `content_offset_seconds`,
//! `commenter: {_id, name, display_name}` and `message: {body, fragments,
//! emoticons: [{_id, begin, end}], user_badges: [{_id, version}]}`. Its time
//! is `created_at`; without it, the video's start plus the offset; without
//! either, the offset alone (at least 1 ms). The stream is the streamer's
//! login when the file names it, else the file's.

use serde_json::Value;
use spamscope_proto::v1::{
    Author, ChatEvent, ChatMessage, EmoteRange, Platform, Roles, chat_event::Kind,
};

use crate::ParseError;

/// True for one v5 / TwitchDownloader comment object.
pub fn looks_like_comment(v: &Value) -> bool {
    v.get("commenter").is_some_and(Value::is_object)
        && v.pointer("/message/body").is_some()
        && (v.get("content_offset_seconds").is_some() || v.get("created_at").is_some())
}

/// True for a TwitchDownloader file: its top level holds `comments`.
pub fn looks_like_file(v: &Value) -> bool {
    v.get("comments").is_some_and(Value::is_array)
        && (v.get("streamer").is_some() || v.get("video").is_some() || v.get("FileInfo").is_some())
}

/// What a file says about all its comments.
#[derive(Debug, Clone, Default)]
pub struct VodContext {
    /// The stream id: the streamer's login, or the file's name.
    pub stream_id: String,
    /// The streamer's user id (the channel), when known.
    pub channel_id: String,
    /// When the video started, in ms, if the file says.
    pub video_start_ms: Option<i64>,
}

impl VodContext {
    /// From a TwitchDownloader file's `streamer` and `video`, falling back
    /// to `default_stream` for the stream id.
    pub fn of_file(file: &Value, default_stream: &str) -> Self {
        let streamer = |k: &str| match file.pointer(&format!("/streamer/{k}")) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        };
        let login = streamer("login");
        let login = if login.is_empty() {
            streamer("name").to_lowercase()
        } else {
            login.to_lowercase()
        };
        // Comment offsets count from the start of the VOD (a trimmed
        // download keeps them so).
        let video_start_ms = ["/video/created_at", "/video/start_time"]
            .iter()
            .find_map(|p| file.pointer(p)?.as_str())
            .and_then(rfc3339_ms);
        VodContext {
            stream_id: if login.is_empty() {
                default_stream.to_owned()
            } else {
                login
            },
            channel_id: streamer("id"),
            video_start_ms,
        }
    }
}

fn rfc3339_ms(s: &str) -> Option<i64> {
    s.parse::<jiff::Timestamp>()
        .ok()
        .map(jiff::Timestamp::as_millisecond)
}

/// Parses one comment.
pub fn parse_comment(c: &Value, ctx: &VodContext) -> Result<Option<ChatEvent>, ParseError> {
    if !c.is_object() {
        return Err(ParseError::new("comment is not a JSON object"));
    }
    let text = c
        .pointer("/message/body")
        .and_then(Value::as_str)
        .ok_or_else(|| ParseError::new("comment without message.body"))?;
    let offset_s = c.get("content_offset_seconds").and_then(Value::as_f64);
    let ts_ms = match c.get("created_at").and_then(Value::as_str) {
        Some(t) => rfc3339_ms(t)
            .ok_or_else(|| ParseError::new(format!("created_at {t:?} is not an RFC 3339 time")))?,
        None => {
            let offset = offset_s
                .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e9)
                .ok_or_else(|| {
                    ParseError::new("comment without created_at or content_offset_seconds")
                })?;
            let offset_ms = (offset * 1000.0).round() as i64;
            ctx.video_start_ms
                .map_or(offset_ms.max(1), |s| s + offset_ms)
        }
    };
    let id = str_of(c.get("_id"));
    if id.is_empty() {
        return Err(ParseError::new("comment without _id"));
    }
    let commenter = c.get("commenter").unwrap_or(&Value::Null);
    let login = str_of(commenter.get("name")).to_lowercase();
    let display = str_of(commenter.get("display_name"));
    let mut roles = Roles::default();
    if let Some(badges) = c.pointer("/message/user_badges").and_then(Value::as_array) {
        for b in badges {
            let set = str_of(b.get("_id").or_else(|| b.get("set_id")));
            crate::twitch::apply_badge(&mut roles, &set);
            if set == "subscriber" || set == "founder" {
                roles.member_months = str_of(b.get("version")).parse().unwrap_or(0);
            }
        }
    }
    let emotes = emotes(c, text);
    Ok(Some(ChatEvent {
        platform: Platform::Twitch as i32,
        stream_id: ctx.stream_id.clone(),
        channel_id: match str_of(c.get("channel_id")) {
            s if s.is_empty() => ctx.channel_id.clone(),
            s => s,
        },
        event_id: id,
        ts_ms,
        kind: Some(Kind::Message(ChatMessage {
            author: Some(Author {
                user_id: str_of(commenter.get("_id")),
                display_name: if display.is_empty() {
                    login.clone()
                } else {
                    display
                },
                login,
                roles: Some(roles),
            }),
            text: text.to_owned(),
            emotes,
            action: c.pointer("/message/is_action").and_then(Value::as_bool) == Some(true),
            bits: c
                .pointer("/message/bits_spent")
                .and_then(Value::as_u64)
                .map_or(0, |b| u32::try_from(b).unwrap_or(u32::MAX)),
            ..ChatMessage::default()
        })),
    }))
}

fn str_of(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// `message.emoticons: [{_id, begin, end}]`, inclusive char positions as in
/// IRC; without them, the fragments that are emoticons, in order.
fn emotes(c: &Value, text: &str) -> Vec<EmoteRange> {
    let len = text.chars().count() as u32;
    let mut out = Vec::new();
    if let Some(list) = c.pointer("/message/emoticons").and_then(Value::as_array) {
        for e in list {
            let (Some(begin), Some(end)) = (
                e.get("begin").and_then(Value::as_u64),
                e.get("end").and_then(Value::as_u64),
            ) else {
                continue;
            };
            let (Ok(start), Ok(last)) = (u32::try_from(begin), u32::try_from(end)) else {
                continue;
            };
            if start <= last && last < len {
                out.push(EmoteRange {
                    emote_id: str_of(e.get("_id").or_else(|| e.get("emoticon_id"))),
                    start,
                    end: last + 1,
                });
            }
        }
    } else if let Some(frags) = c.pointer("/message/fragments").and_then(Value::as_array) {
        let mut at = 0u32;
        for f in frags {
            let t = f.get("text").and_then(Value::as_str).unwrap_or("");
            let width = t.chars().count() as u32;
            if let Some(e) = f.get("emoticon").filter(|e| e.is_object())
                && at.saturating_add(width) <= len
            {
                out.push(EmoteRange {
                    emote_id: str_of(e.get("emoticon_id")),
                    start: at,
                    end: at + width,
                });
            }
            at = at.saturating_add(width);
        }
    }
    out.sort_by_key(|e| e.start);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_v5_comment() {
        let c = json!({"_id": "6af5", "created_at": "2017-12-24T17:05:36.568Z", "channel_id": "23161357",
            "content_offset_seconds": 0.768,
            "commenter": {"display_name": "Aivoh", "_id": "61408597", "name": "aivoh"},
            "message": {"body": "LIVE lirikH", "emoticons": [{"_id": "560500", "begin": 5, "end": 10}],
                "user_badges": [{"_id": "subscriber", "version": "0"}]}});
        assert!(looks_like_comment(&c));
        let ev = parse_comment(
            &c,
            &VodContext {
                stream_id: "lirik".into(),
                ..VodContext::default()
            },
        )
        .unwrap()
        .unwrap();
        assert_eq!(ev.ts_ms, 1_514_135_136_568);
        assert_eq!(
            (ev.stream_id.as_str(), ev.channel_id.as_str()),
            ("lirik", "23161357")
        );
        let Some(Kind::Message(m)) = ev.kind else {
            panic!()
        };
        assert_eq!(m.emotes[0].start, 5);
        assert_eq!(m.emotes[0].end, 11);
        let a = m.author.unwrap();
        assert_eq!(
            (a.login.as_str(), a.user_id.as_str()),
            ("aivoh", "61408597")
        );
        assert!(a.roles.unwrap().member);
    }

    #[test]
    fn offset_only_and_fragments() {
        let ctx = VodContext {
            stream_id: "s".into(),
            video_start_ms: Some(1_000_000),
            ..VodContext::default()
        };
        let c = json!({"_id": "x", "content_offset_seconds": 2.5, "commenter": {"_id": 1, "name": "A"},
            "message": {"body": "hi Kappa", "fragments": [{"text": "hi "}, {"text": "Kappa", "emoticon": {"emoticon_id": "25"}}]}});
        let ev = parse_comment(&c, &ctx).unwrap().unwrap();
        assert_eq!(ev.ts_ms, 1_002_500);
        let Some(Kind::Message(m)) = ev.kind else {
            panic!()
        };
        assert_eq!((m.emotes[0].start, m.emotes[0].end), (3, 8));
        let bad = json!({"_id": "x", "created_at": "yesterday", "commenter": {}, "message": {"body": "b"}});
        assert!(parse_comment(&bad, &ctx).is_err());
    }
}
