//! The parsers on the real recorded data in `testdata/`.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::path::PathBuf;

use proptest::prelude::*;
use serde_json::Value;
use spamscope_chat::format::{self, Format};
use spamscope_chat::normalize::normalize;
use spamscope_chat::replay;
use spamscope_chat::twitch::parse_line;
use spamscope_chat::youtube::{self, StreamContext};
use spamscope_proto::v1::{ChatEvent, SupportKind, chat_event::Kind};

fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../testdata")
        .join(rel)
}

fn vectors() -> Vec<(String, String)> {
    let v: Value =
        serde_json::from_slice(&std::fs::read(testdata("twitch/irc-vectors.json")).unwrap())
            .unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["test"].as_str().unwrap().to_owned(),
                x["raw"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn vector(test: &str) -> ChatEvent {
    let (_, raw) = vectors().into_iter().find(|(t, _)| t == test).unwrap();
    parse_line(&raw).unwrap().unwrap()
}

#[test]
fn every_irc_vector_parses_or_is_rejected_as_invalid() {
    let mut events = 0;
    for (test, raw) in vectors() {
        let invalid = test.starts_with("test_invalid") || raw.contains(['\n', '\r']);
        match parse_line(&raw) {
            Ok(ev) => {
                assert!(!invalid, "{test}: invalid line accepted: {raw:?}");
                events += usize::from(ev.is_some());
            }
            Err(e) => {
                assert!(invalid, "{test}: valid line rejected ({e}): {raw:?}");
                assert!(!e.reason.is_empty());
            }
        }
    }
    assert!(events >= 40, "only {events} vectors became events");
}

#[test]
fn clearchat_vectors() {
    let Some(Kind::UserTimedOut(t)) = vector("test_timeout").kind else {
        panic!()
    };
    assert_eq!(
        (t.user_login.as_str(), t.user_id.as_str(), t.duration_s),
        ("fabzeef", "148973258", 1)
    );
    let Some(Kind::UserBanned(b)) = vector("test_permaban").kind else {
        panic!()
    };
    assert_eq!(b.user_login, "weeb123");
    let clear = vector("test_chat_clear");
    assert!(matches!(clear.kind, Some(Kind::ChatCleared(_))));
    assert_eq!(clear.stream_id, "randers");
    assert_eq!(clear.ts_ms, 1_594_561_392_337);
}

#[test]
fn clearmsg_vectors() {
    let Some(Kind::MessageDeleted(d)) = vector("test_simple").kind else {
        // "test_simple" names several vectors; the first is CLEARMSG.
        panic!("first test_simple is not CLEARMSG")
    };
    assert_eq!(d.target_message_id, "3c92014f-340a-4dc3-a9c9-e5cf182f4a84");
    assert_eq!(d.user_login, "alazymeme");
    assert_eq!(d.text, "NIGHT CUNT");
    let Some(Kind::MessageDeleted(a)) = vector("test_action").kind else {
        panic!()
    };
    assert_eq!(a.text, "test");
}

#[test]
fn privmsg_vectors_tags_escaping_badges_emotes() {
    let Some(Kind::Message(m)) = vector("test_display_name_with_middle_space").kind else {
        panic!()
    };
    assert_eq!(m.author.as_ref().unwrap().display_name, "Riot Games");
    assert!(m.author.unwrap().roles.unwrap().moderator, "mod=1 tag");

    let Some(Kind::Message(m)) = vector("test_display_name_with_trailing_space").kind else {
        panic!()
    };
    assert_eq!(m.author.unwrap().display_name, "CarvedTaleare");

    let Some(Kind::Message(m)) = vector("test_emotes_1").kind else {
        panic!()
    };
    assert_eq!(m.emotes.len(), 9);
    assert_eq!(m.emotes[0].emote_id, "25");
    assert_eq!((m.emotes[0].start, m.emotes[0].end), (0, 5));
    let chars: Vec<char> = m.text.chars().collect();
    for e in &m.emotes {
        let name: String = chars[e.start as usize..e.end as usize].iter().collect();
        assert!(
            ["Kappa", "Keepo", ":)", ":P"].contains(&name.as_str()),
            "{name}"
        );
    }

    let Some(Kind::Message(m)) = vector("test_message_with_bits").kind else {
        panic!()
    };
    assert_eq!(m.bits, 1);

    for t in [
        "test_incorrect_emote_index",
        "test_extremely_incorrect_emote_index",
        "test_emote_index_complete_out_of_range",
        "test_emote_index_beyond_out_of_range",
    ] {
        let Some(Kind::Message(m)) = vector(t).kind else {
            panic!("{t}")
        };
        let len = m.text.chars().count() as u32;
        assert!(
            m.emotes.iter().all(|e| e.end <= len),
            "{t}: emote out of the text kept"
        );
        assert!(!m.text.is_empty());
    }

    let Some(Kind::Message(m)) = vector("test_reply_parent_included").kind else {
        panic!()
    };
    let parent = m.reply_parent.unwrap();
    assert_eq!(parent.message_id, "6b13e51b-7ecb-43b5-ba5b-2bb5288df696");
    assert_eq!(parent.user_login, "retoon");
    assert_eq!(parent.text, "hello");

    let Some(Kind::Message(m)) = vector("test_action_and_badges").kind else {
        panic!()
    };
    assert!(m.action);
    let r = m.author.unwrap().roles.unwrap();
    assert!(r.moderator && r.member);
    assert_eq!(r.member_months, 22);
}

#[test]
fn roomstate_vectors_full_and_partial() {
    let Some(Kind::RoomState(r)) = vector("test_basic_full2").kind else {
        panic!()
    };
    assert_eq!(r.slow_mode_s, Some(5));
    assert_eq!(r.followers_only_min, Some(0));
    assert_eq!(
        (r.emote_only, r.unique_chat, r.members_only),
        (Some(true), Some(true), Some(true))
    );
    let Some(Kind::RoomState(r)) = vector("test_basic_full").kind else {
        panic!()
    };
    assert_eq!((r.slow_mode_s, r.followers_only_min), (Some(0), Some(-1)));
    let Some(Kind::RoomState(r)) = vector("test_followers_non_zero").kind else {
        panic!()
    };
    assert_eq!(r.followers_only_min, Some(10));
    let Some(Kind::RoomState(r)) = vector("test_partial_1").kind else {
        panic!()
    };
    assert_eq!((r.slow_mode_s, r.emote_only), (Some(5), None));
    let Some(Kind::RoomState(r)) = vector("test_partial_2").kind else {
        panic!()
    };
    assert_eq!((r.slow_mode_s, r.emote_only), (None, Some(true)));
}

#[test]
fn usernotice_vectors() {
    let Some(Kind::Support(s)) = vector("test_sub").kind else {
        panic!()
    };
    assert_eq!(s.kind(), SupportKind::Subscription);
    assert_eq!(s.tier, "Prime");
    assert_eq!(s.author.unwrap().login, "fallenseraphhh");
    let Some(Kind::Support(s)) = vector("test_subgift").kind else {
        panic!()
    };
    assert_eq!(s.kind(), SupportKind::GiftedSub);
    assert_eq!(s.recipient_login, "qatarking24xd");
    let Some(Kind::Support(s)) = vector("test_submysterygift").kind else {
        panic!()
    };
    assert_eq!((s.kind(), s.gift_count), (SupportKind::GiftedSubsBatch, 20));
    let Some(Kind::UserNotice(n)) = vector("test_raid").kind else {
        panic!()
    };
    assert_eq!((n.notice_kind.as_str(), n.viewer_count), ("raid", 430));
    assert_eq!(n.system_text, "430 raiders from iamelisabete have joined!");
    let Some(Kind::UserNotice(n)) = vector("test_announcement").kind else {
        panic!()
    };
    assert_eq!(n.notice_kind, "announcement");
    assert_eq!(n.text, "hello pajs pajaH Kappa Keepo");
}

#[test]
fn xqcow_log_counts() {
    let f = replay::read_file(&testdata("twitch/xqcow-2019-09-15.irc")).unwrap();
    assert_eq!(f.parsed.format, Some(Format::IrcLines));
    assert!(f.parsed.malformed.is_empty());
    let count = |p: fn(&Kind) -> bool| {
        f.parsed
            .events
            .iter()
            .filter(|e| p(e.kind.as_ref().unwrap()))
            .count()
    };
    assert_eq!(count(|k| matches!(k, Kind::Message(_))), 4933);
    assert_eq!(count(|k| matches!(k, Kind::UserTimedOut(_))), 57);
    assert_eq!(count(|k| matches!(k, Kind::UserBanned(_))), 1);
    assert!(
        f.parsed
            .events
            .iter()
            .all(|e| e.stream_id == "xqcow" && e.ts_ms > 1_500_000_000_000)
    );
}

#[test]
fn chilledcow_log_counts_and_timestamps_in_ms() {
    let f =
        replay::read_file(&testdata("youtube/chilledcow-2020-11.chat-downloader.json")).unwrap();
    assert_eq!(f.parsed.format, Some(Format::ChatDownloader));
    let deletions = f
        .parsed
        .events
        .iter()
        .filter(|e| matches!(e.kind, Some(Kind::MessageDeleted(_))))
        .count();
    let removals = f
        .parsed
        .events
        .iter()
        .filter(|e| matches!(e.kind, Some(Kind::UserMessagesRemoved(_))))
        .count();
    assert_eq!((deletions, removals), (36, 36));
    // Microseconds in the file, milliseconds in events; deletions carry the
    // time of the item before them, never 0.
    assert!(
        f.parsed
            .events
            .iter()
            .all(|e| (1_607_000_000_000..1_608_000_000_000).contains(&e.ts_ms))
    );
    assert_eq!(f.parsed.events[0].stream_id, "chilledcow-2020-11");
}

#[test]
fn innertube_fixtures_parse() {
    let ctx = StreamContext {
        video_id: "v".into(),
        channel_id: String::new(),
    };
    let actions = format::parse_bytes(
        &std::fs::read(testdata("youtube/innertube-actions.json")).unwrap(),
        &ctx,
    )
    .unwrap();
    assert!(actions.malformed.is_empty(), "{:?}", actions.malformed);
    let kinds: Vec<&Kind> = actions
        .events
        .iter()
        .filter_map(|e| e.kind.as_ref())
        .collect();
    assert!(
        kinds
            .iter()
            .any(|k| matches!(k, Kind::Message(m) if m.text == "Consistency Level ASL ❤️"))
    );
    assert!(kinds.iter().any(|k| matches!(k, Kind::Support(s) if s.kind() == SupportKind::SuperSticker && s.amount_micros == 9_990_000)));
    assert!(
        kinds
            .iter()
            .any(|k| matches!(k, Kind::Support(s) if s.kind() == SupportKind::Membership))
    );
    assert!(kinds.iter().any(|k| matches!(k, Kind::MessageDeleted(_))));
    assert!(kinds.iter().any(
        |k| matches!(k, Kind::UserMessagesRemoved(r) if r.user_id == "UCunTx7KcIG50KLggQdd5JEQ")
    ));
    assert!(
        kinds
            .iter()
            .any(|k| matches!(k, Kind::RoomState(r) if r.slow_mode_s == Some(60)))
    );

    for (file, check) in [
        ("addcomment.json", "すももさん"),
        ("addcomment-frommember.json", "モンハン"),
    ] {
        let f = format::parse_bytes(
            &std::fs::read(testdata(&format!("youtube/innertube-responses/{file}"))).unwrap(),
            &ctx,
        )
        .unwrap();
        let Some(Kind::Message(m)) = &f.events[0].kind else {
            panic!("{file}")
        };
        assert_eq!(m.text, check);
    }
    let member = format::parse_bytes(
        &std::fs::read(testdata(
            "youtube/innertube-responses/addcomment-frommember.json",
        ))
        .unwrap(),
        &ctx,
    )
    .unwrap();
    let Some(Kind::Message(m)) = &member.events[0].kind else {
        panic!()
    };
    assert!(m.author.as_ref().unwrap().roles.as_ref().unwrap().member);

    let sc = format::parse_bytes(
        &std::fs::read(testdata("youtube/innertube-responses/superchat.json")).unwrap(),
        &ctx,
    )
    .unwrap();
    let Some(Kind::Support(s)) = &sc.events[0].kind else {
        panic!()
    };
    assert_eq!(
        (s.kind(), s.currency.as_str()),
        (SupportKind::SuperChat, "JPY")
    );
    assert!(s.amount_micros > 0);

    let ms = format::parse_bytes(
        &std::fs::read(testdata("youtube/innertube-responses/membership.json")).unwrap(),
        &ctx,
    )
    .unwrap();
    assert!(
        matches!(&ms.events[0].kind, Some(Kind::Support(s)) if s.kind() == SupportKind::Membership)
    );

    let all = format::parse_bytes(
        &std::fs::read(testdata(
            "youtube/innertube-responses/comment-all-response.json",
        ))
        .unwrap(),
        &ctx,
    )
    .unwrap();
    assert_eq!(
        all.events
            .iter()
            .filter(|e| matches!(e.kind, Some(Kind::Message(_))))
            .count(),
        65
    );
    assert!(all.malformed.is_empty());

    // An emoji-only message body: custom emoji become their shortcut and an
    // emote range.
    let runs: Value = serde_json::from_slice(
        &std::fs::read(testdata("youtube/innertube-responses/message-emoji.json")).unwrap(),
    )
    .unwrap();
    let (text, emotes) = youtube::runs_text(Some(&serde_json::json!({ "runs": runs })));
    assert!(text.contains(":dadadiNice:"), "{text}");
    assert!(!emotes.is_empty());
}

#[test]
fn copypasta_variants_in_real_logs_normalise_together() {
    let f =
        replay::read_file(&testdata("youtube/chilledcow-2020-11.chat-downloader.json")).unwrap();
    let cheese: Vec<String> = f
        .parsed
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::Message(m)) if m.text.contains("CHEESE") => Some(m.text.clone()),
            _ => None,
        })
        .collect();
    assert!(cheese.iter().any(|t| t.starts_with('\u{200b}')));
    assert!(cheese.iter().any(|t| !t.starts_with('\u{200b}')));
    let zw = cheese.iter().find(|t| t.starts_with('\u{200b}')).unwrap();
    let plain = cheese.iter().find(|t| !t.starts_with('\u{200b}')).unwrap();
    assert_eq!(normalize(zw), normalize(plain));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn irc_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let s = String::from_utf8_lossy(&bytes);
        let _ = parse_line(&s);
    }

    #[test]
    fn irc_parser_never_panics_on_tagged_lines(tags in "[a-z=;\\\\/,:0-9-]{0,60}", text in "\\PC{0,40}") {
        let _ = parse_line(&format!("@{tags} :a!a@a PRIVMSG #c :{text}"));
        let _ = parse_line(&format!("@{tags} :tmi.twitch.tv USERNOTICE #c :{text}"));
        let _ = parse_line(&format!("@{tags} :tmi.twitch.tv CLEARCHAT #c :{text}"));
    }

    #[test]
    fn file_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = format::parse_bytes(&bytes, &StreamContext::default());
    }

    #[test]
    fn json_parsers_never_panic(json in arb_json()) {
        let ctx = StreamContext::default();
        let _ = youtube::parse_action(&json, &ctx, 0);
        let _ = youtube::parse_item(&json, &ctx);
        let _ = spamscope_chat::chat_downloader::parse_item(&json, &ctx, 0);
        let _ = spamscope_chat::twitch_vod::parse_comment(&json, &spamscope_chat::twitch_vod::VodContext::default());
        let _ = spamscope_chat::twitch_vod::VodContext::of_file(&json, "f");
        let _ = format::parse_bytes(json.to_string().as_bytes(), &ctx);
    }

    #[test]
    fn normalise_never_panics_and_is_idempotent(s in "\\PC{0,60}") {
        let once = normalize(&s);
        prop_assert_eq!(normalize(&once), once);
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let keys = prop_oneof![
        Just("addChatItemAction".to_string()),
        Just("item".to_string()),
        Just("liveChatTextMessageRenderer".to_string()),
        Just("liveChatPaidMessageRenderer".to_string()),
        Just("markChatItemAsDeletedAction".to_string()),
        Just("replaceChatItemAction".to_string()),
        Just("message_type".to_string()),
        Just("timestampUsec".to_string()),
        Just("timestamp".to_string()),
        Just("runs".to_string()),
        Just("text".to_string()),
        Just("id".to_string()),
        Just("action_type".to_string()),
        Just("message".to_string()),
        Just("message_id".to_string()),
        Just("author".to_string()),
        Just("author_id".to_string()),
        Just("author_type".to_string()),
        Just("badges".to_string()),
        Just("emotes".to_string()),
        Just("locations".to_string()),
        Just("name".to_string()),
        Just("time_in_seconds".to_string()),
        Just("ban_duration".to_string()),
        Just("target_message_id".to_string()),
        Just("replayChatItemAction".to_string()),
        Just("actions".to_string()),
        Just("videoOffsetTimeMsec".to_string()),
        Just("comments".to_string()),
        Just("streamer".to_string()),
        Just("commenter".to_string()),
        Just("body".to_string()),
        Just("created_at".to_string()),
        Just("content_offset_seconds".to_string()),
        Just("emoticons".to_string()),
        Just("fragments".to_string()),
        Just("begin".to_string()),
        Just("end".to_string()),
        "[a-z]{1,6}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[0-9a-z$ ]{0,8}".prop_map(Value::from),
        Just(Value::from("text_message")),
        Just(Value::from("deleted_state_message")),
        Just(Value::from("ban_user")),
        Just(Value::from("mark_chat_item_as_deleted")),
        Just(Value::from("[message retracted]")),
        Just(Value::from("2017-12-24T17:05:36.568Z")),
        Just(Value::from("0-4,2-9")),
        any::<f64>().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(keys.clone(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
