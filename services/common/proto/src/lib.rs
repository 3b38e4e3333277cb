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

impl v1::ChatEvent {
    /// The stream key `<platform>.<id>` of this event.
    pub fn stream_key(&self) -> String {
        format!("{}.{}", self.platform().key(), self.stream_id)
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
}
