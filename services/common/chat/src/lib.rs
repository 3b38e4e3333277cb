//! Chat input of spamscope: everything between bytes from a platform and
//! [`ChatEvent`] values, plus the text normaliser used by similarity work.
//!
//! Parts:
//! - [`irc`]: IRCv3 line grammar (tags, prefix, command, params).
//! - [`twitch`]: Twitch IRC commands to chat events.
//! - [`youtube`]: YouTube innertube live-chat actions to chat events.
//! - [`chat_downloader`]: chat-downloader's JSON (every version) to chat events.
//! - [`twitch_vod`]: Twitch VOD chat JSON (TwitchDownloader, v5 comments).
//! - [`format`]: recognising a file's format from its content and parsing it.
//! - [`normalize`]: NFKC, case folding, invisible and confusable folding,
//!   repeated-token compression, grapheme lengths, the similarity key
//!   (letters and digits, one repetition) and how often a text repeats.
//! - [`links`]: links and bare domains in chat text, obfuscations undone.
//! - [`replay`]: reading files into one timestamp-ordered event sequence with
//!   speed control.
//! - [`stats`]: counts per event kind (`spamscope replay --stats`).
//! - [`admit`]: the limits an event must keep before a detector takes it
//!   (sizes, ids, a platform, a kind, no future timestamps).
//!
//! Everything except [`replay::read_files`] is pure: no IO.

pub mod admit;
pub mod chat_downloader;
pub mod format;
pub mod irc;
pub mod links;
pub mod normalize;
pub mod replay;
pub mod stats;
pub mod streaming;
pub mod twitch;
pub mod twitch_vod;
pub mod youtube;

pub use spamscope_proto::v1::ChatEvent;

/// Why one line or item could not be turned into an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ParseError {
    pub reason: String,
}

impl ParseError {
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }
}
