//! chat-downloader's JSON, every version found in archives, to [`ChatEvent`].
//!
//! - **Current releases** (0.2): `action_type` (`add_chat_item`,
//!   `mark_chat_item_as_deleted`, ...), `message_type` (`text_message`,
//!   `paid_message`, `deleted_message`, `ban_user`, ...), `message_id`, a
//!   nested `author: {id, name, display_name, badges: [{title | name}]}`,
//!   `timestamp` in microseconds. Twitch items have numeric author ids and
//!   Twitch badge names; YouTube's are `UC…` channel ids.
//! - **2020 development builds**: flat `author`, `author_id`,
//!   `author_badges`; `id`; message types named after the innertube action
//!   (`mark_chat_item_as_deleted_action`, `target_id`), and dumps whose
//!   deletions say `message_type: "deleted_state_message"` beside their
//!   `action_type`.
//! - **2020 first releases**: no `action_type`, `message_type` or `id` at
//!   all. YouTube items have `author`, `author_id`, `message`, `timestamp`,
//!   `time_in_seconds`; Twitch VOD items `author_name`,
//!   `author_display_name`, `author_type`, `id` (the author's, not the
//!   message's) and a `timestamp` that is the author's account creation
//!   time, constant per author: their time is `time_in_seconds`, an offset
//!   into the video, as the file holds no wall-clock time.
//!
//! The kind is read from `action_type` where present, then `message_type`,
//! then the item's shape. Deletions carry no time: they get the time of the
//! item before. A deletion that shows `[message retracted]` is the author's
//! own and is marked [`MessageDeleted::by_author`].

use serde_json::Value;
use spamscope_proto::v1::{
    Author, ChatCleared, ChatEvent, ChatMessage, EmoteRange, MessageDeleted, Platform, Roles,
    Support, SupportKind, UserBanned, UserMessagesRemoved, UserTimedOut, chat_event::Kind,
};

use crate::ParseError;
use crate::youtube::{StreamContext, member_months, parse_amount, retracted};

/// True when `v` looks like one chat-downloader item of any version.
pub fn looks_like_item(v: &Value) -> bool {
    let Some(o) = v.as_object() else {
        return false;
    };
    if o.contains_key("message_type") || o.contains_key("action_type") {
        return true;
    }
    // First releases: a message with an author and a time.
    o.get("message").is_some_and(Value::is_string)
        && ["author", "author_id", "author_name"]
            .iter()
            .any(|k| o.contains_key(*k))
        && (o.contains_key("timestamp") || o.contains_key("time_in_seconds"))
}

/// The item's kind as the file names it (`action_type`, else
/// `message_type`, else `message` for a first-release item): what a skipped
/// item is counted under.
pub fn kind_name(item: &Value) -> String {
    let s = |k: &str| item.get(k).and_then(Value::as_str);
    match (s("action_type"), s("message_type")) {
        (Some(a), Some(m)) if a == "add_chat_item" || a == "replace_chat_item" => m.to_owned(),
        (Some(a), _) => a.to_owned(),
        (None, Some(m)) => m.to_owned(),
        (None, None) => "message".to_owned(),
    }
}

/// Kinds chat-downloader writes that are not chat (banners, tickers that
/// repeat paid items, engagement notes, Twitch notices and room states it
/// does not describe fully): skipped on purpose. Other skipped kinds are
/// new to this parser and are named on stderr.
pub fn is_known_kind(kind: &str) -> bool {
    kind.starts_with("ticker_")
        || kind.ends_with("_banner")
        || kind.ends_with("_tooltip")
        || matches!(
            kind,
            "add_live_chat_ticker_item"
                | "add_banner_to_live_chat_command"
                | "remove_banner_for_live_chat_command"
                | "show_live_chat_tooltip_command"
                | "show_live_chat_action_panel_action"
                | "update_live_chat_poll_action"
                | "close_live_chat_action_panel_action"
                | "banner"
                | "banner_header"
                | "viewer_engagement_message"
                | "placeholder_item"
                | "mode_change_message"
                | "donation_announcement"
                | "purchased_product_message"
                | "membership_gift_purchase"
                | "membership_gift_redemption"
                | "poll"
                | "room_state"
                | "user_state"
                | "user_notice"
                | "notice"
                | "host_target"
                | "successful_login"
                | "reconnect"
                | "crowd_chant"
                | "subscription"
                | "resubscription"
                | "subscription_gift"
                | "mystery_subscription_gift"
                | "anonymous_subscription_gift"
                | "anonymous_mystery_subscription_gift"
                | "extend_subscription"
                | "gift_paid_upgrade"
                | "prime_paid_upgrade"
                | "raid"
                | "ritual"
                | "bits_badge_tier"
        )
}

/// What an item is, from its action, message type and shape.
enum What {
    Message,
    Paid(SupportKind),
    Membership,
    Deleted,
    AuthorRemoved,
    /// Twitch CLEARCHAT with a user: a timeout with `ban_duration`, else a ban.
    Ban,
    ChatCleared,
    Skip,
}

fn what(item: &Value, platform: Platform) -> What {
    let s = |k: &str| item.get(k).and_then(Value::as_str);
    let by_action = match s("action_type") {
        Some("mark_chat_item_as_deleted") => Some(What::Deleted),
        Some("mark_chat_items_by_author_as_deleted") => Some(What::AuthorRemoved),
        Some("add_chat_item" | "replace_chat_item") | None => None,
        Some(_) => Some(What::Skip),
    };
    if let Some(w) = by_action {
        return w;
    }
    match s("message_type") {
        Some("text_message") => What::Message,
        Some("paid_message") => What::Paid(SupportKind::SuperChat),
        Some("paid_sticker") => What::Paid(SupportKind::SuperSticker),
        Some("membership_item") => What::Membership,
        Some("mark_chat_item_as_deleted_action" | "deleted_message" | "delete_message") => {
            What::Deleted
        }
        Some("mark_chat_items_by_author_as_deleted_action") => What::AuthorRemoved,
        Some("ban_user") if platform == Platform::Youtube => What::AuthorRemoved,
        Some("ban_user") => What::Ban,
        Some("clear_chat") => What::ChatCleared,
        // Without its action: a deletion names its target, a removal only
        // the author.
        Some("deleted_state_message") if target_id(item).is_some() => What::Deleted,
        Some("deleted_state_message") => What::AuthorRemoved,
        Some(_) => What::Skip,
        None if item.get("message").is_some_and(Value::is_string) => What::Message,
        None => What::Skip,
    }
}

fn target_id(item: &Value) -> Option<&str> {
    item.get("target_message_id")
        .or_else(|| item.get("target_id"))
        .and_then(Value::as_str)
}

/// First-release Twitch VOD items: `author_type` and no message type.
pub fn is_legacy_twitch(item: &Value) -> bool {
    item.get("author_type").is_some() && item.get("message_type").is_none()
}

/// Which platform the item comes from: YouTube author ids are channel ids
/// (`UC` and 22 more), Twitch's are numbers; items without one are told by
/// the fields only Twitch items have.
pub fn platform(item: &Value) -> Platform {
    let id = author_id(item);
    if id.len() == 24 && id.starts_with("UC") {
        return Platform::Youtube;
    }
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) {
        return Platform::Twitch;
    }
    let twitchy = item.get("author_type").is_some()
        || item.get("author_display_name").is_some()
        || item.pointer("/author/display_name").is_some()
        || item.get("ban_duration").is_some()
        || item.get("banned_user").is_some();
    if twitchy {
        Platform::Twitch
    } else {
        Platform::Youtube
    }
}

fn author_id(item: &Value) -> &str {
    let nested = item.get("author").filter(|a| a.is_object());
    nested
        .and_then(|a| a.get("id"))
        .or_else(|| item.get("author_id"))
        .or_else(|| item.get("external_channel_id"))
        .or_else(|| is_legacy_twitch(item).then(|| item.get("id")).flatten())
        .and_then(|v| match v {
            Value::String(s) => Some(s.as_str()),
            _ => None,
        })
        .unwrap_or("")
}

/// Parses one item. `ts_fallback_ms` stands in for a missing time (the
/// time of the item before).
pub fn parse_item(
    item: &Value,
    ctx: &StreamContext,
    ts_fallback_ms: i64,
) -> Result<Option<ChatEvent>, ParseError> {
    if !item.is_object() {
        return Err(ParseError::new("item is not a JSON object"));
    }
    let platform = platform(item);
    let text = item.get("message").and_then(Value::as_str).unwrap_or("");
    let kind = match what(item, platform) {
        What::Skip => return Ok(None),
        What::Message => Kind::Message(ChatMessage {
            author: Some(author(item, platform)),
            text: text.to_owned(),
            emotes: emotes(item, text),
            ..ChatMessage::default()
        }),
        What::Paid(kind) => {
            let amount_text = item
                .pointer("/money/text")
                .or_else(|| item.get("purchase_amount_text"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let (mut amount_micros, mut currency) = parse_amount(&amount_text);
            if let Some(a) = item.pointer("/money/amount").and_then(Value::as_f64) {
                amount_micros = (a * 1e6).round() as i64;
            }
            if let Some(c) = item.pointer("/money/currency").and_then(Value::as_str) {
                currency = c.to_owned();
            }
            Kind::Support(Support {
                author: Some(author(item, platform)),
                kind: kind as i32,
                amount_micros,
                currency,
                amount_text,
                text: text.to_owned(),
                ..Support::default()
            })
        }
        What::Membership => {
            let a = author(item, platform);
            let months = a.roles.as_ref().map_or(0, |r| r.member_months);
            let kind = if text.is_empty() {
                SupportKind::Membership
            } else {
                SupportKind::MembershipMilestone
            };
            Kind::Support(Support {
                author: Some(a),
                kind: kind as i32,
                months,
                text: text.to_owned(),
                ..Support::default()
            })
        }
        What::Deleted => Kind::MessageDeleted(MessageDeleted {
            target_message_id: target_id(item)
                .ok_or_else(|| ParseError::new("deletion without target_message_id"))?
                .to_owned(),
            // Twitch's CLEARMSG says whose message it was.
            user_login: str_field(item, &["author_name"]),
            by_author: platform == Platform::Youtube && retracted(text),
            ..MessageDeleted::default()
        }),
        What::AuthorRemoved => {
            let id = author_id(item);
            if id.is_empty() {
                return Err(ParseError::new("author removal without author_id"));
            }
            Kind::UserMessagesRemoved(UserMessagesRemoved {
                user_id: id.to_owned(),
            })
        }
        What::Ban => {
            let user_id = str_field(item, &["target_author_id", "author_id"]);
            let user_login = str_field(item, &["banned_user", "author_name"]);
            if user_id.is_empty() && user_login.is_empty() {
                return Err(ParseError::new("ban without the user"));
            }
            match item.get("ban_duration").and_then(Value::as_u64) {
                Some(d) => Kind::UserTimedOut(UserTimedOut {
                    user_id,
                    user_login,
                    duration_s: u32::try_from(d).unwrap_or(u32::MAX),
                }),
                None => Kind::UserBanned(UserBanned {
                    user_id,
                    user_login,
                }),
            }
        }
        What::ChatCleared => Kind::ChatCleared(ChatCleared {}),
    };
    let ts_ms = time_ms(item)?.unwrap_or(ts_fallback_ms);
    let event_id = match item
        .get("message_id")
        .or_else(|| (!is_legacy_twitch(item)).then(|| item.get("id")).flatten())
        .and_then(Value::as_str)
    {
        Some(id) => id.to_owned(),
        None => match &kind {
            Kind::MessageDeleted(d) => format!("deleted:{}", d.target_message_id),
            Kind::UserMessagesRemoved(r) => format!("removed:{}:{ts_ms}", r.user_id),
            // First releases wrote no id: one from what the item says, so
            // the same item read twice is the same event.
            _ => format!(
                "cd:{:016x}",
                xxhash_rust::xxh3::xxh3_64(
                    format!("{}\u{1f}{ts_ms}\u{1f}{text}", author_id(item)).as_bytes()
                )
            ),
        },
    };
    Ok(Some(ChatEvent {
        platform: platform as i32,
        stream_id: ctx.video_id.clone(),
        channel_id: ctx.channel_id.clone(),
        event_id,
        ts_ms,
        kind: Some(kind),
    }))
}

/// The item's time in milliseconds: `timestamp` (microseconds), except in
/// first-release Twitch VOD items, whose time is `time_in_seconds` (at
/// least 1 ms: a time of 0 reads as none). `None` when the item has none.
fn time_ms(item: &Value) -> Result<Option<i64>, ParseError> {
    if is_legacy_twitch(item) {
        return match item.get("time_in_seconds") {
            Some(t) => t
                .as_f64()
                .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e12)
                .map(|s| Some(((s * 1000.0).round() as i64).max(1)))
                .ok_or_else(|| ParseError::new("time_in_seconds is not a number of seconds")),
            None => Ok(None),
        };
    }
    match item.get("timestamp") {
        Some(t) => t
            .as_i64()
            .map(|us| Some(us / 1000))
            .ok_or_else(|| ParseError::new("timestamp is not an integer")),
        None => Ok(None),
    }
}

/// The first of `keys` that holds a string (or a number, as ids sometimes
/// are), or "".
fn str_field(item: &Value, keys: &[&str]) -> String {
    keys.iter()
        .find_map(|k| match item.get(*k)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .unwrap_or_default()
}

fn author(item: &Value, platform: Platform) -> Author {
    let nested = item.get("author").filter(|a| a.is_object());
    let get = |nested_key: &str, flat: &[&str]| -> String {
        nested
            .and_then(|a| a.get(nested_key))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| str_field(item, flat))
    };
    let name = get("name", &["author_name", "author"]);
    let display = get("display_name", &["author_display_name"]);
    let mut roles = Roles::default();
    let badges = nested
        .and_then(|a| a.get("badges"))
        .or_else(|| item.get("author_badges"))
        .or_else(|| item.get("badges"));
    for badge in badge_names(badges) {
        match platform {
            Platform::Twitch => crate::twitch::apply_badge(&mut roles, &badge.to_lowercase()),
            _ => match badge.as_str() {
                "Owner" => roles.broadcaster = true,
                "Moderator" => roles.moderator = true,
                "Verified" => roles.verified = true,
                t if t.contains("ember") => {
                    roles.member = true;
                    roles.member_months = member_months(t);
                }
                _ => {}
            },
        }
    }
    // Twitch badges name their set; the sub badge's version is months.
    if platform == Platform::Twitch
        && let Some(Value::Array(list)) = badges
    {
        for b in list {
            let set = b.get("name").and_then(Value::as_str);
            if matches!(set, Some("subscriber" | "founder")) {
                roles.member_months = str_field(b, &["version"]).parse().unwrap_or(0);
            }
        }
    }
    Author {
        user_id: author_id(item).to_owned(),
        display_name: if display.is_empty() {
            name.clone()
        } else {
            display
        },
        login: match platform {
            Platform::Twitch => name.to_lowercase(),
            _ => name,
        },
        roles: Some(roles),
    }
}

/// Badge names: `[{title}]` (YouTube), `[{name}]` (Twitch), `["title"]`, or
/// one string of titles separated by commas (first releases).
fn badge_names(badges: Option<&Value>) -> Vec<String> {
    match badges {
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(|b| match b {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => o
                    .get("name")
                    .or_else(|| o.get("title"))
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                _ => None,
            })
            .collect(),
        Some(Value::String(s)) => s.split(", ").map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// Emote positions: Twitch items list `locations` (`"0-4,12-16"`, inclusive
/// char ranges as in IRC); YouTube items only the emotes' names, found in
/// the text.
fn emotes(item: &Value, text: &str) -> Vec<EmoteRange> {
    let Some(list) = item.get("emotes").and_then(Value::as_array) else {
        return Vec::new();
    };
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let len = chars.len() as u32;
    let mut out = Vec::new();
    for e in list {
        let id = str_field(e, &["id"]);
        let locations = match e.get("locations") {
            Some(Value::String(s)) => s.split(',').map(str::to_owned).collect(),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        if !locations.is_empty() {
            for loc in locations {
                let Some((a, b)) = loc.split_once('-') else {
                    continue;
                };
                if let (Ok(start), Ok(last)) = (a.trim().parse::<u32>(), b.trim().parse::<u32>())
                    && start <= last
                    && last < len
                {
                    out.push(EmoteRange {
                        emote_id: id.clone(),
                        start,
                        end: last + 1,
                    });
                }
            }
        } else if let Some(name) = e
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            let width = name.chars().count() as u32;
            for (byte, _) in text.match_indices(name) {
                let start = chars.partition_point(|(b, _)| *b < byte) as u32;
                out.push(EmoteRange {
                    emote_id: id.clone(),
                    start,
                    end: start.saturating_add(width),
                });
            }
        }
    }
    out.sort_by_key(|e| e.start);
    out.dedup_by_key(|e| e.start);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: &Value) -> ChatEvent {
        parse_item(v, &StreamContext::default(), 77)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn flat_author_with_badges() {
        let v = json!({"action_type": "add_chat_item", "message_type": "text_message", "id": "i",
            "timestamp": 1_607_054_357_301_894_i64, "author": "ChilledCow", "author_id": "UCSJ4gkVC6NrvII8umztf0Ow",
            "author_badges": ["Verified", "Owner", "Member (10 months)"], "message": "hi"});
        let ev = parse(&v);
        assert_eq!(ev.ts_ms, 1_607_054_357_301);
        assert_eq!(ev.platform(), Platform::Youtube);
        let Some(Kind::Message(m)) = ev.kind else {
            panic!()
        };
        let a = m.author.unwrap();
        assert_eq!(a.user_id, "UCSJ4gkVC6NrvII8umztf0Ow");
        let r = a.roles.unwrap();
        assert!(r.verified && r.broadcaster && r.member && !r.moderator);
        assert_eq!(r.member_months, 10);
    }

    #[test]
    fn nested_author_and_paid_message() {
        let v = json!({"message_type": "paid_message", "message_id": "p", "timestamp": 5_000,
            "author": {"name": "n", "id": "UC2", "badges": [{"title": "Moderator"}]},
            "money": {"amount": 5.0, "currency": "USD", "text": "$5.00"}, "message": "thanks"});
        let ev = parse(&v);
        assert_eq!(ev.event_id, "p");
        let Some(Kind::Support(s)) = ev.kind else {
            panic!()
        };
        assert_eq!((s.amount_micros, s.currency.as_str()), (5_000_000, "USD"));
        assert!(s.author.unwrap().roles.unwrap().moderator);
    }

    #[test]
    fn deletions_of_every_version_and_who_made_them() {
        // Current: deleted_message with target_message_id.
        let v = json!({"action_type": "mark_chat_item_as_deleted", "message_type": "deleted_message",
            "message": "[message deleted]", "target_message_id": "T1"});
        let Some(Kind::MessageDeleted(d)) = parse(&v).kind else {
            panic!()
        };
        assert_eq!((d.target_message_id.as_str(), d.by_author), ("T1", false));
        // A dump's deleted_state_message with the author's own retraction.
        let v = json!({"action_type": "mark_chat_item_as_deleted", "message_type": "deleted_state_message",
            "message": "[message retracted]", "target_message_id": "T2"});
        let Some(Kind::MessageDeleted(d)) = parse(&v).kind else {
            panic!()
        };
        assert!(d.by_author);
        // 2020 development build: *_action and target_id; no time, so the
        // fallback.
        let v = json!({"action_type": "mark_chat_item_as_deleted", "message_type": "mark_chat_item_as_deleted_action",
            "message": "[message deleted]", "target_id": "T3"});
        let ev = parse(&v);
        assert_eq!(ev.ts_ms, 77);
        assert!(
            matches!(ev.kind, Some(Kind::MessageDeleted(ref d)) if d.target_message_id == "T3")
        );
        // Removal of an author, in the three spellings.
        for v in [
            json!({"message_type": "mark_chat_items_by_author_as_deleted_action", "author_id": "UC3"}),
            json!({"action_type": "mark_chat_items_by_author_as_deleted", "message_type": "deleted_state_message", "author_id": "UC3"}),
            json!({"action_type": "mark_chat_items_by_author_as_deleted", "message_type": "ban_user", "author": {"id": "UC3"}}),
        ] {
            assert!(
                matches!(parse(&v).kind, Some(Kind::UserMessagesRemoved(ref r)) if r.user_id == "UC3"),
                "{v}"
            );
        }
    }

    #[test]
    fn twitch_items_bans_timeouts_and_badges() {
        let msg = json!({"message_type": "text_message", "message_id": "m", "timestamp": 2_000_000,
            "author": {"id": "123", "name": "Foo", "display_name": "Foo",
                "badges": [{"name": "subscriber", "version": "12", "title": "1-Year Subscriber"}, {"name": "vip", "version": "1"}]},
            "message": "Kappa hi", "emotes": [{"id": "25", "name": "Kappa", "locations": "0-4"}]});
        let ev = parse(&msg);
        assert_eq!(ev.platform(), Platform::Twitch);
        let Some(Kind::Message(m)) = ev.kind else {
            panic!()
        };
        let a = m.author.unwrap();
        assert_eq!(a.login, "foo");
        let r = a.roles.unwrap();
        assert!(r.member && r.vip && r.member_months == 12);
        assert_eq!((m.emotes[0].start, m.emotes[0].end), (0, 5));

        let timeout = json!({"message_type": "ban_user", "timestamp": 3_000_000, "ban_duration": 600,
            "banned_user": "foo", "target_author_id": "123"});
        assert!(matches!(parse(&timeout).kind,
            Some(Kind::UserTimedOut(ref t)) if t.duration_s == 600 && t.user_login == "foo"));
        let ban = json!({"message_type": "ban_user", "timestamp": 3_000_000, "banned_user": "foo", "target_author_id": "123"});
        assert!(matches!(parse(&ban).kind, Some(Kind::UserBanned(_))));
        let clear = json!({"message_type": "clear_chat", "timestamp": 3_000_000, "author_display_name": "x"});
        assert!(matches!(parse(&clear).kind, Some(Kind::ChatCleared(_))));
    }

    #[test]
    fn first_releases_have_no_types_and_no_ids() {
        let yt = json!({"author": "A", "author_id": "UCg1sqBxUL4pSx_e7ucXL7dA", "message": "hi",
            "time_in_seconds": 14, "timestamp": 1_597_516_936_244_955_i64, "badges": "Member (6 months)"});
        assert!(looks_like_item(&yt));
        let ev = parse(&yt);
        assert_eq!(
            (ev.platform(), ev.ts_ms),
            (Platform::Youtube, 1_597_516_936_244)
        );
        assert!(ev.event_id.starts_with("cd:"));
        assert_eq!(ev.event_id, parse(&yt).event_id);
        let Some(Kind::Message(m)) = ev.kind else {
            panic!()
        };
        assert_eq!(m.author.unwrap().roles.unwrap().member_months, 6);

        // Twitch VOD: `id` is the author's, `timestamp` their account's
        // creation; the time is the video offset.
        let tw = json!({"author_display_name": "K", "author_name": "k", "author_type": "user",
            "id": "537016825", "message": "AGAIN?????", "time_in_seconds": 0.066,
            "timestamp": 1_590_747_502_976_216_i64});
        let ev = parse(&tw);
        assert_eq!((ev.platform(), ev.ts_ms), (Platform::Twitch, 66));
        let Some(Kind::Message(m)) = ev.kind else {
            panic!()
        };
        assert_eq!(m.author.unwrap().user_id, "537016825");
    }

    #[test]
    fn skipped_kinds_are_named() {
        let ticker = json!({"action_type": "add_live_chat_ticker_item", "message_type": "ticker_paid_message_item"});
        assert!(
            parse_item(&ticker, &StreamContext::default(), 0)
                .unwrap()
                .is_none()
        );
        assert_eq!(kind_name(&ticker), "add_live_chat_ticker_item");
        assert!(is_known_kind(&kind_name(&ticker)));
        let new = json!({"action_type": "add_chat_item", "message_type": "hologram_message"});
        assert!(
            parse_item(&new, &StreamContext::default(), 0)
                .unwrap()
                .is_none()
        );
        assert_eq!(kind_name(&new), "hologram_message");
        assert!(!is_known_kind("hologram_message"));
    }

    #[test]
    fn bad_timestamp_is_malformed() {
        let bad = json!({"message_type": "text_message", "id": "x", "timestamp": "soon"});
        assert!(parse_item(&bad, &StreamContext::default(), 0).is_err());
    }
}
