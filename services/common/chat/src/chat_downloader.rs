//! chat-downloader's normalised JSON (YouTube) to [`ChatEvent`].
//!
//! Each item has `action_type`, `message_type`, usually `id`, `timestamp`
//! (microseconds), `message`, and the author either flat (`author`,
//! `author_id`, `author_badges` as strings; older releases) or nested
//! (`author: {name, id, badges: [{title}]}`; newer releases). Deletions carry
//! no timestamp: they get the time of the previous item.

use serde_json::Value;
use spamscope_proto::v1::{
    Author, ChatEvent, ChatMessage, MessageDeleted, Platform, Roles, Support, SupportKind,
    UserMessagesRemoved, chat_event::Kind,
};

use crate::ParseError;
use crate::youtube::{StreamContext, member_months, parse_amount};

/// True when `v` looks like one chat-downloader item.
pub fn looks_like_item(v: &Value) -> bool {
    v.get("message_type").is_some() || v.get("action_type").is_some()
}

/// Parses one item. `ts_fallback_ms` stands in for a missing timestamp.
pub fn parse_item(
    item: &Value,
    ctx: &StreamContext,
    ts_fallback_ms: i64,
) -> Result<Option<ChatEvent>, ParseError> {
    if !item.is_object() {
        return Err(ParseError::new("item is not a JSON object"));
    }
    let message_type = item
        .get("message_type")
        .and_then(Value::as_str)
        .or_else(|| item.get("action_type").and_then(Value::as_str))
        .ok_or_else(|| ParseError::new("item without message_type"))?;
    let text = item.get("message").and_then(Value::as_str).unwrap_or("");
    let kind = match message_type {
        "text_message" => Kind::Message(ChatMessage {
            author: Some(author(item)),
            text: text.to_owned(),
            ..ChatMessage::default()
        }),
        "paid_message" | "paid_sticker" => {
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
            let kind = if message_type == "paid_sticker" {
                SupportKind::SuperSticker
            } else {
                SupportKind::SuperChat
            };
            Kind::Support(Support {
                author: Some(author(item)),
                kind: kind as i32,
                amount_micros,
                currency,
                amount_text,
                text: text.to_owned(),
                ..Support::default()
            })
        }
        "membership_item" => {
            let a = author(item);
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
        "mark_chat_item_as_deleted_action" => Kind::MessageDeleted(MessageDeleted {
            target_message_id: item
                .get("target_id")
                .and_then(Value::as_str)
                .ok_or_else(|| ParseError::new("deletion without target_id"))?
                .to_owned(),
            ..MessageDeleted::default()
        }),
        "mark_chat_items_by_author_as_deleted_action" => {
            Kind::UserMessagesRemoved(UserMessagesRemoved {
                user_id: item
                    .get("author_id")
                    .or_else(|| item.get("external_channel_id"))
                    .or_else(|| item.pointer("/author/id"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| ParseError::new("author removal without author_id"))?
                    .to_owned(),
            })
        }
        // Banners, engagement messages, tickers, placeholders, polls: not chat.
        _ => return Ok(None),
    };
    let ts_ms = match item.get("timestamp") {
        Some(t) => t
            .as_i64()
            .map(|us| us / 1000)
            .ok_or_else(|| ParseError::new("timestamp is not an integer"))?,
        None => ts_fallback_ms,
    };
    let event_id = match item.get("id").and_then(Value::as_str) {
        Some(id) => id.to_owned(),
        None => match &kind {
            Kind::MessageDeleted(d) => format!("deleted:{}", d.target_message_id),
            Kind::UserMessagesRemoved(r) => format!("removed:{}:{ts_ms}", r.user_id),
            _ => return Err(ParseError::new(format!("{message_type} without id"))),
        },
    };
    Ok(Some(ChatEvent {
        platform: Platform::Youtube as i32,
        stream_id: ctx.video_id.clone(),
        channel_id: ctx.channel_id.clone(),
        event_id,
        ts_ms,
        kind: Some(kind),
    }))
}

fn author(item: &Value) -> Author {
    let nested = item.get("author").filter(|a| a.is_object());
    let name = nested
        .and_then(|a| a.get("name"))
        .or_else(|| item.get("author"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let id = nested
        .and_then(|a| a.get("id"))
        .or_else(|| item.get("author_id"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let badge_titles: Vec<&str> = match nested.and_then(|a| a.get("badges")) {
        Some(Value::Array(b)) => b
            .iter()
            .filter_map(|x| x.get("title").and_then(Value::as_str))
            .collect(),
        _ => item
            .get("author_badges")
            .and_then(Value::as_array)
            .map(|b| b.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default(),
    };
    let mut roles = Roles::default();
    for title in badge_titles {
        match title {
            "Owner" => roles.broadcaster = true,
            "Moderator" => roles.moderator = true,
            "Verified" => roles.verified = true,
            t if t.contains("ember") => {
                roles.member = true;
                roles.member_months = member_months(t);
            }
            _ => {}
        }
    }
    Author {
        user_id: id,
        login: name.clone(),
        display_name: name,
        roles: Some(roles),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flat_author_with_badges() {
        let v = json!({"action_type": "add_chat_item", "message_type": "text_message", "id": "i",
            "timestamp": 1_607_054_357_301_894_i64, "author": "ChilledCow", "author_id": "UC1",
            "author_badges": ["Verified", "Owner", "Member (10 months)"], "message": "hi"});
        let ev = parse_item(&v, &StreamContext::default(), 0)
            .unwrap()
            .unwrap();
        assert_eq!(ev.ts_ms, 1_607_054_357_301);
        let Some(Kind::Message(m)) = ev.kind else {
            panic!()
        };
        let a = m.author.unwrap();
        assert_eq!(a.user_id, "UC1");
        let r = a.roles.unwrap();
        assert!(r.verified && r.broadcaster && r.member && !r.moderator);
        assert_eq!(r.member_months, 10);
    }

    #[test]
    fn nested_author_and_paid_message() {
        let v = json!({"message_type": "paid_message", "id": "p", "timestamp": 5_000,
            "author": {"name": "n", "id": "UC2", "badges": [{"title": "Moderator"}]},
            "money": {"amount": 5.0, "currency": "USD", "text": "$5.00"}, "message": "thanks"});
        let ev = parse_item(&v, &StreamContext::default(), 0)
            .unwrap()
            .unwrap();
        let Some(Kind::Support(s)) = ev.kind else {
            panic!()
        };
        assert_eq!((s.amount_micros, s.currency.as_str()), (5_000_000, "USD"));
        assert!(s.author.unwrap().roles.unwrap().moderator);
    }

    #[test]
    fn author_removal_and_bad_timestamp() {
        let v = json!({"message_type": "mark_chat_items_by_author_as_deleted_action", "author_id": "UC3"});
        let ev = parse_item(&v, &StreamContext::default(), 77)
            .unwrap()
            .unwrap();
        assert_eq!(ev.ts_ms, 77);
        let bad = json!({"message_type": "text_message", "id": "x", "timestamp": "soon"});
        assert!(parse_item(&bad, &StreamContext::default(), 0).is_err());
    }
}
