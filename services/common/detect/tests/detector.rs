//! The detector on the real logs and on generated event sequences.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::path::PathBuf;
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::json;
use spamscope_chat::replay;
use spamscope_detect::{CompiledParams, Detector, DetectorParams, ScoreModel, StreamDetector};
use spamscope_proto::v1::{
    Author, ChatEvent, ChatMessage, DetectorOutput, MessageDeleted, Platform, Roles, RoomState,
    SpamEvent, SpamEventClass, SpamEventState, UserTimedOut, chat_event::Kind, detector_output,
};

fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../testdata")
        .join(rel)
}

fn events_of(rel: &str) -> Vec<ChatEvent> {
    replay::merge(vec![replay::read_file(&testdata(rel)).unwrap()])
}

fn model() -> Arc<ScoreModel> {
    Arc::new(ScoreModel::bundled())
}

fn run(events: &[ChatEvent]) -> Vec<DetectorOutput> {
    let mut d = Detector::new(model()).with_scores(true);
    let mut out = Vec::new();
    for ev in events {
        d.handle(ev, &mut out);
    }
    out
}

/// The last update of every spam event that ended (an event can end, resume
/// and end again; it keeps its id).
fn final_events(out: &[DetectorOutput]) -> Vec<SpamEvent> {
    let mut last = std::collections::BTreeMap::new();
    for o in out {
        if let Some(detector_output::Kind::SpamEvent(e)) = &o.kind {
            last.insert((e.stream_id.clone(), e.event_id), e.clone());
        }
    }
    last.into_values()
        .filter(|e| e.state == SpamEventState::Ended as i32)
        .collect()
}

#[test]
fn youtube_cheese_copypasta_is_one_spam_event_with_zero_width_variants_merged() {
    let events = events_of("youtube/chilledcow-2020-11.chat-downloader.json");
    let canonical = "SPAM🧀THIS🧀CHEESE🧀FOR🧀GOOD🧀LUCK";
    let (mut plain, mut zw) = (0, 0);
    for ev in &events {
        if let Some(Kind::Message(m)) = &ev.kind {
            if m.text == canonical {
                plain += 1;
            } else if m.text.trim_start_matches('\u{200b}') == canonical {
                zw += 1;
            }
        }
    }
    assert!(
        plain > 10 && zw > 10,
        "both variants are in the log: {plain} plain, {zw} zero-width"
    );
    let finals = final_events(&run(&events));
    let cheese: Vec<&SpamEvent> = finals
        .iter()
        .filter(|e| e.text.trim_start_matches('\u{200b}') == canonical)
        .collect();
    assert_eq!(cheese.len(), 1, "one event for the copypasta: {cheese:#?}");
    let e = cheese[0];
    assert!(
        e.count >= (plain + zw) as u64,
        "count {} < {} copies",
        e.count,
        plain + zw
    );
    assert!(e.unique_users >= 20);
    assert!(e.first_seen_ms < e.last_seen_ms);
    assert_eq!(e.fingerprint.len(), 16);
    // 47 users, 5.4 messages each: a flood, which is spam.
    assert!(e.spam, "{e:?}");
    assert_eq!(e.class(), SpamEventClass::Flood);
}

#[test]
fn twitch_copypasta_waves_become_spam_events() {
    let events = events_of("twitch/xqcow-2019-09-15.irc");
    let finals = final_events(&run(&events));
    assert!(finals.len() >= 20, "{} events", finals.len());
    let feels = finals
        .iter()
        .filter(|e| e.text.contains("FeelsGoodMan Clap"))
        .max_by_key(|e| e.count)
        .expect("the FeelsGoodMan Clap wave");
    assert!(feels.unique_users >= 50, "{feels:?}");
    // "LULW" is also sent as "LULW U+E0000" to dodge Twitch's duplicate
    // filter; both are one event.
    let dodged = events.iter().any(|e| matches!(&e.kind, Some(Kind::Message(m)) if m.text.starts_with("LULW") && m.text.contains('\u{E0000}')));
    assert!(dodged);
    let lulw: Vec<&SpamEvent> = finals
        .iter()
        .filter(|e| spamscope_chat::normalize::normalize(&e.text) == "lulw")
        .collect();
    assert_eq!(lulw.len(), 1, "{lulw:#?}");
    assert!(lulw[0].unique_users >= 100);
    // A crowd reaction, not spam (issue 14: it came out like a copypasta).
    assert_eq!(lulw[0].class(), SpamEventClass::CrowdReaction);
    assert!(!lulw[0].spam);
    assert!(feels.spam || feels.class() == SpamEventClass::CrowdReaction);
}

/// Runs the detector as `eval --moderation` does (moderator-fed evidence
/// off) over a bundled log.
fn run_predictive(events: &[ChatEvent], scores: bool) -> Vec<DetectorOutput> {
    let mut d = Detector::new(model()).with_scores(scores);
    let mut out = Vec::new();
    d.set_default_params(spamscope_detect::eval::predictive_params(), &mut out)
        .unwrap();
    for ev in events {
        d.handle(ev, &mut out);
    }
    out
}

#[test]
fn xqcow_single_short_messages_never_flag_and_scores_stay_low() {
    // On this log the old detector flagged 174 users nobody acted on, most
    // for one short reaction (`????????`, `YOOOOOOOO`, an emote wall the
    // chat joined), and scored 61 % of the messages 0.5 or more.
    let events = events_of("twitch/xqcow-2019-09-15.irc");
    let out = run_predictive(&events, true);
    let strong = [
        "link",
        "blacklisted_text",
        "blacklisted_name",
        "self_promotion",
    ];
    for o in &out {
        if let Some(detector_output::Kind::Decision(d)) = &o.kind
            && d.messages_seen <= 1
        {
            let t = &d.triggers[0];
            assert!(
                strong.contains(&t.name.as_str())
                    || (matches!(t.name.as_str(), "wall" | "long_message") && t.observed >= 150.0),
                "flagged on one message without strong evidence: {d:?}"
            );
        }
    }
    let decisions = out
        .iter()
        .filter(|o| matches!(o.kind, Some(detector_output::Kind::Decision(_))))
        .count();
    // Measured: 2 of 1,208 chatters, both timed out by the moderators.
    assert!(decisions <= 5, "{decisions} flags");
    let scores: Vec<f64> = out
        .iter()
        .filter_map(|o| match &o.kind {
            Some(detector_output::Kind::MessageScore(s)) => Some(s.score),
            _ => None,
        })
        .collect();
    let high = scores.iter().filter(|s| **s >= 0.5).count();
    // Measured: 20 of 4,933 (0.4 %); the target is at most 5 %.
    assert!(
        (high as f64) <= 0.01 * scores.len() as f64,
        "{high} of {} messages score 0.5 or more",
        scores.len()
    );
}

#[test]
fn fingerprints_agree_across_channels() {
    // The same copypasta in two streams gets the same fingerprint.
    let mut events = Vec::new();
    for (stream, offset) in [("a", 0), ("b", 7)] {
        for u in 0..6 {
            events.push(msg(
                stream,
                &format!("u{u}"),
                offset + u as i64 * 1000,
                if u % 2 == 0 {
                    "FREE SKINS at sk1ns dot gg"
                } else {
                    "\u{200b}free skins at SK1NS dot gg"
                },
            ));
        }
        events.push(end(stream, 100_000));
    }
    events.sort_by_key(|e| e.ts_ms);
    let finals = final_events(&run(&events));
    assert_eq!(finals.len(), 2);
    assert_eq!(finals[0].fingerprint, finals[1].fingerprint);
    assert_ne!(finals[0].stream_id, finals[1].stream_id);
}

#[test]
fn replay_is_deterministic() {
    let events = events_of("twitch/xqcow-2019-09-15.irc");
    assert_eq!(run(&events), run(&events));
}

#[test]
fn every_message_gets_a_score_in_unit_range() {
    let events = events_of("youtube/chilledcow-2020-11.chat-downloader.json");
    let messages = events
        .iter()
        .filter(|e| matches!(e.kind, Some(Kind::Message(_))))
        .count();
    let scores: Vec<f64> = run(&events)
        .iter()
        .filter_map(|o| match &o.kind {
            Some(detector_output::Kind::MessageScore(s)) => Some(s.score),
            _ => None,
        })
        .collect();
    assert_eq!(scores.len(), messages);
    assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));
}

/// Link evidence on the real logs names a link its author wrote as one: a
/// scheme, `www.` or a path after the name. ("BE JAKE.BE LIKE JAKE", two
/// lines of a copypasta pasted together in the chilledcow log, was taken
/// for the link `jake.be` and flagged its author.)
#[test]
fn link_evidence_on_the_real_logs_names_links_written_as_links() {
    let mut checked = 0;
    for rel in [
        "youtube/chilledcow-2020-11.chat-downloader.json",
        "twitch/xqcow-2019-09-15.irc",
    ] {
        let events = events_of(rel);
        let texts_of = |user_id: &str| -> Vec<String> {
            events
                .iter()
                .filter_map(|e| match &e.kind {
                    Some(Kind::Message(m))
                        if m.author.as_ref().is_some_and(|a| a.user_id == user_id) =>
                    {
                        Some(m.text.to_lowercase())
                    }
                    _ => None,
                })
                .collect()
        };
        for o in run(&events) {
            let Some(detector_output::Kind::Decision(d)) = &o.kind else {
                continue;
            };
            for t in d.triggers.iter().filter(|t| t.name == "link") {
                let domain = t.detail.to_lowercase();
                let written = texts_of(&d.user_id).iter().any(|text| {
                    text.match_indices(domain.as_str()).any(|(i, _)| {
                        let before = &text[..i];
                        let after = &text[i + domain.len()..];
                        before.ends_with("://")
                            || before.ends_with("www.")
                            || domain.starts_with("www.")
                            || before.ends_with('.')
                            || after.starts_with('/')
                    })
                });
                assert!(
                    written,
                    "{rel}: {} flagged for the link {domain}, which none of their messages holds as a link",
                    d.user_login
                );
                checked += 1;
            }
        }
    }
    // The logs hold real links too: the check is not vacuous.
    assert!(checked > 0, "no link evidence at all");
}

fn author(login: &str, roles: Roles) -> Author {
    Author {
        user_id: format!("id-{login}"),
        login: login.into(),
        display_name: login.into(),
        roles: Some(roles),
    }
}

fn msg(stream: &str, login: &str, ts: i64, text: &str) -> ChatEvent {
    msg_with(stream, login, ts, text, Roles::default())
}

fn msg_with(stream: &str, login: &str, ts: i64, text: &str, roles: Roles) -> ChatEvent {
    ChatEvent {
        platform: Platform::Twitch as i32,
        stream_id: stream.into(),
        channel_id: String::new(),
        event_id: format!("{stream}-{login}-{ts}"),
        ts_ms: ts,
        kind: Some(Kind::Message(ChatMessage {
            author: Some(author(login, roles)),
            text: text.into(),
            ..ChatMessage::default()
        })),
    }
}

fn end(stream: &str, ts: i64) -> ChatEvent {
    ChatEvent {
        platform: Platform::Twitch as i32,
        stream_id: stream.into(),
        event_id: format!("end-{stream}"),
        ts_ms: ts,
        kind: Some(Kind::StreamEnded(Default::default())),
        ..ChatEvent::default()
    }
}

fn decisions(out: &[DetectorOutput]) -> Vec<(String, Vec<String>)> {
    out.iter()
        .filter_map(|o| match &o.kind {
            Some(detector_output::Kind::Decision(d)) => Some((
                d.user_login.clone(),
                d.triggers.iter().map(|t| t.name.clone()).collect(),
            )),
            _ => None,
        })
        .collect()
}

fn stream_detector(params: serde_json::Value) -> StreamDetector {
    let p = CompiledParams::new(DetectorParams::layered(&[&params]).unwrap()).unwrap();
    StreamDetector::new(Platform::Twitch, "c", p, model())
}

fn decision_of(out: &[DetectorOutput], login: &str) -> Option<spamscope_proto::v1::Decision> {
    out.iter().find_map(|o| match &o.kind {
        Some(detector_output::Kind::Decision(d)) if d.user_login == login => Some(d.clone()),
        _ => None,
    })
}

#[test]
fn triggers_carry_evidence_and_flags_are_not_lost() {
    let mut d = stream_detector(json!({}));
    let mut out = Vec::new();
    d.handle(&msg("c", "lurker", 500, "hello chat"), &mut out);
    // One unknown link is strong evidence: flagged on the spot.
    d.handle(
        &msg("c", "talker", 1_000, "free followers at bit.ly\\14gKvDo"),
        &mut out,
    );
    let dec = decision_of(&out, "talker").expect("flagged");
    let t = &dec.triggers[0];
    assert_eq!((t.name.as_str(), t.detail.as_str()), ("link", "bit.ly"));
    assert_eq!(t.count, 1);
    assert!(t.contribution >= dec.flag_threshold, "{dec:?}");
    assert!(dec.suspicion >= dec.flag_threshold);
    out.clear();
    // A timeout after the flag does not flag twice, and does not unflag.
    d.handle(
        &ChatEvent {
            kind: Some(Kind::UserTimedOut(UserTimedOut {
                user_login: "talker".into(),
                duration_s: 10,
                ..Default::default()
            })),
            ..msg("c", "x", 2_000, "")
        },
        &mut out,
    );
    d.handle(&msg("c", "talker", 3_000, "short"), &mut out);
    assert!(decisions(&out).is_empty());
}

#[test]
fn one_short_reaction_never_flags() {
    // The single messages the old trigger flagged (issue 14).
    let mut d = stream_detector(json!({}));
    let mut out = Vec::new();
    for (i, t) in [
        "????????",
        "77777777",
        "YOOOOOOOO",
        "hasHi hasHi hasHi hasHi",
        "LULW LULW LULW LULW LULW LULW",
    ]
    .iter()
    .enumerate()
    {
        d.handle(&msg("c", &format!("u{i}"), 1_000 + i as i64, t), &mut out);
    }
    assert!(decisions(&out).is_empty(), "{:?}", decisions(&out));
}

/// A 300-grapheme emote wall.
fn wall(unit: &str) -> String {
    let mut w = String::new();
    while w.chars().count() < 300 {
        w.push_str(unit);
        w.push(' ');
    }
    w
}

#[test]
fn a_wall_in_quiet_chat_is_not_a_wall_in_a_rave() {
    // Quiet chat: small talk, then one user posts two walls.
    let mut quiet = stream_detector(json!({}));
    let mut out = Vec::new();
    for i in 0..60 {
        quiet.handle(
            &msg(
                "c",
                &format!("u{i}"),
                i * 1_000,
                &format!("nice play number {i}"),
            ),
            &mut out,
        );
    }
    quiet.handle(
        &msg("c", "waller", 61_000, &wall("forsenE GIGACHAD")),
        &mut out,
    );
    quiet.handle(
        &msg("c", "waller", 70_000, &wall("forsenE GIGACHAD")),
        &mut out,
    );
    let dec = decision_of(&out, "waller").expect("flagged in quiet chat");
    let t = dec.triggers.iter().find(|t| t.name == "wall").unwrap();
    assert!(t.observed >= 300.0 && t.norm < 0.01, "{t:?}");

    // A rave: half the chat posts walls of all kinds; the same two walls
    // are what everybody does.
    let mut rave = stream_detector(json!({}));
    let mut out = Vec::new();
    for i in 0..60 {
        let text = if i % 2 == 0 {
            wall(&format!("pepeD RAVE{i}"))
        } else {
            format!("nice play number {i}")
        };
        rave.handle(&msg("c", &format!("u{i}"), i * 1_000, &text), &mut out);
    }
    rave.handle(
        &msg("c", "waller", 61_000, &wall("forsenE GIGACHAD")),
        &mut out,
    );
    rave.handle(
        &msg("c", "waller", 70_000, &wall("forsenE GIGACHAD")),
        &mut out,
    );
    assert!(
        decision_of(&out, "waller").is_none(),
        "{:?}",
        decisions(&out)
    );
}

#[test]
fn repeating_your_own_message_builds_suspicion_that_decays() {
    let mut d = stream_detector(json!({}));
    let mut out = Vec::new();
    for i in 0..30 {
        d.handle(
            &msg("c", &format!("u{i}"), i * 1_000, &format!("chat line {i}")),
            &mut out,
        );
    }
    let text = "today is my birthday can u plz gift me vbucks as a gift plz";
    // Two copies an hour apart: the first is forgotten.
    d.handle(&msg("c", "asker", 30_000, text), &mut out);
    d.handle(&msg("c", "asker", 3_630_000, text), &mut out);
    assert!(decision_of(&out, "asker").is_none());
    // Five copies in a minute: flagged, with the repeats as evidence.
    for i in 0..5 {
        d.handle(&msg("c", "asker", 3_640_000 + i * 10_000, text), &mut out);
    }
    let dec = decision_of(&out, "asker").expect("flagged");
    assert!(
        dec.triggers
            .iter()
            .any(|t| t.name == "repeated_message" && t.count >= 2)
    );
}

#[test]
fn roles_weigh_a_subscribers_walls_instead_of_exempting_them() {
    // A 9-month subscriber posting braille-art walls, and a chatter without
    // a badge doing the same in another channel like it (issue 14: the
    // subscriber used to be exempt).
    let sub = Roles {
        member: true,
        member_months: 9,
        ..Roles::default()
    };
    let braille = "⣿⣿⣿⣿⣿⡿⠛⣉⡉⠙⠻⣿⣿⣿⣿ ".repeat(20);
    let run = |roles: Roles| {
        let mut d = stream_detector(json!({}));
        let mut out = Vec::new();
        for i in 0..30 {
            d.handle(
                &msg("c", &format!("u{i}"), i * 1_000, &format!("chat line {i}")),
                &mut out,
            );
        }
        let mut flagged_at = None;
        for i in 0..6 {
            d.handle(
                &msg_with("c", "artist", 31_000 + i * 5_000, &braille, roles),
                &mut out,
            );
            if flagged_at.is_none() && decision_of(&out, "artist").is_some() {
                flagged_at = Some(i + 1);
            }
        }
        (flagged_at, d.user("", "artist").unwrap().suspicion)
    };
    let (sub_at, sub_suspicion) = run(sub);
    let (plain_at, plain_suspicion) = run(Roles::default());
    assert!(sub_at.is_some(), "a subscriber is weighed, not exempt");
    assert!(plain_at <= sub_at, "{plain_at:?} {sub_at:?}");
    let ratio = sub_suspicion / plain_suspicion;
    let w = DetectorParams::default().member_weight as f32;
    assert!((ratio - w).abs() < 0.01, "{ratio}");
}

#[test]
fn trusted_bots_moderators_and_the_broadcaster_are_never_flagged() {
    let link = "follow on twitter https://twitter.com/someone";
    let modr = Roles {
        moderator: true,
        ..Roles::default()
    };
    let mut d = stream_detector(json!({}));
    let mut out = Vec::new();
    d.handle(&msg_with("c", "mod", 1_000, link, modr), &mut out);
    d.handle(&msg("c", "Nightbot", 2_000, link), &mut out);
    assert!(decisions(&out).is_empty(), "{:?}", decisions(&out));
    let mut d = stream_detector(json!({"exempt_moderators": false, "trusted_users": []}));
    d.handle(&msg_with("c", "mod", 1_000, link, modr), &mut out);
    d.handle(&msg("c", "Nightbot", 2_000, link), &mut out);
    assert_eq!(decisions(&out).len(), 2);
}

#[test]
fn allow_lists_silence_phrases_and_domains() {
    let mut d = stream_detector(json!({
        "allowed_domains": ["example.org"],
        "allowed_phrases": ["forsenE GIGACHAD"]
    }));
    let mut out = Vec::new();
    d.handle(
        &msg("c", "a", 1_000, "docs at https://docs.example.org/x"),
        &mut out,
    );
    for i in 0..3 {
        d.handle(
            &msg("c", "b", 2_000 + i, &wall("forsenE GIGACHAD")),
            &mut out,
        );
    }
    assert!(decisions(&out).is_empty(), "{:?}", decisions(&out));
    d.handle(
        &msg("c", "c", 9_000, "see https://other.example.com"),
        &mut out,
    );
    assert_eq!(decisions(&out).len(), 1);
}

#[test]
fn macro_spam_delay_with_out_of_order_messages_and_slow_mode() {
    let mut d = stream_detector(json!({"fast_weight": 1.0}));
    let mut out = Vec::new();
    // Out of order: 3 s, 1 s, 2 s, 0 s → mean gap 1 s, no panic.
    for ts in [3_000, 1_000, 2_000, 0] {
        d.handle(&msg("c", "bot", ts + 10_000, &format!("m{ts}")), &mut out);
    }
    let got = decisions(&out);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].1.contains(&"fast_messages".to_owned()));

    // With 30 s slow mode announced, a user posting every 31 s is macro
    // spamming at the limit.
    let mut d = stream_detector(json!({"fast_weight": 1.0}));
    let mut out = Vec::new();
    d.handle(
        &ChatEvent {
            kind: Some(Kind::RoomState(RoomState {
                slow_mode_s: Some(30),
                ..Default::default()
            })),
            ..msg("c", "x", 0, "")
        },
        &mut out,
    );
    for i in 0..4 {
        d.handle(
            &msg(
                "c",
                "steady",
                1_000 + i * 31_000,
                &format!("message number {i}"),
            ),
            &mut out,
        );
    }
    let got = decisions(&out);
    assert_eq!(got.len(), 1, "{got:?}");
    let dec = decision_of(&out, "steady").unwrap();
    assert_eq!((dec.slow_mode_s, dec.slow_mode_inferred), (30, false));
    let t = dec
        .triggers
        .iter()
        .find(|t| t.name == "fast_messages")
        .unwrap();
    assert_eq!((t.threshold, t.norm), (36_000.0, 30.0));
}

#[test]
fn slow_mode_is_inferred_from_the_chat() {
    let mut d = stream_detector(json!({}));
    let mut out = Vec::new();
    // 40 users each posting every 12 s or more: a 10 s slow mode.
    for round in 0..3 {
        for u in 0..40 {
            let ts = round * 12_000 + u * 7 + (round % 2) * 500;
            d.handle(
                &msg("c", &format!("u{u}"), ts, &format!("hello {u} {round}")),
                &mut out,
            );
        }
    }
    let (secs, inferred) = d.slow_mode();
    assert!(inferred);
    assert!((10..=13).contains(&secs), "{secs}");
}

#[test]
fn unknown_deletions_are_counted_not_dropped() {
    let mut d = stream_detector(json!({}));
    let mut out = Vec::new();
    d.handle(&msg("c", "a", 1_000, "hi"), &mut out);
    let del = |target: &str| ChatEvent {
        kind: Some(Kind::MessageDeleted(MessageDeleted {
            target_message_id: target.into(),
            ..Default::default()
        })),
        ..msg("c", "x", 2_000, "")
    };
    d.handle(&del("never-seen"), &mut out);
    assert_eq!(d.counters().unknown_deletions, 1);
    // A known message's deletion counts against its author.
    d.handle(&del("c-a-1000"), &mut out);
    assert_eq!(d.counters().unknown_deletions, 1);
    assert!(
        decisions(&out)
            .iter()
            .any(|(u, t)| u == "a" && t.contains(&"deleted_messages".to_owned()))
    );
}

/// The index of message ids is built on the first deletion that needs it
/// and kept from then on: messages sent later are found, messages pushed
/// out of `max_tracked_message_ids` are not.
#[test]
fn deletions_find_later_messages_and_forget_evicted_ones() {
    let mut d = stream_detector(json!({"max_tracked_message_ids": 2}));
    let mut out = Vec::new();
    let del = |target: &str, ts: i64| ChatEvent {
        kind: Some(Kind::MessageDeleted(MessageDeleted {
            target_message_id: target.into(),
            ..Default::default()
        })),
        ..msg("c", "x", ts, "")
    };
    d.handle(&msg("c", "a", 1_000, "hi"), &mut out);
    d.handle(&del("never-seen", 2_000), &mut out);
    assert_eq!(d.counters().unknown_deletions, 1);
    d.handle(&msg("c", "b", 3_000, "hello"), &mut out);
    d.handle(&del("c-b-3000", 3_500), &mut out);
    assert_eq!(
        d.counters().unknown_deletions,
        1,
        "a message after the build"
    );
    d.handle(&msg("c", "e", 4_000, "yo"), &mut out);
    d.handle(&msg("c", "f", 5_000, "sup"), &mut out);
    // Only e and f are remembered now.
    d.handle(&del("c-a-1000", 6_000), &mut out);
    d.handle(&del("c-b-3000", 6_000), &mut out);
    assert_eq!(d.counters().unknown_deletions, 3);
    d.handle(&del("c-f-5000", 6_000), &mut out);
    assert_eq!(d.counters().unknown_deletions, 3);
}

/// The author's own retraction is not a moderator's deletion: it adds no
/// evidence against them (the same deletion by a moderator does).
#[test]
fn retractions_are_not_deletions() {
    let mut d = stream_detector(json!({}));
    let mut out = Vec::new();
    d.handle(&msg("c", "a", 1_000, "hi"), &mut out);
    let retract = ChatEvent {
        kind: Some(Kind::MessageDeleted(MessageDeleted {
            target_message_id: "c-a-1000".into(),
            by_author: true,
            ..Default::default()
        })),
        ..msg("c", "x", 2_000, "")
    };
    d.handle(&retract, &mut out);
    assert!(decisions(&out).is_empty(), "{:?}", decisions(&out));
    assert_eq!(d.counters().unknown_deletions, 0);
}

#[test]
fn params_change_re_evaluates_the_stream() {
    let mut det = Detector::new(model());
    let mut out = Vec::new();
    det.set_default_params(json!({"sensitivity": 0.5}), &mut out)
        .unwrap();
    det.handle(
        &msg(
            "c",
            "promoter",
            10_000,
            "hey guys follow my twitch channel pls",
        ),
        &mut out,
    );
    assert!(
        decisions(&out).is_empty(),
        "at half the sensitivity self-promotion alone is not enough"
    );
    det.set_stream_params("twitch.c", json!({"sensitivity": 1.0}), &mut out)
        .unwrap();
    let got = decisions(&out);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, vec!["self_promotion".to_owned()]);
    // Invalid values are refused with the key named.
    let err = det
        .set_default_params(json!({"tick_ms": 5}), &mut out)
        .unwrap_err();
    assert!(err.to_string().contains("tick_ms"));
}

#[test]
fn stream_params_apply_to_their_stream_only() {
    // Streams without overrides share one compiled copy of the defaults;
    // an override must still reach its stream and no other, including
    // streams that start after it.
    let mut det = Detector::new(model());
    let mut out = Vec::new();
    det.set_default_params(json!({"sensitivity": 0.5}), &mut out)
        .unwrap();
    let chatty = |stream: &str, i: i64| {
        msg(
            stream,
            "chatty",
            i * 10_000,
            "hey guys follow my twitch channel pls",
        )
    };
    det.handle(&chatty("c", 0), &mut out);
    det.handle(&chatty("d", 0), &mut out);
    det.set_stream_params("twitch.c", json!({"sensitivity": 1.0}), &mut out)
        .unwrap();
    det.handle(&chatty("e", 1), &mut out);
    let flagged: Vec<&str> = out
        .iter()
        .filter_map(|o| match &o.kind {
            Some(detector_output::Kind::Decision(d)) => Some(d.stream_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(flagged, vec!["c"]);
}

#[test]
fn state_is_bounded() {
    let mut d = stream_detector(
        json!({"max_users": 100, "max_clusters": 50, "max_tracked_message_ids": 200}),
    );
    let mut out = Vec::new();
    for i in 0..5_000i64 {
        d.handle(
            &msg(
                "c",
                &format!("user{i}"),
                i * 100,
                &format!("unique text number {i} {}", i * 7919),
            ),
            &mut out,
        );
    }
    // Bounds are enforced on every tick (10 s of event time = 100 events).
    assert!(d.tracked_users() <= 100 + 100, "{}", d.tracked_users());
    assert!(d.tracked_groups() <= 50 + 100, "{}", d.tracked_groups());
}

/// Idle users are forgotten at the first sweep (each minute of event time)
/// at least `user_idle_ms` after they were last seen, and only they: a user
/// seen again since first tracked stays until idle in turn.
#[test]
fn idle_users_are_forgotten_on_time_and_only_they() {
    let mut d = stream_detector(json!({"user_idle_ms": 120_000}));
    let mut out = Vec::new();
    let tracked = |d: &StreamDetector| -> Vec<&str> {
        ["a", "b", "c"]
            .into_iter()
            .filter(|l| d.user(&format!("id-{l}"), l).is_some())
            .collect()
    };
    d.handle(&msg("c", "a", 0, "hello there"), &mut out);
    d.handle(&msg("c", "b", 1_000, "hello there friend"), &mut out);
    d.handle(&msg("c", "c", 2_000, "what a game"), &mut out);
    d.handle(&msg("c", "b", 100_000, "so good"), &mut out);
    d.handle(&msg("c", "c", 110_000, "what a play"), &mut out);
    assert_eq!(tracked(&d), ["a", "b", "c"]);
    // Sweep at 130 s: a was last seen 130 s ago; b 30 s, c 20 s.
    d.advance_to(130_000, &mut out);
    assert_eq!(tracked(&d), ["b", "c"]);
    // Sweep at 220 s: b 120 s (gone), c 110 s.
    d.advance_to(225_000, &mut out);
    assert_eq!(tracked(&d), ["c"]);
    // The tick at 230 s is in the same minute: no sweep.
    d.advance_to(235_000, &mut out);
    assert_eq!(tracked(&d), ["c"]);
    // Sweep at 240 s: c 130 s.
    d.advance_to(241_000, &mut out);
    assert!(tracked(&d).is_empty());
    assert_eq!(d.tracked_users(), 0);
}

#[test]
fn ticks_follow_event_time_at_one_second() {
    let mut d = stream_detector(json!({"tick_ms": 1000, "spam_quiet_ms": 5000}));
    let mut out = Vec::new();
    for u in 0..6 {
        d.handle(
            &msg(
                "c",
                &format!("u{u}"),
                100 + u * 10,
                "join my discord server now",
            ),
            &mut out,
        );
    }
    assert!(final_events(&out).is_empty());
    d.advance_to(1_500, &mut out);
    assert!(out.iter().any(|o| matches!(&o.kind, Some(detector_output::Kind::SpamEvent(e)) if e.state == SpamEventState::Active as i32)));
    d.advance_to(7_000, &mut out);
    assert_eq!(final_events(&out).len(), 1);
}

#[test]
fn real_log_snapshot_at_several_points_restores_exactly() {
    let events = events_of("youtube/chilledcow-2020-11.chat-downloader.json");
    let whole = run_stream(&events, None);
    for split in [1, events.len() / 3, events.len() / 2, events.len() - 2] {
        assert_eq!(run_stream(&events, Some(split)), whole, "split at {split}");
    }
}

fn run_stream(events: &[ChatEvent], split: Option<usize>) -> Vec<DetectorOutput> {
    let params = CompiledParams::defaults();
    let first = &events[0];
    let mut d = StreamDetector::new(
        first.platform(),
        &first.stream_id,
        Arc::clone(&params),
        model(),
    )
    .with_scores(true);
    let mut out = Vec::new();
    for (i, ev) in events.iter().enumerate() {
        if Some(i) == split {
            let bytes = d.to_bytes();
            d = StreamDetector::from_bytes(&bytes, Arc::clone(&params), model())
                .unwrap()
                .with_scores(true);
        }
        d.handle(ev, &mut out);
    }
    out
}

fn arb_event() -> impl Strategy<Value = (u8, u8, i64, u8)> {
    // (kind, user, time step, text choice)
    (0u8..10, 0u8..12, -3_000i64..20_000, 0u8..6)
}

fn build(seq: &[(u8, u8, i64, u8)]) -> Vec<ChatEvent> {
    const TEXTS: [&str; 6] = [
        "SPAM THIS CHEESE FOR GOOD LUCK",
        "\u{200b}spam this cheese for good luck",
        "hello there",
        "LUL LUL LUL LUL LUL LUL LUL LUL",
        "follow me on sk1ns dot gg for free stuff right now",
        "ok",
    ];
    let mut ts = 1_600_000_000_000i64;
    seq.iter()
        .enumerate()
        .map(|(i, &(kind, user, step, text))| {
            ts += step;
            let login = format!("user{user}");
            let mut ev = msg("s", &login, ts, TEXTS[text as usize]);
            ev.event_id = format!("e{i}");
            ev.kind = match kind {
                0 => Some(Kind::MessageDeleted(MessageDeleted {
                    target_message_id: format!("e{}", i / 2),
                    ..Default::default()
                })),
                1 => Some(Kind::UserTimedOut(UserTimedOut {
                    user_login: login,
                    duration_s: 60,
                    ..Default::default()
                })),
                2 => Some(Kind::RoomState(RoomState {
                    slow_mode_s: Some(u32::from(user)),
                    ..Default::default()
                })),
                3 if user == 0 => Some(Kind::StreamEnded(Default::default())),
                _ => ev.kind,
            };
            ev
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// For any event sequence and split point: run to the split, snapshot,
    /// restore into a fresh instance, continue; the outputs equal the
    /// uninterrupted run's.
    #[test]
    fn snapshot_restore_is_invisible(seq in proptest::collection::vec(arb_event(), 1..120), split in 0usize..120) {
        let events = build(&seq);
        let split = split % events.len();
        prop_assert_eq!(run_stream(&events, Some(split)), run_stream(&events, None));
    }

    /// Timestamps from outside (0, negative, year 2100, i64 bounds) and
    /// clocks at the bounds never overflow the detector's arithmetic (a
    /// panic in this debug build); `admit` refuses every such message.
    #[test]
    fn extreme_timestamps_never_overflow(
        seq in proptest::collection::vec(arb_event(), 1..60),
        poison in proptest::collection::vec((0usize..60, prop_oneof![
            Just(i64::MIN), Just(-1i64), Just(0i64), Just(4_102_444_800_000i64),
            Just(i64::MAX - 1), Just(i64::MAX),
        ]), 1..4),
        clock in prop_oneof![Just(i64::MIN), Just(0i64), Just(i64::MAX)],
    ) {
        let mut events = build(&seq);
        for (at, ts) in poison {
            let at = at % events.len();
            events[at].ts_ms = ts;
            let refused = spamscope_chat::admit::admit(
                &events[at],
                1_700_000_000_000,
                spamscope_chat::admit::DEFAULT_MAX_AHEAD_MS,
            );
            if matches!(events[at].kind, Some(Kind::Message(_))) {
                prop_assert!(refused.is_err(), "{ts} admitted");
            }
        }
        let mut d = Detector::new(model());
        let mut out = Vec::new();
        for ev in &events {
            d.handle(ev, &mut out);
        }
        d.advance_live(clock, &mut out);
        d.advance_to(clock, &mut out);
    }
}

#[test]
fn flag_budget_keeps_a_wall_culture_to_few_flags_but_not_link_bots() {
    // 1,000 chatters in 100 s, every tenth posting a wall of its own (no
    // wave to join); with the channel norms nearly off each wall flags.
    // Then five link bots.
    let run = |budget: f64| {
        let mut d = stream_detector(json!({
            "norm_base_share": 1.0,
            "flag_budget_per_1000": budget,
        }));
        let mut out = Vec::new();
        for i in 0..1_000i64 {
            let text = if i % 10 == 0 {
                format!("zq{i}x ").repeat(60)
            } else {
                format!("hello {i} how is the stream going")
            };
            d.handle(&msg("c", &format!("u{i}"), i * 100, &text), &mut out);
        }
        for b in 0..5i64 {
            let text = format!("cheap followers at spam{b}.example.com");
            d.handle(
                &msg("c", &format!("bot{b}"), 100_000 + b * 100, &text),
                &mut out,
            );
        }
        let got = decisions(&out);
        let walls = got.iter().filter(|(u, _)| u.starts_with('u')).count();
        let bots = got.iter().filter(|(u, _)| u.starts_with("bot")).count();
        (walls, bots)
    };
    assert_eq!(run(0.0), (100, 5), "without a budget every wall flags");
    let (walls, bots) = run(3.0);
    // At 3 per 1,000 of (1,000 + 300 prior) chatters, with each wall's
    // suspicion (1.2, 2.4 times the threshold) allowing the threshold to
    // rise 2.4-fold: at most 0.0072 × 1,300 ≈ 9 flags.
    assert!((1..=10).contains(&walls), "{walls}");
    assert_eq!(bots, 5, "links are outside the budget");
}

/// A live stream that goes quiet ends its spam event on the wall clock; a
/// recorded stream replayed at the same moment stays on its event time.
#[test]
fn quiet_live_streams_end_their_spam_events_recorded_ones_keep_event_time() {
    let params = json!({"tick_ms": 1000, "spam_quiet_ms": 5000});
    let mut d = Detector::new(model());
    let mut out = Vec::new();
    d.set_default_params(params, &mut out).unwrap();
    let wall: i64 = 1_780_000_000_000;
    let recorded: i64 = 1_568_000_000_000; // 2019
    for u in 0..6 {
        let text = "join my discord server now";
        d.handle(
            &msg("live", &format!("u{u}"), wall + u * 100, text),
            &mut out,
        );
        d.handle(
            &msg("old", &format!("u{u}"), recorded + u * 100, text),
            &mut out,
        );
    }
    let ended = |out: &[DetectorOutput], stream: &str| {
        final_events(out)
            .iter()
            .filter(|e| e.stream_id == stream)
            .count()
    };
    assert_eq!(ended(&out, "live") + ended(&out, "old"), 0);
    // Quiet for 3 s, then 20 s: the lateness (5 s) and the quiet period (5 s)
    // have passed only at the second call.
    d.advance_live(wall + 3_000, &mut out);
    assert_eq!(ended(&out, "live"), 0);
    d.advance_live(wall + 20_000, &mut out);
    assert_eq!(ended(&out, "live"), 1);
    assert_eq!(ended(&out, "old"), 0, "a replay of 2019 chat is not moved");
    // Event time then ends the recorded one as before.
    d.handle(&msg("old", "later", recorded + 60_000, "hello"), &mut out);
    assert_eq!(ended(&out, "old"), 1);
    // A live stream whose clock is already past the wall clock is left alone.
    let before = out.len();
    d.advance_live(wall - 60_000, &mut out);
    assert_eq!(out.len(), before);
}

/// The cluster layer set at runtime sits over the process's own layer
/// (`--params`) instead of replacing it, and every layer is checked with
/// the layers under it when it is set.
#[test]
fn the_cluster_layer_sits_over_the_process_layer() {
    let promoter = |ts| msg("c", "promoter", ts, "hey guys follow my twitch channel pls");
    let mut det = Detector::new(model());
    let mut out = Vec::new();
    det.set_default_params(json!({"sensitivity": 0.5}), &mut out)
        .unwrap();
    // A cluster layer about something else keeps the process's sensitivity:
    // self-promotion alone is still not enough at 0.5.
    det.set_cluster_params(json!({"tick_ms": 12000}), &mut out)
        .unwrap();
    det.handle(&promoter(10_000), &mut out);
    assert!(decisions(&out).is_empty(), "{:?}", decisions(&out));
    // The cluster layer's own keys win over the process's.
    det.set_cluster_params(json!({"tick_ms": 12000, "sensitivity": 1.0}), &mut out)
        .unwrap();
    assert_eq!(decisions(&out).len(), 1);
    // A stream layer valid alone but not over the cluster's 12 s tick.
    let err = det
        .set_stream_params("twitch.c", json!({"spam_quiet_ms": 11000}), &mut out)
        .unwrap_err();
    assert!(err.to_string().contains("spam_quiet_ms"), "{err}");
    let err = det
        .set_stream_params("twitch.c", json!({"blacklist": ["(unclosed"]}), &mut out)
        .unwrap_err();
    assert!(err.to_string().contains("blacklist"), "{err}");
}

/// A user flagged, forgotten when idle, and flagged again gets a second
/// decision with its own idempotency key (the key was `<stream>/decision/
/// <user>`, so the bus dropped the second as a duplicate).
#[test]
fn a_user_flagged_again_after_being_forgotten_is_a_new_decision() {
    let mut det = Detector::new(model());
    let mut out = Vec::new();
    det.set_default_params(json!({"user_idle_ms": 60_000}), &mut out)
        .unwrap();
    let promo = "hey guys follow my twitch channel pls";
    det.handle(&msg("c", "promoter", 10_000, promo), &mut out);
    // Others chat for ten minutes: the promoter is idle and forgotten.
    for i in 1..=60 {
        det.handle(
            &msg(
                "c",
                &format!("viewer{}", i % 7),
                10_000 + i * 10_000,
                "nice play",
            ),
            &mut out,
        );
    }
    det.handle(&msg("c", "promoter", 700_000, promo), &mut out);
    let keys: Vec<String> = out
        .iter()
        .filter(|o| {
            matches!(&o.kind, Some(detector_output::Kind::Decision(d)) if d.user_login == "promoter")
        })
        .map(spamscope_detect::output_key)
        .collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_ne!(keys[0], keys[1]);
}

/// The xqcow log dealt by chatter into `n` streams (a chatter's messages,
/// deletions, timeouts and ban stay in one stream; room lines go to the
/// first).
fn xqcow_by_chatter(n: u64) -> Vec<ChatEvent> {
    let mut events = events_of("twitch/xqcow-2019-09-15.irc");
    for ev in &mut events {
        let who = match &ev.kind {
            Some(Kind::Message(m)) => m.author.as_ref().map_or("", |a| a.login.as_str()),
            Some(Kind::UserTimedOut(t)) => t.user_login.as_str(),
            Some(Kind::UserBanned(b)) => b.user_login.as_str(),
            Some(Kind::MessageDeleted(d)) => d.user_login.as_str(),
            _ => "",
        };
        let k = if who.is_empty() {
            0
        } else {
            who.bytes()
                .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
                % n
        };
        ev.stream_id = format!("xqcow-{k}");
    }
    events
}

/// An owner that saves what changed every 40 events and lets idle streams
/// (and any beyond 8 held) leave memory, loading a stream back when its
/// chat comes, publishes exactly what a detector holding every stream
/// does, on real chat dealt into 60 streams.
#[test]
fn streams_that_leave_memory_and_come_back_change_no_output() {
    use prost::Message;
    let events = xqcow_by_chatter(60);
    let streams: std::collections::BTreeSet<&str> =
        events.iter().map(|e| e.stream_id.as_str()).collect();
    assert!(streams.len() >= 50, "{} streams", streams.len());
    let whole = run(&events);

    let mut d = Detector::new(model()).with_scores(true);
    let mut saved: std::collections::HashMap<String, Vec<u8>> = Default::default();
    let (mut evicted, mut loaded, mut max_held) = (0, 0, 0);
    let mut out = Vec::new();
    for (i, ev) in events.iter().enumerate() {
        // Replayed in 2033, one second of wall clock per event; idle
        // after 20 s.
        d.set_wall_clock(2_000_000_000_000 + i as i64 * 1_000);
        if !d.holds(ev)
            && let Some(bytes) = saved.get(&ev.stream_key())
        {
            let snap = spamscope_proto::v1::DetectorSnapshot::decode(bytes.as_slice()).unwrap();
            d.restore_stream(snap).unwrap();
            loaded += 1;
        }
        d.handle(ev, &mut out);
        max_held = max_held.max(d.held());
        if i % 40 == 39 {
            let c = d.take_changes();
            for k in &c.removed {
                saved.remove(k);
            }
            for (k, s) in c.changed {
                saved.insert(k, s.encode_to_vec());
            }
            let gone = d.evictable(20_000, 8);
            evicted += gone.len();
            d.evict(&gone);
            assert!(d.held() <= 8, "{} held after eviction", d.held());
        }
    }
    assert!(
        evicted > 200 && loaded > 200,
        "{evicted} evicted, {loaded} loaded"
    );
    assert!(max_held < streams.len(), "every stream was held at once");
    assert_eq!(out.len(), whole.len());
    assert!(out == whole, "the outputs differ");
    // What is saved is every stream seen (nothing ended), and each
    // changed stream is written once per period, not every stream.
    let c = d.take_changes();
    assert!(c.changed.len() <= 40, "{} streams changed", c.changed.len());
}

/// A live stream with a user to forget needs the clock: it stays in
/// memory, however idle, until the clock has aged that user out.
#[test]
fn a_live_stream_with_users_to_age_stays_until_they_are_forgotten() {
    let now = 1_800_000_000_000_i64;
    let key = "twitch.live".to_owned();
    let mut d = Detector::new(model());
    d.set_wall_clock(now);
    let mut out = Vec::new();
    d.handle(&msg("live", "alice", now - 1_000, "hello there"), &mut out);
    assert_eq!(d.take_changes().ticking, vec![key.clone()]);
    let mut minutes = 0;
    let ages = |d: &Detector| {
        let s = d.stream("twitch.live").unwrap();
        s.tracked_users() + s.tracked_groups() > 0
    };
    while ages(&d) {
        assert!(
            d.evictable(1_000, 100).is_empty(),
            "evicted with a user to age after {minutes} min"
        );
        minutes += 1;
        assert!(minutes < 240, "the user was never forgotten");
        let wall = now + minutes * 60_000;
        d.set_wall_clock(wall);
        d.advance_live(wall, &mut out);
    }
    assert!(minutes > 1, "forgotten after {minutes} min");
    assert!(d.take_changes().ticking.is_empty());
    assert_eq!(d.evictable(1_000, 100), vec![key]);
}
