//! Counts of a chat event sequence, for `spamscope replay --stats`.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;
use spamscope_proto::v1::{ChatEvent, chat_event::Kind};

/// What a replay held. `messages` counts chat messages only (not notices or
/// paid items); `deletions` single messages a moderator deleted;
/// `retractions` messages their author took back (YouTube); `bans`
/// permanent bans (Twitch); `removals` removals of all of a user's messages
/// (YouTube, after a moderator's ban or timeout); `users` distinct message
/// authors (per platform).
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Stats {
    pub events: u64,
    pub messages: u64,
    pub deletions: u64,
    pub retractions: u64,
    pub timeouts: u64,
    pub bans: u64,
    pub removals: u64,
    pub chat_clears: u64,
    pub room_states: u64,
    pub supports: u64,
    pub notices: u64,
    pub users: u64,
    pub streams: u64,
    pub malformed: u64,
    pub skipped: u64,
    /// `skipped` by the kind the files give them.
    pub skipped_by_kind: BTreeMap<String, u64>,
    pub first_ts_ms: Option<i64>,
    pub last_ts_ms: Option<i64>,
    /// Per-stream message counts, by stream key.
    pub messages_by_stream: BTreeMap<String, u64>,
}

/// Accumulates [`Stats`] one event at a time.
#[derive(Debug, Default)]
pub struct StatsBuilder {
    stats: Stats,
    users: HashSet<(i32, String)>,
    streams: HashSet<(i32, String)>,
}

impl StatsBuilder {
    pub fn add(&mut self, ev: &ChatEvent) {
        let s = &mut self.stats;
        let Some(kind) = &ev.kind else { return };
        if matches!(kind, Kind::StreamEnded(_) | Kind::Command(_)) {
            // Synthetic end markers and moderators' commands are not chat.
            return;
        }
        s.events += 1;
        s.first_ts_ms = Some(s.first_ts_ms.map_or(ev.ts_ms, |t| t.min(ev.ts_ms)));
        s.last_ts_ms = Some(s.last_ts_ms.map_or(ev.ts_ms, |t| t.max(ev.ts_ms)));
        self.streams.insert((ev.platform, ev.stream_id.clone()));
        match kind {
            Kind::Message(m) => {
                s.messages += 1;
                *s.messages_by_stream.entry(ev.stream_key()).or_default() += 1;
                if m.bits > 0 {
                    s.supports += 1;
                }
                if let Some(a) = &m.author {
                    let who = if a.user_id.is_empty() {
                        &a.login
                    } else {
                        &a.user_id
                    };
                    self.users.insert((ev.platform, who.clone()));
                }
            }
            Kind::MessageDeleted(d) if d.by_author => s.retractions += 1,
            Kind::MessageDeleted(_) => s.deletions += 1,
            Kind::UserTimedOut(_) => s.timeouts += 1,
            Kind::UserBanned(_) => s.bans += 1,
            Kind::UserMessagesRemoved(_) => s.removals += 1,
            Kind::ChatCleared(_) => s.chat_clears += 1,
            Kind::RoomState(_) => s.room_states += 1,
            Kind::Support(_) => s.supports += 1,
            Kind::UserNotice(_) => s.notices += 1,
            Kind::StreamEnded(_) | Kind::Command(_) => {}
        }
    }

    pub fn add_malformed(&mut self, n: u64) {
        self.stats.malformed += n;
    }

    /// Skipped items of one kind (adds to `skipped` too).
    pub fn add_skipped_kind(&mut self, kind: &str, n: u64) {
        self.stats.skipped += n;
        *self
            .stats
            .skipped_by_kind
            .entry(kind.to_owned())
            .or_default() += n;
    }

    pub fn finish(mut self) -> Stats {
        self.stats.users = self.users.len() as u64;
        self.stats.streams = self.streams.len() as u64;
        self.stats
    }
}
