//! YouTube innertube live-chat actions (`get_live_chat` responses) to
//! [`ChatEvent`].
//!
//! Add item (text, paid message, paid sticker, membership item and
//! milestone, gifted memberships, mode changes), mark item deleted, mark
//! items by author deleted, replace item. Ticker, banner, poll and tooltip
//! actions are recognised and skipped (tickers repeat items already added).

use serde_json::Value;
use spamscope_proto::v1::{
    Author, ChatEvent, ChatMessage, EmoteRange, MessageDeleted, Platform, Roles, RoomState,
    Support, SupportKind, UserMessagesRemoved, chat_event::Kind,
};

use crate::ParseError;

/// What a YouTube action does not say about itself: which stream it is in.
#[derive(Debug, Clone, Default)]
pub struct StreamContext {
    pub video_id: String,
    pub channel_id: String,
}

/// Action keys that are valid but carry no chat event.
const SKIPPED_ACTIONS: &[&str] = &[
    "addLiveChatTickerItemAction",
    "addBannerToLiveChatCommand",
    "removeBannerForLiveChatCommand",
    "showLiveChatTooltipCommand",
    "showLiveChatActionPanelAction",
    "updateLiveChatPollAction",
    "closeLiveChatActionPanelAction",
    "replayChatItemAction",
    "clickTrackingParams",
    "addToPlaylistCommand",
    "liveChatReportModerationStateCommand",
    "updateDateTextAction",
    "updateTitleAction",
    "updateDescriptionAction",
    "updateViewershipAction",
    "updateToggleButtonTextAction",
];

/// Renderers YouTube sends that are not chat (or repeat chat, as tickers
/// do): skipped on purpose.
const SKIPPED_RENDERERS: &[&str] = &[
    "liveChatViewerEngagementMessageRenderer",
    "liveChatPlaceholderItemRenderer",
    "liveChatModeChangeMessageRenderer",
    "liveChatSponsorshipsGiftRedemptionAnnouncementRenderer",
    "liveChatBannerRenderer",
    "liveChatBannerHeaderRenderer",
    "liveChatPurchasedProductMessageRenderer",
    "liveChatAutoModMessageRenderer",
    "liveChatModerationMessageRenderer",
];

/// The kind of an action (or the renderer an add action carries) that gave
/// no event, and whether this parser knows it as not chat.
pub fn action_kind(v: &Value) -> (String, bool) {
    let Some(obj) = v.as_object() else {
        return ("not an object".to_owned(), false);
    };
    let renderer = |name: &str| {
        let known = SKIPPED_RENDERERS.contains(&name) || name.starts_with("liveChatTicker");
        (name.to_owned(), known)
    };
    for (key, body) in obj {
        match key.as_str() {
            "addChatItemAction" | "replaceChatItemAction" => {
                let item = body.get("item").or_else(|| body.get("replacementItem"));
                if let Some((name, _)) = item
                    .and_then(Value::as_object)
                    .and_then(|o| o.iter().next())
                {
                    return renderer(name);
                }
            }
            k if k.ends_with("Action") || k.ends_with("Command") => {
                return (k.to_owned(), SKIPPED_ACTIONS.contains(&k));
            }
            k if k.starts_with("liveChat") && k.ends_with("Renderer") => return renderer(k),
            _ => {}
        }
    }
    ("no action".to_owned(), false)
}

/// Parses one innertube action object. `ts_fallback_ms` is used for actions
/// that carry no timestamp (deletions): the time of the previous action.
pub fn parse_action(
    action: &Value,
    ctx: &StreamContext,
    ts_fallback_ms: i64,
) -> Result<Option<ChatEvent>, ParseError> {
    let obj = action
        .as_object()
        .ok_or_else(|| ParseError::new("action is not a JSON object"))?;
    // Replayed chat wraps each action: {"replayChatItemAction": {"actions": [..]}}
    // is flattened by the caller; here one action has one meaningful key.
    for (key, body) in obj {
        let kind = match key.as_str() {
            "addChatItemAction" => {
                let item = body
                    .get("item")
                    .ok_or_else(|| ParseError::new("addChatItemAction without item"))?;
                return parse_item(item, ctx);
            }
            "replaceChatItemAction" => {
                let item = body.get("replacementItem").ok_or_else(|| {
                    ParseError::new("replaceChatItemAction without replacementItem")
                })?;
                return parse_item(item, ctx);
            }
            "markChatItemAsDeletedAction" => Kind::MessageDeleted(MessageDeleted {
                target_message_id: str_at(body, &["targetItemId"])
                    .ok_or_else(|| {
                        ParseError::new("markChatItemAsDeletedAction without targetItemId")
                    })?
                    .to_owned(),
                by_author: retracted(&runs_text(body.get("deletedStateMessage")).0),
                ..MessageDeleted::default()
            }),
            "markChatItemsByAuthorAsDeletedAction" => {
                Kind::UserMessagesRemoved(UserMessagesRemoved {
                    user_id: str_at(body, &["externalChannelId"])
                        .ok_or_else(|| {
                            ParseError::new(
                                "markChatItemsByAuthorAsDeletedAction without externalChannelId",
                            )
                        })?
                        .to_owned(),
                })
            }
            k if SKIPPED_ACTIONS.contains(&k) => return Ok(None),
            _ => continue,
        };
        let target = match &kind {
            Kind::MessageDeleted(d) => d.target_message_id.clone(),
            Kind::UserMessagesRemoved(r) => r.user_id.clone(),
            _ => String::new(),
        };
        return Ok(Some(envelope(
            ctx,
            format!("{key}:{target}"),
            ts_fallback_ms,
            kind,
        )));
    }
    // Unknown action kinds are future platform features, not corruption.
    Ok(None)
}

/// YouTube says who deleted a message only in the text it shows in its
/// place: `[message retracted]` when the author took it back, `[message
/// deleted]` when a moderator removed it (English, as archive tools fetch
/// chat; other languages read as a moderator's deletion).
pub(crate) fn retracted(shown: &str) -> bool {
    shown.contains("retracted")
}

fn envelope(ctx: &StreamContext, event_id: String, ts_ms: i64, kind: Kind) -> ChatEvent {
    ChatEvent {
        platform: Platform::Youtube as i32,
        stream_id: ctx.video_id.clone(),
        channel_id: ctx.channel_id.clone(),
        event_id,
        ts_ms,
        kind: Some(kind),
    }
}

/// Parses an `item` object: `{"<renderer name>": {...}}`.
pub fn parse_item(item: &Value, ctx: &StreamContext) -> Result<Option<ChatEvent>, ParseError> {
    let obj = item
        .as_object()
        .ok_or_else(|| ParseError::new("item is not a JSON object"))?;
    let Some((name, r)) = obj.iter().next() else {
        return Err(ParseError::new("empty item"));
    };
    parse_renderer(name, r, ctx)
}

/// Parses one renderer by name.
pub fn parse_renderer(
    name: &str,
    r: &Value,
    ctx: &StreamContext,
) -> Result<Option<ChatEvent>, ParseError> {
    let kind = match name {
        "liveChatTextMessageRenderer" => {
            let (text, emotes) = runs_text(r.get("message"));
            Kind::Message(ChatMessage {
                author: Some(author(r)),
                text,
                emotes,
                ..ChatMessage::default()
            })
        }
        "liveChatPaidMessageRenderer" => Kind::Support(paid(r, SupportKind::SuperChat)),
        "liveChatPaidStickerRenderer" => Kind::Support(paid(r, SupportKind::SuperSticker)),
        "liveChatMembershipItemRenderer" => {
            // A milestone carries the member's own message or a "Member for"
            // header; a new membership only the welcome subtext.
            let milestone = r.get("message").is_some() || r.get("headerPrimaryText").is_some();
            let kind = if milestone {
                SupportKind::MembershipMilestone
            } else {
                SupportKind::Membership
            };
            let (text, _) = runs_text(r.get("message"));
            let author = author(r);
            let months = author.roles.as_ref().map_or(0, |ro| ro.member_months);
            Kind::Support(Support {
                author: Some(author),
                kind: kind as i32,
                months,
                text,
                ..Support::default()
            })
        }
        "liveChatSponsorshipsGiftPurchaseAnnouncementRenderer" => {
            let header = r
                .pointer("/header/liveChatSponsorshipsHeaderRenderer")
                .unwrap_or(&Value::Null);
            let (title, _) = runs_text(header.get("primaryText"));
            let gift_count = title
                .split_whitespace()
                .find_map(|w| w.parse::<u32>().ok())
                .unwrap_or(1);
            let mut a = author(header);
            if a.user_id.is_empty() {
                a.user_id = str_at(r, &["authorExternalChannelId"])
                    .unwrap_or("")
                    .to_owned();
            }
            Kind::Support(Support {
                author: Some(a),
                kind: SupportKind::GiftedSubsBatch as i32,
                gift_count,
                ..Support::default()
            })
        }
        "liveChatDonationAnnouncementRenderer" => {
            let (text, _) = runs_text(r.get("text"));
            let amount_text = r
                .pointer("/text/runs")
                .and_then(Value::as_array)
                .and_then(|runs| runs.iter().rev().find_map(|x| x.get("text")?.as_str()))
                .unwrap_or("")
                .to_owned();
            let (amount_micros, currency) = parse_amount(&amount_text);
            Kind::Support(Support {
                author: Some(Author::default()),
                kind: SupportKind::Donation as i32,
                amount_micros,
                currency,
                amount_text,
                text,
                ..Support::default()
            })
        }
        "liveChatModeChangeMessageRenderer" => match mode_change(r) {
            Some(rs) => Kind::RoomState(rs),
            None => return Ok(None),
        },
        // Engagement messages, placeholders, sponsorship redemptions and
        // renderers YouTube adds later carry no chat event.
        _ => return Ok(None),
    };
    let id = str_at(r, &["id"])
        .ok_or_else(|| ParseError::new(format!("{name} without id")))?
        .to_owned();
    let ts_ms = str_at(r, &["timestampUsec"])
        .and_then(|t| t.parse::<i64>().ok())
        .map(|us| us / 1000)
        .ok_or_else(|| ParseError::new(format!("{name} without a valid timestampUsec")))?;
    Ok(Some(envelope(ctx, id, ts_ms, kind)))
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

/// Text of `{"runs": [...]}` or `{"simpleText": ...}`; emoji runs become their
/// first shortcut (`:name:`) and, for custom emoji, an emote range.
pub fn runs_text(v: Option<&Value>) -> (String, Vec<EmoteRange>) {
    let mut text = String::new();
    let mut emotes = Vec::new();
    let Some(v) = v else { return (text, emotes) };
    if let Some(s) = v.get("simpleText").and_then(Value::as_str) {
        return (s.to_owned(), emotes);
    }
    let runs = v
        .get("runs")
        .and_then(Value::as_array)
        .map_or(&[][..], |r| r.as_slice());
    let mut chars = 0u32;
    for run in runs {
        if let Some(t) = run.get("text").and_then(Value::as_str) {
            text.push_str(t);
            chars += t.chars().count() as u32;
        } else if let Some(emoji) = run.get("emoji") {
            let custom = emoji
                .get("isCustomEmoji")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let shortcut = emoji
                .pointer("/shortcuts/0")
                .and_then(Value::as_str)
                .or_else(|| emoji.get("emojiId").and_then(Value::as_str))
                .unwrap_or("");
            let start = chars;
            text.push_str(shortcut);
            chars += shortcut.chars().count() as u32;
            if custom || shortcut.starts_with(':') {
                emotes.push(EmoteRange {
                    emote_id: emoji
                        .get("emojiId")
                        .and_then(Value::as_str)
                        .unwrap_or(shortcut)
                        .to_owned(),
                    start,
                    end: chars,
                });
            }
        }
    }
    (text, emotes)
}

fn author(r: &Value) -> Author {
    let name = r
        .pointer("/authorName/simpleText")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let mut roles = Roles::default();
    for badge in r
        .get("authorBadges")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let b = badge.get("liveChatAuthorBadgeRenderer").unwrap_or(badge);
        let icon = b.pointer("/icon/iconType").and_then(Value::as_str);
        let tooltip = b.get("tooltip").and_then(Value::as_str).unwrap_or("");
        match icon {
            Some("OWNER") => roles.broadcaster = true,
            Some("MODERATOR") => roles.moderator = true,
            Some("VERIFIED") | Some("CHECK_CIRCLE_THICK") => roles.verified = true,
            _ if b.get("customThumbnail").is_some() => {
                roles.member = true;
                roles.member_months = member_months(tooltip);
            }
            _ => {}
        }
    }
    Author {
        user_id: str_at(r, &["authorExternalChannelId"])
            .unwrap_or("")
            .to_owned(),
        login: name.clone(),
        display_name: name,
        roles: Some(roles),
    }
}

/// "Member (10 months)", "Member (2 years)", "New member" → months.
pub fn member_months(tooltip: &str) -> u32 {
    let inner = tooltip
        .split_once('(')
        .and_then(|(_, r)| r.split_once(')'))
        .map(|(i, _)| i)
        .unwrap_or("");
    let n = inner
        .split_whitespace()
        .find_map(|w| w.parse::<u32>().ok())
        .unwrap_or(0);
    if inner.contains("year") { n * 12 } else { n }
}

fn paid(r: &Value, kind: SupportKind) -> Support {
    let amount_text = r
        .pointer("/purchaseAmountText/simpleText")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let (amount_micros, currency) = parse_amount(&amount_text);
    let (text, _) = runs_text(r.get("message"));
    Support {
        author: Some(author(r)),
        kind: kind as i32,
        amount_micros,
        currency,
        amount_text,
        text,
        ..Support::default()
    }
}

/// "$10.00" → (10_000_000, "USD"); "￥1,000" → (1_000_000_000, "JPY");
/// "5,00 €" → (5_000_000, "EUR"). Unknown symbols are kept as displayed.
pub fn parse_amount(text: &str) -> (i64, String) {
    let t = text.trim();
    let digits_start = t.find(|c: char| c.is_ascii_digit());
    let digits_end = t.rfind(|c: char| c.is_ascii_digit()).map(|i| i + 1);
    let (Some(s), Some(e)) = (digits_start, digits_end) else {
        return (0, String::new());
    };
    let symbol = format!("{}{}", t[..s].trim(), t[e..].trim());
    let number = &t[s..e];
    // The decimal separator is the last '.' or ',' followed by 1-2 digits.
    let dec_pos = number.rfind(['.', ',']).filter(|&p| {
        let frac = number.len() - p - 1;
        (1..=2).contains(&frac)
    });
    let (int_part, frac_part) = match dec_pos {
        Some(p) => (&number[..p], &number[p + 1..]),
        None => (number, ""),
    };
    let int: i64 = int_part
        .chars()
        .filter(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or(0);
    let mut frac_micros: i64 = 0;
    for (i, c) in frac_part.chars().take(6).enumerate() {
        frac_micros += i64::from(c.to_digit(10).unwrap_or(0)) * 10i64.pow(5 - i as u32);
    }
    let code = match symbol.as_str() {
        "$" | "US$" => "USD",
        "€" => "EUR",
        "£" => "GBP",
        "¥" | "￥" | "JP¥" => "JPY",
        "₩" => "KRW",
        "₹" => "INR",
        "CA$" => "CAD",
        "A$" => "AUD",
        "R$" => "BRL",
        "NT$" => "TWD",
        "HK$" => "HKD",
        "MX$" => "MXN",
        "NZ$" => "NZD",
        "₱" | "PHP" => "PHP",
        other => other,
    };
    (
        int.saturating_mul(1_000_000).saturating_add(frac_micros),
        code.to_owned(),
    )
}

fn mode_change(r: &Value) -> Option<RoomState> {
    let icon = r
        .pointer("/icon/iconType")
        .and_then(Value::as_str)
        .unwrap_or("");
    let (title, _) = runs_text(r.get("text"));
    let (sub, _) = runs_text(r.get("subtext"));
    let on = !title.to_lowercase().contains(" off");
    match icon {
        "SLOW_MODE" => {
            let secs = if on {
                let n = sub
                    .split_whitespace()
                    .find_map(|w| w.parse::<u32>().ok())
                    .unwrap_or(0);
                if sub.contains("minute") { n * 60 } else { n }
            } else {
                0
            };
            Some(RoomState {
                slow_mode_s: Some(secs),
                ..RoomState::default()
            })
        }
        "MEMBERS_ONLY_MODE" | "MEMBERSHIP" => Some(RoomState {
            members_only: Some(on),
            ..RoomState::default()
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts() {
        assert_eq!(parse_amount("$10.00"), (10_000_000, "USD".into()));
        assert_eq!(parse_amount("￥1,000"), (1_000_000_000, "JPY".into()));
        assert_eq!(parse_amount("5,50 €"), (5_500_000, "EUR".into()));
        assert_eq!(parse_amount("CA$1,234.5"), (1_234_500_000, "CAD".into()));
        assert_eq!(parse_amount(""), (0, String::new()));
    }

    #[test]
    fn member_tooltips() {
        assert_eq!(member_months("Member (10 months)"), 10);
        assert_eq!(member_months("Member (2 years)"), 24);
        assert_eq!(member_months("New member"), 0);
    }

    #[test]
    fn deletion_without_timestamp_uses_fallback() {
        let v: Value = serde_json::json!({"markChatItemAsDeletedAction": {"targetItemId": "abc"}});
        let ev = parse_action(&v, &StreamContext::default(), 42)
            .unwrap()
            .unwrap();
        assert_eq!(ev.ts_ms, 42);
        assert!(
            matches!(ev.kind, Some(Kind::MessageDeleted(ref d)) if d.target_message_id == "abc")
        );
    }

    #[test]
    fn text_message_without_timestamp_is_an_error() {
        let v = serde_json::json!({"addChatItemAction": {"item": {"liveChatTextMessageRenderer": {"id": "x", "message": {"runs": []}}}}});
        assert!(parse_action(&v, &StreamContext::default(), 0).is_err());
    }

    #[test]
    fn slow_mode_change() {
        let v = serde_json::json!({"addChatItemAction": {"item": {"liveChatModeChangeMessageRenderer": {
            "id": "m", "timestampUsec": "1608166198038851", "icon": {"iconType": "SLOW_MODE"},
            "text": {"runs": [{"text": "Slow mode is on"}]},
            "subtext": {"runs": [{"text": "Send a message every "}, {"text": "60 seconds"}]}}}}});
        let ev = parse_action(&v, &StreamContext::default(), 0)
            .unwrap()
            .unwrap();
        assert_eq!(ev.ts_ms, 1_608_166_198_038);
        assert!(matches!(
            ev.kind,
            Some(Kind::RoomState(RoomState {
                slow_mode_s: Some(60),
                ..
            }))
        ));
    }
}
