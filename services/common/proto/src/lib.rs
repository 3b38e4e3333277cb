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
