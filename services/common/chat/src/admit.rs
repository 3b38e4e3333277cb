//! What a chat event must look like before a detector takes it: bounded
//! sizes, a platform and a kind, and a timestamp that is neither in the
//! future nor far behind its stream's clock.
//!
//! Events come from outside (chat servers, archives, anything that can
//! publish on the bus). One event dated 2100 moves its stream's clock past
//! every real event, so the stream's spam events stop ticking for the rest
//! of the stream; one dated 1970 in a live stream opens a spam event "first
//! seen" 56 years ago in the console and the history; a 1 MB text costs a
//! similarity search over 1 MB. Such
//! events are refused with a reason (the detector service sends them to the
//! dead-letter subject; `replay` and `eval` count and name them), never
//! applied.

use spamscope_proto::v1::{ChatEvent, Platform, chat_event::Kind};

/// Longest message text accepted, in bytes. Twitch caps a message at 500
/// characters and YouTube at 200 (at most 2,000 bytes of UTF-8).
pub const MAX_TEXT_BYTES: usize = 8 * 1024;
/// Longest id, login or name accepted (stream, channel, event, user), in
/// bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Most emote ranges accepted on one message.
pub const MAX_EMOTES: usize = 2_048;
/// How far ahead of the detector's clock an event may be dated by default
/// (clocks of chat servers and detectors that disagree by less pass).
pub const DEFAULT_MAX_AHEAD_MS: i64 = 3_600_000;
/// How far behind its stream's clock an event may be dated by default
/// (chat delivered late by a slow source or a retry passes).
pub const DEFAULT_MAX_BEHIND_MS: i64 = 3_600_000;

/// Why an event was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn id(what: &str, v: &str) -> Result<(), Refused> {
    if v.len() > MAX_ID_BYTES {
        return Err(Refused(format!(
            "{what} of {} bytes (at most {MAX_ID_BYTES})",
            v.len()
        )));
    }
    Ok(())
}

/// Checks `ev` against the limits above, with `wall_ms` the detector's
/// wall clock and `max_ahead_ms` how far in the future an event may be
/// dated. A message needs a positive timestamp; other kinds may carry 0
/// (Twitch's ROOMSTATE has no time: it applies at the stream's current
/// time).
pub fn admit(ev: &ChatEvent, wall_ms: i64, max_ahead_ms: i64) -> Result<(), Refused> {
    if Platform::try_from(ev.platform).map_or(true, |p| p == Platform::Unspecified) {
        return Err(Refused(format!("unknown platform {}", ev.platform)));
    }
    if ev.stream_id.is_empty() {
        return Err(Refused("empty stream id".into()));
    }
    id("stream id", &ev.stream_id)?;
    id("channel id", &ev.channel_id)?;
    id("event id", &ev.event_id)?;
    let Some(kind) = &ev.kind else {
        return Err(Refused("event without a kind".into()));
    };
    let message = matches!(kind, Kind::Message(_));
    if ev.ts_ms < 0 || (message && ev.ts_ms == 0) {
        return Err(Refused(format!("timestamp {} ms", ev.ts_ms)));
    }
    let ahead = ev.ts_ms.saturating_sub(wall_ms);
    if ahead > max_ahead_ms {
        return Err(Refused(format!(
            "timestamp {} is {} s ahead of this detector's clock (at most {} s)",
            ev.ts_ms,
            ahead / 1000,
            max_ahead_ms / 1000
        )));
    }
    match kind {
        Kind::Message(m) => {
            if m.text.len() > MAX_TEXT_BYTES {
                return Err(Refused(format!(
                    "message text of {} bytes (at most {MAX_TEXT_BYTES})",
                    m.text.len()
                )));
            }
            if m.emotes.len() > MAX_EMOTES {
                return Err(Refused(format!(
                    "{} emote ranges (at most {MAX_EMOTES})",
                    m.emotes.len()
                )));
            }
            if let Some(a) = &m.author {
                id("user id", &a.user_id)?;
                id("login", &a.login)?;
                id("display name", &a.display_name)?;
            }
        }
        Kind::MessageDeleted(d) => {
            id("deleted message id", &d.target_message_id)?;
            id("user id", &d.user_id)?;
            id("login", &d.user_login)?;
        }
        Kind::UserTimedOut(t) => {
            id("user id", &t.user_id)?;
            id("login", &t.user_login)?;
        }
        Kind::UserBanned(b) => {
            id("user id", &b.user_id)?;
            id("login", &b.user_login)?;
        }
        Kind::UserMessagesRemoved(r) => {
            id("user id", &r.user_id)?;
        }
        _ => {}
    }
    Ok(())
}

/// Checks `ev` against its stream's clock: `clock_ms` is the latest time
/// the stream has reached (its newest event, or the live clock), `None`
/// for a stream not seen yet. An event dated more than `max_behind_ms`
/// before it is refused. Events without a time (0: ROOMSTATE) apply at the
/// stream's time and pass. `replay` and `eval` merge their files in time
/// order, so no event of theirs is ever behind; a live source an hour
/// late, or a forged date on the bus, is.
pub fn admit_behind(
    ev: &ChatEvent,
    clock_ms: Option<i64>,
    max_behind_ms: i64,
) -> Result<(), Refused> {
    let Some(clock) = clock_ms else {
        return Ok(());
    };
    if ev.ts_ms <= 0 {
        return Ok(());
    }
    let behind = clock.saturating_sub(ev.ts_ms);
    if behind > max_behind_ms {
        return Err(Refused(format!(
            "timestamp {} is {} s behind its stream's clock {} (at most {} s)",
            ev.ts_ms,
            behind / 1000,
            clock,
            max_behind_ms / 1000
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use spamscope_proto::v1::{Author, ChatMessage, RoomState};

    const NOW: i64 = 1_700_000_000_000;

    fn message(ts_ms: i64, text: &str) -> ChatEvent {
        ChatEvent {
            platform: Platform::Twitch as i32,
            stream_id: "forsen".into(),
            channel_id: "1".into(),
            event_id: "m1".into(),
            ts_ms,
            kind: Some(Kind::Message(ChatMessage {
                author: Some(Author {
                    user_id: "7".into(),
                    login: "viewer".into(),
                    display_name: "Viewer".into(),
                    roles: None,
                }),
                text: text.into(),
                ..Default::default()
            })),
        }
    }

    fn refused(ev: &ChatEvent) -> String {
        admit(ev, NOW, DEFAULT_MAX_AHEAD_MS).unwrap_err().0
    }

    #[test]
    fn real_chat_passes_and_recorded_chat_of_any_age_too() {
        assert_eq!(
            admit(&message(NOW, "hi"), NOW, DEFAULT_MAX_AHEAD_MS),
            Ok(())
        );
        // Recorded in 2019, replayed today.
        let old = message(1_568_505_600_000, "hi");
        assert_eq!(admit(&old, NOW, DEFAULT_MAX_AHEAD_MS), Ok(()));
        // A clock a minute fast.
        assert_eq!(
            admit(&message(NOW + 60_000, "hi"), NOW, DEFAULT_MAX_AHEAD_MS),
            Ok(())
        );
        // ROOMSTATE without a time.
        let mut room = message(0, "");
        room.kind = Some(Kind::RoomState(RoomState::default()));
        assert_eq!(admit(&room, NOW, DEFAULT_MAX_AHEAD_MS), Ok(()));
    }

    #[test]
    fn poison_is_refused_with_the_reason() {
        // Dated 2100.
        let e = refused(&message(4_102_444_800_000, "hi"));
        assert!(e.contains("ahead of this detector's clock"), "{e}");
        assert!(refused(&message(i64::MAX, "hi")).contains("ahead"));
        assert!(refused(&message(0, "hi")).contains("timestamp 0"));
        assert!(refused(&message(-5, "hi")).contains("timestamp -5"));
        let e = refused(&message(NOW, &"x".repeat(1 << 20)));
        assert!(e.contains("1048576 bytes"), "{e}");
        let mut ev = message(NOW, "hi");
        ev.stream_id.clear();
        assert_eq!(refused(&ev), "empty stream id");
        let mut ev = message(NOW, "hi");
        ev.platform = 9;
        assert_eq!(refused(&ev), "unknown platform 9");
        ev.platform = Platform::Unspecified as i32;
        assert_eq!(refused(&ev), "unknown platform 0");
        let mut ev = message(NOW, "hi");
        ev.kind = None;
        assert_eq!(refused(&ev), "event without a kind");
        let mut ev = message(NOW, "hi");
        ev.event_id = "e".repeat(300);
        assert!(refused(&ev).starts_with("event id of 300 bytes"));
    }

    #[test]
    fn an_event_far_behind_its_stream_is_refused_and_late_chat_passes() {
        let hour = DEFAULT_MAX_BEHIND_MS;
        // The stream's first event, then chat 59 minutes late.
        assert_eq!(admit_behind(&message(1, "hi"), None, hour), Ok(()));
        assert_eq!(
            admit_behind(&message(NOW - 59 * 60_000, "hi"), Some(NOW), hour),
            Ok(())
        );
        // Dated 1970 (1 ms), and an hour and a second late.
        let e = admit_behind(&message(1, "hi"), Some(NOW), hour)
            .unwrap_err()
            .0;
        assert!(
            e.contains("behind its stream's clock") && e.contains("(at most 3600 s)"),
            "{e}"
        );
        assert!(admit_behind(&message(NOW - hour - 1_000, "hi"), Some(NOW), hour).is_err());
        // No time: applies at the stream's time.
        let mut room = message(0, "");
        room.kind = Some(Kind::RoomState(RoomState::default()));
        assert_eq!(admit_behind(&room, Some(NOW), hour), Ok(()));
        // Clocks at the bounds do not overflow.
        assert!(admit_behind(&message(1, "hi"), Some(i64::MAX), hour).is_err());
        assert_eq!(
            admit_behind(&message(i64::MAX, "hi"), Some(i64::MIN), hour),
            Ok(())
        );
    }
}
