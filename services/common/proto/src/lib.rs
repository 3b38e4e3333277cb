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
