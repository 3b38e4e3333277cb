//! Archive formats people keep, on the real samples in
//! `testdata/formats/` (sources in `testdata/README.md`). Expected counts
//! come from Python over the same files, quoted beside each.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::path::PathBuf;

use serde_json::{Value, json};
use spamscope_chat::format::{self, Format, FormatError, ParsedFile};
use spamscope_chat::replay;
use spamscope_chat::youtube::StreamContext;
use spamscope_proto::v1::{ChatEvent, Platform, chat_event::Kind};

fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../testdata")
        .join(rel)
}

fn read_json(rel: &str) -> Value {
    serde_json::from_slice(&std::fs::read(testdata(rel)).unwrap()).unwrap()
}

fn ctx(video: &str) -> StreamContext {
    StreamContext {
        video_id: video.into(),
        channel_id: String::new(),
    }
}

fn count(events: &[ChatEvent], p: impl Fn(&Kind) -> bool) -> usize {
    events
        .iter()
        .filter(|e| e.kind.as_ref().is_some_and(&p))
        .count()
}

fn messages(f: &ParsedFile) -> usize {
    count(&f.events, |k| matches!(k, Kind::Message(_)))
}

fn authors(f: &ParsedFile) -> usize {
    let ids: std::collections::HashSet<String> = f
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::Message(m)) => m.author.as_ref().map(|a| a.user_id.clone()),
            _ => None,
        })
        .collect();
    ids.len()
}

/// chat-downloader 2020, YouTube: no action_type, message_type or id.
/// `len(d)` = 636, `len({x['author_id'] for x in d})` = 605.
#[test]
fn chat_downloader_2020_youtube() {
    let f = replay::read_file(&testdata(
        "formats/chat-downloader-legacy-2020.youtube.json",
    ))
    .unwrap()
    .parsed;
    assert_eq!(f.format, Some(Format::ChatDownloader));
    assert_eq!((messages(&f), authors(&f)), (636, 605));
    assert!(f.malformed.is_empty() && f.skipped == 0);
    assert!(
        f.events
            .iter()
            .all(|e| e.platform() == Platform::Youtube && e.ts_ms > 1_597_000_000_000)
    );
    // Ids made from what each item says: all different, and the same on
    // a second read.
    let ids: std::collections::HashSet<&str> =
        f.events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids.len(), 636);
    let again = replay::read_file(&testdata(
        "formats/chat-downloader-legacy-2020.youtube.json",
    ))
    .unwrap()
    .parsed;
    assert_eq!(again.events[17].event_id, f.events[17].event_id);
    // 7 items carry `badges` (`sum('badges' in x for x in d)`), all
    // memberships.
    let members = count(
        &f.events,
        |k| matches!(k, Kind::Message(m) if m.author.as_ref().unwrap().roles.as_ref().unwrap().member),
    );
    assert_eq!(members, 7);
}

/// chat-downloader v0.1, Twitch VOD: `id` is the author's and `timestamp`
/// their account's creation (one value per author), so times are the
/// video offsets. 264 items, `len({x['id'] for x in d})` = 193, offsets
/// 0.066 s .. 59.01 s.
#[test]
fn chat_downloader_2020_twitch_vod() {
    let f = replay::read_file(&testdata(
        "formats/chat-downloader-legacy-2020.twitch-vod.json",
    ))
    .unwrap()
    .parsed;
    assert_eq!((messages(&f), authors(&f)), (264, 193));
    assert!(f.events.iter().all(|e| e.platform() == Platform::Twitch));
    let (first, last) = (
        f.events.iter().map(|e| e.ts_ms).min().unwrap(),
        f.events.iter().map(|e| e.ts_ms).max().unwrap(),
    );
    assert_eq!((first, last), (66, 59_010));
    assert!(f.notes.iter().any(|n| n.contains("offsets into the video")));
    let Some(Kind::Message(m)) = &f.events[0].kind else {
        panic!()
    };
    assert_eq!(m.text, "AGAIN?????");
    assert_eq!(m.author.as_ref().unwrap().login, "k3nji520");
}

/// A whole get_live_chat_replay response: 49 replayChatItemAction holding
/// 47 liveChatTextMessageRenderer, 1 paid message, 1 placeholder; 24
/// authors of text messages.
#[test]
fn innertube_replay_response_and_yt_dlp_lines() {
    let whole = replay::read_file(&testdata(
        "formats/innertube-live-chat-replay-response.json",
    ))
    .unwrap()
    .parsed;
    assert_eq!(whole.format, Some(Format::InnertubeActions));
    assert_eq!((messages(&whole), authors(&whole)), (47, 24));
    assert_eq!(count(&whole.events, |k| matches!(k, Kind::Support(_))), 1);
    assert_eq!(
        whole.skipped_by_kind.get("liveChatPlaceholderItemRenderer"),
        Some(&1)
    );
    assert!(whole.unknown_kinds.is_empty());

    // yt-dlp's live_chat.json: the same actions, one JSON object per line
    // with the video offset beside (it read as 0 messages, 49 skipped).
    let v = read_json("formats/innertube-live-chat-replay-response.json");
    let actions = v
        .pointer("/continuationContents/liveChatContinuation/actions")
        .unwrap()
        .as_array()
        .unwrap();
    let mut lines = String::new();
    for a in actions {
        let offset = a["replayChatItemAction"]["videoOffsetTimeMsec"].clone();
        lines.push_str(
            &json!({"replayChatItemAction": a["replayChatItemAction"], "videoOffsetTimeMsec": offset})
                .to_string(),
        );
        lines.push('\n');
    }
    let f = format::parse_bytes(lines.as_bytes(), &ctx("yt")).unwrap();
    assert_eq!(f.format, Some(Format::InnertubeActions));
    assert_eq!((messages(&f), authors(&f)), (47, 24));
    let ts = |p: &ParsedFile| p.events.iter().map(|e| e.ts_ms).collect::<Vec<_>>();
    assert_eq!(ts(&f), ts(&whole));
}

/// TwitchDownloader: `{FileInfo, streamer, video, comments}` with the real
/// v5 comment; a bare comment reads alone too.
#[test]
fn twitch_vod_json() {
    let comment = read_json("formats/twitch-vod-comment.json");
    // In TwitchDownloader's order (json! would sort the keys), with its
    // embedded images after the comments.
    let second = json!({"_id": "second", "content_offset_seconds": 10.0,
        "commenter": {"_id": "1", "name": "x", "display_name": "X"},
        "message": {"body": "hi", "user_badges": [{"_id": "moderator", "version": "1"}]}});
    let file = format!(
        r#"{{"FileInfo": {{"Version": {{"Major": 1, "Minor": 4, "Patch": 0}}}},
  "streamer": {{"name": "LIRIK", "id": 23161357}},
  "video": {{"title": "t", "id": "212237951", "created_at": "2017-12-24T17:04:47Z", "start": 0, "end": 100}},
  "comments": [{comment}, {second}],
  "embeddedData": {{"firstParty": [{{"data": "{images}"}}]}}}}"#,
        images = "A".repeat(3 << 20)
    );
    let f = format::parse_bytes(file.as_bytes(), &ctx("file")).unwrap();
    assert_eq!(f.format, Some(Format::TwitchVod));
    assert_eq!(messages(&f), 2);
    let ev = &f.events[0];
    assert_eq!(
        (ev.stream_key().as_str(), ev.channel_id.as_str()),
        ("twitch.lirik", "23161357")
    );
    // 2017-12-24T17:05:36.568Z
    assert_eq!(ev.ts_ms, 1_514_135_136_568);
    // No created_at: the video's start plus the offset.
    assert_eq!(f.events[1].ts_ms, 1_514_135_087_000 + 10_000);
    let Some(Kind::Message(m)) = &f.events[1].kind else {
        panic!()
    };
    assert!(m.author.as_ref().unwrap().roles.as_ref().unwrap().moderator);

    // Read member by member: the 3 MiB of images past the comments are
    // skipped, not held (a document limit of 1 MiB does not refuse it).
    let small = format::parse_reader(file.as_bytes(), &ctx("file"), 1 << 20).unwrap();
    assert_eq!(messages(&small), 2);
    // Another writer's order, streamer after the comments: the stream is
    // still the streamer's.
    let sorted =
        json!({"comments": [comment.clone()], "streamer": {"name": "LIRIK", "id": 23161357}});
    let f = format::parse_bytes(sorted.to_string().as_bytes(), &ctx("file")).unwrap();
    assert_eq!(f.events[0].stream_key(), "twitch.lirik");

    let alone = format::parse_bytes(comment.to_string().as_bytes(), &ctx("c")).unwrap();
    assert_eq!(
        (alone.format, messages(&alone)),
        (Some(Format::TwitchVod), 1)
    );
}

/// A chat-downloader dev dump whose moderation items say
/// `deleted_state_message`: made from the real chilledcow log (36
/// deletions, 36 author removals), two deletions turned into the author's
/// own `[message retracted]`.
#[test]
fn deleted_state_messages_and_retractions() {
    let mut items = read_json("youtube/chilledcow-2020-11.chat-downloader.json");
    let mut retracted = 0;
    for it in items.as_array_mut().unwrap() {
        let action = it["action_type"].as_str().unwrap_or("").to_owned();
        if action.starts_with("mark_chat_item") {
            it["message_type"] = json!("deleted_state_message");
            if action == "mark_chat_item_as_deleted" && retracted < 2 {
                it["message"] = json!("[message retracted]");
                retracted += 1;
            }
        }
    }
    let f = format::parse_bytes(items.to_string().as_bytes(), &ctx("c")).unwrap();
    let deleted = |by_author: bool| {
        count(
            &f.events,
            |k| matches!(k, Kind::MessageDeleted(d) if d.by_author == by_author),
        )
    };
    assert_eq!((deleted(false), deleted(true)), (34, 2));
    assert_eq!(
        count(&f.events, |k| matches!(k, Kind::UserMessagesRemoved(_))),
        36
    );
    let mut stats = spamscope_chat::stats::StatsBuilder::default();
    f.events.iter().for_each(|e| stats.add(e));
    let s = stats.finish();
    assert_eq!((s.deletions, s.retractions, s.removals), (34, 2, 36));
}

/// A download cut short: the items before the break are read and the
/// break is reported with its byte offset.
#[test]
fn a_truncated_array_keeps_what_came_before_and_says_where_it_broke() {
    let bytes = std::fs::read(testdata("youtube/chilledcow-2020-11.chat-downloader.json")).unwrap();
    let cut = bytes.len() / 2;
    let part = &bytes[..cut];
    // Independent count: items whose closing `    },` / `    }` (4-space
    // indent, as the file is written) lies before the cut.
    let complete = String::from_utf8_lossy(part)
        .lines()
        .filter(|l| *l == "    }," || *l == "    }")
        .count();
    let f = format::parse_bytes(part, &ctx("c")).unwrap();
    assert_eq!(f.events.len() + f.skipped as usize, complete);
    // The byte named is the last one read: the file's end.
    let last = f.malformed.last().unwrap();
    let at: usize = last
        .reason
        .split("breaks at byte ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{last:?}"));
    assert!(cut - 1 <= at && at <= cut, "{at} vs {cut}: {last:?}");
}

#[test]
fn empty_inputs_are_errors_in_every_format() {
    for empty in [
        &b""[..],
        b"   \n",
        b"[]",
        b"[ ]\n",
        br#"{"messages": []}"#,
        br#"{"comments": [], "streamer": {"name": "x"}}"#,
        br#"{"continuationContents": {"liveChatContinuation": {"actions": []}}}"#,
    ] {
        let err = format::parse_bytes(empty, &ctx("e")).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.contains("empty") || shown.contains("holds no items"),
            "{}: {shown}",
            String::from_utf8_lossy(empty)
        );
    }
}

#[test]
fn items_without_chat_are_an_error_naming_what_was_seen() {
    let only_banners = json!([
        {"action_type": "add_banner_to_live_chat_command", "message_type": "banner"},
        {"action_type": "add_chat_item", "message_type": "viewer_engagement_message"},
        {"action_type": "add_chat_item", "message_type": "viewer_engagement_message"}
    ]);
    let err = format::parse_bytes(only_banners.to_string().as_bytes(), &ctx("b")).unwrap_err();
    let FormatError::NoChat { what, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(
        what.contains("3 items")
            && what.contains("viewer_engagement_message 2")
            && what.contains("add_banner_to_live_chat_command 1"),
        "{what}"
    );
}

#[test]
fn unknown_kinds_are_counted_and_listed() {
    let items = json!([
        {"action_type": "add_chat_item", "message_type": "text_message", "message_id": "1",
         "timestamp": 1_000_000, "author": {"id": "UCaaaaaaaaaaaaaaaaaaaaaa", "name": "a"}, "message": "hi"},
        {"action_type": "add_chat_item", "message_type": "hologram_message", "message_id": "2"},
        {"action_type": "add_chat_item", "message_type": "hologram_message", "message_id": "3"}
    ]);
    let f = format::parse_bytes(items.to_string().as_bytes(), &ctx("u")).unwrap();
    assert_eq!(f.skipped_by_kind.get("hologram_message"), Some(&2));
    assert!(f.unknown_kinds.contains("hologram_message"));
}

#[test]
fn a_json_error_names_the_byte() {
    let err = format::parse_bytes(b"{\"messages\": [\"a\" \"b\"]}", &ctx("j")).unwrap_err();
    assert!(err.to_string().contains("at byte 18"), "{err}");
}

/// gzip and zstd are recognised by their magic bytes, whatever the name.
#[test]
fn gzip_and_zstd_by_content_not_name() {
    use std::io::Write as _;
    let plain =
        std::fs::read(testdata("formats/chat-downloader-legacy-2020.youtube.json")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).unwrap();
    let zst = zstd::encode_all(plain.as_slice(), 3).unwrap();
    let dir = std::env::temp_dir().join(format!("spamscope-formats-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in [
        ("legacy.json", plain.clone()),
        ("legacy.txt", gz.finish().unwrap()),
        ("legacy.json.gz.bak", zst),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(replay::read_bytes(&path).unwrap(), plain, "{name}");
        let f = replay::read_file(&path).unwrap().parsed;
        assert_eq!(messages(&f), 636, "{name}");
    }
    // A zstd stream cut short is an error naming the codec.
    let cut = zstd::encode_all(plain.as_slice(), 3).unwrap();
    let path = dir.join("cut.zst");
    std::fs::write(&path, &cut[..cut.len() / 2]).unwrap();
    let err = replay::read_bytes(&path).unwrap_err().to_string();
    assert!(err.contains("zstd"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Line formats are read a line at a time: a line past the limit is
/// malformed (never held whole) and the lines after it are read.
#[test]
fn an_overlong_line_is_malformed_and_reading_goes_on() {
    let xqcow = std::fs::read_to_string(testdata("twitch/xqcow-2019-09-15.irc")).unwrap();
    let lines: Vec<&str> = xqcow.lines().take(10).collect();
    let mut irc = String::new();
    irc.push_str("\n\n"); // blank lines count: numbers are the file's
    irc.push_str(lines[0]);
    irc.push('\n');
    irc.push_str(&"x".repeat(format::MAX_LINE_BYTES + 10));
    irc.push('\n');
    for l in &lines[1..] {
        irc.push_str(l);
        irc.push_str("\r\n");
    }
    let f = format::parse_reader(irc.as_bytes(), &ctx("x"), u64::MAX).unwrap();
    assert_eq!(f.events.len(), 10);
    assert_eq!(f.malformed.len(), 1);
    assert_eq!(f.malformed[0].line, 4);
    assert!(
        f.malformed[0].reason.contains("longer than"),
        "{:?}",
        f.malformed
    );

    // JSON lines alike.
    let item = |id: u32| {
        json!({"message_type": "text_message", "message_id": id.to_string(), "timestamp": 1_000_000 + id,
            "author": {"id": "UCaaaaaaaaaaaaaaaaaaaaaa", "name": "a"}, "message": "hi"})
        .to_string()
    };
    let long = format!(
        "{{\"message\": \"{}\"}}",
        "y".repeat(format::MAX_LINE_BYTES)
    );
    let body = [item(1), long, item(2), String::new(), item(3)].join("\n");
    let f = format::parse_reader(body.as_bytes(), &ctx("j"), u64::MAX).unwrap();
    assert_eq!((f.events.len(), f.malformed.len()), (3, 1));
    assert_eq!(f.malformed[0].line, 2);
}

/// A JSON document (an object: arrays are read an item at a time) bigger
/// than the limit is refused, saying why.
#[test]
fn a_document_past_the_limit_is_refused() {
    let doc = std::fs::read(testdata("formats/innertube-live-chat-replay-response.json")).unwrap();
    let Err(err) = format::parse_reader(doc.as_slice(), &ctx("d"), 1000) else {
        panic!("a 138 kB document read with a limit of 1000 bytes")
    };
    assert!(err.to_string().contains("more than 1000 bytes"), "{err}");
    assert!(format::parse_reader(doc.as_slice(), &ctx("d"), doc.len() as u64).is_ok());
}

/// Arrays are read an item at a time: an item that does not parse is
/// malformed and the items after it are read; an item past the limit is
/// skipped without being held.
#[test]
fn array_items_are_read_one_at_a_time() {
    let item = |id: u32| {
        json!({"message_type": "text_message", "message_id": id.to_string(), "timestamp": 1_000_000 + id,
            "author": {"id": "UCaaaaaaaaaaaaaaaaaaaaaa", "name": "a"}, "message": "a \"quoted\" ] } text"})
        .to_string()
    };
    let huge = format!(
        "{{\"message\": \"{}\"}}",
        "z".repeat(format::MAX_ITEM_BYTES)
    );
    let body = format!(
        "[{}, {{\"message_type\": tru}}, {}, {huge}, {}]",
        item(1),
        item(2),
        item(3)
    );
    let f = format::parse_reader(body.as_bytes(), &ctx("a"), 10).unwrap();
    assert_eq!(f.events.len(), 3);
    let lines: Vec<usize> = f.malformed.iter().map(|m| m.line).collect();
    assert_eq!(lines, vec![2, 4], "{:?}", f.malformed);
    assert!(
        f.malformed[1].reason.contains("longer than"),
        "{:?}",
        f.malformed
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Real files cut anywhere or with a byte changed anywhere, in every
    /// JSON format: never a panic, and a cut array keeps the items before
    /// the cut.
    #[test]
    fn damaged_real_files_never_panic(file in 0usize..4, at in 0.0f64..1.0, byte in proptest::prelude::any::<u8>()) {
        let name = [
            "youtube/chilledcow-2020-11.chat-downloader.json",
            "formats/chat-downloader-legacy-2020.twitch-vod.json",
            "formats/innertube-live-chat-replay-response.json",
            "formats/twitch-vod-comment.json",
        ][file];
        let bytes = std::fs::read(testdata(name)).unwrap();
        let i = ((bytes.len() as f64) * at) as usize;
        let _ = format::parse_bytes(&bytes[..i], &ctx("p"));
        let mut changed = bytes.clone();
        changed[i.min(bytes.len() - 1)] = byte;
        let _ = format::parse_bytes(&changed, &ctx("p"));
    }
}
