//! Twitch IRC (with IRCv3 tags) to [`ChatEvent`].
//!
//! PRIVMSG (with `/me` ACTION, bits, replies), CLEARCHAT (timeout, permanent
//! ban, whole-chat clear), CLEARMSG, ROOMSTATE (full and partial) and
//! USERNOTICE (subs, gifts, raids, announcements, ...) become events. Other
//! commands (PING, JOIN, USERSTATE, NOTICE, numerics, ...) are recognised and
//! skipped. A bad tag value drops that one field, never the line.

use spamscope_proto::v1::{
    Author, ChatCleared, ChatEvent, ChatMessage, EmoteRange, MessageDeleted, Platform, ReplyParent,
    Roles, RoomState, Support, SupportKind, UserBanned, UserNotice, UserTimedOut, chat_event::Kind,
};

use crate::ParseError;
use crate::irc::IrcLine;

/// Parses one raw IRC line. `Ok(None)` for lines that are valid IRC but carry
/// no chat event (PING, JOIN, USERSTATE, ...).
pub fn parse_line(line: &str) -> Result<Option<ChatEvent>, ParseError> {
    let irc = IrcLine::parse(line)?;
    let kind_and_target = match irc.command {
        "PRIVMSG" => privmsg(&irc)?,
        "CLEARCHAT" => clearchat(&irc),
        "CLEARMSG" => clearmsg(&irc)?,
        "ROOMSTATE" => Kind::RoomState(roomstate(&irc)),
        "USERNOTICE" => usernotice(&irc),
        other if is_known_command(other) => return Ok(None),
        // Unknown upper-case commands are future Twitch features; anything
        // else is not Twitch IRC at all.
        other if other.bytes().all(|b| b.is_ascii_uppercase()) => return Ok(None),
        other => return Err(ParseError::new(format!("unknown IRC command {other:?}"))),
    };
    let channel = irc
        .param(0)
        .and_then(|c| c.strip_prefix('#'))
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ParseError::new(format!("{} without a #channel", irc.command)))?;
    let ts_ms = irc
        .raw_tag("tmi-sent-ts")
        .or_else(|| irc.raw_tag("rm-received-ts"))
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0);
    let channel_id = irc
        .tag("room-id")
        .map(|c| c.into_owned())
        .unwrap_or_default();
    let event_id = match irc.tag_nonempty("id") {
        Some(id) => id.into_owned(),
        // CLEARCHAT / ROOMSTATE carry no id: derive a stable one from the
        // line's content, so that two ingest replicas of one channel produce
        // the same id and two different lines do not (ROOMSTATE carries no
        // timestamp: by time alone every slow-mode change after the first
        // was dropped as a duplicate).
        None => format!(
            "{}:{}:{}:{}:{:016x}",
            irc.command.to_ascii_lowercase(),
            channel,
            ts_ms,
            irc.raw_tag("target-user-id").unwrap_or(""),
            irc.content_hash()
        ),
    };
    Ok(Some(ChatEvent {
        platform: Platform::Twitch as i32,
        stream_id: channel.to_ascii_lowercase(),
        channel_id,
        event_id,
        ts_ms,
        kind: Some(kind_and_target),
    }))
}

/// Commands Twitch sends that carry no chat event (matched case-insensitively).
const SKIPPED_COMMANDS: &[&str] = &[
    "PING",
    "PONG",
    "JOIN",
    "PART",
    "USERSTATE",
    "GLOBALUSERSTATE",
    "NOTICE",
    "WHISPER",
    "RECONNECT",
    "CAP",
    "HOSTTARGET",
    "MODE",
    "NAMES",
    "PASS",
    "NICK",
];

/// True for commands Twitch IRC is known to send, chat or not.
pub fn is_known_command(command: &str) -> bool {
    (command.len() == 3 && command.bytes().all(|b| b.is_ascii_digit()))
        || [
            "PRIVMSG",
            "CLEARCHAT",
            "CLEARMSG",
            "ROOMSTATE",
            "USERNOTICE",
        ]
        .iter()
        .chain(SKIPPED_COMMANDS)
        .any(|k| k.eq_ignore_ascii_case(command))
}

fn author(irc: &IrcLine<'_>) -> Author {
    let login = irc
        .tag_nonempty("login")
        .map(|l| l.into_owned())
        .or_else(|| irc.nick().map(str::to_owned))
        .unwrap_or_default();
    let display_name = irc
        .tag("display-name")
        .map(|d| d.trim().to_owned())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| login.clone());
    Author {
        user_id: irc
            .tag("user-id")
            .map(|u| u.into_owned())
            .unwrap_or_default(),
        login,
        display_name,
        roles: Some(roles(irc)),
    }
}

/// What one Twitch badge (its set name: `moderator`, `subscriber`, ...)
/// says about its holder; the same names in IRC tags and VOD chat JSON.
pub(crate) fn apply_badge(r: &mut Roles, name: &str) {
    match name {
        "broadcaster" => r.broadcaster = true,
        "moderator" => r.moderator = true,
        "vip" => r.vip = true,
        "subscriber" | "founder" => r.member = true,
        "staff" | "admin" | "global_mod" => r.staff = true,
        "partner" => r.verified = true,
        // Unknown badges (events, games, bits tiers...) say nothing about
        // trust; they are dropped, the message is kept.
        _ => {}
    }
}

fn roles(irc: &IrcLine<'_>) -> Roles {
    let mut r = Roles::default();
    for badge in irc.raw_tag("badges").unwrap_or("").split(',') {
        apply_badge(&mut r, badge.split_once('/').map_or(badge, |(n, _)| n));
    }
    for info in irc.raw_tag("badge-info").unwrap_or("").split(',') {
        if let Some(("subscriber" | "founder", months)) = info.split_once('/') {
            r.member_months = months.parse().unwrap_or(0);
        }
    }
    if irc.raw_tag("mod") == Some("1") {
        r.moderator = true;
    }
    if irc.raw_tag("first-msg") == Some("1") {
        r.first_time_chatter = true;
    }
    r
}

/// `emotes=25:0-4,12-16/1902:6-10`; IRC ranges are inclusive and in chars.
/// Ranges outside the text (real Twitch sends some) are dropped.
fn emotes(irc: &IrcLine<'_>, text: &str) -> Vec<EmoteRange> {
    let raw = irc.raw_tag("emotes").unwrap_or("");
    if raw.is_empty() {
        return Vec::new();
    }
    let len = text.chars().count() as u32;
    let mut out = Vec::new();
    for group in raw.split('/') {
        let Some((id, ranges)) = group.split_once(':') else {
            continue;
        };
        for range in ranges.split(',') {
            let Some((a, b)) = range.split_once('-') else {
                continue;
            };
            let (Ok(start), Ok(last)) = (a.parse::<u32>(), b.parse::<u32>()) else {
                continue;
            };
            if start <= last && last < len {
                out.push(EmoteRange {
                    emote_id: id.to_owned(),
                    start,
                    end: last + 1,
                });
            }
        }
    }
    out.sort_by_key(|e| e.start);
    out
}

fn privmsg(irc: &IrcLine<'_>) -> Result<Kind, ParseError> {
    let raw_text = irc
        .param(1)
        .ok_or_else(|| ParseError::new("PRIVMSG without text"))?;
    let (text, action) = match raw_text.strip_prefix("\u{1}ACTION ") {
        Some(t) => (t.strip_suffix('\u{1}').unwrap_or(t), true),
        None => (raw_text, false),
    };
    let reply_parent = irc
        .tag_nonempty("reply-parent-msg-id")
        .map(|id| ReplyParent {
            message_id: id.into_owned(),
            user_login: irc
                .tag("reply-parent-user-login")
                .map(|l| l.into_owned())
                .unwrap_or_default(),
            text: irc
                .tag("reply-parent-msg-body")
                .map(|l| l.into_owned())
                .unwrap_or_default(),
        });
    Ok(Kind::Message(ChatMessage {
        author: Some(author(irc)),
        text: text.to_owned(),
        emotes: emotes(irc, text),
        action,
        reply_parent,
        bits: irc
            .raw_tag("bits")
            .and_then(|b| b.parse().ok())
            .unwrap_or(0),
    }))
}

fn clearchat(irc: &IrcLine<'_>) -> Kind {
    let Some(login) = irc.param(1).filter(|l| !l.is_empty()) else {
        return Kind::ChatCleared(ChatCleared {});
    };
    let user_id = irc
        .tag("target-user-id")
        .map(|u| u.into_owned())
        .unwrap_or_default();
    let user_login = login.to_ascii_lowercase();
    match irc
        .raw_tag("ban-duration")
        .and_then(|d| d.parse::<u32>().ok())
    {
        Some(duration_s) => Kind::UserTimedOut(UserTimedOut {
            user_id,
            user_login,
            duration_s,
        }),
        None => Kind::UserBanned(UserBanned {
            user_id,
            user_login,
        }),
    }
}

fn clearmsg(irc: &IrcLine<'_>) -> Result<Kind, ParseError> {
    let target = irc
        .tag_nonempty("target-msg-id")
        .ok_or_else(|| ParseError::new("CLEARMSG without target-msg-id"))?;
    let text = irc.param(1).unwrap_or("");
    let text = text
        .strip_prefix("\u{1}ACTION ")
        .map(|t| t.strip_suffix('\u{1}').unwrap_or(t))
        .unwrap_or(text);
    Ok(Kind::MessageDeleted(MessageDeleted {
        target_message_id: target.into_owned(),
        user_login: irc.tag("login").map(|l| l.into_owned()).unwrap_or_default(),
        text: text.to_owned(),
        // Twitch authors cannot delete their own messages: CLEARMSG is a
        // moderator's.
        ..MessageDeleted::default()
    }))
}

fn roomstate(irc: &IrcLine<'_>) -> RoomState {
    let num = |k: &str| irc.raw_tag(k).and_then(|v| v.parse::<i64>().ok());
    let flag = |k: &str| num(k).map(|v| v != 0);
    RoomState {
        slow_mode_s: num("slow").and_then(|v| u32::try_from(v).ok()),
        followers_only_min: num("followers-only").and_then(|v| i32::try_from(v).ok()),
        members_only: flag("subs-only"),
        emote_only: flag("emote-only"),
        unique_chat: flag("r9k"),
    }
}

fn usernotice(irc: &IrcLine<'_>) -> Kind {
    let msg_id = irc
        .tag("msg-id")
        .map(|m| m.into_owned())
        .unwrap_or_default();
    let num = |k: &str| {
        irc.raw_tag(k)
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    };
    let text = irc.param(1).unwrap_or("").to_owned();
    let support = |kind: SupportKind| Support {
        author: Some(author(irc)),
        kind: kind as i32,
        months: num("msg-param-cumulative-months").max(num("msg-param-months")),
        gift_count: num("msg-param-mass-gift-count"),
        recipient_login: irc
            .tag("msg-param-recipient-user-name")
            .map(|r| r.into_owned())
            .unwrap_or_default(),
        tier: irc
            .tag("msg-param-sub-plan")
            .map(|t| t.into_owned())
            .unwrap_or_default(),
        text: text.clone(),
        ..Support::default()
    };
    match msg_id.as_str() {
        "sub" | "giftpaidupgrade" | "anongiftpaidupgrade" | "primepaidupgrade" => {
            Kind::Support(support(SupportKind::Subscription))
        }
        "resub" | "extendsub" => Kind::Support(support(SupportKind::Resubscription)),
        "subgift" | "anonsubgift" => Kind::Support(Support {
            gift_count: 1,
            months: num("msg-param-gift-months").max(1),
            ..support(SupportKind::GiftedSub)
        }),
        "submysterygift" | "anonsubmysterygift" => {
            Kind::Support(support(SupportKind::GiftedSubsBatch))
        }
        _ => Kind::UserNotice(UserNotice {
            author: Some(author(irc)),
            notice_kind: msg_id.clone(),
            text,
            system_text: irc
                .tag("system-msg")
                .map(|s| s.into_owned())
                .unwrap_or_default(),
            viewer_count: num("msg-param-viewerCount"),
        }),
    }
}

/// Ids of the lines Twitch sends with neither id nor time (ROOMSTATE).
/// Their content alone repeats when a setting goes back to an earlier value
/// (slow mode on, off, on again), and the bus drops the repeat as a
/// duplicate. Through this, each such event's id also names the previous
/// such line of its channel and how many times this same change was seen:
/// every change gets an id of its own, and two readers that saw the same
/// lines (two ingest replicas of a channel) give the same ids.
#[derive(Debug, Default)]
pub struct UntimedIds {
    channels: std::collections::HashMap<String, UntimedChannel>,
}

#[derive(Debug, Default)]
struct UntimedChannel {
    /// Id (as parsed) of the channel's last untimed line.
    last: String,
    /// Times each change (previous id, id) was seen.
    seen: std::collections::HashMap<(String, String), u32>,
}

/// Changes remembered per channel; past it the counts start over (a
/// reader that saw fewer changes gives other ids: a repeated event, never
/// a lost one).
const UNTIMED_CHANGES: usize = 4096;
/// Channels remembered; past it the table starts over.
const UNTIMED_CHANNELS: usize = 100_000;

impl UntimedIds {
    /// Gives `ev` its id if it is an untimed line of [`parse_line`]'s.
    pub fn apply(&mut self, ev: &mut ChatEvent) {
        if ev.ts_ms != 0 || !matches!(ev.kind, Some(Kind::RoomState(_))) {
            return;
        }
        if self.channels.len() >= UNTIMED_CHANNELS && !self.channels.contains_key(&ev.stream_id) {
            self.channels.clear();
        }
        let ch = self.channels.entry(ev.stream_id.clone()).or_default();
        if ch.seen.len() >= UNTIMED_CHANGES {
            ch.seen.clear();
        }
        let change = (std::mem::take(&mut ch.last), ev.event_id.clone());
        let n = ch.seen.entry(change.clone()).or_insert(0);
        *n += 1;
        let previous = xxhash_rust::xxh3::xxh3_64(change.0.as_bytes());
        ch.last = change.1;
        ev.event_id = format!("{}:after:{previous:016x}:{n}", ev.event_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> ChatEvent {
        parse_line(line).unwrap().unwrap()
    }

    #[test]
    fn privmsg_with_roles_emotes_and_action() {
        let ev = parse(
            "@badge-info=subscriber/22;badges=moderator/1,subscriber/12;display-name=randers;emotes=25:0-4,12-16;id=abc;mod=1;room-id=11148817;tmi-sent-ts=1594555275886;user-id=40286300 :randers!randers@randers.tmi.twitch.tv PRIVMSG #pajlada :\u{1}ACTION Kappa Keepo Kappa\u{1}",
        );
        assert_eq!(ev.stream_id, "pajlada");
        assert_eq!(ev.ts_ms, 1_594_555_275_886);
        let Some(Kind::Message(m)) = ev.kind else {
            panic!("not a message")
        };
        assert!(m.action);
        assert_eq!(m.text, "Kappa Keepo Kappa");
        let roles = m.author.unwrap().roles.unwrap();
        assert!(roles.moderator && roles.member && !roles.vip);
        assert_eq!(roles.member_months, 22);
        assert_eq!(m.emotes.len(), 2);
        assert_eq!((m.emotes[1].start, m.emotes[1].end), (12, 17));
    }

    #[test]
    fn out_of_range_emotes_are_dropped_not_the_message() {
        let ev = parse("@badges=;emotes=25:41-45;id=x;tmi-sent-ts=1 :a!a@a PRIVMSG #c :short text");
        let Some(Kind::Message(m)) = ev.kind else {
            panic!()
        };
        assert!(m.emotes.is_empty());
        assert_eq!(m.text, "short text");
    }

    #[test]
    fn clearchat_timeout_ban_and_clear() {
        let to = parse(
            "@ban-duration=150;room-id=1;target-user-id=9;tmi-sent-ts=5 :tmi.twitch.tv CLEARCHAT #x :Onche",
        );
        assert!(
            matches!(to.kind, Some(Kind::UserTimedOut(UserTimedOut { duration_s: 150, ref user_login, .. })) if user_login == "onche")
        );
        let ban =
            parse("@room-id=1;target-user-id=9;tmi-sent-ts=5 :tmi.twitch.tv CLEARCHAT #x :onche");
        assert!(matches!(ban.kind, Some(Kind::UserBanned(_))));
        let clear = parse("@room-id=1;tmi-sent-ts=5 :tmi.twitch.tv CLEARCHAT #x");
        assert!(matches!(clear.kind, Some(Kind::ChatCleared(_))));
        assert_ne!(to.event_id, clear.event_id);
    }

    #[test]
    fn roomstate_changes_without_timestamps_get_different_ids() {
        let slow = |n: u32| {
            parse_line(&format!(
                "@room-id=1;slow={n} :tmi.twitch.tv ROOMSTATE #forsen"
            ))
            .unwrap()
            .unwrap()
        };
        assert_eq!(slow(30).ts_ms, 0);
        assert_ne!(slow(30).event_id, slow(0).event_id);
        // The same line (two ingest replicas) keeps one id, also with its
        // tags in another order (another IRC client's serialisation).
        assert_eq!(slow(30).event_id, slow(30).event_id);
        let reordered = parse_line("@slow=30;room-id=1 :tmi.twitch.tv ROOMSTATE #forsen")
            .unwrap()
            .unwrap();
        assert_eq!(reordered.event_id, slow(30).event_id);
    }

    /// Slow mode on, off, on, off: every change is an event of its own
    /// (the third had the first's id and was dropped as a duplicate), and
    /// a second reader of the same lines gives the same ids.
    #[test]
    fn a_setting_that_comes_back_is_a_new_event() {
        let lines = [30, 0, 30, 0, 30]
            .map(|n| format!("@room-id=1;slow={n} :tmi.twitch.tv ROOMSTATE #forsen"));
        let ids = || {
            let mut u = UntimedIds::default();
            lines
                .iter()
                .map(|l| {
                    let mut ev = parse_line(l).unwrap().unwrap();
                    u.apply(&mut ev);
                    ev.event_id
                })
                .collect::<Vec<_>>()
        };
        let first = ids();
        let distinct: std::collections::BTreeSet<&String> = first.iter().collect();
        assert_eq!(distinct.len(), lines.len(), "{first:?}");
        assert_eq!(ids(), first);
        // Timed events keep their ids.
        let mut u = UntimedIds::default();
        let mut msg = parse("@id=abc;tmi-sent-ts=5 :a!a@a PRIVMSG #forsen :hi");
        u.apply(&mut msg);
        assert_eq!(msg.event_id, "abc");
    }

    #[test]
    fn roomstate_partial_leaves_fields_unset() {
        let ev = parse("@room-id=1;slow=5 :tmi.twitch.tv ROOMSTATE #r");
        let Some(Kind::RoomState(rs)) = ev.kind else {
            panic!()
        };
        assert_eq!(rs.slow_mode_s, Some(5));
        assert_eq!(rs.emote_only, None);
    }

    #[test]
    fn skips_non_chat_commands() {
        for l in [
            ":tmi.twitch.tv PING",
            ":tmi.twitch.tv 001 justinfan :Welcome, GLHF!",
            "@badge-info=;badges=;color=;display-name=x;mod=0;subscriber=0;user-type= :tmi.twitch.tv USERSTATE #r",
        ] {
            assert_eq!(parse_line(l).unwrap(), None, "{l}");
        }
    }

    #[test]
    fn privmsg_without_channel_is_an_error() {
        assert!(parse_line(":a!a@a PRIVMSG :hi").is_err());
    }
}
