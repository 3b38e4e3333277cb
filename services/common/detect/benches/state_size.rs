//! Bytes of detector state per tracked user, per stream and per group,
//! measured with dhat's heap counters (live heap bytes after minus
//! before).

use std::sync::Arc;

use spamscope_detect::{CompiledParams, DetectorParams, ScoreModel, StreamDetector};
use spamscope_proto::v1::{Author, ChatEvent, ChatMessage, Platform, Roles, chat_event::Kind};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn message(stream: &str, login: &str, ts: i64, text: &str) -> ChatEvent {
    ChatEvent {
        platform: Platform::Twitch as i32,
        stream_id: stream.into(),
        channel_id: String::new(),
        event_id: String::new(),
        ts_ms: ts,
        kind: Some(Kind::Message(ChatMessage {
            author: Some(Author {
                user_id: format!("{}", 10_000_000 + ts),
                login: login.into(),
                display_name: login.into(),
                roles: Some(Roles::default()),
            }),
            text: text.into(),
            ..ChatMessage::default()
        })),
    }
}

fn live_bytes() -> i64 {
    dhat::HeapStats::get().curr_bytes as i64
}

fn main() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let model = Arc::new(ScoreModel::bundled());
    let users = 100_000i64;
    #[allow(clippy::expect_used)]
    let params = CompiledParams::new(DetectorParams {
        max_users: users as u32 + 1,
        ..DetectorParams::default()
    })
    .expect("valid params");

    // Per stream: a detector that has seen one message.
    let before = live_bytes();
    let mut streams = Vec::new();
    for s in 0..1_000 {
        let mut d = StreamDetector::new(
            Platform::Twitch,
            &format!("s{s}"),
            Arc::clone(&params),
            Arc::clone(&model),
        );
        let mut out = Vec::new();
        d.handle(&message("s", "first", 1, "hello"), &mut out);
        streams.push(d);
    }
    let per_stream = (live_bytes() - before) / 1_000;
    drop(streams);

    // Per user: many users in one stream, each sending the same short
    // message (one group), message ids not tracked (empty ids), so the
    // growth is the users' own state.
    let mut d = StreamDetector::new(
        Platform::Twitch,
        "big",
        Arc::clone(&params),
        Arc::clone(&model),
    );
    let mut out = Vec::new();
    d.handle(&message("big", "warmup", 0, "gg"), &mut out);
    let before = live_bytes();
    for i in 1..=users {
        out.clear();
        // Chatter-like logins of 8-14 chars.
        d.handle(
            &message("big", &format!("viewer_{i:07}"), i, "gg"),
            &mut out,
        );
    }
    let per_user = (live_bytes() - before) as f64 / users as f64;
    let tracked = d.tracked_users();
    drop(d);

    // Per group: one chatter sending texts unlike each other, each its own
    // group. The thread's text cache is warmed with the same texts by a
    // detector dropped before counting, so what grows is the groups (with
    // their exact, word and band index entries), not the cache.
    let texts: Vec<String> = (0..4_000u64).map(unlike_text).collect();
    let run = |d: &mut StreamDetector| {
        let mut out = Vec::new();
        for (i, t) in texts.iter().enumerate() {
            out.clear();
            d.handle(&message("g", "talker", 1 + i as i64, t), &mut out);
        }
    };
    let new_stream = || {
        StreamDetector::new(
            Platform::Twitch,
            "groups",
            Arc::clone(&params),
            Arc::clone(&model),
        )
    };
    run(&mut new_stream());
    let mut d = new_stream();
    d.handle(&message("g", "talker", 0, "gg"), &mut out);
    let (before, groups_before) = (live_bytes(), d.tracked_groups());
    run(&mut d);
    let groups = d.tracked_groups() - groups_before;
    let per_group = (live_bytes() - before) as f64 / groups.max(1) as f64;
    println!("state: {per_stream} bytes per stream (after one message)");
    println!("state: {per_user:.0} bytes per tracked user ({tracked} users tracked)");
    println!("state: {per_group:.0} bytes per group of one message ({groups} groups)");
    println!("target: at most 256 bytes per tracked user");
}

/// Text `i` of a set whose texts share few letter trigrams: five words
/// drawn from syllables by a mixed counter.
fn unlike_text(i: u64) -> String {
    const SYLLABLES: [&str; 16] = [
        "ka", "lo", "mi", "ne", "ru", "ta", "vo", "zi", "bre", "dul", "fen", "gor", "hix", "jup",
        "quo", "wes",
    ];
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5bd1_e995;
    let mut words = Vec::new();
    for _ in 0..5 {
        let mut w = String::new();
        for _ in 0..3 {
            x ^= x >> 29;
            x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
            w.push_str(SYLLABLES[(x >> 60) as usize]);
        }
        words.push(w);
    }
    words.join(" ")
}
