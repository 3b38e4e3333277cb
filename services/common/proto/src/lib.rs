//! Wire contracts of spamscope, package `spamscope.v1`, generated from
//! `proto/` by `build.rs`. Nobody edits generated code: change the `.proto`.
//!
//! Parts: [`v1`] (all messages) and a few helpers on them.

#![allow(missing_debug_implementations)]

/// Package `spamscope.v1`.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic)]
    include!(concat!(env!("OUT_DIR"), "/spamscope.v1.rs"));
}

pub use prost::Message;

/// Encoded `FileDescriptorSet` of every proto (for gRPC server reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

impl v1::Platform {
    /// Short lower-case name used in stream keys and NATS subjects.
    pub fn key(self) -> &'static str {
        match self {
            v1::Platform::Twitch => "twitch",
            v1::Platform::Youtube => "youtube",
            v1::Platform::Unspecified => "unknown",
        }
    }
}

impl v1::Platform {
    /// The platform of a raw wire value; values this build does not know
    /// are `Unspecified` (their key is `unknown`).
    pub fn of(raw: i32) -> Self {
        Self::try_from(raw).unwrap_or(Self::Unspecified)
    }

    /// The platform of a stream key's first part.
    pub fn from_key(key: &str) -> Option<Self> {
        match key {
            "twitch" => Some(Self::Twitch),
            "youtube" => Some(Self::Youtube),
            _ => None,
        }
    }
}

impl v1::ChatEvent {
    /// The stream key `<platform>.<id>` of this event.
    pub fn stream_key(&self) -> String {
        StreamKey::format(self.platform(), &self.stream_id)
    }
}

/// The key of one stream, `<platform>.<id>`: the Twitch channel login or
/// the YouTube video id. The one place that spells, parses and normalises
/// it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamKey {
    pub platform: v1::Platform,
    pub id: String,
}

/// Why a text is not a stream key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamKeyError(pub String);

impl std::fmt::Display for StreamKeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StreamKeyError {}

/// Longest stream id accepted from outside.
pub const MAX_STREAM_ID_BYTES: usize = 128;

impl StreamKey {
    /// `<platform>.<id>` without building a key.
    pub fn format(platform: v1::Platform, id: &str) -> String {
        let key = platform.key();
        let mut s = String::with_capacity(key.len() + 1 + id.len());
        s.push_str(key);
        s.push('.');
        s.push_str(id);
        s
    }

    /// Parses a key given from outside (an API request, a params scope):
    /// a known platform and an id that is not empty, at most 128 bytes,
    /// and holds no `.`, `*`, `>` or whitespace (it becomes a NATS subject
    /// token). Twitch logins are case-insensitive and stored in lower case,
    /// so `twitch.XQCOW` is `twitch.xqcow`; YouTube ids are kept as given.
    pub fn parse(s: &str) -> Result<Self, StreamKeyError> {
        let (p, id) = s
            .split_once('.')
            .ok_or_else(|| StreamKeyError(format!("stream must be <platform>.<id>, not {s:?}")))?;
        let platform = v1::Platform::from_key(p)
            .ok_or_else(|| StreamKeyError(format!("unknown platform {p:?} (twitch or youtube)")))?;
        if id.is_empty()
            || id.len() > MAX_STREAM_ID_BYTES
            || id.contains(['.', '*', '>'])
            || id.contains(char::is_whitespace)
        {
            return Err(StreamKeyError(format!("stream id {id:?} is not valid")));
        }
        let id = match platform {
            v1::Platform::Twitch => id.to_lowercase(),
            _ => id.to_owned(),
        };
        Ok(Self { platform, id })
    }
}

impl std::fmt::Display for StreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.platform.key(), self.id)
    }
}

/// The chat events of one chat message: a [`v1::ChatBatch`] when the
/// message says it is one (`batch`, from its `Spamscope-Batch` header),
/// else one [`v1::ChatEvent`].
pub fn decode_chat(
    batch: bool,
    payload: impl prost::bytes::Buf,
) -> Result<Vec<v1::ChatEvent>, prost::DecodeError> {
    use prost::Message;
    if batch {
        Ok(v1::ChatBatch::decode(payload)?.events)
    } else {
        Ok(vec![v1::ChatEvent::decode(payload)?])
    }
}

/// Encodes `events` as a [`v1::ChatBatch`] without copying them into one.
pub fn encode_chat_batch<'a>(events: impl IntoIterator<Item = &'a v1::ChatEvent>) -> Vec<u8> {
    let events: Vec<&v1::ChatEvent> = events.into_iter().collect();
    let len: usize = events
        .iter()
        .map(|e| prost::encoding::message::encoded_len(1, *e))
        .sum();
    let mut buf = Vec::with_capacity(len);
    for e in events {
        prost::encoding::message::encode(1, e, &mut buf);
    }
    buf
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use prost::Message;

    fn ev(id: &str, text: &str) -> v1::ChatEvent {
        v1::ChatEvent {
            platform: v1::Platform::Twitch as i32,
            stream_id: "xqcow".into(),
            event_id: id.into(),
            ts_ms: 1_000,
            kind: Some(v1::chat_event::Kind::Message(v1::ChatMessage {
                text: text.into(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn a_batch_decodes_to_its_events_in_order() {
        let events = vec![ev("a", "hello"), ev("b", "Kappa Kappa"), ev("c", "")];
        let bytes = encode_chat_batch(&events);
        // The same bytes prost gives for the message built the usual way.
        let built = v1::ChatBatch {
            events: events.clone(),
        }
        .encode_to_vec();
        assert_eq!(bytes, built);
        assert_eq!(decode_chat(true, bytes.as_slice()).unwrap(), events);
    }

    #[test]
    fn a_single_event_decodes_without_the_batch_header() {
        let one = ev("a", "hello");
        let got = decode_chat(false, one.encode_to_vec().as_slice()).unwrap();
        assert_eq!(got, vec![one]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode_chat(true, &[0xff, 0xff, 0xff][..]).is_err());
        assert!(decode_chat(false, &[0x0a, 0x05, 0x01][..]).is_err());
    }

    #[test]
    fn stream_keys_parse_normalise_and_refuse() {
        let k = StreamKey::parse("twitch.XQCow").unwrap();
        assert_eq!(k.to_string(), "twitch.xqcow");
        assert_eq!(k.platform, v1::Platform::Twitch);
        // YouTube video ids are case-sensitive.
        let y = StreamKey::parse("youtube.5qap5aO4i9A").unwrap();
        assert_eq!(y.id, "5qap5aO4i9A");
        for bad in [
            "xqcow",
            "kick.xqcow",
            "twitch.",
            "twitch.a.b",
            "twitch.a*",
            "twitch.a>",
            "twitch.a b",
            "unknown.x",
        ] {
            assert!(StreamKey::parse(bad).is_err(), "{bad}");
        }
        assert!(StreamKey::parse(&format!("youtube.{}", "a".repeat(129))).is_err());
        assert_eq!(
            StreamKey::format(v1::Platform::Youtube, "abc"),
            "youtube.abc"
        );
        assert_eq!(v1::Platform::of(99), v1::Platform::Unspecified);
        assert_eq!(
            v1::Platform::of(v1::Platform::Twitch as i32),
            v1::Platform::Twitch
        );
    }
}
